#!/usr/bin/env bash
# The GPU checks, ours and PyTorch's side by side in one run, on one card. PHASES (default
# "peak torch sft gen parity") picks them and their order:
#   peak    the card's measured bf16 matmul peak (for MFU);
#   torch   PyTorch's SFT step on a Qwen3-0.6B-shaped random model at seq 4096, eager
#           (autocast bf16, sdpa) at the largest of $BATCHES that fits and with gradient
#           checkpointing at the largest of $BATCHES_CKPT; transformers' generate (bf16);
#   sft     ours: with gradient checkpointing at the largest of $BATCHES_CKPT that fits,
#           without at PyTorch's eager batch (like for like; $BATCHES_OURS when set);
#   gen     ours: batched greedy generation, as transformers' above;
#   profile ours: GPU time by kernel (cubecl's profiler) over one SFT step at batch 1,
#           to $OUT/profile-*.md (not in the default: the profiler slows every kernel);
#   parity  this build's log-probs on the parity fixtures, f32 and bf16, against
#           transformers' f32 within bf16's tolerance (torch.autocast's own distance).
# Each attempt's peak GPU memory is polled with nvidia-smi (the same way for both); ours
# print progress lines (per step, per generation) that are kept when a limit cuts them
# short; cubecl's kernel compiles and autotune choices are logged to $OUT/cubecl-*.log.
# The JSON lines go to $OUT/trainer-bench.jsonl and the tables to $OUT/report.md.
# cubecl's on-disk caches (target/autotune: each op's choice by shape; target/cuda: the
# compiled PTX) are saved to $OUT/cubecl-cache.tgz at the end; CUBECL_CACHE=that.tgz
# seeds a later run with them, so that on a fresh machine the autotuned build skips the
# minutes of warm-up (seed only from the same card: the choices are keyed by device
# index, not by name; the PTX is sm_90's for H100 and H200 alike).
#
# Build here (no GPU or CUDA toolkit needed), then run on the GPU machine:
#   CUDARC_CUDA_VERSION=13000 cargo build --release -p benches --bin trainer-bench \
#       --no-default-features --features cuda --target-dir target-cuda
#   benches/run_gpu_bench.sh            # GPU_BENCH=path/to/trainer-bench PYTHON=python3
#   (or benches/build_gpu_bench.sh: the cuda, cuda-untuned and cuda-fusion-untuned builds, stripped and xz-compressed into .gpu/)
# GPU_BENCH may name several builds (space-separated), each of our attempts running with
# each in turn, named after the file past "trainer-bench" (trainer-bench-untuned: the
# ours-untuned-* attempts): the A/B of benches' features `cuda` (burn's autotune: every
# candidate kernel compiled and timed for each new shape), `cuda-untuned` (one default
# kernel per op), `cuda-fusion` and `cuda-fusion-untuned` (burn's fusion of element-wise
# ops into fewer kernels), warm-up against steady-state speed. A binary may be
# xz-compressed (name.xz): a stripped build is 57 MB, 7 MB compressed. FILE@VAR=VALUE runs
# a build with that variable set (…-untuned.xz@MODEL_PINNED_MATMUL=0: burn's matmul for
# every product, against the pinned kernel; attempts ours-untuned@MODEL_PINNED_MATMUL=0-*;
# …@MODEL_OWN_KERNELS=0: burn's ops for attention's softmax, RMSNorm, the MLP's activation
# and RoPE, against model/src/backend/kernels/).
# Each SFT record has the first step's loss and gradient norm, from the same seeded
# weights in every build: builds that compute the same step agree to bf16 rounding.
# Limits: STEP_TIMEOUT (150 s) per attempt, OURS_TIMEOUT (300 s) for ours, whose first
# step on a fresh machine compiles and autotunes its kernels (on an H200 the autotuned
# build's first prefill took 117 s and its first SFT step over 200 s; the untuned one's
# 7 s and 18 s), BUDGET (540 s) after which no attempt starts. On a CPU build (GPU_BENCH=target/release/trainer-bench)
# with small SHAPE/SEQ it dry-runs.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
# unpack PATH: PATH itself, or where its xz-decompressed copy went.
unpack() {
  case $1 in
    *.xz) local to; to=$(mktemp -d)/$(basename "${1%.xz}")
          "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$to" \
            && chmod +x "$to" && echo "$to" ;;
    *) echo "$1" ;;
  esac
}
bins=()
for given in ${GPU_BENCH:-target-cuda/release/trainer-bench}; do
  file=${given%%@*}
  b=$(unpack "$file")
  [ -n "$b" ] && [ -x "$b" ] || { echo "run_gpu_bench: no runnable trainer-bench at '$file' (GPU_BENCH=${GPU_BENCH:-})" >&2; exit 2; }
  if [ "$given" != "$file" ]; then
    # FILE@VAR=VALUE: that build run with VAR=VALUE, through a wrapper whose name carries it.
    setting=${given#*@}
    [[ $setting == *=* ]] || { echo "run_gpu_bench: '$given': expected FILE@VAR=VALUE" >&2; exit 2; }
    w=$(mktemp -d)/$(basename "${file%.xz}")@$setting
    printf '#!/usr/bin/env bash\nexec env %q %q "$@"\n' "$setting" "$b" > "$w" && chmod +x "$w" && b=$w
  fi
  bins+=("$b")
done
# label BIN: its attempts' name, ours plus what the file's name adds to trainer-bench.
label() { local n; n=$(basename "${1%.xz}"); echo "ours${n#trainer-bench}"; }
shape=${SHAPE:-benches/shapes/qwen3-0.6b.json}
seq=${SEQ:-4096}
out=${OUT:-/tmp/trainer-bench}
limit=${STEP_TIMEOUT:-150}     # seconds per attempt
deadline=$((SECONDS + ${BUDGET:-540}))  # no attempt starts past this; the report is always written
mkdir -p "$out" && out=$(cd "$out" && pwd)
# cubecl reads ./cubecl.toml: here it logs each kernel compile and autotune choice, to tell
# compile time from step time. (model::init_runtime adds the on-disk PTX cache, under
# target/ beside the autotune results, so an attempt after the first skips NVRTC.)
if [ ! -e cubecl.toml ]; then
  trap 'rm -f cubecl.toml' EXIT
  cat > cubecl.toml <<EOF
[compilation.logger]
level = "basic"
file = "$out/cubecl-compile.log"

# "full": every candidate's time or error (why a flash attention kernel was passed over).
[autotune.logger]
level = "full"
file = "$out/cubecl-autotune.log"

# Off but for the profile phase (CUBECL_DEBUG_OPTION=profile: a sync after every kernel).
[profiling.logger]
level = "disabled"
file = "$out/cubecl-profile.log"
EOF
fi
# With its compile log on, cubecl pipes every kernel's source through clang-format first:
# a stand-in that fails at once keeps that out of the timings.
stub=$(mktemp -d) && printf '#!/bin/sh\nexit 1\n' > "$stub/clang-format" && chmod +x "$stub/clang-format" && export PATH="$stub:$PATH"
# cubecl compiles its kernels with NVRTC at run time. Without a CUDA toolkit the machine
# still has the one PyTorch's wheels ship (nvidia/cu13/lib/libnvrtc.so.13 and the like).
nvrtc=$("$py" - <<'PY' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
hits = sorted(p for r in roots for p in glob.glob(os.path.join(r, "nvidia", "**", "libnvrtc.so*"), recursive=True))
print(os.path.dirname(hits[-1]) if hits else "")
PY
)
[ -n "$nvrtc" ] && export LD_LIBRARY_PATH="$nvrtc:${LD_LIBRARY_PATH:-}" && echo "NVRTC from $nvrtc"
log=$out/trainer-bench.jsonl
: > "$log"
if [ -n "${CUBECL_CACHE:-}" ]; then
  mkdir -p target && tar xzf "$CUBECL_CACHE" -C target \
    || { echo "run_gpu_bench: CUBECL_CACHE='$CUBECL_CACHE' is not a tar.gz of cubecl's caches" >&2; exit 2; }
  echo "cubecl caches seeded from $CUBECL_CACHE: $(find target/autotune target/cuda -type f 2>/dev/null | wc -l) files"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: dry run"

# Kernels cubecl has compiled so far in this run (its compile log, one line a kernel).
compiles() { cat "$out/cubecl-compile.log" 2>/dev/null | wc -l; }

# run NAME CMD...: runs CMD with nvidia-smi polling; appends its JSON line with the peak
# GPU memory (MiB above the idle level) and the shape path; fails when CMD fails.
run() {
  local name=$1; shift
  local mem=$out/$name.mem
  local want=$limit; [[ $name == ours-* ]] && want=${OURS_TIMEOUT:-300}
  local left=$((deadline - SECONDS)); [ $left -lt $want ] && limit_now=$left || limit_now=$want
  if [ "$limit_now" -lt 15 ]; then echo "  $name: skipped (time budget spent)" >&2; return 1; fi
  local idle
  idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
  (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; sleep 0.2; done) > "$mem" &
  local poll=$!
  local before=; [[ $name == ours-* ]] && before=$(compiles)
  timeout "$limit_now" "$@" > "$out/$name.json" 2> "$out/$name.err"
  local rc=$?
  [ -n "$before" ] && echo "kernel compiles: $(( $(compiles) - before ))" >> "$out/$name.err"
  kill "$poll" 2>/dev/null; wait "$poll" 2>/dev/null
  sed "s/^/  $name: /" "$out/$name.err" | grep -v "^  $name: *$" | tail -n 12 >&2  # its progress lines, kept even when cut short
  if [ $rc -ne 0 ]; then echo "  $name: failed (rc $rc$([ $rc = 124 ] && echo ": over its ${limit_now} s limit"))" >&2; return $rc; fi
  "$py" - "$out/$name.json" "$mem" "${idle:-0}" "$shape" >> "$log" <<'PY'
import json, sys
path, mem, idle, shape = sys.argv[1:]
used = [int(x) for x in open(mem).read().split() if x.strip().isdigit()]
for line in open(path):
    if line.startswith("{"):
        r = json.loads(line)
        r["peak_mem_mb"] = (max(used) - int(idle)) if used else None
        r["shape_path"] = shape
        print(json.dumps(r))
PY
  sed "s/^/  /" "$out/$name.json" >&2
}

# largest NAME "BATCHES" CMD...: the first batch of BATCHES (largest first) that runs; a
# smaller one is tried only when one fails, not when it runs past its time limit.
largest() {
  local name=$1 batches=$2 b rc; shift 2
  for b in $batches; do
    run "$name-b$b" "$@" --batch "$b"; rc=$?
    [ $rc = 0 ] && { echo "$b"; return 0; }
    [ $rc = 124 ] && return 1
  done
  return 1
}

# PHASES, in the order given, picks what runs. PyTorch's baselines first: they take
# seconds, while ours on a fresh machine may spend minutes compiling kernels, and a
# ratio needs both sides.
steps=${SFT_STEPS:-2}
gen="--shape $shape --batch ${GEN_BATCH:-16} --prompt ${GEN_PROMPT:-128} --new-tokens ${GEN_NEW:-256}"
torch_batch=
for phase in ${PHASES:-peak torch sft gen parity}; do
  case $phase in
    peak) echo "== matmul peak"; "$py" benches/scripts/gpu_torch.py peak | tee -a "$log" ;;
    torch) echo "== PyTorch: SFT step at seq $seq (eager, then with checkpointing), generate"
           torch_batch=$(largest torch-sft "${BATCHES:-8 4 2 1}" "$py" benches/scripts/gpu_torch.py sft --shape "$shape" --seq "$seq" --steps $steps)
           largest torch-sft-ckpt "${BATCHES_CKPT:-8 4 2 1}" "$py" benches/scripts/gpu_torch.py sft --shape "$shape" --seq "$seq" --steps $steps --checkpointing > /dev/null
           run torch-gen "$py" benches/scripts/gpu_torch.py generate $gen ;;
    sft) echo "== ours: SFT step at seq $seq"
         # Ours keeps no [tokens, vocab] logits (`trainer plan`: 0.6B bf16 seq 4096 with
         # checkpointing ~18 GiB at batch 8), so with checkpointing it tries batch 8 first;
         # without, PyTorch's eager batch (like for like).
         for b in "${bins[@]}"; do
           largest "$(label "$b")-sft-ckpt" "${BATCHES_CKPT:-8 4 2 1}" "$b" sft --shape "$shape" --seq "$seq" --steps $steps --checkpointing > /dev/null
         done
         for b in "${bins[@]}"; do
           largest "$(label "$b")-sft" "${BATCHES_OURS:-${torch_batch:-1}}" "$b" sft --shape "$shape" --seq "$seq" --steps $steps > /dev/null
         done ;;
    gen) echo "== ours: generation"
         for b in "${bins[@]}"; do run "$(label "$b")-gen" "$b" generate $gen; done ;;
    profile) echo "== ours: GPU time by kernel, the warm-up and one SFT step at seq $seq, batch 1"
             for b in "${bins[@]}"; do
               left=$((deadline - SECONDS)); [ $left -lt 15 ] && { echo "  profile: skipped (time budget spent)" >&2; break; }
               rm -f "$out/cubecl-profile.log"
               CUBECL_DEBUG_OPTION=profile timeout $left "$b" sft --shape "$shape" --seq "$seq" --batch 1 --steps 1 > /dev/null 2> "$out/profile.err"
               tail -n 3 "$out/profile.err" | sed 's/^/  /' >&2
               "$py" benches/scripts/cubecl_profile.py "$out/cubecl-profile.log" --steps 2 | tee "$out/profile-$(label "$b").md"
             done ;;
    parity) echo "== parity"
            for b in "${bins[@]}"; do
              left=$((deadline - SECONDS)); [ $left -lt 15 ] && { echo "  parity: skipped (time budget spent)" >&2; break; }
              timeout $left "$b" parity 2> "$out/parity.err" | tee -a "$log"; cat "$out/parity.err" >&2
            done ;;
    *) echo "unknown phase '$phase' in PHASES (peak, torch, sft, gen, profile, parity)" >&2; exit 2 ;;
  esac
done
caches=(); for d in autotune cuda; do [ -d "target/$d" ] && caches+=("$d"); done
[ ${#caches[@]} -gt 0 ] && tar czf "$out/cubecl-cache.tgz" -C target "${caches[@]}" \
  && echo "cubecl caches saved: $out/cubecl-cache.tgz ($(du -h "$out/cubecl-cache.tgz" | cut -f1); seed a later run with CUBECL_CACHE=)"
"$py" benches/scripts/gpu_torch.py report "$log" | tee "$out/report.md"
