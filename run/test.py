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
--preset baseline2025 decodes as the 2025 official baselines did (greedy stays the default).
--retrieve INDEX lists each item's top passages in its prompt (a run trained with an index
uses it by default); the share of outputs the task had to repair is printed.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import replace

from malpyeong.cli import read_system_prompt, run_cli, task_argument, verbose_argument
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.inference.answer import AnswerSettings, default_batch_size
from malpyeong.inference.classifier import check_head_scoring
from malpyeong.inference.engines import GENERATION_PRESETS, Engine, GenerationSettings
from malpyeong.inference.loading import ModelSource, check_device, load_engine, resolve_source
from malpyeong.inference.passages import DEFAULT_K, RetrievalSettings, check_task_retrieval, with_passages
from malpyeong.inference.predict import run_prediction
from malpyeong.inference.results import partial_path, sidecar_path
from malpyeong.inference.routing import plan_routes, run_routed
from malpyeong.inference.scoring import SCORINGS
from malpyeong.inference.shard import current_shard
from malpyeong.io import check_distinct, ensure_writable
from malpyeong.rules import get_rules
from malpyeong.tasks import Task, get_task

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
    p.add_argument(
        "--preset",
        default="greedy",
        choices=sorted(GENERATION_PRESETS),
        help="generate tasks: named decoding settings (the flags below override them): greedy "
        "(default, reproducible) or baseline2025 (as the 2025 official baselines ran: sampling, "
        "temperature 0.7, top-p 0.8, repetition penalty 1.05, 1,024 new tokens)",
    )
    p.add_argument("--max_new_tokens", type=int, default=None, help="generate tasks (default 256)")
    p.add_argument("--num_beams", type=int, default=None, help="generate tasks: beam search width")
    p.add_argument(
        "--do_sample", action="store_true", default=None, help="generate tasks: sample, not greedy"
    )
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top_p", type=float, default=None)
    p.add_argument("--repetition_penalty", type=float, default=None, help="generate tasks (default 1.0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--retrieve",
        default=None,
        metavar="INDEX",
        help="a retrieval index folder (run/retrieve.py build): each prompt lists its top "
        "passages (default: the training run's index, if it was trained with one)",
    )
    p.add_argument(
        "--retrieve_k", type=int, default=None, help="passages per item (default: the run's, or 5)"
    )
    p.add_argument(
        "--retrieve_mode", default=None, help="sparse, dense or hybrid (default: the run's or the index's)"
    )
    p.add_argument(
        "--no_retrieve",
        action="store_true",
        help="predict without passages even if the run was trained with them",
    )
    p.add_argument(
        "--rules",
        default=None,
        help="competition rules to follow, e.g. 2025 (= 2025-가): refuses retrieval over a corpus "
        "the rules count as external data",
    )
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
    for name in (
        "batch_size",
        "max_new_tokens",
        "num_beams",
        "max_length",
        "tensor_parallel_size",
        "retrieve_k",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"must be at least 1, got {value}", field=name)
    if args.top_p is not None and not (0 < args.top_p <= 1):
        raise UserError(f"must be in (0, 1], got {args.top_p}", field="top_p")
    for name in ("temperature", "repetition_penalty"):
        value = getattr(args, name)
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise UserError(f"must be positive, got {value}", field=name)
    if args.no_retrieve and args.retrieve:
        raise UserError("--retrieve and --no_retrieve exclude each other", field="no_retrieve")
    if args.engine == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise UserError(
                "vLLM is not installed", field="engine", hint="pip install vllm, or use --engine hf"
            ) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    check_args(args)
    if args.route:
        return predict_routed(args, task)
    if args.fallback:
        raise UserError("--fallback is for --route", field="fallback")
    source = resolve_source(args.model)
    if source.run.get("task") and source.run["task"] != task.name:
        raise UserError(
            f"this run was trained for task {source.run['task']}, not {task.name}",
            file=args.model,
            field="task",
        )
    prompt = args.prompt or source.defaults.get("prompt") or "baseline"
    spec = replace(task.prompt_spec(prompt), system=read_system_prompt(args.system_prompt_file))
    max_length = args.max_length or source.defaults.get("max_length")
    items = load_items(args.input, task)
    check_outputs(args)
    retrieval = retrieval_settings(args, task, source.defaults)
    items = with_passages(task, items, retrieval)
    generation = generation_settings(args)
    settings = AnswerSettings(
        retrieval=retrieval.meta() if retrieval else None,
        prompt=spec,
        max_length=max_length,
        scoring=args.scoring,
        permute=args.permute,
        generation=generation,
        batch_size=args.batch_size or 8,
        constrain=not args.no_constrain,
    )
    settings.check_for(task, args.engine)
    check_head_scoring(source.run, args.scoring)
    shown = {k: v for k, v in settings.meta(task, args.engine).items() if k != "prompt"}
    log.info(
        "task %s, %d items from %s; prompt %s; %s",
        task.name,
        len(items),
        args.input,
        spec,
        ", ".join(f"{k} {v}" for k, v in shown.items()),
    )
    if partial_path(args.output).exists():
        log.info("found %s: resuming", partial_path(args.output))
    engine = load_engine(
        source,
        engine=args.engine,
        dtype=args.dtype,
        device=args.device,
        load_in_4bit=args.load_in_4bit,
        trust_remote_code=args.trust_remote_code,
        seed=args.seed,
        tensor_parallel_size=args.tensor_parallel_size,
        structured=settings.constrain and task.output_schema() is not None,
    )
    if args.batch_size is None:
        settings = replace(settings, batch_size=default_batch_size(task, getattr(engine, "model", None)))
    if max_length is None and engine.context_size():
        # a bare model: its context is the budget (the conversation is cut to fit it)
        max_length = engine.context_size()
        settings = replace(settings, max_length=max_length)
        log.info("no --max_length: using the model's context size, %d tokens", max_length)
    shard = current_shard()
    summary = run_prediction(
        engine,
        task,
        items,
        args.output,
        settings=settings,
        model_name=args.model,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        shard=shard,
    )
    if shard.rank != 0:
        return 0
    rate = f"{summary.items_per_s:.2f} items/s" if summary.n > summary.resumed else "all resumed"
    print(
        f"{summary.output}: {summary.n} {task.name} predictions ({summary.resumed} resumed; "
        f"{rate}); {summary.cut} prompts cut to fit max_length {max_length or 'none'}"
        f"{f', {summary.over_budget} still over' if summary.over_budget else ''}; "
        f"details in {summary.sidecar}"
    )
    for flag, count in summary.flags.items():
        help_text = task.output_flag_help.get(flag, flag)
        print(f"{flag}: {count} of {summary.n} outputs ({count / summary.n:.1%}): {help_text}")
    if summary.cut:
        before, after = summary.cut_tokens
        print(
            f"length budget: {summary.cut} of {summary.n} prompts cut ({task.cut_unit}), "
            f"{before - after:,} of their {before:,} prompt tokens removed "
            f"({(before - after) / max(before, 1):.1%})"
        )
    return 0


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: the results file and its sidecar (neither an input, both writable) and
    the device."""
    check_distinct(
        [("--output", args.output), ("its sidecar", sidecar_path(args.output))], [("--input", args.input)]
    )
    check_device(args.device)
    ensure_writable(args.output, args.overwrite)
    ensure_writable(sidecar_path(args.output), args.overwrite)


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    """The preset's settings, with every flag given on the command line on top."""
    given = {
        k: getattr(args, k)
        for k in ("max_new_tokens", "num_beams", "do_sample", "temperature", "top_p", "repetition_penalty")
        if getattr(args, k) is not None
    }
    return GenerationSettings(**{**GENERATION_PRESETS[args.preset], **given, "seed": args.seed})


def retrieval_settings(args: argparse.Namespace, task: Task, defaults: dict) -> RetrievalSettings | None:
    """--retrieve, or the index the run was trained with (unless --no_retrieve), checked
    against the task and the rules before any model is loaded."""
    trained = defaults.get("retrieve") or {}
    settings = None
    if args.retrieve or (trained and not args.no_retrieve):
        settings = RetrievalSettings(
            args.retrieve or trained["index"],
            args.retrieve_k or int(trained.get("k") or DEFAULT_K),
            args.retrieve_mode or trained.get("mode"),
        )
    elif args.retrieve_k or args.retrieve_mode:
        raise UserError("--retrieve_k and --retrieve_mode go with --retrieve", field="retrieve")
    check_task_retrieval(task, settings, get_rules(args.rules) if args.rules else None)
    return settings


def predict_routed(args: argparse.Namespace, task: Task) -> int:
    """Each item answered by its expert (``--route``), into one results file."""
    items = load_items(args.input, task)
    routes = plan_routes(args.model, task, items, args.route, args.fallback)
    check_outputs(args)
    retrieval = retrieval_settings(args, task, {})
    items = with_passages(task, items, retrieval)
    generation = generation_settings(args)

    def settings_for(source: ModelSource) -> AnswerSettings:  # each expert's own defaults
        spec = replace(
            task.prompt_spec(args.prompt or source.defaults.get("prompt") or "baseline"),
            system=read_system_prompt(args.system_prompt_file),
        )
        settings = AnswerSettings(
            prompt=spec,
            scoring=args.scoring,
            permute=args.permute,
            max_length=args.max_length or source.defaults.get("max_length"),
            generation=generation,
            retrieval=retrieval.meta() if retrieval else None,
            batch_size=args.batch_size or 8,
            constrain=not args.no_constrain,
        )
        settings.check_for(task, args.engine)
        check_head_scoring(source.run, args.scoring)
        return settings

    def engine_for(source: ModelSource, settings: AnswerSettings) -> Engine:
        return load_engine(
            source,
            engine=args.engine,
            dtype=args.dtype,
            device=args.device,
            load_in_4bit=args.load_in_4bit,
            trust_remote_code=args.trust_remote_code,
            seed=args.seed,
            tensor_parallel_size=args.tensor_parallel_size,
            structured=settings.constrain and task.output_schema() is not None,
        )

    run_routed(
        routes,
        task,
        items,
        args.output,
        key=args.route,
        model_name=args.model,
        settings_for=settings_for,
        engine_for=engine_for,
        engine_name=args.engine,
        progress=not args.no_progress,
    )
    shown = ", ".join(f"{r.name} {len(r.indices)}" for r in routes)
    print(
        f"{args.output}: {len(items)} {task.name} predictions routed by {args.route} "
        f"({shown}); details in {sidecar_path(args.output)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
