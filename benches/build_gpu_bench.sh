#!/usr/bin/env bash
# Builds here (no GPU or CUDA toolkit needed) the trainer-bench binaries that
# benches/run_gpu_bench.sh compares on a GPU machine, stripped and xz-compressed into
# .gpu/ (git-ignored via .git/info/exclude; ~8 MB each, so all fit the device tool's
# carry): trainer-bench.xz (`cuda`: burn's autotune), trainer-bench-untuned.xz
# (`cuda-untuned`) and trainer-bench-fusion-untuned.xz (`cuda-fusion-untuned`).
#   benches/build_gpu_bench.sh [FEATURE...]    # default: cuda-untuned cuda cuda-fusion-untuned
# A first build takes ~7 min a variant on 2 cores, ~4 after a source change.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}  # the device's CUDA 13.0 driver (580)
mkdir -p .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
for feature in "${@:-cuda-untuned cuda cuda-fusion-untuned}"; do
  for f in $feature; do
    cargo build --release -p benches --bin trainer-bench --no-default-features --features "$f" --target-dir target-cuda
    out=.gpu/trainer-bench${f#cuda}
    strip -o "$out" target-cuda/release/trainer-bench
    xz -T0 -f "$out"
    ls -l "$out.xz"
  done
done
