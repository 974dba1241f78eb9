"""PyTorch twin of `trainer-bench sft --precision f32`: the same shape, random weights and tokens, one causal
document per row, next-token loss on every token, backward, clip_grad_norm_(1.0),
AdamW. Prints one JSON line with tokens/s and peak RSS."""
import argparse, json, pathlib, resource, time
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--shape"); p.add_argument("--seq", type=int, default=512)
p.add_argument("--batch", type=int, default=4); p.add_argument("--steps", type=int, default=3)
a = p.parse_args()
torch.manual_seed(0)
cfg = Qwen3Config(**{k: v for k, v in json.loads(pathlib.Path(a.shape).read_text()).items() if k not in ("architectures", "dtype")})
model = Qwen3ForCausalLM(cfg).float()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, eps=1e-8)
ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq))


def step():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


step()  # warm-up
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
secs = (time.perf_counter() - t0) / a.steps
print(json.dumps({"impl": f"torch {torch.__version__}", "shape": pathlib.Path(a.shape).stem, "seq": a.seq, "batch": a.batch,
                  "tokens_per_s": a.seq * a.batch / secs, "step_s": secs,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
