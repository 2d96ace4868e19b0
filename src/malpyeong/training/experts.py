"""What run/train.py runs: one model (SFT or a classification head, by the recipe's
``objective``), or one expert per category in turn (``experts: category``).

Experts go to ``<output_dir>/<value>/`` (each a complete run folder, trained on that value's
items only; evaluated on that value's dev items) and are listed in ``<output_dir>/experts.json``
as each finishes, so ``run/test.py --route`` can use the finished ones and ``--resume`` skips
them.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.inference.classifier import OBJECTIVE
from malpyeong.inference.routing import route_key, route_values
from malpyeong.models.runfolder import EXPERTS_FILE, checkpoints, is_finished_run, write_experts
from malpyeong.tasks import get_task
from malpyeong.training.classification import train_classification
from malpyeong.training.outputs import main_process
from malpyeong.training.recipe import ModelArguments, SFTArguments, resolve_trainer_args
from malpyeong.training.sft import train_sft

log = logging.getLogger(__name__)


def train_run(script: SFTArguments, model_args: ModelArguments, config: Any) -> Path:
    """One training run: SFT, or a classification head (``objective: classification``)."""
    if script.objective == OBJECTIVE:
        return train_classification(script, model_args, config)
    return train_sft(script, model_args, config)


def train_experts(script: SFTArguments, model_args: ModelArguments, config: Any) -> tuple[Path, list[str]]:
    """Train one expert per value of ``script.experts``; the parent folder and the values."""
    task = get_task(script.task)
    key = route_key(task, script.experts)
    if key != route_key(task):
        raise UserError(f"experts by '{key}' are not supported; use '{route_key(task)}'", field="experts")
    parent = Path(
        resolve_trainer_args(
            model_args, config, task, has_dev=bool(script.dev_file), task_metric=bool(script.dev_file)
        ).output_dir
    )
    if parent.exists() and any(parent.iterdir()) and not script.resume:
        if not script.overwrite:
            raise UserError(
                "experts folder exists",
                file=str(parent),
                hint="pass --overwrite to replace it or --resume to continue it",
            )
        if not (parent / EXPERTS_FILE).is_file():
            raise UserError(
                f"refusing to delete a folder without {EXPERTS_FILE}",
                file=str(parent),
                hint="choose another --output_dir",
            )
        if main_process():
            shutil.rmtree(parent)
    values = route_values(task, load_items(script.train_file, task, require_output=True), key)
    done: list[str] = []
    for value in values:
        child = parent / value
        if script.resume and is_finished_run(child):
            log.info("expert %s: already trained, skipped", value)
        else:
            resume = script.resume and bool(checkpoints(child))
            log.info("expert %s %s -> %s", key, value, child)
            train_run(
                dataclasses.replace(
                    script,
                    category=value,
                    experts=None,
                    resume=resume,
                    overwrite=script.overwrite and not resume,
                ),
                model_args,
                dataclasses.replace(config, output_dir=str(child)),
            )
        done.append(value)
        if main_process():
            write_experts(parent, key, task.name, done)
    return parent, done


__all__ = ["train_experts", "train_run"]
