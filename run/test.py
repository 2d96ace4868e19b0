"""Predict a test (or dev) file with a model: CCI option scores, or DCS summaries.

    python run/test.py --model runs/cci/tiny --task cci --input resource/data/cci_test.json \
        --output results/cci_tiny.json
    python run/test.py --model rtzr/ko-gemma-2-9b-it --task cci --input data/cci_test.json \
        --output results/cci_gemma_loglik.json --scoring loglik --permute --batch_size 8
    python run/test.py --model runs/dcs/gemma_lora --task dcs --input data/dcs_test.json \
        --output results/dcs_gemma.json --max_new_tokens 256 --num_beams 4
    python run/test.py --model runs/memory/qwen_lora --task memory \
        --input resource/data/memory_dev.jsonl --output results/memory_dev.json --max_new_tokens 512

--model is a hub id, a local model folder, a LoRA adapter folder, or a training run folder (its
prompt and max_length become the defaults). A run trained with a classification head answers
through its head (same results files). With --route category, --model is a folder of experts
(run/train.py --experts category): each item is answered by its category's expert, or by
--fallback where there is none; one results file comes out (its sidecar names each item's expert). Writes results/NAME.json (the submission layout)
and results/NAME.sidecar.jsonl (per item: option probabilities or the raw generation, and how
many utterances the length budget cut). Interrupted? Run the same command again: it resumes.
Several processes (`accelerate launch --num_processes N run/test.py ...`) share the items and
write the same files a single process would.
A task with a JSON output (memory) is decoded under its schema unless --no_constrain is given;
--system_prompt_file replaces the task's system prompt with a published model's exact one.
"""

from __future__ import annotations

import argparse
import logging
import sys

from malpyeong.cli import read_system_prompt, run_cli, task_argument, verbose_argument
from malpyeong.errors import UserError
from malpyeong.inference.engines import GenerationSettings
from malpyeong.inference.predict import PredictionJob, RoutedSummary
from malpyeong.inference.scoring import SCORINGS
from malpyeong.inference.shard import ALONE, current_shard
from malpyeong.tasks import get_task

log = logging.getLogger("test")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="hub id, model folder, adapter folder or run folder")
    task_argument(p)
    p.add_argument("--input", required=True, help="the file to predict (official layout)")
    p.add_argument("--output", required=True, help="results/NAME.json (sidecar written next to it)")
    p.add_argument("--prompt", default=None, help="prompt variant (default: the run's, or baseline)")
    p.add_argument(
        "--max_length",
        type=int,
        default=None,
        help="token budget; conversation is cut to fit (default: the run's, or none)",
    )
    p.add_argument(
        "--batch_size", type=int, default=None, help="default: 16 for choice scoring on a GPU, else 8"
    )
    p.add_argument(
        "--scoring",
        default="letter",
        choices=SCORINGS,
        help="choice tasks: letter logits (default) or option log-likelihood",
    )
    p.add_argument(
        "--permute",
        action="store_true",
        help="choice tasks: average the cyclic option orders (cancels position bias)",
    )
    p.add_argument("--max_new_tokens", type=int, default=256, help="generate tasks")
    p.add_argument("--num_beams", type=int, default=1, help="generate tasks: beam search width")
    p.add_argument("--do_sample", action="store_true", help="generate tasks: sample, not greedy")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no_constrain",
        action="store_true",
        help="tasks with a JSON output: decode freely, not under the task's schema "
        "(to see the raw model; the output is then repaired when it can be)",
    )
    p.add_argument(
        "--system_prompt_file",
        default=None,
        help="a text file whose content replaces the task's system prompt (run a "
        "published model with the exact prompt it was trained on)",
    )
    p.add_argument(
        "--engine",
        default="hf",
        choices=("hf", "vllm"),
        help="generate tasks: transformers (default) or vLLM when installed",
    )
    p.add_argument(
        "--tensor_parallel_size",
        type=int,
        default=1,
        help="--engine vllm: GPUs one model is split over (e.g. 2 for a 14B model)",
    )
    p.add_argument("--dtype", default="auto", help="auto, bf16, fp16 or fp32")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--load_in_4bit", action="store_true", help="NF4 base (GPU, bitsandbytes)")
    p.add_argument("--trust_remote_code", action="store_true", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--route",
        default=None,
        metavar="FIELD",
        help="--model is a folder of experts: send each item to its FIELD's expert (CCI: category)",
    )
    p.add_argument(
        "--fallback",
        default=None,
        metavar="MODEL",
        help="with --route: the general model for items whose value has no expert",
    )
    verbose_argument(p)
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Every mistake we can see before loading a model."""
    for name in ("batch_size", "max_new_tokens", "num_beams", "max_length", "tensor_parallel_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"must be at least 1, got {value}", field=name)
    generation_settings(args)  # the one check of decoding settings (engines.check_generation)
    if args.engine == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise UserError(
                "vLLM is not installed", field="engine", hint="pip install vllm, or use --engine hf"
            ) from None


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    """The decoding settings (checked once, in GenerationSettings: engines.check_generation)."""
    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    check_args(args)
    job = PredictionJob(
        task,
        args.model,
        output=args.output,
        input=args.input,
        prompt=args.prompt,
        system_prompt=read_system_prompt(args.system_prompt_file),
        max_length=args.max_length,
        batch_size=args.batch_size,
        scoring=args.scoring,
        permute=args.permute,
        generation=generation_settings(args),
        constrain=not args.no_constrain,
        engine=args.engine,
        dtype=args.dtype,
        device=args.device,
        load_in_4bit=args.load_in_4bit,
        trust_remote_code=args.trust_remote_code,
        tensor_parallel_size=args.tensor_parallel_size,
        route=args.route,
        fallback=args.fallback,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        shard=current_shard() if not args.route else ALONE,
        log=log,
    )
    summary = job.run()
    if isinstance(summary, RoutedSummary):
        shown = ", ".join(f"{r.name} {len(r.indices)}" for r in summary.routes)
        print(
            f"{args.output}: {summary.n} {task.name} predictions routed by {args.route} "
            f"({shown}); details in {summary.sidecar}"
        )
        return 0
    if job.shard.rank != 0:
        return 0
    rate = f"{summary.items_per_s:.2f} items/s" if summary.n > summary.resumed else "all resumed"
    print(
        f"{summary.output}: {summary.n} {task.name} predictions ({summary.resumed} resumed; "
        f"{rate}); {summary.cut} prompts cut to fit max_length {summary.max_length or 'none'}"
        f"{f', {summary.over_budget} still over' if summary.over_budget else ''}; "
        f"details in {summary.sidecar}"
    )
    if summary.cut:
        before, after = summary.cut_tokens
        print(
            f"length budget: {summary.cut} of {summary.n} prompts cut ({task.cut_unit}), "
            f"{before - after:,} of their {before:,} prompt tokens removed "
            f"({(before - after) / max(before, 1):.1%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
