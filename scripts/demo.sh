#!/usr/bin/env bash
# The embedded default, end to end on a CPU: set up the sandbox, build, synthesize verified
# trajectories and RL tasks from the bundled real tables, train a tiny Qwen3 from scratch
# (its own BPE tokenizer) through the whole curriculum (stage 1: single abilities, stage 2:
# agentic trajectories, stage 3: GRPO with rollouts in the sandbox), evaluating on held-out
# tasks before and after RL. Re-running continues where it stopped (`--resume auto`);
# `rm -rf runs/default` starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-sandbox.sh
cargo build --release -p trainer
bin=target/release/trainer
start=$(date +%s)
if [ ! -f runs/default/synth/report.json ]; then
  echo "--- trainer synth: verified trajectories and RL tasks from synth/tables ---"
  $bin synth --tables synth/tables --out runs/default/synth --tasks 1000 --seed 0
fi
echo "--- trainer --stage all configs/curriculum.toml: stages 1, 2 and 3 ---"
# (`--set compute.devices=2` runs two data-parallel replicas on the cores: 1.3x faster
# here, the same SFT steps, other RL samples; README "The embedded default".)
$bin --stage all configs/curriculum.toml
python3 - <<'PY'
import json
o = json.load(open("runs/default/stage3/outcome.json"))
print(f"held-out qa tasks answered right (greedy): stage 2 model {o['first_success']:.3f} -> after RL {o['last_success']:.3f}")
evals = sorted(__import__("glob").glob("runs/default/stage3/eval/step-*.jsonl"))
r = next((json.loads(l) for l in open(evals[-1]) if json.loads(l)["well_formed"]), json.loads(open(evals[-1]).readline()))
print(f"--- one held-out rollout after RL ({r['task_id']}; all in {evals[-1]}) ---")
print(r["text"][:3000])
PY
echo "done in $(( $(date +%s) - start )) s after the build; plots: runs/default/stage{1,2}/loss.png, runs/default/stage3/{reward,success}.png"
