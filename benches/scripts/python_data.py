#!/usr/bin/env python3
"""The reference side of data-bench: the same job in Python. Read the trajectory shards
with pyarrow, render each with the DeepAnalyze Jinja template (jinja2, as transformers
does), tokenize with Hugging Face `tokenizers` (encode_batch, parallel in Rust), mask the
prompt and <Execute>..</Execute> spans by offsets, pack first-fit-decreasing. Best of 3.

    python python_data.py SHARD_DIR TOKENIZER_DIR TEMPLATE.jinja SEQ_LEN
"""
import glob
import json
import sys
import time

import jinja2
import pyarrow.parquet as pq
from tokenizers import AddedToken, Tokenizer

TAGS = ["<Analyze>", "</Analyze>", "<Understand>", "</Understand>", "<Code>", "</Code>",
        "<Execute>", "</Execute>", "<Answer>", "</Answer>"]


def main():
    shard_dir, tok_dir, template_path, seq_len = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    tok = Tokenizer.from_file(f"{tok_dir}/tokenizer.json")
    tok.add_tokens([AddedToken(t, normalized=True) for t in TAGS if tok.token_to_id(t) is None])
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(open(template_path).read())

    def job():
        rows = []
        for f in sorted(glob.glob(f"{shard_dir}/part-*.parquet")):
            rows += pq.read_table(f, columns=["system", "prompt", "response"]).to_pylist()
        texts, spans = [], []
        for r in rows:
            msgs = ([{"role": "system", "content": r["system"]}] if r["system"] else []) + [{"role": "user", "content": r["prompt"]}]
            prompt = template.render(messages=msgs, add_generation_prompt=True)
            full = template.render(messages=msgs + [{"role": "assistant", "content": r["response"]}], add_generation_prompt=False)
            ex, i = [], 0
            while (s := full.find("<Execute>", i)) >= 0:
                e = full.find("</Execute>", s)
                e = len(full) if e < 0 else e + len("</Execute>")
                ex.append((s, e))
                i = e
            texts.append(full)
            spans.append((len(prompt), ex))
        # encode_batch (not encode_batch_fast, which skips the offsets the masks need).
        encs = tok.encode_batch(texts, add_special_tokens=False)
        docs, trained = [], 0
        for enc, (start, ex) in zip(encs, spans):
            mask = [int(a >= start and not any(a < e and b > s for s, e in ex)) for a, b in enc.offsets]
            trained += sum(mask)
            docs.append((enc.ids[:seq_len], mask[:seq_len]))
        docs.sort(key=lambda d: -len(d[0]))
        bins = []
        for d in docs:
            for b in bins:
                if b[0] + len(d[0]) <= seq_len:
                    b[0] += len(d[0])
                    b[1].append(d)
                    break
            else:
                bins.append([len(d[0]), [d]])
        tokens = sum(b[0] for b in bins)
        return tokens, trained, len(bins)

    best = None
    for _ in range(3):
        t = time.perf_counter()
        tokens, trained, n = job()
        s = time.perf_counter() - t
        best = s if best is None else min(best, s)
    print(json.dumps({"tokens": tokens, "trained": trained, "sequences": n, "seconds": best}))


if __name__ == "__main__":
    main()
