#!/usr/bin/env bash
# Install malpyeong with its test tools and run the offline test suite (CPU, ~minutes).
set -euo pipefail
cd "$(dirname "$0")"
# torch first, pinned: on a CPU machine this is the local CPU build, not the CUDA download.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
