"""QMSum meetings (read by :mod:`.qmsum`) into memory items: one dialogue window per topic span.

    python run/convert.py --from qmsum --to memory --in val.jsonl --out memory.json \\
        --max_length 512 [--tokenizer Qwen/Qwen2.5-3B-Instruct]

- each ``relevant_text_span`` of each topic is a window, ``topic`` its topic (turns with no
  text are left out);
- a window too long for ``--max_length`` (prompt and answer together, as the recipe trains) is
  split at turn boundaries into consecutive windows: half of what the system prompt leaves goes
  to the dialogue, the rest to the answer; tokens are counted with ``--tokenizer`` when given,
  else estimated at 4 characters per token;
- ``key_facts``: the sentences of the answers of the specific queries whose spans fall inside
  the window (a split window gives each query to the part holding most of its span turns), as
  many as fit in the answer's room (the rest are counted);
- ``memory_summary``: the first sentence (the format asks for one) of the answer of the query
  that covers most of the window when it covers at least half of its turns (the span's own
  summary), else of the general query's answer;
- ``unresolved_refs`` and ``turn_count``: as for DialogSum (:mod:`.memory_labels`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from malpyeong.errors import UserError
from malpyeong.prep.converters.dialogsum_memory import validate
from malpyeong.prep.converters.memory_labels import (
    add_memory_options,
    cut_words,
    sentences,
    unresolved_refs,
)
from malpyeong.prep.converters.qmsum import Meeting, Query, Span, read_meetings
from malpyeong.prep.converters.registry import Converted, converter
from malpyeong.tasks.base import Utterance
from malpyeong.tasks.memory import (
    MAX_FACT_CHARS,
    MAX_FACTS,
    MAX_REF_CHARS,
    MAX_REFS,
    MAX_SUMMARY_CHARS,
    MAX_TOPIC_CHARS,
    SYSTEM_EN,
    TURNS_EN,
    MemoryTask,
    count_turns,
    dialogue_text,
    make_state,
)

CHARS_PER_TOKEN = 4  # the estimate without --tokenizer (English text)
TEMPLATE_TOKENS = 16  # chat-template tokens around the two turns and the answer
MIN_DIALOGUE_TOKENS = 32  # below this a window's dialogue would be a fragment: not split further


def add_qmsum_options(group: argparse._ArgumentGroup) -> None:
    add_memory_options(group)
    group.add_argument(
        "--max_length",
        type=int,
        default=512,
        help="qmsum: token budget of prompt + answer; longer windows are split "
        "at turn boundaries (default 512, the memory recipes')",
    )
    group.add_argument(
        "--tokenizer",
        default=None,
        help="qmsum: count tokens with this tokenizer (default: 4 characters per token)",
    )


def token_counter(name: str | None) -> Callable[[str], int]:
    if not name:
        return lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot load the tokenizer: {str(err).splitlines()[0][:160]}", field="tokenizer"
        ) from None
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _compact(state: dict) -> str:
    return json.dumps(state, ensure_ascii=False, separators=(",", ":"))


def _turns(span: Span) -> set[int]:
    return set(range(span[0], span[1] + 1))


def _query_turns(query: Query) -> set[int]:
    return set().union(*(_turns(s) for s in query.spans))


def split_window(
    turn_ids: list[int], lines: dict[int, str], budget: int, count: Callable[[str], int]
) -> list[list[int]]:
    """Consecutive runs of turns whose dialogue text fits in ``budget`` tokens (a turn longer
    than the budget is a run of its own)."""
    runs: list[list[int]] = []
    current: list[int] = []
    for i in turn_ids:
        if current and count("\n".join(lines[j] for j in [*current, i])) > budget:
            runs.append(current)
            current = []
        current.append(i)
    if current:
        runs.append(current)
    return runs


def _summary_source(
    window: set[int], queries: list[Query], general: str | None, stats: Counter
) -> str | None:
    """The answer the window's summary is led from: the query covering most of the window when
    it covers at least half of it (the span's own summary), else the general answer."""
    best = max(queries, key=lambda q: len(window & _query_turns(q)), default=None)
    if best is not None and 2 * len(window & _query_turns(best)) >= len(window):
        stats["summary_from_span_answer"] += 1
        return best.answer
    if general is not None:
        stats["summary_from_general_answer"] += 1
    return general


def fitted_state(
    facts: list[str],
    refs: list[str],
    topic: str,
    turns: int,
    source: str,
    room: int,
    count: Callable[[str], int],
    stats: Counter,
) -> dict:
    """The window's state within ``room`` tokens: the summary is the source's first sentence
    (the format asks for one), then as many facts as still fit (the rest are counted)."""
    summary = cut_words(sentences(source)[0], MAX_SUMMARY_CHARS)
    kept: list[str] = []
    for fact in facts[:MAX_FACTS]:
        trial = make_state([*kept, fact], refs, topic, turns, summary)
        if count(_compact(trial)) > room:
            break
        kept.append(fact)
    stats["facts_dropped_to_fit"] += len(facts) - len(kept)
    return make_state(kept, refs, topic, turns, summary)


def meeting_records(
    meeting: Meeting, reading: str, max_length: int, count: Callable[[str], int], stats: Counter
) -> list[dict]:
    """The memory items of one meeting (see the module docstring). Half of what the prompt
    leaves of ``max_length`` goes to the dialogue, the rest to the answer."""
    general = meeting.general[0].answer if meeting.general else None
    lines = {i: f"{t.speaker}: {t.content}" for i, t in enumerate(meeting.turns)}
    overhead = (
        count(SYSTEM_EN.replace("{turns}", TURNS_EN[reading])) + count("Conversation:") + TEMPLATE_TOKENS
    )
    dialogue_budget = max((max_length - overhead) // 2, MIN_DIALOGUE_TOKENS)
    records = []
    placed: set[int] = set()
    for t_index, topic in enumerate(meeting.topics):
        for s_index, span in enumerate(topic.spans):
            stats["windows"] += 1
            turn_ids = [i for i in sorted(_turns(span)) if meeting.turns[i].content]
            stats["empty_turns_dropped"] += len(_turns(span)) - len(turn_ids)
            if not turn_ids:
                continue
            inside = [q for q in meeting.specific if _query_turns(q) <= _turns(span)]
            placed.update(id(q) for q in inside)
            runs = split_window(turn_ids, lines, dialogue_budget, count)
            stats["windows_split"] += len(runs) > 1
            owner = {
                id(q): max(range(len(runs)), key=lambda k, q=q: (len(set(runs[k]) & _query_turns(q)), -k))
                for q in inside
            }
            for k, run in enumerate(runs):
                mine = sorted(
                    (q for q in inside if owner[id(q)] == k), key=lambda q: min(s[0] for s in q.spans)
                )
                source = _summary_source(set(run), mine, general, stats)
                if source is None:
                    stats["windows_without_summary"] += 1
                    continue
                utterances = [Utterance(meeting.turns[i].speaker, meeting.turns[i].content) for i in run]
                refs = [
                    cut_words(r, MAX_REF_CHARS) for r in unresolved_refs([u.utterance for u in utterances])
                ][:MAX_REFS]
                facts = [cut_words(s, MAX_FACT_CHARS) for q in mine for s in sentences(q.answer)]
                room = max_length - overhead - count(dialogue_text(tuple(utterances)))
                state = fitted_state(
                    facts,
                    refs,
                    cut_words(topic.name, MAX_TOPIC_CHARS),
                    count_turns(utterances, reading),
                    source,
                    room,
                    count,
                    stats,
                )
                stats["over_budget"] += count(_compact(state)) > room
                inp = {"conversation": [{"speaker": u.speaker, "utterance": u.utterance} for u in utterances]}
                if reading != "utterances":
                    inp["turn_count_by"] = reading
                rid = f"qmsum-{meeting.line}-t{t_index + 1}-s{s_index + 1}" + (
                    f"-w{k + 1}" if len(runs) > 1 else ""
                )
                records.append({"id": rid, "input": inp, "output": state})
    stats["queries_outside_topics"] += sum(id(q) not in placed for q in meeting.specific)
    stats["queries"] += len(meeting.specific)
    return records


@converter(
    "qmsum",
    MemoryTask.name,
    help="QMSum meetings -> memory items, one window per topic span "
    "(facts: the specific answers inside it), split to fit "
    "--max_length",
    add_options=add_qmsum_options,
)
def qmsum_to_memory(path: Path, args: argparse.Namespace) -> Converted:
    reading = getattr(args, "turn_count", "utterances")
    max_length = getattr(args, "max_length", 512)
    if max_length < 64:
        raise UserError(f"must be at least 64, got {max_length}", field="max_length")
    count = token_counter(getattr(args, "tokenizer", None))
    meetings = read_meetings(path)
    stats: Counter = Counter()
    records = [r for m in meetings for r in meeting_records(m, reading, max_length, count, stats)]
    if not records:
        raise UserError("no topic span with any text", file=str(path))
    validate(records, str(path))
    facts = [len(r["output"]["memory_state"]["key_facts"]) for r in records]
    stats["items"] = len(records)
    details = {
        "meetings": len(meetings),
        **stats,
        "facts_per_item": sum(facts) / len(records),
        "items_with_facts": sum(n > 0 for n in facts),
        "max_length": max_length,
        "tokens": getattr(args, "tokenizer", None) or f"{CHARS_PER_TOKEN} chars/token",
        "turn_count_by": reading,
    }
    report = (
        f"{len(records)} memory items from {stats['windows']} topic spans of "
        f"{len(meetings)} meetings; {stats['windows_split']} windows split at turn "
        f"boundaries to fit max_length {max_length} ({details['tokens']}); "
        f"{details['facts_per_item']:.2f} key facts per item ({details['items_with_facts']} "
        f"items with any); summary from the span's answer {stats['summary_from_span_answer']}"
        f", from the general answer {stats['summary_from_general_answer']}; "
        f"{stats['facts_dropped_to_fit']} facts left out to fit; "
        f"{stats['queries_outside_topics']} of {stats['queries']} specific queries outside "
        f"every topic span; {stats['over_budget']} items still over max_length"
    )
    return Converted(records, report, details=dict(details))


__all__ = ["fitted_state", "meeting_records", "qmsum_to_memory", "split_window"]
