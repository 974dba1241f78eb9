#!/usr/bin/env python3
"""Developer check (needs torch + transformers): folders written by our binary load in
transformers and give the same numbers.

1. `trainer init-model` writes a random Qwen3 on the real tokenizer with the DeepAnalyze
   tags added (grown vocabulary, sharded); transformers loads model and tokenizer, encodes a
   trajectory to the same ids and gives the same log-probs as `trainer score`.
2. `trainer init-model` with a bf16, untied, YaRN shape: the same, through the other dtype path.

    cargo build --release -p trainer && scripts/setup-assets.sh
    /path/to/venv/bin/python scripts/check_transformers_loads.py
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
TRAINER = ROOT / "target" / "release" / "trainer"
TEXT = "<Analyze>Load it.</Analyze>\n<Code>\n```python\nprint(1)\n```\n</Code>\n<Execute>\n1\n</Execute>\n<Answer>1</Answer>"

SHAPES = {
    "tiny-tied-f32": json.loads((ROOT / "configs" / "tiny-qwen3.json").read_text()),
    "untied-bf16-yarn": {**json.loads((ROOT / "configs" / "tiny-qwen3.json").read_text()),
                         "vocab_size": 151669, "tie_word_embeddings": False, "dtype": "bfloat16",
                         "num_key_value_heads": 1, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                                      "original_max_position_embeddings": 8}},
}


def main():
    worst_all = 0.0
    for name, shape in SHAPES.items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "shape.json"
            cfg.write_text(json.dumps(shape))
            out = Path(tmp) / "ck"
            subprocess.run([TRAINER, "init-model", "--config", cfg, "--tokenizer", ROOT / "assets" / "qwen3-tokenizer",
                            "--out", out, "--seed", "1"], check=True)
            ours = json.loads(subprocess.run([TRAINER, "score", "--model", out, "--text", TEXT], check=True,
                                             capture_output=True, text=True).stdout)
            tok = AutoTokenizer.from_pretrained(out)
            model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            ids = tok.encode(TEXT, add_special_tokens=False)
            assert ids == ours["ids"], f"{name}: tokenization differs\n{ids}\n{ours['ids']}"
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0]
            ref = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
            worst = max(abs(a - b) for a, b in zip(ref.tolist(), ours["next_token_logprobs"]))
            top = torch.topk(logits[-1], 5)
            assert [int(i) for i in top.indices] == [p[0] for p in ours["last_top5"]], f"{name}: top-5 differs"
            print(f"{name}: transformers loaded it; {len(ids)} tokens, max |Δ log-prob| = {worst:.2e}")
            worst_all = max(worst_all, worst)
    sys.exit(0 if worst_all < 1e-4 else 1)


if __name__ == "__main__":
    main()
