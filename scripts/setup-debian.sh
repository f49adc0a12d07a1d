#!/usr/bin/env bash
# Installs what building and testing wecom-edge needs on a fresh Debian (bookworm or later):
# a C toolchain (for the onig regex library the tokenizer uses), Python 3 with pip (the model
# fetch script) and venv (the openai client of the API tests), systemd-analyze, Chromium with
# ChromeDriver (the console's browser test), Mesa's lavapipe Vulkan driver (the GPU kernels' tests), and Rust via
# rustup when no cargo is on PATH. The appliance image's tools (mmdebstrap, mtools, QEMU, OVMF,
# …) are installed by image/build and image/smoke-test themselves. Idempotent: installs nothing
# that is already there.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# venv: the official openai client for the API tests (scripts/fetch-openai-client.sh).
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# systemd-analyze: the units' offline checks (systemd/check).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The console's browser test (tests/browser_console.rs): Debian's Chromium and ChromeDriver,
# and a small CJK font so its screenshots show Chinese.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
# The GPU kernels' tests without a GPU (feature `vulkan`): Mesa's lavapipe, a Vulkan driver that
# runs on the CPU, and the Vulkan loader.
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || missing+=(mesa-vulkan-drivers)
ls /usr/lib/*/libvulkan.so.1 >/dev/null 2>&1 || missing+=(libvulkan1)

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "setup: installing Rust (rustup, stable)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
fi
echo "setup: ok"
