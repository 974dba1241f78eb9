#!/usr/bin/env bash
# SFT training throughput and peak memory, ours and PyTorch's, same shapes, one run:
#   PYTHON=/path/to/venv/bin/python benches/run_sft_bench.sh
# (tiny default at seq 2048 x 2; Qwen3-0.6B shape at seq 256 x 1; f32 on CPU.) Each side
# takes a warm-up step, then the mean of the steps given: 5 on the 0.6B shape, since its
# first step after the warm-up still grows our heap (glibc never trims it: `init_runtime`)
# and with 2 that step was half the mean.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
cargo build --release -q -p benches --bin trainer-bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
run() { # shape seq batch steps
  ours=$(target/release/trainer-bench sft --precision f32 --shape "$1" --seq "$2" --batch "$3" --steps "$4")
  ref=$("$py" benches/scripts/pytorch_sft.py --shape "$1" --seq "$2" --batch "$3" --steps "$4")
  "$py" - "$ours" "$ref" <<'PY'
import json, sys
o, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for x in (o, r):
    print(f"{x['shape']:<16} seq {x['seq']} x {x['batch']}  {x['impl']:<20} {x['tokens_per_s']:>9.1f} tok/s  {x['step_s']:>7.2f} s/step  peak {x['peak_rss_mb']:>8.0f} MB")
print(f"{'':<16} ours/torch: throughput {o['tokens_per_s'] / r['tokens_per_s']:.2f}x, peak memory {o['peak_rss_mb'] / r['peak_rss_mb']:.2f}x")
PY
}
run configs/tiny-default.json 2048 2 3
run benches/shapes/qwen3-0.6b.json 256 1 5
