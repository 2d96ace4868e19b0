"""Flat QA files -> qa: one row per question with ``context``, ``question``, ``answer`` and
``cot_answer`` (the reasoning), as JSON, JSONL or CSV.

An ``id`` column is kept when present (else ``<file stem>-<row>``); a row without an answer is
a test item (output ``""``); a row without ``cot_answer`` is an answer-only item. Every problem
is reported at once, naming the row and the column.
"""

from __future__ import annotations

import argparse
import csv
from io import StringIO
from pathlib import Path
from typing import Any

from malpyeong.data import capped, read_records
from malpyeong.errors import UserError, UserErrors
from malpyeong.io import read_text
from malpyeong.prep.converters.registry import Converted, converter

REQUIRED = ("context", "question")


def read_rows(path: Path) -> list[Any]:
    """The file's rows: a CSV by its extension, else a JSON list or JSONL."""
    if path.suffix.lower() != ".csv":
        return read_records(path)
    with StringIO(read_text(path).lstrip("\ufeff"), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                f"no column {', '.join(repr(c) for c in missing)}",
                file=str(path),
                hint=f"columns found: {', '.join(reader.fieldnames or []) or 'none'}",
            )
        return list(reader)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def convert_row(row: Any, index: int, stem: str, problems: list[tuple[str, str]]) -> dict | None:
    if not isinstance(row, dict):
        problems.append(("row", f"is a {type(row).__name__}, not an object"))
        return None
    context = row.get("context")
    if isinstance(context, list) and all(isinstance(c, str) for c in context):
        context = "\n\n".join(c.strip() for c in context)  # several passages
    for name, value in (("context", context), ("question", row.get("question"))):
        if not _text(value):
            problems.append((name, "missing or empty"))
    for name in ("answer", "cot_answer", "id"):
        if row.get(name) not in (None, "") and not isinstance(row[name], (str, int)):
            problems.append((name, f"is a {type(row[name]).__name__}, not text"))
    if problems:
        return None
    answer, rationale = _text(row.get("answer")), _text(row.get("cot_answer"))
    if rationale and not answer:
        problems.append(("answer", "empty, but the row has a cot_answer"))
        return None
    rid = str(row["id"]).strip() if str(row.get("id") or "").strip() else f"{stem}-{index:05d}"
    output: Any = ({"answer": answer} | ({"rationale": rationale} if rationale else {})) if answer else ""
    return {
        "id": rid,
        "input": {"context": context.strip(), "question": _text(row["question"])},
        "output": output,
    }


@converter(
    "flat", "qa", "flat QA rows (context, question, answer, cot_answer; JSON, JSONL or CSV) -> qa items"
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
