"""Flat QA files -> qa: one row per question with ``context``, ``question``, ``answer`` and
``cot_answer`` (the reasoning), as JSON, JSONL or CSV.

An ``id`` column is kept when present (else ``<file stem>-<row>``); a row without an answer is
a test item (output ``""``); a row without ``cot_answer`` is an answer-only item. Every problem
is reported at once, naming the row and the column.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from malpyeong.data import capped, read_csv, read_records
from malpyeong.errors import UserError, UserErrors
from malpyeong.prep.converters.registry import Converted, converter
from malpyeong.tasks.qa import QATask

REQUIRED = ("context", "question")


def read_rows(path: Path) -> list[Any]:
    """The file's rows: a CSV by its extension (:func:`malpyeong.data.read_csv`: ragged rows,
    repeated columns and a missing column refused, every problem at once), else a JSON list or
    JSONL."""
    if path.suffix.lower() != ".csv":
        return read_records(path)
    return read_csv(path, required=REQUIRED)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _type_problem(value: Any, allowed: tuple[type, ...] = (str,)) -> str | None:
    """How a value of the wrong type is named: what it is, and that text was expected."""
    if value is None or isinstance(value, allowed) and not isinstance(value, bool):
        return None
    return f"is {'true/false' if isinstance(value, bool) else 'a ' + type(value).__name__}, not text"


def convert_row(row: Any, index: int, stem: str, problems: list[tuple[str, str]]) -> dict | None:
    if not isinstance(row, dict):
        problems.append(("row", f"is a {type(row).__name__}, not an object"))
        return None
    context = row.get("context")
    if isinstance(context, list) and all(isinstance(c, str) for c in context):
        context = "\n\n".join(c.strip() for c in context)  # several passages
    for name, value in (("context", context), ("question", row.get("question"))):
        wrong = _type_problem(value)
        if wrong:
            problems.append((name, wrong + (" (or a list of passages)" if name == "context" else "")))
        elif not _text(value):
            problems.append((name, "missing" if value is None else "empty"))
    for name in ("answer", "cot_answer", "id"):
        wrong = _type_problem(row.get(name), (str, int))
        if wrong:
            problems.append((name, wrong))
    if problems:
        return None
    answer, rationale = _text(_str(row.get("answer"))), _text(row.get("cot_answer"))
    if rationale and not answer:
        problems.append(("answer", "empty, but the row has a cot_answer"))
        return None
    rid = _str(row.get("id")).strip() or f"{stem}-{index:05d}"
    output: Any = ({"answer": answer} | ({"rationale": rationale} if rationale else {})) if answer else ""
    return {
        "id": rid,
        "input": {"context": context.strip(), "question": _text(row["question"])},
        "output": output,
    }


def _str(value: Any) -> str:
    return "" if value is None else str(value)


@converter(
    "flat",
    QATask.name,
    "flat QA rows (context, question, answer, cot_answer; JSON, JSONL or CSV) -> qa items",
)
def convert(path: Path, args: argparse.Namespace) -> Converted:
    rows = read_rows(path)
    if not isinstance(rows, list) or not rows:
        raise UserError("no rows in the file", file=str(path))
    errors, records = [], []
    for index, row in enumerate(rows):
        problems: list[tuple[str, str]] = []
        record = convert_row(row, index, path.stem, problems)
        errors += [UserError(p, file=str(path), item=f"row {index + 1}", field=f) for f, p in problems]
        if record is not None:
            records.append(record)
    if errors:
        raise UserErrors(capped(errors, str(path)))
    gold = [r for r in records if r["output"]]
    reasoned = sum("rationale" in r["output"] for r in gold)
    details = {
        "rows": len(rows),
        "items": len(records),
        "with_answer": len(gold),
        "with_rationale": reasoned,
        "test_items": len(records) - len(gold),
    }
    report = (
        f"{len(records)} qa items ({len(gold)} with an answer, {reasoned} of them with a "
        f"rationale; {len(records) - len(gold)} without an answer: test items)"
    )
    return Converted(records, report, details=details)
