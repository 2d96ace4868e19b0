"""How reliable each model is, estimated without gold from the models' answers alone.

Dawid & Skene (1979): every model ``j`` has a confusion matrix ``pi_j[t, l]`` (the chance it
answers ``l`` when the truth is ``t``) and the truths have a prior ``p``; the truth of each item
is unknown. EM alternates between the posterior over each item's truth,
``T[i, t] ~ p[t] * prod_j pi_j[t, v_ji]``, and the matrices and prior that the posteriors
imply. It starts from the majority: ``T`` is each item's vote share, so the first matrices
measure each model's agreement with the majority, and models that agree with the consensus
where it is clear earn more say where it is not.

Results files from other teams or old runs have no probabilities and no dev scores; this is what
breaks their ties (and what ``--method dawid_skene`` votes with). The estimate is exact
arithmetic on the vote matrix with the models put in a canonical order (by their answers), so it
does not depend on the order of the input files, and it is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMOOTHING = 0.01  # pseudo-count: no model is ever "never wrong" on a few items
MAX_ITER = 200
TOL = 1e-10


@dataclass
class DawidSkene:
    posterior: np.ndarray  # (n, k): P(truth of item i is option t | all answers)
    confusion: np.ndarray  # (m, k, k): P(model j answers l | truth t), in the input order
    prior: np.ndarray  # (k,)
    iterations: int

    @property
    def accuracy(self) -> np.ndarray:
        """Each model's estimated accuracy: sum over t of prior[t] * confusion[j, t, t]."""
        diag = np.einsum("jtt->jt", self.confusion)
        return diag @ self.prior


def dawid_skene(
    votes: np.ndarray, k: int, *, smoothing: float = SMOOTHING, max_iter: int = MAX_ITER, tol: float = TOL
) -> DawidSkene:
    """EM over ``votes`` (``(models, items)`` option indices) with ``k`` options."""
    m, n = votes.shape
    # canonical model order (by their answers), so any permutation of the inputs computes the
    # very same sums in the very same order
    order = sorted(range(m), key=lambda j: votes[j].tobytes())
    onehot = np.eye(k)[votes[order]]  # (m, n, k)
    post = onehot.mean(axis=0)  # start: each item's vote share (agreement with the majority)
    prior = np.full(k, 1.0 / k)
    conf = np.full((m, k, k), 1.0 / k)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        prior = (post.sum(axis=0) + smoothing) / (n + k * smoothing)
        counts = np.einsum("it,jil->jtl", post, onehot) + smoothing
        conf = counts / counts.sum(axis=2, keepdims=True)
        log_post = np.log(prior)[None, :] + np.einsum("jil,jtl->it", onehot, np.log(conf))
        log_post -= log_post.max(axis=1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(axis=1, keepdims=True)
        delta = float(np.abs(new - post).max())
        post = new
        if delta < tol:
            break
    inverse = np.empty(m, dtype=np.int64)
    inverse[order] = np.arange(m)
    return DawidSkene(post, conf[inverse], prior, iterations)


__all__ = ["DawidSkene", "dawid_skene"]
