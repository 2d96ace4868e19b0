"""Fine-tune a backbone on a task (SFT): full, LoRA or QLoRA, from one YAML recipe.

    python run/train.py --config resource/configs/cci/tiny_lora.yaml          # seconds, on a CPU
    python run/train.py --model rtzr/ko-gemma-2-9b-it --task cci --method qlora \\
        --config resource/configs/cci/ko-gemma-2-9b-it_qlora.yaml --output_dir runs/cci/gemma
    python run/train.py --list-models

Every hyperparameter lives in the recipe (our keys below, plus every trl SFTConfig /
transformers TrainingArguments field); ``--key value`` flags override it. Multi-GPU: the same
command under ``accelerate launch --config_file resource/configs/accelerate/ddp.yaml`` (or
``deepspeed_zero3.yaml``).

The run folder gets the adapter (or model), tokenizer, resolved config.yaml, TensorBoard logs,
dev_metrics.json, data_stats.json (prompts cut by the length budget) and malpyeong_run.json.
``--resume`` continues from the last checkpoint; ``--merge`` also writes a merged full model.
An Axolotl config (``base_model:``, ``sequence_len:``, ``micro_batch_size:`` ...) is read as it
is: each key is mapped to ours or listed as ignored, and the list is printed
(``run/convert.py --from axolotl --to recipe --in CONFIG --out OUT.yaml`` writes the recipe).
``--objective classification`` trains a head over a choice task's options instead; ``--category
원인`` trains on one category's items, ``--experts category`` one expert per category in turn
(``<output_dir>/<category>/``). ``--rules 2025`` refuses what those rules forbid (extra training
files in the 가 setting) and prints a memory estimate against their VRAM limit before loading.
Exit 2 with one line on stderr for a user mistake (unknown recipe key, model, task, prompt,
invalid data, existing run folder, CUDA out of memory).
"""

from __future__ import annotations

import sys

from malpyeong.axolotl import recipe_argv
from malpyeong.cli import run_cli
from malpyeong.training import has_flag, quiet_libraries


def main(argv: list[str] | None = None) -> int:
    if has_flag(argv, "--list-models"):
        from malpyeong.backbones import registry_table

        print(registry_table())
        return 0
    quiet_libraries()
    from malpyeong.training import sft_parser, train_experts, train_run

    parser = sft_parser()
    parser.parser.description = __doc__
    with recipe_argv(sys.argv[1:] if argv is None else argv) as args:  # Axolotl configs as ours
        script, model_args, config = parser.parse(args)
    if script.rules:  # before anything is loaded: will the recipe fit the rules' GPU?
        from malpyeong.memory_estimate import recipe_report

        print(recipe_report(script, model_args, config))
    if script.experts:
        out, values = train_experts(script, model_args, config)
        print(f"experts: {out} ({', '.join(values)})")
        return 0
    out = train_run(script, model_args, config)
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
