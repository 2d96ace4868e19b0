#!/usr/bin/env bash
# The main job on the shipped samples with tiny local models, end to end on a CPU.
# Each step is the command a team runs with a real backbone on a GPU (see README).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q "torch==2.13.0"   # local CPU build; a GPU machine takes its own torch
python -m pip install -q -e .
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
D=resource/data

echo "== 1. validate the data files"
python run/validate.py --task cci $D/cci_train.json $D/cci_dev.json $D/cci_test.json
python run/validate.py --task dcs $D/dcs_train.json $D/dcs_dev.json $D/dcs_test.json

echo "== 2. build a tiny random-weight Gemma-2 (real architecture, Korean BPE tokenizer)"
python run/tiny_model.py --family gemma2 --out models/tiny-gemma2 --overwrite

echo "== 3. render prompts through its chat template, with the length budget"
python run/render.py --task cci --data $D/cci_dev.json --model models/tiny-gemma2 --prompt highlight --n 1
python run/render.py --task dcs --data $D/dcs_dev.json --model models/tiny-gemma2 --max_length 512 --n 0
