"""Temperature calibration of a model's option probabilities on dev (for soft voting)."""

from __future__ import annotations

import math

import numpy as np


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` along the last axis (T > 1 flattens, T < 1 sharpens)."""
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=-1, keepdims=True)


def nll(probs: np.ndarray, gold: np.ndarray) -> float:
    """Mean negative log-likelihood of the gold options."""
    return float(-np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, 1.0)).mean())


def fit_temperature(probs: np.ndarray, gold: np.ndarray) -> float:
    """The temperature that minimises dev NLL (bounded 1-D search over log T in [1/20, 20])."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda lt: nll(apply_temperature(probs, math.exp(lt)), gold),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    best = math.exp(float(res.x))
    # Never return something worse than leaving the probabilities alone.
    return best if nll(apply_temperature(probs, best), gold) < nll(probs, gold) else 1.0
