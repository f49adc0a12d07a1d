#!/usr/bin/env bash
# The project's whole check, as README gives it and CI runs it (.ci/run):
# set-up, model fetch, formatting, lints, the CUDA build check, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-debian.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
scripts/fetch-model.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo check --features cuda (compiles the CubeCL kernels; nothing runs on a GPU here)"
cargo check --workspace --features cuda
echo "== cargo test"
cargo test --workspace
echo "test.sh: all checks passed"
