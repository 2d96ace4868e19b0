"""Metrics of long-context QA with rationales: the answer and the reasoning scored apart.

- ``em`` / ``f1``: exact match and character F1 after normalisation (Unicode NFKC, lowercase,
  punctuation and symbols as spaces; F1 counts characters without spaces, which suits Korean,
  where a word's particles would make word F1 all-or-nothing).
- ``rouge1``: ROUGE-1 F over Mecab morphemes, exactly the official scorer's
  (:func:`malpyeong.metrics.official.rouge1_pair`).
- ``similarity``: cosine of sentence embeddings from a sentence-transformers model given by
  path (for real use jhgan/ko-sroberta-multitask); not computed without one.
- ``bertscore``: BERTScore F1 (:class:`~malpyeong.metrics.official.BertScorer`) with a local
  model; not computed without one.
- ``rationale_rouge1`` / ``rationale_similarity``: the same for the reasoning, over the items
  whose gold has one; a prediction without reasoning scores 0 there. Predictions without
  reasoning are counted (``rationale_missing``).

A metric whose model cannot be loaded is ``None`` with a notice, as for DCS.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

from malpyeong.device import default_device
from malpyeong.metrics.official import (
    BERTSCORE_MODEL,
    BertScorer,
    _check_lengths,
    load_metric_model,
    rouge1_pair,
)

QA_METRICS = ("similarity", "rouge1", "f1", "em", "bertscore", "rationale_similarity", "rationale_rouge1")
NEEDS_EMBEDDER = ("similarity", "rationale_similarity")


def normalize(text: str) -> str:
    """NFKC, lowercase, punctuation and symbols as spaces, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(text.split())


def exact_match(ref: str, pred: str) -> float:
    return float(normalize(ref) == normalize(pred))


def char_f1(ref: str, pred: str) -> float:
    """F1 of the clipped character overlap, spaces left out (1 when both are empty)."""
    r = Counter(normalize(ref).replace(" ", ""))
    p = Counter(normalize(pred).replace(" ", ""))
    if not r or not p:
        return float(not r and not p)
    overlap = sum((r & p).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(p.values()), overlap / sum(r.values())
    return 2 * precision * recall / (precision + recall)


class Embedder:
    """A sentence-transformers model: cosine similarity of two texts' embeddings."""

    def __init__(self, path: str, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.path = str(path)
        self.model = SentenceTransformer(self.path, device=device or default_device())

    def similarity(self, refs: Sequence[str], preds: Sequence[str]) -> list[float]:
        """Per-item cosine; an empty prediction scores 0."""
        _check_lengths(refs, preds)
        texts = sorted(set(refs) | set(preds))
        vectors = self.model.encode(
            texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        at = {t: v for t, v in zip(texts, vectors, strict=True)}
        return [0.0 if not p.strip() else float(at[r] @ at[p]) for r, p in zip(refs, preds, strict=True)]


def qa_scores(
    refs: Sequence[str],
    preds: Sequence[str],
    rationale_refs: Sequence[str | None],
    rationale_preds: Sequence[str | None],
    *,
    embedder: str | None = None,
    bertscore_model: str | None = None,
    device: str | None = None,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Every QA metric (or those in ``only``), means and per-item values.

    ``per_item`` lists are in item order; a reasoning metric holds NaN where the gold has no
    reasoning (those items are left out of its mean).
    """
    _check_lengths(refs, preds)
    _check_lengths(rationale_refs, rationale_preds)
    wanted = [m for m in QA_METRICS if only is None or m in only]
    per_item: dict[str, list[float]] = {}
    notices: list[str] = []
    with_rationale = [i for i, r in enumerate(rationale_refs) if r]
    r_refs = [rationale_refs[i] or "" for i in with_rationale]
    r_preds = [rationale_preds[i] or "" for i in with_rationale]

    def spread(values: list[float]) -> list[float]:  # rationale items back into item order
        out = [math.nan] * len(refs)
        for i, v in zip(with_rationale, values, strict=True):
            out[i] = v
        return out

    if "em" in wanted:
        per_item["em"] = [exact_match(r, p) for r, p in zip(refs, preds, strict=True)]
    if "f1" in wanted:
        per_item["f1"] = [char_f1(r, p) for r, p in zip(refs, preds, strict=True)]
    if "rouge1" in wanted:
        per_item["rouge1"] = [rouge1_pair(r, p)["f"] for r, p in zip(refs, preds, strict=True)]
    if "rationale_rouge1" in wanted:
        per_item["rationale_rouge1"] = spread(
            [rouge1_pair(r, p)["f"] if p else 0.0 for r, p in zip(r_refs, r_preds, strict=True)]
        )
    if any(m in wanted for m in NEEDS_EMBEDDER):
        model = None
        if embedder is None:
            notices.append(
                "similarity not computed: pass --embedder PATH, a sentence-transformers "
                "model folder (e.g. a local copy of jhgan/ko-sroberta-multitask)"
            )
        else:  # named by the user: it loads, or the command stops with one line
            model, _ = load_metric_model(
                lambda p: Embedder(p, device), embedder, default=None, option="embedder", what="similarity"
            )
        if model is not None and "similarity" in wanted:
            per_item["similarity"] = model.similarity(refs, preds)
        if model is not None and "rationale_similarity" in wanted:
            per_item["rationale_similarity"] = spread(model.similarity(r_refs, r_preds))
    if "bertscore" in wanted:
        scorer, notice = load_metric_model(
            lambda p: BertScorer(p, device=device),
            bertscore_model,
            default=BERTSCORE_MODEL,
            option="bertscore_model",
            what="bertscore",
        )
        if scorer is None:
            notices.append(notice)
        else:
            per_item["bertscore"] = [s["f"] for s in scorer.score(refs, preds)]
    report: dict[str, Any] = {}
    for name in QA_METRICS:
        values = [v for v in per_item.get(name, []) if not math.isnan(v)]
        report[name] = sum(values) / len(values) if name in per_item and values else None
    if not with_rationale and any(m.startswith("rationale_") for m in wanted):
        notices.append("reasoning metrics not computed: no gold item has a reasoning")
    missing = sum(1 for r in rationale_preds if not (r or "").strip())
    report.update(
        {
            "n": len(refs),
            "rationale_n": len(with_rationale),
            "rationale_missing": missing,
            "notices": notices,
            "per_item": per_item,
        }
    )
    return report


__all__ = ["QA_METRICS", "Embedder", "char_f1", "exact_match", "normalize", "qa_scores"]
