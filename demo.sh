#!/usr/bin/env bash
# The main job with tiny local models, end to end on a CPU (about 13 minutes of CPU time on a
# shared 2-core machine; most of it the four fine-tunings):
# validate -> a learnable SYNTHETIC CCI set -> prompts -> train three tiny models on it (their dev
# accuracy rises from chance) -> predict -> evaluate -> vote -> submission; then DCS on a
# learnable SYNTHETIC summary set: ROUGE-1 before and after fine-tuning. Each step is the command
# a team runs with a real backbone on a GPU (docs/getting_started.md).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q "torch==2.13.0"   # local CPU build; a GPU machine takes its own torch
python -m pip install -q -e .
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
D=resource/data
S=out/synthetic

echo "== 1. validate the data files"
python run/validate.py --task cci $D/cci_train.json $D/cci_dev.json $D/cci_test.json
python run/validate.py --task dcs $D/dcs_train.json $D/dcs_dev.json $D/dcs_test.json

echo "== 2. a SYNTHETIC CCI set a tiny model can learn (not competition data; ids synthetic-*)"
python run/synthetic.py --task cci --out $S --train 2400 --dev 60 --test 60 --overwrite

echo "== 3. build tiny random-weight models (real architectures, Korean BPE tokenizer)"
for family in gemma2 llama qwen2; do
  python run/tiny_model.py --family $family --out models/tiny-$family --overwrite \
    --corpus $S/cci_train.json --task cci --output_scale 16
done

echo "== 4. the exact prompt a model sees (chat template + length budget)"
python run/render.py --task cci --data $D/cci_dev.json --model models/tiny-gemma2 --prompt highlight --n 1

echo "== 5. fine-tune one model per family on the synthetic set: dev accuracy rises from chance"
for family in gemma2 llama qwen2; do
  python run/train.py --config resource/configs/cci/tiny_synthetic_full.yaml \
    --model models/tiny-$family --output_dir runs/cci/tiny-$family --overwrite
done

echo "== 6. predict dev and test with each run"
for family in gemma2 llama qwen2; do
  for split in dev test; do
    python run/test.py --model runs/cci/tiny-$family --task cci --input $S/cci_$split.json \
      --output results/cci_$split/tiny-$family.json --overwrite
  done
done

echo "== 7. evaluate on dev: the llama model before fine-tuning (chance), then after"
python run/test.py --model models/tiny-llama --task cci --input $S/cci_dev.json --max_length 512 \
  --output results/cci_dev_untrained/tiny-llama.json --overwrite
python run/evaluate.py --task cci --gold $S/cci_dev.json --pred results/cci_dev_untrained/tiny-llama.json
python run/evaluate.py --task cci --gold $S/cci_dev.json --pred results/cci_dev/tiny-llama.json

echo "== 8. vote the folders run/test.py wrote (weights = dev accuracy) into a submission"
python ensemble/vote.py results/cci_test/* --dev-results results/cci_dev/* \
  --gold $S/cci_dev.json --method weighted --test $S/cci_test.json \
  --output results/submission_cci.json --overwrite
python run/validate.py --task cci --submission results/submission_cci.json --test $S/cci_test.json

echo "== 9. a fully fine-tuned run folder is a model folder: from_pretrained reads it as it is"
python -c "from transformers import AutoModelForCausalLM as M; m = M.from_pretrained('runs/cci/tiny-llama'); print(type(m).__name__, sum(p.numel() for p in m.parameters()), 'parameters from runs/cci/tiny-llama')"

echo "== 10. DCS: a SYNTHETIC summary set (the summary restates who, when, with whom, where, what)"
python run/synthetic.py --task dcs --out $S --train 2400 --dev 60 --test 60 --overwrite
python run/tiny_model.py --family llama --out models/tiny-dcs --overwrite \
  --corpus $S/dcs_train.json --task dcs --corpus_items 600 --output_scale 16

echo "== 11. DCS: ROUGE-1 (official scorer) before fine-tuning, then after"
python run/test.py --model models/tiny-dcs --task dcs --input $S/dcs_dev.json --max_length 512 \
  --output results/dcs_dev_untrained/tiny-dcs.json --max_new_tokens 32 --overwrite
python run/evaluate.py --task dcs --gold $S/dcs_dev.json --pred results/dcs_dev_untrained/tiny-dcs.json \
  --skip bertscore bleurt
python run/train.py --config resource/configs/dcs/tiny_synthetic_full.yaml --overwrite
python run/test.py --model runs/dcs/tiny_synthetic --task dcs --input $S/dcs_dev.json \
  --output results/dcs_dev/tiny_synthetic.json --max_new_tokens 32 --overwrite
python run/evaluate.py --task dcs --gold $S/dcs_dev.json --pred results/dcs_dev/tiny_synthetic.json \
  --skip bertscore bleurt
