"""PyTorch side of benches/run_gpu_bench.sh, and its report. Subcommands print JSON lines:
  peak                 measured bf16 matmul peak (TFLOP/s) of this card (8192^3, best of 10)
  sft --shape --seq --batch [--checkpointing]
                       transformers Qwen3ForCausalLM, f32 weights under torch.autocast(bf16),
                       sdpa attention, next-token loss, backward, clip_grad_norm_(1.0), AdamW
  generate --shape --batch --prompt --new-tokens
                       transformers generate, bf16 weights, greedy, exactly new-tokens per row
  report FILE          the table of a run's JSON lines: tokens/s, MFU, peak memory, ratios
Runs on CPU when no GPU is present (for a dry run of the script)."""
import argparse, json, pathlib, sys, time

SHAPE_KEYS_SKIP = ("architectures", "dtype", "torch_dtype")


def shape_cfg(path):
    return {k: v for k, v in json.loads(pathlib.Path(path).read_text()).items() if k not in SHAPE_KEYS_SKIP}


def train_flops_per_token(cfg, seq):
    """6 x matmul parameters (LM head included, embedding lookup not) plus causal attention
    (QK^T and PV: 6 * layers * seq * heads * head_dim per token, fwd + bwd)."""
    h, i, L, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    d = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    qd, kvd = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    matmul = L * (h * (qd + 2 * kvd) + qd * h + 3 * h * i) + h * v
    return 6 * matmul + 6 * L * seq * qd


def sync(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak(a):
    import torch
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    n = 8192 if dev == "cuda" else 1024
    x = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    y = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(12):
        sync(torch); t = time.perf_counter(); x @ y; sync(torch)
        best = min(best, time.perf_counter() - t)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(json.dumps({"check": "peak", "device": name, "torch": torch.__version__, "bf16_matmul_tflops": 2 * n**3 / best / 1e12}))


def model_for(a, dtype):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(0)
    cfg = Qwen3Config(**shape_cfg(a.shape))
    cfg._attn_implementation = "sdpa"
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return Qwen3ForCausalLM(cfg).to(dev, dtype), cfg, dev


def sft(a):
    import torch
    model, cfg, dev = model_for(a, torch.float32)
    if a.checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, eps=1e-8)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device=dev)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    t = time.perf_counter(); step(); warm = time.perf_counter() - t
    sync(torch); t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync(torch); secs = (time.perf_counter() - t0) / a.steps
    print(json.dumps({"check": "sft", "impl": f"torch {torch.__version__} eager",
                      "compute": "autocast bf16" + (", gradient checkpointing" if a.checkpointing else ""),
                      "shape": pathlib.Path(a.shape).stem, "seq": a.seq, "batch": a.batch, "step_s": secs,
                      "tokens_per_s": a.seq * a.batch / secs, "warmup_s": warm, "loss": loss,
                      "torch_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None}))


def generate(a):
    import torch
    model, cfg, dev = model_for(a, torch.bfloat16)
    model.eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.prompt), generator=g).to(dev)

    def run(n):
        sync(torch); t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=0)
        sync(torch)
        return time.perf_counter() - t, (out.shape[1] - a.prompt) * a.batch

    warm, _ = run(8)
    secs, generated = run(a.new_tokens)
    print(json.dumps({"check": "generate", "impl": f"transformers (torch {torch.__version__})", "precision": "bf16",
                      "shape": pathlib.Path(a.shape).stem, "batch": a.batch, "prompt": a.prompt, "new_tokens": a.new_tokens,
                      "generated": generated, "secs": secs, "tokens_per_s": generated / secs, "warmup_s": warm}))


def report(a):
    rows = [json.loads(l) for l in pathlib.Path(a.file).read_text().splitlines() if l.startswith("{")]
    peak_rows = [r for r in rows if r["check"] == "peak"]
    peak = peak_rows[0]["bf16_matmul_tflops"] if peak_rows else None
    if peak_rows:
        print(f"card: {peak_rows[0]['device']}; measured bf16 matmul peak {peak:.0f} TFLOP/s (torch {peak_rows[0]['torch']})\n")
    par = [r for r in rows if r["check"] == "parity"]
    if par:
        print("| parity case (log-probs, mean / max abs vs transformers f32) | ours f32 | ours bf16 | torch.autocast bf16 | ok |\n|---|---:|---:|---:|---|")
        for r in par:
            print(f"| {r['case']} ({r['impl']}) | {r['f32_mean_abs_vs_f32']:.1e} / {r['f32_max_abs_vs_f32']:.1e} | {r['bf16_mean_abs_vs_f32']:.4f} / {r['bf16_max_abs_vs_f32']:.3f}"
                  f" | {r['autocast_mean_abs_vs_f32']:.4f} / {r['autocast_max_abs_vs_f32']:.3f} | {r['ok']} |")
        print()
    sft_rows = [r for r in rows if r["check"] == "sft"]
    if sft_rows:
        print("| SFT step | compute | seq x batch | tokens/s | MFU | peak memory | first step | its loss / grad norm |\n|---|---|---|---:|---:|---:|---:|---:|")
        for r in sft_rows:
            flops = train_flops_per_token(shape_cfg(r["shape_path"]), r["seq"]) * r["tokens_per_s"] / 1e12 if "shape_path" in r else None
            mfu = f"{100 * flops / peak:.1f}%" if flops and peak else "-"
            mem = f"{r['peak_mem_mb'] / 1024:.1f} GiB" if r.get("peak_mem_mb") else "-"
            # Ours: the first step's loss and gradient norm, from the same seeded weights in
            # every build (builds computing the same step agree to bf16 rounding).
            first = f"{r['first_loss']:.5f} / {r['first_grad_norm']:.5f}" if r.get("first_loss") is not None else "-"
            print(f"| {r['impl']} | {r['compute']} | {r['seq']} x {r['batch']} | {r['tokens_per_s']:.0f} | {mfu} | {mem} | {warm(r)} | {first} |")
        ratio(sft_rows, "SFT")
    gen_rows = [r for r in rows if r["check"] == "generate"]
    if gen_rows:
        print("| generation | batch x (prompt + new) | tokens/s | peak memory | warm-up |\n|---|---|---:|---:|---:|")
        for r in gen_rows:
            mem = f"{r['peak_mem_mb'] / 1024:.1f} GiB" if r.get("peak_mem_mb") else "-"
            print(f"| {r['impl']} {r['precision']} | {r['batch']} x ({r['prompt']} + {r['new_tokens']}) | {r['tokens_per_s']:.0f} | {mem} | {warm(r)} |")
        ratio(gen_rows, "generation")


def warm(r):
    """The untimed first run (ours: kernel compiles and autotune on a fresh machine)."""
    return f"{r['warmup_s']:.1f} s" if r.get("warmup_s") is not None else "-"


def ratio(rows, what):
    ours = [r for r in rows if r["impl"].startswith("burn")]
    ref = [r for r in rows if not r["impl"].startswith("burn")]
    for o in ours:
        for r in ref:
            if o.get("compute", "").endswith("checkpointing") == r.get("compute", "").endswith("checkpointing"):
                print(f"\n{what}: {o['impl']}/PyTorch tokens/s = {o['tokens_per_s'] / r['tokens_per_s']:.2f}x ({o.get('compute', o.get('precision'))}; batch {o['batch']} vs {r['batch']})")
    print()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("peak")
    s = sub.add_parser("sft"); s.add_argument("--shape"); s.add_argument("--seq", type=int, default=4096)
    s.add_argument("--batch", type=int, default=1); s.add_argument("--steps", type=int, default=3)
    s.add_argument("--checkpointing", action="store_true")
    g = sub.add_parser("generate"); g.add_argument("--shape"); g.add_argument("--batch", type=int, default=16)
    g.add_argument("--prompt", type=int, default=128); g.add_argument("--new-tokens", type=int, default=256)
    r = sub.add_parser("report"); r.add_argument("file")
    a = p.parse_args()
    {"peak": peak, "sft": sft, "generate": generate, "report": report}[a.cmd](a)
