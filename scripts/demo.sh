#!/usr/bin/env bash
# The embedded default, end to end on a CPU: fetch the real Qwen3 tokenizer, build the
# binary, create the tiny Qwen3 (configs/tiny-qwen3.json) with the DeepAnalyze tags, then
# generate from it with the chat template, score a trajectory, run a cell in the sandbox,
# and synthesize verified trajectories from real tables. The curriculum stages
# (`trainer --stage ...`) join this script as their issues land.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-assets.sh
scripts/setup-sandbox.sh
cargo build --release -p trainer
bin=target/release/trainer
run=runs/tiny-init
if [ ! -f "$run/model.safetensors" ]; then
  $bin init-model --config configs/tiny-qwen3.json --tokenizer assets/qwen3-tokenizer --out "$run"
fi
cat > runs/demo-messages.json <<'JSON'
[{"role": "user", "content": "# Instruction\nWhat is the mean price?\n\n# Data\nFile 1:\n{\"name\": \"prices.csv\", \"size\": \"1.2KB\"}"}]
JSON
echo "--- trainer generate (untrained weights: expect noise) ---"
$bin generate --model "$run" --messages runs/demo-messages.json --max-new-tokens 24 --temperature 0.8 --seed 1 --stop '</Code>'
echo "--- trainer score ---"
$bin score --model "$run" --text $'<Analyze>Read the table.</Analyze>\n<Code>\n```python\nprint(1)\n```\n</Code>'
echo "--- trainer exec (the sandbox: a cell on a table, as a rollout would run it) ---"
mkdir -p runs/demo-workspace
printf 'city,price\nOslo,12.5\nLima,7.25\nOslo,14.0\nPune,5.5\n' > runs/demo-workspace/prices.csv
echo "import pandas as pd
df = pd.read_csv('prices.csv')
print(df.groupby('city')['price'].mean().round(2))
print(df['nope'])" | $bin exec --workspace runs/demo-workspace
echo "--- trainer synth (verified trajectories and RL tasks from the default real tables) ---"
rm -rf runs/demo-synth
$bin synth --tables synth/tables --out runs/demo-synth --tasks 24 --seed 0
$bin data inspect runs/demo-synth/trajectories --model "$run" --seq-len 4096 | head -n 40
