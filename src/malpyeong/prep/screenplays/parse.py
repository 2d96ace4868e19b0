"""Lines of a script to scenes of spoken turns, every other line dropped with its reason.

What a transcript holds besides speech, and what happens to it:

- ``[Scene: ...]`` (also ``(Scene ...)``, ``S#12.``, ``INT./EXT.``, ``[장면 ...]``) starts a new
  scene; ``[Time lapse]``, ``[Cut to ...]``, ``[Back at ...]``, ``Commercial Break``, opening
  and closing credits and ``End`` end one too, so no pair of lines crosses them;
- stage directions in ``(...)`` or ``[...]`` and notes in ``{...}`` are removed wherever they
  sit: a whole line, inside a speech, or inside a speaker label (``Ross (to Rachel):``). The
  removal matches each bracket with its own closing bracket (nested ones included), never the
  first ``(`` with the last ``)`` of a line, and runs on a speech after its wrapped lines were
  joined, so a direction broken over two lines goes as a whole;
- credits (``Written by:``, ``Transcribed by``, ``Teleplay by``...), transcriber notes
  (``Note:``, ``{Transcriber's Note: ...}``), titles (HTML headings) are dropped;
- a line with no speaker label right after a speech (no paragraph break in between) continues
  that speech; after a break it is narration, dropped;
- speeches of several speakers (``All:``, ``Monica and Rachel:``) are kept or dropped by choice.

Every line read gets exactly one fate (a speech, a continuation, or a drop reason), so the
counts of a report add up to the lines read.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field

from malpyeong.prep.screenplays.markup import Line, Source

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {")": "(", "]": "[", "}": "{"}

SCENE_HEADING = re.compile(r"^(?:[\[({]\s*(?:scene|장면|씬)\b|S\s*#\s*\d+|#\s*\d+\b|(?:INT|EXT)\.\s)", re.I)
SCENE_CHANGE = re.compile(
    r"^[\[(]\s*(?:time[\s-]*lapse|cut\s+(?:back\s+)?to\b|back\s+(?:at|in|to)\b|flash\s*back|"
    r"later\b|meanwhile\b|the\s+next\s+(?:day|morning|night)|that\s+(?:night|evening)|"
    r"시간\s*경과|잠시\s*후|다음\s*날)",
    re.I,
)
COMMERCIAL = re.compile(r"^(?:commercial\s+break|광고)$", re.I)
CREDITS_LINE = re.compile(
    r"^(?:(?:opening|closing|ending|end)\s+(?:credits|titles)|credits|opening\s+titles|"
    r"오프닝|엔딩\s*크레딧)$",
    re.I,
)
END_LINE = re.compile(r"^(?:(?:the\s+)?end(?:\s+of\s+(?:the\s+)?episode)?|끝)$", re.I)
# "Written by", "Originally written by", "Minor additions and adjustments by", "With Help From":
# the keyword within the first three words, "by" / "from" within three words after it.
CREDITS_BY = re.compile(
    r"^(?:[\w'-]+\s+){0,2}(?:written|transcri\w*|trascri\w*|teleplay|story|adjust\w*|"
    r"addition\w*|html\w*|direct\w*|produc\w*|edit\w*|correct\w*|typed|checked|help)"
    r"(?:\s+[\w'-]+){0,3}?\s+(?:by|from)\b",
    re.I,
)
NOTE_START = re.compile(r"^[\[({]\s*(?:(?:transcriber|author|editor)'?s?\s+)?notes?\s*[:.-]", re.I)
CREDIT_LABELS = frozenset(
    {
        "각본",
        "극본",
        "연출",
        "작가",
        "원작",
        "제작",
        "채록",
        "번역",
        "자막",
        "cast",
        "credits",
        "with help from",
    }
)
NOTE_LABELS = frozenset(
    {
        "note",
        "notes",
        "transcriber's note",
        "transcribers note",
        "transcriber note",
        "author's note",
        "editor's note",
        "disclaimer",
    }
)
SPEAKER = re.compile(r"^(?P<label>[^:：]{1,60}?)\s*[:：]\s*(?P<rest>.*)$")
PAREN_SPEAKER = re.compile(r"^\((?P<label>[^()]{1,40})\)\s*[:：]\s*(?P<rest>\S.*)$")
LABEL_CHARS = re.compile(r"^[^\W\d_][\w .'’&,/#+-]*$")
MULTI_WORDS = frozenset(
    {
        "all",
        "everyone",
        "everybody",
        "both",
        "together",
        "guys",
        "girls",
        "the guys",
        "the girls",
        "boys",
        "kids",
        "crowd",
        "group",
        "the gang",
        "모두",
        "다같이",
        "다 같이",
        "일동",
        "함께",
        "전원",
    }
)
MULTI_JOINERS = re.compile(r"\band\b|&|,|/|\+|\S(?:와|과|랑|이랑)\s")
ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-f]+|[a-z]+);", re.I)
ANGLE_DIRECTION = re.compile(r"<[^<>\n]*>")  # <laughs>, <to Rachel> (after entities are decoded)

DROP_REASONS = (
    "scene_heading",
    "scene_change",
    "stage_direction",
    "credits",
    "commercial_break",
    "end",
    "transcriber_note",
    "title",
    "no_speaker",
    "multi_speaker",
    "direction_only",
)


@dataclass
class Turn:
    speaker: str  # the label as written, directions and stray spaces removed
    text: str  # the speech, cleaned
    line: int  # index (among the lines read) of the line the speech starts on
    multi: bool  # several speakers at once (All:, Monica and Rachel:)


@dataclass
class Episode:
    name: str
    path: str
    encoding: str
    scenes: list[list[Turn]]
    lines_read: int
    fates: Counter = field(default_factory=Counter)  # "spoken", "continuation", drop reasons
    line_fates: list[tuple[str, str]] = field(default_factory=list)  # (fate, text) per line

    @property
    def dropped(self) -> dict[str, int]:
        return {r: self.fates[r] for r in DROP_REASONS if self.fates[r]}


def bracket_depth(text: str) -> int:
    """How many brackets are still open at the end of ``text``."""
    depth = 0
    for ch in text:
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS and depth:
            depth -= 1
    return depth


def strip_directions(text: str) -> str:
    """``text`` without its bracketed parts, each bracket matched with its own closing one.

    A closing bracket without an opening one is dropped; an opening bracket that is never
    closed drops the rest (a direction whose end is missing). Directions in angle brackets
    (``<laughs>``, ``<to Rachel>``, HTML-escaped as ``&lt;laughs&gt;`` on many pages) go too,
    but only as a closed pair: a lone ``<`` is a less-than sign, not a direction."""
    if ENTITY.search(text):
        text = html.unescape(text).replace("\xa0", " ")
    text = ANGLE_DIRECTION.sub(" ", text)
    out: list[str] = []
    stack: list[str] = []
    for ch in text:
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if stack:
                stack.pop()
        elif not stack:
            out.append(ch)
    return tidy("".join(out))


def tidy(text: str) -> str:
    """Entities decoded, whitespace collapsed, no space before closing punctuation."""
    if ENTITY.search(text):
        text = html.unescape(text).replace("\xa0", " ")
    text = " ".join(text.split())
    return re.sub(r"\s+([.,!?;:…])", r"\1", text).strip()


def clean_label(label: str) -> str:
    return " ".join(strip_directions(label).replace("’", "'").split()).strip(" .,-")


def is_label(label: str) -> bool:
    """A plausible speaker name: a few words of letters, starting with a letter."""
    return (
        0 < len(label) <= 40
        and len(label.split()) <= 6
        and "http" not in label.lower()
        and bool(LABEL_CHARS.match(label))
    )


def is_multi(label: str) -> bool:
    low = label.casefold()
    return low in MULTI_WORDS or bool(MULTI_JOINERS.search(low))


def _core(text: str) -> str:
    """The text without enclosing brackets and decoration, for keyword checks."""
    return " ".join(text.strip(" \t[](){}*-=_.:!").split())


def classify(line: Line) -> tuple[str, str | None, str]:
    """``(kind, speaker label, rest)`` for a line that starts a block.

    kinds: ``spoken`` (with label and the speech), ``direction``, ``plain`` (no label), and
    the drop reasons of lines that are never speech."""
    text = line.text
    core = _core(text)
    if SCENE_HEADING.match(text):
        return "scene_heading", None, text
    if COMMERCIAL.match(core):
        return "commercial_break", None, text
    if CREDITS_LINE.match(core):
        return "credits", None, text
    if END_LINE.match(core):
        return "end", None, text
    if NOTE_START.match(text):
        return "transcriber_note", None, text
    if SCENE_CHANGE.match(text):
        return "scene_change", None, text
    if CREDITS_BY.match(text):
        return "credits", None, text
    m = PAREN_SPEAKER.match(text)
    if m and is_label(clean_label(m["label"])):
        return "spoken", clean_label(m["label"]), m["rest"]
    if text[0] in OPENERS or ANGLE_DIRECTION.fullmatch(html.unescape(text) if ENTITY.search(text) else text):
        return "direction", None, text
    m = SPEAKER.match(text)
    if m:
        label = clean_label(m["label"])
        if label.casefold() in NOTE_LABELS:
            return "transcriber_note", None, text
        if label.casefold() == "scene":
            return "scene_heading", None, text
        if label.casefold() in CREDIT_LABELS:
            return "credits", None, text
        if is_label(label):
            return "spoken", label, m["rest"]
    return ("title" if line.heading else "plain"), None, text


# Markers a transcript sometimes runs into a speech's line; written in capitals they are never
# speech ("... About 20 minutes. CLOSING CREDITS").
INLINE_MARKERS = re.compile(r"((?:OPENING|CLOSING|ENDING) (?:CREDITS|TITLES)|COMMERCIAL BREAK)")


def split_inline_scenes(line: Line) -> list[Line]:
    """A scene heading in the middle of a line (``...the end. [Scene: ...]``) starts its own
    line, and a capitalised credits or commercial-break marker stands on its own."""
    parts = re.split(r"(?=[\[(]\s*scene\b)", line.text, flags=re.I)
    parts = [q for p in parts for q in INLINE_MARKERS.split(p)]
    parts = [p.strip() for p in parts if p.strip()]
    return [Line(p, line.heading) for p in parts] if len(parts) > 1 else [line]


@dataclass
class _Block:
    kind: str
    start: int
    parts: list[str]
    label: str | None = None


def _continues(block: _Block | None, kind: str, line: Line, after_break: bool) -> str | None:
    """The fate of ``line`` when it belongs to the open ``block`` (else None).

    - A bracket the block left open takes the lines that follow, even over a paragraph break,
      until something that is clearly not its rest (a speaker label, a scene heading).
    - A speech takes the unlabelled lines right after it (a speech wrapped over lines), and
      after a paragraph break only a quoted block (a song it sings) or the speech itself when
      it had no words yet (``Phoebe: (singing)`` before the verses).
    - A direction right after a speech belongs to it (and is removed with the others).
    """
    if block is None or kind not in ("plain", "direction"):
        return None
    text = " ".join(block.parts)
    if bracket_depth(text) > 0 and (block.kind != "spoken" or not after_break):
        return "continuation"
    if block.kind != "spoken":
        return None
    if not after_break:
        return "continuation" if kind == "plain" or strip_directions(line.text) else "stage_direction"
    if kind == "plain" and (line.quote or not strip_directions(text)):
        return "continuation"
    return None


def parse_source(source: Source, *, keep_multi: bool = True) -> Episode:
    """The scenes of spoken turns in one script, and the fate of every line read."""
    line_fates: list[tuple[str, str]] = []
    blocks: list[_Block] = []
    current: _Block | None = None
    after_break = False
    for raw in source.lines:
        if not raw.text:
            after_break = True
            continue
        for line in split_inline_scenes(raw):
            index = len(line_fates)
            line_fates.append(("", line.text))
            kind, label, rest = classify(line)
            fate = _continues(current, kind, line, after_break)
            after_break = False
            if fate:
                current.parts.append(line.text)
                line_fates[index] = (fate, line.text)
                continue
            kind = {"plain": "no_speaker", "direction": "stage_direction"}.get(kind, kind)
            current = _Block(kind, index, [rest], label)
            blocks.append(current)
    scenes: list[list[Turn]] = [[]]

    def fate(block: _Block, reason: str) -> None:
        line_fates[block.start] = (reason, line_fates[block.start][1])

    for block in blocks:
        if block.kind != "spoken":
            fate(block, block.kind)
            if (
                block.kind in ("scene_heading", "scene_change", "commercial_break", "credits", "end")
                and scenes[-1]
            ):
                scenes.append([])
            continue
        text = strip_directions(" ".join(block.parts))
        multi = is_multi(block.label)
        if not text:
            fate(block, "direction_only")
        elif multi and not keep_multi:
            fate(block, "multi_speaker")
        else:
            fate(block, "spoken")
            scenes[-1].append(Turn(block.label, text, block.start, multi))
    scenes = [s for s in scenes if s]
    fates = Counter(f for f, _ in line_fates)
    return Episode(source.name, source.path, source.encoding, scenes, len(line_fates), fates, line_fates)
