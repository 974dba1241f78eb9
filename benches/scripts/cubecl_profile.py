"""Where a CUDA build's GPU time goes: cubecl's profiling log (one line a kernel launch,
`| 921.314µs | PrngKernel | NormalFamily | CudaRuntime`, written when
CUBECL_DEBUG_OPTION=profile and cubecl.toml names [profiling.logger] file) summed by
kernel, as a markdown table. benches/run_gpu_bench.sh's `profile` phase runs it.
  python3 cubecl_profile.py LOG [--top N] [--steps S]   (S: steps the log covers, for ms a step)"""
import argparse, collections, re

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def parse(path):
    """(milliseconds, kernel) per launch; the kernel named by its first two fields (the
    kernel and, for binary ops, the op; a matmul's tile families are left out)."""
    for line in open(path, encoding="utf-8", errors="replace"):
        fields = [f.strip() for f in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"([\d.]+)\s*(ns|µs|us|ms|s)", fields[0]) if fields else None
        if not m or len(fields) < 2:
            continue
        name = fields[1] if fields[1] in ("MatmulEntry", "ReduceKernel") or len(fields) < 4 else f"{fields[1]} {fields[2]}"
        yield float(m.group(1)) * UNITS[m.group(2)], name


def main():
    p = argparse.ArgumentParser()
    p.add_argument("log"); p.add_argument("--top", type=int, default=15); p.add_argument("--steps", type=int, default=1)
    a = p.parse_args()
    total, calls = collections.Counter(), collections.Counter()
    try:
        for ms, name in parse(a.log):
            total[name] += ms; calls[name] += 1
    except FileNotFoundError:
        pass
    whole = sum(total.values())
    if not whole:
        print(f"no kernel timings in {a.log}")
        return
    print(f"GPU kernel time {whole:.0f} ms over {sum(calls.values())} launches ({whole / a.steps:.0f} ms a step over {a.steps})\n")
    print("| kernel | launches | ms a step | share |\n|---|---:|---:|---:|")
    for name, ms in total.most_common(a.top):
        print(f"| {name} | {calls[name]} | {ms / a.steps:.1f} | {100 * ms / whole:.1f}% |")


if __name__ == "__main__":
    main()
