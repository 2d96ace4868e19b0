"""memory: the memory state of a multi-turn dialogue, as a validated JSON object.

In a multi-turn assistant a memory-state generator runs first on every turn and hands the
later components (routing, retrieval) a small state of the conversation so far::

    {"memory_state": {"key_facts": [...], "unresolved_refs": [...], "topic": "...",
                      "turn_count": 5},
     "memory_summary": "one sentence on the conversation so far"}

Data files use the NIKL envelope: ``{"id", "input": {"conversation": [{"speaker",
"utterance"}]}, "output": <the object> | ""}``. Two optional input fields:
``previous_state`` (a state the new turns update: the incremental use inside a chat loop) and
``turn_count_by`` (``utterances``, the default, or ``speaker_turns``).

``turn_count`` is a function of the input: the number of utterances of the conversation, or
with ``turn_count_by: speaker_turns`` the number of speaker turns (consecutive utterances of
one speaker count once); with a previous state, its count plus the new turns' (the first new
utterance starts a new speaker turn: the state does not say who spoke last). The model is
trained on the exact count, and the delivered value is always set from the input after
decoding, whatever the model wrote.

A gold item may carry further references beside its ``output`` (DialogSum's test split has
three summaries and three topics per dialogue): ``"references": {"memory_summary": [...],
"topic": [...]}``. Evaluation scores the summary's and the topic's ROUGE against all of them,
averaged (ROUGE-1.5.5's default for several references, and never kinder than the best one
alone), and the topic's exact match against any; a single-reference item is scored as before.

Generations are constrained to :meth:`MemoryTask.output_schema` by default (every string
non-empty, every field present, fixed key order, compact separators: the layout training
targets are written in). Without the constraint, :mod:`malpyeong.metrics.jsonrepair` reads what it can.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from malpyeong.errors import UserError
from malpyeong.metrics import memory as scores
from malpyeong.metrics.jsonrepair import read_json_object
from malpyeong.tasks.base import (
    BASELINE,
    GenerateTask,
    Metric,
    Option,
    Problems,
    PromptSpec,
    Utterance,
    parse_envelope,
)
from malpyeong.tasks.memory_combine import combine_states
from malpyeong.tasks.registry import register

TURN_READINGS = ("utterances", "speaker_turns")
STATE_FIELDS = ("key_facts", "unresolved_refs", "topic", "turn_count")
OUTPUT_FIELDS = ("memory_state", "memory_summary")

# Bounds of constrained decoding (validation does not apply them), so that a degenerate model
# cannot write forever; the converters keep their gold states within them (a memory state is
# small: the published model of this kind was trained with 512 tokens for prompt and answer).
MAX_TOPIC_CHARS = 160
MAX_SUMMARY_CHARS = 600
MAX_FACTS, MAX_FACT_CHARS = 12, 400
MAX_REFS, MAX_REF_CHARS = 8, 80
MAX_TURNS = 999_999

FORMAT = (
    '{"memory_state":{"key_facts":["..."],"unresolved_refs":["..."],"topic":"...",'
    '"turn_count":N},"memory_summary":"..."}'
)
SYSTEM_EN = (
    "You are the memory-state generator of a multi-turn dialogue system: on every turn you "
    "write the state of the conversation so far for the later components, as JSON only (no "
    f"code fence, no other text), in exactly this format:\n{FORMAT}\n"
    "key_facts: concrete facts stated (who, what, numbers, dates, places, plans), one sentence "
    "each; unresolved_refs: expressions in the last turns that point to something not named "
    "yet; topic: a few words; turn_count: {turns}; memory_summary: one sentence. After a "
    "previous memory state, the conversation holds only the new turns: update that state."
)
TURNS_EN = {
    "utterances": "the number of utterances in the conversation",
    "speaker_turns": "the number of speaker turns in the conversation (consecutive "
    "utterances of one speaker count once)",
}
SYSTEM_KO = (
    "당신은 멀티턴 대화 시스템의 메모리 상태 생성기입니다. 매 턴 지금까지의 대화 상태를 다음 구성 "
    "요소를 위해 JSON으로만(코드 블록이나 다른 글 없이) 정확히 이 형식으로 씁니다:\n"
    f"{FORMAT}\n"
    "key_facts: 대화에 나온 구체적인 사실(누가, 무엇을, 숫자, 날짜, 장소, 계획)을 한 문장씩; "
    "unresolved_refs: 최근 턴에서 아직 이름이 나오지 않은 대상을 가리키는 표현; topic: 몇 단어로 된 "
    "주제; turn_count: {turns}; memory_summary: 한 문장. 이전 메모리 상태 뒤의 대화는 새 턴뿐입니다: "
    "그 상태를 갱신하세요."
)
TURNS_KO = {
    "utterances": "대화의 발화 수",
    "speaker_turns": "대화의 화자 턴 수(한 화자의 연속된 발화는 하나로 셉니다)",
}


def count_turns(conversation: tuple[Utterance, ...] | list[Utterance], reading: str = "utterances") -> int:
    """``turn_count`` of a conversation: utterances, or speaker turns (runs of one speaker)."""
    if reading == "utterances":
        return len(conversation)
    if reading == "speaker_turns":
        return sum(
            1 for i, u in enumerate(conversation) if i == 0 or u.speaker != conversation[i - 1].speaker
        )
    raise UserError(
        f"unknown turn count reading '{reading}'", field="turn_count_by", hint=", ".join(TURN_READINGS)
    )


def _strings(value: Any, where: str, problems: Problems) -> None:
    if not isinstance(value, list):
        problems.append((where, "missing or not a list of strings"))
        return
    for i, s in enumerate(value):
        if not isinstance(s, str) or not s.strip():
            problems.append((f"{where}[{i}]", "not a non-empty string"))


def state_problems(value: Any, where: str = "output", *, turn_count: bool = True) -> Problems:
    """Every way ``value`` is not a memory object (``turn_count=False``: ignore that field,
    which is set from the input anyway)."""
    problems: Problems = []
    if not isinstance(value, dict):
        return [(where, f"is a {type(value).__name__}, not a memory object {{memory_state, memory_summary}}")]
    problems += [(f"{where}.{k}", "unknown field") for k in value if k not in OUTPUT_FIELDS]
    state = value.get("memory_state")
    if not isinstance(state, dict):
        problems.append((f"{where}.memory_state", "missing or not an object"))
    else:
        here = f"{where}.memory_state"
        problems += [(f"{here}.{k}", "unknown field") for k in state if k not in STATE_FIELDS]
        _strings(state.get("key_facts"), f"{here}.key_facts", problems)
        _strings(state.get("unresolved_refs"), f"{here}.unresolved_refs", problems)
        topic = state.get("topic")
        if not isinstance(topic, str) or not topic.strip():
            problems.append((f"{here}.topic", "missing or not a non-empty string"))
        count = state.get("turn_count")
        if turn_count and (type(count) is not int or count < 1):
            problems.append((f"{here}.turn_count", f"{count!r} is not an integer >= 1"))
    summary = value.get("memory_summary")
    if not isinstance(summary, str) or not summary.strip():
        problems.append((f"{where}.memory_summary", "missing or not a non-empty string"))
    return problems


REFERENCE_FIELDS = ("memory_summary", "topic")


def reference_problems(value: Any) -> Problems:
    """Every way ``value`` is not a ``references`` object of further gold strings."""
    if not isinstance(value, dict):
        return [("references", f"is a {type(value).__name__}, not an object {{memory_summary, topic}}")]
    problems: Problems = [(f"references.{k}", "unknown field") for k in value if k not in REFERENCE_FIELDS]
    for name in REFERENCE_FIELDS:
        if name in value:
            _strings(value[name], f"references.{name}", problems)
    return problems


def make_state(
    key_facts: list[str], unresolved_refs: list[str], topic: str, turn_count: int, memory_summary: str
) -> dict:
    """A memory object with its keys in the schema's order (strings stripped)."""
    return {
        "memory_state": {
            "key_facts": [f.strip() for f in key_facts],
            "unresolved_refs": [r.strip() for r in unresolved_refs],
            "topic": topic.strip(),
            "turn_count": turn_count,
        },
        "memory_summary": memory_summary.strip(),
    }


def with_turn_count(state: dict, turn_count: int) -> dict:
    s = state["memory_state"]
    return make_state(s["key_facts"], s["unresolved_refs"], s["topic"], turn_count, state["memory_summary"])


def dialogue_text(conversation: tuple[Utterance, ...]) -> str:
    """``speaker: utterance`` lines (a cut stretch shows as ``…``)."""
    return "\n".join(f"{u.speaker}: {u.utterance}" if u.speaker else u.utterance for u in conversation)


@dataclass(frozen=True)
class MemoryItem:
    id: str
    conversation: tuple[Utterance, ...]
    state: dict | None  # the gold output
    previous: dict | None  # input.previous_state
    turn_reading: str
    turn_count: int  # exact, from the input (kept when the length budget cuts utterances)
    raw: dict
    references: dict = field(default_factory=dict)  # further gold {"memory_summary", "topic"} lists


def _string_schema(max_chars: int) -> dict:
    # a JSON-schema pattern matches anywhere: some non-space character, i.e. non-empty once
    # stripped, as validation requires (and the cheapest such pattern to enforce: 0.07 ms a
    # token against 0.19 ms for "no space at either end" on the tiny model)
    return {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": r"\S"}


@register
class MemoryTask(GenerateTask):
    name = "memory"
    description = "dialogue memory state: key facts, unresolved references, topic, turn count, summary (JSON)"
    metrics = (
        Metric("key_facts_f1", help="key facts matched one-to-one (ROUGE-1 F >= threshold)"),
        Metric("key_facts_precision"),
        Metric("key_facts_recall"),
        Metric("unresolved_refs_f1"),
        Metric("unresolved_refs_precision"),
        Metric("unresolved_refs_recall"),
        Metric("summary_rouge1", help="memory_summary ROUGE-1 F (Mecab for Korean, words else)"),
        Metric("topic_exact", help="topic equal after normalisation"),
        Metric("topic_rougeL"),
        Metric("turn_count_acc_raw", help="turn_count as the model wrote it"),
        Metric("turn_count_acc_delivered", help="turn_count delivered (set from the input)"),
        Metric("json_valid_raw", help="raw generations that are a JSON object as written"),
        Metric("json_valid_repaired", help="... after the repair step"),
        Metric("schema_valid_raw", help="raw generations that pass the schema as written"),
        Metric("schema_valid_repaired", help="... after the repair step"),
        Metric("unrepairable", higher_is_better=False, help="raw generations nothing was read from"),
        Metric("summary_bertscore", help="with --bertscore_model"),
        Metric("key_facts_f1_bertscore", help="facts matched by BERTScore F1, with --bertscore_model"),
    )
    dev_metric = "summary_rouge1"
    evaluate_sidecar = ("text",)  # the raw generation, as the model wrote it
    combiner = "fields"
    prompt_flags = {"ko": "Korean instructions (default: English)"}
    evaluate_options = {
        "fact_threshold": Option(
            f"ROUGE-1 F a predicted fact needs to match a gold one (default {scores.FACT_THRESHOLD})"
        ),
        "bertscore_model": Option(
            "local BERTScore model: also summary BERTScore and facts matched by BERTScore"
        ),
        "device": Option("device for the metric models"),
    }

    def __init__(self) -> None:
        self._schema = self._build_schema()

    # ----- data -----
    def parse_item(self, record: Any, problems: Problems) -> MemoryItem | None:
        rid, inp, utterances = parse_envelope(record, problems, utterance_ids=False)
        if inp is None:
            return None
        reading = inp.get("turn_count_by", "utterances")
        if reading not in TURN_READINGS:
            problems.append(("input.turn_count_by", f"{reading!r} is not one of {', '.join(TURN_READINGS)}"))
        previous = inp.get("previous_state")
        if previous is not None:
            problems += state_problems(previous, "input.previous_state")
        if "output" not in record:
            problems.append(("output", 'missing (use "" in test files)'))
        output = record.get("output")
        if output != "" and "output" in record:
            problems += state_problems(output)
        references = record.get("references", {})
        problems += reference_problems(references)
        if problems:
            return None
        count = count_turns(utterances, reading)
        if previous is not None:
            count += previous["memory_state"]["turn_count"]
        gold = output["memory_state"]["turn_count"] if output else None
        if gold is not None and gold != count:  # turn_count is a function of the input
            what = "utterances" if reading == "utterances" else "speaker turns"
            before = " with the previous state's" if previous is not None else ""
            problems.append(
                ("output.memory_state.turn_count", f"{gold}, but the conversation has {count} {what}{before}")
            )
            return None
        return MemoryItem(
            rid, tuple(utterances), output or None, previous, reading, count, record, references
        )

    def has_output(self, item: MemoryItem) -> bool:
        return item.state is not None

    def reference(self, item: MemoryItem) -> dict:
        return item.state

    def check_output(self, value: Any) -> str | None:
        problems = state_problems(value)
        return "; ".join(f"{f}: {p}" for f, p in problems) if problems else None

    # ----- prompts -----
    def messages(self, item: MemoryItem, spec: PromptSpec = BASELINE) -> list[dict]:
        ko = "ko" in spec
        system = (SYSTEM_KO if ko else SYSTEM_EN).replace(
            "{turns}", (TURNS_KO if ko else TURNS_EN)[item.turn_reading]
        )
        parts = []
        if item.previous is not None:
            head = "이전 메모리 상태:" if ko else "Previous memory state:"
            parts.append(f"{head}\n{self.render_output(item.previous)}")
        parts.append(("대화:" if ko else "Conversation:") + "\n" + dialogue_text(item.conversation))
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]

    def render_output(self, output: dict) -> str:
        """Compact JSON in the schema's key order: exactly what constrained decoding writes."""
        s = output["memory_state"]
        ordered = make_state(
            s["key_facts"], s["unresolved_refs"], s["topic"], s["turn_count"], output["memory_summary"]
        )
        return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))

    def target(self, item: MemoryItem, *, style: str | None = None) -> str:
        """The gold state with the exact turn count (whatever the file says)."""
        self.check_target_style(style)
        if item.state is None:
            raise ValueError(f"item {item.id} has no gold output")
        return self.render_output(with_turn_count(item.state, item.turn_count))

    # ----- outputs -----
    def output_schema(self) -> dict:
        return self._schema

    @staticmethod
    def _build_schema() -> dict:
        """The JSON schema of constrained decoding: the format plus the decoding bounds above;
        ``x-guidance`` fixes the layout (no free whitespace, ``,`` and ``:`` separators)."""

        def strings(n: int, chars: int) -> dict:
            return {"type": "array", "items": _string_schema(chars), "maxItems": n}

        state = {
            "type": "object",
            "additionalProperties": False,
            "required": list(STATE_FIELDS),
            "properties": {
                "key_facts": strings(MAX_FACTS, MAX_FACT_CHARS),
                "unresolved_refs": strings(MAX_REFS, MAX_REF_CHARS),
                "topic": _string_schema(MAX_TOPIC_CHARS),
                "turn_count": {"type": "integer", "minimum": 1, "maximum": MAX_TURNS},
            },
        }
        return {
            "x-guidance": {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"},
            "type": "object",
            "additionalProperties": False,
            "required": list(OUTPUT_FIELDS),
            "properties": {"memory_state": state, "memory_summary": _string_schema(MAX_SUMMARY_CHARS)},
        }

    def parse_output(self, item: MemoryItem, text: str) -> dict | None:
        """The state in a raw generation (repaired when needed), with the exact turn count;
        None when no valid state can be read (the turn count the model wrote is not checked:
        it is replaced)."""
        value = read_json_object(text).value
        if value is None or state_problems(value, turn_count=False):
            return None
        return with_turn_count(value, item.turn_count)

    def fallback_output(self, item: MemoryItem) -> dict:
        """The previous state carried forward, or an empty state; the turn count exact."""
        if item.previous is not None:
            return with_turn_count(item.previous, item.turn_count)
        return make_state([], [], "unknown", item.turn_count, "unknown")

    def drop_order(self, item: MemoryItem) -> list[int]:
        """The oldest utterances first; the last one stays (its references are what matter)."""
        return list(range(len(item.conversation) - 1))

    def dedup_parts(self, item: MemoryItem) -> list[str]:
        return ["\n".join(self.dialogue_lines(item))]

    # ----- metrics -----
    def evaluate(self, gold: list[MemoryItem], outputs: dict[str, Any], **options: Any) -> dict:
        """``sidecar`` (``run/evaluate.py`` passes the results sidecar's raw ``text`` per id):
        also the raw generations' validity, before and after repair, and the turn count the
        model wrote."""
        threshold = options.get("fact_threshold")
        try:
            threshold = scores.FACT_THRESHOLD if threshold is None else float(threshold)
        except ValueError:
            raise UserError(f"not a number: {threshold!r}", field="fact_threshold") from None
        if not 0.0 < threshold <= 1.0:
            raise UserError(f"must be in (0, 1], got {threshold}", field="fact_threshold")
        sidecar = options.get("sidecar") or {}
        raw = [(sidecar.get(it.id) or {}).get("text", "") for it in gold] if sidecar else None
        return scores.memory_scores(
            [it.state for it in gold],
            [it.turn_count for it in gold],
            [outputs[it.id] for it in gold],
            raw,
            self.check_output,
            threshold=threshold,
            bertscore_model=options.get("bertscore_model"),
            device=options.get("device"),
            references=[it.references for it in gold],
        )

    def format_report(self, report: dict) -> str:
        lines = []
        for m in self.metrics:
            value = report.get(m.name)
            shown = (
                "not computed"
                if value is None
                else f"{value:.4f}"
                if isinstance(value, float)
                else str(value)
            )
            lines.append(f"{m.name:<26}{shown}")
        facts = report.get("facts", {})
        lines.append(
            f"facts: {facts.get('matched')} of {facts.get('predicted')} predicted match "
            f"{facts.get('gold')} gold (ROUGE-1 F >= {report.get('fact_threshold')})"
        )
        if report.get("repairs"):
            lines.append("repairs: " + ", ".join(f"{k} {v}" for k, v in report["repairs"].items()))
        if report.get("json_valid_raw") is None:
            lines.append("note: no sidecar with raw generations: raw rates not computed")
        if report.get("multi_reference"):
            lines.append(
                f"note: {report['multi_reference']} item(s) have several references: summary and topic "
                "ROUGE averaged over them, topic_exact against any"
            )
        if report.get("gold_turn_count_off"):
            lines.append(
                f"note: {report['gold_turn_count_off']} gold turn_count(s) differ from "
                "the input's count (scored against the input's)"
            )
        return "\n".join(lines)

    # ----- ensembles -----
    def combine_fields(self, item: MemoryItem, outputs: list[Any], weights: list[float]) -> dict:
        """Topic by weighted majority, facts and references kept when models holding more than
        half of the weight state them, the summary the members agree with most, the turn count
        exact (:mod:`malpyeong.tasks.memory_combine`)."""
        return combine_states(outputs, weights, item.turn_count)

    def eda_columns(self, item: MemoryItem) -> dict[str, Any]:
        if item.state is None:
            return {"output_chars": None}
        return {"output_chars": len(self.render_output(item.state))}
