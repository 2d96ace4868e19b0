"""The run folder (``output_dir``): checked before any work, replaced only when the new run is
about to write, locked while training, written by the main process only::

    config.json  *.safetensors  tokenizer*   full fine-tuning, or --merge: the full model at the
                           folder's root, so from_pretrained(folder) and vLLM read it as it is
    adapter/               the trained LoRA adapter (lora, qlora), with the tokenizer
    config.yaml            the resolved recipe (every field; reusable with --config)
    dev_metrics.json       the task metric at each evaluation, the best one and its full report
    data_stats.json        examples built, prompts cut by the length budget, prompts over budget
    malpyeong_run.json     what a loader needs: base model, method, adapter/merged dirs, task,
                           prompt, max_length, target_style (written when the run starts, so a
                           checkpoint is usable with the run's prompt before the end)
    runs/                  TensorBoard logs;  checkpoint-*/  trainer checkpoints (--resume)
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError, one_line
from malpyeong.io import (
    atomic_write_json,
    atomic_write_text,
    check_distinct,
    check_folder_writable,
    current_umask,
    exclusive,
)
from malpyeong.models.backbones import Backbone
from malpyeong.models.runfolder import (
    ADAPTER_DIR,
    CONFIG_FILE,
    DEV_METRICS,
    TRAINER_STATE,
    WEIGHTS_DIR,
    checkpoint_step,
    complete_checkpoints,
    is_run_folder,
    write_run,
)
from malpyeong.models.runfolder import run_info as make_run_info
from malpyeong.tasks.base import Task
from malpyeong.training.evaluation import TaskEvaluator
from malpyeong.training.models import merge_adapter
from malpyeong.training.recipe import CommonArguments, ModelArguments

log = logging.getLogger(__name__)


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


@contextmanager
def open_run_folder(path: str | os.PathLike, *, overwrite: bool, resume: bool) -> Iterator[Path]:
    """:func:`prepare_output_dir` in the main process, which then holds the folder's lock for
    the block (a second run into the same folder stops with one line); the other ranks wait."""
    out = Path(path)
    if not main_process():
        wait_for_everyone()
        yield out
        return
    try:
        prepare_output_dir(out, overwrite=overwrite, resume=resume)
    finally:
        wait_for_everyone()
    with exclusive(out, "run folder"):
        yield out


def resume_checkpoint(out: Path) -> Path:
    """The last complete checkpoint to resume from; newer ones left half-written by an
    interruption (kill -9 while saving) are removed, so training saves them again."""
    complete, incomplete = complete_checkpoints(out)
    if not complete:
        raise UserError(
            "nothing to resume: no complete checkpoint-* in the run folder",
            file=str(out),
            hint="drop --resume (with --overwrite) to start again",
        )
    last = complete[-1]
    newer = [c for c in incomplete if checkpoint_step(c) > checkpoint_step(last)]
    if newer and main_process():
        log.warning(
            "resuming from %s: %s was cut short while saving (no readable %s) and is removed",
            last.name,
            ", ".join(c.name for c in newer),
            TRAINER_STATE,
        )
        for c in newer:
            shutil.rmtree(c)
    return last


def check_run_folder(
    path: str | os.PathLike, *, overwrite: bool, resume: bool, inputs: Sequence[tuple[str, str | None]] = ()
) -> Path:
    """Everything about the run folder that can be refused, checked before any work and without
    touching the disk: what is there, --overwrite/--resume, writable, not holding an input, not
    in use by another run."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(
            "is a file, not a folder", file=str(out), field="output_dir", hint="choose another --output_dir"
        )
    check_distinct([("--output_dir", out)], inputs, folders=["--output_dir"])
    if resume:
        if not out.is_dir() or not complete_checkpoints(out)[0]:
            raise UserError(
                "nothing to resume: no complete checkpoint-* in the run folder",
                file=str(out),
                hint="drop --resume to start a new run",
            )
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                "run folder exists",
                file=str(out),
                hint="pass --overwrite to replace it or --resume to continue it",
            )
        if not is_run_folder(out):
            raise UserError(
                "refusing to delete a folder that is not a malpyeong run folder",
                file=str(out),
                hint="choose another --output_dir",
            )
    check_folder_writable(out, what=str(out))
    if out.is_dir():
        with exclusive(out, "run folder"):
            pass
    return out


def run_inputs(script: CommonArguments, model_args: ModelArguments) -> list[tuple[str, str]]:
    """The files (and local model folder) a run reads: none may lie in the run folder it
    replaces."""
    named = [("--model", model_args.model)]
    for key in ("train_file", "dev_file", "pairs", "dev_pairs", "sft_adapter"):
        named.append((f"--{key}", getattr(script, key, None)))
    named += [("--extra_train_files", f) for f in getattr(script, "extra_train_files", None) or ()]
    return [(n, v) for n, v in named if v and Path(v).exists()]


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool, resume: bool) -> Path:
    """Create the run folder; refuse an existing one unless --overwrite or --resume says how.
    With --overwrite the old run is removed here, when the new run is about to write."""
    out = check_run_folder(path, overwrite=overwrite, resume=resume)
    if resume:
        return out
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o777 & ~current_umask())
    return out


# Recipe keys that may differ when a run is resumed: how long it trains and what it logs. Any
# other change (LoRA rank, learning rate, data, prompt, ...) would not continue the same run:
# it crashes loading the checkpoint, or silently trains a different one.
RESUMABLE = {
    "max_steps",
    "num_train_epochs",
    "merge",
    "resume",
    "overwrite",
    "logging_steps",
    "output_dir",  # a run folder may have been moved or copied
    "logging_dir",
    "logging_first_step",
    "report_to",
    "disable_tqdm",
    "run_name",
    "save_total_limit",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "early_stopping_patience",
    "early_stopping_threshold",
    "eval_steps",
    "save_steps",
    "eval_strategy",
    "save_strategy",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "hub_private_repo",
    "include_num_input_tokens_seen",
    "dev_eval_items",
    "eval_max_new_tokens",
    "per_device_eval_batch_size",
}


def check_resume(out: Path, script: CommonArguments, model_args: ModelArguments, config: Any) -> None:
    """--resume continues the run as recorded in its config.yaml: a changed hyperparameter is
    refused, naming the key (config.yaml is left as it is)."""
    import yaml

    path = out / CONFIG_FILE
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(
            f"cannot read the run's recipe: {one_line(err, 200)}",
            file=str(path),
            hint="resume needs the config.yaml the run wrote",
        ) from None
    new = yaml.safe_load(yaml.safe_dump(resolved_config(script, model_args, config), allow_unicode=True))
    changed = [k for k in old if k in new and k not in RESUMABLE and old[k] != new[k]]
    if changed:
        key = changed[0]
        more = f" (and {len(changed) - 1} more: {', '.join(changed[1:])})" if len(changed) > 1 else ""
        raise UserError(
            f"--resume with a changed hyperparameter: {key} was {old[key]!r}, now {new[key]!r}{more}",
            file=str(path),
            field=key,
            hint=f"resume with --config {path} --resume, or start a new run with another --output_dir",
        )


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


def resolved_config(script: CommonArguments, model_args: ModelArguments, config: Any) -> dict:
    """Every field of the run's three dataclasses, in a form ``--config`` accepts back."""
    out: dict[str, Any] = {}
    for args in (model_args, script):
        for f in dataclasses.fields(args):
            out[f.name] = _plain(getattr(args, f.name))
    for key, value in config.to_dict().items():
        if key in ("overwrite", "resume", "merge") or key.startswith("_") or key.endswith("_token"):
            continue
        if value == "<HUB_TOKEN>" or (
            isinstance(value, str) and value.startswith("<") and value.endswith(">")
        ):
            continue
        out.setdefault(key, _plain(value))
    for key in ("overwrite", "resume"):
        out[key] = False
    return out


def write_config(out: Path, script: CommonArguments, model_args: ModelArguments, config: Any) -> None:
    import yaml

    atomic_write_text(
        out / CONFIG_FILE,
        yaml.safe_dump(resolved_config(script, model_args, config), allow_unicode=True, sort_keys=False),
    )


def run_info(
    script: CommonArguments,
    model_args: ModelArguments,
    task: Task,
    max_length: int | None,
    *,
    stage: str,
    target_style: str | None,
    merged: bool,
) -> dict:
    """The run file of a training run (see :mod:`malpyeong.models.runfolder`)."""
    full = model_args.method == "full"
    return make_run_info(
        model_args.model,
        model_args.method,
        adapter_dir=None if full else ADAPTER_DIR,
        merged_dir=WEIGHTS_DIR if full or merged else None,
        task=task.name,
        prompt=str(task.prompt_spec(script.prompt)),
        max_length=max_length,
        target_style=target_style,
        stage=stage,
    )


def write_dev_metrics(out: Path, evaluator: TaskEvaluator | None, trainer: Any) -> dict:
    """History of dev evaluations, the best one and its full report (e.g. CCI by category)."""
    data: dict[str, Any] = {
        "metric": None,
        "best": None,
        "best_step": None,
        "history": [],
        "best_report": None,
    }
    if evaluator is not None and evaluator.history:
        key = f"eval_{evaluator.metric}"
        best = max(range(len(evaluator.history)), key=lambda i: evaluator.history[i].get(key, -math.inf))
        data.update(
            metric=evaluator.metric,
            best=evaluator.history[best].get(key),
            best_step=evaluator.history[best]["step"],
            history=evaluator.history,
            best_report=evaluator.reports[best] if best < len(evaluator.reports) else None,
        )
    else:
        data["history"] = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    atomic_write_json(out / DEV_METRICS, data)
    return data


def dev_summary(out: Path) -> str | None:
    """One line on how the dev metric moved over the run's evaluations (from dev_metrics.json)."""
    try:
        data = json.loads((out / DEV_METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    metric = data.get("metric")
    key = f"eval_{metric}"
    values = [h[key] for h in data.get("history") or [] if isinstance(h.get(key), (int, float))]
    if not metric or not values:
        return None
    shown = values if len(values) <= 12 else values[:5] + ["..."] + values[-5:]
    return (
        f"dev {metric} by evaluation: "
        + " -> ".join(v if isinstance(v, str) else f"{v:.4f}" for v in shown)
        + f" (best {data['best']:.4f} at step {data['best_step']})"
    )


def save_run(
    trainer: Any,
    tokenizer: Any,
    out: Path,
    script: CommonArguments,
    model_args: ModelArguments,
    task: Task,
    max_length: int | None,
    *,
    stage: str,
    target_style: str | None,
    backbone: Backbone,
) -> dict:
    """Save the final (best) weights and the loader contract; merge if asked. A full model
    (full fine-tuning, --merge) is written at the run folder's root, as a model folder."""
    full = model_args.method == "full"
    weights = out if full else out / ADAPTER_DIR
    trainer.save_model(str(weights))  # every rank: ZeRO-3 gathers the shards here
    info = run_info(
        script,
        model_args,
        task,
        max_length,
        stage=stage,
        target_style=target_style,
        merged=script.merge and not full,
    )
    if not main_process():
        return info
    tokenizer.save_pretrained(str(weights))
    merged = False
    if script.merge and not full:
        trainer.model = None
        gc.collect()
        merge_adapter(
            model_args.model, weights, out, backbone=backbone, dtype=model_args.dtype, tokenizer=tokenizer
        )
        merged = True
    info = run_info(
        script, model_args, task, max_length, stage=stage, target_style=target_style, merged=merged
    )
    write_run(out, info)
    return info
