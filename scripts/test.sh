#!/usr/bin/env bash
# The project's whole check, as README gives it and CI runs it (.ci/run):
# set-up, model fetch, formatting, lints, the CUDA build check, every test, the GPU kernels and
# the model on Vulkan (lavapipe, no GPU needed), the systemd units'
# offline checks, and the appliance image built and booted.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-debian.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
scripts/fetch-model.sh
# gemma-3-270m Q4_K_M: the real K-quant / gemma3 model of tests/model_gemma3.rs.
scripts/fetch-model.sh gemma3-270m
# llama.cpp's tokenizer test vocabularies (tests/tokenizer_vocab.rs).
scripts/fetch-vocab.sh
# The official openai Python client (tests/api_openai.rs).
scripts/fetch-openai-client.sh

# No incremental caches in a one-shot run: they only cost disk (a CI machine once had little).
export CARGO_INCREMENTAL=0
df -h . | tail -n 1 | awk '{print "test.sh: disk free before the build: " $4}'

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo check --features cuda (compiles the CubeCL kernels; nothing runs on a GPU here)"
cargo check --workspace --features cuda
echo "== cargo clippy --features vulkan (the model crate on burn-wgpu)"
cargo clippy -p wecom-edge-model --features vulkan --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== the GPU kernels and the model on Vulkan: lavapipe, Mesa's CPU driver (feature vulkan)"
cargo test -p wecom-edge-model --features vulkan -- vulkan

echo "== systemd units: verify silent, security exposure <= 2.0"
systemd/check target/debug/wecom-edge

# The appliance: image/build from Debian's packages, then one UEFI boot under QEMU (TCG) of the
# image on a disk 1 GiB larger, with a configuration stick plugged in: the stick is imported (its
# configuration and a small model, checked on the box and switched to), the service is READY
# with that model, /readyz answers, the demo bot answers a question through the simulator, the
# boot is blessed and the data partition grew to the disk's end (about 5 minutes on 2 cores).
# The test build's binary stands in for the release one (README "Appliance" builds with the
# release binary). WECOM_EDGE_SKIP_IMAGE=1 skips it.
if [ "${WECOM_EDGE_SKIP_IMAGE:-0}" != 1 ]; then
  echo "== appliance image: build + boot smoke test"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  start=$(date +%s)
  $sudo image/build --binary target/debug/wecom-edge --output build/ci/wecom-edge.img \
    --workdir build/ci/work
  $sudo image/smoke-test build/ci/wecom-edge.img --config-stick image/test/config-stick \
    --stick-model tests/data/synthetic/qwen2-q4_k_m.gguf \
    --grow-disk 1024 --ask --since "$start" --timeout 600
  $sudo rm -rf build/ci
fi
echo "test.sh: all checks passed"
