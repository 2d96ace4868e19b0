"""Script files to lines of text: plain text, HTML transcript pages and Word documents.

Every reader returns :class:`Line` s in reading order, with an empty line wherever the source
breaks a paragraph (a blank line, ``<p>``, a Word paragraph), so the parser can tell a line
wrapped inside one speech (no break before it) from a new block. HTML follows the browser's
rules: markup is dropped, entities are decoded, runs of whitespace (the page's own line
wrapping included) become one space, ``<br>`` ends a line and block elements end a paragraph;
``<head>``, ``<script>`` and ``<style>`` are skipped. Text inside ``<h1>``-``<h6>`` is marked
as a heading (an episode title is not a speech).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from malpyeong.errors import UserError
from malpyeong.io import looks_utf16, text_of
from malpyeong.prep.screenplays.decode import decode_bytes

BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "hr",
        "li",
        "ul",
        "ol",
        "table",
        "tr",
        "td",
        "th",
        "blockquote",
        "pre",
        "center",
        "body",
        "html",
        "dl",
        "dt",
        "dd",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
    }
)
HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
SKIPPED_TAGS = frozenset({"head", "title", "script", "style"})
HTML_SUFFIXES = (".html", ".htm", ".xhtml", ".shtml")
DOCX_SUFFIXES = (".docx",)


@dataclass(frozen=True)
class Line:
    text: str  # "" marks a paragraph break
    heading: bool = False  # inside <h1>-<h6>: a title, never a speech
    quote: bool = False  # inside <blockquote>: a song or poem quoted by the speech before it


BREAK = Line("")


@dataclass
class Source:
    """One script file read into lines."""

    name: str  # the file's stem: the episode's name in ids and reports
    path: str
    lines: list[Line]
    encoding: str  # what the bytes were read as ("docx" for Word files)


class _HTMLLines(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[Line] = []
        self.buffer: list[str] = []
        self.skipping = 0
        self.heading = 0
        self.quote = 0

    def _flush(self, paragraph: bool) -> None:
        text = " ".join("".join(self.buffer).split())
        self.buffer = []
        if text:
            self.lines.append(Line(text, heading=self.heading > 0, quote=self.quote > 0))
        if paragraph and self.lines and self.lines[-1] != BREAK:
            self.lines.append(BREAK)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in SKIPPED_TAGS:
            self.skipping += 1
        elif tag == "br":
            self._flush(paragraph=False)
        elif tag in BLOCK_TAGS:
            self._flush(paragraph=True)
            self.heading += tag in HEADING_TAGS
            self.quote += tag == "blockquote"

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag == "br":
            self._flush(paragraph=False)
        elif tag in BLOCK_TAGS:
            self._flush(paragraph=True)

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in BLOCK_TAGS:
            self._flush(paragraph=True)
            if tag in HEADING_TAGS:
                self.heading = max(0, self.heading - 1)
            if tag == "blockquote":
                self.quote = max(0, self.quote - 1)

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.buffer.append(data.replace("\xa0", " "))


def html_lines(text: str) -> list[Line]:
    parser = _HTMLLines()
    parser.feed(text)
    parser.close()
    parser._flush(paragraph=True)
    return parser.lines


def text_lines(text: str) -> list[Line]:
    """Plain text: one :class:`Line` per line, blank lines as paragraph breaks."""
    out: list[Line] = []
    for raw in text.splitlines():
        line = " ".join(raw.replace("\xa0", " ").split())
        if line:
            out.append(Line(line))
        elif out and out[-1] != BREAK:
            out.append(BREAK)
    return out


def docx_lines(path: str | os.PathLike) -> list[Line]:
    """A Word document's paragraphs (soft line breaks end a line) and tables (a two-column row
    ``speaker | speech`` reads as ``speaker: speech``), in document order."""
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph
    except ImportError as err:  # pragma: no cover - python-docx is a dependency
        raise UserError(
            "reading .docx needs python-docx", file=str(path), hint="pip install python-docx"
        ) from err
    try:
        document = docx.Document(str(path))
    except Exception as err:  # noqa: BLE001 - a corrupt or mislabelled file
        raise UserError(f"not a readable Word document ({type(err).__name__})", file=str(path)) from None
    out: list[Line] = []
    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            out.extend(text_lines(Paragraph(child, document).text))
        elif tag == "tbl":
            for row in Table(child, document).rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                cells = [c for i, c in enumerate(cells) if c and c not in cells[:i]]
                if len(cells) == 2 and ":" not in cells[0]:
                    out.append(Line(f"{cells[0]}: {cells[1]}"))
                elif cells:
                    out.append(Line(" ".join(cells)))
                out.append(BREAK)
        if out and out[-1] != BREAK:
            out.append(BREAK)
    return out


def looks_like_html(text: str) -> bool:
    head = text[:2000].lower()
    return bool(re.search(r"<\s*(html|body|p|br|b|strong|div)\b", head))


def read_source(path: str | os.PathLike) -> Source:
    """Read one script file (plain text, HTML or .docx) into lines."""
    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", file=str(p), hint="check the path")
    if p.suffix.lower() in DOCX_SUFFIXES:
        return Source(p.stem, str(p), docx_lines(p), "docx")
    raw = p.read_bytes()
    text, encoding = decode_bytes(raw)
    if "\x00" in text:
        if looks_utf16(raw):  # UTF-16 without a BOM: a NUL between the letters, no speaker found
            text_of(raw, str(p), field="in")  # one line naming the file as UTF-16
        text = text.replace("\x00", "")  # stray NULs of a scraped page: never a crash
    if p.suffix.lower() in HTML_SUFFIXES or looks_like_html(text):
        return Source(p.stem, str(p), html_lines(text), encoding)
    return Source(p.stem, str(p), text_lines(text), encoding)
