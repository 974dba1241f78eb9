"""The reference for `trainer-bench sample`: one decoding step's draws and log-probs as
transformers samples them (its logits warpers, softmax, torch.multinomial) plus the
log-probability of each drawn token under softmax(logits / T), as RL frameworks score
rollouts; on the CPU, over `rows` rows of Gaussian logits. Prints one JSON line."""
import argparse, json, time

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

p = argparse.ArgumentParser()
p.add_argument("--rows", type=int, default=32)
p.add_argument("--vocab", type=int, default=151_936)
p.add_argument("--spread", type=float, default=1.0)
p.add_argument("--temperature", type=float, default=0.7)
p.add_argument("--top-p", type=float, default=1.0)
p.add_argument("--top-k", type=int, default=0)
p.add_argument("--steps", type=int, default=20)
a = p.parse_args()

warpers = LogitsProcessorList([TemperatureLogitsWarper(a.temperature)])
if a.top_k > 0:
    warpers.append(TopKLogitsWarper(a.top_k))
if a.top_p < 1.0:
    warpers.append(TopPLogitsWarper(a.top_p))
g = torch.Generator().manual_seed(0)
logits = [torch.randn(a.rows, a.vocab, generator=g) * a.spread for _ in range(a.steps + 1)]
times = []
with torch.inference_mode():
    for i, l in enumerate(logits):
        t = time.perf_counter()
        probs = torch.softmax(warpers(None, l), dim=-1)
        tokens = torch.multinomial(probs, 1, generator=g)
        logprobs = torch.log_softmax(l / a.temperature, dim=-1).gather(1, tokens)  # f32, as verl/TRL score
        tokens, logprobs = tokens.tolist(), logprobs.tolist()
        if i > 0:
            times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"check": "sample", "impl": f"transformers {__import__('transformers').__version__}", "threads": torch.get_num_threads(),
                  "rows": a.rows, "vocab": a.vocab, "spread": a.spread, "temperature": a.temperature, "top_p": a.top_p,
                  "top_k": a.top_k, "steps": a.steps, "median_ms": times[len(times) // 2] * 1e3, "min_ms": times[0] * 1e3}))
