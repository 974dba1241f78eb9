#!/usr/bin/env bash
# The embedded default, end to end on a CPU: set up the sandbox, build, synthesize verified
# trajectories and RL tasks from the bundled real tables, train a tiny Qwen3 from scratch
# (its own BPE tokenizer) through the curriculum (stage 1: single abilities, stage 2:
# agentic trajectories), then let the stage-2 model solve held-out tasks in the sandbox.
# Re-running continues where it stopped (`--resume auto`); `rm -rf runs/default` starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-sandbox.sh
cargo build --release -p trainer
bin=target/release/trainer
start=$(date +%s)
if [ ! -f runs/default/synth/report.json ]; then
  echo "--- trainer synth: verified trajectories and RL tasks from synth/tables ---"
  $bin synth --tables synth/tables --out runs/default/synth --tasks 300 --seed 0
fi
echo "--- trainer --stage all configs/curriculum.toml: stage 1 then stage 2 ---"
$bin --stage all configs/curriculum.toml
echo "--- trainer eval: the stage-2 model on held-out tasks, code run in the sandbox ---"
$bin eval --model runs/default/stage2/final --tasks runs/default/synth/rl_tasks --heldout 0.1 \
  --out runs/default/eval-stage2 --max-turns 6
echo "--- one held-out rollout (runs/default/eval-stage2/rollouts.jsonl has them all) ---"
head -n 1 runs/default/eval-stage2/rollouts.jsonl | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["text"][:3000])'
echo "done in $(( $(date +%s) - start )) s after the build; plots: runs/default/stage{1,2}/loss.png"
