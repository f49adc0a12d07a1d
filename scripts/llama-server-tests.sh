#!/usr/bin/env bash
# Runs llama.cpp's own server test suite (tools/server/tests) against the box's OpenAI-compatible
# API as an external server (DEBUG_EXTERNAL=1, PORT), as issue 14 asks: which of llama.cpp's
# checks the box passes. Not part of CI: it fetches the suite from PyPI (the llama-cpp-python
# 0.3.36 sdist vendors llama.cpp with its tests; pinned by sha256) and pytest with the suite's
# own requirements into .venv-llama-tests.
#
#   scripts/llama-server-tests.sh [PYTEST ARGS…]     (default: the unit files named below)
#
# The box runs as `wecom-edge demo --headless` with the default model and `[openai]` on
# 127.0.0.1:$PORT (anonymous on loopback). The per-test results go to
# target/llama-server-tests/results.txt, a count per file to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=target/llama-server-tests
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
url=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$version.tar.gz
mkdir -p "$work"
sdist=$work/llama_cpp_python-$version.tar.gz
if ! echo "$sha256  $sdist" | sha256sum -c --quiet >/dev/null 2>&1; then
  curl -fsSL -o "$sdist.part" "$url"
  echo "$sha256  $sdist.part" | sha256sum -c --quiet
  mv "$sdist.part" "$sdist"
fi
suite=$work/llama_cpp_python-$version/vendor/llama.cpp/tools/server/tests
if [ ! -f "$suite/utils.py" ]; then
  tar -xzf "$sdist" -C "$work" "llama_cpp_python-$version/vendor/llama.cpp/tools/server/tests"
fi
if ! .venv-llama-tests/bin/python -c "import pytest, requests, openai, wget" 2>/dev/null; then
  python3 -m venv .venv-llama-tests
  .venv-llama-tests/bin/python -m pip install --quiet --disable-pip-version-check -r "$suite/requirements.txt"
fi

cargo build --quiet --bin wecom-edge
scripts/fetch-model.sh >/dev/null
port=${PORT:-18080}
cfg=$work/edge.toml
cat >"$cfg" <<EOF
[model]
max_tokens = 64
[openai]
listen = "127.0.0.1:$port"
allow_anonymous = true
[limits]
per_user_per_minute = 10000
per_chat_per_minute = 10000
EOF
rm -rf "$work/data"
target/debug/wecom-edge demo --headless --sim-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --device cpu --data-dir "$work/data" --config "$cfg" >"$work/box.out" 2>"$work/box.log" &
box=$!
trap 'kill $box 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 $box 2>/dev/null || { echo "the box exited:"; tail -20 "$work/box.log"; exit 1; }
  sleep 0.1
done

files=(unit/test_basic.py unit/test_chat_completion.py unit/test_completion.py unit/test_security.py
       unit/test_tokenize.py unit/test_stream.py unit/test_ctx_shift.py unit/test_template.py)
[ $# -gt 0 ] && files=("$@")
set +e
(cd "$suite" && DEBUG_EXTERNAL=1 PORT=$port "$root/.venv-llama-tests/bin/python" -m pytest -q -rA \
   -p no:cacheprovider "${files[@]}") >"$work/pytest.txt" 2>&1
set -e
grep -E "^(PASSED|FAILED|ERROR|SKIPPED) " "$work/pytest.txt" | sort >"$work/results.txt" || true
echo "llama.cpp server tests against the box (results in $work/results.txt):"
awk '{split($2, a, "::"); n[a[1]" "$1]++} END {for (k in n) print "  " k ": " n[k]}' "$work/results.txt" | sort
tail -1 "$work/pytest.txt"
