"""Preference pairs, independent of any model: one JSONL row per (chosen, rejected) pair.

A row: ``{"id", "source_id", "task", "record", "chosen", "rejected", "rejected_from",
"target_style"}``. ``record`` is the item as in the data file, so the trainer renders the prompt
with the model's own chat template and the length budget at training time; ``chosen`` and
``rejected`` are bare responses (the trainer appends the template's end-of-turn).

- Choice tasks (CCI): one pair per wrong option. ``chosen`` is the gold option's answer,
  ``rejected`` a wrong option's, written in the target style the SFT run used (``A. <text>`` or
  ``A``), so preference training sharpens exactly the answer SFT taught. Wrong options are never
  joined into one string.
- Generate tasks (DCS): ``chosen`` is the gold output; ``rejected`` is a model's own output for
  the same item (from a results file, see :mod:`malpyeong.inference.results`) where one is given, else the
  gold output of a different item sharing the most key terms (DCS: subject keywords), which is
  fluent and on topic but wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.inference.results import read_results
from malpyeong.io import atomic_write_text, ensure_writable, read_jsonl_file
from malpyeong.tasks.base import ChoiceTask, GenerateTask, Task, TaskItem

REQUIRED = ("id", "source_id", "task", "record", "chosen", "rejected")


def choice_pairs(
    task: ChoiceTask, items: Sequence[TaskItem], *, target_style: str | None = None
) -> list[dict]:
    """One pair per wrong option of each labelled item: the gold answer against it."""
    target_style = task.check_target_style(target_style)
    pairs = []
    for item in items:
        gold = task.label_index(item)
        if gold is None:
            continue
        chosen = task.answer_text(item, gold, style=target_style)
        for wrong in range(task.n_choices):
            if wrong == gold:
                continue
            rejected = task.answer_text(item, wrong, style=target_style)
            pairs.append(
                _row(
                    task,
                    item,
                    f"{item.id}#{task.letters[wrong]}",
                    chosen,
                    rejected,
                    f"option:{task.letters[wrong]}",
                    target_style,
                )
            )
    return pairs


def generate_pairs(
    task: GenerateTask,
    items: Sequence[TaskItem],
    *,
    outputs: dict[str, Any] | None = None,
    results_name: str = "results",
    seed: int = 0,
) -> list[dict]:
    """One pair per item with a gold output (see the module docstring for ``rejected``)."""
    gold = [it for it in items if task.has_output(it)]
    pairs = []
    for item in gold:
        chosen = task.target(item)
        own = (outputs or {}).get(item.id)
        own_text = task.render_output(own) if own not in (None, "") else ""
        if own_text and own_text != chosen:
            pairs.append(
                _row(task, item, f"{item.id}#model", chosen, own_text, f"results:{results_name}", None)
            )
            continue
        other = related_item(task, item, gold, seed)
        if other is None:
            continue
        pairs.append(
            _row(task, item, f"{item.id}#other", chosen, task.target(other), f"other:{other.id}", None)
        )
    return pairs


def related_item(task: Task, item: TaskItem, pool: Sequence[TaskItem], seed: int = 0) -> TaskItem | None:
    """The item in ``pool`` (not ``item``, another gold output) sharing the most key terms.

    Ties are broken by a hash of ``seed`` and the two ids, so the choice is stable across runs.
    """
    keys = set(task.key_terms(item))
    target = task.target(item)

    def score(other: Any) -> tuple[int, str]:
        shared = len(keys & set(task.key_terms(other)))
        tie = hashlib.sha256(f"{seed}:{item.id}:{other.id}".encode()).hexdigest()
        return shared, tie

    candidates = [o for o in pool if o.id != item.id and task.target(o) != target]
    return max(candidates, key=score) if candidates else None


def build_pairs(
    task: Task,
    items: Sequence[TaskItem],
    *,
    target_style: str | None = None,
    results: str | os.PathLike | None = None,
    seed: int = 0,
) -> list[dict]:
    """Pairs for ``task``: :func:`choice_pairs` or :func:`generate_pairs`."""
    if task.has_options:  # each wrong option is a rejected answer
        if results is not None:
            raise UserError(f"--results is for generate tasks, not {task.name}", field="results")
        return choice_pairs(task, items, target_style=target_style)
    task.check_target_style(target_style)
    outputs = None
    name = "results"
    if results is not None:
        outputs, name = outputs_of_results(task, items, results)
    return generate_pairs(task, items, outputs=outputs, results_name=name, seed=seed)


def outputs_of_results(
    task: GenerateTask, items: Sequence[TaskItem], results: str | os.PathLike
) -> tuple[dict[str, Any], str]:
    """A results file's non-empty outputs by id (parsed from the raw text where the output is
    missing), and the results' name."""
    res = read_results(results)
    outputs = {i: o for i, o in res.outputs.items() if o not in (None, "")}
    by_id = {it.id: it for it in items}
    for i, text in (res.texts or {}).items():  # raw generations where the output is missing
        if i not in outputs and i in by_id:
            parsed = task.parse_output(by_id[i], text)
            if parsed is not None:
                outputs[i] = parsed
    return outputs, res.name


def _row(
    task: Task,
    item: TaskItem,
    pair_id: str,
    chosen: str,
    rejected: str,
    origin: str,
    target_style: str | None,
) -> dict:
    return {
        "id": pair_id,
        "source_id": item.id,
        "task": task.name,
        "record": item.raw,
        "chosen": chosen,
        "rejected": rejected,
        "rejected_from": origin,
        "target_style": target_style,
    }


def write_pairs(pairs: Sequence[dict], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """JSONL, atomically; refuses an existing file without ``overwrite``."""
    out = ensure_writable(path, overwrite)
    atomic_write_text(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return out


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """Pairs written by :func:`write_pairs`; a malformed row is one ``UserError``."""
    p = Path(path)
    rows = read_jsonl_file(
        p, required=REQUIRED, field="pairs", what="pairs", hint="build pairs with orpo/build_pairs.py"
    )
    for row in rows:
        if not (
            isinstance(row["chosen"], str)
            and isinstance(row["rejected"], str)
            and row["chosen"].strip()
            and row["rejected"].strip()
        ):
            raise UserError("chosen and rejected must be non-empty strings", file=str(p), item=str(row["id"]))
    tasks = {r["task"] for r in rows}
    if len(tasks) > 1:
        raise UserError(f"pairs of several tasks in one file: {', '.join(sorted(tasks))}", file=str(p))
    return rows
