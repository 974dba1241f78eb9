#!/usr/bin/env bash
# Makes the sandbox's Python: a venv with the published environment's libraries, pinned.
# Built from Debian's python3 when present (readable by the sandbox's per-workspace uids,
# unlike a pyenv under root's 0700 home). Location: $DEEPANALYZE_SANDBOX_VENV or
# .venv-sandbox; point the sandbox at it with DEEPANALYZE_SANDBOX_PYTHON=<venv>/bin/python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${DEEPANALYZE_SANDBOX_VENV:-$root/.venv-sandbox}
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
missing=()
"$py" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# bubblewrap gives the sandbox its read-only root and private /tmp (see README); as root we
# can install it, otherwise the sandbox says at start-up which weaker isolation it uses.
command -v bwrap >/dev/null 2>&1 || [ "$(id -u)" != 0 ] || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  numpy==2.4.6 pandas==3.1.1 scipy==1.17.1 scikit-learn==1.9.1 statsmodels==0.15.0 \
  matplotlib==3.11.2 seaborn==0.13.2 openpyxl==3.1.5 pyarrow==26.0.1
chmod -R a+rX "$venv"
echo "sandbox python ready: $venv/bin/python"
