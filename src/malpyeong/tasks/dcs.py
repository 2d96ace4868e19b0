"""DCS, 일상 대화 요약: summarise a long two-speaker dialogue on given keywords."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from malpyeong import metrics
from malpyeong.errors import UserError
from malpyeong.tasks.base import (
    BASELINE,
    OFFICIAL_SYSTEM,
    GenerateTask,
    Metric,
    Option,
    Problems,
    PromptSpec,
    Utterance,
    conversation_lines,
    parse_envelope,
)
from malpyeong.tasks.dcs_synthetic import synthetic_dcs
from malpyeong.tasks.registry import register
from malpyeong.tasks.rewards import Reward, format_reward, text_rewards

PERSONA_KO = (
    "당신은 긴 일상 대화를 정확하고 간결하게 요약하는 전문 편집자입니다. 대화에 없는 내용은 쓰지 않습니다."
)
PERSONA_EN = (
    "You are an editor who summarises long everyday conversations accurately and concisely, "
    "never adding facts that are not in the conversation."
)
STYLE_KO = (
    "'두 화자는 이 대화에서 ...에 대해 이야기했습니다.'로 시작하고, 각 화자가 한 말을 "
    "화자 이름으로 나누어 3~5문장으로 쓰세요."
)
STYLE_EN = (
    "Start with '두 화자는 이 대화에서 ...에 대해 이야기했습니다.' and write 3-5 Korean sentences, "
    "what each speaker said under the speaker's name."
)


@dataclass(frozen=True)
class DCSItem:
    id: str
    conversation: tuple[Utterance, ...]
    keywords: tuple[str, ...]
    summary: str
    raw: dict


@register
class DCSTask(GenerateTask):
    name = "dcs"
    editions = ("2024",)
    description = "일상 대화 요약: summarise a long dialogue on given keywords"
    metrics = (
        Metric("rouge1", help="ROUGE-1 F over Mecab morphemes, as the official scorer"),
        Metric("bertscore", help="BERTScore F1, bert-base-multilingual-cased layer 9"),
        Metric("bleurt", help="BLEURT-20 from a local checkpoint"),
        Metric("aggregate", help="the leaderboard figure: mean of the three, x100"),
    )
    dev_metric = "rouge1"
    evaluate_options = {
        "bertscore_model": Option("BERTScore model path or hub id (default bert-base-multilingual-cased)"),
        "bleurt_checkpoint": Option("local BLEURT-20 PyTorch checkpoint folder (without it: not computed)"),
        "skip": Option("metrics to leave out on purpose (rouge1, bertscore, bleurt)", many=True),
        "device": Option("device for the metric models"),
    }
    prompt_flags = {
        "persona": "an editor persona as system prompt",
        "style": "describe the official summary style (speaker by speaker, 3-5 sentences)",
        "en": "English instructions",
        "bilingual": "Korean and English instructions",
    }

    def synthetic_records(self, n: int, seed: int, split: str) -> list[dict]:
        """Summaries a tiny model can learn: a template sentence filled with the facts the
        dialogue states (:mod:`malpyeong.tasks.dcs_synthetic`)."""
        return synthetic_dcs(n, seed, f"synthetic-{split}", with_output=split != "test")

    def parse_item(self, record: Any, problems: Problems) -> DCSItem | None:
        rid, inp, utterances = parse_envelope(record, problems, utterance_ids=False)
        if inp is None:
            return None
        keywords = inp.get("subject_keyword")
        if (
            not isinstance(keywords, list)
            or not keywords
            or not all(isinstance(k, str) and k.strip() for k in keywords)
        ):
            problems.append(("input.subject_keyword", "missing or not a non-empty list of strings"))
            keywords = []
        if "output" not in record:
            problems.append(("output", 'missing (use "" in test files)'))
        output = record.get("output")
        if "output" in record and not isinstance(output, str):
            problems.append(("output", f"is a {type(output).__name__}, not a string"))
        if problems:
            return None
        return DCSItem(rid, tuple(utterances), tuple(keywords), output or "", record)

    def live_item(
        self,
        conversation: tuple[Utterance, ...],
        *,
        speaker: str | None = None,
        memory: str | None = None,
        persona: str | None = None,
        item_id: str = "live",
    ) -> DCSItem:
        """A live conversation to summarise (``run/chat.py --summarizer`` a DCS run): the
        task wants subject keywords, so the generic one, 일상 대화."""
        return DCSItem(item_id, tuple(conversation), ("일상 대화",), "", {})

    def has_output(self, item: DCSItem) -> bool:
        return bool(item.summary.strip())

    def reference(self, item: DCSItem) -> str:
        return item.summary

    def messages(self, item: DCSItem, spec: PromptSpec = BASELINE) -> list[dict]:
        chat = "\n".join(["[Conversation]", *conversation_lines(item.conversation)])
        keys = ", ".join(item.keywords)
        ko = f"[Question]\n위 {keys} 주제에 대한 대화를 요약해주세요."
        en = f"[Question]\nSummarise the conversation above on the topic(s): {keys}."
        question = {"ko": ko, "en": en, "bilingual": f"{ko}\n{en.split(chr(10), 1)[1]}"}[spec.language]
        if "style" in spec:
            question += (
                "\n" + {"ko": STYLE_KO, "en": STYLE_EN, "bilingual": f"{STYLE_KO}\n{STYLE_EN}"}[spec.language]
            )
        system = OFFICIAL_SYSTEM
        if "persona" in spec:
            system = {"ko": PERSONA_KO, "en": PERSONA_EN, "bilingual": f"{PERSONA_KO}\n{PERSONA_EN}"}[
                spec.language
            ]
        return [{"role": "system", "content": system}, {"role": "user", "content": chat + "\n\n" + question}]

    def parse_output(self, item: DCSItem, text: str) -> str | None:
        return self.clean_output(text) or None

    def clean_output(self, text: str) -> str:
        """Strip chat artefacts and a repeated tail from a generated summary."""
        return drop_repeated_tail(tidy_summary(text))

    # ----- rewards -----
    def rewards(self, bertscore_model: str | None = None, device: str | None = None) -> list[Reward]:
        """``format``: a summary that repeats no sentence (nothing for :func:`drop_repeated_tail`
        to cut); ``quality``: its ROUGE-1 F against the gold summary, as the official scorer
        counts it (``bertscore`` too with a model)."""
        return [
            format_reward(
                lambda item, text: well_formed_summary(text), "a non-empty summary that repeats no sentence"
            ),
            *text_rewards(self.reward_texts, bertscore_model, device, weight=1.0),
        ]

    def drop_order(self, item: DCSItem) -> list[int]:
        """The middle first, outwards; the first and last utterances stay."""
        n = len(item.conversation)
        middle = (n - 1) / 2
        return sorted(range(1, n - 1), key=lambda i: (abs(i - middle), i))

    def dedup_parts(self, item: DCSItem) -> list[str]:
        """The dialogue and its subject keywords, as one part."""
        return ["\n".join(self.dialogue_lines(item)) + "\n" + " ".join(item.keywords)]

    def evaluate(self, gold: list[DCSItem], outputs: dict[str, Any], **options: Any) -> dict:
        unknown = sorted(set(options.get("skip") or ()) - set(metrics.DCS_METRICS))
        if unknown:
            raise UserError(
                f"cannot skip {', '.join(unknown)}",
                field="skip",
                hint=f"metrics: {', '.join(metrics.DCS_METRICS)}",
            )
        refs = [it.summary for it in gold]
        preds = [outputs[it.id] for it in gold]
        return metrics.dcs_scores(refs, preds, **options)

    def item_scores(
        self, gold: list[DCSItem], outputs: dict[str, Any], metric: str, **options: Any
    ) -> list[float]:
        """Only ``metric`` is computed (the other model-based metrics are skipped)."""
        skip = [m for m in metrics.DCS_METRICS if m != metric]
        return super().item_scores(gold, outputs, metric, **{**options, "skip": skip})

    def dev_evaluate(self, gold: list[DCSItem], outputs: dict[str, Any]) -> dict:
        """ROUGE-1 only: the other two need models that a training run may not have."""
        return {"rouge1": metrics.rouge1([it.summary for it in gold], [outputs[it.id] for it in gold])}

    def format_report(self, report: dict) -> str:
        lines = []
        for name in metrics.DCS_METRICS:
            value = report.get(name)
            lines.append(f"{name:<10}{'not computed' if value is None else f'{value:.4f}'}")
        agg = report.get("aggregate")
        if agg is None:
            lines.append("aggregate not computed (no metric available)")
        else:
            note = (
                ""
                if report.get("complete")
                else f"  (mean of {', '.join(report['aggregate_of'])} only: not comparable with the leaderboard)"
            )
            lines.append(f"aggregate {agg:.2f}{note}")
        lines += [f"note: {n}" for n in report.get("notices", [])]
        return "\n".join(lines)

    def key_terms(self, item: DCSItem) -> tuple[str, ...]:
        return item.keywords

    def eda_columns(self, item: DCSItem) -> dict[str, Any]:
        """The gold summary's length."""
        return {"output_chars": len(item.summary) if item.summary.strip() else None}


def tidy_summary(text: str) -> str:
    """A generated summary without chat artefacts, a ``요약:`` lead, or extra whitespace."""
    text = re.sub(r"<\|[^|>]*\|>|<(?:start|end)_of_turn>|</?s>|<eos>|<bos>|\[/?INST\]", " ", text)
    text = re.sub(r"^\s*(?:model|assistant)\s*\n", "", text)
    text = re.sub(r"^\s*(?:요약|Summary)\s*[:：]\s*", "", text)
    return " ".join(text.split())


def well_formed_summary(text: str) -> bool:
    """Non-empty, and no sentence written twice (a decoding loop)."""
    tidy = tidy_summary(text)
    return bool(tidy) and drop_repeated_tail(tidy) == tidy


def drop_repeated_tail(text: str) -> str:
    """Cut a summary where it starts repeating a sentence it already wrote (a common decoding loop)."""
    sentences = re.split(r"(?<=[.!?다요])\s+", text)
    kept: list[str] = []
    seen: set[str] = set()
    for sentence in sentences:
        key = sentence.strip()
        if key and key in seen:
            break
        seen.add(key)
        kept.append(sentence)
    return " ".join(kept).strip()
