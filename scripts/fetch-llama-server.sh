#!/usr/bin/env bash
# Installs llama.cpp's server as llama-cpp-python[server] (pinned; built from source, about 10
# minutes on 2 cores) into .venv, for tests/upstream_llama_server.rs: the box generating
# through a real llama.cpp server on loopback, and that server killed mid-answer. Not part of
# CI (CI does not need llama.cpp); the test says it is skipped when this is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
if .venv/bin/python -c "import llama_cpp, uvicorn, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null; then
  echo "llama server: .venv has llama-cpp-python $version"
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "llama-cpp-python[server]==$version"
echo "llama server: installed llama-cpp-python $version in .venv"
