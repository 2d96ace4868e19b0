"""The recipe: the run's three dataclasses, their validation, and the parser that fills them.

Like alignment-handbook's scripts, a run is described by three dataclasses parsed together from
one flat YAML recipe and ``--key value`` flags: the script's arguments (:class:`SFTArguments`
or :class:`ORPOArguments`: data, prompt, dev evaluation, run folder), the model's
(:class:`ModelArguments`: which weights, how they are loaded, the LoRA adapters) and trl's
trainer config (``SFTConfig`` / ``ORPOConfig``). Every bad value fails here, in one
``UserError`` line, before any model is loaded. Also here: the trainer defaults our recipes
assume, and the trainer settings filled in once the task, the data and the attention kernel are
known.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.cli import VERBOSE_HELP
from malpyeong.device import cuda_available, cuda_bf16
from malpyeong.errors import UserError, one_line
from malpyeong.io import read_yaml, require_file
from malpyeong.models.runfolder import adapter_of, find_adapter, has_run_file, read_run, weights_of
from malpyeong.rules import check_external_data, get_rules
from malpyeong.tasks import DEFAULT_TASK, Task, get_task, task_names

log = logging.getLogger(__name__)

METHODS = ("full", "lora", "qlora")
BATCHING = ("auto", "padding_free", "packing", "length", "none")
DTYPES = ("auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# preference objectives orpo/train.py offers (see malpyeong.training.preference)
ALGORITHMS = ("orpo", "dpo", "simpo", "kto")


def _help(text: str, **extra: Any) -> dict:
    return {"help": text, **extra}


@dataclass
class ModelArguments:
    """Which weights to train and how they are loaded: the method, dtype, attention kernel and
    LoRA adapters (alignment-handbook's ``ModelConfig``)."""

    model: str | None = field(
        default=None,
        metadata=_help("base model: a hub id or a local folder (python run/train.py --list-models)"),
    )
    method: str = field(default="lora", metadata=_help("full, lora or qlora (4-bit NF4 base)"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (scaling = alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout"))
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata=_help("modules that get adapters; 'all-linear' = every linear layer except the LM head"),
    )
    dtype: str = field(
        default="auto",
        metadata=_help("weights dtype: auto (bf16/fp16 on GPU, fp32 on CPU), bf16, fp16, fp32"),
    )
    attn_implementation: str | None = field(
        default=None,
        metadata=_help(
            "attention kernel (default: the backbone's, e.g. eager for Gemma-2); flash_attention_2 "
            "enables padding-free batching"
        ),
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise UserError(
                "no model given",
                field="model",
                hint="pass --model HUB_ID_OR_PATH or set 'model:' in the recipe",
            )
        _choice(self.method, METHODS, "method")
        _choice(self.dtype, DTYPES, "dtype")
        if self.attn_implementation is not None and "/" not in self.attn_implementation:
            _choice(self.attn_implementation, ATTENTION, "attn_implementation")  # or a hub kernel
        for name in ("lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise UserError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UserError(f"must be in [0, 1), got {self.lora_dropout}", field="lora_dropout")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]


@dataclass
class CommonArguments:
    """Script fields shared by SFT and ORPO runs (the model's fields are in
    :class:`ModelArguments`, the trainer's come from trl's configs)."""

    prompt: str = field(
        default="baseline",
        metadata=_help("prompt variant of the task: flags joined by '+', e.g. highlight+definitions"),
    )
    dev_file: str | None = field(
        default=None,
        metadata=_help("dev data with gold outputs; evaluated with the task's metric during training"),
    )
    dev_eval_items: int | None = field(
        default=None,
        metadata=_help(
            "evaluate the task metric on the first N dev items only (default: all for a choice task, "
            "50 for a generation task)"
        ),
    )
    eval_max_new_tokens: int = field(
        default=256, metadata=_help("generation length for the dev metric of a generation task (DCS)")
    )
    early_stopping_patience: int = field(
        default=3,
        metadata=_help("stop after this many evaluations without improvement of the dev metric (0: never)"),
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata=_help("how much the dev metric must improve to count as an improvement")
    )
    batching: str = field(
        default="auto",
        metadata=_help(
            "auto (padding-free with flash attention, else length-grouped), padding_free, packing, "
            "length, none"
        ),
    )
    max_train_items: int | None = field(
        default=None, metadata=_help("use only the first N training items (quick trials)")
    )
    overwrite: bool = field(default=False, metadata=_help("replace an existing run folder"))
    resume: bool = field(default=False, metadata=_help("continue from the last checkpoint"))
    merge: bool = field(
        default=False,
        metadata=_help(
            "also write the adapter merged into a full-precision copy of the base model, at the "
            "run folder's root (config.json and weights, as mergekit writes a model)"
        ),
    )
    init_from: str | None = field(
        default=None,
        metadata=_help(
            "staged training: start from this earlier run folder (its adapter merged into a bf16 "
            "copy of the base, or its full model); this run (full or a new LoRA) continues from it"
        ),
    )

    def __post_init__(self) -> None:
        _choice(self.batching, BATCHING, "batching")
        if self.init_from is not None:
            self.init_from = check_init_from(self.init_from)
        if self.overwrite and self.resume:
            raise UserError("--overwrite and --resume exclude each other", field="resume")
        if self.eval_max_new_tokens < 1:
            raise UserError(
                f"must be at least 1, got {self.eval_max_new_tokens}", field="eval_max_new_tokens"
            )
        if self.early_stopping_patience < 0:
            raise UserError("must be 0 (off) or more", field="early_stopping_patience")
        for name in ("dev_eval_items", "max_train_items"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"must be at least 1, got {value}", field=name)
        if self.dev_file is not None:
            _existing(self.dev_file, "dev_file")
        if getattr(self, "task", None) is not None:
            task = get_task(self.task)
            task.prompt_spec(self.prompt)  # unknown variants fail here, before a model loads


@dataclass
class SFTArguments(CommonArguments):
    """What an SFT run needs beyond the trainer's fields."""

    task: str = field(default=DEFAULT_TASK, metadata=_help(f"the task: {', '.join(task_names())}"))
    train_file: str | None = field(
        default=None, metadata=_help("training data with gold outputs (official layout, JSON list or JSONL)")
    )
    target_style: str | None = field(
        default=None,
        metadata=_help(
            "how the completion is written (default: the task's first style; CCI: letter_text "
            "'A. <option>' or letter 'A')"
        ),
    )
    shuffle_options: bool = field(
        default=False,
        metadata=_help(
            "choice tasks: each item also appears with its options permuted (label moved): "
            "against position bias"
        ),
    )
    shuffle_copies: int = field(
        default=1, metadata=_help("with --shuffle_options: permuted copies per item (1-5)")
    )
    extra_train_files: list[str] | None = field(
        default=None,
        metadata=_help(
            "extra SFT records to mix in (JSONL from run/magpie.py or run/distill.py: 'messages' "
            "ending with the assistant turn, or 'prompt_messages' + 'completion')"
        ),
    )
    extra_train_ratio: float | None = field(
        default=None,
        metadata=_help("extra records per gold training example (e.g. 0.5: one for every two); default: all"),
    )
    completion_logits: bool = field(
        default=True,
        metadata=_help(
            "project only the completion positions onto the vocabulary (faster with long prompts); "
            "false: trl's fused LM head over every position"
        ),
    )
    objective: str = field(
        default="sft",
        metadata=_help(
            "sft (the answer written as text) or classification (choice tasks: a head with one "
            "output per option on the backbone, trained with cross-entropy on the gold option)"
        ),
    )
    category: str | None = field(
        default=None, metadata=_help("train on the items of this category only (one expert), e.g. 원인")
    )
    experts: str | None = field(
        default=None,
        metadata=_help(
            "train one expert per value of this item field in turn (CCI: category), each into "
            "<output_dir>/<value>/"
        ),
    )
    rules: str | None = field(
        default=None,
        metadata=_help(
            "competition rules to follow, e.g. 2025 (= 2025-가): refuses what they forbid (extra "
            "training files without external data) and prints a memory estimate against their "
            "VRAM limit"
        ),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        task = get_task(self.task)
        self.target_style = task.check_target_style(self.target_style)
        if self.objective not in task.objectives:
            raise UserError(
                f"task {task.name} cannot be trained with objective '{self.objective}'",
                field="objective",
                hint="one of " + ", ".join(task.objectives),
            )
        if (self.category is not None or self.experts is not None) and not task.route_keys:
            raise UserError(
                f"task {task.name} has no field to split experts by",
                field="experts" if self.experts else "category",
            )
        if self.experts is not None and self.experts not in task.route_keys:
            raise UserError(
                f"unknown expert field '{self.experts}'",
                field="experts",
                hint="one of " + ", ".join(task.route_keys),
            )
        if self.rules is not None:
            check_external_data(get_rules(self.rules), self.extra_train_files)
        if self.experts is not None and self.category is not None:
            raise UserError(
                "--experts trains every category; --category trains one",
                field="category",
                hint="pass one of them",
            )
        if self.shuffle_options and not task.has_options:
            raise UserError(f"task {task.name} has no options to shuffle", field="shuffle_options")
        if not self.train_file:
            raise UserError(
                "no training data given",
                field="train_file",
                hint="pass --train_file FILE or set 'train_file:' in the recipe",
            )
        _existing(self.train_file, "train_file")
        if not 1 <= self.shuffle_copies <= 5:
            raise UserError(f"must be 1 to 5, got {self.shuffle_copies}", field="shuffle_copies")
        for path in self.extra_train_files or []:
            _existing(path, "extra_train_files")
        if self.extra_train_ratio is not None and self.extra_train_ratio < 0:
            raise UserError(f"must be >= 0, got {self.extra_train_ratio}", field="extra_train_ratio")


@dataclass
class ORPOArguments(CommonArguments):
    """What a preference run (ORPO, DPO, SimPO, KTO) needs beyond the trainer's fields."""

    algorithm: str = field(
        default="orpo",
        metadata=_help("preference objective: orpo, dpo, simpo (trl's CPO with loss_type simpo) or kto"),
    )
    pairs: str | None = field(
        default=None, metadata=_help("preference pairs from orpo/build_pairs.py (JSONL)")
    )
    unpaired: str | None = field(
        default=None,
        metadata=_help(
            "kto: desirable/undesirable examples from orpo/build_unpaired.py (JSONL); default: "
            "the pairs unpaired (chosen desirable, rejected undesirable)"
        ),
    )
    dev_pairs: str | None = field(
        default=None,
        metadata=_help("held-out pairs for the eval loss and margins (default: built from --dev_file)"),
    )
    sft_adapter: str | None = field(
        default=None,
        metadata=_help(
            "start from this SFT run's adapter (a run folder or an adapter folder) and keep training it"
        ),
    )
    task: str | None = field(default=None, metadata=_help("task (default: the one in the pairs file)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.algorithm, ALGORITHMS, "algorithm")
        if self.unpaired is not None:
            if self.algorithm != "kto":
                raise UserError(
                    f"unpaired examples are for kto, not {self.algorithm}",
                    field="unpaired",
                    hint="pass --pairs FILE instead",
                )
            _existing(self.unpaired, "unpaired")
        if not self.pairs and self.unpaired is None:
            raise UserError(
                "no pairs given",
                field="pairs",
                hint="build them with orpo/build_pairs.py, then pass --pairs FILE",
            )
        if self.pairs:
            _existing(self.pairs, "pairs")
        if self.dev_pairs:
            _existing(self.dev_pairs, "dev_pairs")
        if self.sft_adapter:
            self.sft_adapter = str(find_adapter(self.sft_adapter, "sft_adapter"))


def check_init_from(path: str) -> str:
    """An earlier run folder to start from: it must hold a run file and weights."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(
            "run folder not found",
            file=path,
            field="init_from",
            hint="give the output_dir of an earlier training run",
        )
    run = read_run(p) if has_run_file(p) else None
    if run is None or (adapter_of(p, run) is None and weights_of(p, run) is None):
        raise UserError(
            "not a finished run folder (no malpyeong_run.json with an adapter or a model)",
            file=path,
            field="init_from",
            hint="did that run finish?",
        )
    return str(p)


def _choice(value: str, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + "one of " + ", ".join(allowed)
        raise UserError(f"unknown value '{value}'", field=name, hint=hint)


def _existing(path: str, name: str) -> None:
    require_file(path, field=name)


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
ORPO_DEFAULTS: dict[str, Any] = {
    **TRAINER_DEFAULTS,
    "learning_rate": 5e-6,
    "beta": 0.1,
    "num_train_epochs": 1.0,
}
ORPO_DEFAULTS.pop("max_length")  # ORPOConfig's own default (1024) applies


class RecipeParser:
    """trl's ``TrlParser`` convention, with user mistakes reported as one ``UserError`` line.

    One recipe fills three dataclasses: the script's (``script_cls``), the model's
    (``model_cls``, :class:`ModelArguments`) and the trainer's (``config_cls``); a key belongs to
    whichever declares it. ``--config recipe.yaml`` sets defaults; ``--key value`` flags override
    them. A recipe key that no dataclass knows, a value argparse cannot convert, or a combination
    a dataclass's ``__post_init__`` rejects is reported before any model is loaded.
    """

    def __init__(
        self, script_cls: type, config_cls: type, defaults: dict[str, Any], model_cls: type = ModelArguments
    ) -> None:
        from trl import TrlParser

        class _Parser(TrlParser):
            def error(self, message: str) -> None:  # argparse would print usage and exit(2)
                raise UserError(message.splitlines()[0], hint="--help lists every option")

        # the model's fields first: "no model given" is the first complaint, as when they were
        # the first fields of the script's dataclass
        self.parser = _Parser(
            (model_cls, script_cls, config_cls), formatter_class=argparse.RawDescriptionHelpFormatter
        )
        self.script_cls, self.model_cls, self.config_cls = script_cls, model_cls, config_cls
        # use_cpu on a machine without CUDA: several processes there then form a CPU (gloo) group
        self.parser.set_defaults(
            bf16=cuda_bf16(),
            dataloader_pin_memory=cuda_available(),
            use_cpu=not cuda_available(),
            **defaults,
        )
        self.defaults = defaults
        self.valid_keys = sorted({a.dest for a in self.parser._actions if a.dest != "help"})
        # our own keys (model and script), for hints and for "did you mean"
        self.script_keys = [f.name for cls in (model_cls, script_cls) for f in dataclasses.fields(cls)]
        self.options = {o for a in self.parser._actions for o in a.option_strings}
        self.description = ""

    def help(self) -> str:
        """``--help``: the script's usage examples as written, then our own options (recipe,
        model, run) with their defaults; the trainer's hundreds of fields only under
        ``--help-all``."""
        helper = argparse.ArgumentParser(
            prog=self.parser.prog,
            description=self.description,
            add_help=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            usage="%(prog)s --config RECIPE.yaml [--key value ...]",
            epilog=f"Every field of trl's {self.config_cls.__name__} (transformers' "
            "TrainingArguments: learning_rate, num_train_epochs, max_steps, "
            "per_device_train_batch_size, gradient_accumulation_steps, max_length, "
            "eval_strategy, save_steps, seed, ...) is also a recipe key and a --key value "
            "flag; --help-all lists them all. Defaults set by malpyeong's recipes: "
            + ", ".join(f"{k} {v}" for k, v in self.defaults.items())
            + ".",
        )
        g = helper.add_argument_group("the recipe")
        g.add_argument(
            "--config",
            metavar="RECIPE.yaml",
            help="the recipe (resource/configs/<task>/<backbone>_<method>.yaml); "
            "--key value flags override its values",
        )
        g.add_argument(
            "--list-models",
            action="store_true",
            help="print the backbone registry (family, chat format, quirks) and exit",
        )
        g.add_argument("-h", "--help", action="store_true", help="this help")
        g.add_argument("--help-all", action="store_true", help="also every trainer field (long)")
        g.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
        for cls, title in ((self.model_cls, "the model"), (self.script_cls, "the run")):
            group = helper.add_argument_group(f"{title} ({cls.__name__})")
            for f in dataclasses.fields(cls):
                default = self.defaults.get(
                    f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory()
                )
                group.add_argument(
                    f"--{f.name}",
                    metavar=f.name.upper(),
                    help=f"{f.metadata.get('help', '')} (default: {default})",
                )
        return helper.format_help()

    def nearest(self, key: str) -> str | None:
        """The closest valid key, our own fields first (lora_rank -> lora_r, not local_rank)."""
        close = difflib.get_close_matches(
            key, self.script_keys, n=1, cutoff=0.6
        ) or difflib.get_close_matches(key, self.valid_keys, n=1, cutoff=0.6)
        return close[0] if close else None

    def check_recipe(self, path: str) -> dict:
        """The recipe's mapping; one error naming every unknown key and the nearest valid one."""

        p = Path(path)
        if not p.exists():
            raise UserError("recipe not found", file=path, field="config")
        data = read_yaml(p, field="config")  # a key given twice is refused, not "the last wins"
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise UserError("a recipe must be a YAML mapping of key: value", file=path)
        unknown = [k for k in data if k not in self.valid_keys and k != "env"]
        if not unknown:
            for key, value in data.items():
                if key != "env":
                    problem = _value_problem(self.parser._option_string_actions[f"--{key}"], value)
                    if problem:
                        raise UserError(problem, file=path, field=key, hint="fix the value in the recipe")
        if unknown:
            parts = [
                f"'{key}'" + (f" (did you mean '{c}'?)" if (c := self.nearest(str(key))) else "")
                for key in unknown
            ]
            raise UserError(
                f"unknown recipe key(s) {', '.join(parts)}",
                file=path,
                hint=f"valid keys: {', '.join(self.script_keys)}, and every "
                f"{self.config_cls.__name__} field (--help lists them)",
            )
        return data

    def parse(self, argv: Sequence[str] | None) -> tuple[Any, ModelArguments, Any]:
        """``(script arguments, model arguments, trainer config)`` from ``argv`` (default:
        ``sys.argv[1:]``)."""
        args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--verbose"]
        if "--help-all" in args:
            print(self.parser.format_help())
            raise SystemExit(0)
        if "-h" in args or "--help" in args:
            print(self.help())
            raise SystemExit(0)
        unknown = [
            a.split("=", 1)[0]
            for a in args
            if a.startswith("--") and a.split("=", 1)[0] not in self.options | {"--config"}
        ]
        if unknown:
            names = [u[2:].replace("-", "_") for u in unknown]
            parts = [
                u + (f" (did you mean --{c}?)" if (c := self.nearest(n)) else "")
                for u, n in zip(unknown, names, strict=True)
            ]
            raise UserError(f"unknown option(s) {', '.join(parts)}", hint="--help lists every option")
        if "--config" in args:
            at = args.index("--config")
            if at + 1 >= len(args):
                raise UserError("--config needs a file", field="config")
            self.check_recipe(args[at + 1])
        try:
            model_args, script, config = self.parser.parse_args_and_config(args)
        except (ValueError, TypeError) as err:  # a trainer config's __post_init__ rejected a value
            raise UserError(f"invalid recipe value: {one_line(err, 300)}") from None
        check_values(script, model_args, config)
        return script, model_args, config


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value_problem(action: argparse.Action, value: Any) -> str | None:
    """What is wrong with a recipe (YAML) value for ``action``, or None.

    argparse converts and checks only string values, and a YAML ``8.5`` or ``0`` is not one:
    without this, ``lora_r: 8.5`` reaches peft and fails halfway through a run.
    """
    if value is None or isinstance(value, str):
        return None  # None: an optional field's "unset"; strings are converted by argparse
    values = value if isinstance(value, list) and action.nargs in ("+", "*") else [value]
    kind = action.type
    for v in values:
        if kind is int and not _is_whole(v):
            return f"must be a whole number, got {v!r}"
        if kind is float and not (_is_number(v) and math.isfinite(v)):
            return f"must be a finite number, got {v!r}"
        if getattr(kind, "__name__", "") == "string_to_bool" and not isinstance(v, bool):
            return f"must be true or false, got {v!r}"
    if isinstance(value, list) and action.nargs not in ("+", "*") and kind in (int, float):
        return f"must be a single number, got a list {value!r}"
    return None


# Trainer fields that must be positive (at least 1 for counts) when set: checked before any work.
POSITIVE_COUNTS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "logging_steps",
    "save_total_limit",
    "max_length",
    "eval_accumulation_steps",
)


def check_values(script: Any, model_args: ModelArguments, config: Any) -> None:
    """Values no dataclass checks but every run needs, in one line each, before any work: every
    number finite, counts at least 1, a training length that is not zero."""
    for args in (model_args, script, config):
        for f in dataclasses.fields(args):
            value = getattr(args, f.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"must be a finite number, got {value}", field=f.name)
    for name in POSITIVE_COUNTS:
        value = getattr(config, name, None)
        if _is_number(value) and value < 1:
            raise UserError(f"must be at least 1, got {value}", field=name)
    for name in ("eval_steps", "save_steps"):
        value = getattr(config, name, None)
        if _is_number(value) and value <= 0:
            raise UserError(f"must be positive, got {value}", field=name)
    for name in ("learning_rate", "weight_decay", "max_grad_norm", "warmup_steps"):
        value = getattr(config, name, None)
        if _is_number(value) and value < 0:
            raise UserError(f"must be 0 or more, got {value}", field=name)
    max_steps = getattr(config, "max_steps", -1)
    if max_steps == 0 or (_is_number(max_steps) and max_steps < -1):
        raise UserError(
            f"must be positive (or -1: train num_train_epochs), got {max_steps}",
            field="max_steps",
            hint="a run of 0 steps trains nothing",
        )
    if max_steps in (-1, None) and getattr(config, "num_train_epochs", 1) <= 0:
        raise UserError(
            f"must be positive, got {config.num_train_epochs}",
            field="num_train_epochs",
            hint="a run of 0 epochs trains nothing",
        )


def resolve_trainer_args(
    model_args: ModelArguments, config: Any, task: Task, *, has_dev: bool, task_metric: bool
) -> Any:
    """Fill what depends on the task and the data: output folder, best-checkpoint metric, eval.

    ``has_dev``: there is a dev set to evaluate (loss); ``task_metric``: the task's own metric is
    computed on it (otherwise the best checkpoint is the one with the lowest eval loss).
    """
    changes: dict[str, Any] = {}
    if config.output_dir in ("auto", None, "trainer_output"):
        short = Path(model_args.model.rstrip("/")).name or "model"
        changes["output_dir"] = str(Path("runs") / task.name / f"{short}_{model_args.method}")
    if config.metric_for_best_model in ("task", "eval_task"):
        metric = task.dev_metric if task_metric else "loss"
        changes["metric_for_best_model"] = metric
        changes["greater_is_better"] = task.metric(metric).higher_is_better if task_metric else False
    if not has_dev:
        changes.update(eval_strategy="no", load_best_model_at_end=False)
    if changes:
        config = dataclasses.replace(config, **changes)
    return config


def batching_changes(mode: str, attn_implementation: str, config: Any) -> dict[str, Any]:
    """Trainer settings for the batching ``mode``.

    Padding-free (every batch one flattened sequence) where the attention kernel handles
    sequence boundaries natively (flash attention); otherwise batches of similar length
    (``group_by_length``), which keeps padding low without putting all sequences in one
    attention matrix.
    """
    flash = attn_implementation.startswith("flash_attention")
    if mode == "auto":
        mode = "padding_free" if flash else "length"
    if mode == "padding_free":
        if not flash:
            log.warning(
                "padding-free batching without flash attention: correct (boundaries come "
                "from position ids) but attention spans the whole flattened batch"
            )
        # prompts are already fitted to max_length; trl refuses max_length with padding-free
        return {"padding_free": True, "max_length": None}
    if mode == "packing":
        return {"packing": True, "packing_strategy": "bfd"}
    if mode == "length":
        return {"train_sampling_strategy": "group_by_length"}
    return {}
