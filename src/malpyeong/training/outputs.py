"""The run folder (``output_dir``): created safely, written by the main process only::

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
import gc
import math
import os
import shutil
from pathlib import Path
from typing import Any

from malpyeong.backbones import Backbone
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json, atomic_write_text
from malpyeong.runfolder import ADAPTER_DIR, MERGED_DIR, MODEL_DIR, is_run_folder, write_run
from malpyeong.runfolder import run_info as make_run_info
from malpyeong.tasks.base import Task
from malpyeong.training.evaluation import TaskEvaluator
from malpyeong.training.models import merge_adapter
from malpyeong.training.recipe import CommonArguments, ModelArguments


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
        if not is_run_folder(out):
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


def resolved_config(script: CommonArguments, model_args: ModelArguments, config: Any) -> dict:
    """Every field of the run's three dataclasses, in a form ``--config`` accepts back."""
    out: dict[str, Any] = {}
    for args in (model_args, script):
        for f in dataclasses.fields(args):
            out[f.name] = _plain(getattr(args, f.name))
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


def write_config(out: Path, script: CommonArguments, model_args: ModelArguments,
                 config: Any) -> None:
    import yaml

    atomic_write_text(out / "config.yaml",
                      yaml.safe_dump(resolved_config(script, model_args, config),
                                     allow_unicode=True, sort_keys=False))


def run_info(script: CommonArguments, model_args: ModelArguments, task: Task,
             max_length: int | None, *, stage: str, target_style: str | None,
             merged: bool) -> dict:
    """The run file of a training run (see :mod:`malpyeong.runfolder`)."""
    full = model_args.method == "full"
    return make_run_info(
        model_args.model, model_args.method, adapter_dir=None if full else ADAPTER_DIR,
        merged_dir=MODEL_DIR if full else (MERGED_DIR if merged else None), task=task.name,
        prompt=str(task.prompt_spec(script.prompt)), max_length=max_length,
        target_style=target_style, stage=stage)


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


def save_run(trainer: Any, tokenizer: Any, out: Path, script: CommonArguments,
             model_args: ModelArguments, task: Task, max_length: int | None, *, stage: str,
             target_style: str | None, backbone: Backbone) -> dict:
    """Save the final (best) weights and the loader contract; merge if asked."""
    full = model_args.method == "full"
    weights = out / (MODEL_DIR if full else ADAPTER_DIR)
    trainer.save_model(str(weights))  # every rank: ZeRO-3 gathers the shards here
    info = run_info(script, model_args, task, max_length, stage=stage, target_style=target_style,
                    merged=script.merge and not full)
    if not main_process():
        return info
    tokenizer.save_pretrained(str(weights))
    merged = False
    if script.merge and not full:
        trainer.model = None
        gc.collect()
        merge_adapter(model_args.model, weights, out / MERGED_DIR, backbone=backbone,
                      dtype=model_args.dtype, tokenizer=tokenizer)
        merged = True
    info = run_info(script, model_args, task, max_length, stage=stage, target_style=target_style,
                    merged=merged)
    write_run(out, info)
    return info
