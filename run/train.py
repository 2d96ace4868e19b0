"""Fine-tune a backbone on a task (SFT): full, LoRA or QLoRA, from one YAML recipe.

    python run/train.py --config resource/configs/cci/tiny_lora.yaml          # seconds, on a CPU
    python run/train.py --model rtzr/ko-gemma-2-9b-it --task cci --method qlora \\
        --config resource/configs/cci/ko-gemma-2-9b-it_qlora.yaml --output_dir runs/cci/gemma
    python run/train.py --list-models

Every hyperparameter lives in the recipe (our keys below, plus every trl SFTConfig /
transformers TrainingArguments field); ``--key value`` flags override it. Multi-GPU: the same
command under ``accelerate launch --config_file resource/configs/accelerate/ddp.yaml`` (or
``deepspeed_zero3.yaml``).

The run folder gets adapter/ (LoRA, QLoRA) with the tokenizer -- or, for full fine-tuning and
with --merge, the full model at its root (config.json, safetensors, tokenizer), so
from_pretrained(RUN) and vLLM read it as it is -- plus config.yaml (the resolved recipe),
TensorBoard logs, dev_metrics.json, data_stats.json and malpyeong_run.json. --resume continues
from the last complete checkpoint (the recipe may change only how long it trains); --overwrite
replaces an old run only once everything is checked.
An Axolotl config (``base_model:``, ``sequence_len:``, ``micro_batch_size:`` ...) is read as it
is: each key is mapped to ours or listed as ignored, and the list is printed
(``run/convert.py --from axolotl --to recipe --in CONFIG --out OUT.yaml`` writes the recipe).
``--objective classification`` trains a head over a choice task's options instead; ``--category
원인`` trains on one category's items, ``--experts category`` one expert per category in turn
(``<output_dir>/<category>/``). ``--rules 2025`` refuses what those rules forbid (extra training
files in the 가 setting) and prints a memory estimate against their VRAM limit before loading.
Exit 2 with one line on stderr for a user mistake (unknown recipe key or bad value, model, task,
prompt, invalid data, existing run folder, CUDA out of memory). --help-all also lists every
trainer field.
"""

from __future__ import annotations

import sys

from malpyeong.cli import run_cli
from malpyeong.training import INTERRUPTED, has_flag
from malpyeong.training.axolotl import recipe_argv


def main(argv: list[str] | None = None) -> int:
    if has_flag(argv, "--list-models"):
        from malpyeong.models.backbones import registry_table

        print(registry_table())
        return 0
    from malpyeong.training import dev_summary, sft_parser, train_experts, train_run

    parser = sft_parser()
    parser.description = parser.parser.description = __doc__
    with recipe_argv(sys.argv[1:] if argv is None else argv) as args:  # Axolotl configs as ours
        script, model_args, config = parser.parse(args)
    if script.rules:  # before anything is loaded: will the recipe fit the rules' GPU?
        from malpyeong.training.vram import recipe_report

        print(recipe_report(script, model_args, config))
    if script.experts:
        out, values = train_experts(script, model_args, config)
        print(f"experts: {out} ({', '.join(values)})")
        return 0
    out = train_run(script, model_args, config)
    print(f"run folder: {out}")
    summary = dev_summary(out)
    if summary:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted=INTERRUPTED))
