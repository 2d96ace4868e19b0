"""The 2025 scorers of AI 말평: 어문 규범 기반 생성 (answer + reason) and 한국문화 질의응답
(선다형 / 단답형 / 서술형), as the official evaluation (teddysum/korean_evaluation) scores them.

The per-item pieces are public and small, so other code (reward functions, error analysis)
scores one answer exactly as the leaderboard does:

* :func:`exact_match` -- the gold text may hold alternatives separated by ``#``; a prediction
  matches when, stripped of surrounding whitespace, it equals any stripped alternative.
* :func:`split_answer_reason` -- a norms answer is ``"<sentence>"가 옳다. <reason>``: the text
  is split at the first ``가 옳다`` anywhere in it, and only when that phrase is absent at the
  first ``이 옳다``. The answer part runs through the end of the phrase; the reason is the rest
  with leading ``.``, ``,`` and spaces removed; without either phrase the whole text is the
  answer and the reason is empty. Every ``"`` and ``'`` is removed from the answer part, which
  is then stripped.
* :func:`answer_match` -- exact match of the two answer parts (the gold part may hold ``#``
  alternatives, split *after* the phrase split: quirk reproduced as the rule reads, so
  ``"A"#"B"가 옳다`` offers the alternatives ``A`` and ``B가 옳다``).
* :func:`choice_match` -- 선다형 accuracy compares raw strings: ``"3번"`` and ``" 3"`` are
  wrong answers to ``"3"`` (nothing is stripped).

Corpus scores:

* :func:`norms_scores`: EM over all items; ROUGE-1, BERTScore and BLEURT over the reasons of
  the items where *both* gold and prediction have a reason; descriptive = their mean, 0 when no
  item has both; final = (EM + descriptive) / 2.
* :func:`typed_scores` (the 한국문화 QA task): 선다형 accuracy, 단답형 EM, 서술형 descriptive (the mean of the three
  text metrics over the 서술형 items); final = the mean over the question types present.

The text metrics are the official ones the DCS task reproduces (:mod:`.official`). A metric
whose model is not available is ``None`` with a notice; descriptive and final are then the
mean of what is available and ``complete`` is False (not comparable with the leaderboard).
Tests and callers may pass ``text_scorer`` (refs, preds -> per-item lists) to fix the text
metrics and check the arithmetic around them exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from malpyeong.metrics.official import DCS_METRICS, _official_mean, dcs_scores

TEXT_METRICS = DCS_METRICS  # rouge1, bertscore, bleurt: the descriptive metrics of 2025
ANSWER_PHRASES = ("가 옳다", "이 옳다")  # looked for in this order (the first found anywhere wins)
REASON_LEAD = ".,"  # characters removed from the start of a reason, with spaces
QUOTES = "\"'"

# Question types of 한국문화 질의응답 and the score each contributes to the final mean.
CHOICE, SHORT, ESSAY = "선다형", "단답형", "서술형"
QA_TYPES = (CHOICE, SHORT, ESSAY)

TextScorer = Callable[[Sequence[str], Sequence[str]], dict[str, Any]]


# ----------------------------------------------------------------------------------- per item


def exact_match(gold: str, pred: str) -> bool:
    """``pred`` (stripped) equals one of the ``#``-separated alternatives of ``gold`` (each
    stripped)."""
    answer = pred.strip()
    return any(answer == alternative.strip() for alternative in gold.split("#"))


def split_answer_reason(text: str) -> tuple[str, str]:
    """``(answer, reason)`` of a norms answer, as the official scorer splits it.

    ``가 옳다`` is looked for first, anywhere in the text; ``이 옳다`` only when it is absent (so
    in ``"…"이 옳다 … "…"가 옳다`` the split is at the later ``가 옳다``: quirk of the official
    order, reproduced). The answer runs through the end of the phrase, with every ``"`` and
    ``'`` removed, then stripped; the reason is the rest without leading ``.``, ``,`` and
    spaces (other whitespace is kept, as the rule reads). No phrase: all answer, no reason.
    """
    for phrase in ANSWER_PHRASES:
        at = text.find(phrase)
        if at != -1:
            end = at + len(phrase)
            answer, reason = text[:end], text[end:].lstrip(REASON_LEAD + " ")
            break
    else:
        answer, reason = text, ""
    for quote in QUOTES:
        answer = answer.replace(quote, "")
    return answer.strip(), reason


def answer_match(gold: str, pred: str) -> bool:
    """The norms EM of one item: the answer parts of gold and prediction, exactly matched."""
    return exact_match(split_answer_reason(gold)[0], split_answer_reason(pred)[0])


def choice_match(gold: str, pred: str) -> bool:
    """선다형: raw string equality (``"3번"`` or ``" 3"`` is not ``"3"``)."""
    return gold == pred


# --------------------------------------------------------------------------------- text metrics


def official_text_scorer(
    bertscore_model: str | None = None,
    bleurt_checkpoint: str | Path | None = None,
    *,
    skip: Collection[str] = (),
    device: str | None = None,
) -> TextScorer:
    """The official ROUGE-1 / BERTScore / BLEURT-20 over (refs, preds), as DCS computes them."""

    def score(refs: Sequence[str], preds: Sequence[str]) -> dict[str, Any]:
        report = dcs_scores(refs, preds, bertscore_model, bleurt_checkpoint, skip=skip, device=device)
        return {
            "per_item": report["per_item"],
            "notices": report["notices"],
            "details": report.get("details", {}),
        }

    return score


def descriptive_scores(
    refs: Sequence[str], preds: Sequence[str], text_scorer: TextScorer, *, what: str
) -> dict[str, Any]:
    """ROUGE-1, BERTScore, BLEURT (0..1, each the official mean over the pairs) and their mean.

    No pair at all: every text metric None and descriptive 0 (the rule's value), complete.
    A metric that could not be computed is None; descriptive is then the mean of the others
    (or None when none was computed) and ``complete`` False.
    """
    out: dict[str, Any] = {name: None for name in TEXT_METRICS}
    if not refs:
        return out | {
            "descriptive": 0.0,
            "complete": True,
            "notices": [f"no {what}: descriptive is 0 by the rule"],
            "per_item": {},
        }
    scored = text_scorer(refs, preds)
    per_item = {k: v for k, v in scored.get("per_item", {}).items() if v is not None}
    for name in TEXT_METRICS:
        if name in per_item:
            out[name] = _official_mean(per_item[name])
    used = [out[name] for name in TEXT_METRICS if out[name] is not None]
    descriptive = sum(used) / len(used) if used else None
    return out | {
        "descriptive": descriptive,
        "complete": len(used) == len(TEXT_METRICS),
        "notices": list(scored.get("notices", [])),
        "per_item": per_item,
    }


# ------------------------------------------------------------------------------------- corpus


def _check(golds: Sequence[Any], preds: Sequence[Any], types: Sequence[str]) -> None:
    if not (len(golds) == len(preds) == len(types)):
        raise ValueError(f"{len(golds)} gold items, {len(preds)} predictions, {len(types)} question types")
    if not golds:
        raise ValueError("no items to score")


def norms_scores(
    golds: Sequence[str],
    preds: Sequence[str],
    types: Sequence[str],
    text_scorer: TextScorer,
) -> dict[str, Any]:
    """The 어문 규범 report: ``exact_match``, the three text metrics over the reason pairs,
    ``descriptive``, ``final``, and counts (items per question type, reason pairs)."""
    _check(golds, preds, types)
    gold_split = [split_answer_reason(g) for g in golds]
    pred_split = [split_answer_reason(p) for p in preds]
    em_items = [float(exact_match(g[0], p[0])) for g, p in zip(gold_split, pred_split, strict=True)]
    exact = sum(em_items) / len(em_items)
    pairs = [i for i, (g, p) in enumerate(zip(gold_split, pred_split, strict=True)) if g[1] and p[1]]
    text = descriptive_scores(
        [gold_split[i][1] for i in pairs],
        [pred_split[i][1] for i in pairs],
        text_scorer,
        what="item with a reason on both sides",
    )
    final = None if text["descriptive"] is None else (exact + text["descriptive"]) / 2
    by_type: dict[str, list[float]] = {}
    for kind, hit in zip(types, em_items, strict=True):
        by_type.setdefault(kind, []).append(hit)
    per_item = {"exact_match": em_items}
    for name, values in text["per_item"].items():  # per item, None where the pair has no reason
        full: list[float | None] = [None] * len(golds)
        for i, v in zip(pairs, values, strict=True):
            full[i] = v
        per_item[name] = full
    return {
        "exact_match": exact,
        **{name: text[name] for name in TEXT_METRICS},
        "descriptive": text["descriptive"],
        "final": final,
        "complete": text["complete"],
        "counts": {
            "items": len(golds),
            "by_type": dict(Counter(types)),
            "reason_pairs": len(pairs),
            "gold_reasons": sum(bool(g[1]) for g in gold_split),
            "pred_reasons": sum(bool(p[1]) for p in pred_split),
            "pred_answer_phrase": sum(any(ph in p for ph in ANSWER_PHRASES) for p in preds),
        },
        "exact_match_by_type": {k: sum(v) / len(v) for k, v in by_type.items()},
        "notices": text["notices"],
        "per_item": per_item,
    }


def typed_scores(
    golds: Sequence[str],
    preds: Sequence[str],
    types: Sequence[str],
    text_scorer: TextScorer,
) -> dict[str, Any]:
    """The 한국문화 report: ``accuracy`` (선다형), ``exact_match`` (단답형), the three text
    metrics and ``descriptive`` (서술형), ``final`` = the mean over the types present, counts."""
    _check(golds, preds, types)
    unknown = sorted(set(types) - set(QA_TYPES))
    if unknown:
        raise ValueError(f"question types {unknown} are not {', '.join(QA_TYPES)}")
    idx = {kind: [i for i, t in enumerate(types) if t == kind] for kind in QA_TYPES}
    item_score: list[float | None] = [None] * len(golds)
    accuracy = exact = None
    if idx[CHOICE]:
        hits = [float(choice_match(golds[i], preds[i])) for i in idx[CHOICE]]
        accuracy = sum(hits) / len(hits)
        for i, h in zip(idx[CHOICE], hits, strict=True):
            item_score[i] = h
    if idx[SHORT]:
        hits = [float(exact_match(golds[i], preds[i])) for i in idx[SHORT]]
        exact = sum(hits) / len(hits)
        for i, h in zip(idx[SHORT], hits, strict=True):
            item_score[i] = h
    text = {name: None for name in TEXT_METRICS} | {
        "descriptive": None,
        "complete": True,
        "notices": [],
        "per_item": {},
    }
    if idx[ESSAY]:
        text = descriptive_scores(
            [golds[i] for i in idx[ESSAY]], [preds[i] for i in idx[ESSAY]], text_scorer, what="서술형 item"
        )
    parts = {CHOICE: accuracy, SHORT: exact, ESSAY: text["descriptive"]}
    present = [kind for kind in QA_TYPES if idx[kind]]
    values = [parts[kind] for kind in present]
    final = None if any(v is None for v in values) else sum(values) / len(values)
    per_item: dict[str, list[float | None]] = {"type_score": item_score}
    for name, vals in text["per_item"].items():
        full: list[float | None] = [None] * len(golds)
        for i, v in zip(idx[ESSAY], vals, strict=True):
            full[i] = v
        per_item[name] = full
    return {
        "accuracy": accuracy,
        "exact_match": exact,
        **{name: text[name] for name in TEXT_METRICS},
        "descriptive": text["descriptive"],
        "final": final,
        "complete": text["complete"],
        "final_of": present,
        "counts": {"items": len(golds), "by_type": {kind: len(idx[kind]) for kind in present}},
        "notices": text["notices"],
        "per_item": per_item,
    }


__all__ = [
    "ANSWER_PHRASES",
    "CHOICE",
    "QA_TYPES",
    "ESSAY",
    "SHORT",
    "TEXT_METRICS",
    "answer_match",
    "choice_match",
    "typed_scores",
    "descriptive_scores",
    "exact_match",
    "norms_scores",
    "official_text_scorer",
    "split_answer_reason",
]
