"""Minimum-Bayes-risk (MBR) selection for generate tasks (DCS).

Per id, the candidate with the highest mean similarity (ROUGE-1 F over Mecab morphemes, or
BERTScore F1) to the other models' candidates wins -- the candidate the others agree with most,
the generative analogue of a majority vote.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from malpyeong.ensemble.voting import RTOL, Tie, fmt_score, top_options
from malpyeong.metrics import BertScorer, load_metric_model, rouge1_pair


def rouge1_similarity(pairs: Sequence[tuple[str, str]]) -> list[float]:
    """ROUGE-1 F (official Mecab-morpheme scorer) of each pair; symmetric in the pair."""
    return [rouge1_pair(a, b)["f"] for a, b in pairs]


def bertscore_similarity(
    model_path: str, **kwargs: Any
) -> Callable[[Sequence[tuple[str, str]]], list[float]]:
    """BERTScore F1 of each pair with the model at ``model_path`` (loaded once)."""
    scorer, _ = load_metric_model(
        lambda p: BertScorer(p, **kwargs),
        model_path,
        default=None,
        option="bertscore_model",
        what="bertscore",
    )

    def sim(pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        return [s["f"] for s in scorer.score([a for a, _ in pairs], [b for _, b in pairs])]

    return sim


@dataclass
class MbrOutcome:
    choice: list[int]  # member whose text is submitted, per item
    winners: list[list[int]]  # every member that wrote the chosen text, per item
    scores: np.ndarray  # (n, m) mean similarity of each candidate to the others
    ties: list[Tie] = field(default_factory=list)


def mbr_choose(
    candidates: Sequence[Sequence[str]],
    similarity: Callable[[Sequence[tuple[str, str]]], list[float]],
    *,
    weights: Sequence[float] | None = None,
    priority: Sequence[int] | None = None,
) -> MbrOutcome:
    """Per item, the candidate with the highest (weighted) mean similarity to the others.

    ``candidates[i][j]`` is model j's text for item i. Candidates with identical text are one
    choice (their models all "win"). Distinct texts with equal scores go to the larger summed
    weight of their writers (when ``weights`` are given), then to ``priority``; else the tie is
    left unresolved (``winner`` None).
    """
    n = len(candidates)
    m = len(candidates[0]) if n else 0
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    pairs: dict[tuple[str, str], float] = {}
    for texts in candidates:
        for a in range(m):
            for b in range(a + 1, m):
                key = tuple(sorted((texts[a], texts[b])))
                if key not in pairs:
                    pairs[key] = math.nan
    keys = list(pairs)
    for key, value in zip(keys, similarity(keys), strict=False):
        pairs[key] = float(value)
    scores = np.zeros((n, m))
    choice, winners, ties = [], [], []
    for i, texts in enumerate(candidates):
        sim = np.eye(m)
        for a in range(m):
            for b in range(a + 1, m):
                sim[a, b] = sim[b, a] = pairs[tuple(sorted((texts[a], texts[b])))]
        for a in range(m):
            others = [b for b in range(m) if b != a]
            wsum = w[others].sum()
            scores[i, a] = (w[others] @ sim[a, others]) / wsum if wsum > 0 else 0.0
        best = top_options(scores[i], range(m))
        distinct = sorted({texts[a] for a in best}, key=lambda t: min(a for a in best if texts[a] == t))
        pick: str | None = distinct[0]
        if len(distinct) > 1:
            tied_texts, rule, detail, decider = distinct, None, "", None
            if weights is not None:
                support = {t: float(w[[a for a in range(m) if texts[a] == t]].sum()) for t in tied_texts}
                top = max(support.values())
                narrowed = [t for t in tied_texts if math.isclose(support[t], top, rel_tol=RTOL)]
                detail = "weights " + " vs ".join(fmt_score(support[t]) for t in tied_texts)
                tied_texts = narrowed
                rule = "weights" if len(tied_texts) == 1 else None
            if len(tied_texts) > 1 and priority is not None:
                for member in priority:
                    if texts[member] in tied_texts:
                        tied_texts, rule, decider = [texts[member]], "priority", member
                        break
            pick = tied_texts[0] if len(tied_texts) == 1 else None
            options = tuple(min(a for a in best if texts[a] == t) for t in distinct)
            win = None if pick is None else min(a for a in range(m) if texts[a] == pick)
            ties.append(Tie(i, options, rule, win, detail, decider if rule == "priority" else None))
        if pick is None:
            choice.append(-1)
            winners.append([])
            continue
        writers = [a for a in range(m) if texts[a] == pick]
        chooser = writers[0]
        if priority is not None:
            chooser = next(a for a in priority if a in writers)
        choice.append(chooser)
        winners.append(writers)
    return MbrOutcome(choice, winners, scores, ties)


def describe_mbr_ties(outcome: MbrOutcome, ids: Sequence[str], names: Sequence[str]) -> list[str]:
    lines = []
    for t in outcome.ties:
        scores = ", ".join(f"{names[o]}={outcome.scores[t.index, o]:.4f}" for o in t.options)
        if t.winner is None:
            lines.append(f"  {ids[t.index]}: {scores} -> UNRESOLVED")
        else:
            detail = f"{names[t.member]} wrote it" if t.rule == "priority" else t.detail
            lines.append(f"  {ids[t.index]}: {scores} -> {names[t.winner]} by {t.rule} ({detail})")
    return lines
