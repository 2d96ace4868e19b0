"""The one error type for user mistakes.

Every CLI turns a ``UserError`` into a single line on stderr and exit code 2; anything else
escaping is a bug in malpyeong and should show its traceback.
"""

from __future__ import annotations

import re
import unicodedata

MAX_DETAIL = 400  # a library's message, quoted in ours, is cut here (whole, on one line)


def printable(text: object) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``), so a value from a file (an
    id with a newline, say) can never forge extra lines or terminal escapes in our output."""
    s = str(text)
    if not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in s):
        return s
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in s)


def one_line(text: object, limit: int = MAX_DETAIL) -> str:
    """A library's (often multi-line) message as one line: whitespace runs become one space,
    and only a very long message is shortened (with an ellipsis, never silently)."""
    s = re.sub(r"\s+", " ", str(text)).strip()
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


class UserError(Exception):
    """A problem the user can fix: bad input file, unknown name, existing output, ..."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        item: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file, self.item, self.field, self.hint = file, item, field, hint
        self.problem = message
        super().__init__(self.line())

    def line(self) -> str:
        """``file: item <id>: field <name>: problem (hint)`` with the parts that are known, on
        one line whatever the parts hold."""
        parts = []
        if self.file:
            parts.append(str(self.file))
        if self.item is not None:
            parts.append(f"item {self.item}")
        if self.field:
            parts.append(f"field '{self.field}'")
        parts.append(self.problem)
        text = ": ".join(parts)
        if self.hint:
            text += f" ({self.hint})"
        return printable(text)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job that knows how it continues: the message says how (for training,
    ``--resume`` from the last checkpoint)."""


class UserErrors(UserError):
    """Several problems found at once (validation reports all of them, one line each)."""

    def __init__(self, errors: list[UserError]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} problem(s)")

    def lines(self) -> list[str]:
        return [e.line() for e in self.errors]
