"""Benchmark: the stack's cross-validated dev accuracy against the textbook multinomial stack
(scikit-learn's ``StackingClassifier`` shape) and the plain votes, on simulated members.

    python benchmarks/bench_stack.py [--seeds 5] [--sizes 60 300] [--folds 5]

Ours (:mod:`malpyeong.ensemble.stacking`): one logistic regression over (item, option) rows, a
weight per member for its probability of the option and one for its vote, shared by all
options. The peer: a multinomial ``LogisticRegression`` over the members' concatenated option
probabilities (what ``StackingClassifier(stack_method="predict_proba")`` fits as its final
estimator), its ``C`` chosen from the same grid by the same inner stratified k-fold (held-out
log-loss, ``GridSearchCV``). Both are scored on the same outer stratified folds; hard and soft
voting fit nothing and are scored on all of dev. Three simulated sets of 3-option items
(``--seeds`` draws each, dev sizes ``--sizes``):

- ``informative``: seven 70% members whose probability on their choice is higher when right;
- ``flat``: the same members, but their confidence says nothing about being right;
- ``mixed``: members at 80/70/60% with informative probabilities, two random members.

Prints the mean accuracy per set and size, and the ratio ours / peer.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from malpyeong.ensemble import cross_validate_stack, vote_choices
from malpyeong.ensemble.stacking import C_GRID

K = 3


def members(rng: np.random.Generator, gold: np.ndarray, acc: float, informative: bool | None):
    """One member's choices and probabilities; ``informative=None``: a random member."""
    n = len(gold)
    if informative is None:
        return rng.integers(0, K, size=n), rng.dirichlet([1] * K, size=n)
    right = rng.random(n) < acc
    votes = np.where(right, gold, (gold + rng.integers(1, K, size=n)) % K)
    if informative:
        conf = np.where(right, 0.6 + 0.35 * rng.random(n), 0.5 + 0.2 * rng.random(n))
    else:
        conf = 0.5 + 0.45 * rng.random(n)
    rest = rng.dirichlet([1] * (K - 1), size=n) * (1 - conf)[:, None]
    probs = np.zeros((n, K))
    for i in range(n):
        others = [o for o in range(K) if o != votes[i]]
        probs[i, others] = rest[i]
        probs[i, votes[i]] = conf[i]
    return votes, probs


def simulate(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, K, size=n)
    if kind == "mixed":
        spec = [(0.8, True), (0.7, True), (0.6, True), (0, None), (0, None)]
    else:
        spec = [(0.7, kind == "informative")] * 7
    pairs = [members(rng, gold, a, inf) for a, inf in spec]
    return np.array([v for v, _ in pairs]), np.array([p for _, p in pairs]), gold


def peer_cv(probs: np.ndarray, gold: np.ndarray, folds: int, seed: int) -> float:
    """Multinomial LR over the concatenated probabilities, C by inner CV, same outer folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    x = probs.transpose(1, 0, 2).reshape(len(gold), -1)
    pred = np.full(len(gold), -1)
    outer = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, held in outer.split(x, gold):
        inner = StratifiedKFold(folds, shuffle=True, random_state=seed)
        grid = GridSearchCV(
            LogisticRegression(max_iter=2000), {"C": list(C_GRID)}, cv=inner, scoring="neg_log_loss"
        )
        pred[held] = grid.fit(x[train], gold[train]).predict(x[held])
    return float((pred == gold).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[60, 300])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    print(f"dev accuracy, mean over {args.seeds} seeds ({args.folds}-fold CV for the stacks; shared machine)")
    print(f"{'set':<12} {'n':>4}  {'hard':>6} {'soft':>6} {'peer':>6} {'ours':>6}  ours/peer")
    ratios = []
    start = time.perf_counter()
    for kind in ("informative", "flat", "mixed"):
        for n in args.sizes:
            rows = []
            for seed in range(args.seeds):
                votes, probs, gold = simulate(kind, n, seed)
                hard = vote_choices(votes, K, "hard", probs=probs).pred
                soft = vote_choices(votes, K, "soft", probs=probs).pred
                ours = cross_validate_stack(votes, probs, gold, folds=args.folds, seed=seed).accuracy
                rows.append(
                    (
                        (hard == gold).mean(),
                        (soft == gold).mean(),
                        peer_cv(probs, gold, args.folds, seed),
                        ours,
                    )
                )
            h, s, p, o = np.mean(rows, axis=0)
            ratios.append(o / p)
            print(f"{kind:<12} {n:>4}  {h:6.4f} {s:6.4f} {p:6.4f} {o:6.4f}  {o / p:9.3f}")
    print(
        f"ours / peer, geometric mean over the {len(ratios)} rows: {np.exp(np.mean(np.log(ratios))):.3f} "
        f"({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
