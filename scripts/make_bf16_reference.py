#!/usr/bin/env python3
"""bf16 references for the mixed-precision tests: what `torch.autocast(bfloat16)` over
float32 weights computes on the committed fixtures (our `[compute] precision = "bf16"`
follows autocast: bf16 matmuls and attention, f32 residual stream, norms and softmax).

Reads the checkpoints scripts/make_parity_fixtures.py and scripts/make_sft_parity.py
wrote, writes next to them:
- model/tests/fixtures/parity/<case>/bf16.json: per-token next-token log-probs;
- trainer/tests/fixtures/sft-parity/bf16.json: the first step's loss and gradient norm
  (both sequences, loss normalized by the step's trained tokens, no optimizer step).

Needs torch + transformers (not CI):  /path/to/venv/bin/python scripts/make_bf16_reference.py
"""
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent


def load(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def parity_cases():
    for case in sorted((ROOT / "model/tests/fixtures/parity").iterdir()):
        exp = json.loads((case / "expected.json").read_text())
        model = load(case)
        ids = torch.tensor(exp["input_ids"])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        logp = torch.log_softmax(logits.float()[:, :-1], -1).gather(2, ids[:, 1:, None])[..., 0]
        f32 = torch.tensor(exp["next_token_logprobs"])
        print(f"{case.name}: max |bf16 - f32| log-prob {float((logp - f32).abs().max()):.4f}")
        (case / "bf16.json").write_text(json.dumps({"next_token_logprobs": logp.tolist(), "torch": torch.__version__}))


def sft_step():
    d = ROOT / "trainer/tests/fixtures/sft-parity"
    model = load(d / "model")
    seqs = json.loads((d / "batches.json").read_text())["steps"][0]
    total = sum(sum(s["mask"][1:]) for s in seqs)
    loss = 0.0
    for s in seqs:
        start = 0
        for n in s["doc_lens"]:
            ids = torch.tensor([s["ids"][start:start + n]])
            m = torch.tensor(s["mask"][start:start + n][1:], dtype=torch.float32)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(input_ids=ids, position_ids=torch.arange(n)[None]).logits[0, :-1]
            nll = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="none")
            l = (nll * m).sum() / total
            l.backward()
            loss += l.item()
            start += n
    norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters())).item()
    print(f"sft step 1 under autocast: loss {loss:.6f}, grad norm {norm:.6f}")
    (d / "bf16.json").write_text(json.dumps({"loss": loss, "grad_norm": norm, "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    parity_cases()
    sft_step()
