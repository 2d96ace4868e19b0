"""Paired statistics for comparing models item by item: bootstrap confidence intervals, a
paired permutation (sign-flip) test, the Wilcoxon signed-rank test, Holm's correction.

Every resampling takes a seed, so a report is the same each time it is made. Resamples are
drawn in blocks, so memory stays small for thousands of items.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

BLOCK_CELLS = 2_000_000  # resample draws held in memory at once


def _blocks(resamples: int, n: int) -> Iterator[int]:
    size = max(1, BLOCK_CELLS // max(n, 1))
    done = 0
    while done < resamples:
        yield min(size, resamples - done)
        done += size


def bootstrap_means(values: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """Means of ``resamples`` samples drawn with replacement from ``values``."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    out = []
    for rows in _blocks(resamples, len(x)):
        out.append(x[rng.integers(0, len(x), size=(rows, len(x)))].mean(axis=1))
    return np.concatenate(out)


def mean_ci(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    means = bootstrap_means(values, resamples=resamples, seed=seed)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap(
    diffs: Sequence[float], *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """CI of the mean paired difference and a two-sided bootstrap p-value (twice the share of
    resampled means on the far side of 0, at most 1)."""
    means = bootstrap_means(diffs, resamples=resamples, seed=seed)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    p = 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
    return float(lo), float(hi), min(1.0, p)


def permutation_p(diffs: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired permutation test: under "no difference" each item's difference is as
    likely negated; p = (1 + #|resampled mean| >= |observed mean|) / (1 + resamples)."""
    d = np.asarray(diffs, dtype=float)
    observed = abs(d.mean()) - 1e-12  # equal means count as extreme (float noise aside)
    rng = np.random.default_rng(seed)
    extreme = 0
    for rows in _blocks(resamples, len(d)):
        signs = rng.integers(0, 2, size=(rows, len(d))) * 2 - 1
        extreme += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed))
    return (extreme + 1) / (resamples + 1)


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy); 1 when every difference is 0."""
    from scipy.stats import wilcoxon

    d = np.asarray(diffs, dtype=float)
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error over several comparisons)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


__all__ = ["bootstrap_means", "holm", "mean_ci", "paired_bootstrap", "permutation_p", "wilcoxon_p"]
