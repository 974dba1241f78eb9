"""The reference side of benches/run_rl_bench.sh: the rollout phase of an RL step done the
way the published tools do it, with transformers' batched `generate` (stop string
`</Code>`, left padding, sampling) and each cell run by `python -c` in a copy of the task's
files (a thread pool, one cell per core at a time), on the same checkpoint, tasks and limits
as configs/stage3.toml. Prints one JSON line: seconds per step split into generate / cells,
and rollout tokens/s.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--tasks", required=True, help="shard folder of rl_task records")
ap.add_argument("--python", required=True, help="interpreter with pandas for the cells")
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--tasks-per-step", type=int, default=8)
ap.add_argument("--group-size", type=int, default=4)
ap.add_argument("--max-turns", type=int, default=4)
ap.add_argument("--max-new-tokens", type=int, default=384)
ap.add_argument("--max-response-tokens", type=int, default=2048)
ap.add_argument("--temperature", type=float, default=1.0)
ap.add_argument("--timeout", type=float, default=10.0)
a = ap.parse_args()
a.python = os.path.abspath(a.python)  # cells run with cwd = their workspace

torch.manual_seed(0)
torch.set_num_threads(os.cpu_count())
tok = AutoTokenizer.from_pretrained(a.model)
tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
eos = tok.convert_tokens_to_ids(tok.eos_token)
tasks = [r for f in sorted(glob.glob(os.path.join(a.tasks, "*.parquet"))) for r in pq.read_table(f).to_pylist() if r["kind"] == "qa"]


def run_cell(code, cwd):
    try:
        p = subprocess.run([a.python, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=a.timeout)
        return p.stdout if p.returncode == 0 else "[Error]:\n" + p.stderr
    except subprocess.TimeoutExpired:
        return "[Error]:\nTimeout"


def code_of(text):
    tail = text.rsplit("</Execute>", 1)[-1]
    if "```python" not in tail:
        return None
    return tail.split("```python", 1)[1].split("```", 1)[0]


gen_s = cell_s = 0.0
generated = 0
pool = ThreadPoolExecutor(os.cpu_count())
for step in range(a.steps):
    batch = tasks[step * a.tasks_per_step:(step + 1) * a.tasks_per_step]
    trajs = []
    for t in batch:
        prompt = tok.apply_chat_template([{"role": "user", "content": t["prompt"]}], tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False).input_ids
        src = os.path.join(a.tasks, t["workspace"])
        for _ in range(a.group_size):
            ws = tempfile.mkdtemp()
            for f in t["files"]:
                shutil.copy(os.path.join(src, f), ws)
            trajs.append({"prompt": ids, "resp": [], "text": "", "ws": ws, "live": True})
    for turn in range(a.max_turns):
        live = [r for r in trajs if r["live"] and len(r["resp"]) < a.max_response_tokens]
        if not live:
            break
        room = max(a.max_response_tokens - len(r["resp"]) for r in live)
        enc = tok.pad({"input_ids": [r["prompt"] + r["resp"] for r in live]}, return_tensors="pt")
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=a.temperature, top_p=1.0, top_k=0,
                                 max_new_tokens=min(a.max_new_tokens, room), stop_strings=["</Code>"], tokenizer=tok,
                                 eos_token_id=eos, pad_token_id=eos)
        gen_s += time.perf_counter() - t0
        width = enc["input_ids"].shape[1]
        cells = []
        for r, row in zip(live, out[:, width:].tolist()):
            new = row[:row.index(eos) + 1] if eos in row else row
            text = tok.decode(new[:-1] if new and new[-1] == eos else new)
            if "</Code>" in text:  # rows stopped by the string are padded after it
                text = text[:text.index("</Code>") + len("</Code>")]
                new = tok(text, add_special_tokens=False).input_ids
            generated += len(new)
            r["resp"] += new
            r["text"] += text
            code = code_of(r["text"]) if text.endswith("</Code>") else None
            if code is None:
                r["live"] = False
            else:
                cells.append((r, code))
        t0 = time.perf_counter()
        for (r, _), obs in zip(cells, pool.map(lambda rc: run_cell(rc[1], rc[0]["ws"]), cells)):
            block = f"\n<Execute>\n{obs}\n</Execute>\n"
            r["resp"] += tok(block, add_special_tokens=False).input_ids
            r["text"] += block
        cell_s += time.perf_counter() - t0
    for r in trajs:
        shutil.rmtree(r["ws"], ignore_errors=True)

print(json.dumps({"impl": f"transformers {__import__('transformers').__version__} + python -c", "steps": a.steps,
                  "generate_s": gen_s / a.steps, "cells_s": cell_s / a.steps, "rollout_s": (gen_s + cell_s) / a.steps,
                  "generated_tokens": generated / a.steps, "rollout_tok_s": generated / gen_s}))
