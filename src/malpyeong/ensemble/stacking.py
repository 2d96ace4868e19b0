"""Stacking: a logistic-regression meta-learner over the members' option probabilities, fitted on dev.

The meta-learner scores each option of an item from two features per member -- the probability
the member gives that option (its sidecar) and whether the member chose it (its output) -- plus
one bias per option position, and picks the option with the highest score. It is scikit-learn's
``LogisticRegression`` fitted on one row per (item, option), the gold option's row labelled 1.
One weight per member and feature, shared by every option, rather than the multinomial stack over
the concatenated probabilities (scikit-learn's ``StackingClassifier`` shape: a weight per member,
option and class): a choice task's options are positions, not classes with a meaning of their
own, so the shared form needs far fewer weights (two per member against k x k) and says how
much the stack trusts each member. Its accuracy is on a par with the multinomial stack's
(``benchmarks/bench_stack.py``: ours / peer 1.005 over six simulated sets; ahead with 300 dev
items, behind on two sets with 60). The vote feature keeps the stack near a hard vote when the
members' probabilities carry nothing beyond their choice; the probability feature lets it
follow the confident member when they do.

The L2 strength ``C`` is chosen among :data:`C_GRID` by stratified k-fold cross-validation on
the items the model is fitted on (the mean held-out negative log-likelihood of the gold option,
the softmax of the scores over an item's options). Its dev accuracy is measured honestly: the
whole fit, choice of ``C`` included, is repeated inside an outer stratified k-fold split of the
dev items, and each item is predicted by the model that did not see it
(:func:`cross_validate_stack`); the model that predicts the inputs is then fitted on all of dev
(:func:`fit_stack`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from malpyeong.ensemble.voting import Tie, break_ties
from malpyeong.errors import UserError

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
FEATURES = ("probability", "vote")


def stack_features(votes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(n * k, 2m + k)`` rows, item by item and option by option: each member's probability
    of the option, whether it chose the option, and the option's position (one-hot)."""
    m, n, k = probs.shape
    prob = probs.transpose(1, 2, 0).reshape(n * k, m)
    chose = np.eye(k)[votes].transpose(1, 2, 0).reshape(n * k, m)
    return np.concatenate([prob, chose, np.tile(np.eye(k), (n, 1))], axis=1)


def _rows(items: np.ndarray, k: int) -> np.ndarray:
    """The feature rows of ``items`` (indices into the items)."""
    return (items[:, None] * k + np.arange(k)).ravel()


def _row_labels(gold: np.ndarray, k: int) -> np.ndarray:
    return (np.arange(k)[None, :] == gold[:, None]).ravel().astype(np.int64)


def _item_nll(scores: np.ndarray, gold: np.ndarray) -> float:
    """Summed negative log-likelihood of the gold options under the softmax of the scores."""
    s = scores - scores.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(gold)), gold].sum())


def _splits(gold: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(gold)), gold))


def _logistic(c: float, x: np.ndarray, y: np.ndarray):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, fit_intercept=False, solver="newton-cholesky", max_iter=200).fit(x, y)


@dataclass
class StackModel:
    """A fitted meta-learner: ``weights[j]`` = member j's (probability, vote) weights."""

    weights: np.ndarray  # (m, 2)
    bias: np.ndarray  # (k,) per option position
    c: float  # the L2 strength chosen
    validation_nll: dict[float, float]  # mean held-out NLL per C tried

    def scores(self, votes: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """``(n, k)`` scores of each item's options (higher: more likely the answer)."""
        m, n, k = probs.shape
        coef = np.concatenate([self.weights[:, 0], self.weights[:, 1], self.bias])
        return (stack_features(votes, probs) @ coef).reshape(n, k)


def check_stack_dev(gold: np.ndarray, labels: Sequence[str], folds: int) -> None:
    """Refuse a dev set too small for the folds: every option that is ever the gold answer must
    be it ``2 * folds`` times (``folds`` for the outer split, and again inside each training part
    to choose C)."""
    counts = np.bincount(gold, minlength=len(labels))
    present = [o for o in range(len(labels)) if counts[o]]
    if len(gold) == 0 or not present:
        raise UserError("the gold file has no items to fit the stack on", field="gold")
    least = min(present, key=lambda o: (counts[o], o))
    if counts[least] >= 2 * folds:
        return
    most_folds = int(counts[least]) // 2
    raise UserError(
        f"dev has only {counts[least]} item(s) whose answer is {labels[least]}; {folds}-fold "
        f"cross-validation of the stack needs at least {2 * folds} of each answer ({folds} folds, "
        "and again inside each training part to choose C)",
        field="folds",
        hint=(
            f"pass --folds {most_folds}, or use a larger dev set"
            if most_folds >= 2
            else "use a larger dev set"
        ),
    )


def fit_stack(votes: np.ndarray, probs: np.ndarray, gold: np.ndarray, *, folds: int, seed: int) -> StackModel:
    """Fit the meta-learner on these items: ``C`` by stratified ``folds``-fold CV, then all of them.

    ``votes``: ``(m, n)`` chosen options; ``probs``: ``(m, n, k)`` probabilities; ``gold``: ``(n,)``.
    """
    m, n, k = probs.shape
    x, y = stack_features(votes, probs), _row_labels(gold, k)
    splits = _splits(gold, folds, seed)
    losses: dict[float, float] = {}
    for c in C_GRID:
        total = 0.0
        for train, held in splits:
            model = _logistic(c, x[_rows(train, k)], y[_rows(train, k)])
            total += _item_nll(model.decision_function(x[_rows(held, k)]).reshape(-1, k), gold[held])
        losses[c] = total / n
    best = min(C_GRID, key=lambda c: (losses[c], c))  # the smaller C (stronger prior) on a tie
    coef = _logistic(best, x, y).coef_[0]
    return StackModel(np.stack([coef[:m], coef[m : 2 * m]], axis=1), coef[2 * m :], best, losses)


def stack_predict(
    model: StackModel, votes: np.ndarray, probs: np.ndarray, priority: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, list[Tie]]:
    """The stack's scores, its option per item and the ties among them: equal scores go to the
    members' votes, then their summed probabilities, then ``priority`` (``winner`` None when
    nothing separates them)."""
    scores = model.scores(votes, probs)
    k = probs.shape[2]
    chain = [("votes", np.eye(k)[votes].sum(axis=0)), ("probabilities", probs.sum(axis=0))]
    pred, ties = break_ties(scores, chain, votes, priority)
    return scores, pred, ties


@dataclass
class StackCV:
    """The stack cross-validated on dev, with the best single member picked the same way."""

    folds: int
    seed: int
    pred: np.ndarray  # (n,) each item's option from the model that did not see it (-1: unresolved tie)
    accuracy: float  # pooled over the held-out folds
    best_single: float  # the member most accurate on the training folds, scored on the held-out one
    per_fold: list[dict[str, Any]]


def cross_validate_stack(
    votes: np.ndarray,
    probs: np.ndarray,
    gold: np.ndarray,
    *,
    folds: int,
    seed: int,
    priority: Sequence[int] | None = None,
) -> StackCV:
    """Stratified ``folds``-fold CV of :func:`fit_stack` (its choice of C included) on dev."""
    n = len(gold)
    pred = np.full(n, -1, dtype=np.int64)
    per_fold = []
    single_right = 0
    for train, held in _splits(gold, folds, seed):
        model = fit_stack(votes[:, train], probs[:, train], gold[train], folds=folds, seed=seed)
        _, p, ties = stack_predict(model, votes[:, held], probs[:, held], priority)
        for t in ties:
            if t.winner is None:
                p[t.index] = -1  # unresolved: counted wrong
        pred[held] = p
        train_acc = (votes[:, train] == gold[train]).mean(axis=1)
        best = int(np.argmax(train_acc))  # the first member on equal accuracy
        right = int((votes[best, held] == gold[held]).sum())
        single_right += right
        per_fold.append(
            {
                "n": int(len(held)),
                "accuracy": float((p == gold[held]).mean()),
                "C": model.c,
                "best_single": right / len(held),
            }
        )
    return StackCV(folds, seed, pred, float((pred == gold).mean()), single_right / n, per_fold)


def format_stack(
    names: Sequence[str], labels: Sequence[str], model: StackModel, n_dev: int, folds: int
) -> str:
    """The fitted stack's weights, as printed by ``ensemble/vote.py --method stack``."""
    width = max(max(len(n) for n in names), len("member"))
    lines = [
        f"stack: logistic regression over each member's option probability and vote, fitted on "
        f"{n_dev} dev items (C = {model.c:g}, chosen by {folds}-fold cross-validation)",
        f"  {'member':<{width}}  {'probability':>11}  {'vote':>8}",
    ]
    for j, n in enumerate(names):
        lines.append(f"  {n:<{width}}  {model.weights[j, 0]:11.4f}  {model.weights[j, 1]:8.4f}")
    lines.append(
        "  option bias: " + ", ".join(f"{lab} {b:.4f}" for lab, b in zip(labels, model.bias, strict=True))
    )
    return "\n".join(lines)


def stack_report(
    names: Sequence[str],
    labels: Sequence[str],
    model: StackModel,
    cv: StackCV,
    plain: dict[str, Any],
) -> dict[str, Any]:
    """The stack's part of ``--report``: the folds, its cross-validated accuracy beside the plain
    votes' (``plain``: ``hard``, ``soft`` and ``best_single`` = (name, accuracy)), the weights."""
    best_name, best_acc = plain["best_single"]
    return {
        "model": "logistic regression over (item, option) rows: each member's probability and vote",
        "folds": cv.folds,
        "seed": cv.seed,
        "C": model.c,
        "validation_nll": {f"{c:g}": v for c, v in model.validation_nll.items()},
        "cv_accuracy": cv.accuracy,
        "per_fold": cv.per_fold,
        "dev_accuracy": {
            "hard": plain["hard"],
            "soft": plain["soft"],
            "best_single": {"name": best_name, "accuracy": best_acc, "cross_validated": cv.best_single},
        },
        "coefficients": {
            n: dict(zip(FEATURES, map(float, model.weights[j]), strict=True)) for j, n in enumerate(names)
        },
        "option_bias": {lab: float(b) for lab, b in zip(labels, model.bias, strict=True)},
    }
