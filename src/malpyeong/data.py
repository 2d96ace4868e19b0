"""Official NIKL files in and out.

Reading accepts what the real files contain: a JSON list or JSONL, an optional UTF-8 BOM, utterances
that are JSON numbers. Every problem found is reported at once (file, item id, field); a task's
``parse_item`` turns a raw record into its typed item. Writing produces the official submission
layout (the test items with ``output`` filled, ``ensure_ascii=False``, ``indent=4``), atomically.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError, UserErrors
from malpyeong.io import atomic_write_json, ensure_writable, json_loads, read_text, require_file
from malpyeong.tasks.base import Task, TaskItem

MAX_ERRORS_PER_FILE = 20  # past this a file is usually of another task; say so instead of flooding


def read_records(path: str | os.PathLike) -> list[Any]:
    """Raw records of a JSON-list or JSONL file; one ``UserError`` naming the file when unreadable."""
    path = require_file(path)
    name = str(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"not UTF-8 text (byte {err.start})", file=name, hint="save the file as UTF-8"
        ) from None
    if not text.strip():
        raise UserError("empty file", file=name, hint="expected a JSON list of items")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _parse_json(text, name)
    if stripped.startswith("{"):
        # JSONL (one object per line), or a single object, which is not a valid data file.
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json_loads(line))
            except json.JSONDecodeError as line_err:
                try:
                    json.loads(text)
                except json.JSONDecodeError:  # the line's own error, not the whole file's "Extra data"
                    cut = line_err.msg.startswith("Unterminated") or line_err.pos >= len(line.rstrip())
                    raise UserError(
                        f"not valid JSON or JSONL (line {lineno}, column {line_err.colno}: {line_err.msg}{' (cut short?)' if cut else ''})",
                        file=name,
                    ) from None
                raise UserError(
                    "top level is an object, not a list of items",
                    file=name,
                    hint="wrap the items in [ ... ] or write one item per line",
                ) from None
            except ValueError as err:  # NaN / Infinity
                raise UserError(
                    f"not valid JSON (line {lineno}: {err})",
                    file=name,
                    hint="write numbers as numbers, text in quotes",
                ) from None
        return records
    data = _parse_json(text, name)
    raise UserError(f"top level is a {type(data).__name__}, not a list of items", file=name)


def read_csv(path: str | os.PathLike, *, required: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """The rows of a CSV table as ``{column: value}``, read by the one plain-text reader (any
    encoding it knows). Every problem is reported at once: a repeated or empty column name
    (a dict would keep only one of two ``answer`` columns), a row with more or fewer fields
    than the header (a row cut short or with an unquoted comma would shift its values), a
    missing ``required`` column, broken quoting (named by its line)."""
    name = str(path)
    text = read_text(path).lstrip("\ufeff")
    if not text.strip():
        raise UserError("empty file", file=name, hint="expected a header row and data rows")
    csv.field_size_limit(sys.maxsize)  # a long context is one field; the default caps it at 128 KiB
    reader = csv.reader(StringIO(text, newline=""), strict=True)
    errors: list[UserError] = []
    rows: list[dict[str, str]] = []
    try:
        header = [h.strip() for h in next(reader)]
        seen: dict[str, list[int]] = {}
        for column, h in enumerate(header, 1):
            seen.setdefault(h, []).append(column)
        for h, columns in seen.items():
            where = ", ".join(map(str, columns))
            if not h:
                errors.append(
                    UserError(f"column {where} of the header has no name", file=name, item="line 1")
                )
            elif len(columns) > 1:
                errors.append(
                    UserError(
                        f"column {h!r} appears {len(columns)} times (columns {where})",
                        file=name,
                        item="line 1",
                        hint="every column needs its own name",
                    )
                )
        missing = [c for c in required if c not in seen]
        if missing:
            errors.append(
                UserError(
                    f"no column {', '.join(repr(c) for c in missing)}",
                    file=name,
                    item="line 1",
                    hint=f"columns found: {', '.join(h for h in header if h) or 'none'}",
                )
            )
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            index = len(rows) + 1
            if len(fields) != len(header):
                errors.append(
                    UserError(
                        f"{len(fields)} fields, the header has {len(header)}",
                        file=name,
                        item=f"row {index} (line {reader.line_num})",
                        hint="quote a value that holds a comma; give every row every column",
                    )
                )
            rows.append(dict(zip(header, fields, strict=False)))
    except csv.Error as err:
        errors.append(UserError(f"not valid CSV ({err})", file=name, item=f"line {reader.line_num}"))
    if errors:
        raise UserErrors(capped(errors, name))
    return rows


def _parse_json(text: str, name: str) -> Any:
    try:
        return json_loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})", file=name
        ) from None
    except ValueError as err:  # NaN / Infinity: Python reads them, JSON has no such numbers
        raise UserError(
            f"not valid JSON: {err}", file=name, hint="write numbers as numbers, text in quotes"
        ) from None


def item_label(record: Any, index: int) -> str:
    """How to name an item in a message: its id when it has a usable one, else its index."""
    if isinstance(record, dict) and isinstance(record.get("id"), str) and record["id"]:
        return record["id"]
    return f"#{index}"


def load_items(path: str | os.PathLike, task: Task, *, require_output: bool = False) -> list[TaskItem]:
    """Read and validate a data file for ``task``; raise ``UserErrors`` listing every problem.

    ``require_output``: training and dev files must carry gold outputs (test files have ``""``).
    """
    return parse_records(read_records(path), task, str(path), require_output=require_output)


def check_written(records: list, task: Task, name: str, *, require_output: bool = False) -> list:
    """What a converter is about to write, validated exactly as ``run/validate.py`` will read it
    (serialised and parsed back, then :func:`parse_records`), before anything is written: a
    converter never leaves a file the task refuses. ``name`` names the input in messages."""
    try:
        text = json.dumps(records, ensure_ascii=False, allow_nan=False)
    except ValueError as err:  # NaN / Infinity
        raise UserError(f"cannot be written as JSON ({err})", file=name, hint="nothing was written") from None
    try:
        return parse_records(json_loads(text), task, name, require_output=require_output)
    except UserErrors as errs:
        raise UserErrors([*errs.errors[:-1], _nothing_written(errs.errors[-1])]) from None


def _nothing_written(err: UserError) -> UserError:
    hint = "nothing was written" + (f"; {err.hint}" if err.hint else "")
    return UserError(err.problem, file=err.file, item=err.item, field=err.field, hint=hint)


def parse_records(records: Any, task: Task, name: str, *, require_output: bool = False) -> list:
    """Raw records (as :func:`read_records` gives them) validated as ``task``'s items; every
    problem reported at once, each naming ``name``, the item and the field."""
    if not isinstance(records, list):
        raise UserError(f"top level is a {type(records).__name__}, not a list of items", file=name)
    if not records:
        raise UserError("no items in the file", file=name)
    errors: list[UserError] = []
    items = []
    for index, record in enumerate(records):
        label = item_label(record, index)
        problems: list[tuple[str, str]] = []
        item = task.parse_item(record, problems)
        if require_output and item is not None and not task.has_output(item):
            problems.append(("output", "empty; this file needs gold outputs (train/dev)"))
        for field, problem in problems:
            errors.append(UserError(problem, file=name, item=label, field=field))
        if item is not None and not problems:
            items.append(item)
    ids = Counter(r.get("id") for r in records if isinstance(r, dict) and isinstance(r.get("id"), str))
    for dup, n in ids.items():
        if n > 1:
            errors.append(
                UserError(
                    f"duplicate id ({n} items share it)",
                    file=name,
                    item=dup,
                    field="id",
                    hint="ids must be unique within a file",
                )
            )
    if errors:
        raise UserErrors(capped(errors, name, hint=f"is this really a {task.name} file?"))
    return items


def capped(errors: list[UserError], name: str, hint: str | None = None) -> list[UserError]:
    """The first :data:`MAX_ERRORS_PER_FILE` errors and one line saying how many more."""
    if len(errors) <= MAX_ERRORS_PER_FILE:
        return errors
    more = len(errors) - MAX_ERRORS_PER_FILE
    return errors[:MAX_ERRORS_PER_FILE] + [
        UserError(f"... and {more} more problem(s) in this file", file=name, hint=hint)
    ]


def write_submission(
    items: Sequence[TaskItem], outputs: dict[str, Any], path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``items`` (as read from the test file) with ``output`` filled from ``outputs[id]``."""
    path = ensure_writable(path, overwrite)
    missing = [it.id for it in items if it.id not in outputs]
    if missing:
        raise UserError(f"no prediction for {len(missing)} item(s), e.g. {missing[0]}", file=str(path))
    rows = []
    for it in items:
        row = dict(it.raw)
        row["output"] = outputs[it.id]
        rows.append(row)
    atomic_write_json(path, rows, indent=4)
    return path


def check_submission(pred_path: str | os.PathLike, test_path: str | os.PathLike, task: Task) -> int:
    """The official scorer's submission checks; raise ``UserErrors`` on failure, return the count.

    Same number of items as the test file, unique ids, every id present in the test file, every
    output valid for the task.
    """
    pred = read_records(pred_path)
    test = read_records(test_path)
    pname = str(pred_path)
    if not isinstance(pred, list):
        raise UserError("top level is not a list", file=pname)
    if not isinstance(test, list):
        raise UserError("top level is not a list", file=str(test_path))
    errors: list[UserError] = []
    if len(pred) != len(test):
        errors.append(
            UserError(
                f"{len(pred)} items, the test file has {len(test)}",
                file=pname,
                hint="predict every test item",
            )
        )
    test_ids = {r.get("id") for r in test if isinstance(r, dict)}
    seen: Counter = Counter()
    for index, row in enumerate(pred):
        label = item_label(row, index)
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            errors.append(UserError("item has no string id", file=pname, item=label, field="id"))
            continue
        seen[row["id"]] += 1
        if row["id"] not in test_ids:
            errors.append(UserError("id not in the test file", file=pname, item=label, field="id"))
        problem = task.check_output(row.get("output"))
        if problem:
            errors.append(UserError(problem, file=pname, item=label, field="output"))
    for dup, n in seen.items():
        if n > 1:
            errors.append(UserError(f"duplicate id ({n} times)", file=pname, item=dup, field="id"))
    if errors:
        raise UserErrors(capped(errors, pname))
    return len(pred)
