"""ORPO preference pairs, independent of any model: one JSONL row per (chosen, rejected) pair.

A row: ``{"id", "source_id", "task", "record", "chosen", "rejected", "rejected_from",
"target_style"}``. ``record`` is the item as in the data file, so the trainer renders the prompt
with the model's own chat template and the length budget at training time; ``chosen`` and
``rejected`` are bare responses (the trainer appends the template's end-of-turn).

- CCI: two pairs per item. ``chosen`` is the gold option's response, ``rejected`` each wrong
  option's response, written in the target style the SFT run used (``A. <text>`` or ``A``), so
  ORPO sharpens exactly the answer SFT taught. The two wrong options are never joined into one
  string.
- DCS: ``chosen`` is the gold summary; ``rejected`` is a model's own summary of the same
  dialogue (from a results file, see :mod:`malpyeong.results`) where one is given, else the gold
  summary of a different dialogue sharing the most subject keywords (fluent, on-topic, wrong).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.io import atomic_write_text, ensure_writable, read_jsonl

REQUIRED = ("id", "source_id", "task", "record", "chosen", "rejected")


def cci_pairs(task: Any, items: Sequence[Any], *, target_style: str = "letter_text") -> list[dict]:
    """Two pairs per labelled item: gold option against each wrong option."""
    pairs = []
    for item in items:
        gold = task.label_index(item)
        if gold is None:
            continue
        chosen = task.target(item, style=target_style)
        for wrong in range(task.n_choices):
            if wrong == gold:
                continue
            rejected = task.target(dataclasses.replace(item, label=wrong), style=target_style)
            pairs.append(_row(task, item, f"{item.id}#{task.letters[wrong]}", chosen, rejected,
                              f"option:{task.letters[wrong]}", target_style))
    return pairs


def dcs_pairs(task: Any, items: Sequence[Any], *, outputs: dict[str, str] | None = None,
              results_name: str = "results", seed: int = 0) -> list[dict]:
    """One pair per item with a gold summary (see the module docstring for ``rejected``)."""
    gold = [it for it in items if task.has_output(it)]
    pairs = []
    for item in gold:
        chosen = task.target(item)
        own = (outputs or {}).get(item.id)
        if isinstance(own, str) and own.strip() and own.strip() != chosen:
            pairs.append(_row(task, item, f"{item.id}#model", chosen, own.strip(),
                              f"results:{results_name}", None))
            continue
        other = other_dialogue(item, gold, seed)
        if other is None:
            continue
        pairs.append(_row(task, item, f"{item.id}#other", chosen, task.target(other),
                          f"other:{other.id}", None))
    return pairs


def other_dialogue(item: Any, pool: Sequence[Any], seed: int = 0) -> Any | None:
    """The item in ``pool`` (not ``item``, different summary) sharing the most keywords.

    Ties are broken by a hash of ``seed`` and the two ids, so the choice is stable across runs.
    """
    keys = set(getattr(item, "keywords", ()))

    def score(other: Any) -> tuple[int, str]:
        shared = len(keys & set(getattr(other, "keywords", ())))
        tie = hashlib.sha256(f"{seed}:{item.id}:{other.id}".encode()).hexdigest()
        return shared, tie

    candidates = [o for o in pool if o.id != item.id and o.summary.strip() != item.summary.strip()]
    return max(candidates, key=score) if candidates else None


def build_pairs(task: Any, items: Sequence[Any], *, target_style: str = "letter_text",
                results: str | os.PathLike | None = None, seed: int = 0) -> list[dict]:
    """Pairs for ``task``: :func:`cci_pairs` for a choice task, :func:`dcs_pairs` otherwise."""
    if task.kind == "choice":
        if results is not None:
            raise UserError("--results is for generation tasks (DCS)", field="results")
        return cci_pairs(task, items, target_style=target_style)
    outputs = None
    name = "results"
    if results is not None:
        from malpyeong.results import read_results

        res = read_results(results)
        outputs = {i: o for i, o in res.outputs.items() if isinstance(o, str) and o.strip()}
        if res.texts:  # raw generations where the submission output is missing
            for i, text in res.texts.items():
                outputs.setdefault(i, task.clean_output(text))
        name = res.name
    return dcs_pairs(task, items, outputs=outputs, results_name=name, seed=seed)


def _row(task: Any, item: Any, pair_id: str, chosen: str, rejected: str, origin: str,
         target_style: str | None) -> dict:
    return {"id": pair_id, "source_id": item.id, "task": task.name, "record": item.raw,
            "chosen": chosen, "rejected": rejected, "rejected_from": origin,
            "target_style": target_style}


def write_pairs(pairs: Sequence[dict], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """JSONL, atomically; refuses an existing file without ``overwrite``."""
    import json

    out = ensure_writable(path, overwrite)
    atomic_write_text(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return out


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """Pairs written by :func:`write_pairs`; a malformed row is one ``UserError``."""
    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", file=str(p), field="pairs")
    try:
        rows = read_jsonl(p)
    except ValueError as err:
        raise UserError(f"not valid JSONL: {str(err).splitlines()[0]}", file=str(p)) from None
    if not rows:
        raise UserError("no pairs in the file", file=str(p))
    for n, row in enumerate(rows, 1):
        missing = [k for k in REQUIRED if k not in row] if isinstance(row, dict) else list(REQUIRED)
        if missing:
            raise UserError(f"line {n} lacks {', '.join(missing)}", file=str(p),
                            hint="build pairs with orpo/build_pairs.py")
        if not (isinstance(row["chosen"], str) and isinstance(row["rejected"], str)
                and row["chosen"].strip() and row["rejected"].strip()):
            raise UserError("chosen and rejected must be non-empty strings", file=str(p),
                            item=str(row["id"]))
    tasks = {r["task"] for r in rows}
    if len(tasks) > 1:
        raise UserError(f"pairs of several tasks in one file: {', '.join(sorted(tasks))}",
                        file=str(p))
    return rows


def shuffle_pairs(pairs: list[dict], seed: int = 0) -> list[dict]:
    """Pairs in a seeded random order (a file written item by item is ordered by source)."""
    out = list(pairs)
    random.Random(seed).shuffle(out)
    return out
