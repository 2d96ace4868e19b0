"""Several models' memory states for one dialogue combined field by field (the memory task's
``combine_fields``, used by ``ensemble/vote.py``). Models count with their weights, and the
order in which they are given breaks ties (the first listed wins):

- ``topic``: the topic with the largest summed weight, topics compared after normalisation;
- ``key_facts`` and ``unresolved_refs``: the strings of all models are grouped (a string joins
  the first group it matches, by ROUGE-1 F >= the fact threshold of the metrics, one string
  per model in a group); a group is kept when the models stating it hold more than half of the
  total weight, written as its first member says it, in the order the groups were first seen;
- ``memory_summary``: the summary with the highest weighted mean ROUGE-1 F to the others';
- ``turn_count``: the exact count of the input, whatever the models wrote.
"""

from __future__ import annotations

from collections.abc import Sequence

from malpyeong.metrics.memory import FACT_THRESHOLD, normalise_topic, rouge1_f


def _vote_topic(topics: Sequence[str], weights: Sequence[float]) -> str:
    totals: dict[str, float] = {}
    first: dict[str, int] = {}
    for j, topic in enumerate(topics):
        key = normalise_topic(topic) or topic
        totals[key] = totals.get(key, 0.0) + weights[j]
        first.setdefault(key, j)
    best = max(totals, key=lambda k: (totals[k], -first[k]))
    return topics[first[best]]


def _vote_strings(lists: Sequence[Sequence[str]], weights: Sequence[float], threshold: float) -> list[str]:
    groups: list[tuple[str, set[int]]] = []  # (wording, models stating it)
    for j, strings in enumerate(lists):
        for s in strings:
            scored = [
                (rouge1_f(wording, s), g) for g, (wording, models) in enumerate(groups) if j not in models
            ]
            sim, g = max(scored, default=(0.0, -1))
            if g >= 0 and sim >= threshold:
                groups[g][1].add(j)
            else:
                groups.append((s, {j}))
    half = sum(weights) / 2
    return [wording for wording, models in groups if sum(weights[j] for j in models) > half]


def _mbr_summary(summaries: Sequence[str], weights: Sequence[float]) -> str:
    if len(summaries) == 1:
        return summaries[0]

    def support(j: int) -> float:
        others = [k for k in range(len(summaries)) if k != j]
        total = sum(weights[k] for k in others)
        return (
            sum(weights[k] * rouge1_f(summaries[k], summaries[j]) for k in others) / total if total else 0.0
        )

    return summaries[max(range(len(summaries)), key=lambda j: (support(j), -j))]


def combine_states(
    outputs: Sequence[dict], weights: Sequence[float], turn_count: int, threshold: float = FACT_THRESHOLD
) -> dict:
    """One memory object from several (valid) ones; see the module docstring."""
    if not outputs or len(outputs) != len(weights):
        raise ValueError(f"{len(outputs)} outputs and {len(weights)} weights")
    states = [o["memory_state"] for o in outputs]
    return {
        "memory_state": {
            "key_facts": _vote_strings([s["key_facts"] for s in states], weights, threshold),
            "unresolved_refs": _vote_strings([s["unresolved_refs"] for s in states], weights, threshold),
            "topic": _vote_topic([s["topic"] for s in states], weights),
            "turn_count": turn_count,
        },
        "memory_summary": _mbr_summary([o["memory_summary"] for o in outputs], weights),
    }


__all__ = ["combine_states"]
