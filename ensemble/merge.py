"""Merge model weights from one YAML in mergekit's schema: LoRA adapters (peft) or full models.

    python ensemble/merge.py --config resource/configs/merge/lora_linear.yaml --output runs/merged
    python ensemble/merge.py --config resource/configs/merge/lora_ties.yaml --output runs/m --fold
    python ensemble/merge.py --config resource/configs/merge/full_linear.yaml --output runs/avg
    python ensemble/merge.py --config merge.yaml --output runs/best --search \\
        --dev resource/data/cci_dev.json --task cci

Adapters trained on one base become one new adapter (--fold: also a full merged model); full
models are merged out of core (linear / task_arithmetic by malpyeong's streaming merger, every
other method by mergekit). The output is a run folder that run/test.py --model OUT loads as it
loads a training run: adapter/ for merged adapters; a full model (a full merge, or --fold) sits
at its root as mergekit writes one (config.json, safetensors, tokenizer), so
AutoModelForCausalLM.from_pretrained(OUT) and vLLM read it as it is; malpyeong_run.json and
merge_config.yaml sit beside config.json.
--search scores a grid of methods / weights / densities (the YAML's search: block, or a default
grid) on dev with the task's metric, prints the table and keeps the best.
"""

from __future__ import annotations

import argparse
import sys

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.device import resolve_device
from malpyeong.errors import UserError
from malpyeong.merging import (
    ENGINES,
    EvalOptions,
    MergeJob,
    parse_size,
    run_merge_job,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="merge YAML (mergekit's schema)")
    parser.add_argument("--output", required=True, help="the run folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--fold",
        action="store_true",
        help="adapters: also fold the merged adapter into a full copy of the "
        "base, written at the output folder's root",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="full models: auto (streaming merger for linear/task_arithmetic, "
        "else mergekit), stream, or mergekit",
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda or auto (mergekit math, adapter merging, --search scoring)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random methods (dare)")
    parser.add_argument("--shard-size", default="5GB", help="largest output shard (e.g. 2GB)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    verbose_argument(parser)
    g = parser.add_argument_group("--search: keep the best of a grid, scored on dev")
    g.add_argument("--search", action="store_true", help="evaluate the grid and keep the best")
    g.add_argument("--dev", help="dev file with gold outputs")
    task_argument(g, required=False, help="the task the models were trained on")
    g.add_argument(
        "--prompt", help="prompt variant (default: the one in the runs' malpyeong_run.json, else baseline)"
    )
    g.add_argument("--max-length", type=int, help="prompt length budget in tokens")
    g.add_argument("--scoring", default="letter", help="CCI option scoring (letter, loglik, loglik_norm)")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--limit", type=int, help="score only the first N dev items (quick grids)")
    g.add_argument("--max-new-tokens", type=int, default=128, help="DCS generation length")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    search = None
    if args.search:
        if not (args.dev and args.task):
            raise UserError("--search needs --dev DEV.json and --task", field="search")
        search = EvalOptions(
            task=args.task,
            dev=args.dev,
            prompt=args.prompt,
            max_length=args.max_length,
            scoring=args.scoring,
            batch_size=args.batch_size,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            device=device,
        )
    try:
        shard_size = parse_size(args.shard_size)
    except ValueError:
        raise UserError(
            f"cannot read size '{args.shard_size}'", field="shard-size", hint="e.g. 2GB or 500MB"
        ) from None
    job = MergeJob(
        config=args.config,
        output=args.output,
        overwrite=args.overwrite,
        fold=args.fold,
        engine=args.engine,
        device=device,
        seed=args.seed,
        shard_size=shard_size,
        search=search,
        progress=not args.quiet,
    )
    run_merge_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
