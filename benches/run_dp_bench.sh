#!/usr/bin/env bash
# Data parallel (`[compute] devices`): the same SFT step (the same micro-batches) on one
# device and on N replicas, one run, and the ratio:
#   DEVICES=2 benches/run_dp_bench.sh            # CPU: N threads sharing the cores
#   GPU_BENCH=target-cuda/release/trainer-bench DEVICES=8 benches/run_dp_bench.sh   # GPUs 0..7
# (tiny default at seq 2048, 4 rows in micro-batches of 2; SHAPE, SEQ, BATCH, MICRO override.)
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${GPU_BENCH:-}
if [ -z "$bench" ]; then
  cargo build --release -q -p benches --bin trainer-bench
  bench=target/release/trainer-bench
fi
n=${DEVICES:-2}
shape=${SHAPE:-configs/tiny-default.json}
args=(sft --precision "${PRECISION:-f32}" --shape "$shape" --seq "${SEQ:-2048}" --batch "${BATCH:-4}" --micro-batch "${MICRO:-2}" --steps "${STEPS:-4}")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
one=$("$bench" "${args[@]}" --devices 1)
many=$("$bench" "${args[@]}" --devices "$n")
python3 - "$one" "$many" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for x in (a, b):
    print(f"{x['shape']:<16} seq {x['seq']} x {x['batch']} ({x['micro_batches']} micro-batches)  {x['impl']} on {x['devices']} device(s): "
          f"{x['step_s']:.3f} s/step, {x['tokens_per_s']:.0f} tok/s, loss {x['loss']:.6f}")
print(f"{b['devices']} devices / 1: {a['step_s'] / b['step_s']:.2f}x the throughput, loss difference {abs(a['loss'] - b['loss']):.2e}")
PY
