"""GPU check: the CUDA paths no CPU test reaches, run in one go (about 5-8 minutes on one GPU).

    python benchmarks/gpu_check.py [--only qlora_llama,vllm_generate] [--list] [--budget 480]
        [--steps 12] [--batch 4] [--seq 512] [--vllm_graphs] [--cpu_dry_run]

Steps (in this order, then the steps of every ``benchmarks/gpu_check_*.py`` module):

- ``env``: versions of torch, transformers, peft, trl, bitsandbytes, llguidance, vLLM; the GPUs.
- ``shapes``: the two models below built on the meta device: their parameter counts against
  the memory estimate's (``training/vram.py``) architecture numbers (CPU).
- ``qlora_llama`` / ``qlora_gemma2``: 4-bit QLoRA training steps (bitsandbytes NF4, bf16
  compute, LoRA r16 on every linear layer, gradient checkpointing, completion-only logits)
  through our loader and trainer on random-weight models of real shapes: Llama-3.2-1B's (all
  16 layers, 1.24 B parameters, SDPA) and Gemma-2-2B's layer shapes with 6 of its 26 layers
  (1.057 B parameters, eager attention as Gemma-2 needs); ``--steps`` steps of ``--batch`` x
  ``--seq`` tokens. Figures: tokens/s (after two warm-up steps), peak allocated memory against
  our estimate for the same recipe (the estimate's total, without its 1 GiB runtime margin).
- ``ddp``: two-process DDP LoRA training (``accelerate launch``, resource/configs/accelerate/
  ddp.yaml) when two GPUs are visible.
- ``vllm_generate``: our HF generation (``generate_texts``) against vLLM (``generate_texts_vllm``)
  on the same 64 prompts (our DCS samples), greedy, 128 new tokens, a random-weight Llama with
  the real Llama-3 tokenizer: tokens/s of each and the share of identical texts (bf16 kernels
  differ, so a random model's near-flat logits can flip a token: reported, not required).
- ``vllm_structured``: vLLM structured outputs (llguidance backend) for the memory task's JSON
  schema on our memory samples: every output must be a schema-valid document, or (cut by the
  token budget, which vLLM does not close) a prefix of one.

Every step returns one row, ``{"status": "ok" | "skip" | "fail", "detail": str, ...figures}``;
the table is printed at the end and the exit status is 1 when a row failed (a step that raises
fails with its error; a step not reached within ``--budget`` seconds fails too). On a machine
without CUDA (or without vLLM) those steps are skipped with one line each and the CPU steps
run. Another module adds steps without editing this file: ``benchmarks/gpu_check_<name>.py``
with a module-level ``STEPS = [(name, function)]``, each ``function(ctx: Context) -> dict`` or
``function() -> dict`` (a module that also runs on its own).
Table format: docs/gpu_check.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Row = dict[str, Any]


@dataclasses.dataclass
class Context:
    """What every step gets: the command's arguments, a scratch folder, what CUDA offers, and a
    cache the steps share (a model folder built once, a vLLM engine made once)."""

    args: argparse.Namespace
    tmp: Path
    cuda: bool
    gpus: int
    cache: dict = dataclasses.field(default_factory=dict)

    @property
    def dry(self) -> bool:
        """``--cpu_dry_run`` without CUDA: the CUDA steps run on the CPU, on scaled-down models
        (a check of the script itself, not of a GPU)."""
        return bool(self.args.cpu_dry_run) and not self.cuda


def ok(detail: str, **figures: Any) -> Row:
    return {"status": "ok", "detail": detail, **figures}


def skip(detail: str) -> Row:
    return {"status": "skip", "detail": detail}


def fail(detail: str, **figures: Any) -> Row:
    return {"status": "fail", "detail": detail, **figures}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------------ models


# Real shapes (published config.json files): Llama-3.2-1B whole, Gemma-2-2B's layers (6 of 26).
SHAPES = {
    "llama": {
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
        "max_position_embeddings": 131072,
    },
    "gemma2": {
        "model_type": "gemma2",
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 256000,
        "tie_word_embeddings": True,
        "sliding_window": 4096,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "query_pre_attn_scalar": 256,
        "max_position_embeddings": 8192,
    },
}


# --cpu_dry_run: the same architectures, small enough for a CPU
DRY = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 4096,
}


def real_config(family: str, tiny: Path | None = None, dry: bool = False) -> Any:
    """A transformers config of ``family``'s real shapes (special token ids from ``tiny``)."""
    from transformers import AutoConfig

    shape = {**SHAPES[family], **(DRY if dry else {})}
    kind = shape.pop("model_type")
    if tiny is not None:
        small = json.loads((tiny / "config.json").read_text(encoding="utf-8"))
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "malpyeong_chat_format"):
            if key in small:
                shape[key] = small[key]
    return AutoConfig.for_model(kind, **shape)


def real_model_folder(ctx: Context, family: str) -> Path:
    """A model folder of ``family``'s real shapes with random bf16 weights and our tiny
    tokenizer (the embedding is the real vocabulary's; ids past the tokenizer are unused)."""
    key = f"real_{family}"
    if key not in ctx.cache:
        import torch
        from transformers import AutoModelForCausalLM

        from malpyeong.models.tiny import build_tiny_model

        out = build_tiny_model(family, ctx.tmp / key)
        config = real_config(family, out, dry=ctx.dry)
        torch.manual_seed(0)
        with torch.device("cuda" if ctx.cuda else "cpu"):
            model = AutoModelForCausalLM.from_config(
                config, dtype=torch.bfloat16 if ctx.cuda else torch.float32
            )
        model.save_pretrained(out)
        del model
        free_cuda()
        ctx.cache[key] = out
    return ctx.cache[key]


def free_cuda() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ------------------------------------------------------------------------------ steps


def step_env(ctx: Context) -> Row:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "llguidance", "vllm", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "-"
    gpus = "no CUDA device"
    if ctx.cuda:
        import torch

        gpus = ", ".join(
            f"{torch.cuda.get_device_name(i)} {torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB"
            for i in range(ctx.gpus)
        )
    return ok(f"{gpus}; " + " ".join(f"{k} {v}" for k, v in found.items()), gpus=ctx.gpus)


def step_shapes(ctx: Context) -> Row:
    """Parameter counts of the real-shape models (meta device) against vram.py's numbers."""
    import torch
    from transformers import AutoModelForCausalLM

    from malpyeong.training.vram import Architecture

    parts, bad = [], []
    for family in SHAPES:
        config = real_config(family)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        counted = sum(p.numel() for p in model.parameters())
        estimated = Architecture.from_config(config.to_dict()).params
        parts.append(f"{family} {counted / 1e9:.3f} B")
        if counted != estimated:
            bad.append(f"{family}: model {counted:,} vs estimate {estimated:,}")
    if bad:
        return fail("parameter counts differ: " + "; ".join(bad))
    return ok("parameters (model = memory estimate): " + ", ".join(parts))


def step_clock() -> Any:
    """A trainer callback keeping the wall time of each optimizer step (CUDA synchronised)."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._start)

    return StepClock()


def qlora_step(ctx: Context, family: str) -> Row:
    if not ctx.cuda and not ctx.dry:
        return skip("no CUDA device")
    if not installed("bitsandbytes"):
        return skip("bitsandbytes not installed")
    import torch
    from datasets import Dataset

    from malpyeong.models.backbones import get_backbone, load_tokenizer
    from malpyeong.training import batching_changes, load_training_model, sft_parser, sft_trainer_class
    from malpyeong.training.vram import COMPLETION_TOKENS, GIB, Architecture, estimate, recipe_setup

    args = ctx.args
    path = real_model_folder(ctx, family)
    argv = ["--model", str(path), "--task", "cci", "--train_file", str(ROOT / "resource/data/cci_train.json")]
    argv += ["--output_dir", str(ctx.tmp / f"run_{family}"), "--method", "qlora", "--bf16", str(ctx.cuda)]
    argv += ["--per_device_train_batch_size", str(args.batch), "--gradient_accumulation_steps", "1"]
    argv += ["--max_length", str(args.seq), "--max_steps", str(args.steps), "--learning_rate", "1e-4"]
    argv += ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    argv += ["--report_to", "none", "--logging_steps", "1000", "--disable_tqdm", "true"]
    script, model_args, config = sft_parser().parse(argv)
    backbone = get_backbone(str(path))
    attn = model_args.attn_implementation or backbone.attn_implementation
    config = dataclasses.replace(config, **batching_changes(script.batching, attn, config))
    tokenizer = load_tokenizer(str(path), backbone)
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(args.batch * args.steps):  # every row max_length long: the estimate's worst case
        ids = torch.randint(10, len(tokenizer), (args.seq,), generator=g).tolist()
        rows.append(
            {"input_ids": ids, "labels": [-100] * (args.seq - COMPLETION_TOKENS) + ids[-COMPLETION_TOKENS:]}
        )
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    model = load_training_model(model_args, config, backbone)
    clock = step_clock()
    trainer = sft_trainer_class()(
        model=model,
        args=config,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(rows),
        callbacks=[clock],
    )
    trainer.train()
    peak = torch.cuda.max_memory_allocated() if ctx.cuda else float("nan")  # no CPU figure
    arch = Architecture.from_config(json.loads((path / "config.json").read_text(encoding="utf-8")))
    setup = recipe_setup(model_args, script, config, eager=attn == "eager", num_labels=None)
    est = estimate(arch, setup).total
    timed = clock.times[2:] or clock.times
    tokens_per_s = args.batch * args.seq * len(timed) / sum(timed)
    loss = next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h), None)
    del trainer, model
    free_cuda()
    size = f"{arch.params / 1e9:.2f} B" if arch.params >= 1e8 else f"{arch.params / 1e6:.2f} M"
    memory = (
        f"peak {peak / GIB:.2f} GiB vs estimate {est / GIB:.2f} GiB"
        if ctx.cuda
        else f"estimate {est / GIB:.3f} GiB (no peak figure on a CPU)"
    )
    row = ok(
        ("dry run on the CPU, scaled-down model: " if ctx.dry else "")
        + f"{size} params, {attn}, {len(clock.times)} steps of {args.batch}x{args.seq}; {memory}",
        tokens_per_s=round(tokens_per_s),
        peak_gib=round(peak / GIB, 2) if ctx.cuda else None,
        estimate_gib=round(est / GIB, 3),
        peak_over_estimate=round(peak / est, 2) if ctx.cuda else None,
        train_loss=round(loss, 3) if loss is not None else None,
    )
    if loss is None or loss != loss:  # a NaN loss: the 4-bit path is broken
        row["status"], row["detail"] = "fail", "no finite training loss; " + row["detail"]
    return row


def step_qlora_llama(ctx: Context) -> Row:
    return qlora_step(ctx, "llama")


def step_qlora_gemma2(ctx: Context) -> Row:
    return qlora_step(ctx, "gemma2")


def step_ddp(ctx: Context) -> Row:
    if ctx.gpus < 2 and not ctx.dry:
        return skip(f"{ctx.gpus} CUDA device(s); DDP needs two")
    from malpyeong.models.tiny import build_tiny_model

    model = build_tiny_model("llama", ctx.tmp / "ddp_model", hidden_size=256, layers=4)
    out = ctx.tmp / "ddp_run"
    launcher = ROOT / "resource/configs/accelerate" / ("cpu_ddp.yaml" if ctx.dry else "ddp.yaml")
    cmd = ["accelerate", "launch", "--config_file", str(launcher)]
    cmd += ["--num_processes", "2", str(ROOT / "run/train.py"), "--model", str(model), "--task", "cci"]
    cmd += ["--train_file", str(ROOT / "resource/data/cci_train.json"), "--output_dir", str(out)]
    cmd += ["--max_steps", "4", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1"]
    cmd += ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
    cmd += ["--report_to", "none"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        return fail(
            f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}", seconds=round(seconds)
        )
    run = json.loads((out / "malpyeong_run.json").read_text(encoding="utf-8"))
    if run.get("finished") is False:
        return fail("the run folder is not marked finished")
    where = "dry run, 2 CPU processes (gloo)" if ctx.dry else "2 GPU processes"
    return ok(f"{where}, LoRA, 4 steps: the run folder written and finished", seconds=round(seconds))


def vllm_engine(ctx: Context) -> Any:
    """One vLLM engine for the vLLM steps, on a random Llama with the real Llama-3 tokenizer."""
    if "vllm" not in ctx.cache:
        from vllm import LLM

        from malpyeong.inference.constrain import vllm_engine_kwargs
        from malpyeong.inference.engines import VLLMEngine
        from malpyeong.inference.loading import load_for_inference, resolve_source

        path = generation_model(ctx)
        loaded = load_for_inference(resolve_source(str(path)), with_model=False)
        llm = LLM(
            model=str(path),
            tokenizer=str(path),
            dtype="bfloat16",
            seed=0,
            gpu_memory_utilization=0.4,
            max_model_len=4096,
            enforce_eager=not ctx.args.vllm_graphs,
            **vllm_engine_kwargs(LLM),
        )
        ctx.cache["vllm"] = VLLMEngine(llm, loaded.tokenizer, loaded.backbone)
    return ctx.cache["vllm"]


def generation_model(ctx: Context) -> Path:
    if "gen_model" not in ctx.cache:
        from malpyeong.errors import UserError
        from malpyeong.models.tiny import build_tiny_model

        try:  # the real Llama-3 tokenizer (a package of the dev extras ships it)
            built = build_tiny_model(
                "llama", ctx.tmp / "gen_llama", hidden_size=512, layers=4, tokenizer="real"
            )
        except UserError:  # our tokenizer: a small vocabulary, the same code paths
            built = build_tiny_model("llama", ctx.tmp / "gen_llama", hidden_size=512, layers=4)
        ctx.cache["gen_model"] = built
    return ctx.cache["gen_model"]


def task_prompts(task_name: str, files: list[str], tokenizer: Any, backbone: Any, n: int) -> tuple[Any, list]:
    from malpyeong.data import load_items
    from malpyeong.models.budget import fit_prompt
    from malpyeong.tasks import get_task

    task = get_task(task_name)
    items = [it for f in files for it in load_items(ROOT / "resource/data" / f, task)]
    items = (items * (n // max(len(items), 1) + 1))[:n]
    spec = task.prompt_spec(None)
    return task, items, [fit_prompt(task, it, tokenizer, backbone, spec).input_ids for it in items]


def vllm_missing(ctx: Context) -> str | None:
    """Why the vLLM steps cannot run here, or None."""
    why = [
        w
        for w, missing in (("no CUDA device", not ctx.cuda), ("vllm not installed", not installed("vllm")))
        if missing
    ]
    return "; ".join(why) or None


def step_vllm_generate(ctx: Context) -> Row:
    if vllm_missing(ctx):
        return skip(vllm_missing(ctx))
    from malpyeong.inference.engines import GenerationSettings
    from malpyeong.inference.loading import load_engine, resolve_source

    path = generation_model(ctx)
    hf = load_engine(resolve_source(str(path)), device="cuda", dtype="bfloat16")
    _, _, prompts = task_prompts("dcs", ["dcs_test.json", "dcs_dev.json"], hf.tokenizer, hf.backbone, 64)
    settings = GenerationSettings(max_new_tokens=128)
    hf.generate(prompts[:4], settings, batch_size=4, progress=False)  # warm-up
    start = time.perf_counter()
    ours = hf.generate(prompts, settings, batch_size=16, progress=False)
    hf_s = time.perf_counter() - start
    tokenizer = hf.tokenizer
    del hf
    free_cuda()
    engine = vllm_engine(ctx)
    engine.generate(prompts[:4], settings, batch_size=4, progress=False)  # warm-up
    start = time.perf_counter()
    theirs = engine.generate(prompts, settings, batch_size=16, progress=False)
    vllm_s = time.perf_counter() - start

    def count(texts: list[str]) -> int:
        return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)

    hf_tps, vllm_tps = count(ours) / hf_s, count(theirs) / vllm_s
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    return ok(
        f"{len(prompts)} DCS prompts, greedy, 128 new tokens: HF {hf_tps:.0f} tokens/s, vLLM "
        f"{vllm_tps:.0f} tokens/s; identical texts {same}/{len(prompts)}",
        hf_tokens_per_s=round(hf_tps),
        vllm_tokens_per_s=round(vllm_tps),
        vllm_over_hf=round(vllm_tps / hf_tps, 2),
        identical=same,
    )


def step_vllm_structured(ctx: Context) -> Row:
    if vllm_missing(ctx):
        return skip(vllm_missing(ctx))
    from malpyeong.inference.constrain import Completer
    from malpyeong.inference.engines import GenerationSettings

    engine = vllm_engine(ctx)
    files = ["memory_train.jsonl", "memory_dev.jsonl"]
    task, _, prompts = task_prompts("memory", files, engine.tokenizer, engine.backbone, 32)
    schema = task.output_schema()
    start = time.perf_counter()
    texts = engine.generate(
        prompts, GenerationSettings(max_new_tokens=512), batch_size=32, progress=False, schema=schema
    )
    seconds = time.perf_counter() - start
    completer = Completer(schema)
    whole = prefix = 0
    for text in texts:
        rest = completer.complete(text)
        if rest == "":
            try:
                whole += task.check_output(json.loads(text)) is None
            except ValueError:
                pass
        elif rest is not None:
            prefix += 1
    detail = (
        f"{len(texts)} memory prompts: schema-valid {whole}, cut by max_tokens 512 but a valid prefix "
        f"{prefix}, other {len(texts) - whole - prefix} ({seconds:.1f} s)"
    )
    if whole + prefix < len(texts) or whole == 0:
        return fail(detail, valid=whole, prefix=prefix)
    return ok(detail, valid=whole, prefix=prefix)


STEPS: list[tuple[str, Callable[[Context], Row]]] = [
    ("env", step_env),
    ("shapes", step_shapes),
    ("qlora_llama", step_qlora_llama),
    ("qlora_gemma2", step_qlora_gemma2),
    ("ddp", step_ddp),
    ("vllm_generate", step_vllm_generate),
    ("vllm_structured", step_vllm_structured),
]


def all_steps(folder: Path | None = None) -> list[tuple[str, Callable[..., Row]]]:
    """Ours, then each ``gpu_check_*.py`` module's ``STEPS`` in ``folder`` (this file's), by file
    name. A module that fails to import becomes one step that fails with its error."""
    steps: list[tuple[str, Callable[..., Row]]] = list(STEPS)
    for path in sorted((folder or Path(__file__).parent).glob("gpu_check_*.py")):
        spec = importlib.util.spec_from_file_location(f"malpyeong_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - reported as a failed row, the others still run
            message = f"{path.name} does not import: {type(err).__name__}: {' '.join(str(err).split())[:200]}"
            steps.append((path.stem, lambda message=message: fail(message)))
            continue
        steps += list(getattr(module, "STEPS", []))
    names = [n for n, _ in steps]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SystemExit(f"gpu_check: step names used twice: {', '.join(twice)}")
    return steps


def call_step(function: Callable[..., Row], ctx: Context) -> Row:
    """A step takes the context, or nothing (a module that also runs on its own); its row must be
    a dict with a known ``status`` and a ``detail``."""
    takes = [
        p
        for p in inspect.signature(function).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    row = function(ctx) if takes else function()
    if not isinstance(row, dict) or row.get("status") not in ("ok", "skip", "fail") or "detail" not in row:
        return fail(
            f"the step returned {str(row)[:200]!r}, not a row {{'status': ok|skip|fail, 'detail': ...}}"
        )
    return row


def table(rows: list[tuple[str, float, Row]]) -> str:
    """One line per step: name, status, seconds, detail, then its figures as key=value."""
    lines = [f"{'step':<22} {'status':<6} {'seconds':>7}  detail", "-" * 100]
    for name, seconds, row in rows:
        figures = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("status", "detail"))
        lines.append(
            f"{name:<22} {row['status']:<6} {seconds:7.1f}  {row['detail']}"
            + (f" [{figures}]" if figures else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated step names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the step names and exit")
    parser.add_argument("--budget", type=float, default=480, help="seconds; steps not started by then fail")
    parser.add_argument("--steps", type=int, default=12, help="QLoRA training steps per model")
    parser.add_argument("--batch", type=int, default=4, help="QLoRA sequences per step")
    parser.add_argument("--seq", type=int, default=512, help="QLoRA tokens per sequence")
    parser.add_argument(
        "--vllm_graphs", action="store_true", help="let vLLM capture CUDA graphs (slower start)"
    )
    parser.add_argument(
        "--cpu_dry_run",
        action="store_true",
        help="without CUDA: run the QLoRA and DDP steps on the CPU with scaled-down models (checks the script)",
    )
    args = parser.parse_args(argv)
    steps = all_steps()
    if args.list:
        print("\n".join(n for n, _ in steps))
        return 0
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {n for n, _ in steps})
        if unknown:
            parser.error(f"unknown steps {unknown}; known: {', '.join(n for n, _ in steps)}")
        steps = [(n, f) for n, f in steps if n in wanted]
    from malpyeong.training import quiet_libraries

    quiet_libraries()
    import torch

    cuda = torch.cuda.is_available()
    rows: list[tuple[str, float, Row]] = []
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Context(args, Path(tmp), cuda, torch.cuda.device_count() if cuda else 0)
        for name, function in steps:
            if time.perf_counter() - begin > args.budget:
                rows.append((name, 0.0, fail(f"not started: the {args.budget:.0f} s budget was spent")))
                continue
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                with contextlib.redirect_stdout(sys.stderr):  # libraries' prints: the table stays alone
                    row = call_step(function, ctx)
            except Exception as err:  # noqa: BLE001 - a failing step is a row, the others still run
                traceback.print_exc(file=sys.stderr)
                row = fail(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
            rows.append((name, time.perf_counter() - start, row))
            print(f"gpu_check: {name} {row['status']}: {row['detail']}", file=sys.stderr, flush=True)
    print(table(rows))
    failed = [n for n, _, r in rows if r["status"] == "fail"]
    print(
        f"total {time.perf_counter() - begin:.0f} s; {len(rows) - len(failed)} of {len(rows)} steps passed or "
        f"skipped" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
