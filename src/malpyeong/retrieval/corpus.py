"""A user's corpus as passages: text, Markdown and JSONL files, cut by section or by size.

Every passage gets a stable id, ``<file stem>:<n>`` (n counts the file's passages from 1), so
a relevance file can name the passages a question needs and stays valid as long as the corpus
and the chunking are the same (the index folder keeps both, and ``run/retrieve.py build``
writes every passage with its id to ``passages.jsonl``).

- ``by="section"``: a Markdown file is cut at its headings (``#`` to ``######``); a passage is
  one section's text, its title the path of headings above it (``한글 맞춤법 > 제5장 > 제42항``);
  a plain text file is cut at blank lines (paragraphs); a JSONL record is one passage. A section
  longer than ``size`` characters is cut further, as ``by="size"`` cuts.
- ``by="size"``: pieces of at most ``size`` characters cut at a line, sentence or word
  boundary (:func:`malpyeong.retrieval.chunks.chunk_text`), ignoring headings.

JSONL records are ``{"text": ..., "id": optional, "title": optional}``; a record's own id is
kept (pieces of a long one get ``/2``, ``/3`` ...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from malpyeong.errors import UserError
from malpyeong.io import json_loads, require_file
from malpyeong.retrieval.chunks import chunk_text

BY = ("section", "size")
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".jsonl": "jsonl"}
DEFAULT_SIZE = {"section": 1200, "size": 300}  # characters; a section is kept whole up to this
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Passage:
    """One retrievable piece of the corpus."""

    id: str
    text: str
    source: str  # the file it came from (its name)
    title: str = ""  # the headings above it (Markdown) or the record's title (JSONL)

    @property
    def shown(self) -> str:
        """The passage as a prompt shows it and as it is indexed: title line, then text."""
        return f"[{self.title}]\n{self.text}" if self.title else self.text

    def as_record(self) -> dict:
        return {"id": self.id, "title": self.title, "source": self.source, "text": self.text}


def _pieces(text: str, size: int) -> list[str]:
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    return [p for c in chunk_text(text, size) if (p := text[c.start : c.end].strip())]


def _markdown_sections(text: str) -> list[tuple[str, str]]:
    """``(title, body)`` per section, the title the path of headings above the body."""
    path: list[tuple[int, str]] = []
    sections: list[tuple[str, str]] = []
    body: list[str] = []

    def flush() -> None:
        if "".join(body).strip():
            sections.append((" > ".join(t for _, t in path), "\n".join(body).strip()))
        body.clear()

    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        m = None if fence else HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            path = [(lv, t) for lv, t in path if lv < level] + [(level, m.group(2))]
        else:
            body.append(line)
    flush()
    return sections


def _jsonl_records(path: Path) -> list[tuple[str | None, str, str]]:
    """``(id, title, text)`` of every record of a JSONL corpus file."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json_loads(line)
        except ValueError as err:
            raise UserError(f"line {lineno} is not valid JSON ({err})", file=str(path)) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise UserError(
                f'line {lineno} is not an object with a "text" string',
                file=str(path),
                field="text",
                hint='one passage per line: {"id": ..., "title": ..., "text": ...}',
            )
        rid = rec.get("id")
        title = rec.get("title")
        out.append(
            (
                str(rid) if rid not in (None, "") else None,
                title if isinstance(title, str) else "",
                rec["text"],
            )
        )
    return out


def read_corpus(
    paths: Sequence[str | os.PathLike], *, by: str = "section", size: int | None = None
) -> list[Passage]:
    """Every file's passages, in file order; one error naming a file that cannot be read."""
    if by not in BY:
        raise UserError(f"unknown chunking '{by}'", field="by", hint="section or size")
    size = size or DEFAULT_SIZE[by]
    if size < 20:
        raise UserError(f"must be at least 20 characters, got {size}", field="chunk_chars")
    if not paths:
        raise UserError("no corpus files given", field="corpus")
    passages: list[Passage] = []
    stems: dict[str, str] = {}
    for raw in paths:
        path = require_file(raw, field="corpus")
        kind = SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise UserError(
                f"unknown corpus file type '{path.suffix}'",
                file=str(path),
                field="corpus",
                hint="text (.txt), Markdown (.md) or JSONL (.jsonl)",
            )
        if path.stem in stems:
            raise UserError(
                f"two corpus files named '{path.stem}' (passage ids would clash)",
                file=str(path),
                field="corpus",
                hint=f"the other is {stems[path.stem]}; rename one",
            )
        stems[path.stem] = str(path)
        passages += _file_passages(path, kind, by, size)
    if not passages:
        raise UserError("the corpus has no text", file=str(paths[0]), field="corpus")
    ids = [p.id for p in passages]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"passage id '{dup}' occurs twice", field="corpus", hint="ids must be unique")
    return passages


def _file_passages(path: Path, kind: str, by: str, size: int) -> list[Passage]:
    name = path.name
    if kind == "jsonl":
        out = []
        for n, (rid, title, text) in enumerate(_jsonl_records(path), 1):
            base = rid or f"{path.stem}:{n}"
            parts = _pieces(text, size) if by == "size" or len(text) > size else [text.strip()]
            for k, part in enumerate(p for p in parts if p):
                out.append(Passage(base if k == 0 else f"{base}/{k + 1}", part, name, title))
        return out
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"not UTF-8 text (byte {err.start})", file=str(path)) from None
    if by == "size":
        sections = [("", text)]
    elif kind == "markdown":
        sections = _markdown_sections(text)
    else:
        sections = [("", p) for p in BLANK_LINES.split(text)]
    out = []
    for title, body in sections:
        for part in _pieces(body, size):
            out.append(Passage(f"{path.stem}:{len(out) + 1}", part, name, title))
    return out


def write_passages(passages: Sequence[Passage], fh) -> None:  # noqa: ANN001 - a text file
    for p in passages:
        fh.write(json.dumps(p.as_record(), ensure_ascii=False) + "\n")


__all__ = ["BY", "DEFAULT_SIZE", "Passage", "read_corpus", "write_passages"]
