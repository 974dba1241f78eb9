#!/usr/bin/env python3
"""Records what Python `tokenizers` and transformers' `apply_chat_template` produce on the
real Qwen3 tokenizer (assets/qwen3-tokenizer, from scripts/setup-assets.sh), for the Rust
tests (model/tests/fixtures/tokenizer.json). Needs transformers; outputs are committed.
"""
import json
from pathlib import Path

from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
TOK = ROOT / "assets" / "qwen3-tokenizer"
OUT = ROOT / "model" / "tests" / "fixtures" / "tokenizer.json"
TAGS = ["<Analyze>", "</Analyze>", "<Understand>", "</Understand>", "<Code>", "</Code>",
        "<Execute>", "</Execute>", "<Answer>", "</Answer>"]

TEXTS = [
    "Hello world",
    "  leading spaces and\ttabs\n\nnewlines  ",
    "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.groupby('region')['revenue'].sum())",
    "数据分析：平均值为 3.14159，标准差 2.71828。",
    "emoji 🤖📊 and accents: naïve café Ñandú",
    "<|im_start|>user\nWhat is the mean?<|im_end|>\n<think>\n\n</think>",
    "<Analyze>Load the table.</Analyze>\n<Code>\n```python\nprint(1+1)\n```\n</Code>\n<Execute>\n2\n</Execute>\n<Answer>2</Answer>",
    "12345678901234567890 1,234.56 -0.001e-10",
]

TOOLS = [{"type": "function", "function": {"name": "run_python", "description": "Run Python code <safely> & return stdout",
          "parameters": {"type": "object", "properties": {"code": {"type": "string"}, "timeout": {"type": "number", "default": 1e-05}},
                         "required": ["code"]}}}]

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "What is the average price?"}], "tools": None, "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "You are a data scientist."},
                  {"role": "user", "content": "Summarize sales.csv"},
                  {"role": "assistant", "content": "<think>\nlook first\n</think>\n\nThe total is 42."},
                  {"role": "user", "content": "And the median?"}], "tools": None, "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "Use tools."},
                  {"role": "user", "content": "Compute 2+2 with Python."},
                  {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "run_python", "arguments": {"code": "print(2+2)"}}}]},
                  {"role": "tool", "content": "4"},
                  {"role": "tool", "content": "done"},
                  {"role": "assistant", "content": "It is 4."}], "tools": TOOLS, "add_generation_prompt": False},
    {"messages": [{"role": "user", "content": "# Instruction\nHow many rows?\n\n# Data\nFile 1:\n{\"name\": \"a.csv\", \"size\": \"1.2KB\"}"},
                  {"role": "assistant", "content": "<Analyze>Count rows.</Analyze>\n<Code>\n```python\nimport pandas as pd\nprint(len(pd.read_csv('a.csv')))\n```\n</Code>"},
                  {"role": "execute", "content": "120"},
                  {"role": "assistant", "content": "<Understand>120 rows.</Understand>\n<Answer>120</Answer>"}], "tools": None, "add_generation_prompt": False},
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Plot it."},
                  {"role": "assistant", "content": "<Code>\n```python\nx=1/0\n```\n</Code>"},
                  {"role": "execute", "content": "[Error]:\nTraceback (most recent call last):\nZeroDivisionError: division by zero"}],
     "tools": None, "add_generation_prompt": True},
]


def splice_execute(messages):
    """The documented rule, written independently of the Rust code: runs of assistant and
    execute messages become one assistant message with each observation inlined."""
    out = []
    for m in messages:
        if m["role"] not in ("assistant", "execute"):
            out.append(dict(m))
            continue
        piece = m["content"] if m["role"] == "assistant" else f"\n<Execute>\n{m['content']}\n</Execute>\n"
        if out and out[-1]["role"] == "assistant":
            out[-1]["content"] += piece
        else:
            new = dict(m) if m["role"] == "assistant" else {}
            new.update(role="assistant", content=piece)
            out.append(new)
    return out


def main():
    fast = Tokenizer.from_file(str(TOK / "tokenizer.json"))
    base_len = fast.get_vocab_size(with_added_tokens=True)
    encodings = [{"text": t, "ids": fast.encode(t, add_special_tokens=False).ids} for t in TEXTS]
    hf = AutoTokenizer.from_pretrained(TOK)
    hf.add_tokens(TAGS)
    tag_ids = [hf.convert_tokens_to_ids(t) for t in TAGS]
    with_tags = [{"text": t, "ids": hf.encode(t, add_special_tokens=False)} for t in TEXTS]
    deepanalyze = (ROOT / "model" / "templates" / "deepanalyze.jinja").read_text()
    renders = []
    for conv in CONVERSATIONS:
        kw = dict(tokenize=False, add_generation_prompt=conv["add_generation_prompt"])
        if conv["tools"]:
            kw["tools"] = conv["tools"]
        qwen3 = hf.apply_chat_template(splice_execute(conv["messages"]), **kw)
        da = hf.apply_chat_template(conv["messages"], chat_template=deepanalyze, **kw)
        renders.append({**conv, "qwen3": qwen3, "deepanalyze": da})
    OUT.write_text(json.dumps({"base_vocab_len": base_len, "tag_ids": tag_ids, "encodings": encodings,
                               "encodings_with_tags": with_tags, "chat": renders}, ensure_ascii=False, indent=1))
    print(f"wrote {OUT}: tags at {tag_ids}")


if __name__ == "__main__":
    main()
