"""Combining several models' predictions into one submission.

Choice tasks (CCI) are voted; generate tasks (DCS) are combined by minimum-Bayes-risk (MBR)
selection. The inputs are results files (:mod:`malpyeong.results`): ``NAME.json`` in submission
layout plus, when present, ``NAME.sidecar.jsonl`` with per-option probabilities (choice) or the
raw generation (generate). A model's *name* is its results file's stem.

Voting methods (per id):

- ``hard``: one vote per model; the option with most votes wins.
- ``weighted``: each model's vote counts its weight (``--weights``, or its dev accuracy).
- ``soft``: the (weighted) mean of the models' probabilities; optionally each model's
  probabilities are first temperature-calibrated on dev (:func:`fit_temperature`).

**Tie rule** (deterministic, never the order of the files). When the best options are equal, the
tie goes to the next rule that separates them, in this order:

1. ``probabilities``: the summed sidecar probabilities of the tied options (each model's scaled by
   its weight in weighted voting) -- only when every model has a sidecar with probabilities;
2. ``weights``: the summed weights of the models voting for each tied option (``--weights``, or
   dev accuracy with ``--gold``) -- hard voting only (weighted voting already used them);
3. ``priority``: the option chosen by the most trusted model (``--priority``, a declared order
   of the models) among those that voted for a tied option.

For soft voting the chain is ``votes`` (the weighted vote count) then ``priority``. A tie that no
rule breaks stops the run with an error asking for ``--priority``. Scores count as equal when
they agree to 1e-9 (relative), so float rounding never decides.

Ensemble selection (:func:`caruana_select`) is greedy forward selection with replacement
(Caruana et al., 2004) on dev, followed by a pruning pass: a copy of a model stays only if
removing it lowers dev accuracy, so a model that only hurts dev is never kept. While selecting,
a tie that the probabilities cannot break counts as 1/k of an item (the expected accuracy of an
arbitrary pick). :func:`cross_validate_selection` repeats the whole selection inside k folds and
scores it on the held-out fold, so the in-sample figure can be compared with an honest one.

MBR (:func:`mbr_choose`): per id, the candidate with the highest mean similarity (ROUGE-1 F over
Mecab morphemes, or BERTScore F1) to the other models' candidates wins -- the candidate the
others agree with most, the generative analogue of a majority vote.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from malpyeong.errors import UserError, UserErrors
from malpyeong.results import Results, read_results

log = logging.getLogger(__name__)

METHODS = ("hard", "weighted", "soft")
RTOL, ATOL = 1e-9, 1e-12
MAX_ERRORS_PER_FILE = 10


# ------------------------------------------------------------------------------------- inputs


def _examples(ids: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(list(ids)[:n])
    return shown + (f", ... ({len(ids) - n} more)" if len(ids) > n else "")


def member_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Each input's name: its file stem, or its path when two stems collide."""
    stems = [Path(p).stem for p in paths]
    counts = Counter(stems)
    return [s if counts[s] == 1 else str(p) for s, p in zip(stems, paths, strict=False)]


def infer_task(results: Sequence[Results]) -> str:
    """The task named in the sidecar headers, else guessed from the outputs."""
    named = {r.meta.get("task") for r in results if r.meta.get("task")}
    if len(named) > 1:
        raise UserError(f"the inputs come from different tasks: {', '.join(sorted(named))}",
                        field="task", hint="vote files of one task at a time")
    if named:
        return named.pop()
    from malpyeong.tasks import get_task

    # A CCI file with a few bad labels must still be checked as CCI, so go by the majority.
    labels = set(get_task("cci").output_labels)
    values = [v for r in results for v in r.outputs.values()]
    return "cci" if sum(v in labels for v in values) * 2 >= len(values) > 0 else "dcs"


def check_results(results: Sequence[Results], task: Any,
                  expected: tuple[str, Sequence[str]] | None = None) -> None:
    """Every check that must pass before voting; raise ``UserErrors`` listing every problem.

    Per file: no duplicate ids, every output valid for ``task``, a sidecar (when present) with
    valid probabilities for every id. Across files: the same id set as ``expected`` (a
    ``(file name, ids)`` pair: the test or gold file) or else as the first input. A mismatch
    names the file and the ids that differ; nothing is ever voted on a subset.
    """
    errors: list[UserError] = []
    for r in results:
        name = str(r.path)
        problems: list[UserError] = []
        for dup, n in Counter(r.ids).items():
            if n > 1:
                problems.append(UserError(f"duplicate id ({n} items share it)", file=name,
                                          item=dup, field="id"))
        for i in r.ids:
            problem = task.check_output(r.outputs.get(i))
            if problem:
                problems.append(UserError(problem, file=name, item=i, field="output"))
        if r.probs is not None and task.kind == "choice":
            side = str(r.path.with_name(r.path.stem + ".sidecar.jsonl"))
            missing = [i for i in r.ids if i not in r.probs]
            if missing:
                problems.append(UserError(
                    f"sidecar has no probabilities for {len(missing)} id(s): "
                    f"{_examples(missing)}", file=side, field="probs",
                    hint="the sidecar is from another run; predict again or delete it"))
            for i in r.ids:
                p = r.probs.get(i)
                if p is None:
                    continue
                if len(p) != task.n_choices or not all(math.isfinite(x) and x >= 0 for x in p) \
                        or sum(p) <= 0:
                    problems.append(UserError(
                        f"probs must be {task.n_choices} non-negative numbers, got {p}",
                        file=side, item=i, field="probs"))
        if len(problems) > MAX_ERRORS_PER_FILE:
            more = len(problems) - MAX_ERRORS_PER_FILE
            problems = problems[:MAX_ERRORS_PER_FILE] + [
                UserError(f"... and {more} more problem(s)", file=name)]
        errors.extend(problems)
    ref_name, ref_ids = expected if expected else (str(results[0].path), results[0].ids)
    ref = set(ref_ids)
    for r in results:
        ids = set(r.ids)
        if ids == ref:
            continue
        missing = sorted(ref - ids)
        extra = sorted(ids - ref)
        parts = []
        if missing:
            parts.append(f"{len(missing)} id(s) of {ref_name} missing: {_examples(missing)}")
        if extra:
            parts.append(f"{len(extra)} id(s) not in {ref_name}: {_examples(extra)}")
        errors.append(UserError("; ".join(parts), file=str(r.path), field="id",
                                hint="every input must predict exactly the same items"))
    if errors:
        raise UserErrors(errors)


def load_results(paths: Sequence[str | os.PathLike], task: Any,
                 expected: tuple[str, Sequence[str]] | None = None) -> list[Results]:
    """Read and check results files (see :func:`check_results`)."""
    if not paths:
        raise UserError("no results files given")
    results = _read_all(paths)
    check_results(results, task, expected)
    return results


def vote_matrix(results: Sequence[Results], ids: Sequence[str], task: Any) -> np.ndarray:
    """``(models, items)`` array of each model's chosen option index."""
    return np.array([[task.index_of_output(r.outputs[i]) for i in ids] for r in results],
                    dtype=np.int64).reshape(len(results), len(ids))


def prob_tensor(results: Sequence[Results], ids: Sequence[str], k: int) -> np.ndarray | None:
    """``(models, items, options)`` probabilities (renormalised), or None unless all have them."""
    if any(r.probs is None for r in results):
        return None
    p = np.array([[r.probs[i] for i in ids] for r in results], dtype=np.float64)
    p = p.reshape(len(results), len(ids), k)
    return p / p.sum(axis=2, keepdims=True)


def resolve_priority(names: Sequence[str], given: Sequence[str] | None) -> list[int] | None:
    """``--priority`` (names or paths of the inputs, most trusted first) as member indices."""
    if not given:
        return None
    index = {n: i for i, n in enumerate(names)}
    order, unknown = [], []
    for g in given:
        key = g if g in index else Path(g).stem
        if key not in index:
            unknown.append(g)
        elif index[key] not in order:
            order.append(index[key])
    if unknown:
        raise UserError(f"--priority names unknown model(s): {', '.join(unknown)}",
                        field="priority", hint=f"the inputs are: {', '.join(names)}")
    missing = [names[i] for i in range(len(names)) if i not in order]
    if missing:
        raise UserError(f"--priority must rank every input; missing: {', '.join(missing)}",
                        field="priority")
    return order


# ------------------------------------------------------------------------------------- voting


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

    def tie_counts(self) -> dict[str, int]:
        return dict(Counter(t.rule or "unresolved" for t in self.ties))


def _best(row: np.ndarray, among: Sequence[int]) -> list[int]:
    values = row[list(among)]
    top = values.max()
    return [o for o, v in zip(among, values, strict=True)
            if math.isclose(v, top, rel_tol=RTOL, abs_tol=ATOL)]


def _fmt(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.4f}"


def vote_choices(votes: np.ndarray, k: int, method: str = "hard", *,
                 weights: Sequence[float] | None = None, probs: np.ndarray | None = None,
                 priority: Sequence[int] | None = None) -> VoteOutcome:
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
    if (w < 0).any() or w.sum() <= 0:
        raise UserError("weights must be non-negative and not all zero", field="weights")
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
    else:
        if probs is None:
            raise UserError("soft voting needs every model's probabilities (the sidecars)",
                            field="method", hint="predict with run/test.py, or use --method hard")
        primary = np.tensordot(w, probs, axes=1) / w.sum()
        chain.append(("votes", np.tensordot(w, onehot, axes=1)))
    pred = primary.argmax(axis=1)
    top = primary.max(axis=1, keepdims=True)
    tied_rows = np.nonzero(np.isclose(primary, top, rtol=RTOL, atol=ATOL).sum(axis=1) > 1)[0]
    ties = []
    for row in tied_rows:
        options = tuple(_best(primary[row], range(k)))
        tied, rule, detail, decider = list(options), None, "", None
        for name, scores in chain:
            narrowed = _best(scores[row], tied)
            if len(narrowed) < len(tied):
                detail = f"{name} " + " vs ".join(_fmt(scores[row, o]) for o in tied)
                tied = narrowed
            if len(tied) == 1:
                rule = name
                break
        if len(tied) > 1 and priority is not None:
            for member in priority:
                if votes[member, row] in tied:
                    tied, rule, decider = [int(votes[member, row])], "priority", member
                    break
        winner = tied[0] if len(tied) == 1 else None
        if winner is not None:
            pred[row] = winner
        ties.append(Tie(int(row), options, rule, winner, detail,
                        decider if rule == "priority" else None))
    return VoteOutcome(pred, primary, ties)


def describe_ties(outcome: VoteOutcome, ids: Sequence[str], labels: Sequence[str],
                  names: Sequence[str]) -> list[str]:
    """One line per tie: the id, the tied options and scores, the rule and the winner."""
    lines = []
    for t in outcome.ties:
        scores = ", ".join(f"{labels[o]}={_fmt(outcome.scores[t.index, o])}" for o in t.options)
        if t.winner is None:
            lines.append(f"  {ids[t.index]}: {scores} -> UNRESOLVED")
            continue
        detail = f"{names[t.member]} chose it" if t.rule == "priority" else t.detail
        lines.append(f"  {ids[t.index]}: {scores} -> {labels[t.winner]} by {t.rule} ({detail})")
    return lines


def raise_if_unresolved(outcome: VoteOutcome, ids: Sequence[str], labels: Sequence[str]) -> None:
    bad = [t for t in outcome.ties if t.winner is None]
    if bad:
        first = bad[0]
        raise UserError(
            f"{len(bad)} tie(s) that no rule can break, e.g. {ids[first.index]} "
            f"({' = '.join(labels[o] for o in first.options)})", field="priority",
            hint="pass --priority NAME ... (every model, most trusted first); sidecars with "
                 "probabilities or --weights also break ties")


# -------------------------------------------------------------------------------- calibration


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

    res = minimize_scalar(lambda lt: nll(apply_temperature(probs, math.exp(lt)), gold),
                          bounds=(math.log(0.05), math.log(20.0)), method="bounded",
                          options={"xatol": 1e-5})
    best = math.exp(float(res.x))
    # Never return something worse than leaving the probabilities alone.
    return best if nll(apply_temperature(probs, best), gold) < nll(probs, gold) else 1.0


# -------------------------------------------------------------------------------- diagnostics


def choice_diagnostics(names: Sequence[str], votes: np.ndarray, gold: np.ndarray,
                       ensemble_pred: np.ndarray | None = None) -> dict[str, Any]:
    """Per-model accuracy, pairwise agreement, error correlation, ensemble and oracle accuracy.

    Error correlation is the Pearson (phi) correlation of the models' 0/1 error indicators;
    None where a model is never (or always) wrong.
    """
    correct = votes == gold[None, :]
    m = len(names)
    agree = np.array([[float((votes[a] == votes[b]).mean()) for b in range(m)] for a in range(m)])
    err = (~correct).astype(np.float64)
    centered = err - err.mean(axis=1, keepdims=True)
    norms = np.sqrt((centered ** 2).sum(axis=1))
    corr: list[list[float | None]] = []
    for a in range(m):
        row = []
        for b in range(m):
            denom = norms[a] * norms[b]
            row.append(None if denom == 0 else float((centered[a] * centered[b]).sum() / denom))
        corr.append(row)
    out = {
        "models": list(names),
        "accuracy": {n: float(correct[i].mean()) for i, n in enumerate(names)},
        "agreement": agree.tolist(),
        "error_correlation": corr,
        "oracle": float(correct.any(axis=0).mean()),
        "all_wrong": float((~correct).all(axis=0).mean()),
        "n": int(votes.shape[1]),
    }
    if ensemble_pred is not None:
        out["ensemble"] = float((ensemble_pred == gold).mean())
    return out


def _matrix_lines(title: str, matrix: Sequence[Sequence[float | None]]) -> list[str]:
    m = len(matrix)
    lines = [f"{title:<14}" + "".join(f"{f'[{j + 1}]':>7}" for j in range(m))]
    for i, row in enumerate(matrix):
        cells = "".join(f"{'-' if v is None else f'{v:.2f}':>7}" for v in row)
        lines.append(f"{f'[{i + 1}]':<14}" + cells)
    return lines


def format_choice_diagnostics(d: dict[str, Any]) -> str:
    names = d["models"]
    width = max(max(len(n) for n in names), len("model"))
    lines = [f"dev diagnostics ({d['n']} items)", f"{'':4} {'model':<{width}}  accuracy"]
    for i, n in enumerate(names):
        lines.append(f"{f'[{i + 1}]':<4} {n:<{width}}  {d['accuracy'][n]:.4f}")
    lines += _matrix_lines("agreement", d["agreement"])
    lines += _matrix_lines("error corr.", d["error_correlation"])
    best = max(d["accuracy"].values())
    if "ensemble" in d:
        lines.append(f"ensemble accuracy {d['ensemble']:.4f} (best single {best:.4f})")
    lines.append(f"oracle (any model right) {d['oracle']:.4f}; all models wrong "
                 f"{d['all_wrong']:.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- selection


def _bag_scores(counts: np.ndarray, onehot: np.ndarray, probs: np.ndarray | None,
                method: str) -> tuple[np.ndarray, np.ndarray | None]:
    votes = np.tensordot(counts, onehot, axes=1)
    if method == "soft":
        return np.tensordot(counts, probs, axes=1), votes
    return votes, None if probs is None else np.tensordot(counts, probs, axes=1)


def expected_accuracy(counts: np.ndarray, onehot: np.ndarray, probs: np.ndarray | None,
                      gold: np.ndarray, method: str) -> float:
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


def caruana_select(votes: np.ndarray, gold: np.ndarray, k: int, *,
                   probs: np.ndarray | None = None, method: str = "weighted",
                   rounds: int = 25, init: int = 0, patience: int = 5) -> Selection:
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


def cross_validate_selection(votes: np.ndarray, gold: np.ndarray, k: int, *,
                             probs: np.ndarray | None = None, method: str = "weighted",
                             rounds: int = 25, init: int = 0, folds: int = 5,
                             seed: int = 0) -> dict[str, Any]:
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
        chosen = caruana_select(votes[:, train], gold[train], k, probs=sub_probs, method=method,
                                rounds=rounds, init=init)
        hp = None if probs is None else probs[:, held]
        acc = expected_accuracy(chosen.counts, onehot[:, held], hp, gold[held], method)
        train_acc = [(votes[i, train] == gold[train]).mean() for i in range(votes.shape[0])]
        best_single = int(np.argmax(train_acc))
        s_acc = float((votes[best_single, held] == gold[held]).mean())
        sel_credit += acc * len(held)
        single_credit += s_acc * len(held)
        per_fold.append({"n": int(len(held)), "selection": acc, "best_single": s_acc})
    return {"folds": folds, "seed": seed, "selection": sel_credit / n,
            "best_single": single_credit / n, "per_fold": per_fold}


def write_members(path: str | os.PathLike, names: Sequence[str], selection: Selection,
                  method: str, *, priority: Sequence[str], cv: dict[str, Any] | None = None,
                  temperatures: dict[str, float] | None = None, gold: str | None = None,
                  overwrite: bool = False) -> Path:
    """The chosen members and weights, for ``ensemble/vote.py --members FILE``."""
    from malpyeong.io import atomic_write_json, ensure_writable

    path = ensure_writable(path, overwrite)
    members = [{"name": names[i], "weight": int(c)} for i, c in enumerate(selection.counts) if c]
    obj: dict[str, Any] = {
        "method": method, "members": members, "priority": list(priority),
        "in_sample_accuracy": selection.score, "selected_from": list(names),
        "history": [{"added": names[j], "accuracy": s} for j, s in selection.history],
        "pruned": [names[j] for j in selection.pruned], "gold": gold,
    }
    if cv is not None:
        obj["cross_validation"] = cv
    if temperatures:
        obj["temperatures"] = {n: t for n, t in temperatures.items() if n in
                               {m["name"] for m in members}}
    atomic_write_json(path, obj)
    return path


def read_members(path: str | os.PathLike) -> dict[str, Any]:
    """A members file from ``--select``, checked."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("file not found", file=str(p)) from None
    except ValueError as err:
        raise UserError(f"not valid JSON ({err})", file=str(p)) from None
    members = obj.get("members") if isinstance(obj, dict) else None
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str)
            and isinstance(m.get("weight"), (int, float)) and m["weight"] > 0 for m in members):
        raise UserError("expected {\"members\": [{\"name\": ..., \"weight\": > 0}, ...]}",
                        file=str(p), field="members", hint="write it with vote.py --select FILE")
    if obj.get("method") not in (None, *METHODS):
        raise UserError(f"unknown method {obj.get('method')!r}", file=str(p), field="method")
    return obj


# ---------------------------------------------------------------------------------------- MBR


def rouge1_similarity(pairs: Sequence[tuple[str, str]]) -> list[float]:
    """ROUGE-1 F (official Mecab-morpheme scorer) of each pair; symmetric in the pair."""
    from malpyeong.metrics import rouge1_pair

    return [rouge1_pair(a, b)["f"] for a, b in pairs]


def bertscore_similarity(model_path: str, **kwargs: Any) -> Callable[[Sequence[tuple[str, str]]],
                                                                       list[float]]:
    """BERTScore F1 of each pair with the model at ``model_path`` (loaded once)."""
    from malpyeong.metrics import BertScorer

    scorer = BertScorer(model_path, **kwargs)

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


def mbr_choose(candidates: Sequence[Sequence[str]],
               similarity: Callable[[Sequence[tuple[str, str]]], list[float]], *,
               weights: Sequence[float] | None = None,
               priority: Sequence[int] | None = None) -> MbrOutcome:
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
        best = _best(scores[i], range(m))
        distinct = sorted({texts[a] for a in best}, key=lambda t: min(
            a for a in best if texts[a] == t))
        pick: str | None = distinct[0]
        if len(distinct) > 1:
            tied_texts, rule, detail, decider = distinct, None, "", None
            if weights is not None:
                support = {t: float(w[[a for a in range(m) if texts[a] == t]].sum())
                           for t in tied_texts}
                top = max(support.values())
                narrowed = [t for t in tied_texts if math.isclose(support[t], top, rel_tol=RTOL)]
                detail = "weights " + " vs ".join(_fmt(support[t]) for t in tied_texts)
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
            ties.append(Tie(i, options, rule, win, detail,
                            decider if rule == "priority" else None))
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
            lines.append(f"  {ids[t.index]}: {scores} -> {names[t.winner]} by {t.rule} "
                         f"({detail})")
    return lines


def generate_diagnostics(names: Sequence[str], candidates: Sequence[Sequence[str]],
                         refs: Sequence[str], chosen: Sequence[str], *,
                         bertscore_model: str | None = None) -> dict[str, Any]:
    """Each model's, the MBR ensemble's and the oracle's ROUGE-1 (and BERTScore) against gold."""
    from malpyeong import metrics

    m = len(names)
    per_model = [[c[j] for c in candidates] for j in range(m)]
    rouge = {n: metrics.rouge1(refs, per_model[j]) for j, n in enumerate(names)}
    items = [metrics.rouge1_items(refs, per_model[j]) for j in range(m)]
    best_j = [max(range(m), key=lambda j, i=i: (items[j][i], -j)) for i in range(len(refs))]
    oracle_texts = [candidates[i][j] for i, j in enumerate(best_j)]
    out: dict[str, Any] = {
        "models": list(names), "n": len(refs), "rouge1": rouge,
        "ensemble": {"rouge1": metrics.rouge1(refs, chosen)},
        "oracle": {"rouge1": metrics.rouge1(refs, oracle_texts)},
    }
    if bertscore_model:
        scorer = metrics.BertScorer(bertscore_model)

        def bs(preds: Sequence[str]) -> float:
            f = [s["f"] for s in scorer.score(refs, preds)]
            return sum(f) / len(f)

        out["bertscore"] = {n: bs(per_model[j]) for j, n in enumerate(names)}
        out["ensemble"]["bertscore"] = bs(chosen)
    return out


def format_generate_diagnostics(d: dict[str, Any]) -> str:
    names = d["models"]
    width = max(max(len(n) for n in names), len("MBR ensemble"))
    has_bs = "bertscore" in d
    head = f"{'model':<{width}}  rouge1" + ("  bertscore" if has_bs else "")
    lines = [f"dev scores ({d['n']} items, x100)", head]
    for n in names:
        row = f"{n:<{width}}  {d['rouge1'][n] * 100:6.2f}"
        if has_bs:
            row += f"  {d['bertscore'][n] * 100:9.2f}"
        lines.append(row)
    row = f"{'MBR ensemble':<{width}}  {d['ensemble']['rouge1'] * 100:6.2f}"
    if has_bs:
        row += f"  {d['ensemble']['bertscore'] * 100:9.2f}"
    lines.append(row)
    lines.append(f"{'oracle':<{width}}  {d['oracle']['rouge1'] * 100:6.2f}  (best candidate "
                 "per id by ROUGE-1 against gold)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the vote job


@dataclass
class VoteJob:
    """Everything ``ensemble/vote.py`` was asked to do (see its --help)."""

    inputs: list[str]
    output: str | None = None
    task: str | None = None
    method: str | None = None
    weights: list[float] | None = None
    priority: list[str] | None = None
    gold: str | None = None
    dev_results: list[str] | None = None
    calibrate: bool = False
    select: str | None = None
    members: str | None = None
    rounds: int = 25
    init: int = 0
    folds: int = 5
    seed: int = 0
    test: str | None = None
    bertscore_model: str | None = None
    report: str | None = None
    overwrite: bool = False


def _read_all(paths: Sequence[str | os.PathLike]) -> list[Results]:
    """Read every results file, reporting all unreadable ones at once."""
    errors: list[UserError] = []
    out = []
    for p in paths:
        try:
            out.append(read_results(p))
        except UserErrors as errs:
            errors.extend(errs.errors)
        except UserError as err:
            errors.append(err)
    if errors:
        raise UserErrors(errors)
    return out


def _by_name(names: Sequence[str], results: Sequence[Results], wanted: Sequence[str],
             what: str) -> list[Results]:
    index = {n: r for n, r in zip(names, results, strict=False)}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise UserError(f"no {what} for model(s) {', '.join(missing)}", field=what,
                        hint=f"{what} are matched by file name; have: {', '.join(names)}")
    return [index[w] for w in wanted]


def _priority_by_accuracy(names: Sequence[str], votes: np.ndarray, gold: np.ndarray) -> list[str]:
    acc = [float((votes[j] == gold).mean()) for j in range(len(names))]
    return [names[j] for j in sorted(range(len(names)), key=lambda j: (-acc[j], j))]


def _plan_priority(plan: dict | None, names: Sequence[str]) -> list[str] | None:
    """A members file's priority, restricted to the models being voted."""
    if not plan or not plan.get("priority"):
        return None
    return [n for n in plan["priority"] if n in names]


def run_vote(job: VoteJob, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Check the inputs, combine them, report, and write the submission (see ``VoteJob``)."""
    from malpyeong.data import load_items
    from malpyeong.io import ensure_writable
    from malpyeong.tasks import get_task

    if not (job.output or job.gold or job.select):
        raise UserError("nothing to do",
                        hint="give --output FILE, --gold DEV.json or --select FILE")
    for path in (job.output, job.select, job.report):
        if path:
            ensure_writable(path, job.overwrite)
    if (job.select or job.calibrate or job.dev_results) and not job.gold:
        raise UserError("--select, --calibrate and --dev-results need --gold DEV.json",
                        field="gold")
    if job.method is not None and job.method not in METHODS:
        raise UserError(f"unknown method '{job.method}'", field="method", hint=", ".join(METHODS))
    results = _read_all(job.inputs)
    names = member_names(job.inputs)
    plan = read_members(job.members) if job.members else None
    file_weights = None
    if plan:
        wanted = [m["name"] for m in plan["members"]]
        dropped = [n for n in names if n not in wanted]
        results, names = _by_name(names, results, wanted, "inputs"), wanted
        file_weights = [float(m["weight"]) for m in plan["members"]]
        echo(f"members from {job.members}: " + ", ".join(
            f"{n} x{_fmt(w)}" for n, w in zip(names, file_weights, strict=False))
             + (f" (not used: {', '.join(dropped)})" if dropped else ""))
    task = get_task(job.task or infer_task(results))
    template = load_items(job.test, task) if job.test else None
    check_results(results, task, (job.test, [it.id for it in template]) if template else None)
    if template is None and job.output:
        template = load_items(results[0].path, task)
    ids = [it.id for it in template] if template else list(results[0].ids)
    gold_items = load_items(job.gold, task, require_output=True) if job.gold else None
    dev: list[Results] | None = None
    dev_ids: list[str] = []
    if gold_items is not None:
        dev_ids = [it.id for it in gold_items]
        if job.dev_results:
            dev = _by_name(member_names(job.dev_results), _read_all(job.dev_results), names,
                           "dev-results")
            check_results(dev, task, (job.gold, dev_ids))
        elif set(ids) == set(dev_ids):
            dev = results
        else:
            raise UserError(f"the inputs do not predict the items of {job.gold}", field="gold",
                            hint="pass --dev-results with the same models' dev predictions")
    report: dict[str, Any] = {"task": task.name, "inputs": list(job.inputs), "models": names,
                              "n": len(ids)}
    echo(f"{len(results)} {task.name} results files, {len(ids)} items each: {', '.join(names)}")
    if task.kind == "choice":
        outputs = _vote_choice(job, task, results, names, ids, dev, dev_ids, gold_items,
                               plan, file_weights, report, echo)
    else:
        outputs = _vote_generate(job, task, results, names, ids, dev, dev_ids, gold_items,
                                 plan, file_weights, report, echo)
    if job.output:
        from malpyeong.data import check_submission, write_submission

        write_submission(template, outputs, job.output, overwrite=job.overwrite)
        echo(f"wrote {job.output} ({len(ids)} items)")
        report["output"] = job.output
        if job.test:
            n = check_submission(job.output, job.test, task)
            echo(f"{job.output}: passes the official submission checks against {job.test} "
                 f"({n} items)")
    if job.report:
        from malpyeong.io import atomic_write_json

        atomic_write_json(job.report, report)
        echo(f"wrote the full report to {job.report}")
    return report


def _vote_choice(job: VoteJob, task: Any, results: list[Results], names: list[str],
                 ids: list[str], dev: list[Results] | None, dev_ids: list[str],
                 gold_items: list | None, plan: dict | None, file_weights: list[float] | None,
                 report: dict[str, Any], echo: Callable[[str], None]) -> dict[str, str]:
    k, labels = task.n_choices, task.output_labels
    method = job.method or (plan or {}).get("method") or "hard"
    if method == "soft" or job.calibrate:
        lacking = [str(r.path) for r in [*results, *(dev or [])] if r.probs is None]
        if lacking:
            raise UserError(f"soft voting and --calibrate need probabilities; no sidecar with "
                            f"probs for: {', '.join(dict.fromkeys(lacking))}", field="method",
                            hint="predict with run/test.py (it writes NAME.sidecar.jsonl), "
                                 "or use --method hard / weighted")
    votes, probs = vote_matrix(results, ids, task), prob_tensor(results, ids, k)
    dvotes = dprobs = dgold = None
    if dev is not None:
        dvotes, dprobs = vote_matrix(dev, dev_ids, task), prob_tensor(dev, dev_ids, k)
        dgold = np.array([task.label_index(it) for it in gold_items], dtype=np.int64)
        report["dev_models"] = choice_diagnostics(names, dvotes, dgold)
    temperatures: dict[str, float] | None = None
    if job.calibrate:
        if dprobs is None or probs is None:
            raise UserError("--calibrate needs probabilities in every sidecar (dev and inputs)",
                            field="calibrate")
        temperatures = {}
        echo("temperature calibration on dev (NLL before -> after)")
        for j, n in enumerate(names):
            t = fit_temperature(dprobs[j], dgold)
            temperatures[n] = t
            echo(f"  {n}: T={t:.3f}  {nll(dprobs[j], dgold):.4f} -> "
                 f"{nll(apply_temperature(dprobs[j], t), dgold):.4f}")
    elif plan and plan.get("temperatures"):
        temperatures = {n: float(plan["temperatures"].get(n, 1.0)) for n in names}
    if temperatures:
        if probs is None:
            raise UserError("temperatures need probabilities in every sidecar", field="calibrate")
        probs = np.stack([apply_temperature(probs[j], temperatures[n])
                          for j, n in enumerate(names)])
        if dprobs is not None:
            dprobs = np.stack([apply_temperature(dprobs[j], temperatures[n])
                               for j, n in enumerate(names)])
        report["temperatures"] = temperatures
    weights = job.weights if job.weights is not None else file_weights
    if weights is not None and len(weights) != len(names):
        raise UserError(f"{len(weights)} weight(s) for {len(names)} input(s)", field="weights",
                        hint="one weight per input, in the order of the inputs")
    priority_names = job.priority or _plan_priority(plan, names)
    all_names, all_dvotes = list(names), dvotes
    if job.select:
        sel_method = "soft" if method == "soft" else "weighted"
        sel = caruana_select(dvotes, dgold, k, probs=dprobs, method=sel_method,
                             rounds=job.rounds, init=job.init)
        cv = cross_validate_selection(dvotes, dgold, k, probs=dprobs, method=sel_method,
                                      rounds=job.rounds, init=job.init, folds=job.folds,
                                      seed=job.seed)
        by_acc = _priority_by_accuracy(names, dvotes, dgold)
        write_members(job.select, names, sel, sel_method, priority=by_acc, cv=cv,
                      temperatures=temperatures, gold=job.gold, overwrite=job.overwrite)
        chosen = ", ".join(f"{names[j]} x{int(c)}" for j, c in enumerate(sel.counts) if c)
        echo(f"ensemble selection ({sel_method}, {job.rounds} rounds): {chosen}")
        if sel.pruned:
            echo(f"  pruned (removing them did not lower dev accuracy): "
                 f"{', '.join(names[j] for j in sel.pruned)}")
        echo(f"  dev accuracy in-sample {sel.score:.4f}; {cv['folds']}-fold cross-validated "
             f"{cv['selection']:.4f} (best single model picked the same way: "
             f"{cv['best_single']:.4f})")
        echo(f"  wrote {job.select}")
        report["selection"] = {"counts": {names[j]: int(c) for j, c in enumerate(sel.counts)},
                               "in_sample": sel.score, "cross_validation": cv}
        keep = [j for j, c in enumerate(sel.counts) if c]
        weights = [float(sel.counts[j]) for j in keep]
        names = [names[j] for j in keep]
        votes = votes[keep]
        probs = None if probs is None else probs[keep]
        dvotes = dvotes[keep]
        dprobs = None if dprobs is None else dprobs[keep]
        method = sel_method
        priority_names = [n for n in (job.priority or by_acc) if n in names]
    elif weights is None and dvotes is not None and method in ("hard", "weighted"):
        weights = [float((dvotes[j] == dgold).mean()) for j in range(len(names))]
        echo("weights = dev accuracy" + (" (used to break ties)" if method == "hard" else "")
             + ": " + ", ".join(f"{n} {w:.4f}" for n, w in zip(names, weights, strict=False)))
    if method == "weighted" and weights is None:
        raise UserError("weighted voting needs --weights or --gold", field="weights")
    priority = resolve_priority(names, priority_names)
    outcome = vote_choices(votes, k, method, weights=weights, probs=probs, priority=priority)
    counts = outcome.tie_counts()
    echo(f"{method} voting: {len(outcome.ties)} of {len(ids)} ids were ties"
         + (" (" + ", ".join(f"{v} by {r}" for r, v in sorted(counts.items())) + ")"
            if counts else ""))
    for line in describe_ties(outcome, ids, labels, names):
        echo(line)
    report["method"], report["weights"] = method, weights
    report["ties"] = [{"id": ids[t.index], "options": [labels[o] for o in t.options],
                       "rule": t.rule, "winner": None if t.winner is None else labels[t.winner],
                       "detail": t.detail if t.rule != "priority" else names[t.member]}
                      for t in outcome.ties]
    raise_if_unresolved(outcome, ids, labels)
    if dvotes is not None:
        if dev is results:
            dpred = outcome.pred
        else:
            d_out = vote_choices(dvotes, k, method, weights=weights, probs=dprobs,
                                 priority=priority)
            dpred = d_out.pred.copy()
            for t in d_out.ties:
                if t.winner is None:
                    dpred[t.index] = -1  # unresolved on dev: counted wrong
        diag = choice_diagnostics(all_names, all_dvotes, dgold, dpred)
        echo(format_choice_diagnostics(diag))
        report["dev"] = diag
    return {ids[i]: labels[int(p)] for i, p in enumerate(outcome.pred)}


def _vote_generate(job: VoteJob, task: Any, results: list[Results], names: list[str],
                   ids: list[str], dev: list[Results] | None, dev_ids: list[str],
                   gold_items: list | None, plan: dict | None, file_weights: list[float] | None,
                   report: dict[str, Any], echo: Callable[[str], None]) -> dict[str, str]:
    if job.method not in (None, "hard", "weighted") or job.select or job.calibrate:
        raise UserError(f"{task.name} is combined by MBR: --method soft, --select and "
                        "--calibrate apply to choice tasks", field="method")
    weights = job.weights if job.weights is not None else file_weights
    if weights is not None and len(weights) != len(names):
        raise UserError(f"{len(weights)} weight(s) for {len(names)} input(s)", field="weights")
    if len(names) < 3 and not job.priority:
        echo("note: with two candidates MBR is always a tie; --priority decides")
    priority = resolve_priority(names, job.priority or _plan_priority(plan, names))
    sim_name = "bertscore" if job.bertscore_model else "rouge1"
    sim = bertscore_similarity(job.bertscore_model) if job.bertscore_model else rouge1_similarity
    candidates = [[r.outputs[i] for r in results] for i in ids]
    outcome = mbr_choose(candidates, sim, weights=weights, priority=priority)
    echo(f"MBR by {sim_name}: {len(outcome.ties)} of {len(ids)} ids were ties")
    for line in describe_mbr_ties(outcome, ids, names):
        echo(line)
    bad = [t for t in outcome.ties if t.winner is None]
    if bad:
        raise UserError(f"{len(bad)} MBR tie(s) between different summaries, e.g. "
                        f"{ids[bad[0].index]}", field="priority",
                        hint="pass --priority NAME ... (every model, most trusted first) "
                             "or --weights")
    wins = Counter(j for w in outcome.winners for j in w)
    sole = Counter(w[0] for w in outcome.winners if len(w) == 1)
    width = max(len(n) for n in names)
    echo(f"{'model':<{width}}  ids won  (alone)  mean similarity to the others")
    for j, n in enumerate(names):
        echo(f"{n:<{width}}  {wins[j]:7d}  {sole[j]:7d}  {outcome.scores[:, j].mean():.4f}")
    shown = min(len(ids), 10)
    echo(f"winner per id (first {shown}; all in --report):")
    for i in range(shown):
        echo(f"  {ids[i]}: {', '.join(names[j] for j in outcome.winners[i])}")
    report["similarity"] = sim_name
    report["winners"] = {ids[i]: [names[j] for j in w] for i, w in enumerate(outcome.winners)}
    report["ties"] = [{"id": ids[t.index], "rule": t.rule,
                       "winner": None if t.winner is None else names[t.winner]}
                      for t in outcome.ties]
    chosen = [candidates[i][outcome.choice[i]] for i in range(len(ids))]
    if dev is not None:
        dcands = [[r.outputs[i] for r in dev] for i in dev_ids]
        if dev is results:
            dchosen = [chosen[ids.index(i)] for i in dev_ids]
        else:
            d_out = mbr_choose(dcands, sim, weights=weights, priority=priority)
            dchosen = [c[j] if j >= 0 else c[0] for c, j in zip(dcands, d_out.choice, strict=False)]
        refs = [it.summary for it in gold_items]
        diag = generate_diagnostics(names, dcands, refs, dchosen,
                                    bertscore_model=job.bertscore_model)
        echo(format_generate_diagnostics(diag))
        report["dev"] = diag
    return {ids[i]: chosen[i] for i in range(len(ids))}


__all__ = [
    "METHODS", "MbrOutcome", "Selection", "Tie", "VoteJob", "VoteOutcome", "apply_temperature",
    "bertscore_similarity", "caruana_select", "check_results", "choice_diagnostics",
    "cross_validate_selection", "describe_mbr_ties", "describe_ties", "expected_accuracy",
    "fit_temperature", "format_choice_diagnostics", "format_generate_diagnostics",
    "generate_diagnostics", "infer_task", "load_results", "mbr_choose", "member_names", "nll",
    "prob_tensor", "raise_if_unresolved", "read_members", "resolve_priority",
    "rouge1_similarity", "run_vote", "vote_choices", "vote_matrix", "write_members",
]
