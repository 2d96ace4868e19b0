#!/usr/bin/env bash
# The main job on the shipped samples with tiny local models, end to end on a CPU (~2 minutes):
# validate -> prompts -> train three tiny models -> predict -> evaluate -> vote -> submission.
# Each step is the command a team runs with a real backbone on a GPU (see README); the tiny
# models have random weights, so the accuracies printed are chance-level by design.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q "torch==2.13.0"   # local CPU build; a GPU machine takes its own torch
python -m pip install -q -e .
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
D=resource/data

echo "== 1. validate the data files"
python run/validate.py --task cci $D/cci_train.json $D/cci_dev.json $D/cci_test.json
python run/validate.py --task dcs $D/dcs_train.json $D/dcs_dev.json $D/dcs_test.json

echo "== 2. build tiny random-weight models (real architectures, Korean BPE tokenizer)"
for family in gemma2 llama qwen2; do
  python run/tiny_model.py --family $family --out models/tiny-$family --overwrite
done

echo "== 3. the exact prompt a model sees (chat template + length budget)"
python run/render.py --task cci --data $D/cci_dev.json --model models/tiny-gemma2 --prompt highlight --n 1

echo "== 4. fine-tune (LoRA) one model per family on the CCI samples"
for family in gemma2 llama qwen2; do
  python run/train.py --config resource/configs/cci/tiny_lora.yaml --model models/tiny-$family \
    --output_dir runs/cci/tiny-$family --overwrite
done

echo "== 5. predict dev and test with each run"
for family in gemma2 llama qwen2; do
  for split in dev test; do
    python run/test.py --model runs/cci/tiny-$family --task cci --input $D/cci_$split.json \
      --output results/cci_$split/tiny-$family.json --overwrite
  done
done

echo "== 6. evaluate one model on dev"
python run/evaluate.py --task cci --gold $D/cci_dev.json --pred results/cci_dev/tiny-gemma2.json

echo "== 7. vote (weights = dev accuracy, ties by summed probabilities) into a submission"
python ensemble/vote.py results/cci_test/*.json --dev-results results/cci_dev/*.json \
  --gold $D/cci_dev.json --method weighted --test $D/cci_test.json \
  --output results/submission_cci.json --overwrite
python run/validate.py --task cci --submission results/submission_cci.json --test $D/cci_test.json

echo "== 8. DCS: fine-tune, generate summaries, score with the official ROUGE-1"
python run/train.py --config resource/configs/dcs/tiny_lora.yaml --overwrite
python run/test.py --model runs/dcs/tiny_lora --task dcs --input $D/dcs_dev.json \
  --output results/dcs_dev/tiny_lora.json --max_new_tokens 32 --overwrite
python run/evaluate.py --task dcs --gold $D/dcs_dev.json --pred results/dcs_dev/tiny_lora.json \
  --skip bertscore bleurt
