#!/usr/bin/env bash
# Fetches llama.cpp's own tokenizer test vocabularies (models/ggml-vocab-*.gguf, vocab-only
# GGUFs) into models/vocab/, for tests/tokenizer_vocab.rs.
#
# Source: the llama.cpp tree vendored in the PyPI source distribution llama_cpp_python-0.3.36
# (vendor/llama.cpp/models/), downloaded from files.pythonhosted.org and checked against its
# pinned sha256. The matching .inp/.out vectors are checked in under tests/data/vocab/.
# Idempotent: present files are kept.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest="${WECOM_EDGE_MODEL_DIR:-$here/models}/vocab"
url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz"
sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
vocabs=(command-r deepseek-coder deepseek-llm falcon gpt-2 llama-bpe llama-spm mpt phi-3 qwen2 qwen35 refact starcoder)

missing=0
for v in "${vocabs[@]}"; do
  [ -f "$dest/ggml-vocab-$v.gguf" ] || missing=1
done
if [ "$missing" = 0 ]; then
  echo "vocabularies present: $dest"
  exit 0
fi
python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "fetch-vocab: python3 is required" >&2
  exit 1
fi
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch-vocab: downloading llama_cpp_python-0.3.36.tar.gz (76 MB) from PyPI"
"$python" - "$url" "$work/sdist.tar.gz" <<'PY'
import sys, urllib.request
url, out = sys.argv[1:]
with urllib.request.urlopen(url, timeout=300) as r, open(out, "wb") as f:
    while chunk := r.read(1 << 20):
        f.write(chunk)
PY
got=$(sha256sum "$work/sdist.tar.gz" | cut -d' ' -f1)
if [ "$got" != "$sha256" ]; then
  echo "fetch-vocab: sha256 mismatch: got $got, want $sha256" >&2
  exit 1
fi
members=()
for v in "${vocabs[@]}"; do
  members+=("llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-$v.gguf")
done
tar -xzf "$work/sdist.tar.gz" -C "$work" "${members[@]}"
for v in "${vocabs[@]}"; do
  mv "$work/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-$v.gguf" "$dest/"
done
echo "vocabularies installed: $dest (${#vocabs[@]} files)"
