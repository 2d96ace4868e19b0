"""QA, long-context question answering with rationales: answer a question from a long
document, then say why.

Records: ``{"id", "input": {"context", "question"}, "output": {"answer", "rationale"} | ""}``;
``rationale`` may be absent (answer-only training data). The model sees a system turn (answer
from the content, then explain), then ``###내용:`` the document and ``###질문:`` the question;
it writes ``###답:`` the answer and ``###추론:`` the reasoning, in one assistant turn that the
chat template's own end-of-turn closes (the training completion, see
:mod:`malpyeong.training.examples`).

Over the length budget only the document is cut, never the question: in chunks
(:mod:`malpyeong.retrieval.chunks`), from the middle outwards (``head_tail``, the default: the start
and the end stay) or the chunks least relevant to the question first (``retrieve``: BM25; what
stays keeps its document order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from malpyeong.errors import UserError
from malpyeong.metrics import qa as qa_metrics
from malpyeong.retrieval.chunks import (
    bm25_scores,
    chunk_text,
    least_relevant_first,
    middle_out,
)
from malpyeong.tasks.base import (
    BASELINE,
    Cuts,
    GenerateTask,
    Metric,
    Option,
    Problems,
    PromptSpec,
    Utterance,
)
from malpyeong.tasks.registry import register
from malpyeong.tasks.rewards import Reward, format_reward, text_rewards

SYSTEM = {
    "ko": (
        "당신은 긴 문서를 꼼꼼히 읽고 질문에 답하는 AI 어시스턴트입니다. 주어진 내용만을 근거로 "
        "질문에 답한 뒤, 그 답에 이른 추론을 설명하세요."
    ),
    "en": (
        "You are an AI assistant who reads long documents carefully and answers questions "
        "about them. Answer the question from the given content only, then explain the "
        "reasoning that led to the answer."
    ),
}
SYSTEM_ANSWER_ONLY = {
    "ko": "당신은 긴 문서를 꼼꼼히 읽고 질문에 답하는 AI 어시스턴트입니다. 주어진 내용만을 근거로 질문에 답하세요.",
    "en": (
        "You are an AI assistant who reads long documents carefully and answers questions "
        "about them. Answer the question from the given content only."
    ),
}
SYSTEM_RATIONALE_FIRST = {
    "ko": (
        "당신은 긴 문서를 꼼꼼히 읽고 질문에 답하는 AI 어시스턴트입니다. 주어진 내용만을 근거로 "
        "먼저 추론을 설명한 뒤, 답을 쓰세요."
    ),
    "en": (
        "You are an AI assistant who reads long documents carefully and answers questions "
        "about them. From the given content only, first explain your reasoning, then give "
        "the answer."
    ),
}
# the section markers, per language: content, question, answer, reasoning
MARKERS = {
    "ko": ("###내용:", "###질문:", "###답:", "###추론:"),
    "en": ("###Content:", "###Question:", "###Answer:", "###Reasoning:"),
}
ANSWER_MARK = re.compile(r"#{2,3}\s*(?:답|정답|Answer)\s*[:：]", re.IGNORECASE)
RATIONALE_MARK = re.compile(r"#{2,3}\s*(?:추론|근거|Reasoning|Rationale)\s*[:：]", re.IGNORECASE)
CHAT_ARTEFACTS = re.compile(r"<\|[^|>]*\|>|<(?:start|end)_of_turn>|</?s>|<eos>|<bos>|\[/?INST\]")
GAP = "…"  # stands where chunks of the document were cut


@dataclass(frozen=True)
class QAItem:
    id: str
    context: str
    question: str
    answer: str  # "" in test files
    rationale: str | None  # None when the record has none
    raw: dict

    @property
    def conversation(self) -> tuple[Utterance, ...]:
        """The document's lines as utterances (``Speaker: words`` lines keep their speaker),
        for the views that read dialogues: EDA, dedup's contamination windows."""
        out = []
        for line in self.context.splitlines():
            head, sep, rest = line.partition(": ")
            if sep and 0 < len(head) <= 30:
                out.append(Utterance(head, rest))
            elif line.strip():
                out.append(Utterance("", line))
        return tuple(out)


@register
class QATask(GenerateTask):
    name = "qa"
    description = "long-context QA: answer a question about a long document, then explain why"
    metrics = (
        Metric("similarity", help="answer: cosine of sentence embeddings (--embedder PATH)"),
        Metric("rouge1", help="answer: ROUGE-1 F over Mecab morphemes, as the official scorer"),
        Metric("f1", help="answer: character F1 after normalisation"),
        Metric("em", help="answer: exact match after normalisation"),
        Metric("bertscore", help="answer: BERTScore F1 with a local model (--bertscore_model)"),
        Metric("rationale_similarity", help="reasoning: cosine of sentence embeddings"),
        Metric("rationale_rouge1", help="reasoning: ROUGE-1 F over Mecab morphemes"),
    )
    dev_metric = "rouge1"
    cut_unit = "context chunks"
    over_budget = "error"
    evaluate_options = {
        "embedder": Option(
            "sentence-transformers model folder for 'similarity' (for real use "
            "jhgan/ko-sroberta-multitask; without it: not computed)"
        ),
        "bertscore_model": Option("BERTScore model path or hub id (default bert-base-multilingual-cased)"),
        "device": Option("device for the metric models"),
    }
    prompt_flags = {
        "answer_only": "answer without reasoning",
        "rationale_first": "the reasoning first, then the answer",
        "en": "English instructions and section markers",
        "head_tail": "over the budget keep the document's start and end (the default)",
        "retrieve": "over the budget keep the chunks most relevant to the question (BM25)",
    }

    # ----- data -----
    def parse_item(self, record: Any, problems: Problems) -> QAItem | None:
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
        for key in ("context", "question"):
            if not isinstance(inp.get(key), str) or not inp[key].strip():
                problems.append((f"input.{key}", "missing or not a non-empty string"))
        if "output" not in record:
            problems.append(("output", 'missing (use "" in test files)'))
        output = record.get("output")
        if output not in ("", None) and (problem := self.check_output(output)):
            problems.append(("output", problem))
        elif output is None and "output" in record:
            problems.append(("output", 'null; use "" in test files'))
        if problems:
            return None
        gold = output if isinstance(output, dict) else {}
        rationale = gold.get("rationale")
        return QAItem(
            rid,
            inp["context"],
            inp["question"],
            gold.get("answer", ""),
            rationale if rationale and rationale.strip() else None,
            record,
        )

    def has_output(self, item: QAItem) -> bool:
        return bool(item.answer.strip())

    def reference(self, item: QAItem) -> dict:
        out = {"answer": item.answer}
        return out | ({"rationale": item.rationale} if item.rationale else {})

    def check_output(self, value: Any) -> str | None:
        shape = 'output must be {"answer": non-empty string, "rationale": string (optional)}'
        if not isinstance(value, dict) or set(value) - {"answer", "rationale"}:
            return shape
        if not isinstance(value.get("answer"), str) or not value["answer"].strip():
            return shape
        if "rationale" in value and not isinstance(value["rationale"], str):
            return shape
        return None

    # ----- prompts -----
    def prompt_spec(self, name: str | PromptSpec | None) -> PromptSpec:
        spec = super().prompt_spec(name)
        for pair in (("answer_only", "rationale_first"), ("head_tail", "retrieve")):
            if all(flag in spec for flag in pair):
                raise UserError(f"choose one of '{pair[0]}' and '{pair[1]}'", field="prompt")
        return spec

    def messages(self, item: QAItem, spec: PromptSpec = BASELINE) -> list[dict]:
        lang = "en" if "en" in spec else "ko"
        system = (
            SYSTEM_ANSWER_ONLY
            if "answer_only" in spec
            else SYSTEM_RATIONALE_FIRST
            if "rationale_first" in spec
            else SYSTEM
        )[lang]
        content, question = MARKERS[lang][:2]
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"{content}\n{item.context}\n\n{question}\n{item.question}"},
        ]

    def target_for(self, item: QAItem, spec: PromptSpec, *, style: str | None = None) -> str:
        """``###답: answer`` then ``###추론: reasoning`` (the reasoning first with
        ``rationale_first``, none with ``answer_only`` or when the item has none)."""
        self.check_target_style(style)
        if not self.has_output(item):
            raise ValueError(f"item {item.id} has no gold output")
        rationale = None if "answer_only" in spec else item.rationale
        return self.render_output({"answer": item.answer, "rationale": rationale or ""}, spec)

    def target(self, item: QAItem, *, style: str | None = None) -> str:
        return self.target_for(item, BASELINE, style=style)

    def render_output(self, output: dict, spec: PromptSpec = BASELINE) -> str:
        _, _, answer_mark, rationale_mark = MARKERS["en" if "en" in spec else "ko"]
        answer = f"{answer_mark} {output['answer'].strip()}"
        rationale = (output.get("rationale") or "").strip()
        if not rationale:
            return answer
        reasoning = f"{rationale_mark} {rationale}"
        return f"{reasoning}\n\n{answer}" if "rationale_first" in spec else f"{answer}\n\n{reasoning}"

    def output_text(self, output: Any) -> str:
        """The answer and the reasoning as one text (similarity for MBR, lengths)."""
        if isinstance(output, dict):
            return "\n".join(t for t in (output.get("answer"), output.get("rationale")) if t)
        return super().output_text(output)

    def parse_output(self, item: QAItem, text: str) -> dict | None:
        """The answer and the reasoning, in either order, with or without markers; a missing
        reasoning leaves the output without ``rationale`` (counted by :meth:`evaluate`)."""
        text = CHAT_ARTEFACTS.sub(" ", text).strip()
        a = ANSWER_MARK.search(text)
        r = RATIONALE_MARK.search(text)
        if a is not None:
            answer = text[a.end() : r.start() if r is not None and r.start() > a.start() else None]
        else:
            answer = text[: r.start()] if r is not None else text
        rationale = ""
        if r is not None:
            rationale = text[r.end() : a.start() if a is not None and a.start() > r.start() else None]
        answer, rationale = " ".join(answer.split()), " ".join(rationale.split())
        if not answer:
            return None
        return {"answer": answer} | ({"rationale": rationale} if rationale else {})

    def fallback_output(self, item: QAItem) -> dict:
        return {"answer": "."}

    # ----- rewards -----
    def rewards(self, bertscore_model: str | None = None, device: str | None = None) -> list[Reward]:
        """``format``: an answer line (``###답:``) with an answer; ``correct``: the answer's exact
        match (normalised, as the EM metric); ``quality``: ROUGE-1 F of the answer and reasoning
        against the gold's (``bertscore`` too with a model)."""

        def correct(item: QAItem, text: str) -> float:
            output = self.parse_output(item, text)
            return 0.0 if output is None else qa_metrics.exact_match(item.answer, output["answer"])

        return [
            format_reward(
                lambda item, text: (
                    ANSWER_MARK.search(text) is not None and self.parse_output(item, text) is not None
                ),
                "an answer line with an answer",
            ),
            Reward("correct", 1.0, "the answer matches the gold exactly (normalised)", score=correct),
            *text_rewards(self.reward_texts, bertscore_model, device),
        ]

    # ----- length budget -----
    def cut_order(self, item: QAItem, spec: PromptSpec) -> tuple[tuple, list[int]]:
        """The document's chunks and the order they may go in under ``spec``'s strategy."""
        chunks = chunk_text(item.context)
        if "retrieve" in spec:
            scores = bm25_scores(item.question, [item.context[c.start : c.end] for c in chunks])
            return chunks, least_relevant_first(list(scores))
        return chunks, middle_out(len(chunks))

    def cuts(self, item: QAItem, spec: PromptSpec) -> Cuts:
        chunks, order = self.cut_order(item, spec)

        def apply(k: int) -> QAItem:
            gone = set(order[:k])
            parts: list[str] = []
            for i, c in enumerate(chunks):
                if i not in gone:
                    parts.append(item.context[c.start : c.end])
                elif not parts or parts[-1] != GAP + "\n":  # one mark per run of cut chunks
                    if parts and not parts[-1].endswith("\n"):
                        parts.append("\n")
                    parts.append(GAP + "\n")
            return replace(item, context="".join(parts).strip() or GAP)

        return Cuts(len(chunks), apply)

    def drop_order(self, item: QAItem) -> list[int]:
        return self.cut_order(item, BASELINE)[1]

    # ----- text views -----
    def dedup_parts(self, item: QAItem) -> list[str]:
        """The document and the question: two questions on one document are different items."""
        return [item.context, item.question]

    # ----- metrics -----
    def evaluate(self, gold: list[QAItem], outputs: dict[str, Any], **options: Any) -> dict:
        preds = [outputs[it.id] for it in gold]
        return qa_metrics.qa_scores(
            [it.answer for it in gold],
            [p.get("answer", "") for p in preds],
            [it.rationale for it in gold],
            [p.get("rationale") for p in preds],
            **options,
        )

    def dev_evaluate(self, gold: list[QAItem], outputs: dict[str, Any]) -> dict:
        """The metrics that need no model (EM, F1, ROUGE-1)."""
        return self.evaluate(gold, outputs, only=("em", "f1", "rouge1", "rationale_rouge1"))

    def item_scores(
        self, gold: list[QAItem], outputs: dict[str, Any], metric: str, **options: Any
    ) -> list[float]:
        """Only ``metric`` is computed; NaN for a reasoning metric where the gold has none."""
        self.metric(metric)
        report = self.evaluate(gold, outputs, only=(metric,), **options)
        if report[metric] is None:
            raise UserError(
                f"'{metric}' could not be computed: " + "; ".join(report["notices"]), field="metric"
            )
        return report["per_item"][metric]

    def format_report(self, report: dict) -> str:
        lines = []
        for m in self.metrics:
            value = report.get(m.name)
            lines.append(f"{m.name:<22}{'not computed' if value is None else f'{value:.4f}'}")
        lines.append(
            f"items {report['n']}; with a gold reasoning {report['rationale_n']}; "
            f"predictions without reasoning {report['rationale_missing']}"
        )
        lines += [f"note: {n}" for n in report.get("notices", [])]
        return "\n".join(lines)

    def eda_columns(self, item: QAItem) -> dict[str, Any]:
        return {
            "context_chars": len(item.context),
            "question_chars": len(item.question),
            "output_chars": len(item.answer) if item.answer.strip() else None,
            "rationale_chars": len(item.rationale) if item.rationale else None,
        }
