"""Fine-tuning: SFT (full / LoRA / QLoRA) and ORPO, one flat YAML recipe per run.

The flow every training script follows: parse the recipe and flags and validate them (before any
model is loaded) -> tokenizer -> datasets built by the task -> model and adapters -> a trl trainer
that evaluates the task's own metric on the dev set, keeps the best checkpoint and stops early ->
the run folder.

Why the datasets are token ids built here rather than chat messages handed to trl: the prompt a
model is trained on must be exactly the prompt prediction feeds it: rendered by
:func:`malpyeong.backbones.render_chat` (the system turn folded for Gemma, whose template rejects
it), encoded once without a second BOS, and cut by the length budget
(:func:`malpyeong.budget.fit_prompt`). The completion is the task's target followed by what the
chat template writes after an assistant turn up to its end-of-turn token (``<end_of_turn>``,
``<|eot_id|>``, ``<|im_end|>``, or EOS for templates without one), exactly once. The loss covers
only the completion.

Batching: padding-free (every batch one flattened sequence) where the attention kernel handles
sequence boundaries natively (flash attention); otherwise batches of similar length
(``group_by_length``), which keeps padding low without putting all sequences in one attention
matrix.

The run folder (``output_dir``)::

    adapter/ or model/     the trained LoRA adapter (lora, qlora) or full model, with the tokenizer
    merged/                with --merge: the adapter merged into a full-precision copy of the base
    config.yaml            the resolved recipe (every field; reusable with --config)
    dev_metrics.json       the task metric at each evaluation, the best one and its full report
    data_stats.json        examples built, prompts cut by the length budget, prompts over budget
    malpyeong_run.json     what a loader needs: base model, method, adapter/merged dirs, task,
                           prompt, max_length, target_style
    runs/                  TensorBoard logs;  checkpoint-*/  trainer checkpoints (--resume)
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import hashlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.backbones import END_OF_TURN, Backbone, encode, get_backbone, render_chat
from malpyeong.budget import fit_prompt
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

METHODS = ("full", "lora", "qlora")
BATCHING = ("auto", "padding_free", "packing", "length", "none")
TARGET_STYLES = ("letter_text", "letter")
DTYPES = ("auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
RUN_FILE = "malpyeong_run.json"
# Files that mark a folder as a run folder, so --overwrite may delete it.
RUN_MARKERS = (RUN_FILE, "config.yaml", "data_stats.json", "dev_metrics.json", "adapter", "model")
SENTINEL = "\u2063MALPYEONG_COMPLETION\u2063"  # an assistant turn's content when probing a template


# =============================================================================================
# recipe arguments


def _help(text: str, **extra: Any) -> dict:
    return {"help": text, **extra}


@dataclass
class CommonArguments:
    """Fields shared by SFT and ORPO runs (the trainer's own fields come from trl's configs)."""

    model: str | None = field(default=None, metadata=_help(
        "base model: a hub id or a local folder (python run/train.py --list-models)"))
    method: str = field(default="lora", metadata=_help("full, lora or qlora (4-bit NF4 base)"))
    prompt: str = field(default="baseline", metadata=_help(
        "prompt variant of the task: flags joined by '+', e.g. highlight+definitions"))
    dev_file: str | None = field(default=None, metadata=_help(
        "dev data with gold outputs; evaluated with the task's metric during training"))
    dev_eval_items: int | None = field(default=None, metadata=_help(
        "evaluate the task metric on the first N dev items only (default: all for a choice task, "
        "50 for a generation task)"))
    eval_max_new_tokens: int = field(default=256, metadata=_help(
        "generation length for the dev metric of a generation task (DCS)"))
    early_stopping_patience: int = field(default=3, metadata=_help(
        "stop after this many evaluations without improvement of the dev metric (0: never)"))
    early_stopping_threshold: float = field(default=0.0, metadata=_help(
        "how much the dev metric must improve to count as an improvement"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (scaling = alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout"))
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata=_help(
        "modules that get adapters; 'all-linear' = every linear layer except the LM head"))
    dtype: str = field(default="auto", metadata=_help(
        "weights dtype: auto (bf16/fp16 on GPU, fp32 on CPU), bf16, fp16, fp32"))
    attn_implementation: str | None = field(default=None, metadata=_help(
        "attention kernel (default: the backbone's, e.g. eager for Gemma-2); flash_attention_2 "
        "enables padding-free batching"))
    batching: str = field(default="auto", metadata=_help(
        "auto (padding-free with flash attention, else length-grouped), padding_free, packing, "
        "length, none"))
    max_train_items: int | None = field(default=None, metadata=_help(
        "use only the first N training items (quick trials)"))
    overwrite: bool = field(default=False, metadata=_help("replace an existing run folder"))
    resume: bool = field(default=False, metadata=_help("continue from the last checkpoint"))
    merge: bool = field(default=False, metadata=_help(
        "also write merged/: the adapter merged into a full-precision copy of the base model"))

    def __post_init__(self) -> None:
        from malpyeong.tasks import get_task

        if not self.model:
            raise UserError("no model given", field="model",
                            hint="pass --model HUB_ID_OR_PATH or set 'model:' in the recipe")
        _choice(self.method, METHODS, "method")
        _choice(self.batching, BATCHING, "batching")
        _choice(self.dtype, DTYPES, "dtype")
        if self.attn_implementation is not None and "/" not in self.attn_implementation:
            _choice(self.attn_implementation, ATTENTION, "attn_implementation")  # or a hub kernel
        if self.overwrite and self.resume:
            raise UserError("--overwrite and --resume exclude each other", field="resume")
        for name in ("lora_r", "lora_alpha", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UserError(f"must be in [0, 1), got {self.lora_dropout}", field="lora_dropout")
        if self.early_stopping_patience < 0:
            raise UserError("must be 0 (off) or more", field="early_stopping_patience")
        for name in ("dev_eval_items", "max_train_items"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"must be at least 1, got {value}", field=name)
        if self.dev_file is not None:
            _existing(self.dev_file, "dev_file")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        if getattr(self, "task", None) is not None:
            task = get_task(self.task)
            task.prompt_spec(self.prompt)  # unknown variants fail here, before a model loads


@dataclass
class SFTArguments(CommonArguments):
    """What an SFT run needs beyond the trainer's fields."""

    task: str = field(default="cci", metadata=_help("task name: cci or dcs"))
    train_file: str | None = field(default=None, metadata=_help(
        "training data with gold outputs (official layout, JSON list or JSONL)"))
    target_style: str = field(default="letter_text", metadata=_help(
        "CCI completion: letter_text ('A. <option>') or letter ('A')"))
    shuffle_options: bool = field(default=False, metadata=_help(
        "CCI: each item also appears with its options permuted (label moved): against position "
        "bias"))
    shuffle_copies: int = field(default=1, metadata=_help(
        "with --shuffle_options: permuted copies per item (1-5)"))
    extra_train_files: list[str] | None = field(default=None, metadata=_help(
        "extra SFT records to mix in (JSONL from run/magpie.py or run/distill.py: 'messages' "
        "ending with the assistant turn, or 'prompt_messages' + 'completion')"))
    extra_train_ratio: float | None = field(default=None, metadata=_help(
        "extra records per gold training example (e.g. 0.5: one for every two); default: all"))
    completion_logits: bool = field(default=True, metadata=_help(
        "project only the completion positions onto the vocabulary (faster with long prompts); "
        "false: trl's fused LM head over every position"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train_file:
            raise UserError("no training data given", field="train_file",
                            hint="pass --train_file FILE or set 'train_file:' in the recipe")
        _existing(self.train_file, "train_file")
        _choice(self.target_style, TARGET_STYLES, "target_style")
        if not 1 <= self.shuffle_copies <= 5:
            raise UserError(f"must be 1 to 5, got {self.shuffle_copies}", field="shuffle_copies")
        for path in self.extra_train_files or []:
            _existing(path, "extra_train_files")
        if self.extra_train_ratio is not None and self.extra_train_ratio < 0:
            raise UserError(f"must be >= 0, got {self.extra_train_ratio}", field="extra_train_ratio")


@dataclass
class ORPOArguments(CommonArguments):
    """What an ORPO run needs beyond the trainer's fields."""

    pairs: str | None = field(default=None, metadata=_help(
        "preference pairs from orpo/build_pairs.py (JSONL)"))
    dev_pairs: str | None = field(default=None, metadata=_help(
        "held-out pairs for the eval loss and margins (default: built from --dev_file)"))
    sft_adapter: str | None = field(default=None, metadata=_help(
        "start from this SFT run's adapter (a run folder or an adapter folder) and keep "
        "training it"))
    task: str | None = field(default=None, metadata=_help(
        "task (default: the one in the pairs file)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.pairs:
            raise UserError("no pairs given", field="pairs",
                            hint="build them with orpo/build_pairs.py, then pass --pairs FILE")
        _existing(self.pairs, "pairs")
        if self.dev_pairs:
            _existing(self.dev_pairs, "dev_pairs")
        if self.sft_adapter:
            self.sft_adapter = str(resolve_adapter_dir(self.sft_adapter))


def _choice(value: str, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + "one of " + ", ".join(allowed)
        raise UserError(f"unknown value '{value}'", field=name, hint=hint)


def _existing(path: str, name: str) -> None:
    if not Path(path).is_file():
        raise UserError("file not found", file=path, field=name, hint="check the path")


def resolve_adapter_dir(path: str | os.PathLike) -> Path:
    """An adapter folder, given either the folder itself or a run folder that holds one."""
    p = Path(path)
    if (p / "adapter_config.json").is_file():
        return p
    run = p / RUN_FILE
    if run.is_file():
        info = json.loads(run.read_text(encoding="utf-8"))
        if info.get("adapter_dir") and (p / info["adapter_dir"] / "adapter_config.json").is_file():
            return p / info["adapter_dir"]
    raise UserError("no LoRA adapter here (adapter_config.json)", file=str(p), field="sft_adapter",
                    hint="give an SFT run folder trained with --method lora or qlora")


# Trainer defaults that differ from transformers/trl's: what the teams' recipes used.
TRAINER_DEFAULTS: dict[str, Any] = {
    "output_dir": "auto",  # runs/<task>/<model>_<method>
    "learning_rate": 2e-4,
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "weight_decay": 0.0,
    "logging_steps": 10,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "task",  # the task's own dev metric (accuracy, rouge1)
    "report_to": "tensorboard",
    "max_length": 1024,
}
ORPO_DEFAULTS: dict[str, Any] = {**TRAINER_DEFAULTS, "learning_rate": 5e-6, "beta": 0.1,
                                 "num_train_epochs": 1.0}
ORPO_DEFAULTS.pop("max_length")  # ORPOConfig's own default (1024) applies


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def _bf16_default() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - no usable CUDA
        return False


class RecipeParser:
    """trl's ``TrlParser`` convention, with user mistakes reported as one ``UserError`` line.

    ``--config recipe.yaml`` sets defaults; ``--key value`` flags override them. A recipe key that
    no dataclass knows, a value argparse cannot convert, or a combination a config's
    ``__post_init__`` rejects is reported before any model is loaded.
    """

    def __init__(self, script_cls: type, config_cls: type, defaults: dict[str, Any]) -> None:
        from trl import TrlParser

        class _Parser(TrlParser):
            def error(self, message: str) -> None:  # argparse would print usage and exit(2)
                raise UserError(message.splitlines()[0], hint="--help lists every option")

        self.parser = _Parser((script_cls, config_cls))
        self.script_cls, self.config_cls = script_cls, config_cls
        self.parser.set_defaults(bf16=_bf16_default(), dataloader_pin_memory=_cuda(), **defaults)
        self.valid_keys = sorted({a.dest for a in self.parser._actions if a.dest != "help"})
        self.script_keys = [f.name for f in dataclasses.fields(script_cls)]
        self.options = {o for a in self.parser._actions for o in a.option_strings}

    def nearest(self, key: str) -> str | None:
        """The closest valid key, our own fields first (lora_rank -> lora_r, not local_rank)."""
        close = (difflib.get_close_matches(key, self.script_keys, n=1, cutoff=0.6)
                 or difflib.get_close_matches(key, self.valid_keys, n=1, cutoff=0.6))
        return close[0] if close else None

    def check_recipe(self, path: str) -> dict:
        """The recipe's mapping; one error naming every unknown key and the nearest valid one."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise UserError("recipe not found", file=path, field="config")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise UserError(f"not valid YAML: {str(err).splitlines()[0]}", file=path) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise UserError("a recipe must be a YAML mapping of key: value", file=path)
        unknown = [k for k in data if k not in self.valid_keys and k != "env"]
        if unknown:
            parts = [f"'{key}'" + (f" (did you mean '{c}'?)" if (c := self.nearest(str(key)))
                                   else "") for key in unknown]
            raise UserError(
                f"unknown recipe key(s) {', '.join(parts)}", file=path,
                hint=f"valid keys: {', '.join(self.script_keys)}, and every "
                     f"{self.config_cls.__name__} field (--help lists them)")
        return data

    def parse(self, argv: Sequence[str] | None) -> tuple[Any, Any]:
        args = list(sys.argv[1:] if argv is None else argv)
        unknown = [a.split("=", 1)[0] for a in args
                   if a.startswith("--") and a.split("=", 1)[0] not in self.options | {"--config"}]
        if unknown:
            names = [u[2:].replace("-", "_") for u in unknown]
            parts = [u + (f" (did you mean --{c}?)" if (c := self.nearest(n)) else "")
                     for u, n in zip(unknown, names, strict=True)]
            raise UserError(f"unknown option(s) {', '.join(parts)}",
                            hint="--help lists every option")
        if "--config" in args:
            at = args.index("--config")
            if at + 1 >= len(args):
                raise UserError("--config needs a file", field="config")
            self.check_recipe(args[at + 1])
        try:
            script, config = self.parser.parse_args_and_config(args)
        except (ValueError, TypeError) as err:  # a trainer config's __post_init__ rejected a value
            raise UserError(f"invalid recipe value: {str(err).splitlines()[0]}") from None
        return script, config


def resolve_trainer_args(script: CommonArguments, config: Any, task: Any, *, has_dev: bool,
                         task_metric: bool) -> Any:
    """Fill what depends on the task and the data: output folder, best-checkpoint metric, eval.

    ``has_dev``: there is a dev set to evaluate (loss); ``task_metric``: the task's own metric is
    computed on it (otherwise the best checkpoint is the one with the lowest eval loss).
    """
    changes: dict[str, Any] = {}
    if config.output_dir in ("auto", None, "trainer_output"):
        short = Path(script.model.rstrip("/")).name or "model"
        changes["output_dir"] = str(Path("runs") / task.name / f"{short}_{script.method}")
    if config.metric_for_best_model in ("task", "eval_task"):
        metric = task.metric_names[0] if task_metric else "loss"
        changes["metric_for_best_model"] = metric
        changes["greater_is_better"] = metric != "loss"
    if not has_dev:
        changes.update(eval_strategy="no", load_best_model_at_end=False)
    if changes:
        config = dataclasses.replace(config, **changes)
    return config


def batching_changes(mode: str, attn_implementation: str, config: Any) -> dict[str, Any]:
    """Trainer settings for the batching ``mode`` (see the module docstring)."""
    flash = attn_implementation.startswith("flash_attention")
    if mode == "auto":
        mode = "padding_free" if flash else "length"
    if mode == "padding_free":
        if not flash:
            log.warning("padding-free batching without flash attention: correct (boundaries come "
                        "from position ids) but attention spans the whole flattened batch")
        # prompts are already fitted to max_length; trl refuses max_length with padding-free
        return {"padding_free": True, "max_length": None}
    if mode == "packing":
        return {"packing": True, "packing_strategy": "bfd"}
    if mode == "length":
        return {"train_sampling_strategy": "group_by_length"}
    return {}


# =============================================================================================
# datasets


@dataclass
class BudgetStats:
    """How the length budget treated a split's prompts."""

    items: int = 0
    examples: int = 0
    prompts_cut: int = 0  # prompts that lost utterances to fit max_length
    over_budget: int = 0  # examples dropped: even the shortest prompt + completion did not fit
    tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def assistant_affixes(tokenizer: Any, backbone: Backbone) -> tuple[str, str]:
    """What the chat template writes around an assistant turn's content after the generation prompt.

    Returns ``(before, after)``: ``after`` is cut right after the end-of-turn token (Gemma's
    template writes ``<end_of_turn>\\n``; the newline is not trained), and is the tokenizer's EOS
    when the template ends a turn with nothing a generator could stop on.
    """
    user = [{"role": "user", "content": "x"}]
    prompt = render_chat(tokenizer, user, backbone, add_generation_prompt=True)
    full = render_chat(tokenizer, user + [{"role": "assistant", "content": SENTINEL}], backbone,
                       add_generation_prompt=False)
    before, after = "", ""
    if full.startswith(prompt) and SENTINEL in full[len(prompt):]:
        before, after = full[len(prompt):].split(SENTINEL, 1)
    stops = [s for s in (END_OF_TURN.get(backbone.chat_format), tokenizer.eos_token) if s]
    hits = [(after.find(s), s) for s in stops if s in after]
    if hits:
        at, stop = min(hits)
        after = after[:at + len(stop)]
    else:
        after = tokenizer.eos_token or ""
    return before, after


def completion_ids(tokenizer: Any, affixes: tuple[str, str], target: str) -> list[int]:
    """Token ids of ``target`` as an assistant turn: its text, then the end-of-turn, once."""
    before, after = affixes
    return tokenizer(before + target.strip() + after, add_special_tokens=False)["input_ids"]


def option_orders(n: int, copies: int, key: str, seed: int) -> list[tuple[int, ...]]:
    """``copies`` distinct non-identity orders of ``n`` options, the same for a given item key."""
    perms = [p for p in itertools.permutations(range(n)) if p != tuple(range(n))]
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return rng.sample(perms, min(copies, len(perms)))


def augment_options(task: Any, items: Sequence[Any], copies: int = 1, seed: int = 0) -> list[Any]:
    """Each item, then ``copies`` versions with its options permuted (the label moves with them)."""
    out: list[Any] = []
    for item in items:
        out.append(item)
        for order in option_orders(task.n_choices, copies, item.id, seed):
            out.append(task.permuted(item, order))
    return out


def build_sft_examples(task: Any, items: Sequence[Any], tokenizer: Any, backbone: Backbone,
                       prompt: str, max_length: int | None, *, target_style: str = "letter_text",
                       ) -> tuple[list[dict], BudgetStats]:
    """Pre-tokenised prompt-completion rows (``input_ids``, ``labels`` = -100 on the prompt)."""
    affixes = assistant_affixes(tokenizer, backbone)
    stats = BudgetStats(items=len(items))
    rows = []
    for item in items:
        target = task.target(item, prompt, style=target_style) if task.kind == "choice" \
            else task.target(item, prompt)
        done = completion_ids(tokenizer, affixes, target)
        fitted = fit_prompt(task, item, tokenizer, backbone, prompt, max_length, reserve=len(done))
        stats.prompts_cut += fitted.dropped > 0
        ids = list(fitted.input_ids) + done
        if not fitted.fits or (max_length is not None and len(ids) > max_length):
            stats.over_budget += 1
            continue
        rows.append({"id": item.id, "input_ids": ids,
                     "labels": [-100] * len(fitted.input_ids) + done})
        stats.tokens += len(ids)
        stats.completion_tokens += len(done)
    stats.examples = len(rows)
    if stats.over_budget:
        log.warning("%d example(s) dropped: prompt + completion exceed max_length %s even with "
                    "the conversation cut", stats.over_budget, max_length)
    return rows, stats


def load_sft_records(path: str | os.PathLike) -> list[tuple[str, list[dict], str]]:
    """``(id, prompt messages, completion)`` of each record of a Magpie / distillation file."""
    from malpyeong.data import item_label, read_records

    records = read_records(path)
    if not isinstance(records, list):
        raise UserError("expected JSONL records or a JSON list of them", file=str(path))
    out = []
    for index, rec in enumerate(records):
        label = item_label(rec, index)
        if isinstance(rec, dict) and isinstance(rec.get("messages"), list) and rec["messages"]:
            *prompt, last = rec["messages"]
            completion = last.get("content") if isinstance(last, dict) and \
                last.get("role") == "assistant" else None
            where = "messages"
        elif isinstance(rec, dict) and isinstance(rec.get("prompt_messages"), list):
            prompt, completion, where = rec["prompt_messages"], rec.get("completion"), "completion"
        else:
            raise UserError("neither 'messages' nor 'prompt_messages' + 'completion'",
                            file=str(path), item=label, field="messages")
        ok = prompt and all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                            and isinstance(m.get("content"), str) for m in prompt)
        if not ok or not isinstance(completion, str) or not completion.strip():
            raise UserError("needs chat turns {role, content} and a final assistant answer",
                            file=str(path), item=label, field=where)
        out.append((label, prompt, completion))
    return out


def build_record_examples(records: Sequence[tuple[str, list[dict], str]], tokenizer: Any,
                          backbone: Backbone, max_length: int | None) -> tuple[list[dict], BudgetStats]:
    """Rows like ``build_sft_examples``'s from chat records; ones over ``max_length`` are dropped
    (their text is free-form, so there is no conversation to cut)."""
    affixes = assistant_affixes(tokenizer, backbone)
    stats = BudgetStats(items=len(records))
    rows = []
    for rid, prompt, completion in records:
        prompt_ids = encode(tokenizer, render_chat(tokenizer, prompt, backbone))
        done = completion_ids(tokenizer, affixes, completion)
        ids = prompt_ids + done
        if max_length is not None and len(ids) > max_length:
            stats.over_budget += 1
            continue
        rows.append({"id": rid, "input_ids": ids, "labels": [-100] * len(prompt_ids) + done})
        stats.tokens += len(ids)
        stats.completion_tokens += len(done)
    stats.examples = len(rows)
    return rows, stats


def mix_extra_rows(rows: list[dict], script: SFTArguments, tokenizer: Any, backbone: Backbone,
                   max_length: int | None, seed: int) -> tuple[list[dict], dict | None]:
    """Gold rows plus the recipe's extra records, by ``extra_train_ratio`` (see prep.magpie.mix)."""
    if not script.extra_train_files:
        return rows, None
    from malpyeong.prep.magpie import mix

    records = [r for path in script.extra_train_files for r in load_sft_records(path)]
    extra, stats = build_record_examples(records, tokenizer, backbone, max_length)
    ratio = script.extra_train_ratio if script.extra_train_ratio is not None \
        else len(extra) / max(len(rows), 1)
    mixed = mix(rows, extra, ratio, seed)
    info = {**stats.as_dict(), "files": list(script.extra_train_files),
            "mixed_in": len(mixed) - len(rows)}
    return mixed, info


# =============================================================================================
# models


def is_zero3(config: Any) -> bool:
    plugin = getattr(config, "deepspeed_plugin", None)
    return plugin is not None and getattr(plugin, "zero_stage", None) == 3


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05,
                target_modules: Sequence[str] = ("all-linear",)) -> Any:
    """LoRA on every linear layer but the LM head by default (what QLoRA's authors found best)."""
    from peft import LoraConfig

    modules = list(target_modules)
    target = "all-linear" if modules == ["all-linear"] else modules
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target,
                      bias="none", task_type="CAUSAL_LM")


def load_training_model(script: CommonArguments, config: Any, backbone: Backbone) -> Any:
    """The model to train: full weights, or the base with LoRA adapters (4-bit base for qlora).

    With ``sft_adapter`` (ORPO) the SFT adapter is loaded trainable and training continues on it
    (merged into the weights for full fine-tuning).
    """
    from malpyeong.backbones import load_model

    remote = True if getattr(config, "trust_remote_code", False) else None
    model = load_model(script.model, script.method, backbone=backbone, dtype=script.dtype,
                       attn_implementation=script.attn_implementation, trust_remote_code=remote)
    sft_adapter = getattr(script, "sft_adapter", None)
    if script.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs=config.gradient_checkpointing_kwargs)
    if script.method == "full":
        if sft_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, sft_adapter).merge_and_unload()
        return model
    from peft import PeftModel, get_peft_model

    if sft_adapter:
        model = PeftModel.from_pretrained(model, sft_adapter, is_trainable=True)
    else:
        # ZeRO-3 gathers parameters of one dtype: keep bf16 adapters on a bf16 base (trl does too)
        zero3 = is_zero3(config) and script.method == "lora"
        kwargs = {"autocast_adapter_dtype": False} if zero3 else {}
        lora = lora_config(script.lora_r, script.lora_alpha, script.lora_dropout,
                           script.lora_target_modules)
        model = get_peft_model(model, lora, **kwargs)
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def merge_adapter(base: str, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  backbone: Backbone | None = None, dtype: str = "auto", tokenizer: Any = None,
                  trust_remote_code: bool | None = None) -> Path:
    """Merge a LoRA adapter into a full-precision copy of ``base`` (never into 4-bit weights)."""
    from peft import PeftModel

    from malpyeong.backbones import load_model

    backbone = backbone or get_backbone(base)
    model = load_model(base, "full", backbone=backbone, dtype=dtype,
                       trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    del merged, model
    gc.collect()
    return out


# =============================================================================================
# dev evaluation with the task's metric


@dataclass
class TaskEvaluator:
    """The task's own dev metric, computed on the model being trained.

    Choice tasks: accuracy from option scoring (:func:`malpyeong.predict.score_choices`, the
    letter probabilities, as prediction scores them). Generation tasks: ROUGE-1 of greedy
    generations (:func:`malpyeong.generation.generate_texts`) against the gold outputs.
    """

    task: Any
    items: list
    tokenizer: Any
    backbone: Backbone
    prompt: str
    max_length: int | None
    batch_size: int = 8
    max_new_tokens: int = 256
    history: list[dict] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.task.metric_names[0]

    def __call__(self, model: Any) -> dict[str, float]:
        import torch

        was_training = model.training
        side = self.tokenizer.padding_side
        use_cache = getattr(model.config, "use_cache", None)
        model.eval()
        try:
            with torch.no_grad():
                if self.task.kind == "choice":
                    value, report = self._choice(model)
                else:
                    model.config.use_cache = True
                    value, report = self._generate(model)
        finally:
            self.tokenizer.padding_side = side
            if use_cache is not None:
                model.config.use_cache = use_cache
            model.train(was_training)
        self.reports.append(report)
        return {self.metric: value}

    def _choice(self, model: Any) -> tuple[float, dict]:
        from malpyeong.predict import score_choices

        probs = score_choices(model, self.tokenizer, self.backbone, self.task, self.items,
                              prompt=self.prompt, batch_size=self.batch_size,
                              max_length=self.max_length, scoring="letter", progress=False)
        outputs = {it.id: self.task.output_for(int(p.argmax()))
                   for it, p in zip(self.items, probs, strict=True)}
        report = self.task.evaluate(self.items, outputs)
        return float(report["accuracy"]), report

    def _generate(self, model: Any) -> tuple[float, dict]:
        from malpyeong import metrics
        from malpyeong.backbones import end_of_turn_ids
        from malpyeong.generation import generate_texts
        from malpyeong.predict import generation_prompts

        fitted = generation_prompts(self.task, self.items, self.tokenizer, self.backbone,
                                    prompt=self.prompt, max_length=self.max_length,
                                    max_new_tokens=self.max_new_tokens)
        texts = generate_texts(model, self.tokenizer, [f.input_ids for f in fitted],
                               max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                               stop_token_ids=end_of_turn_ids(self.tokenizer, self.backbone),
                               progress=False)
        preds = [self.task.clean_output(t) for t in texts]
        refs = [self.task.target(it, self.prompt) for it in self.items]
        value = float(metrics.rouge1(refs, preds))
        return value, {"rouge1": value, "n": len(preds), "examples": [
            {"id": it.id, "prediction": p}
            for it, p in list(zip(self.items, preds, strict=True))[:5]]}


class TaskMetricsMixin:
    """Adds the task metric (``eval_accuracy`` / ``eval_rouge1``) to every evaluation.

    It is added inside the evaluation loop, so the best-checkpoint logic, early stopping and
    the logs all see it like the eval loss.
    """

    task_evaluator: TaskEvaluator | None = None

    def evaluation_loop(self, dataloader: Any, description: str,
                        prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None,
                        metric_key_prefix: str = "eval") -> Any:
        output = super().evaluation_loop(dataloader, description, prediction_loss_only,  # type: ignore[misc]
                                         ignore_keys, metric_key_prefix)
        if self.task_evaluator is not None and metric_key_prefix == "eval":
            scores = self.task_evaluator(self.model)  # type: ignore[attr-defined]
            for key, value in scores.items():
                output.metrics[f"{metric_key_prefix}_{key}"] = value
            state = self.state  # type: ignore[attr-defined]
            self.task_evaluator.history.append(
                {"step": state.global_step, "epoch": state.epoch,
                 **{k: v for k, v in output.metrics.items() if isinstance(v, (int, float))}})
        return output


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the causal LM's forward can project only chosen positions onto the vocabulary."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def completion_loss(trainer: Any, model: Any, inputs: dict, num_items_in_batch: Any = None) -> Any:
    """Token-mean NLL of the completion, with logits computed at completion positions only.

    A CCI prompt is hundreds of tokens and its answer a few; projecting every position onto a
    vocabulary of 128k-256k entries (or, on a CPU, running trl's fused LM head over all of them)
    is wasted work. The positions whose next token is a target in any row of the batch are
    passed as ``logits_to_keep``; the loss is normalised exactly as trl's SFTTrainer does
    (by ``num_items_in_batch`` under gradient accumulation, scaled for data parallelism).
    """
    import torch
    import torch.nn.functional as F

    mode = "train" if trainer.model.training else "eval"
    targets = inputs["labels"][:, 1:]
    keep = (targets != -100).any(0).nonzero().flatten()
    if keep.numel() == 0:  # nothing to learn in this batch (cannot happen with our rows)
        keep = torch.zeros(1, dtype=torch.long, device=targets.device)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    out = model(**forward, use_cache=False, logits_to_keep=keep)
    logits = out.logits.float()
    tgt = targets[:, keep]
    mask = tgt != -100
    loss_sum = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100,
                               reduction="sum")
    count = mask.sum() if num_items_in_batch is None else num_items_in_batch
    loss = loss_sum / torch.as_tensor(count, device=loss_sum.device).clamp(min=1)
    if trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
        loss = loss * (trainer.accelerator.num_processes // trainer.get_tp_size())
    with torch.no_grad():  # the same logged metrics as trl's SFTTrainer
        gather = trainer.accelerator.gather_for_metrics
        logp = torch.log_softmax(logits[mask], dim=-1)
        valid = gather(mask.sum()).sum()
        entropy = gather(-(logp.exp() * logp).sum()).sum()
        correct = gather((logits.argmax(-1)[mask] == tgt[mask]).sum()).sum()
        metrics = trainer._metrics[mode]
        metrics["entropy"].append((entropy / valid).item() if valid > 0 else 0.0)
        metrics["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                seen = inputs["attention_mask"].sum()
            else:
                seen = torch.tensor(inputs["input_ids"].numel(), device=targets.device)
            trainer._total_train_tokens += int(gather(seen).sum().item())
        metrics["num_tokens"] = [trainer._total_train_tokens]
    return loss


def sft_trainer_class() -> type:
    from trl import SFTTrainer

    class MalpyeongSFTTrainer(TaskMetricsMixin, SFTTrainer):
        """trl's SFTTrainer with the task metric at each evaluation and completion-only logits
        (:func:`completion_loss`) where the model supports them."""

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            usable = getattr(self, "_completion_logits", None)
            if usable is None:
                plain = (self.args.loss_type == "nll" and self.compute_loss_func is None
                         and self.args.label_smoothing_factor == 0 and not self.aux_loss_enabled
                         and self.accelerator.parallelism_config is None)
                usable = self._completion_logits = plain and accepts_logits_to_keep(self.model)
            if return_outputs or not usable:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return completion_loss(self, model, inputs, num_items_in_batch)

    return MalpyeongSFTTrainer


def orpo_trainer_class() -> type:
    from trl.experimental.orpo import ORPOTrainer

    class MalpyeongORPOTrainer(TaskMetricsMixin, ORPOTrainer):
        """ORPO on rows whose prompt is already rendered and fitted, and whose chosen/rejected
        already end with the template's end-of-turn: tokenised here without a second BOS and
        without trl's extra EOS."""

        def tokenize_row(self, feature: dict, model: Any = None) -> dict:
            tok = self.processing_class
            prompt = encode(tok, feature["prompt"])
            out: dict[str, list[int]] = {"prompt_input_ids": prompt,
                                         "prompt_attention_mask": [1] * len(prompt)}
            room = max(0, self.max_length - len(prompt))
            for side in ("chosen", "rejected"):
                done = tok(feature[side], add_special_tokens=False)["input_ids"][:room]
                out[f"{side}_input_ids"] = prompt + done
                out[f"{side}_attention_mask"] = [1] * (len(prompt) + len(done))
                out[f"{side}_labels"] = [-100] * len(prompt) + done
            return out

    return MalpyeongORPOTrainer


def callbacks_for(script: CommonArguments, config: Any) -> list:
    from transformers import EarlyStoppingCallback

    if script.early_stopping_patience and config.load_best_model_at_end \
            and str(config.eval_strategy).lower() not in ("no", "intervalstrategy.no"):
        return [EarlyStoppingCallback(script.early_stopping_patience,
                                      script.early_stopping_threshold)]
    return []


# =============================================================================================
# run folder


def main_process() -> bool:
    """True in the process that writes the run folder (rank 0 under accelerate/torchrun)."""
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # noqa: BLE001 - accelerate not initialised: a single process
        return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    try:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
    except Exception:  # noqa: BLE001 - a single process has nobody to wait for
        pass


def open_run_folder(path: str | os.PathLike, *, overwrite: bool, resume: bool) -> Path:
    """:func:`prepare_output_dir` in the main process only; the other ranks wait for it."""
    if main_process():
        prepare_output_dir(path, overwrite=overwrite, resume=resume)
    wait_for_everyone()
    return Path(path)


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool, resume: bool) -> Path:
    """Create the run folder; refuse an existing one unless --overwrite or --resume says how."""
    out = Path(path)
    if resume:
        if not any(out.glob("checkpoint-*")):
            raise UserError("nothing to resume: no checkpoint-* in the run folder", file=str(out),
                            hint="drop --resume to start a new run")
        return out
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError("run folder exists", file=str(out),
                            hint="pass --overwrite to replace it or --resume to continue it")
        if not any((out / m).exists() for m in RUN_MARKERS) and not any(out.glob("checkpoint-*")):
            raise UserError("refusing to delete a folder that is not a malpyeong run folder",
                            file=str(out), hint="choose another --output_dir")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _plain(value: Any) -> Any:
    """YAML-safe form of a config value (enums, paths, nested structures)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and isinstance(value.value, (str, int)):
        return value.value
    return str(value)


def resolved_config(script: Any, config: Any) -> dict:
    """Every field of the run's two dataclasses, in a form ``--config`` accepts back."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(script):
        out[f.name] = _plain(getattr(script, f.name))
    for key, value in config.to_dict().items():
        if key in ("overwrite", "resume", "merge") or key.startswith("_") or key.endswith("_token"):
            continue
        if value == "<HUB_TOKEN>" or (isinstance(value, str) and value.startswith("<") and
                                      value.endswith(">")):
            continue
        out.setdefault(key, _plain(value))
    for key in ("overwrite", "resume"):
        out[key] = False
    return out


def write_config(out: Path, script: Any, config: Any) -> None:
    import yaml

    atomic_write_text(out / "config.yaml",
                      yaml.safe_dump(resolved_config(script, config), allow_unicode=True,
                                     sort_keys=False))


def run_info(script: Any, task: Any, max_length: int | None, *, stage: str,
             target_style: str | None, merged: bool) -> dict:
    """The ``malpyeong_run.json`` contract read by the prediction loader."""
    full = script.method == "full"
    return {
        "model": script.model,
        "method": script.method,
        "adapter_dir": None if full else "adapter",
        "merged_dir": "model" if full else ("merged" if merged else None),
        "task": task.name,
        "prompt": str(task.prompt_spec(script.prompt)),
        "max_length": max_length,
        "target_style": target_style if task.kind == "choice" else None,
        "stage": stage,
    }


def write_dev_metrics(out: Path, evaluator: TaskEvaluator | None, trainer: Any) -> dict:
    """History of dev evaluations, the best one and its full report (e.g. CCI by category)."""
    data: dict[str, Any] = {"metric": None, "best": None, "best_step": None, "history": [],
                            "best_report": None}
    if evaluator is not None and evaluator.history:
        key = f"eval_{evaluator.metric}"
        best = max(range(len(evaluator.history)),
                   key=lambda i: evaluator.history[i].get(key, -math.inf))
        data.update(metric=evaluator.metric, best=evaluator.history[best].get(key),
                    best_step=evaluator.history[best]["step"], history=evaluator.history,
                    best_report=evaluator.reports[best] if best < len(evaluator.reports) else None)
    else:
        data["history"] = [h for h in trainer.state.log_history
                           if any(k.startswith("eval_") for k in h)]
    atomic_write_json(out / "dev_metrics.json", data)
    return data


def save_run(trainer: Any, tokenizer: Any, out: Path, script: Any, task: Any,
             max_length: int | None, *, stage: str, target_style: str | None,
             backbone: Backbone) -> dict:
    """Save the final (best) weights and the loader contract; merge if asked."""
    weights = out / ("model" if script.method == "full" else "adapter")
    trainer.save_model(str(weights))  # every rank: ZeRO-3 gathers the shards here
    info = run_info(script, task, max_length, stage=stage, target_style=target_style,
                    merged=script.merge and script.method != "full")
    if not main_process():
        return info
    tokenizer.save_pretrained(str(weights))
    merged = False
    if script.merge and script.method != "full":
        trainer.model = None
        gc.collect()
        merge_adapter(script.model, weights, out / "merged", backbone=backbone, dtype=script.dtype,
                      tokenizer=tokenizer)
        merged = True
    info = run_info(script, task, max_length, stage=stage, target_style=target_style, merged=merged)
    atomic_write_json(out / RUN_FILE, info)
    return info


def _train(trainer: Any, resume: bool) -> None:
    try:
        trainer.train(resume_from_checkpoint=True if resume else None)
    except ValueError as err:
        if "checkpoint" in str(err).lower() and resume:
            raise UserError(f"cannot resume: {str(err).splitlines()[0]}") from None
        raise


def _dev_items(task: Any, script: CommonArguments) -> list:
    from malpyeong.data import load_items

    if not script.dev_file:
        return []
    items = load_items(script.dev_file, task, require_output=True)
    limit = script.dev_eval_items or (None if task.kind == "choice" else 50)
    return items[:limit] if limit else items


# =============================================================================================
# SFT


def train_sft(script: SFTArguments, config: Any) -> Path:
    """Run SFT end to end and return the run folder."""
    from datasets import Dataset

    from malpyeong.backbones import load_tokenizer
    from malpyeong.data import load_items
    from malpyeong.tasks import get_task

    task = get_task(script.task)
    config = resolve_trainer_args(script, config, task, has_dev=bool(script.dev_file),
                                  task_metric=bool(script.dev_file))
    out = open_run_folder(config.output_dir, overwrite=script.overwrite, resume=script.resume)
    backbone = get_backbone(script.model)
    tokenizer = load_tokenizer(script.model, backbone,
                               trust_remote_code=True if config.trust_remote_code else None)
    max_length = config.max_length

    train_items = load_items(script.train_file, task, require_output=True)
    if script.max_train_items:
        train_items = train_items[:script.max_train_items]
    n_items = len(train_items)
    if script.shuffle_options and task.kind == "choice":
        train_items = augment_options(task, train_items, script.shuffle_copies, config.seed)
    dev_items = _dev_items(task, script)
    rows, train_stats = build_sft_examples(task, train_items, tokenizer, backbone, script.prompt,
                                           max_length, target_style=script.target_style)
    train_stats.items = n_items  # before option-order augmentation; examples counts the copies
    if not rows:
        raise UserError("no training example fits max_length", field="max_length",
                        hint=f"raise --max_length (now {max_length})")
    rows, extra_stats = mix_extra_rows(rows, script, tokenizer, backbone, max_length, config.seed)
    dev_rows, dev_stats = build_sft_examples(task, dev_items, tokenizer, backbone, script.prompt,
                                             max_length, target_style=script.target_style)
    if dev_items and not dev_rows:
        raise UserError("no dev example fits max_length", file=script.dev_file, field="max_length")
    stats = {"train": train_stats.as_dict(), "dev": dev_stats.as_dict() if dev_items else None,
             "extra": extra_stats}
    if main_process():
        atomic_write_json(out / "data_stats.json", stats)
        write_config(out, script, config)
    log.info("train: %d examples (%d prompts cut, %d over budget); dev: %d items",
             train_stats.examples, train_stats.prompts_cut, train_stats.over_budget, len(dev_items))

    attn = script.attn_implementation or backbone.attn_implementation
    trainer_config = dataclasses.replace(config, **batching_changes(script.batching, attn, config))
    model = load_training_model(script, trainer_config, backbone)
    evaluator = TaskEvaluator(task, dev_items, tokenizer, backbone, script.prompt, max_length,
                              batch_size=config.per_device_eval_batch_size,
                              max_new_tokens=script.eval_max_new_tokens) if dev_items else None
    trainer = sft_trainer_class()(
        model=model, args=trainer_config, processing_class=tokenizer,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(dev_rows) if dev_rows else None,
        callbacks=callbacks_for(script, trainer_config))
    trainer.task_evaluator = evaluator
    if not script.completion_logits:
        trainer._completion_logits = False
    _train(trainer, script.resume)
    if main_process():
        write_dev_metrics(out, evaluator, trainer)
    save_run(trainer, tokenizer, out, script, task, max_length, stage="sft",
             target_style=script.target_style, backbone=backbone)
    return out


# =============================================================================================
# ORPO


def build_orpo_rows(pairs: Sequence[dict], task: Any, tokenizer: Any, backbone: Backbone,
                    prompt: str, max_length: int | None) -> tuple[list[dict], BudgetStats]:
    """Rows ``{prompt, chosen, rejected}`` as text: the prompt rendered and fitted for this model,
    the responses followed by the template's end-of-turn (see :func:`assistant_affixes`)."""
    before, after = assistant_affixes(tokenizer, backbone)
    stats = BudgetStats()
    items: dict[str, Any] = {}
    rows = []
    for pair in pairs:
        key = json.dumps(pair["record"], sort_keys=True, ensure_ascii=False)
        if key not in items:
            problems: list = []
            items[key] = task.parse_item(pair["record"], problems)
            if items[key] is None:
                raise UserError(f"invalid record: {problems[0][0]}: {problems[0][1]}",
                                item=pair.get("id"), field="record")
        item = items[key]
        chosen = before + pair["chosen"].strip() + after
        rejected = before + pair["rejected"].strip() + after
        longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"])
                      for t in (chosen, rejected))
        fitted = fit_prompt(task, item, tokenizer, backbone, prompt, max_length, reserve=longest)
        stats.prompts_cut += fitted.dropped > 0
        if not fitted.fits:
            stats.over_budget += 1
            continue
        rows.append({"id": pair.get("id", item.id), "prompt": fitted.text, "chosen": chosen,
                     "rejected": rejected})
        stats.tokens += len(fitted.input_ids) + longest
        stats.completion_tokens += longest
    stats.items, stats.examples = len(items), len(rows)
    return rows, stats


def pair_margins(model: Any, tokenizer: Any, rows: Sequence[dict],
                 batch_size: int = 8) -> list[float]:
    """Per pair: log p(chosen | prompt) - log p(rejected | prompt), summed over response tokens.

    The held-out check that preference training moved the model the right way.
    """
    import torch

    from malpyeong.generation import model_device

    device = model_device(model)
    seqs: list[tuple[list[int], int]] = []
    for row in rows:
        prompt = encode(tokenizer, row["prompt"])
        for side in ("chosen", "rejected"):
            done = tokenizer(row[side], add_special_tokens=False)["input_ids"]
            seqs.append((prompt + done, len(prompt)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    totals: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(seqs), batch_size):
            batch = seqs[lo:lo + batch_size]
            width = max(len(s) for s, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (s, _) in enumerate(batch):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
            with torch.no_grad():
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
                logits = out.logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            got = logp.gather(-1, ids[:, 1:].unsqueeze(-1).to(logp.device)).squeeze(-1)
            for r, (s, start) in enumerate(batch):
                totals.append(float(got[r, start - 1:len(s) - 1].sum()))
    finally:
        model.train(was_training)
    return [totals[i] - totals[i + 1] for i in range(0, len(totals), 2)]


def train_orpo(script: ORPOArguments, config: Any) -> Path:
    """Run ORPO end to end and return the run folder."""
    from datasets import Dataset

    from malpyeong.backbones import load_tokenizer
    from malpyeong.pairs import build_pairs, read_pairs
    from malpyeong.tasks import get_task

    pairs = read_pairs(script.pairs)
    task_name = script.task or pairs[0]["task"]
    task = get_task(task_name)
    styles = {p.get("target_style") for p in pairs}
    target_style = styles.pop() if len(styles) == 1 else None
    if script.max_train_items:
        keep = list(dict.fromkeys(p["source_id"] for p in pairs))[:script.max_train_items]
        pairs = [p for p in pairs if p["source_id"] in set(keep)]
    dev_items = _dev_items(task, script)
    if script.dev_pairs:
        dev_pairs = read_pairs(script.dev_pairs)
    elif dev_items:
        dev_pairs = build_pairs(task, dev_items, target_style=target_style or "letter_text")
    else:
        dev_pairs = []
    config = resolve_trainer_args(script, config, task, has_dev=bool(dev_pairs),
                                  task_metric=bool(dev_items))
    out = open_run_folder(config.output_dir, overwrite=script.overwrite, resume=script.resume)
    backbone = get_backbone(script.model)
    tokenizer = load_tokenizer(script.model, backbone,
                               trust_remote_code=True if config.trust_remote_code else None)
    max_length = config.max_length
    rows, train_stats = build_orpo_rows(pairs, task, tokenizer, backbone, script.prompt, max_length)
    if not rows:
        raise UserError("no pair fits max_length", field="max_length")
    dev_rows, dev_stats = build_orpo_rows(dev_pairs, task, tokenizer, backbone, script.prompt,
                                          max_length)
    if dev_pairs and not dev_rows:
        raise UserError("no dev pair fits max_length", field="max_length")
    if main_process():
        stats = {"train": train_stats.as_dict(), "dev": dev_stats.as_dict() if dev_rows else None}
        atomic_write_json(out / "data_stats.json", stats)
        write_config(out, script, config)

    model = load_training_model(script, config, backbone)
    margins_before = pair_margins(model, tokenizer, dev_rows[:64]) if dev_rows else []
    evaluator = TaskEvaluator(task, dev_items, tokenizer, backbone, script.prompt, max_length,
                              batch_size=config.per_device_eval_batch_size,
                              max_new_tokens=script.eval_max_new_tokens) if dev_items else None
    trainer = orpo_trainer_class()(
        model=model, args=config, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(dev_rows) if dev_rows else None,
        callbacks=callbacks_for(script, config))
    trainer.task_evaluator = evaluator
    _train(trainer, script.resume)
    # every rank runs the forward passes (ZeRO-3 gathers parameters collectively)
    margins_after = pair_margins(trainer.model, tokenizer, dev_rows[:64]) if dev_rows else []
    if main_process():
        dev = write_dev_metrics(out, evaluator, trainer)
        if dev_rows:
            dev["heldout_margin"] = {"pairs": len(margins_after), "before": _mean(margins_before),
                                     "after": _mean(margins_after)}
            atomic_write_json(out / "dev_metrics.json", dev)
    save_run(trainer, tokenizer, out, script, task, max_length, stage="orpo",
             target_style=target_style, backbone=backbone)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# =============================================================================================
# entry points shared by run/train.py and orpo/train.py


def sft_parser() -> RecipeParser:
    from trl import SFTConfig

    return RecipeParser(SFTArguments, SFTConfig, TRAINER_DEFAULTS)


def orpo_parser() -> RecipeParser:
    from trl.experimental.orpo import ORPOConfig

    return RecipeParser(ORPOArguments, ORPOConfig, ORPO_DEFAULTS)


def quiet_libraries() -> None:
    """Keep third-party chatter (kernel hub notices, tokenizer fork warnings) off the console."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO lives in trl.experimental
    # trl's configs still default the deprecated alias; the value is honoured either way
    warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated",
                            category=FutureWarning)
    for name in ("bitsandbytes", "kernels", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # the datasets map bars over our pre-tokenised rows are noise; training keeps its bar
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def has_flag(argv: Sequence[str] | None, flag: str) -> bool:
    return flag in (sys.argv[1:] if argv is None else argv)


__all__ = ["BudgetStats", "CommonArguments", "ORPOArguments", "RecipeParser", "SFTArguments",
           "TaskEvaluator", "assistant_affixes", "augment_options", "build_orpo_rows",
           "build_sft_examples", "completion_ids", "load_training_model", "merge_adapter",
           "pair_margins", "prepare_output_dir", "resolved_config", "run_info", "train_orpo",
           "train_sft"]
