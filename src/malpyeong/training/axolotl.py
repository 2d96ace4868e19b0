"""Axolotl configs read as they are: their keys mapped to our recipe's.

``run/train.py --config axolotl.yaml`` and ``run/convert.py --from axolotl --to recipe`` share
this mapping. An Axolotl config is recognised by ``base_model`` (Axolotl's one required key; our
recipes say ``model``). Every key we understand becomes ours; every other key is listed with the
reason it is ignored (one Axolotl knows but we have no equivalent for, or one we do not know at
all); keys left without a value are listed as unset. Nothing is dropped silently. A key whose
meaning we would change (another adapter, preference training, two warmups) is an error. Where
the config leaves out a key whose Axolotl default differs from ours (epochs, micro-batch,
sequence length, best-checkpoint loading, early stopping), Axolotl's default is used and listed.

The mapping works on plain values and produces a plain mapping: the recipe parser then
validates it exactly like a recipe written by hand, so this module knows none of its internals.
Key names follow Axolotl's config reference (docs/config-reference.qmd of axolotl-ai-cloud/axolotl).
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from malpyeong.data import load_items
from malpyeong.errors import UserError, UserErrors
from malpyeong.io import read_yaml
from malpyeong.tasks import get_task, task_names

# Axolotl key -> our key, values carried over as they are.
SAME: dict[str, str] = {
    "base_model": "model",
    "sequence_len": "max_length",
    "micro_batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "num_epochs": "num_train_epochs",
    "max_steps": "max_steps",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "adam_beta1": "adam_beta1",
    "adam_beta2": "adam_beta2",
    "adam_epsilon": "adam_epsilon",
    "optim_args": "optim_args",
    "lr_scheduler_kwargs": "lr_scheduler_kwargs",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "seed": "seed",
    "data_seed": "data_seed",
    "output_dir": "output_dir",
    "logging_steps": "logging_steps",
    "eval_strategy": "eval_strategy",
    "save_strategy": "save_strategy",
    "save_total_limit": "save_total_limit",
    "load_best_model_at_end": "load_best_model_at_end",
    "metric_for_best_model": "metric_for_best_model",
    "greater_is_better": "greater_is_better",
    "early_stopping_patience": "early_stopping_patience",
    "trust_remote_code": "trust_remote_code",
    "gradient_checkpointing_kwargs": "gradient_checkpointing_kwargs",
    "neftune_noise_alpha": "neftune_noise_alpha",
    "tf32": "tf32",
    "save_safetensors": "save_safetensors",
    "save_only_model": "save_only_model",
    "auto_find_batch_size": "auto_find_batch_size",
    "dataloader_num_workers": "dataloader_num_workers",
    "dataloader_pin_memory": "dataloader_pin_memory",
    "dataloader_prefetch_factor": "dataloader_prefetch_factor",
    "dataloader_drop_last": "dataloader_drop_last",
    "ddp_timeout": "ddp_timeout",
    "ddp_bucket_cap_mb": "ddp_bucket_cap_mb",
    "ddp_find_unused_parameters": "ddp_find_unused_parameters",
    "ddp_broadcast_buffers": "ddp_broadcast_buffers",
    "eval_max_new_tokens": "eval_max_new_tokens",
}

# Axolotl keys we know and do not carry over, with the reason.
IGNORED: dict[str, str] = {
    "base_model_config": "the config is read from the model itself",
    "model_type": "the model class comes from its config.json",
    "tokenizer_type": "the tokenizer class comes from the model's files",
    "tokenizer_config": "the tokenizer is read from the model",
    "tokenizer_use_fast": "the fast tokenizer is always used",
    "tokenizer_legacy": "the tokenizer is read as the model ships it",
    "is_llama_derived_model": "the family comes from the backbone registry / config.json",
    "is_mistral_derived_model": "the family comes from the backbone registry / config.json",
    "is_qwen_derived_model": "the family comes from the backbone registry / config.json",
    "is_falcon_derived_model": "the family comes from the backbone registry / config.json",
    "strict": "an Axolotl CLI setting",
    "dataset_prepared_path": "examples are built in memory by the task",
    "dataset_processes": "examples are built in memory by the task",
    "pad_to_sequence_len": "batches are padded to their longest example, or padding-free",
    "eval_sample_packing": "evaluation batches follow --batching",
    "special_tokens": "the backbone registry sets the pad token; no tokens are added",
    "tokens": "no tokens are added to the tokenizer",
    "lora_model_dir": "to continue an adapter use orpo/train.py --sft_adapter",
    "lora_fan_in_fan_out": "peft sets it from the layer type",
    "lora_modules_to_save": "only LoRA adapters are trained",
    "peft_use_dora": "DoRA is not offered",
    "peft_use_rslora": "rsLoRA is not offered",
    "evals_per_epoch": "needs the step count; give eval_steps",
    "saves_per_epoch": "needs the step count; give save_steps",
    "resume_from_checkpoint": "pass --resume to continue the run folder's last checkpoint",
    "auto_resume_from_checkpoints": "pass --resume to continue the run folder's last checkpoint",
    "deepspeed": "launch under accelerate with resource/configs/accelerate/deepspeed_zero3.yaml",
    "fsdp": "launch under accelerate (resource/configs/accelerate/)",
    "fsdp_config": "launch under accelerate (resource/configs/accelerate/)",
    "local_rank": "set by the launcher",
    "world_size": "set by the launcher",
    "xformers_attention": "attention is sdpa, eager or flash attention",
    "s2_attention": "attention is sdpa, eager or flash attention",
    "flash_attn_cross_entropy": "an Axolotl kernel patch",
    "flash_attn_rms_norm": "an Axolotl kernel patch",
    "flash_attn_fuse_qkv": "an Axolotl kernel patch",
    "flash_attn_fuse_mlp": "an Axolotl kernel patch",
    "lora_mlp_kernel": "an Axolotl kernel patch",
    "lora_qkv_kernel": "an Axolotl kernel patch",
    "lora_o_kernel": "an Axolotl kernel patch",
    "low_cpu_mem_usage": "transformers' default loading is used",
    "hub_model_id": "nothing is pushed to the hub",
    "hub_strategy": "nothing is pushed to the hub",
    "push_dataset_to_hub": "nothing is pushed to the hub",
    "hf_use_auth_token": "the hub login of the environment is used",
    "eval_table_size": "a W&B table",
    "default_system_message": "the task writes the system turn",
    "debug": "an Axolotl CLI setting",
    "gc_steps": "an Axolotl callback",
    "loss_watchdog_threshold": "an Axolotl callback",
    "loss_watchdog_patience": "an Axolotl callback",
    "torchdistx_path": "not used",
    "gptq": "GPTQ bases are not offered",
    "unfrozen_parameters": "full fine-tuning trains every parameter",
    "remove_unused_columns": "the trainer's columns are ours",
}
for prefix_key in (
    "wandb_project",
    "wandb_entity",
    "wandb_watch",
    "wandb_name",
    "wandb_log_model",
    "wandb_run_id",
    "use_wandb",
    "mlflow_tracking_uri",
    "mlflow_experiment_name",
    "mlflow_run_name",
    "use_mlflow",
    "comet_api_key",
    "comet_workspace",
    "comet_project_name",
    "use_comet",
):
    IGNORED[prefix_key] = "runs log to TensorBoard (report_to)"

# Axolotl's documented defaults where ours differ, for keys the config leaves out: the run is
# the one Axolotl would make (our keys -> (Axolotl key, value)).
AXOLOTL_DEFAULTS: dict[str, tuple[str, Any]] = {
    "num_train_epochs": ("num_epochs", 1),
    "per_device_train_batch_size": ("micro_batch_size", 1),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", 1),
    "max_length": ("sequence_len", 512),
    "lora_dropout": ("lora_dropout", 0.0),
    "load_best_model_at_end": ("load_best_model_at_end", False),
    "early_stopping_patience": ("early_stopping_patience", 0),  # Axolotl: none
}
FIRST = ("model", "task", "method", "train_file", "dev_file", "extra_train_files", "output_dir", "max_length")
DATA_KEYS = ("datasets", "test_datasets", "val_set_size")  # see _data_files
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)
ADAPTERS = {"lora": "lora", "qlora": "qlora"}


@dataclass
class AxolotlMapping:
    """The recipe made from an Axolotl config, and what became of each of its keys."""

    recipe: dict[str, Any]
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (axolotl key, what it became)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (axolotl key, why)
    unset: list[str] = field(default_factory=list)  # keys given without a value
    defaults: list[tuple[str, Any]] = field(default_factory=list)  # Axolotl defaults applied

    def report(self) -> list[str]:
        lines = [
            f"mapped {len(self.mapped)} Axolotl key(s): " + ", ".join(f"{k} -> {v}" for k, v in self.mapped)
        ]
        if self.ignored:
            lines.append(
                f"ignored {len(self.ignored)} key(s): " + "; ".join(f"{k} ({why})" for k, why in self.ignored)
            )
        if self.unset:
            lines.append(f"{len(self.unset)} key(s) without a value: {', '.join(self.unset)}")
        if self.defaults:
            lines.append(
                "Axolotl's defaults for keys not given: " + ", ".join(f"{k} {v}" for k, v in self.defaults)
            )
        return lines


# Keys read by the mapping functions of _SPECIAL (besides SAME, IGNORED and DATA_KEYS).
SPECIAL_KEYS = (
    "adapter",
    "load_in_4bit",
    "load_in_8bit",
    "learning_rate",
    "lr_scheduler",
    "warmup_steps",
    "warmup_ratio",
    "optimizer",
    "lora_target_linear",
    "lora_target_modules",
    "bf16",
    "fp16",
    "bfloat16",
    "float16",
    "float32",
    "flash_attention",
    "sdp_attention",
    "eager_attention",
    "flex_attention",
    "sample_packing",
    "group_by_length",
    "gradient_checkpointing",
    "eval_steps",
    "save_steps",
    "train_on_inputs",
    "chat_template",
    "chat_template_jinja",
    "rl",
    "torch_compile",
)


def nearest_key(key: str) -> str | None:
    """The Axolotl key ``key`` is most likely a misspelling of (``lora_rr`` -> ``lora_r``)."""
    known = [*SAME, *IGNORED, *DATA_KEYS, *SPECIAL_KEYS]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.88)
    return close[0] if close else None


def is_axolotl(data: Any) -> bool:
    """An Axolotl config: a mapping with ``base_model`` and without our ``model``."""
    return isinstance(data, dict) and "base_model" in data and "model" not in data


def read_config(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise UserError("config not found", file=str(path), field="config")
    return read_yaml(p, field="config")


def _dataset_path(entry: Any, where: str, base: Path) -> tuple[str, str | None]:
    """(local file, Axolotl dataset type) of one ``datasets`` / ``test_datasets`` entry."""
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict) or not entry.get("path"):
        raise UserError("a dataset entry needs a 'path'", field=where)
    path = str(entry["path"])
    files = entry.get("data_files")
    if files:
        path = str(Path(path) / (files[0] if isinstance(files, list) else files))
    for candidate in (Path(path), base / path):
        if candidate.is_file():
            return str(candidate), entry.get("type")
    raise UserError(
        f"'{path}' is not a local file",
        field=where,
        hint="our trainer reads local files in the task's layout; download the "
        "dataset and point 'path' at the file",
    )


def infer_task(path: str) -> str:
    """The one registered task whose parser accepts every item of ``path`` (with gold outputs)."""
    fits = []
    for name in task_names():
        try:
            load_items(path, get_task(name), require_output=True)
        except (UserError, UserErrors):
            continue
        fits.append(name)
    if len(fits) != 1:
        found = f"it fits {', '.join(fits)}" if fits else "no task reads it"
        raise UserError(
            f"cannot tell the task of the training data: {found}",
            file=path,
            field="task",
            hint=f"pass --task ({', '.join(task_names())})",
        )
    return fits[0]


def to_recipe(
    data: dict, *, source: str | Path = "", task: str | None = None, train_file: str | None = None
) -> AxolotlMapping:
    """Our recipe from an Axolotl config mapping (``task`` and ``train_file``, when given, are the
    command line's; otherwise the training file comes from ``datasets`` and the task from it)."""
    if not is_axolotl(data):
        raise UserError("not an Axolotl config (no 'base_model')", file=str(source))
    m = AxolotlMapping(recipe={})
    handled: set[str] = set()

    def put(key: str, values: dict[str, Any], shown: str | None = None) -> None:
        """Axolotl ``key`` became our ``values``."""
        m.recipe.update(values)
        m.mapped.append((key, shown or ", ".join(values)))
        handled.add(key)

    def drop(key: str, why: str) -> None:
        m.ignored.append((key, why))
        handled.add(key)

    given = {str(k): v for k, v in data.items() if v is not None}
    m.unset = [str(k) for k, v in data.items() if v is None]
    known = {*SAME, *IGNORED, *DATA_KEYS, *SPECIAL_KEYS}
    typos = [(k, close) for k in given if k not in known and (close := nearest_key(k))]
    if typos:  # a misspelt key would be ignored and its setting silently left at the default
        raise UserError(
            "unknown key(s): " + ", ".join(f"'{k}' (did you mean '{c}'?)" for k, c in typos),
            file=str(source) or None,
            hint="fix the spelling; keys Axolotl has and we do not map are ignored with a note",
        )
    try:
        for special in _SPECIAL:
            special(given, put, drop)
        for key, value in given.items():
            if key in handled or key in DATA_KEYS:
                continue
            if key in SAME:
                put(key, {SAME[key]: value})
            elif key in IGNORED:
                drop(key, IGNORED[key])
            else:
                drop(key, "not an Axolotl key we know")
        base = Path(source).parent if source else Path(".")
        _data_files(given, m, put, drop, base, task, train_file)
        for ours, (key, value) in AXOLOTL_DEFAULTS.items():
            if ours not in m.recipe and (ours != "lora_dropout" or m.recipe["method"] != "full"):
                m.recipe[ours] = value
                m.defaults.append((key, value))
        first = [k for k in FIRST if k in m.recipe]  # the recipe reads like ours: model first
        m.recipe = {
            **{k: m.recipe[k] for k in first},
            **{k: v for k, v in m.recipe.items() if k not in first},
        }
    except UserError as err:
        err.file = err.file or (str(source) if source else None)
        raise UserError(err.problem, file=err.file, item=err.item, field=err.field, hint=err.hint) from None
    return m


# ----- keys that need more than a rename --------------------------------------------------------

Put = Callable[..., None]
Drop = Callable[[str, str], None]


def _method(given: dict, put: Put, drop: Drop) -> None:
    """adapter + load_in_4bit / load_in_8bit -> method (full without an adapter, as Axolotl)."""
    adapter, four = given.get("adapter"), bool(given.get("load_in_4bit"))
    if adapter is not None and adapter not in ADAPTERS:
        raise UserError(
            f"adapter '{adapter}' is not offered",
            field="adapter",
            hint="lora, qlora, or leave it out for full fine-tuning",
        )
    if adapter is None and four:
        raise UserError(
            "load_in_4bit without an adapter",
            field="load_in_4bit",
            hint="adapter: qlora (a 4-bit base trains LoRA adapters only)",
        )
    method = "full" if adapter is None else ("qlora" if adapter == "qlora" or four else "lora")
    if "adapter" in given:
        put("adapter", {"method": method}, f"method: {method}")
    else:
        put("(no adapter)", {"method": "full"}, "method: full")
    if "load_in_4bit" in given:
        put(
            "load_in_4bit",
            {"method": method},
            f"method: {method}" + ("" if four else " (false: no 4-bit base)"),
        )
    if given.get("load_in_8bit"):
        drop(
            "load_in_8bit",
            "8-bit bases are not offered: "
            + ("4-bit QLoRA is used" if method == "qlora" else "the base loads in bf16/fp32"),
        )
    elif "load_in_8bit" in given:
        drop("load_in_8bit", "false: nothing to change")


def _learning_rate(given: dict, put: Put, drop: Drop) -> None:
    if "learning_rate" not in given:
        raise UserError("no learning_rate (Axolotl requires one)", field="learning_rate")
    if "learning_rate" in given:
        try:  # Axolotl takes a string too ("2e-5")
            put("learning_rate", {"learning_rate": float(given["learning_rate"])})
        except (TypeError, ValueError):
            raise UserError(f"not a number: {given['learning_rate']!r}", field="learning_rate") from None


def _scheduler(given: dict, put: Put, drop: Drop) -> None:
    value = given.get("lr_scheduler")
    if value in SCHEDULERS:
        put("lr_scheduler", {"lr_scheduler_type": value})
    elif value is not None:
        drop("lr_scheduler", f"'{value}' is an Axolotl schedule; our default (cosine) is used")


def _warmup(given: dict, put: Put, drop: Drop) -> None:
    if "warmup_steps" in given and "warmup_ratio" in given:
        raise UserError(
            "warmup_steps and warmup_ratio exclude each other (as in Axolotl)", field="warmup_ratio"
        )
    if "warmup_steps" in given:
        put("warmup_steps", {"warmup_steps": int(given["warmup_steps"])})
    if "warmup_ratio" in given:  # transformers reads a warmup_steps below 1 as a ratio
        ratio = float(given["warmup_ratio"])
        if not 0 <= ratio < 1:
            raise UserError(f"must be in [0, 1), got {ratio}", field="warmup_ratio")
        put("warmup_ratio", {"warmup_steps": ratio}, "warmup_steps (as a ratio)")


def _optimizer(given: dict, put: Put, drop: Drop) -> None:
    value = given.get("optimizer")
    if value is None:
        return
    from transformers.training_args import OptimizerNames

    if value in {o.value for o in OptimizerNames}:
        put("optimizer", {"optim": value}, "optim")
    else:
        drop("optimizer", f"'{value}' is not a transformers optimizer; the default is used")


def _lora_targets(given: dict, put: Put, drop: Drop) -> None:
    linear, modules = given.get("lora_target_linear"), given.get("lora_target_modules")
    if linear:
        put(
            "lora_target_linear", {"lora_target_modules": ["all-linear"]}, "lora_target_modules: [all-linear]"
        )
        if modules:
            drop("lora_target_modules", "lora_target_linear covers every linear layer")
    elif modules:
        put(
            "lora_target_modules",
            {"lora_target_modules": [modules] if isinstance(modules, str) else list(modules)},
        )
    if "lora_target_linear" in given and not linear:
        drop("lora_target_linear", "false: lora_target_modules, or our default (all-linear)")


def _precision(given: dict, put: Put, drop: Drop) -> None:
    """bf16 / fp16 (mixed precision, weights loaded in that dtype as Axolotl does) and
    bfloat16 / float16 / float32 (weights only, no mixed precision)."""
    bf16, fp16 = given.get("bf16"), given.get("fp16")
    if bf16 in (True, "full"):
        put("bf16", {"bf16": True, "dtype": "bf16"}, "bf16: true, dtype: bf16")
    elif bf16 == "auto":
        drop("bf16", "auto: our default (bf16 where the GPU has it)")
    elif "bf16" in given:
        put("bf16", {"bf16": False}, "bf16: false")
    if fp16:
        put("fp16", {"fp16": True, "dtype": "fp16"}, "fp16: true, dtype: fp16")
    elif "fp16" in given:
        put("fp16", {"fp16": False}, "fp16: false")
    for key, dtype in (("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "fp32")):
        if given.get(key):
            put(key, {"dtype": dtype}, f"dtype: {dtype}")
        elif key in given:
            drop(key, "false: nothing to change")


def _attention(given: dict, put: Put, drop: Drop) -> None:
    for key, kernel in (
        ("flash_attention", "flash_attention_2"),
        ("sdp_attention", "sdpa"),
        ("eager_attention", "eager"),
        ("flex_attention", "flex_attention"),
    ):
        if given.get(key):
            put(key, {"attn_implementation": kernel}, f"attn_implementation: {kernel}")
        elif key in given:
            drop(key, "false: the backbone's attention is used")


def _batching(given: dict, put: Put, drop: Drop) -> None:
    packing, grouped = given.get("sample_packing"), given.get("group_by_length")
    if packing:
        put("sample_packing", {"batching": "packing"}, "batching: packing")
    elif "sample_packing" in given:
        drop(
            "sample_packing",
            "false: our default batching (padding-free with flash attention, else length-grouped)",
        )
    if grouped and not packing:
        put("group_by_length", {"batching": "length"}, "batching: length")
    elif "group_by_length" in given:
        drop("group_by_length", "sample_packing decides" if grouped else "false: our default batching")


def _checkpointing(given: dict, put: Put, drop: Drop) -> None:
    value = given.get("gradient_checkpointing")
    if isinstance(value, bool):
        put("gradient_checkpointing", {"gradient_checkpointing": value})
    elif value is not None:
        drop("gradient_checkpointing", f"'{value}' (offloading) is not offered; give true or false")


def _steps(given: dict, put: Put, drop: Drop) -> None:
    """eval_steps / save_steps: evaluate and save every N steps. When only one is given the other
    follows it, so the best checkpoint can still be kept (that needs both on one schedule)."""
    ev, sv = given.get("eval_steps"), given.get("save_steps")
    if ev is not None:
        values = {"eval_strategy": "steps", "eval_steps": ev}
        if sv is None:
            values.update(save_strategy="steps", save_steps=ev)
        put(
            "eval_steps",
            values,
            "eval_strategy: steps, eval_steps" + ("" if sv is not None else " (save_steps follows it)"),
        )
    if sv is not None:
        values = {"save_strategy": "steps", "save_steps": sv}
        if ev is None:
            values.update(eval_strategy="steps", eval_steps=sv)
        put(
            "save_steps",
            values,
            "save_strategy: steps, save_steps" + ("" if ev is not None else " (eval_steps follows it)"),
        )


def _loss_and_template(given: dict, put: Put, drop: Drop) -> None:
    if "train_on_inputs" in given:
        drop(
            "train_on_inputs",
            "the loss is on the completion only (as false)"
            if not given["train_on_inputs"]
            else "true is not offered: the loss is on the completion only",
        )
    template = given.get("chat_template")
    if template is not None:
        drop(
            "chat_template",
            "tokenizer_default: the model's own, as ours"
            if template == "tokenizer_default"
            else f"'{template}': the model's tokenizer and the backbone registry give the format",
        )
    if "chat_template_jinja" in given:
        drop("chat_template_jinja", "the model's tokenizer gives the template")
    if given.get("rl"):
        raise UserError(
            f"rl: {given['rl']} is preference training",
            field="rl",
            hint="this maps supervised fine-tuning configs; use orpo/train.py",
        )
    if "rl" in given:
        drop("rl", "false: supervised fine-tuning")
    if isinstance(given.get("torch_compile"), bool):
        put("torch_compile", {"torch_compile": given["torch_compile"]})
    elif "torch_compile" in given:
        drop("torch_compile", f"'{given['torch_compile']}': give true or false")


_SPECIAL = [
    _method,
    _learning_rate,
    _scheduler,
    _warmup,
    _optimizer,
    _lora_targets,
    _precision,
    _attention,
    _batching,
    _checkpointing,
    _steps,
    _loss_and_template,
]


def _data_files(
    given: dict, m: AxolotlMapping, put: Put, drop: Drop, base: Path, task: str | None, train_file: str | None
) -> None:
    """datasets -> train_file (+ chat records -> extra_train_files); test_datasets -> dev_file;
    val_set_size; the task, told from the training file when not given."""
    datasets = given.get("datasets") or []
    if isinstance(datasets, (str, dict)):
        datasets = [datasets]
    extra = []
    for i, entry in enumerate(datasets):
        path, kind = _dataset_path(entry, f"datasets[{i}]", base)
        if i == 0:
            if not train_file:
                put("datasets", {"train_file": path}, f"train_file: {path}")
            else:
                drop("datasets", f"--train_file {train_file} given")
            if kind:
                drop("datasets[0].type", f"'{kind}': the task builds the prompts from the official layout")
        elif kind == "chat_template":  # records with "messages", as run/magpie.py writes
            extra.append(path)
        else:
            drop(
                f"datasets[{i}]",
                f"type '{kind}': only chat records (type chat_template, a 'messages' list) are mixed in",
            )
    if extra:
        put("datasets[1:]", {"extra_train_files": extra}, f"extra_train_files: {', '.join(extra)}")
    tests = given.get("test_datasets") or []
    if isinstance(tests, (str, dict)):
        tests = [tests]
    if tests:
        path, _ = _dataset_path(tests[0], "test_datasets[0]", base)
        put("test_datasets", {"dev_file": path}, f"dev_file: {path}")
        for i in range(1, len(tests)):
            drop(f"test_datasets[{i}]", "one dev file is evaluated")
    size = given.get("val_set_size")
    if size is not None:
        drop(
            "val_set_size",
            "0: no split, as ours"
            if not size
            else "a split of the training file is not offered: give a dev file (test_datasets)",
        )
    train = train_file or m.recipe.get("train_file")
    if task:
        m.recipe["task"] = task
    elif train:
        m.recipe["task"] = infer_task(train)
        m.mapped.append(("(the training data)", f"task: {m.recipe['task']}"))


def _flag(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` on a command line."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@contextmanager
def recipe_argv(argv: Sequence[str], echo: Callable[[str], None] = print) -> Iterator[list[str]]:
    """``argv`` with ``--config`` pointing at our recipe made from an Axolotl config (a temporary
    file, removed afterwards), after printing what became of each key; ``argv`` unchanged when
    the config is not an Axolotl one. ``--task`` and ``--train_file`` on the command line are
    used for the mapping too (flags still override the recipe, as always)."""
    argv = list(argv)
    path = _flag(argv, "--config")
    try:
        data = read_config(path) if path else None
    except UserError:
        data = None  # the recipe parser reports a missing or broken file in its own words
    if not is_axolotl(data):
        yield argv
        return
    m = to_recipe(data, source=path, task=_flag(argv, "--task"), train_file=_flag(argv, "--train_file"))
    echo(f"{path}: an Axolotl config, read as our recipe")
    for line in m.report():
        echo(f"  {line}")
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(m.recipe, allow_unicode=True, sort_keys=False), encoding="utf-8")
        out = []
        for arg in argv:
            if arg.startswith("--config="):
                arg = f"--config={recipe}"
            out.append(str(recipe) if arg == path and out and out[-1] == "--config" else arg)
        yield out


__all__ = [
    "IGNORED",
    "SAME",
    "AxolotlMapping",
    "infer_task",
    "is_axolotl",
    "read_config",
    "recipe_argv",
    "to_recipe",
]
