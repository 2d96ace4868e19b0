"""A JSON object out of a model's raw text: as it is, or after a small documented repair.

Without constrained decoding a model may wrap its JSON in a code fence, write words before or
after it, or leave a comma before a closing bracket. :func:`read_json_object` first parses the
stripped text as it is; when that fails it applies, in this order, only these repairs:

1. ``code_fence``: the content of the first fenced block (```` ```json ... ``` ````; an
   opening fence that is never closed counts to the end of the text);
2. ``surrounding_text``: from the first ``{`` to the ``}`` that closes it (brackets inside
   strings and escaped quotes do not count), dropping whatever comes before or after;
3. ``trailing_comma``: a ``,`` followed (after whitespace) by ``}`` or ``]``, outside strings.

Anything else is not repaired and the text counts as unrepairable: a generation cut off before
its brackets close, single-quoted strings, comments, Python literals (``True``, ``None``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

REPAIRS = ("code_fence", "surrounding_text", "trailing_comma")
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class ReadJson:
    """What a raw text gave: the object (None when unrepairable), whether it parsed as it was,
    and the repairs that were needed."""

    value: dict | None
    raw_valid: bool
    repairs: tuple[str, ...] = ()

    @property
    def repaired(self) -> bool:
        return self.value is not None and not self.raw_valid


def _loads_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _object_span(text: str) -> str | None:
    """From the first ``{`` to the ``}`` that closes it (to the end when it never closes)."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def _drop_trailing_commas(text: str) -> str:
    out: list[str] = []
    in_string, escaped = False, False
    for i, ch in enumerate(text):
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch == ",":
            rest = text[i + 1 :].lstrip()
            if rest[:1] in ("}", "]"):
                continue
        out.append(ch)
    return "".join(out)


def read_json_object(text: str) -> ReadJson:
    """The JSON object in ``text``, repaired as documented above when needed."""
    stripped = text.strip()
    value = _loads_object(stripped)
    if value is not None:
        return ReadJson(value, True)
    repairs: list[str] = []
    current = stripped
    fence = _FENCE.search(current)
    if fence is not None:
        current = fence.group(1).strip()
        repairs.append("code_fence")
        if (value := _loads_object(current)) is not None:
            return ReadJson(value, False, tuple(repairs))
    span = _object_span(current)
    if span is not None and span != current:
        current = span
        repairs.append("surrounding_text")
        if (value := _loads_object(current)) is not None:
            return ReadJson(value, False, tuple(repairs))
    fixed = _drop_trailing_commas(current)
    if fixed != current:
        repairs.append("trailing_comma")
        if (value := _loads_object(fixed)) is not None:
            return ReadJson(value, False, tuple(repairs))
    return ReadJson(None, False, tuple(repairs))


__all__ = ["REPAIRS", "ReadJson", "read_json_object"]
