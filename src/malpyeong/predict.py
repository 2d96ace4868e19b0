"""Prediction into results files: answer every item, resumably, and write the two files.

The answers come from the one answering path (:func:`malpyeong.answer.answer_items`). Results
follow :mod:`malpyeong.results`: one row per item is appended to the partial sidecar as soon as
the item is finished; a rerun skips the finished items (the work plan is the same, so recomputed
rows are bit-identical); both final files are written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malpyeong import __version__
from malpyeong.answer import Answer, AnswerSettings, answer_items, parsed_output
from malpyeong.data import write_submission
from malpyeong.engines import Engine
from malpyeong.errors import UserError
from malpyeong.io import JsonlAppender, atomic_write_text, ensure_writable, read_jsonl
from malpyeong.results import partial_path, sidecar_path
from malpyeong.tasks.base import ChoiceTask, Task

log = logging.getLogger(__name__)

@dataclass
class PredictSummary:
    n: int
    resumed: int
    cut: int
    over_budget: int
    seconds: float
    output: Path
    sidecar: Path
    cut_tokens: tuple[int, int] = (0, 0)  # the cut prompts' tokens before and after cutting

    @property
    def items_per_s(self) -> float:
        done = self.n - self.resumed
        return done / self.seconds if self.seconds > 0 else math.inf


def _prepare_resume(output: Path, meta: dict, overwrite: bool) -> dict[str, dict]:
    """Rows already in the partial file (by id), after checking it belongs to this run."""
    part = partial_path(output)
    rows = read_jsonl(part) if part.exists() else []
    if not rows:
        return {}
    head = rows[0].get("_meta") if rows else None
    if head != meta:
        if overwrite:
            part.unlink()
            return {}
        raise UserError("a partial result file from a different run exists", file=str(part),
                        hint="delete it, or pass --overwrite to start over")
    return {r["id"]: r for r in rows[1:] if "id" in r}


def run_prediction(engine: Engine, task: Task, items: Sequence[Any], output: str | os.PathLike,
                   *, settings: AnswerSettings | None = None, model_name: str = "",
                   overwrite: bool = False, progress: bool = True) -> PredictSummary:
    """Answer every item and write ``output`` + its sidecar (resuming from a partial file)."""
    settings = settings or AnswerSettings()
    output = Path(output)
    ensure_writable(output, overwrite)
    side = sidecar_path(output)
    ensure_writable(side, overwrite)
    meta = {"model": model_name, "task": task.name, **settings.meta(task, engine.name),
            "malpyeong_version": __version__}
    have = _prepare_resume(output, meta, overwrite)
    ids = [it.id for it in items]
    done = {i for i, it in enumerate(items) if it.id in have}
    part = partial_path(output)
    start = time.perf_counter()
    with JsonlAppender(part) as out:
        if not part.stat().st_size:
            out.write({"_meta": meta})
        if len(have):
            log.info("resuming: %d of %d items already in %s", len(done), len(items), part)

        def write(i: int, answer: Answer) -> None:
            out.write({"id": ids[i], "output": answer.output, **answer.sidecar})

        run = answer_items(engine, task, items, settings, done=done, on_answer=write,
                           progress=progress)
    seconds = time.perf_counter() - start
    rows = {r["id"]: r for r in read_jsonl(part)[1:] if "id" in r}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise RuntimeError(f"{len(missing)} items have no result (e.g. {missing[0]})")
    outputs = {i: rows[i]["output"] for i in ids}
    if not isinstance(task, ChoiceTask):
        empty = [it.id for it in items if parsed_output(task, it, rows[it.id]["text"]) is None]
        if empty:
            log.warning("%d item(s) generated nothing usable (e.g. %s); their output is the "
                        "task's fallback %r", len(empty), empty[0],
                        task.fallback_output(items[ids.index(empty[0])]))
    lines = [json.dumps({"_meta": meta}, ensure_ascii=False)]
    lines += [json.dumps(rows[i], ensure_ascii=False) for i in ids]
    atomic_write_text(side, "\n".join(lines) + "\n")
    write_submission(list(items), outputs, output, overwrite=True)
    part.unlink()
    return PredictSummary(len(items), len(done), run.cut, run.over_budget, seconds, output, side,
                          run.cut_tokens)


__all__ = ["PredictSummary", "run_prediction"]
