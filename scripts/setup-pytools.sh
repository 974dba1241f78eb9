#!/usr/bin/env bash
# Python tools the tests and benchmarks use: polars and duckdb read our shards the way
# users do; tokenizers + jinja2 + pyarrow are the data benchmark's reference (pandas
# and pyarrow come with the sandbox venv): .venv-tools, kept apart from the sandbox's
# pinned environment. tensorboard reads our event files back in the trainer tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv-tools
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check polars==1.37.1 duckdb==1.4.4 pyarrow==26.0.1 \
  tokenizers==0.23.3 jinja2==3.1.6 tensorboard==2.21.0
echo "python tools ready: $venv/bin/python"
