"""The shape the two 2025 tasks share: a question in, ``{"answer": text}`` out.

Records: ``{"id", "input": {"question_type", "question", ...}, "output": {"answer"}}``; a test
file may leave ``output`` out (the official samples do), or give ``""``. The other input fields
(culture: category, domain, topic_keyword) are shown to the model as the official baseline
shows them, in a ``[기타 정보]`` list. The prompt is written per question type: an instruction,
the answer format, and (``baseline``) one worked example of our own; ``zeroshot`` leaves the
example out.

Retrieved passages (``--retrieve INDEX``: :meth:`Task.add_passages`) are listed before the
question; over the length budget the passages are cut, the last (least relevant) first, and
the question never (:meth:`AnswerTask.cuts`).

A generation is read back as the task says (:meth:`parse_output`), after the chat artefacts and
a leading ``답변:`` (which the baseline strips too) are removed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from malpyeong.errors import UserError
from malpyeong.metrics import korean2025 as k25
from malpyeong.retrieval.corpus import Passage
from malpyeong.tasks.base import BASELINE, Cuts, GenerateTask, Metric, Problems, PromptSpec, Utterance

log = logging.getLogger(__name__)
WARNED: set[tuple[object, str]] = set()  # (item id, spelling) already warned about

CHAT_ARTEFACTS = re.compile(r"<\|[^|>]*\|>|<(?:start|end)_of_turn>|</?s>|<eos>|<bos>|\[/?INST\]|</?think>")
ANSWER_LEAD = re.compile(r"^\s*(?:답변|답|정답|Answer)\s*[:：]\s*", re.IGNORECASE)

SYSTEM = {
    "ko": (
        "당신은 한국어 어문 규범과 한국의 역사, 문화, 생활에 밝은 AI 어시스턴트입니다. "
        "질문에 정확하고 간결하게 답하며, 같은 문장을 되풀이하지 않습니다."
    ),
    "en": (
        "You are an AI assistant who knows Korean language norms and Korean history, culture "
        "and daily life well. Answer accurately and concisely, in Korean, and never repeat a "
        "sentence."
    ),
}


@dataclass(frozen=True)
class AnswerItem:
    id: str
    question_type: str
    question: str
    info: tuple[tuple[str, str], ...]  # the other input fields, in file order
    answer: str  # "" in test files
    raw: dict
    passages: tuple[Passage, ...] = ()  # retrieved for this item (--retrieve)

    @property
    def conversation(self) -> tuple[Utterance, ...]:
        """The question as one utterance (EDA's and dedup's dialogue views)."""
        return (Utterance("", self.question),)


def clean_generation(text: str) -> str:
    """Chat artefacts (special tokens, an empty think block) and a leading ``답변:`` removed."""
    text = CHAT_ARTEFACTS.sub(" ", text).strip()
    return ANSWER_LEAD.sub("", text, count=1).strip()


def answer_of(output: Any) -> str:
    return output.get("answer", "") if isinstance(output, dict) else str(output)


def check_skip(skip: Any) -> None:
    unknown = sorted(set(skip or ()) - set(k25.TEXT_METRICS))
    if unknown:
        raise UserError(
            f"cannot skip {', '.join(unknown)}", field="skip", hint=f"metrics: {', '.join(k25.TEXT_METRICS)}"
        )


def format_2025(metrics: tuple[Metric, ...], report: dict) -> str:
    """One line per metric, the per-type counts, and whether the figure is the leaderboard's."""
    lines = []
    for m in metrics:
        value = report.get(m.name)
        lines.append(f"{m.name:<12}{'not computed' if value is None else f'{value:.4f}'}")
    counts = report["counts"]["by_type"]
    lines.append("items by type: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if not report.get("complete", True):
        lines.append(
            "final and descriptive from the available text metrics only: not comparable with the leaderboard"
        )
    return "\n".join(lines)


class AnswerTask(GenerateTask):
    """Parsing, prompts, passages and the output shape of a 2025 answer task."""

    question_types: ClassVar[tuple[str, ...]]
    type_aliases: ClassVar[dict[str, str]] = {}  # a misspelling the official files hold -> the type
    info_fields: ClassVar[tuple[str, ...]] = ()  # input fields that must be non-empty strings
    retrieval = True
    cut_unit = "retrieved passages"
    passages_heading: ClassVar[str] = "[참고 자료]"
    prompt_flags = {
        "zeroshot": "no worked example in the instruction",
        "persona": "an expert persona as system prompt",
        "en": "English instructions (the answer stays Korean)",
    }
    editions = ("2025",)

    # ----- data -----
    def parse_item(self, record: Any, problems: Problems) -> AnswerItem | None:
        if not isinstance(record, dict):
            problems.append(("item", f"is a {type(record).__name__}, not an object"))
            return None
        rid = record.get("id")
        if not isinstance(rid, str) or not rid:
            problems.append(("id", "missing or not a non-empty string"))
        inp = record.get("input")
        if not isinstance(inp, dict):
            problems.append(("input", "missing or not an object"))
            return None
        question = inp.get("question")
        if not isinstance(question, str) or not question.strip():
            problems.append(("input.question", "missing or not a non-empty string"))
        kind = inp.get("question_type")
        if kind in self.type_aliases:
            if (rid, kind) not in WARNED:  # once per item, however often the file is read
                WARNED.add((rid, kind))
                log.warning(
                    "item %s: question_type '%s' read as '%s' (a misspelling the official files hold)",
                    rid,
                    kind,
                    self.type_aliases[kind],
                )
            kind = self.type_aliases[kind]
        elif kind not in self.question_types:
            problems.append(
                ("input.question_type", f"{kind!r} is not one of {', '.join(self.question_types)}")
            )
        for name in self.info_fields:
            value = inp.get(name)
            if not isinstance(value, str) or not value.strip():
                problems.append((f"input.{name}", "missing or not a non-empty string"))
        info = []
        for key, value in inp.items():
            if key in ("question", "question_type"):
                continue
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                problems.append((f"input.{key}", "not a string or number"))
            info.append((key, str(value)))
        answer = ""
        output = record.get("output", "")
        if output not in ("", None):
            problem = self.check_output(output)
            if problem is None and isinstance(kind, str):
                problem = self.answer_problem(kind, output["answer"], inp)
            if problem:
                problems.append(("output", problem))
            else:
                answer = output["answer"]
        elif output is None and "output" in record:
            problems.append(("output", 'null; leave it out or use "" in test files'))
        if problems:
            return None
        return AnswerItem(rid, kind, question, tuple(info), answer, record)

    def answer_problem(self, question_type: str, answer: str, inp: dict) -> str | None:
        """What is wrong with a gold or predicted answer for this question type (None: fine)."""
        return None

    def has_output(self, item: AnswerItem) -> bool:
        return bool(item.answer.strip())

    def reference(self, item: AnswerItem) -> dict:
        return {"answer": item.answer}

    def check_output(self, value: Any) -> str | None:
        if not isinstance(value, dict) or set(value) != {"answer"}:
            return 'output must be {"answer": string}'
        if not isinstance(value["answer"], str) or not value["answer"].strip():
            return "output.answer must be a non-empty string"
        return None

    def check_output_for(self, item: AnswerItem, value: Any) -> str | None:
        return self.check_output(value) or self.answer_problem(
            item.question_type, value["answer"], item.raw.get("input", {})
        )

    def render_output(self, output: Any) -> str:
        return output["answer"].strip() if isinstance(output, dict) else str(output).strip()

    def output_text(self, output: Any) -> str:
        return output.get("answer", "") if isinstance(output, dict) else str(output)

    def fallback_output(self, item: AnswerItem) -> dict:
        return {"answer": "."}

    def route_value(self, item: AnswerItem, key: str) -> str:
        if key != "question_type":
            raise KeyError(key)
        return item.question_type

    route_keys = ("question_type",)

    # ----- prompts -----
    def instruction(self, item: AnswerItem, spec: PromptSpec) -> str:
        """The instruction for the item's question type (and its example unless zeroshot)."""
        raise NotImplementedError

    def system_prompt(self, spec: PromptSpec) -> str:
        return SYSTEM["en" if "en" in spec else "ko"]

    def messages(self, item: AnswerItem, spec: PromptSpec = BASELINE) -> list[dict]:
        parts = [self.instruction(item, spec)]
        if item.info:
            parts.append("\n".join(["[기타 정보]", *(f"- {k}: {v}" for k, v in item.info)]))
        if item.passages:
            lines = [self.passages_heading]
            for n, p in enumerate(item.passages, 1):
                lines.append(f"{n}. " + p.shown.replace("\n", " ", 1) if p.title else f"{n}. {p.text}")
            parts.append("\n".join(lines))
        parts.append(f"[질문]\n{item.question}")
        return [
            {"role": "system", "content": self.system_prompt(spec)},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    # ----- retrieval and the length budget -----
    def retrieval_query(self, item: AnswerItem) -> str:
        return item.question

    def with_passages(self, item: AnswerItem, passages: tuple[Passage, ...]) -> AnswerItem:
        return replace(item, passages=tuple(passages))

    def cuts(self, item: AnswerItem, spec: PromptSpec) -> Cuts:
        """The retrieved passages, the last (least relevant) first; never the question."""
        n = len(item.passages)
        return Cuts(n, lambda k: replace(item, passages=item.passages[: n - k]))

    def drop_order(self, item: AnswerItem) -> list[int]:
        return list(range(len(item.passages) - 1, -1, -1))

    def dedup_parts(self, item: AnswerItem) -> list[str]:
        return [item.question]

    def key_terms(self, item: AnswerItem) -> tuple[str, ...]:
        return tuple(v for k, v in item.info if k == "topic_keyword")

    # ----- reading generations -----
    def parse_output(self, item: AnswerItem, text: str) -> dict | None:
        answer = self.read_answer(item, clean_generation(text))
        return {"answer": answer} if answer else None

    def read_answer(self, item: AnswerItem, text: str) -> str:
        """The official answer text from a cleaned generation ("" when there is none)."""
        return text.strip()

    # ----- metrics -----
    def official_scores(self, golds: list[str], preds: list[str], types: list[str], scorer: Any) -> dict:
        """The official 2025 aggregate of this task (metrics.korean2025)."""
        raise NotImplementedError

    def evaluate(self, gold: list[AnswerItem], outputs: dict[str, Any], **options: Any) -> dict:
        check_skip(options.get("skip"))
        scorer = k25.official_text_scorer(
            options.get("bertscore_model"),
            options.get("bleurt_checkpoint"),
            skip=options.get("skip") or (),
            device=options.get("device"),
        )
        preds = [answer_of(outputs[it.id]) for it in gold]
        return self.official_scores(
            [it.answer for it in gold], preds, [it.question_type for it in gold], scorer
        )

    def dev_evaluate(self, gold: list[AnswerItem], outputs: dict[str, Any]) -> dict:
        """The metrics that need no model (BERTScore and BLEURT are skipped)."""
        return self.evaluate(gold, outputs, skip=("bertscore", "bleurt"))
