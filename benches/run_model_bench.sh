#!/usr/bin/env bash
# Side-by-side model throughput: our burn build and PyTorch/transformers on the same shapes,
# in one run, with the ratio. Needs a Python with torch + transformers:
#   PYTHON=/path/to/venv/bin/python benches/run_model_bench.sh [extra model-bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
cargo build --release -q -p benches
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-12s %-22s %14s %16s %18s\n' shape impl forward_tok/s gen_cache_tok/s gen_nocache_tok/s
for shape in tiny qwen3-0.6b; do
  f=benches/shapes/$shape.json
  ours=$(target/release/model-bench --shape "$f" "$@")
  ref=$("$py" benches/scripts/pytorch_model.py --shape "$f" "$@")
  "$py" - "$ours" "$ref" <<'PY'
import json, sys
o, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
keys = ["forward_tok_s", "gen_cache_tok_s", "gen_nocache_tok_s"]
for x in (o, r):
    print(f"{x['shape']:<12} {x['impl']:<22} " + " ".join(f"{x[k]:>16.1f}" for k in keys))
print(f"{'':<12} {'ratio ours/torch':<22} " + " ".join(f"{o[k] / r[k]:>16.2f}" for k in keys))
PY
done
