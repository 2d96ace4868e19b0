"""rag, 한국어 어문 규범 기반 생성 (2025): choose or correct a sentence by the Korean
orthography norms, and say why, citing the rule.

Item: ``{"id", "input": {"question_type", "question"}, "output": {"answer"}}``. Question types:
선택형 (choose among ``{A/B}`` in a sentence) and 교정형 (find and correct the wrong part), the
ones the data holds; the baseline's prompts also name 선다형, 서술형 and 단답형, read here too;
its own sample file spells one type "선택형형", read as 선택형 with a warning. The answer is one
text: ``"<the correct sentence>"가 옳다. <the reason, citing the rule>``, scored by exact match
of the part through ``가 옳다`` and by ROUGE-1 / BERTScore / BLEURT of the reason
(:mod:`malpyeong.metrics.korean2025`).

The knowledge source is the body of norms (한글 맞춤법, 표준어 규정, 외래어 표기법, 로마자
표기법, 표준 발음법) that the user supplies: build an index of it (``run/retrieve.py build``)
and train and predict with ``--retrieve INDEX``; the top passages are listed in the prompt under
``[참고 규범]``.

A generation without ``가 옳다`` / ``이 옳다`` is repaired into the official form where the text
allows (the option it names filled into the ``{A/B}`` sentence, or its first quoted or first
sentence taken as the answer, the rest as the reason); the share that needed it is reported.
"""

from __future__ import annotations

import re
from typing import Any

from malpyeong.errors import UserError
from malpyeong.metrics import korean2025 as k25
from malpyeong.tasks.answer_rewards import norms_reason_texts, norms_rewards
from malpyeong.tasks.answers import AnswerItem, AnswerTask, clean_generation, format_2025
from malpyeong.tasks.base import Metric, Option, PromptSpec
from malpyeong.tasks.rag_synthetic import synthetic_norms
from malpyeong.tasks.registry import register
from malpyeong.tasks.rewards import Reward

QUESTION_TYPES = ("선택형", "교정형", "선다형", "서술형", "단답형")
FORM = '"…"가 옳다.'
QUOTED = re.compile(r'"([^"]+)"')
BRACES = re.compile(r"\{([^{}]*)\}")
FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s+|$)(.*)$", re.S)

# Our own wording, one instruction per question type; each example is ours too.
INSTRUCTIONS = {
    "선택형": (
        "문장의 중괄호 {…/…} 안에 주어진 표현 가운데 어문 규범에 맞는 것을 골라 완성한 문장 전체를 "
        f"큰따옴표로 감싸 {FORM} 꼴로 답하고, 이어서 근거가 되는 규범을 밝혀 이유를 설명하시오.",
        '"친구와 약속한 {대로/데로} 일찍 나왔다." 가운데 올바른 것을 선택하고, 그 이유를 설명하세요.',
        "\"친구와 약속한 대로 일찍 나왔다.\"가 옳다. '대로'는 앞말이 뜻하는 모양이나 상태와 같이라는 "
        "뜻의 의존 명사이므로 한글 맞춤법 제42항에 따라 앞말과 띄어 쓴다.",
    ),
    "교정형": (
        "문장에서 어문 규범에 어긋난 부분을 찾아 바르게 고친 문장 전체를 큰따옴표로 감싸 "
        f"{FORM} 꼴로 답하고, 이어서 근거가 되는 규범을 밝혀 이유를 설명하시오.",
        '다음 문장에서 어문 규범에 부합하지 않는 부분을 찾아 고치고, 그 이유를 설명하세요.\n"어제 밤에 비가 많이 왔다."',
        "\"어젯밤에 비가 많이 왔다.\"가 옳다. '어제'와 '밤'이 어울린 합성어에서 앞말이 모음으로 끝나고 "
        "뒷말의 첫소리가 된소리로 나므로 한글 맞춤법 제30항에 따라 사이시옷을 받쳐 '어젯밤'으로 적는다.",
    ),
    "선다형": (
        "선택지 가운데 어문 규범에 맞는 것을 골라 그 표현이 들어간 문장을 큰따옴표로 감싸 "
        f"{FORM} 꼴로 답하고, 이유를 설명하시오.",
        "",
        "",
    ),
    "서술형": (
        "질문에 어문 규범에 맞게 답하시오. 문장을 고르거나 고치는 질문이면 올바른 문장을 큰따옴표로 "
        f"감싸 {FORM} 꼴로 답하고, 이어서 근거가 되는 규범을 밝혀 이유를 설명하시오.",
        "",
        "",
    ),
    "단답형": (
        f"질문에 맞는 올바른 표기를 큰따옴표로 감싸 {FORM} 꼴로 짧게 답하고, 이유를 한 문장으로 설명하시오.",
        "",
        "",
    ),
}
INSTRUCTIONS_EN = (
    "Answer by the Korean orthography norms. Write the correct sentence in double quotes "
    f"followed by '가 옳다.' ({FORM}), then explain why, naming the rule (in Korean)."
)
PERSONA = (
    "당신은 국어 규범을 가르치는 국어학자입니다. 한글 맞춤법, 표준어 규정, 외래어 표기법, 로마자 "
    "표기법, 표준 발음법의 조항을 근거로 정확하게 답합니다."
)


@register
class NormsTask(AnswerTask):
    name = "rag"
    description = "어문 규범 기반 생성 (2025): choose or correct a sentence, then say why, citing the rule"
    question_types = QUESTION_TYPES
    type_aliases = {"선택형형": "선택형"}
    official_corpus = True  # the competition ships the norms document that retrieval reads
    passages_heading = "[참고 규범]"
    metrics = (
        Metric("final", help="the leaderboard figure: (exact_match + descriptive) / 2"),
        Metric("exact_match", help="the part through '가 옳다' (quotes removed) equals the gold's"),
        Metric("rouge1", help="ROUGE-1 F of the reasons (items with a reason on both sides)"),
        Metric("bertscore", help="BERTScore F1 of the reasons, bert-base-multilingual-cased layer 9"),
        Metric("bleurt", help="BLEURT-20 of the reasons, from a local checkpoint"),
        Metric("descriptive", help="mean of rouge1, bertscore and bleurt (0 when no reason pair)"),
    )
    dev_metric = "final"
    evaluate_options = {
        "bertscore_model": Option("BERTScore model path or hub id (default bert-base-multilingual-cased)"),
        "bleurt_checkpoint": Option("local BLEURT-20 PyTorch checkpoint folder (without it: not computed)"),
        "skip": Option("metrics to leave out on purpose (rouge1, bertscore, bleurt)", many=True),
        "device": Option("device for the metric models"),
    }
    output_flag_help = {"repaired": f"generations without '가 옳다' rewritten into the {FORM} form"}

    def synthetic_records(self, n: int, seed: int, split: str) -> list[dict]:
        return synthetic_norms(n, seed, f"synthetic-{split}", with_output=split != "test")

    # ----- prompts -----
    def instruction(self, item: AnswerItem, spec: PromptSpec) -> str:
        if "en" in spec:
            return f"[Instruction]\n{INSTRUCTIONS_EN}"
        text, question, answer = INSTRUCTIONS[item.question_type]
        parts = ["[지침]", text]
        if question and "zeroshot" not in spec:
            parts += ["", "[예시]", f"질문: {question}", f"답변: {answer}"]
        return "\n".join(parts)

    def system_prompt(self, spec: PromptSpec) -> str:
        return PERSONA if "persona" in spec else super().system_prompt(spec)

    def retrieval_query(self, item: AnswerItem) -> str:
        """The quoted sentence(s) the question is about, without the instruction around them
        (which every question shares: it would pull in whichever passage says "규범")."""
        quoted = QUOTED.findall(item.question)
        return " ".join(quoted) if quoted else item.question

    # ----- reading generations -----
    def read_answer(self, item: AnswerItem, text: str) -> str:
        text = " ".join(text.split())
        if not text or any(p in text for p in k25.ANSWER_PHRASES):
            return text
        return repair(item.question, text)

    def output_flags(self, item: AnswerItem, text: str, output: Any) -> list[str]:
        cleaned = clean_generation(text)
        return [] if any(p in cleaned for p in k25.ANSWER_PHRASES) or output is None else ["repaired"]

    # ----- rewards (GRPO): malpyeong.tasks.answer_rewards -----
    def rewards(self, bertscore_model: str | None = None, device: str | None = None) -> list[Reward]:
        return norms_rewards(self, bertscore_model, device)

    def reward_texts(self, item: AnswerItem, text: str) -> tuple[str, str] | None:
        return norms_reason_texts(self, item, text)

    # ----- metrics -----
    def official_scores(self, golds: list[str], preds: list[str], types: list[str], scorer: Any) -> dict:
        return k25.norms_scores(golds, preds, types, scorer)

    def item_scores(
        self, gold: list[AnswerItem], outputs: dict[str, Any], metric: str, **options: Any
    ) -> list[float]:
        """Per item; NaN for a reason metric where the item has no reason pair."""
        self.metric(metric)
        skip = [m for m in k25.TEXT_METRICS if m != metric]
        values = self.evaluate(gold, outputs, **{**options, "skip": skip})["per_item"].get(metric)
        if values is None:
            raise UserError(f"task {self.name} gives no per-item values of '{metric}'", field="metric")
        return [float("nan") if v is None else float(v) for v in values]

    def format_report(self, report: dict) -> str:
        return (
            format_2025(self.metrics, report)
            + "\n"
            + (
                f"reason pairs {report['counts']['reason_pairs']} of {report['counts']['items']} items "
                f"(gold with a reason {report['counts']['gold_reasons']}, predictions with one "
                f"{report['counts']['pred_reasons']}, predictions with the answer phrase "
                f"{report['counts']['pred_answer_phrase']})"
            )
            + "".join(f"\nnote: {n}" for n in report.get("notices", []))
        )

    # ----- EDA -----
    eda_labels = {
        "선택형": "choose",
        "교정형": "correct",
        "선다형": "multiple choice",
        "서술형": "descriptive",
        "단답형": "short answer",
    }

    def eda_columns(self, item: AnswerItem) -> dict[str, Any]:
        answer, reason = k25.split_answer_reason(item.answer) if item.answer else ("", "")
        return {
            "category": item.question_type,
            "question_chars": len(item.question),
            "output_chars": len(item.answer) if item.answer else None,
            "reason_chars": len(reason) if item.answer else None,
            "answer_phrase": any(p in item.answer for p in k25.ANSWER_PHRASES) if item.answer else None,
            "gold": None,  # no options to place the gold among
        }


def repair(question: str, text: str) -> str:
    """A generation without the answer phrase, rewritten as ``"<sentence>"가 옳다. <reason>``.

    The sentence is, in order of preference: the question's ``{A/B}`` sentence with the option
    the text starts with filled in; the text's first quoted passage; its first sentence.
    """
    sentence, reason = "", text
    template = next((q for q in QUOTED.findall(question) if BRACES.search(q)), None)
    if template:
        options = [o.strip() for o in BRACES.search(template).group(1).split("/") if o.strip()]
        chosen = next((o for o in sorted(options, key=len, reverse=True) if text.startswith(o)), None)
        if chosen is not None:
            sentence = BRACES.sub(chosen, template, count=1)
            reason = text[len(chosen) :]
    if not sentence:
        quoted = QUOTED.match(text)
        if quoted:
            sentence, reason = quoted.group(1), text[quoted.end() :]
        else:
            m = FIRST_SENTENCE.match(text)
            sentence, reason = (m.group(1), m.group(2)) if m else (text, "")
    reason = reason.lstrip(".,:;)] ").strip()
    return f'"{sentence.strip()}"가 옳다.' + (f" {reason}" if reason else "")
