"""Unpaired preference examples for KTO, independent of any model: one JSONL row per answer.

A row: ``{"id", "source_id", "task", "record", "completion", "label", "from", "score",
"target_style"}``. ``label`` is true for a desirable answer and false for an undesirable one;
``record`` is the item as in the data file (the trainer renders the prompt per model, as for
pairs, see :mod:`malpyeong.training.pairs`).

- From pairs (any task): each item's chosen answer once as desirable, every rejected answer
  as undesirable. For CCI this is the gold option against each wrong one.
- From a generate task's results (DCS): the gold output is desirable; the model's own output is
  scored against gold with the task's dev metric (DCS: ROUGE-1) and is desirable when the score
  reaches ``threshold``, undesirable otherwise. So KTO learns from the model's good summaries
  too, which a pair (gold vs. the model's) cannot express.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.io import atomic_write_text, ensure_writable, read_jsonl_file
from malpyeong.tasks.base import Task, TaskItem
from malpyeong.training.pairs import build_pairs, outputs_of_results

REQUIRED = ("id", "source_id", "task", "record", "completion", "label")


def unpair(pairs: Sequence[dict]) -> list[dict]:
    """Pairs as unpaired rows: each (item, chosen) once desirable, each rejected undesirable."""
    rows: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for p in pairs:
        key = (str(p["source_id"]), p["chosen"])
        if key not in seen:
            seen.add(key)
            rows.append(_row(p, f"{p['source_id']}#gold", p["chosen"], True, "gold", None))
        rows.append(
            _row(p, f"{p['id']}#rejected", p["rejected"], False, p.get("rejected_from", "rejected"), None)
        )
    return rows


def scored_outputs(
    task: Task,
    items: Sequence[TaskItem],
    outputs: dict[str, Any],
    *,
    threshold: float,
    metric: str | None = None,
    results_name: str = "results",
) -> list[dict]:
    """Gold outputs (desirable) and the model's outputs labelled by their score against gold."""
    metric = metric or task.dev_metric
    gold = [it for it in items if task.has_output(it)]
    own = [it for it in gold if outputs.get(it.id) not in (None, "")]
    scores = dict(
        zip(
            [it.id for it in own],
            task.item_scores(own, {it.id: outputs[it.id] for it in own}, metric) if own else [],
            strict=True,
        )
    )
    rows: list[dict] = []
    for item in gold:
        base = {"source_id": item.id, "task": task.name, "record": item.raw, "target_style": None}
        rows.append(_row(base, f"{item.id}#gold", task.target(item), True, "gold", None))
        if item.id in scores:
            text = task.render_output(outputs[item.id])
            score = scores[item.id]
            rows.append(
                _row(base, f"{item.id}#model", text, score >= threshold, f"results:{results_name}", score)
            )
    return rows


def build_unpaired(
    task: Task,
    items: Sequence[TaskItem],
    *,
    target_style: str | None = None,
    results: str | os.PathLike | None = None,
    threshold: float = 0.5,
    metric: str | None = None,
    seed: int = 0,
) -> list[dict]:
    """Unpaired rows for ``task``: from its pairs, or (a generate task with ``results``) from
    the model's outputs scored against gold."""
    if results is None or task.has_options:
        return unpair(build_pairs(task, items, target_style=target_style, results=results, seed=seed))
    outputs, name = outputs_of_results(task, items, results)
    return scored_outputs(task, items, outputs, threshold=threshold, metric=metric, results_name=name)


def _row(source: dict, row_id: str, completion: str, label: bool, origin: str, score: float | None) -> dict:
    return {
        "id": row_id,
        "source_id": source["source_id"],
        "task": source["task"],
        "record": source["record"],
        "completion": completion,
        "label": bool(label),
        "from": origin,
        "score": score,
        "target_style": source.get("target_style"),
    }


def write_unpaired(rows: Sequence[dict], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """JSONL, atomically; refuses an existing file without ``overwrite``."""
    out = ensure_writable(path, overwrite)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out


def read_unpaired(path: str | os.PathLike) -> list[dict]:
    """Rows written by :func:`write_unpaired`; a malformed row is one ``UserError``."""
    p = Path(path)
    rows = read_jsonl_file(
        p, required=REQUIRED, field="unpaired", what="examples", hint="build them with orpo/build_unpaired.py"
    )
    for row in rows:
        if not isinstance(row["completion"], str) or not row["completion"].strip():
            raise UserError("completion must be a non-empty string", file=str(p), item=str(row["id"]))
        if not isinstance(row["label"], bool):
            raise UserError(
                "label must be true (desirable) or false", file=str(p), item=str(row["id"]), field="label"
            )
    tasks = {r["task"] for r in rows}
    if len(tasks) > 1:
        raise UserError(f"examples of several tasks in one file: {', '.join(sorted(tasks))}", file=str(p))
    if len({r["label"] for r in rows}) < 2:
        raise UserError(
            "KTO needs desirable and undesirable examples; the file has one kind",
            file=str(p),
            hint="lower or raise --threshold",
        )
    return rows
