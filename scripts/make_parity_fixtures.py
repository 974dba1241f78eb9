#!/usr/bin/env python3
"""Builds small random Qwen3 checkpoints with transformers and records what transformers
computes on them, for the Rust parity tests (model/tests/fixtures/parity/<case>/).

Needs torch + transformers (not installed by CI; the outputs are committed):
    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers
    /tmp/ref/bin/python scripts/make_parity_fixtures.py

Each case folder holds an HF checkpoint (config.json + safetensors) and expected.json:
input ids, per-token next-token log-probs, the top-5 logits at the last position and
greedy continuations, all computed by transformers in float32 from the saved weights.
"""
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

OUT = Path(__file__).resolve().parent.parent / "model" / "tests" / "fixtures" / "parity"

BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, head_dim=8, max_position_embeddings=64,
            rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)

# name: (config overrides, dtype saved, max shard size or None, config style)
CASES = {
    "tied_gqa1_f32": (dict(tie_word_embeddings=True, attention_bias=True), torch.float32, None, "rope_parameters"),
    "untied_gqa2_headdim_bf16_sharded": (
        dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        torch.bfloat16, "20KB", "published"),
    "gqa4_yarn_f16": (
        dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False,
             rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                              "original_max_position_embeddings": 16}),
        torch.float16, None, "rope_parameters"),
    "yarn_published_bf16": (
        dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
             rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                              "original_max_position_embeddings": 8}),
        torch.bfloat16, None, "published"),
}


def randomize(model, gen):
    """Weights large enough that log-probs differ clearly between tokens and positions."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5 * 1.5)


def to_published_style(path: Path):
    """Rewrite config.json the way published checkpoints write RoPE: rope_theta + rope_scaling."""
    cfg = json.loads(path.read_text())
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rp.pop("rope_type") if rp.get("rope_type") == "default" else None
    cfg["rope_scaling"] = rp if rp else None
    path.write_text(json.dumps(cfg, indent=2))


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    gen = torch.Generator().manual_seed(0)
    for i, (name, (overrides, dtype, shard, style)) in enumerate(CASES.items()):
        cfg = Qwen3Config(**{**BASE, **overrides})
        torch.manual_seed(i)
        model = Qwen3ForCausalLM(cfg).eval()
        randomize(model, gen)
        d = OUT / name
        kw = {"max_shard_size": shard} if shard else {}
        model.to(dtype).save_pretrained(d, **kw)
        if style == "published":
            to_published_style(d / "config.json")
        # Reference numbers come from the folder as saved, loaded back in float32.
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        ids = torch.randint(3, cfg.vocab_size, (2, 20), generator=gen)
        with torch.no_grad():
            logits = ref(ids).logits
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
            top = torch.topk(logits[:, -1], 5, dim=-1)
            prompt = ids[:1, :6]
            greedy = ref.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                  max_new_tokens=10, min_new_tokens=10, eos_token_id=None, pad_token_id=0)
        expected = {
            "input_ids": ids.tolist(),
            "next_token_logprobs": logp.tolist(),
            "last_top5": [[[int(t), float(v)] for v, t in zip(top.values[b], top.indices[b])] for b in range(2)],
            "greedy_prompt": prompt[0].tolist(),
            "greedy_tokens": greedy[0, prompt.shape[1]:].tolist(),
        }
        (d / "expected.json").write_text(json.dumps(expected))
        files = sorted(p.name for p in d.iterdir())
        print(f"{name}: {files}")


if __name__ == "__main__":
    main()
