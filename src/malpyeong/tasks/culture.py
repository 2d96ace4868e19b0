"""culture, 한국문화 질의응답 (2025): questions on Korean culture, history and daily life.

Item: ``{"id", "input": {"category", "domain", "question_type", "topic_keyword", "question"},
"output": {"answer"}}``. Question types: 선다형 (the options are inside the question text,
numbered, each number followed by a tab; the official files write the line break before them
as a literal ``\\n``), 단답형 (a word or two; the gold may hold ``#``-separated alternatives) and
서술형 (sentences). A 선다형 answer is the option number as a string (``"3"``): the official
scorer compares raw strings, so the parser turns ``3번``, ``정답은 3``, or the option's own text
into ``"3"`` (counted as repaired).

Scores (:mod:`malpyeong.metrics.korean2025`): 선다형 accuracy, 단답형 exact match, 서술형
descriptive (the mean of ROUGE-1, BERTScore, BLEURT), final = the mean over the types present.
"""

from __future__ import annotations

import re
from typing import Any

from malpyeong.errors import UserError
from malpyeong.metrics import korean2025 as k25
from malpyeong.tasks.answer_rewards import culture_rewards, culture_texts
from malpyeong.tasks.answers import AnswerItem, AnswerTask, clean_generation, format_2025
from malpyeong.tasks.base import Metric, Option, PromptSpec
from malpyeong.tasks.cci import option_length_columns
from malpyeong.tasks.culture_synthetic import synthetic_culture
from malpyeong.tasks.dcs import drop_repeated_tail
from malpyeong.tasks.registry import register
from malpyeong.tasks.rewards import Reward

CHOICE, SHORT, ESSAY = k25.CHOICE, k25.SHORT, k25.ESSAY
OPTION = re.compile(r"(?<!\d)(\d{1,2})\t\s*(.*?)(?=\s+\d{1,2}\t|\s*$)", re.S)
NUMBER = re.compile(r"(?<!\d)(\d{1,2})(?!\d)")
DIGITS = re.compile(r"\d+")

# Our own wording per question type, each with an example of our own.
INSTRUCTIONS = {
    CHOICE: (
        "보기 가운데 질문에 가장 알맞은 것을 하나 골라 그 번호만 숫자로 답하시오.",
        "다음 중 한국의 전통 명절이 아닌 것은? 1\t설날 2\t추석 3\t단오 4\t성탄절",
        "4",
    ),
    SHORT: (
        "질문에 대한 답을 두 단어 이내의 말로 짧게 답하시오. 설명은 붙이지 마시오.",
        "대한민국의 수도는 어디인가요?",
        "서울",
    ),
    ESSAY: (
        "질문에 대한 답을 완결된 문장 여러 개로 서술하시오. 핵심을 먼저 쓰고 근거나 예를 덧붙이시오.",
        "비빔밥이 어떤 음식인지 서술하세요.",
        "비빔밥은 밥 위에 여러 가지 나물과 고기, 고추장을 얹어 비벼 먹는 한국 음식이다. 지역마다 "
        "들어가는 재료가 달라 지역 이름이 붙은 비빔밥도 있다.",
    ),
}
INSTRUCTIONS_EN = {
    CHOICE: "Pick the one option that best answers the question and reply with its number only.",
    SHORT: "Answer in at most two words (in Korean), without explanation.",
    ESSAY: "Answer in several complete Korean sentences: the key point first, then reasons or examples.",
}
PERSONA = (
    "당신은 한국의 역사, 전통문화, 예술, 일상생활과 사회 제도를 깊이 아는 한국학 연구자입니다. "
    "사실에 근거해 정확하게 답합니다."
)


def options_of(question: str) -> list[str]:
    """The numbered options inside a 선다형 question (``1\\t...  2\\t...``), in order."""
    return [text.strip() for _, text in OPTION.findall(question.replace("\\n", "\n"))]


@register
class CultureTask(AnswerTask):
    name = "culture"
    description = "한국문화 질의응답 (2025): 선다형 (option number), 단답형 (a word) and 서술형 (sentences)"
    question_types = k25.QA_TYPES
    passages_heading = "[참고 자료]"
    metrics = (
        Metric("final", help="the leaderboard figure: the mean over the question types present"),
        Metric("accuracy", help="선다형: the answer string equals the gold option number"),
        Metric("exact_match", help="단답형: equals one of the gold's '#' alternatives (stripped)"),
        Metric("rouge1", help="서술형: ROUGE-1 F over Mecab morphemes"),
        Metric("bertscore", help="서술형: BERTScore F1, bert-base-multilingual-cased layer 9"),
        Metric("bleurt", help="서술형: BLEURT-20 from a local checkpoint"),
        Metric("descriptive", help="서술형: mean of rouge1, bertscore and bleurt"),
    )
    dev_metric = "final"
    evaluate_options = {
        "bertscore_model": Option("BERTScore model path or hub id (default bert-base-multilingual-cased)"),
        "bleurt_checkpoint": Option("local BLEURT-20 PyTorch checkpoint folder (without it: not computed)"),
        "skip": Option("metrics to leave out on purpose (rouge1, bertscore, bleurt)", many=True),
        "device": Option("device for the metric models"),
    }
    output_flag_help = {
        "repaired": "선다형 answers given other than as the bare number ('3번', the option's text) "
        "and 단답형 answers cut to their first line",
    }

    def synthetic_records(self, n: int, seed: int, split: str) -> list[dict]:
        return synthetic_culture(n, seed, f"synthetic-{split}", with_output=split != "test")

    def answer_problem(self, question_type: str, answer: str, inp: dict) -> str | None:
        if question_type != CHOICE:
            return None
        if not answer.isdigit():
            return f'a {CHOICE} answer is the option number, digits only (e.g. "3"), not {answer!r}'
        n = len(options_of(str(inp.get("question", ""))))
        if n and not 1 <= int(answer) <= n:
            return f"option {answer} does not exist: the question has {n} options"
        return None

    # ----- prompts -----
    def instruction(self, item: AnswerItem, spec: PromptSpec) -> str:
        if "en" in spec:
            return f"[Instruction]\n{INSTRUCTIONS_EN[item.question_type]}"
        text, question, answer = INSTRUCTIONS[item.question_type]
        parts = ["[지침]", text]
        if "zeroshot" not in spec:
            parts += ["", "[예시]", f"질문: {question}", f"답변: {answer}"]
        return "\n".join(parts)

    def system_prompt(self, spec: PromptSpec) -> str:
        return PERSONA if "persona" in spec else super().system_prompt(spec)

    def target(self, item: AnswerItem, *, style: str | None = None) -> str:
        """The gold answer; of a 단답형 gold's ``#`` alternatives, the first."""
        self.check_target_style(style)
        if not self.has_output(item):
            raise ValueError(f"item {item.id} has no gold output")
        if item.question_type == SHORT:
            return item.answer.split("#")[0].strip()
        return item.answer.strip()

    # ----- reading generations -----
    def read_answer(self, item: AnswerItem, text: str) -> str:
        if item.question_type == CHOICE:
            return choice_number(text, options_of(item.question))
        if item.question_type == SHORT:
            line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            return line
        return drop_repeated_tail(" ".join(text.split()))

    def output_flags(self, item: AnswerItem, text: str, output: Any) -> list[str]:
        if output is None or item.question_type == ESSAY:
            return []
        return [] if clean_generation(text) == output["answer"] else ["repaired"]

    def fallback_output(self, item: AnswerItem) -> dict:
        return {"answer": "1" if item.question_type == CHOICE else "."}

    # ----- rewards (GRPO): malpyeong.tasks.answer_rewards -----
    def rewards(self, bertscore_model: str | None = None, device: str | None = None) -> list[Reward]:
        return culture_rewards(self, bertscore_model, device)

    def reward_texts(self, item: AnswerItem, text: str) -> tuple[str, str] | None:
        return culture_texts(self, item, text)

    # ----- metrics -----
    def official_scores(self, golds: list[str], preds: list[str], types: list[str], scorer: Any) -> dict:
        return k25.typed_scores(golds, preds, types, scorer)

    def item_scores(
        self, gold: list[AnswerItem], outputs: dict[str, Any], metric: str, **options: Any
    ) -> list[float]:
        """Per item: a 서술형 text metric (NaN on the other types), or ``accuracy`` /
        ``exact_match`` / ``final`` as each item's own type score (NaN where it does not apply)."""
        self.metric(metric)
        skip = [m for m in k25.TEXT_METRICS if m != metric]
        report = self.evaluate(gold, outputs, **{**options, "skip": skip})
        if metric in k25.TEXT_METRICS:
            values = report["per_item"].get(metric)
        else:
            wanted = {"accuracy": {CHOICE}, "exact_match": {SHORT}, "final": {CHOICE, SHORT}}.get(
                metric, set()
            )
            values = [
                v if it.question_type in wanted else None
                for it, v in zip(gold, report["per_item"]["type_score"], strict=True)
            ]
        if values is None:
            raise UserError(f"task {self.name} gives no per-item values of '{metric}'", field="metric")
        return [float("nan") if v is None else float(v) for v in values]

    def format_report(self, report: dict) -> str:
        return format_2025(self.metrics, report) + "".join(f"\nnote: {n}" for n in report.get("notices", []))

    # ----- EDA -----
    eda_labels = {CHOICE: "multiple choice", SHORT: "short answer", ESSAY: "descriptive"}

    def eda_columns(self, item: AnswerItem) -> dict[str, Any]:
        """Question type as the category; for 선다형 the option count, the gold position and
        option-length bias (as CCI's), None elsewhere."""
        options = options_of(item.question) if item.question_type == CHOICE else []
        gold = int(item.answer) - 1 if item.answer.isdigit() else None
        out: dict[str, Any] = {
            "category": item.question_type,
            "question_chars": len(item.question),
            "output_chars": len(item.answer) if item.answer else None,
            "options": len(options) or None,
        }
        if options:
            digits = tuple(str(n) for n in range(1, len(options) + 1))
            gold = gold if gold is not None and gold < len(options) else None
            return out | option_length_columns([len(o) for o in options], gold, digits)
        return out | dict.fromkeys(
            (
                "option_chars_mean",
                "gold",
                "gold_chars",
                "gold_longest",
                "gold_shortest",
                "chance_longest",
                "chance_shortest",
            )
        )


def choice_number(text: str, options: list[str]) -> str:
    """The option number a 선다형 answer names ("" when it names none): its first number that
    is an option's (any first number when the options cannot be read), else the option whose
    text it contains (the longest such)."""
    n = len(options)
    for m in NUMBER.finditer(text):
        value = int(m.group(1))
        if not n or 1 <= value <= n:
            return str(value)
    named = [i for i, o in enumerate(options) if o and o in text]
    if named:
        return str(max(named, key=lambda i: len(options[i])) + 1)
    return ""
