#!/usr/bin/env bash
# Installs the official `openai` Python client (pinned) into .venv, for tests/api_openai.rs
# (the box's OpenAI-compatible API checked with the client other tools use). Needs python3
# with venv (scripts/setup-debian.sh installs it). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.63.0
if .venv/bin/python -c "import openai, sys; sys.exit(openai.__version__ != '$version')" 2>/dev/null; then
  echo "openai client: .venv has openai $version"
  exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "openai==$version"
echo "openai client: installed openai $version in .venv"
