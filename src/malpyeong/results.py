"""Prediction results: the contract between predict, evaluate and ensemble.

A run of ``run/test.py`` writes two files:

- ``results/NAME.json``: the submission layout (the test items with ``output`` filled);
- ``results/NAME.sidecar.jsonl``: one JSON object per item, in the same order:
  ``{"id", "output", "probs": [p_A, p_B, p_C]}`` for choice tasks (probabilities over the
  options in the file's original order, summing to 1), ``{"id", "output", "text"}`` for
  generate tasks (``text`` = the raw generation before cleaning), plus ``"dropped"`` (utterances
  cut by the length budget); a task that reports perplexity adds ``"ref_logprob"`` and
  ``"ref_tokens"`` (its gold output's log-likelihood under the model) where there is gold. The first line is a header: ``{"_meta": {...}}`` with the model,
  task, prompt, scoring method and malpyeong version.

While a job runs, rows are appended to ``NAME.sidecar.jsonl.partial`` (one file per process in
a multi-process run: ``.partial.1``, ...) so a rerun resumes; both final files are written
atomically at the end, by the first process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from malpyeong.data import item_label, read_records
from malpyeong.errors import UserError
from malpyeong.io import read_jsonl


def sidecar_path(results_path: str | os.PathLike) -> Path:
    p = Path(results_path)
    return p.with_name(p.stem + ".sidecar.jsonl")


def partial_path(results_path: str | os.PathLike, rank: int = 0) -> Path:
    """Where a running job appends its rows; process ``rank`` of a multi-process run has its
    own file (``.partial.1``, ...), rank 0 the plain one."""
    side = sidecar_path(results_path)
    return side.with_name(side.name + ".partial" + (f".{rank}" if rank else ""))


def partial_paths(results_path: str | os.PathLike) -> list[Path]:
    """Every partial file of ``results_path`` that exists, whichever process wrote it."""
    side = sidecar_path(results_path)
    found = [side.with_name(side.name + ".partial")] + sorted(
        side.parent.glob(side.name + ".partial.*"), key=lambda p: p.name)
    return [p for p in found if p.is_file()]


@dataclass
class Results:
    """One model's predictions: outputs by id, and per-option probabilities when known."""

    path: Path
    ids: list[str]
    outputs: dict[str, str]
    probs: dict[str, list[float]] | None = None
    texts: dict[str, str] | None = None
    meta: dict = field(default_factory=dict)
    rows: dict[str, dict] = field(default_factory=dict)  # the sidecar row of each id, as written

    @property
    def name(self) -> str:
        return self.path.stem


def read_results(path: str | os.PathLike) -> Results:
    """Read a results file and, when present next to it, its sidecar."""
    path = Path(path)
    rows = read_records(path)
    if not isinstance(rows, list):
        raise UserError("top level is not a list", file=str(path))
    ids, outputs = [], {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise UserError("item has no string id", file=str(path), item=item_label(row, index), field="id")
        ids.append(row["id"])
        outputs[row["id"]] = row.get("output")
    probs: dict[str, list[float]] | None = None
    texts: dict[str, str] | None = None
    meta: dict = {}
    side_rows: dict[str, dict] = {}
    side = sidecar_path(path)
    if side.exists():
        for row in read_jsonl(side):
            if "_meta" in row:
                meta = row["_meta"]
                continue
            if isinstance(row.get("id"), str):
                side_rows[row["id"]] = row
            if "probs" in row:
                probs = probs if probs is not None else {}
                probs[row["id"]] = [float(p) for p in row["probs"]]
            if "text" in row:
                texts = texts if texts is not None else {}
                texts[row["id"]] = row["text"]
    return Results(path, ids, outputs, probs, texts, meta, side_rows)
