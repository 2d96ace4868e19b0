"""QMSum -> qa: each specific query of a meeting becomes one question about its transcript.

The context is the whole transcript, one ``Speaker: words`` line per turn; the answer is the
query's reference answer; the rationale is the text of the query's relevant spans (the turns
an annotator marked as what the answer rests on), in the same line format. QMSum's
transcription marks (``{vocalsound}``, ``{disfmarker}``, ``{pause}``, ...) are removed: they are
noise to a reader and cost tokens; a turn left empty by that is left out. General queries have
no spans and are not converted.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from malpyeong.prep.converters.qmsum import Meeting, read_meetings, span_text
from malpyeong.prep.converters.registry import Converted, converter
from malpyeong.tasks.qa import QATask

MARK = re.compile(r"\{\w+\}")


def clean_turn(text: str) -> str:
    return " ".join(MARK.sub(" ", text).split())


def transcript_lines(meeting: Meeting) -> list[tuple[int, str]]:
    """``(turn index, "Speaker: words")`` for every turn with words left after cleaning."""
    lines = []
    for i, turn in enumerate(meeting.turns):
        words = clean_turn(turn.content)
        if words:
            lines.append((i, f"{turn.speaker}: {words}"))
    return lines


def meeting_items(meeting: Meeting, prefix: str) -> list[dict]:
    """One qa record per specific query of ``meeting``."""
    context = "\n".join(line for _, line in transcript_lines(meeting))
    records = []
    for k, query in enumerate(meeting.specific, 1):
        rationale = "\n".join(
            f"{t.speaker}: {clean_turn(t.content)}"
            for t in span_text(meeting, query.spans)
            if clean_turn(t.content)
        )
        output = {"answer": query.answer} | ({"rationale": rationale} if rationale else {})
        records.append(
            {
                "id": f"{prefix}-m{meeting.line:03d}-q{k:02d}",
                "input": {"context": context, "question": query.query},
                "output": output,
            }
        )
    return records


@converter(
    "qmsum",
    QATask.name,
    "QMSum meetings: each specific query -> a question about the "
    "transcript (answer; relevant spans' text as the rationale)",
)
def convert(path: Path, args: argparse.Namespace) -> Converted:
    meetings = read_meetings(path)
    prefix = f"qmsum-{path.stem.split('.')[0]}"
    records = [r for m in meetings for r in meeting_items(m, prefix)]
    marks = sum(len(MARK.findall(t.content)) for m in meetings for t in m.turns)
    contexts = sorted({len(r["input"]["context"]) for r in records})
    rationales = [len(r["output"]["rationale"]) for r in records if "rationale" in r["output"]]
    general = sum(len(m.general) for m in meetings)
    details = {
        "meetings": len(meetings),
        "items": len(records),
        "with_rationale": len(rationales),
        "general_queries_skipped": general,
        "marks_removed": marks,
        "context_chars": {"min": contexts[0], "median": statistics.median(contexts), "max": contexts[-1]},
        "rationale_chars": {
            "min": min(rationales, default=0),
            "median": statistics.median(rationales) if rationales else 0,
            "max": max(rationales, default=0),
        },
    }
    report = (
        f"{len(records)} qa items from {len(meetings)} meetings "
        f"({len(rationales)} with a rationale; {general} general queries not converted); "
        f"context {contexts[0]:,}-{contexts[-1]:,} characters "
        f"(median {statistics.median(contexts):,.0f}); {marks:,} transcription marks removed"
    )
    return Converted(records, report, details=details)
