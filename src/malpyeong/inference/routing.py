"""Per-category experts: which items an expert trains on, and which expert answers an item.

What the 2024 CCI 가 winner did: one checkpoint per inference category. Training filters a
recipe's data by the task's routing field (``--category 원인``; ``--experts category`` trains
every value in turn into ``<run>/<value>/``, listed in ``<run>/experts.json``; the file and its
finder are the run-folder format's, :mod:`malpyeong.models.runfolder`). Prediction with ``run/test.py --model <run> --route category`` sends each item to its value's expert (a run
folder ``<run>/<value>/``), or to a general model (``--fallback``) where no expert exists; each
expert's results go to ``NAME.route/<value>.json`` (so a rerun resumes expert by expert), then
one results file and one sidecar come out, each sidecar row naming its expert (the loop over the
experts is :class:`~malpyeong.inference.predict.PredictionJob`'s).

The task says which fields may route (:attr:`~malpyeong.tasks.base.Task.route_keys`); nothing
here knows a task.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from malpyeong.data import write_submission
from malpyeong.errors import UserError
from malpyeong.inference.results import sidecar_path
from malpyeong.io import atomic_write_text, read_jsonl
from malpyeong.models.runfolder import expert_folders
from malpyeong.tasks.base import Task, TaskItem

log = logging.getLogger(__name__)

FALLBACK = "_fallback"  # the route name of the general model in NAME.route/


def route_key(task: Task, key: str | None = None) -> str:
    """``key``, checked to be one of the task's routing fields (default: its first)."""
    if not task.route_keys:
        raise UserError(f"task {task.name} has no field to route items by", field="route")
    if key is None:
        return task.route_keys[0]
    if key not in task.route_keys:
        raise UserError(
            f"task {task.name} cannot route by '{key}'",
            field="route",
            hint="one of " + ", ".join(task.route_keys),
        )
    return key


def select_items(
    task: Task,
    items: Sequence[TaskItem],
    value: str | None,
    *,
    file: str | None = None,
    required: bool = True,
) -> list[TaskItem]:
    """The items whose routing field (the task's first) is ``value``; all items for None.

    No item of ``value`` is an error naming the values there are, unless not ``required``
    (a dev file may lack a category: the expert is then evaluated on every dev item).
    """
    if value is None or not items:
        return list(items)
    key = route_key(task)
    chosen = [it for it in items if task.route_value(it, key) == value]
    if not chosen:
        there = sorted({task.route_value(it, key) for it in items})
        if required:
            raise UserError(
                f"no item has {key} '{value}'",
                file=file,
                field="category",
                hint="values here: " + ", ".join(there),
            )
        log.warning("no dev item has %s '%s': the expert is evaluated on every dev item", key, value)
        return list(items)
    return chosen


def route_values(task: Task, items: Sequence[TaskItem], key: str) -> list[str]:
    """The distinct values of ``key`` among ``items``, sorted (the experts to train)."""
    return sorted({task.route_value(it, key) for it in items})


# ------------------------------------------------------------------------------ prediction


@dataclass
class Route:
    """One model and the indices of the items it answers."""

    name: str  # the routing value, or FALLBACK
    model: str  # the folder or hub id answering these items
    indices: list[int] = field(default_factory=list)


def plan_routes(
    folder: str | os.PathLike, task: Task, items: Sequence[TaskItem], key: str, fallback: str | None
) -> list[Route]:
    """Which model answers which items: the item's expert, else ``fallback``; an item with
    neither is an error (listing the values without an expert) before any model is loaded."""
    key = route_key(task, key)
    experts = expert_folders(folder, key)
    routes = {v: Route(v, str(p)) for v, p in experts.items()}
    general = Route(FALLBACK, fallback) if fallback else None
    missing: set[str] = set()
    for i, item in enumerate(items):
        value = task.route_value(item, key)
        if value in routes:
            routes[value].indices.append(i)
        elif general is not None:
            general.indices.append(i)
        else:
            missing.add(value)
    if missing:
        raise UserError(
            f"no expert for {key} {', '.join(sorted(missing))}",
            file=str(folder),
            field="route",
            hint="train them, or pass --fallback MODEL (a general model for the items without an expert)",
        )
    out = [r for r in routes.values() if r.indices]
    return out + ([general] if general is not None and general.indices else [])


def route_dir(output: str | os.PathLike) -> Path:
    """Where the experts' own results files go while a routed prediction runs."""
    p = Path(output)
    return p.with_name(p.stem + ".route")


def route_complete(part: Path, meta: dict, n: int) -> bool:
    """Whether an expert's results file ``part`` is finished: both files, made with ``meta``,
    with ``n`` rows (a rerun does not load that expert again)."""
    side = sidecar_path(part)
    if not (part.is_file() and side.is_file()):
        return False
    rows = read_jsonl(side)
    return bool(rows) and rows[0].get("_meta") == meta and len(rows) == n + 1


def write_routed(
    output: str | os.PathLike, items: Sequence[TaskItem], rows: dict[str, dict], head: dict
) -> None:
    """One results file and one sidecar (header ``head``, each row naming its expert) from the
    experts' rows, in item order; then the experts' own files go. The caller checked the output
    may be written before any expert ran."""
    ids = [it.id for it in items]
    lines = [json.dumps({"_meta": head}, ensure_ascii=False)]
    lines += [json.dumps(rows[i], ensure_ascii=False) for i in ids]
    atomic_write_text(sidecar_path(output), "\n".join(lines) + "\n")
    write_submission(list(items), {i: rows[i]["output"] for i in ids}, output, overwrite=True)
    shutil.rmtree(route_dir(output))


__all__ = [
    "FALLBACK",
    "Route",
    "plan_routes",
    "route_dir",
    "route_complete",
    "route_key",
    "route_values",
    "select_items",
    "write_routed",
]
