#!/usr/bin/env bash
# Side-by-side host sampling: a decoding step's draws and log-probs (32 rows at Qwen3's
# 151,936-token vocabulary) by us (`trainer-bench sample`, model::generate::pick_rows) and
# by transformers' logits warpers + torch.multinomial on the CPU, in one run, with the
# ratio; flat (spread 1) and peaked (spread 3) Gaussian logits, full / top-p / top-k.
#   PYTHON=/path/to/venv/bin/python benches/run_sample_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
cargo build --release -q -p benches --bin trainer-bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-26s %7s %12s %16s %8s\n' mode spread "ours ms" "transformers ms" ratio
for mode in "" "--top-p 0.95" "--top-k 50"; do
  for spread in 1 3; do
    ours=$(target/release/trainer-bench sample --spread $spread $mode)
    ref=$("$py" benches/scripts/torch_sample.py --spread $spread $mode)
    "$py" - "$ours" "$ref" "${mode:-full softmax}" <<'PY'
import json, sys
o, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{sys.argv[3]:<26} {o['spread']:>7.0f} {o['median_ms']:>12.1f} {r['median_ms']:>16.1f} {r['median_ms'] / o['median_ms']:>7.2f}x")
PY
  done
done
