#!/usr/bin/env bash
# Install malpyeong with its test tools and run the offline test suite (CPU, ~minutes).
set -euo pipefail
cd "$(dirname "$0")"
# torch first, pinned: on a CPU machine this is the local CPU build, not the CUDA download.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
# The web page's test drives a real headless Chromium: Debian's chromium and chromium-driver,
# installed when missing and apt-get is there (as root, or with password-less sudo); without
# them that one test is skipped.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        chromium chromium-driver; } >/dev/null 2>&1 \
        || echo "note: chromium could not be installed; the web page test will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
