#!/usr/bin/env python3
"""The PyTorch/transformers twin of `model-bench`: same shape file, same measurements
(best of N after a warm-up), same JSON keys. float32 on CPU, threads = cores."""
import argparse
import json
import os
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--shape", required=True)
p.add_argument("--tokens", type=int, default=128)
p.add_argument("--new-tokens", type=int, default=16)
p.add_argument("--reps", type=int, default=3)
a = p.parse_args()

torch.set_num_threads(os.cpu_count())
shape = json.loads(Path(a.shape).read_text())
shape.pop("dtype", None)
model = Qwen3ForCausalLM(Qwen3Config(**shape)).eval()
ids = torch.tensor([[(i * 7919) % shape["vocab_size"] for i in range(a.tokens)]])


def best(f):
    f()
    times = []
    for _ in range(a.reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


with torch.no_grad():
    fwd = best(lambda: model(ids))
    gen = lambda cache: best(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                                    max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                                    use_cache=cache, eos_token_id=None, pad_token_id=0))
    with_cache, without_cache = gen(True), gen(False)
print(json.dumps({"impl": f"torch-{torch.__version__}", "shape": Path(a.shape).stem, "prompt_tokens": a.tokens,
                  "new_tokens": a.new_tokens, "forward_tok_s": a.tokens / fwd,
                  "gen_cache_tok_s": a.new_tokens / with_cache, "gen_nocache_tok_s": a.new_tokens / without_cache}))
