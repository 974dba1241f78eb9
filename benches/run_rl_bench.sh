#!/usr/bin/env bash
# RL step cost on the embedded default: rollout tokens/s, the sandbox's share of a step,
# and seconds per RL step (generate / sandbox / update), from a few GRPO steps of
# configs/stage3.toml on the stage-2 model (run scripts/demo.sh first). With PYTHON set to
# an interpreter with torch + transformers + pyarrow, the same rollouts (checkpoint, tasks,
# limits, temperature) also run the reference way (transformers' generate, cells by
# `python -c`), in the same run, and the ratio is printed:
#   [PYTHON=/path/to/venv/bin/python] benches/run_rl_bench.sh [STEPS]
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
ref=""
if [ -n "${PYTHON:-}" ]; then
  args=$(python3 -c '
import tomllib
c = tomllib.load(open("configs/stage3.toml", "rb")); r = c["rollout"]
print("--tasks", c["data"]["tasks"][0], *(f"--{k.replace(chr(95), chr(45))} {r[k]}" for k in
      ["tasks_per_step", "group_size", "max_turns", "max_new_tokens", "max_response_tokens", "temperature"]))')
  ref=$("$PYTHON" benches/scripts/transformers_rollout.py --model "$model" --python .venv-sandbox/bin/python --steps "$steps" $args 2>/dev/null | tail -1)
fi
python3 - "$out/metrics.jsonl" "$ref" <<'PY'
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if "step_s" in r]
tot = lambda k: sum(r[k] for r in rows)
n = len(rows)
print(f"{n} RL steps (configs/stage3.toml: rollout.tasks_per_step x rollout.group_size trajectories each)")
print(f"  seconds per RL step   {tot('step_s') / n:8.2f}  (generate {tot('generate_s') / n:.2f}, sandbox {tot('sandbox_s') / n:.2f}, update {tot('update_s') / n:.2f})")
print(f"  rollout tokens/s      {tot('generated_tokens') / tot('generate_s'):8.1f}  ({tot('generated_tokens') / n:.0f} generated tokens per step)")
print(f"  sandbox share         {100 * tot('sandbox_s') / tot('step_s'):8.1f} %  ({sum(r['turns'] for r in rows) / n:.2f} cells per trajectory)")
if sys.argv[2]:
    ref = json.loads(sys.argv[2])
    ours_roll = (tot('generate_s') + tot('sandbox_s')) / n
    ours_tps = tot('generated_tokens') / tot('generate_s')
    print(f"rollout phase, same checkpoint, tasks and limits ({ref['impl']}):")
    print(f"  {'':24} {'ours':>10} {'reference':>10} {'ratio':>8}")
    print(f"  {'rollout s per step':24} {ours_roll:10.2f} {ref['rollout_s']:10.2f} {ref['rollout_s'] / ours_roll:7.2f}x faster")
    print(f"  {'  of which cells':24} {tot('sandbox_s') / n:10.2f} {ref['cells_s']:10.2f}")
    print(f"  {'rollout tokens/s':24} {ours_tps:10.1f} {ref['rollout_tok_s']:10.1f} {ours_tps / ref['rollout_tok_s']:7.2f}x")
PY
