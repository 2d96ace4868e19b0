"""Combine the answers of models asked together (a served ensemble), with the code
``ensemble/vote.py`` combines their results files with.

A server that asks each member model an item holds, per member, what a results file would
hold: the outputs by id and, for a choice task, the option probabilities of its sidecar. Those
go in as :class:`~malpyeong.inference.results.Results` named after the members, and are
combined as :func:`malpyeong.ensemble.job.run_vote` combines files without ``--gold``: the
members in one canonical order (by name, so the order they were listed in changes nothing),
the same vote matrix and renormalised probabilities, the same method, weights and tie rule
(:func:`~malpyeong.ensemble.voting.vote_choices`), a tie no rule breaks refused the same way;
MBR by ROUGE-1 for a generate task, the task's own field merge for one that combines fields.
The label is therefore the one ``vote.py`` gives for the same members' results files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.ensemble.inputs import prob_tensor, resolve_priority, vote_matrix
from malpyeong.ensemble.mbr import mbr_choose, rouge1_similarity
from malpyeong.ensemble.voting import METHODS, Tie, raise_if_unresolved, vote_choices
from malpyeong.errors import UserError
from malpyeong.inference.results import Results
from malpyeong.tasks.base import Task


@dataclass
class Combined:
    """What the members' answers came to: one output per id, and how."""

    outputs: dict[str, Any]
    names: list[str]  # the members in canonical order (what ``members`` below is indexed by)
    method: str
    ties: dict[str, dict] = field(default_factory=dict)  # id -> how its tie was broken


def combine_members(
    task: Task,
    results: Sequence[Results],
    items: Sequence[Any],
    *,
    method: str | None = None,
    weights: Sequence[float] | None = None,
    priority: Sequence[str] | None = None,
) -> Combined:
    """Combine the members' ``results`` (one per member, with the ids of ``items``, in their
    order) as ``vote.py`` would.
    ``weights`` are in the order of ``results``; ``priority`` names members, most trusted
    first (the last tie-break)."""
    if method is not None and method not in METHODS:
        raise UserError(f"unknown method '{method}'", field="method", hint=", ".join(METHODS))
    names = [r.name for r in results]
    order = sorted(range(len(names)), key=lambda j: names[j])
    results, names = [results[j] for j in order], [names[j] for j in order]
    weights = [float(weights[j]) for j in order] if weights is not None else None
    ids = [it.id for it in items]
    if task.combiner == "vote":
        return _vote(task, results, names, ids, method or "hard", weights, priority)
    if method not in (None, "hard", "weighted"):
        raise UserError(f"{task.name} is combined by {task.combiner}: --method {method} is for choice tasks")
    if task.combiner == "fields":
        w = list(weights) if weights is not None else [1.0] * len(names)
        outputs = {it.id: task.combine_fields(it, [r.outputs[it.id] for r in results], w) for it in items}
        return Combined(outputs, names, "fields")
    candidates = [[r.outputs[i] for r in results] for i in ids]
    texts = [[task.output_text(o) for o in row] for row in candidates]
    outcome = mbr_choose(
        texts, rouge1_similarity, weights=weights, priority=resolve_priority(names, priority)
    )
    bad = [t for t in outcome.ties if t.winner is None]
    if bad:
        raise UserError(
            f"{len(bad)} MBR tie(s) between different outputs, e.g. {ids[bad[0].index]}",
            field="priority",
            hint="give the ensemble a priority (every member, most trusted first) or weights",
        )
    outputs = {i: candidates[n][outcome.choice[n]] for n, i in enumerate(ids)}
    return Combined(outputs, names, "mbr", {ids[t.index]: _tie(t, names) for t in outcome.ties})


def _vote(
    task: Task,
    results: list[Results],
    names: list[str],
    ids: list[str],
    method: str,
    weights: list[float] | None,
    priority: Sequence[str] | None,
) -> Combined:
    k, labels = task.n_choices, task.output_labels
    probs = prob_tensor(results, ids, k)
    if method == "soft" and probs is None:
        raise UserError("soft voting needs every member's probabilities", field="method")
    if method == "weighted" and weights is None:
        raise UserError("weighted voting needs weights", field="weights")
    votes = vote_matrix(results, ids, task)
    outcome = vote_choices(
        votes, k, method, weights=weights, probs=probs, priority=resolve_priority(names, priority)
    )
    raise_if_unresolved(outcome, ids, labels)
    outputs = {i: labels[int(p)] for i, p in zip(ids, outcome.pred, strict=True)}
    ties = {ids[t.index]: _tie(t, names, labels) for t in outcome.ties}
    return Combined(outputs, names, method, ties)


def _tie(t: Tie, names: Sequence[str], labels: Sequence[str] | None = None) -> dict:
    def show(o: int) -> Any:
        return labels[o] if labels is not None else names[o]

    return {
        "between": [show(o) for o in t.options],
        "rule": t.rule,
        "winner": None if t.winner is None else show(t.winner),
        "detail": names[t.member] if t.rule == "priority" and t.member is not None else t.detail,
    }


def member_results(
    name: str, ids: Sequence[str], outputs: Sequence[Any], sidecars: Sequence[dict]
) -> Results:
    """A member's answers as the results file ``run/test.py`` would have written for them."""
    probs = {i: [float(p) for p in s["probs"]] for i, s in zip(ids, sidecars, strict=True) if "probs" in s}
    return Results(
        path=Path(f"{name}.json"),
        ids=list(ids),
        outputs=dict(zip(ids, outputs, strict=True)),
        probs=probs if len(probs) == len(ids) else None,
    )


__all__ = ["Combined", "combine_members", "member_results"]
