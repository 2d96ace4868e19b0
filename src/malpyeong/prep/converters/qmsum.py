"""Reading QMSum (query-based meeting summarisation) files: one meeting per JSONL line.

A line holds ``topic_list`` (``topic``, ``relevant_text_span``), ``general_query_list``
(``query``, ``answer``), ``specific_query_list`` (``query``, ``answer``,
``relevant_text_span``) and ``meeting_transcripts`` (``speaker``, ``content``). Spans are lists
of ``[start, end]`` turn indices, inclusive, written as strings. The converters to our tasks
(memory state, long-context QA) read meetings through :func:`read_meetings`, which checks every
field and reports every problem at once (file, meeting line, field).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from malpyeong.errors import UserError, UserErrors
from malpyeong.io import json_loads, read_text, require_file

Span = tuple[int, int]  # first and last turn index, inclusive


@dataclass(frozen=True)
class Turn:
    speaker: str
    content: str


@dataclass(frozen=True)
class Query:
    query: str
    answer: str
    spans: tuple[Span, ...] = ()  # empty for general queries


@dataclass(frozen=True)
class Topic:
    name: str
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class Meeting:
    line: int  # 1-based line of the file: the meeting's name in messages and ids
    topics: tuple[Topic, ...]
    general: tuple[Query, ...]
    specific: tuple[Query, ...]
    turns: tuple[Turn, ...]


def _spans(value: Any, n_turns: int, where: str, problems: list[tuple[str, str]]) -> tuple[Span, ...]:
    spans = []
    if not isinstance(value, list):
        problems.append((where, "not a list of [start, end] pairs"))
        return ()
    for k, pair in enumerate(value):
        try:
            start, end = (int(x) for x in pair)
        except (TypeError, ValueError):
            problems.append((f"{where}[{k}]", f"{pair!r} is not a [start, end] pair of turn indices"))
            continue
        if not 0 <= start <= end < n_turns:
            problems.append((f"{where}[{k}]", f"[{start}, {end}] is outside the {n_turns} turns"))
            continue
        spans.append((start, end))
    return tuple(spans)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_meeting(record: Any, line: int, problems: list[tuple[str, str]]) -> Meeting | None:
    """One meeting, or None with every problem appended as ``(field, problem)``."""
    if not isinstance(record, dict):
        problems.append(("line", "not a JSON object"))
        return None
    turns = []
    raw_turns = record.get("meeting_transcripts")
    if not isinstance(raw_turns, list) or not raw_turns:
        problems.append(("meeting_transcripts", "missing or empty"))
        raw_turns = []
    for i, t in enumerate(raw_turns):
        speaker = _text(t.get("speaker")) if isinstance(t, dict) else None
        content = t.get("content") if isinstance(t, dict) else None
        if speaker is None or not isinstance(content, str):
            problems.append((f"meeting_transcripts[{i}]", "needs a speaker and a content string"))
            continue
        turns.append(Turn(speaker, content.strip()))
    n = len(raw_turns)
    topics, general, specific = [], [], []
    for i, t in enumerate(record.get("topic_list") or []):
        name = _text(t.get("topic")) if isinstance(t, dict) else None
        if name is None:
            problems.append((f"topic_list[{i}].topic", "missing or empty"))
            continue
        topics.append(
            Topic(
                name, _spans(t.get("relevant_text_span"), n, f"topic_list[{i}].relevant_text_span", problems)
            )
        )
    for key, out, with_spans in (
        ("general_query_list", general, False),
        ("specific_query_list", specific, True),
    ):
        for i, q in enumerate(record.get(key) or []):
            query = _text(q.get("query")) if isinstance(q, dict) else None
            answer = _text(q.get("answer")) if isinstance(q, dict) else None
            if query is None or answer is None:
                problems.append((f"{key}[{i}]", "needs a query and an answer string"))
                continue
            spans = (
                _spans(q.get("relevant_text_span"), n, f"{key}[{i}].relevant_text_span", problems)
                if with_spans
                else ()
            )
            out.append(Query(query, answer, spans))
    if problems:
        return None
    return Meeting(line, tuple(topics), tuple(general), tuple(specific), tuple(turns))


def read_meetings(path: str | os.PathLike) -> list[Meeting]:
    """Every meeting of a QMSum JSONL file; every problem reported at once."""
    path = require_file(path)
    errors: list[UserError] = []
    meetings = []
    for line, text in enumerate(read_text(path).lstrip("\ufeff").splitlines(), 1):
        if not text.strip():
            continue
        try:
            record = json_loads(text)
        except json.JSONDecodeError as err:
            errors.append(
                UserError(
                    f"not valid JSON (column {err.colno}: {err.msg})", file=str(path), item=f"line {line}"
                )
            )
            continue
        except ValueError as err:  # NaN / Infinity
            errors.append(UserError(f"not valid JSON ({err})", file=str(path), item=f"line {line}"))
            continue
        problems: list[tuple[str, str]] = []
        meeting = parse_meeting(record, line, problems)
        errors += [UserError(p, file=str(path), item=f"line {line}", field=f) for f, p in problems]
        if meeting is not None:
            meetings.append(meeting)
    if errors:
        raise UserErrors(errors[:20])
    if not meetings:
        raise UserError("no meetings in the file", file=str(path))
    return meetings


def span_text(meeting: Meeting, spans: tuple[Span, ...]) -> list[Turn]:
    """The turns the spans cover, in meeting order, each once."""
    keep = sorted({i for start, end in spans for i in range(start, end + 1)})
    return [meeting.turns[i] for i in keep]


__all__ = ["Meeting", "Query", "Span", "Topic", "Turn", "parse_meeting", "read_meetings", "span_text"]
