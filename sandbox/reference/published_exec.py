#!/usr/bin/env python3
"""The published DeepAnalyze execution, as its paper and environment describe it: a fresh
Python process per cell, cwd = the workspace, matplotlib Agg, stdout and stderr captured,
errors condensed to the first `<string>` frame. Independent of the sandbox's zygote: used
as the reference for observation parity tests and as the cold-process benchmark baseline.

    python published_exec.py [--timeout SECS] < cell.py     # prints the observation
Without --timeout this process itself is the fresh interpreter; with it, the cell runs in
a child interpreter and the parent enforces the limit, as the published RL environment did.
"""
import contextlib
import io
import re
import subprocess
import sys
import traceback


def condense(code, exc, stderr_text):
    full = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    m = re.search(r'File "<string>", line (\d+), in ', full)
    head = "Traceback (most recent call last):\n"
    if m:
        n = int(m.group(1))
        src = code.split("\n")[n - 1].strip() if n <= len(code.split("\n")) else ""
        head += f'  File "<string>", line {n}, in <module>\n    {src}\n'
    body = head + type(exc).__name__ + ": " + str(exc)
    if stderr_text:
        body = body + "\n" + stderr_text
    return "[Error]:\n" + body.strip()


def run(code):
    import matplotlib
    matplotlib.use("Agg")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(code, {"__name__": "__main__"})
    except (SystemExit, KeyboardInterrupt):
        return "[Error]\nUnknown execution error."
    except Exception as e:
        return condense(code, e, err.getvalue())
    return out.getvalue() + err.getvalue()


def main():
    code = sys.stdin.read()
    if len(sys.argv) == 3 and sys.argv[1] == "--timeout":
        t = float(sys.argv[2])
        try:
            p = subprocess.run([sys.executable, __file__], input=code, capture_output=True, text=True, timeout=t)
        except subprocess.TimeoutExpired:
            sys.stdout.write(f"[Error]\nPython code execution timed out after {t} seconds.")
            return
        sys.stdout.write(p.stdout if p.returncode == 0 else "[Error]\nUnknown execution error.")
        return
    sys.stdout.write(run(code))


if __name__ == "__main__":
    main()
