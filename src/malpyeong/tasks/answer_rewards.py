"""Rewards of the 2025 answer tasks (어문 규범 기반 생성 and 한국문화 질의응답), as the official
scorer (:mod:`malpyeong.metrics.korean2025`) scores each, for GRPO
(:mod:`malpyeong.tasks.rewards`). The tasks' ``rewards()`` call :func:`norms_rewards` and
:func:`culture_rewards` with themselves; nothing here knows a task class.

norms (rag): ``format`` is the generation *as written* in the shape the scorer splits on,
``"<sentence>"가 옳다. <reason>`` (the public 2025 entries rewarded ``^"[^"]+"[이가] 옳다``), not
the repaired text prediction would submit; ``correct`` is the official exact match of the part
through ``가 옳다`` with the gold's ``#`` alternatives (:func:`~malpyeong.metrics.korean2025.answer_match`,
split where the scorer splits); ``quality`` is ROUGE-1 of the reasons (``bertscore`` too with a
model).

culture: per question type, as each is scored. ``format``: a bare option number (선다형), one
line (단답형), text without a repeated sentence (서술형); ``correct``: 선다형 raw-string equality
of the option number, 단답형 exact match with ``#`` alternatives, None for 서술형 (trl leaves it
out of that reward's mean); ``quality``: 서술형 ROUGE-1 of the answer (``bertscore`` too with a
model), None for the other types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from malpyeong.metrics import korean2025 as k25
from malpyeong.tasks.answers import AnswerItem, AnswerTask, clean_generation
from malpyeong.tasks.rewards import Reward, bertscore_reward, format_reward, rouge1_reward, text_rewards

OFFICIAL_SHAPE = re.compile(r'^"[^"]+"[이가] 옳다')  # the answer's shape, as the public entries rewarded it


# --------------------------------------------------------------------------------------- norms


def norms_rewards(
    task: AnswerTask, bertscore_model: str | None = None, device: str | None = None
) -> list[Reward]:
    """``format`` (:func:`norms_shape`, weight 0.2), ``correct`` (1.0), ``quality`` (0.5), and
    ``bertscore`` (0.5) with a model."""

    def correct(item: AnswerItem, text: str) -> float:
        output = task.parse_output(item, text)
        return float(output is not None and k25.answer_match(item.answer, output["answer"]))

    return [
        format_reward(lambda item, text: norms_shape(text), '"…"가 옳다 written at the start, then a reason'),
        Reward(
            "correct",
            1.0,
            "the part through '가 옳다' matches the gold's (exact match, # alternatives)",
            correct,
        ),
        *text_rewards(lambda item, text: norms_reason_texts(task, item, text), bertscore_model, device),
    ]


def norms_shape(text: str) -> float:
    """1: ``"<sentence>"가 옳다`` (or 이 옳다) at the start and a reason after it; 0.5: the
    phrase the scorer splits at is there, but not in that shape or with no reason; 0: no phrase
    (the answer would have to be repaired)."""
    cleaned = clean_generation(text)
    if not any(p in cleaned for p in k25.ANSWER_PHRASES):
        return 0.0
    reason = k25.split_answer_reason(cleaned)[1]
    return 1.0 if OFFICIAL_SHAPE.match(cleaned) and reason.strip() else 0.5


def norms_reason_texts(task: AnswerTask, item: AnswerItem, text: str) -> tuple[str, str] | None:
    """The gold reason and the reason of what would be submitted (None: it has none)."""
    output = task.parse_output(item, text)
    reason = k25.split_answer_reason(output["answer"])[1] if output is not None else ""
    return (k25.split_answer_reason(item.answer)[1], reason) if reason.strip() else None


# ------------------------------------------------------------------------------------- culture


def culture_rewards(
    task: AnswerTask, bertscore_model: str | None = None, device: str | None = None
) -> list[Reward]:
    """``format`` (:func:`culture_shape`, 0.2), ``correct`` (1.0; None for 서술형), ``quality``
    (0.5; 서술형 only), and ``bertscore`` (0.5; 서술형 only) with a model."""

    def correct(item: AnswerItem, text: str) -> float | None:
        if item.question_type == k25.ESSAY:
            return None
        output = task.parse_output(item, text)
        if output is None:
            return 0.0
        match = k25.choice_match if item.question_type == k25.CHOICE else k25.exact_match
        return float(match(item.answer, output["answer"]))

    def texts(item: AnswerItem, text: str) -> tuple[str, str] | None:
        return culture_texts(task, item, text)

    rouge = rouge1_reward(texts)
    rewards = [
        format_reward(
            lambda item, text: culture_shape(task, item, text), "the answer as its question type wants it"
        ),
        Reward(
            "correct",
            1.0,
            "선다형 accuracy, 단답형 exact match with # alternatives (None for 서술형)",
            correct,
        ),
        Reward("quality", 0.5, "서술형 ROUGE-1 F (None for the other types)", batch=essays_only(rouge)),
    ]
    if bertscore_model:
        scorer = bertscore_reward(texts, bertscore_model, device)
        rewards.append(Reward("bertscore", 0.5, scorer.help + " (서술형 only)", batch=essays_only(scorer)))
    return rewards


def essays_only(reward: Reward) -> Callable[[Sequence[AnswerItem], Sequence[str]], list[float | None]]:
    """``reward`` scored on the 서술형 items of a batch only (in one call), None for the rest."""

    def batch(items: Sequence[AnswerItem], completions: Sequence[str]) -> list[float | None]:
        mine = [i for i, item in enumerate(items) if item.question_type == k25.ESSAY]
        out: list[float | None] = [None] * len(items)
        if mine:
            values = reward([items[i] for i in mine], [completions[i] for i in mine])
            for i, value in zip(mine, values, strict=True):
                out[i] = value
        return out

    return batch


def culture_shape(task: AnswerTask, item: AnswerItem, text: str) -> float:
    """선다형: 1 for the bare option number, 0.5 for one that must be read out of more text
    ('3번', the option's words); 단답형: 1 for one line, 0.5 for more (the first is kept);
    서술형: 1 for text that repeats no sentence, 0.5 for one that does; 0 for nothing."""
    cleaned = clean_generation(text)
    answer = task.read_answer(item, cleaned)
    if not answer:
        return 0.0
    if item.question_type == k25.ESSAY:
        cleaned = " ".join(cleaned.split())
    return 1.0 if cleaned == answer else 0.5


def culture_texts(task: AnswerTask, item: AnswerItem, text: str) -> tuple[str, str] | None:
    """The gold answer and the one that would be submitted (None: nothing could be read)."""
    output = task.parse_output(item, text)
    return None if output is None else (item.answer, output["answer"])
