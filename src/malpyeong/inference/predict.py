"""Prediction into results files: answer every item, resumably, and write the two files.

The answers come from the one answering path (:func:`malpyeong.inference.answer.answer_items`). Results
follow :mod:`malpyeong.inference.results`: one row per item is appended to the partial sidecar as soon as
the item is finished; a rerun skips the finished items (the work plan is the same, so recomputed
rows are bit-identical); both final files are written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong import __version__
from malpyeong.data import write_submission
from malpyeong.errors import UserError
from malpyeong.inference.answer import Answer, AnswerSettings, answer_items, parsed_output
from malpyeong.inference.engines import Engine
from malpyeong.inference.results import partial_path, partial_paths, sidecar_path
from malpyeong.inference.shard import ALONE, Shard, barrier
from malpyeong.io import JsonlAppender, atomic_write_text, ensure_writable, read_jsonl
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
    flags: dict[str, int] = field(default_factory=dict)  # outputs per flag (Task.output_flags)

    @property
    def items_per_s(self) -> float:
        done = self.n - self.resumed
        return done / self.seconds if self.seconds > 0 else math.inf


def _resumed_rows(
    output: Path, meta: dict, overwrite: bool, shard: Shard, own: JsonlAppender | None = None
) -> dict[str, dict]:
    """Rows already in the partial files (by id), after checking they belong to this run.

    The first process checks (and with ``overwrite`` removes) stale files before the others
    read, so no process reads a file that is being deleted; its own file (``own``, already open
    and locked) is emptied rather than removed.
    """
    if shard.rank == 0:
        for part in partial_paths(output):
            rows = read_jsonl(part)
            if rows and rows[0].get("_meta") != meta:
                if not overwrite:
                    raise UserError(
                        "a partial result file from a different run exists",
                        file=str(part),
                        hint="delete it, or pass --overwrite to start over",
                    )
                if own is not None and part == own.path:
                    own.reset()
                else:
                    part.unlink()
    barrier(shard)
    have: dict[str, dict] = {}
    for part in partial_paths(output):
        rows = read_jsonl(part)
        if rows and rows[0].get("_meta") != meta:  # another process found it stale
            raise UserError(
                "a partial result file from a different run exists",
                file=str(part),
                hint="delete it, or pass --overwrite to start over",
            )
        have.update((r["id"], r) for r in rows[1:] if "id" in r)
    return have


def run_prediction(
    engine: Engine,
    task: Task,
    items: Sequence[Any],
    output: str | os.PathLike,
    *,
    settings: AnswerSettings | None = None,
    model_name: str = "",
    overwrite: bool = False,
    progress: bool = True,
    shard: Shard = ALONE,
) -> PredictSummary:
    """Answer every item and write ``output`` + its sidecar (resuming from partial files).

    Under ``shard`` (``accelerate launch --num_processes N run/test.py ...``) each process
    answers its share into its own partial file; the first process writes both final files
    once every process is done. The files are byte-identical to a one-process run's.
    """
    settings = settings or AnswerSettings()
    output = Path(output)
    ensure_writable(output, overwrite)
    side = sidecar_path(output)
    ensure_writable(side, overwrite)
    meta = {
        "model": model_name,
        "task": task.name,
        **settings.meta(task, engine.name),
        "malpyeong_version": __version__,
    }
    part = partial_path(output, shard.rank)
    fresh = not part.exists()
    # The first process opens (and locks) its partial file before reading any: a second run
    # writing the same output at once stops here with one line instead of mixing rows.
    lead = JsonlAppender(part) if shard.rank == 0 else None
    try:
        have = _resumed_rows(output, meta, overwrite, shard, lead)
    except BaseException:
        if lead is not None:
            lead.close()
        raise
    ids = [it.id for it in items]
    done = {i for i, it in enumerate(items) if it.id in have}
    start = time.perf_counter()
    with lead or JsonlAppender(part) as out:
        if not part.stat().st_size:
            out.write({"_meta": meta})
        if len(have):
            log.info("resuming: %d of %d items already done", len(done), len(items))

        def write(i: int, answer: Answer) -> None:
            out.write({"id": ids[i], "output": answer.output, **answer.sidecar})

        try:
            run = answer_items(
                engine, task, items, settings, done=done, on_answer=write, progress=progress, shard=shard
            )
        except UserError:
            if fresh and len(read_jsonl(part)) <= 1:  # refused before any answer: leave no file
                part.unlink()
            raise
    seconds = time.perf_counter() - start
    barrier(shard)
    summary = PredictSummary(
        len(items), len(done), run.cut, run.over_budget, seconds, output, side, run.cut_tokens
    )
    if shard.rank == 0:
        summary.flags = _write_final(task, items, meta, output, side)
    barrier(shard)
    return summary


def _write_final(task: Task, items: Sequence[Any], meta: dict, output: Path, side: Path) -> dict[str, int]:
    """Both final files from every process's partial rows, in item order; then no partials.
    Returns how many outputs carry each flag (resumed rows included)."""
    parts = partial_paths(output)
    rows = {r["id"]: r for part in parts for r in read_jsonl(part)[1:] if "id" in r}
    ids = [it.id for it in items]
    missing = [i for i in ids if i not in rows]
    if missing:
        raise RuntimeError(f"{len(missing)} items have no result (e.g. {missing[0]})")
    outputs = {i: rows[i]["output"] for i in ids}
    if not isinstance(task, ChoiceTask):
        empty = [it.id for it in items if parsed_output(task, it, rows[it.id]["text"]) is None]
        if empty:
            log.warning(
                "%d item(s) generated nothing usable (e.g. %s); their output is the task's fallback %r",
                len(empty),
                empty[0],
                task.fallback_output(items[ids.index(empty[0])]),
            )
    lines = [json.dumps({"_meta": meta}, ensure_ascii=False)]
    lines += [json.dumps(rows[i], ensure_ascii=False) for i in ids]
    atomic_write_text(side, "\n".join(lines) + "\n")
    write_submission(list(items), outputs, output, overwrite=True)
    for part in parts:
        part.unlink()
    return dict(Counter(flag for i in ids for flag in rows[i].get("flags", ())))


__all__ = ["PredictSummary", "run_prediction"]
