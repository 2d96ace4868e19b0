"""CCI, 대화 맥락 추론: pick the right inference (of three) about target utterances.

Baseline prompt = the official NIKL baseline's text, with its particle bug fixed: the official code
drops the question for categories without a final consonant (전제, 동기); we choose 으로/로 by the
last syllable's final consonant for every category.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

from malpyeong import metrics
from malpyeong.tasks.base import (
    BASELINE,
    OFFICIAL_SYSTEM,
    ChoiceTask,
    Metric,
    Problems,
    PromptSpec,
    Utterance,
    conversation_lines,
    parse_envelope,
)
from malpyeong.tasks.cci_synthetic import synthetic_cci
from malpyeong.tasks.registry import register

CATEGORIES = ("원인", "후행사건", "전제", "동기", "반응")
CATEGORY_EN = {
    "원인": "cause",
    "후행사건": "subsequent event",
    "전제": "prerequisite",
    "동기": "motivation",
    "반응": "emotional reaction",
}
# Our own wording of the guideline's five relations (원인, 후행 사건, 전제 조건, 내적 동기, 감정 반응).
DEFINITIONS_KO = {
    "원인": "원인: 대상 발화의 사건이나 상태가 일어나게 된 까닭",
    "후행사건": "후행 사건: 대상 발화의 사건 뒤에 이어서 일어날 수 있는 사건",
    "전제": "전제 조건: 대상 발화의 사건이 일어나기 위해 먼저 갖추어져 있어야 하는 상황이나 조건",
    "동기": "내적 동기: 대상 발화를 한 화자가 그렇게 말하거나 행동하게 만든 감정, 욕구, 목적",
    "반응": "감정 반응: 대상 발화에 대해 청자나 화자가 느끼거나 드러낼 감정",
}
DEFINITIONS_EN = {
    "원인": "cause: why the event or state in the target utterance came about",
    "후행사건": "subsequent event: what can happen next, after the event in the target utterance",
    "전제": "prerequisite: a situation or condition that must already hold for the target event",
    "동기": "motivation: the speaker's inner feeling, desire or goal behind the target utterance",
    "반응": "emotional reaction: the emotion the listener or speaker feels about the target utterance",
}
PERSONA_KO = (
    "당신은 한국어 대화의 맥락을 정확히 읽어내는 언어학자입니다. "
    "대화의 흐름과 화자의 의도를 근거로 가장 타당한 추론을 고릅니다."
)
PERSONA_EN = (
    "You are a linguist who reads the context of Korean conversations precisely and "
    "chooses the most plausible inference from the flow of the dialogue and the speakers' intent."
)
OUTPUTS = ("inference_1", "inference_2", "inference_3")


def josa_euro(word: str) -> str:
    """으로 after a final consonant other than ㄹ, 로 otherwise (after a vowel or ㄹ)."""
    last = word[-1]
    if not ("가" <= last <= "힣"):
        return "로"
    final = (ord(last) - ord("가")) % 28
    return "으로" if final not in (0, 8) else "로"  # 8 = ㄹ


@dataclass(frozen=True)
class CCIItem:
    id: str
    conversation: tuple[Utterance, ...]
    reference_id: tuple[str, ...]
    category: str
    options: tuple[str, str, str]
    label: int | None  # 0..2, None in test files
    raw: dict

    @property
    def reference_indices(self) -> list[int]:
        ids = set(self.reference_id)
        return [i for i, u in enumerate(self.conversation) if u.utterance_id in ids]


@register
class CCITask(ChoiceTask):
    name = "cci"
    editions = ("2024",)
    description = "대화 맥락 추론: pick the right inference of three about target utterances"
    n_choices = 3
    output_labels = OUTPUTS
    metrics = (Metric("accuracy", help="share of items whose predicted option is the gold one"),)
    dev_metric = "accuracy"
    target_styles = ("letter_text", "letter")
    prompt_flags = {
        "highlight": "quote the target (reference) utterances and mark them in the dialogue",
        "definitions": "explain the five inference categories",
        "cot": "ask for a short reasoning, then '정답: X'",
        "persona": "a linguist persona as system prompt",
        "en": "English instructions",
        "bilingual": "Korean and English instructions",
    }

    # ----- data -----
    def synthetic_records(self, n: int, seed: int, split: str) -> list[dict]:
        return synthetic_cci(n, seed, f"synthetic-{split}", with_output=split != "test")

    def parse_item(self, record: Any, problems: Problems) -> CCIItem | None:
        rid, inp, utterances = parse_envelope(record, problems, utterance_ids=True)
        if inp is None:
            return None
        ref = inp.get("reference_id")
        if not isinstance(ref, list) or not ref or not all(isinstance(r, str) for r in ref):
            problems.append(("input.reference_id", "missing or not a non-empty list of utterance ids"))
            ref = []
        elif utterances:
            known = {u.utterance_id for u in utterances}
            for r in ref:
                if r not in known:
                    problems.append(
                        ("input.reference_id", f"'{r}' is not an utterance_id of this conversation")
                    )
        category = inp.get("category")
        if category not in CATEGORIES:
            problems.append(("input.category", f"{category!r} is not one of {', '.join(CATEGORIES)}"))
        options = []
        for key in OUTPUTS:
            value = inp.get(key)
            if not isinstance(value, str) or not value.strip():
                problems.append((f"input.{key}", "missing or not a non-empty string"))
            options.append(value if isinstance(value, str) else "")
        if "output" not in record:
            problems.append(("output", 'missing (use "" in test files)'))
        output = record.get("output")
        label = None
        if output in OUTPUTS:
            label = OUTPUTS.index(output)
        elif output not in ("", None) or ("output" in record and output is None):
            problems.append(("output", f'{output!r} is not one of {", ".join(OUTPUTS)} or ""'))
        if problems:
            return None
        return CCIItem(rid, tuple(utterances), tuple(ref), category, tuple(options), label, record)

    def has_output(self, item: CCIItem) -> bool:
        return item.label is not None

    route_keys = ("category",)  # one expert per inference category (the 2024 winner's recipe)

    def route_value(self, item: CCIItem, key: str) -> str:
        if key != "category":
            raise KeyError(key)
        return item.category

    # ----- prompts -----
    def choices(self, item: CCIItem) -> list[str]:
        return list(item.options)

    def label_index(self, item: CCIItem) -> int | None:
        return item.label

    def permuted(self, item: CCIItem, order: tuple[int, ...]) -> CCIItem:
        options = tuple(item.options[j] for j in order)
        label = None if item.label is None else order.index(item.label)
        return replace(item, options=options, label=label)

    def question(self, item: CCIItem, spec: PromptSpec) -> str:
        cat = item.category
        if "highlight" in spec:
            ko = f"위 대화에서 [Target] 발화의 {cat}{josa_euro(cat)} 올바른 지문은?"
        else:
            ko = f"위 대화의 {cat}{josa_euro(cat)} 올바른 지문은?"
        en_target = "the [Target] utterance(s)" if "highlight" in spec else "the conversation above"
        en = f"Which option is the correct {CATEGORY_EN[cat]} of {en_target}?"
        return {"ko": ko, "en": en, "bilingual": f"{ko}\n{en}"}[spec.language]

    def messages(self, item: CCIItem, spec: PromptSpec = BASELINE) -> list[dict]:
        refs = set(item.reference_indices)
        highlight = "highlight" in spec
        parts = [
            "\n".join(
                ["[Conversation]", *conversation_lines(item.conversation, refs if highlight else set(), "★ ")]
            )
        ]
        if highlight:
            quoted = [
                f"화자{item.conversation[i].speaker}: {item.conversation[i].utterance}" for i in sorted(refs)
            ]
            parts.append("\n".join(["[Target]", *quoted]))
        if "definitions" in spec:
            table = DEFINITIONS_EN if spec.language == "en" else DEFINITIONS_KO
            lines = [table[item.category]]
            if spec.language == "bilingual":
                lines.append(DEFINITIONS_EN[item.category])
            parts.append("\n".join(["[Definition]", *lines]))
        parts.append("[Question]\n" + self.question(item, spec))
        options = "\n".join(
            f"{letter}. {text}" for letter, text in zip(self.letters, item.options, strict=True)
        )
        parts.append("[Option]\n" + options)
        if "cot" in spec:
            ko = "먼저 대화의 근거를 한두 문장으로 설명한 뒤, 마지막 줄에 '정답: A'처럼 답을 쓰세요."
            en = "First explain the evidence in one or two sentences, then write the answer on the last line as '정답: A'."
            parts.append({"ko": ko, "en": en, "bilingual": f"{ko}\n{en}"}[spec.language])
        system = OFFICIAL_SYSTEM
        if "persona" in spec:
            system = {"ko": PERSONA_KO, "en": PERSONA_EN, "bilingual": f"{PERSONA_KO}\n{PERSONA_EN}"}[
                spec.language
            ]
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]

    def answer_text(self, item: CCIItem, index: int, *, style: str | None = None) -> str:
        """``A. <option text>`` (default) or ``A`` (``style="letter"``)."""
        letter = self.letters[index]
        if self.check_target_style(style) == "letter":
            return letter
        return f"{letter}. {item.options[index]}"

    def target(self, item: CCIItem, *, style: str | None = None, rationale: str | None = None) -> str:
        """The gold answer (:meth:`answer_text`); with ``rationale`` (CoT) the rationale comes
        first and the answer line ``정답: A`` last."""
        if item.label is None:
            raise ValueError(f"item {item.id} has no gold output")
        if rationale:
            return f"{rationale.strip()}\n정답: {self.letters[item.label]}"
        return self.answer_text(item, item.label, style=style)

    distill_flags = frozenset({"cot"})  # a teacher gives its reasoning, then '정답: X'

    def rationale_of(self, text: str) -> str:
        """The text before the ``정답:`` line, trimmed."""
        m = re.search(r"정답\s*[:：]", text)
        return (text[: m.start()] if m else text).strip()

    def parse_answer(self, text: str) -> int | None:
        """The option a generated answer names ('정답: B', 'B. ...', 'B'), or None."""
        text = text.strip()
        m = re.search(r"정답\s*[:：]\s*\(?([A-C])\b", text) or re.match(r"\(?([A-C])(?:[.)\s]|$)", text)
        if m:
            return self.letters.index(m.group(1))
        return None

    # ----- length budget -----
    def drop_order(self, item: CCIItem) -> list[int]:
        """Farthest from the reference utterances first; the references themselves are never cut."""
        refs = item.reference_indices
        lo, hi = (min(refs), max(refs)) if refs else (0, len(item.conversation) - 1)
        candidates = [i for i in range(len(item.conversation)) if not (lo <= i <= hi)]
        return sorted(candidates, key=lambda i: (-(lo - i if i < lo else i - hi), i))

    def dedup_parts(self, item: CCIItem) -> list[str]:
        """The dialogue, and the question (category, reference ids, options): two questions about
        one dialogue are different items, a copy of the whole item is not."""
        question = "\n".join([item.category, " ".join(item.reference_id), *item.options])
        return ["\n".join(self.dialogue_lines(item)), question]

    # ----- metrics -----
    def evaluate(self, gold: list[CCIItem], outputs: dict[str, Any], **_: Any) -> dict:
        golds = [OUTPUTS[it.label] for it in gold]
        preds = [outputs[it.id] for it in gold]
        return metrics.cci_report(golds, preds, [it.category for it in gold])

    def format_report(self, report: dict) -> str:
        """Accuracy, per category, by gold position, the confusion matrix."""
        lines = [f"accuracy  {report['accuracy']:.4f}  ({report['correct']}/{report['n']})"]
        if report.get("by_category"):
            lines.append("by category:")
            for cat, r in report["by_category"].items():
                lines.append(f"  {pad(cat, 14)}{r['accuracy']:.4f}  ({r['correct']}/{r['n']})")
        lines.append("by gold position:")
        for label, r in report["by_gold_position"].items():
            lines.append(f"  {label:<14}{r['accuracy']:.4f}  ({r['correct']}/{r['n']})")
        labels = report["confusion"]["labels"]
        lines.append("confusion (rows: gold, columns: predicted):")
        lines.append(" " * 16 + "".join(f"{lab:>13}" for lab in labels))
        for lab, row in zip(labels, report["confusion"]["matrix"], strict=True):
            lines.append(f"  {lab:<14}" + "".join(f"{v:>13}" for v in row))
        dist = report.get("pred_distribution", {})
        if dist:
            lines.append("predicted: " + ", ".join(f"{k} {v}" for k, v in dist.items()))
        if report.get("invalid_predictions"):
            lines.append(f"invalid predictions: {report['invalid_predictions']}")
        return "\n".join(lines)

    # ----- EDA -----
    eda_labels = CATEGORY_EN

    def eda_columns(self, item: CCIItem) -> dict[str, Any]:
        """Category, reference position and option-length bias columns."""
        refs = item.reference_indices
        n = len(item.conversation)
        lens = [len(o) for o in item.options]
        gold = item.label
        return {
            "category": item.category,
            "references": len(refs),
            "ref_first": min(refs),
            "ref_last": max(refs),
            "ref_rel": (min(refs) / (n - 1)) if n > 1 else 0.0,
            "ref_from_end": n - 1 - max(refs),
        } | option_length_columns(lens, gold, self.letters)


def option_length_columns(lens: list[int], gold: int | None, letters: tuple[str, ...]) -> dict:
    """Gold position and whether the gold option is a longest / shortest one, beside what a
    gold option placed at random would score (ties share the max / min)."""
    return {
        "option_chars_mean": sum(lens) / len(lens),
        "gold": letters[gold] if gold is not None else None,
        "gold_chars": lens[gold] if gold is not None else None,
        "gold_longest": lens[gold] == max(lens) if gold is not None else None,
        "gold_shortest": lens[gold] == min(lens) if gold is not None else None,
        "chance_longest": lens.count(max(lens)) / len(lens),
        "chance_shortest": lens.count(min(lens)) / len(lens),
    }


def pad(text: str, width: int) -> str:
    """Left-justify by display width (a Hangul syllable takes two columns)."""
    used = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(width - used, 0)
