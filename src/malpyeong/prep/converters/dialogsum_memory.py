"""DialogSum (JSONL: ``fname``, ``dialogue``, ``summary``, ``topic``) into memory items.

    python run/convert.py --from dialogsum --to memory --in dialogsum.dev.jsonl --out memory.json

The train and dev splits have one ``summary`` and one ``topic``; the test split has three of
each (``summary1``..``summary3``, ``topic1``..``topic3``): the first are the item's output,
the others its ``references`` (``{"memory_summary": [...], "topic": [...]}``), which evaluation
scores against as well (:mod:`malpyeong.metrics.memory`).

- conversation: each ``#Person1#: ...`` line of ``dialogue`` is an utterance, the speaker as
  written (``#Person1#``); a line with no speaker continues the utterance before it;
- ``topic``: the record's topic; ``memory_summary``: its summary;
- ``key_facts``: the summary's sentences (a summary sentence states one fact of the dialogue);
- ``unresolved_refs``: the rule of :mod:`.memory_labels` on the last two utterances;
- ``turn_count``: counted (``--turn_count``).

Strings longer than the memory task's decoding bounds are cut at a word (counted in the report).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

from malpyeong.data import item_label, read_records
from malpyeong.errors import UserError, UserErrors
from malpyeong.prep.converters.memory_labels import (
    add_memory_options,
    cut_words,
    sentences,
    unresolved_refs,
)
from malpyeong.prep.converters.registry import Converted, converter
from malpyeong.tasks.base import Utterance
from malpyeong.tasks.memory import (
    MAX_FACT_CHARS,
    MAX_FACTS,
    MAX_REF_CHARS,
    MAX_REFS,
    MAX_SUMMARY_CHARS,
    MAX_TOPIC_CHARS,
    MemoryTask,
    count_turns,
    make_state,
)

_SPEAKER_LINE = re.compile(r"^\s*(#[^#:]+#)\s*:\s?(.*)$")


def dialogue_utterances(dialogue: str) -> tuple[list[Utterance], int]:
    """The utterances of a DialogSum dialogue, and how many lines continued the one before."""
    utterances: list[Utterance] = []
    joined = 0
    for line in dialogue.split("\n"):
        if not line.strip():
            continue
        m = _SPEAKER_LINE.match(line)
        if m:
            utterances.append(Utterance(m.group(1), m.group(2).strip()))
        elif utterances:
            last = utterances[-1]
            utterances[-1] = Utterance(last.speaker, f"{last.utterance} {line.strip()}".strip())
            joined += 1
        else:
            raise ValueError("the dialogue does not start with a '#PersonN#:' line")
    return utterances, joined


def memory_record(
    rid: str,
    utterances: list[Utterance],
    topic: str,
    summary: str,
    reading: str,
    cuts: Counter,
    references: dict[str, list[str]] | None = None,
) -> dict:
    """One memory item from a DialogSum dialogue (see the module docstring)."""

    def cut(text: str, limit: int, what: str) -> str:
        short = cut_words(text, limit)
        cuts[what] += short != text
        return short

    facts = [cut(s, MAX_FACT_CHARS, "fact") for s in sentences(summary)]
    cuts["facts_beyond_max"] += max(0, len(facts) - MAX_FACTS)
    refs = [cut(r, MAX_REF_CHARS, "ref") for r in unresolved_refs([u.utterance for u in utterances])]
    state = make_state(
        facts[:MAX_FACTS],
        refs[:MAX_REFS],
        cut(topic, MAX_TOPIC_CHARS, "topic"),
        count_turns(utterances, reading),
        cut(summary, MAX_SUMMARY_CHARS, "summary"),
    )
    inp: dict[str, Any] = {
        "conversation": [{"speaker": u.speaker, "utterance": u.utterance} for u in utterances]
    }
    if reading != "utterances":
        inp["turn_count_by"] = reading
    record = {"id": rid, "input": inp, "output": state}
    limits = {"memory_summary": (MAX_SUMMARY_CHARS, "summary"), "topic": (MAX_TOPIC_CHARS, "topic")}
    extra = {k: [cut(v, *limits[k]) for v in vs] for k, vs in (references or {}).items() if vs}
    if extra:
        record["references"] = extra
    return record


NUMBERED = re.compile(r"^(summary|topic)(\d+)$")


def reference_fields(row: dict) -> tuple[dict[str, list], list[str]]:
    """``{"summary": [...], "topic": [...]}`` of a DialogSum row, one each (train, dev) or
    numbered from 1 (test: ``summary1``..``summary3``), and the fields that are wrong."""
    if "summary" in row or "topic" in row or not any(NUMBERED.match(k) for k in row):
        values = {k: [row.get(k)] for k in ("summary", "topic")}
        return values, [k for k, v in values.items() if not isinstance(v[0], str) or not v[0].strip()]
    numbers = sorted({int(m[2]) for k in row if (m := NUMBERED.match(k))})
    bad = []
    if numbers != list(range(1, len(numbers) + 1)):
        bad.append(f"summary1 to summary{numbers[-1]} (numbered from 1 without gaps)")
    values = {k: [row.get(f"{k}{i}") for i in numbers] for k in ("summary", "topic")}
    bad += [
        f"{k}{i}"
        for k, vs in values.items()
        for i, v in zip(numbers, vs, strict=True)
        if not isinstance(v, str) or not v.strip()
    ]
    return values, bad


def validate(records: list[dict], name: str) -> None:
    """Every record through the memory task's own parser: what comes out, validates."""
    task = MemoryTask()
    errors = []
    for index, rec in enumerate(records):
        problems: list[tuple[str, str]] = []
        task.parse_item(rec, problems)
        errors += [UserError(p, file=name, item=item_label(rec, index), field=f) for f, p in problems]
    if errors:
        raise UserErrors(errors[:20])


@converter(
    "dialogsum",
    MemoryTask.name,
    help="DialogSum JSONL (fname, dialogue, summary, topic) -> memory items (facts: summary sentences)",
    add_options=add_memory_options,
)
def dialogsum_to_memory(path: Path, args: argparse.Namespace) -> Converted:
    reading = getattr(args, "turn_count", "utterances")
    rows = read_records(path)
    if not isinstance(rows, list) or not rows:
        raise UserError("expected DialogSum records (JSONL or a JSON list)", file=str(path))
    errors: list[UserError] = []
    records: list[dict] = []
    cuts: Counter = Counter()
    joined = 0
    for index, row in enumerate(rows):
        label = str(row["fname"]) if isinstance(row, dict) and row.get("fname") else item_label(row, index)
        if not isinstance(row, dict):
            errors.append(UserError(f"is a {type(row).__name__}, not an object", file=str(path), item=label))
            continue
        dialogue = row.get("dialogue")
        refs, bad = reference_fields(row)
        if not isinstance(dialogue, str) or not dialogue.strip():
            bad.insert(0, "dialogue")
        if bad:
            errors += [
                UserError("missing or not a non-empty string", file=str(path), item=label, field=k)
                for k in bad
            ]
            continue
        try:
            utterances, n = dialogue_utterances(dialogue)
        except ValueError as err:
            errors.append(UserError(str(err), file=str(path), item=label, field="dialogue"))
            continue
        joined += n
        rid = str(row.get("fname") or f"dialogsum-{index + 1}")
        summaries, topics = [s.strip() for s in refs["summary"]], [t.strip() for t in refs["topic"]]
        extra = {"memory_summary": summaries[1:], "topic": topics[1:]}
        records.append(memory_record(rid, utterances, topics[0], summaries[0], reading, cuts, extra))
    if errors:
        raise UserErrors(errors[:20])
    validate(records, str(path))
    facts = [len(r["output"]["memory_state"]["key_facts"]) for r in records]
    refs = [len(r["output"]["memory_state"]["unresolved_refs"]) for r in records]
    turns = sorted(r["output"]["memory_state"]["turn_count"] for r in records)
    details = {
        "items": len(records),
        "facts_per_item": sum(facts) / len(records),
        "refs_per_item": sum(refs) / len(records),
        "items_with_refs": sum(n > 0 for n in refs),
        "turn_count_by": reading,
        "turn_count_min": turns[0],
        "turn_count_median": turns[len(turns) // 2],
        "turn_count_max": turns[-1],
        "lines_joined": joined,
        "cut_to_bounds": dict(cuts),
    }
    cut = sum(v for k, v in cuts.items() if k != "facts_beyond_max")
    report = (
        f"{len(records)} memory items from {len(rows)} DialogSum dialogues; "
        f"{details['facts_per_item']:.2f} key facts per item (summary sentences), "
        f"{details['refs_per_item']:.2f} unresolved refs per item "
        f"({details['items_with_refs']} items with any); turn_count {turns[0]}-{turns[-1]} "
        f"(median {details['turn_count_median']}, {reading}); {joined} continuation lines "
        f"joined; {cut} strings cut to the decoding bounds, {cuts['facts_beyond_max']} facts "
        f"beyond {MAX_FACTS} dropped"
    )
    several = sum("references" in r for r in records)
    if several:
        details["items_with_several_references"] = several
        report += f"; {several} items with several references (the others kept for evaluation)"
    return Converted(records, report, details=details)


__all__ = ["dialogsum_to_memory", "dialogue_utterances", "memory_record"]
