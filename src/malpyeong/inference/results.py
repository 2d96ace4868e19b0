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
import re
from dataclasses import dataclass, field
from pathlib import Path

from malpyeong.data import item_label, read_records
from malpyeong.errors import UserError
from malpyeong.io import read_jsonl

SIDECAR_SUFFIX = ".sidecar.jsonl"
PARTIAL_SUFFIX = SIDECAR_SUFFIX + ".partial"


def sidecar_path(results_path: str | os.PathLike) -> Path:
    p = Path(results_path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def partial_path(results_path: str | os.PathLike, rank: int = 0) -> Path:
    """Where a running job appends its rows; process ``rank`` of a multi-process run has its
    own file (``.partial.1``, ...), rank 0 the plain one."""
    side = sidecar_path(results_path)
    return side.with_name(side.name + ".partial" + (f".{rank}" if rank else ""))


def partial_paths(results_path: str | os.PathLike) -> list[Path]:
    """Every partial file of ``results_path`` that exists, whichever process wrote it."""
    side = sidecar_path(results_path)
    found = [side.with_name(side.name + ".partial")] + sorted(
        side.parent.glob(side.name + ".partial.*"), key=lambda p: p.name
    )
    return [p for p in found if p.is_file()]


def is_sidecar(path: str | os.PathLike) -> bool:
    return Path(path).name.endswith(SIDECAR_SUFFIX)


def is_partial(path: str | os.PathLike) -> bool:
    """A running (or interrupted) job's partial sidecar, of any process."""
    return re.search(r"\.sidecar\.jsonl\.partial(\.\d+)?$", Path(path).name) is not None


def results_of(sidecar: str | os.PathLike) -> Path:
    """The results file a sidecar (or a partial sidecar) belongs to: ``NAME.json``."""
    p = Path(sidecar)
    return p.with_name(p.name[: p.name.rindex(SIDECAR_SUFFIX)] + ".json")


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
        for n, row in enumerate(read_jsonl(side), 1):
            if isinstance(row, dict) and isinstance(row.get("_meta"), dict):
                meta = row["_meta"]
                continue
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise UserError(
                    f"row {n} has no string id",
                    file=str(side),
                    hint="the sidecar is damaged; predict again or delete it",
                )
            side_rows[row["id"]] = row
            if "probs" in row:
                p = row["probs"]
                if not isinstance(p, list) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in p
                ):
                    raise UserError(
                        "probs must be a list of numbers", file=str(side), item=row["id"], field="probs"
                    )
                probs = probs if probs is not None else {}
                probs[row["id"]] = [float(x) for x in p]
            if "text" in row:
                texts = texts if texts is not None else {}
                texts[row["id"]] = row["text"]
    return Results(path, ids, outputs, probs, texts, meta, side_rows)
