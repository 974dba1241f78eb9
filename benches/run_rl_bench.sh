#!/usr/bin/env bash
# RL step cost on the embedded default: rollout tokens/s, the sandbox's share of a step,
# and seconds per RL step (generate / sandbox / update), from a few GRPO steps of
# configs/stage3.toml on the stage-2 model (run scripts/demo.sh first):
#   benches/run_rl_bench.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-3}
model=${MODEL:-runs/default/stage2/final}
[ -f "$model/config.json" ] || { echo "no $model: run scripts/demo.sh first (or set MODEL=an HF folder)" >&2; exit 1; }
cargo build --release -q -p trainer
out=runs/bench-rl
rm -rf "$out"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
target/release/trainer --stage rl configs/stage3.toml --resume never --set "out=\"$out\"" --set "model.init=\"$model\"" \
  --set "train.steps=$steps" --set eval.tasks=0 --set checkpoint.every=0 2>/dev/null
python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if "step_s" in r]
tot = lambda k: sum(r[k] for r in rows)
n = len(rows)
print(f"{n} RL steps (configs/stage3.toml: rollout.tasks_per_step x rollout.group_size trajectories each)")
print(f"  seconds per RL step   {tot('step_s') / n:8.2f}  (generate {tot('generate_s') / n:.2f}, sandbox {tot('sandbox_s') / n:.2f}, update {tot('update_s') / n:.2f})")
print(f"  rollout tokens/s      {tot('generated_tokens') / tot('generate_s'):8.1f}  ({tot('generated_tokens') / n:.0f} generated tokens per step)")
print(f"  sandbox share         {100 * tot('sandbox_s') / tot('step_s'):8.1f} %  ({sum(r['turns'] for r in rows) / n:.2f} cells per trajectory)")
PY
