"""Voting on choice tasks: hard, weighted, soft and Dawid-Skene, with a deterministic tie rule.

Methods (per id):

- ``hard``: one vote per model; the option with most votes wins.
- ``weighted``: each model's vote counts its weight (``--weights``, or its dev accuracy).
- ``soft``: the (weighted) mean of the models' probabilities; optionally each model's
  probabilities are first temperature-calibrated on dev (:mod:`.calibration`).
- ``dawid_skene``: the posterior of the Dawid-Skene estimate (:mod:`.dawid_skene`): each model
  counts by the reliability estimated, without gold, from all the models' answers.

**Tie rule** (deterministic, never the order of the files). When the best options are equal, the
tie goes to the next rule that separates them, in this order:

1. ``probabilities``: the summed sidecar probabilities of the tied options (each model's scaled by
   its weight in weighted voting) -- only when every model has a sidecar with probabilities;
2. ``weights``: the summed weights of the models voting for each tied option (``--weights``, or
   dev accuracy with ``--gold``) -- hard voting only (weighted voting already used them);
3. ``priority``: the option chosen by the most trusted model (``--priority``, a declared order
   of the models) among those that voted for a tied option -- the explicit override;
4. ``dawid_skene``: without ``--priority``, the Dawid-Skene posterior of the tied options (each
   model's reliability estimated from the answers themselves, no gold needed), so results
   without sidecars or weights (other teams', old runs) still vote.

For soft voting the chain is ``votes`` (the weighted vote count), then 3 and 4; for
``dawid_skene`` it is ``votes`` then ``priority``. A tie that no rule breaks (models whose
answers are exactly symmetric) stops the run with an error asking for ``--priority``. Scores
count as equal when they agree to 1e-9 (relative), so float rounding never decides.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from malpyeong.ensemble.dawid_skene import DawidSkene, dawid_skene
from malpyeong.errors import UserError, printable

METHODS = ("hard", "weighted", "soft", "dawid_skene")
RTOL, ATOL = 1e-9, 1e-12


@dataclass
class Tie:
    """One id whose best options were equal, and how it was resolved."""

    index: int
    options: tuple[int, ...]
    rule: str | None  # None: unresolved
    winner: int | None
    detail: str = ""
    member: int | None = None  # the model that decided a ``priority`` tie


@dataclass
class VoteOutcome:
    pred: np.ndarray  # (n,) option index per item
    scores: np.ndarray  # (n, k) the method's scores
    ties: list[Tie] = field(default_factory=list)
    estimate: DawidSkene | None = None  # when the method or a tie used it

    def tie_counts(self) -> dict[str, int]:
        return dict(Counter(t.rule or "unresolved" for t in self.ties))


def top_options(row: np.ndarray, among: Sequence[int]) -> list[int]:
    """The options of ``among`` whose score in ``row`` equals the best (to RTOL/ATOL)."""
    values = row[list(among)]
    top = values.max()
    return [o for o, v in zip(among, values, strict=True) if math.isclose(v, top, rel_tol=RTOL, abs_tol=ATOL)]


def fmt_score(x: float) -> str:
    """A score as printed in tie reports: an integer plainly, else four decimals."""
    return f"{x:g}" if float(x).is_integer() else f"{x:.4f}"


def vote_choices(
    votes: np.ndarray,
    k: int,
    method: str = "hard",
    *,
    weights: Sequence[float] | None = None,
    probs: np.ndarray | None = None,
    priority: Sequence[int] | None = None,
) -> VoteOutcome:
    """Vote each item (see the module docstring for the methods and the tie rule).

    ``votes``: ``(m, n)`` option indices; ``probs``: ``(m, n, k)`` or None; ``weights``: one per
    model; ``priority``: model indices, most trusted first.
    """
    if method not in METHODS:
        raise UserError(f"unknown method '{method}'", field="method", hint=", ".join(METHODS))
    m, n = votes.shape
    onehot = np.eye(k)[votes]  # (m, n, k)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != m:
        raise UserError(f"{len(w)} weight(s) for {m} model(s)", field="weights")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise UserError("weights must be finite, non-negative and not all zero", field="weights")
    estimate: DawidSkene | None = None

    def reliability() -> DawidSkene:
        nonlocal estimate
        if estimate is None:
            estimate = dawid_skene(votes, k)
        return estimate

    chain: list[tuple[str, np.ndarray]] = []
    if method == "hard":
        primary = onehot.sum(axis=0)
        if probs is not None:
            chain.append(("probabilities", probs.sum(axis=0)))
        if weights is not None:
            chain.append(("weights", np.tensordot(w, onehot, axes=1)))
    elif method == "weighted":
        primary = np.tensordot(w, onehot, axes=1)
        if probs is not None:
            chain.append(("probabilities", np.tensordot(w, probs, axes=1)))
    elif method == "soft":
        if probs is None:
            raise UserError(
                "soft voting needs every model's probabilities (the sidecars)",
                field="method",
                hint="predict with run/test.py, or use --method hard",
            )
        primary = np.tensordot(w, probs, axes=1) / w.sum()
        chain.append(("votes", np.tensordot(w, onehot, axes=1)))
    else:
        primary = reliability().posterior
        chain.append(("votes", onehot.sum(axis=0)))
    pred, ties = break_ties(
        primary, chain, votes, priority, reliability=reliability if method != "dawid_skene" else None
    )
    return VoteOutcome(pred, primary, ties, estimate)


def break_ties(
    primary: np.ndarray,
    chain: Sequence[tuple[str, np.ndarray]],
    votes: np.ndarray,
    priority: Sequence[int] | None = None,
    reliability: Callable[[], DawidSkene] | None = None,
) -> tuple[np.ndarray, list[Tie]]:
    """The best option per item by ``primary`` (``(n, k)`` scores), its ties broken by the
    ``chain`` of named ``(n, k)`` scores in order, then ``priority`` (model indices, most trusted
    first, over ``votes``), then -- when ``reliability`` is given -- the Dawid-Skene posterior.
    An item no rule separates keeps ``winner=None`` in its ``Tie``."""
    pred = primary.argmax(axis=1)
    top = primary.max(axis=1, keepdims=True)
    tied_rows = np.nonzero(np.isclose(primary, top, rtol=RTOL, atol=ATOL).sum(axis=1) > 1)[0]
    ties = []
    for row in tied_rows:
        options = tuple(top_options(primary[row], range(primary.shape[1])))
        tied, rule, detail, decider = list(options), None, "", None
        for name, scores in chain:
            narrowed = top_options(scores[row], tied)
            if len(narrowed) < len(tied):
                detail = f"{name} " + " vs ".join(fmt_score(scores[row, o]) for o in tied)
                tied = narrowed
            if len(tied) == 1:
                rule = name
                break
        if len(tied) > 1 and priority is not None:
            for member in priority:
                if votes[member, row] in tied:
                    tied, rule, decider = [int(votes[member, row])], "priority", member
                    break
        if len(tied) > 1 and reliability is not None:
            post = reliability().posterior
            narrowed = top_options(post[row], tied)
            detail = "posterior " + " vs ".join(f"{post[row, o]:.4f}" for o in tied)
            tied = narrowed
            if len(tied) == 1:
                rule = "dawid_skene"
        winner = tied[0] if len(tied) == 1 else None
        if winner is not None:
            pred[row] = winner
        ties.append(Tie(int(row), options, rule, winner, detail, decider if rule == "priority" else None))
    return pred, ties


def describe_ties(
    outcome: VoteOutcome, ids: Sequence[str], labels: Sequence[str], names: Sequence[str]
) -> list[str]:
    """One line per tie: the id, the tied options and scores, the rule and the winner."""
    lines = []
    for t in outcome.ties:
        scores = ", ".join(f"{labels[o]}={fmt_score(outcome.scores[t.index, o])}" for o in t.options)
        if t.winner is None:
            lines.append(f"  {printable(ids[t.index])}: {scores} -> UNRESOLVED")
            continue
        detail = f"{names[t.member]} chose it" if t.rule == "priority" else t.detail
        lines.append(f"  {printable(ids[t.index])}: {scores} -> {labels[t.winner]} by {t.rule} ({detail})")
    return lines


def raise_if_unresolved(outcome: VoteOutcome, ids: Sequence[str], labels: Sequence[str]) -> None:
    bad = [t for t in outcome.ties if t.winner is None]
    if bad:
        first = bad[0]
        raise UserError(
            f"{len(bad)} tie(s) that no rule can break, e.g. {ids[first.index]} "
            f"({' = '.join(labels[o] for o in first.options)})",
            field="priority",
            hint="their answers are symmetric; pass --priority NAME ... (every model, most "
            "trusted first); sidecars with probabilities or --weights also break ties",
        )
