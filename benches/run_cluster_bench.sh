#!/usr/bin/env bash
# Data parallel across machines, on one: the same SFT steps as one process and as RANKS
# processes joined over loopback TCP (`trainer::cluster`), one run; per step the time and,
# for the ranks, `cluster_s` (rank 0's time sending to and waiting on the others), and the
# loss difference. Needs the demo's synthesized data (scripts/demo.sh, runs/default/synth).
#   benches/run_cluster_bench.sh              # 75M-parameter shape, 3 steps of 4 x 256 tokens
#   SHAPE=benches/shapes/tiny.json STEPS=5 RANKS=2 benches/run_cluster_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p trainer
shape=$(realpath "${SHAPE:-benches/shapes/qwen3-75m.json}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # name, then the environment of a rank
  local name=$1; shift
  env "$@" target/release/trainer --stage sft-single configs/stage1.toml --resume never \
    --set "out=\"$out/$name\"" --set "model.arch=\"$shape\"" --set "train.max_steps=${STEPS:-3}" --set batch.seq_len=256 \
    --set batch.batch_tokens=1024 --set batch.micro_batch=1 --set eval.every=0 --set eval.max_tokens=256 --set checkpoint.every=0
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
run one 2> "$out/one.log"
n=${RANKS:-2}
port=$((20000 + RANDOM % 20000))
for r in $(seq 0 $((n - 1))); do
  run ranks WORLD_SIZE="$n" RANK="$r" MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" 2> "$out/rank$r.log" &
done
wait
python3 - "$out/one/metrics.jsonl" "$out/ranks/metrics.jsonl" "$n" <<'PY'
import json, sys
rows = lambda p: [r for r in map(json.loads, open(p)) if "loss" in r]
one, many, n = rows(sys.argv[1]), rows(sys.argv[2]), sys.argv[3]
for a, b in zip(one, many):
    print(f"step {a['step']}: one process {a['step_s']:.2f} s, {n} ranks {b['step_s']:.2f} s of which cluster {b['cluster_s']:.3f} s; "
          f"loss {a['loss']:.6f} vs {b['loss']:.6f}")
t1, tn = sum(r["step_s"] for r in one), sum(r["step_s"] for r in many)
print(f"{n} ranks / one process: {t1 / tn:.2f}x the throughput; cluster time {sum(r['cluster_s'] for r in many) / tn:.1%} of the ranks' steps")
PY
