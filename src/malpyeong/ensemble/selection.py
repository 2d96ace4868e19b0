"""Ensemble selection on dev, its cross-validation, and the members file it writes.

Ensemble selection (:func:`caruana_select`) is greedy forward selection with replacement
(Caruana et al., 2004) on dev, followed by a pruning pass: a copy of a model stays only if
removing it lowers dev accuracy, so a model that only hurts dev is never kept. While selecting,
a tie that the probabilities cannot break counts as 1/k of an item (the expected accuracy of an
arbitrary pick). :func:`cross_validate_selection` repeats the whole selection inside k folds and
scores it on the held-out fold, so the in-sample figure can be compared with an honest one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from malpyeong.ensemble.voting import ATOL, METHODS, RTOL
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json, ensure_writable, json_loads, require_file


def _bag_scores(
    counts: np.ndarray, onehot: np.ndarray, probs: np.ndarray | None, method: str
) -> tuple[np.ndarray, np.ndarray | None]:
    votes = np.tensordot(counts, onehot, axes=1)
    if method == "soft":
        return np.tensordot(counts, probs, axes=1), votes
    return votes, None if probs is None else np.tensordot(counts, probs, axes=1)


def expected_accuracy(
    counts: np.ndarray, onehot: np.ndarray, probs: np.ndarray | None, gold: np.ndarray, method: str
) -> float:
    """Accuracy of the bag ``counts`` (copies per model); unbroken ties earn 1/k of an item."""
    primary, secondary = _bag_scores(counts, onehot, probs, method)
    tied = np.isclose(primary, primary.max(axis=1, keepdims=True), rtol=RTOL, atol=ATOL)
    if secondary is not None:
        masked = np.where(tied, secondary, -np.inf)
        tied &= np.isclose(masked, masked.max(axis=1, keepdims=True), rtol=RTOL, atol=ATOL)
    credit = tied[np.arange(len(gold)), gold] / tied.sum(axis=1)
    return float(credit.mean())


@dataclass
class Selection:
    counts: np.ndarray  # copies of each model in the chosen bag
    score: float  # in-sample (dev) accuracy of the bag
    history: list[tuple[int, float]]  # (model added, accuracy after) per greedy step
    pruned: list[int]  # models whose copies were removed by the pruning pass


def caruana_select(
    votes: np.ndarray,
    gold: np.ndarray,
    k: int,
    *,
    probs: np.ndarray | None = None,
    method: str = "weighted",
    rounds: int = 25,
    init: int = 0,
    patience: int = 5,
) -> Selection:
    """Greedy forward ensemble selection with replacement (Caruana et al. 2004), then pruning.

    Start from the ``init`` best single models (0: Caruana's sorted initialisation -- the best
    of the prefixes of the models ranked by dev accuracy, the shortest on equal accuracy); each
    round add the model (possibly again) whose extra copy gives the best dev accuracy, and keep
    the best bag seen (the earliest on equal accuracy); stop after ``rounds`` rounds or
    ``patience`` rounds without a new best. Then drop any copy whose removal does not lower dev
    accuracy (weakest models first), so every copy kept earns its place. Equal candidates go
    to the more accurate model, then the earlier input.
    """
    if method == "soft" and probs is None:
        raise UserError("soft selection needs every model's probabilities (the sidecars)")
    m = votes.shape[0]
    onehot = np.eye(k)[votes]
    single = np.array([float((votes[i] == gold).mean()) for i in range(m)])
    rank = sorted(range(m), key=lambda i: (-single[i], i))

    def score(c: np.ndarray) -> float:
        return expected_accuracy(c, onehot, probs, gold, method)

    def prefix(size: int) -> np.ndarray:
        c = np.zeros(m)
        c[rank[:size]] = 1
        return c

    if init > 0:
        size = min(init, m)
    else:
        prefix_scores = [score(prefix(s)) for s in range(1, m + 1)]
        top = max(prefix_scores)
        size = next(s for s, v in enumerate(prefix_scores, 1) if v >= top - ATOL)
    counts = prefix(size)
    best_counts, best = counts.copy(), score(counts)
    history = [(int(i), best) for i in rank[:size]]
    stale = 0
    for _ in range(rounds):
        trials = []
        for j in rank:
            trial = counts.copy()
            trial[j] += 1
            trials.append((score(trial), j, trial))
        s, j, counts = max(trials, key=lambda t: (t[0], single[t[1]], -t[1]))
        history.append((int(j), s))
        if s > best + ATOL:
            best_counts, best, stale = counts.copy(), s, 0
        else:
            stale += 1
            if stale >= patience:
                break
    counts, pruned = best_counts, []
    changed = True
    while changed:
        changed = False
        for j in sorted(range(m), key=lambda i: (single[i], -i)):
            if counts[j] == 0 or counts.sum() <= 1:
                continue
            trial = counts.copy()
            trial[j] -= 1
            s = score(trial)
            if s >= best - ATOL:
                counts, best, changed = trial, s, True
                if trial[j] == 0:
                    pruned.append(int(j))
    return Selection(counts, best, history, pruned)


def cross_validate_selection(
    votes: np.ndarray,
    gold: np.ndarray,
    k: int,
    *,
    probs: np.ndarray | None = None,
    method: str = "weighted",
    rounds: int = 25,
    init: int = 0,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """k-fold CV of the whole selection procedure, with the best-single-model choice beside it.

    Each fold selects on the other folds and is scored on its own items; the figures pool all
    held-out items (so they are comparable with the in-sample accuracy on the full dev set).
    """
    n = len(gold)
    folds = max(2, min(folds, n))
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    onehot = np.eye(k)[votes]
    sel_credit = single_credit = 0.0
    per_fold = []
    for held in parts:
        train = np.setdiff1d(order, held)
        sub_probs = None if probs is None else probs[:, train]
        chosen = caruana_select(
            votes[:, train], gold[train], k, probs=sub_probs, method=method, rounds=rounds, init=init
        )
        hp = None if probs is None else probs[:, held]
        acc = expected_accuracy(chosen.counts, onehot[:, held], hp, gold[held], method)
        train_acc = [(votes[i, train] == gold[train]).mean() for i in range(votes.shape[0])]
        best_single = int(np.argmax(train_acc))
        s_acc = float((votes[best_single, held] == gold[held]).mean())
        sel_credit += acc * len(held)
        single_credit += s_acc * len(held)
        per_fold.append({"n": int(len(held)), "selection": acc, "best_single": s_acc})
    return {
        "folds": folds,
        "seed": seed,
        "selection": sel_credit / n,
        "best_single": single_credit / n,
        "per_fold": per_fold,
    }


def write_members(
    path: str | os.PathLike,
    names: Sequence[str],
    selection: Selection,
    method: str,
    *,
    priority: Sequence[str],
    cv: dict[str, Any] | None = None,
    temperatures: dict[str, float] | None = None,
    gold: str | None = None,
    overwrite: bool = False,
) -> Path:
    """The chosen members and weights, for ``ensemble/vote.py --members FILE``."""
    path = ensure_writable(path, overwrite)
    members = [{"name": names[i], "weight": int(c)} for i, c in enumerate(selection.counts) if c]
    obj: dict[str, Any] = {
        "method": method,
        "members": members,
        "priority": list(priority),
        "in_sample_accuracy": selection.score,
        "selected_from": list(names),
        "history": [{"added": names[j], "accuracy": s} for j, s in selection.history],
        "pruned": [names[j] for j in selection.pruned],
        "gold": gold,
    }
    if cv is not None:
        obj["cross_validation"] = cv
    if temperatures:
        obj["temperatures"] = {n: t for n, t in temperatures.items() if n in {m["name"] for m in members}}
    atomic_write_json(path, obj)
    return path


def read_members(path: str | os.PathLike) -> dict[str, Any]:
    """A members file from ``--select``, checked."""
    p = require_file(path, field="members")
    try:
        obj = json_loads(p.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"not valid JSON ({err})", file=str(p)) from None
    members = obj.get("members") if isinstance(obj, dict) else None
    if (
        not isinstance(members, list)
        or not members
        or not all(
            isinstance(m, dict)
            and isinstance(m.get("name"), str)
            and isinstance(m.get("weight"), (int, float))
            and m["weight"] > 0
            for m in members
        )
    ):
        raise UserError(
            'expected {"members": [{"name": ..., "weight": > 0}, ...]}',
            file=str(p),
            field="members",
            hint="write it with vote.py --select FILE",
        )
    if obj.get("method") not in (None, *METHODS):
        raise UserError(f"unknown method {obj.get('method')!r}", file=str(p), field="method")
    return obj
