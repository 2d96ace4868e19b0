"""How good a ranking is, from a file of questions and the passages each needs.

The relevance file is JSONL, one question per line: ``{"query": "...", "relevant": ["id", ...]}``
(``id`` optional, for naming the question). Passage ids are the index's (``run/retrieve.py
build`` lists them in ``passages.jsonl``); an id the index does not hold is an error, since a
relevance file for another chunking would otherwise score 0 without a word.

- recall@k: the share of a question's relevant passages among its top k, averaged over
  questions;
- MRR: the mean over questions of 1 / the rank of the first relevant passage (0 when none is in
  the ranking's first ``depth``, which is 100).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from malpyeong.errors import UserError
from malpyeong.io import read_jsonl, require_file
from malpyeong.retrieval.index import Index

MRR_DEPTH = 100


def read_relevance(path: str | os.PathLike) -> list[dict]:
    """The questions of a relevance file, each ``{"id", "query", "relevant": [ids]}``."""
    name = str(require_file(path, field="labels"))
    rows = read_jsonl(path)
    if not rows:
        raise UserError("no questions in the relevance file", file=name)
    out = []
    for n, row in enumerate(rows, 1):
        query, relevant = row.get("query"), row.get("relevant")
        if not isinstance(query, str) or not query.strip():
            raise UserError("missing or empty 'query'", file=name, item=f"line {n}", field="query")
        if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) for r in relevant):
            raise UserError(
                "'relevant' must be a non-empty list of passage ids",
                file=name,
                item=f"line {n}",
                field="relevant",
            )
        out.append({"id": str(row.get("id", f"line {n}")), "query": query, "relevant": relevant})
    return out


def evaluate_retrieval(
    index: Index,
    questions: Sequence[dict],
    ks: Sequence[int] = (1, 5, 10),
    *,
    mode: str | None = None,
    labels_file: str = "",
) -> dict[str, Any]:
    """``recall@k`` for every k, ``mrr``, and per question the rank of each relevant passage."""
    known = {p.id for p in index.passages}
    for q in questions:
        missing = [r for r in q["relevant"] if r not in known]
        if missing:
            raise UserError(
                f"passage id '{missing[0]}' is not in the index",
                file=labels_file or None,
                item=q["id"],
                field="relevant",
                hint="ids are <file stem>:<n> of this index's chunking (see its passages.jsonl)",
            )
    mode = index.check_mode(mode)
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise UserError("k must be at least 1", field="k")
    depth = max(MRR_DEPTH, ks[-1])
    rankings = index.search_many([q["query"] for q in questions], depth, mode=mode)
    recall = {k: 0.0 for k in ks}
    mrr = 0.0
    per_question = []
    for q, hits in zip(questions, rankings, strict=True):
        ranks = {h.passage.id: h.rank for h in hits}
        relevant = set(q["relevant"])
        found = sorted(ranks[r] for r in relevant if r in ranks)
        for k in ks:
            recall[k] += sum(r <= k for r in found) / len(relevant)
        mrr += 1.0 / found[0] if found else 0.0
        per_question.append({"id": q["id"], "ranks": {r: ranks.get(r) for r in q["relevant"]}})
    n = len(questions)
    return {
        "mode": mode,
        "questions": n,
        **{f"recall@{k}": recall[k] / n for k in ks},
        "mrr": mrr / n,
        "per_question": per_question,
    }


__all__ = ["MRR_DEPTH", "evaluate_retrieval", "read_relevance"]
