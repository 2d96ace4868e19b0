"""Metrics of a memory state (the JSON a memory-state generator hands a dialogue system).

Every score compares a delivered state with its gold state, item by item, and is averaged over
the items (rates) or summed over them first (fact precision and recall, micro-averaged):

* raw generations (the results sidecar's ``text``): the share that is a JSON object as written
  (``json_valid_raw``) and after the documented repair (:mod:`malpyeong.metrics.jsonrepair`,
  ``json_valid_repaired``), the share that also passes the schema (``schema_valid_*``), and how
  many texts nothing could be read from (``unrepairable``);
* ``turn_count``: accuracy of the count the model wrote (``turn_count_acc_raw``) and of the
  delivered one (``turn_count_acc_delivered``, exact by construction), against the count of the
  input conversation;
* ``topic``: exact match after normalisation (lowercased, punctuation dropped, spaces
  collapsed) and ROUGE-L F;
* several references (``references``: DialogSum's test split has three summaries and three
  topics): ROUGE and BERTScore are averaged over them, as ROUGE-1.5.5 does by default (its
  ``-f A``; the best reference alone, ``-f B``, is kinder and not used), and the topic's exact
  match counts when it equals any of them (the SQuAD convention for several gold answers);
  with one reference every score is the single-reference one;
* ``memory_summary``: ROUGE-1 F, over Mecab morphemes for Korean text (the official scorer's
  tokens) and lowercased words for other text;
* ``key_facts`` and ``unresolved_refs``: precision, recall and F1 of a one-to-one matching of
  predicted to gold strings. A pair can match when its ROUGE-1 F reaches :data:`FACT_THRESHOLD`
  (0.5: at least half of the words in common, so a paraphrase with the same names and numbers
  matches and a different fact on the same subject does not); among those pairs the matching
  with the most pairs is taken (ties: the higher total similarity), so one gold fact is never
  credited twice. With a local BERTScore model the same matching is also done on BERTScore F1
  (:data:`BERTSCORE_FACT_THRESHOLD`), and the summaries get their BERTScore.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from malpyeong.metrics.jsonrepair import read_json_object
from malpyeong.metrics.official import BertScorer, load_metric_model, rouge_tokens

FACT_THRESHOLD = 0.5
BERTSCORE_FACT_THRESHOLD = 0.85
_HANGUL = re.compile("[가-힣]")
_WORD = re.compile(r"\w+")

Similarity = Callable[[str, str], float]


def words(text: str) -> tuple[str, ...]:
    """Mecab morphemes (as the official ROUGE) for text with Hangul, else lowercased words."""
    if _HANGUL.search(text):
        return rouge_tokens(text)
    return tuple(_WORD.findall(text.lower()))


def _f(overlap: float, n_pred: int, n_ref: int) -> float:
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge1_f(ref: str, pred: str) -> float:
    """ROUGE-1 F1 (clipped unigram overlap) of two texts, tokenised by :func:`words`."""
    a, b = words(ref), words(pred)
    return _f(sum((Counter(a) & Counter(b)).values()), len(b), len(a))


def rouge_l_f(ref: str, pred: str) -> float:
    """ROUGE-L F1: the longest common subsequence of the two token sequences."""
    a, b = words(ref), words(pred)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return _f(prev[-1], len(b), len(a))


def mean_over(refs: Sequence[str], pred: str, score: Similarity) -> float:
    """The mean of ``score(ref, pred)`` over several references (the score itself for one)."""
    return float(np.mean([score(ref, pred) for ref in refs]))


def normalise_topic(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def match_count(
    gold: Sequence[str],
    pred: Sequence[str],
    threshold: float = FACT_THRESHOLD,
    similarity: Similarity = rouge1_f,
) -> int:
    """The size of the largest one-to-one matching of ``pred`` to ``gold`` whose pairs all have
    a similarity of at least ``threshold`` (ties between matchings of that size: the higher
    total similarity)."""
    if not gold or not pred:
        return 0
    from scipy.optimize import linear_sum_assignment

    sim = np.array([[similarity(g, p) for p in pred] for g in gold], dtype=float)
    eligible = sim >= threshold
    # Every eligible pair is worth more than all similarities together, so the assignment
    # maximises the number of pairs first and the similarity second.
    big = float(min(len(gold), len(pred)) + 1)
    rows, cols = linear_sum_assignment(np.where(eligible, big + sim, 0.0), maximize=True)
    return int(eligible[rows, cols].sum())


@dataclass
class SetScore:
    """Micro-averaged precision / recall / F1 of string sets (facts, references)."""

    matched: int = 0
    predicted: int = 0
    gold: int = 0

    def add(self, matched: int, predicted: int, gold: int) -> None:
        self.matched += matched
        self.predicted += predicted
        self.gold += gold

    @property
    def precision(self) -> float:  # nothing predicted: right only when nothing was to be found
        return self.matched / self.predicted if self.predicted else float(self.gold == 0)

    @property
    def recall(self) -> float:
        return self.matched / self.gold if self.gold else float(self.predicted == 0)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def set_scores(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    threshold: float = FACT_THRESHOLD,
    similarity: Similarity = rouge1_f,
) -> SetScore:
    score = SetScore()
    for g, p in zip(gold, pred, strict=True):
        score.add(match_count(g, p, threshold, similarity), len(p), len(g))
    return score


def raw_scores(texts: Sequence[str], exact_turns: Sequence[int], check: Callable[[Any], str | None]) -> dict:
    """Rates of the raw generations, as written and after repair; ``check`` is the schema
    check (None when an object is valid)."""
    n = len(texts)
    counts: Counter[str] = Counter()
    repairs: Counter[str] = Counter()
    for text, turns in zip(texts, exact_turns, strict=True):
        read = read_json_object(text)
        repairs.update(read.repairs if read.value is not None else ())
        if read.value is None:
            counts["unrepairable"] += 1
            continue
        valid = check(read.value) is None
        counts["json_valid_repaired"] += 1
        counts["schema_valid_repaired"] += valid
        counts["json_valid_raw"] += read.raw_valid
        counts["schema_valid_raw"] += read.raw_valid and valid
        state = read.value.get("memory_state")
        written = state.get("turn_count") if isinstance(state, dict) else None
        counts["turn_count_raw_right"] += type(written) is int and written == turns
    out: dict[str, Any] = {
        k: counts[k] / n
        for k in ("json_valid_raw", "json_valid_repaired", "schema_valid_raw", "schema_valid_repaired")
    }
    out["turn_count_acc_raw"] = counts["turn_count_raw_right"] / n
    out["unrepairable"] = counts["unrepairable"]
    out["repairs"] = dict(repairs)
    return out


def _pairwise_bertscore(scorer: BertScorer) -> Similarity:
    cache: dict[tuple[str, str], float] = {}

    def sim(ref: str, pred: str) -> float:
        if (ref, pred) not in cache:
            cache[(ref, pred)] = scorer.score([ref], [pred])[0]["f"]
        return cache[(ref, pred)]

    return sim


def memory_scores(
    gold: Sequence[dict],
    exact_turns: Sequence[int],
    pred: Sequence[dict],
    texts: Sequence[str] | None,
    check: Callable[[Any], str | None],
    *,
    threshold: float = FACT_THRESHOLD,
    bertscore_model: str | None = None,
    device: str | None = None,
    references: Sequence[dict] | None = None,
) -> dict:
    """The full report (see the module docstring); ``texts`` None: no raw-generation rates;
    ``references``: per item, further gold ``memory_summary`` / ``topic`` strings."""
    n = len(gold)
    if n == 0 or len(pred) != n or len(exact_turns) != n:
        raise ValueError(f"{n} gold states, {len(pred)} predictions, {len(exact_turns)} counts")
    gs = [g["memory_state"] for g in gold]
    ps = [p["memory_state"] for p in pred]
    fact_items = [
        set_scores([g["key_facts"]], [p["key_facts"]], threshold) for g, p in zip(gs, ps, strict=True)
    ]
    ref_items = [
        set_scores([g["unresolved_refs"]], [p["unresolved_refs"]], threshold)
        for g, p in zip(gs, ps, strict=True)
    ]
    facts, refs = SetScore(), SetScore()
    for f, r in zip(fact_items, ref_items, strict=True):
        facts.add(f.matched, f.predicted, f.gold)
        refs.add(r.matched, r.predicted, r.gold)
    # per item, for paired comparisons (run/compare.py); the facts' P/R/F1 above stay micro
    extra = list(references) if references is not None else [{}] * n
    summaries = [
        [g["memory_summary"], *r.get("memory_summary", [])] for g, r in zip(gold, extra, strict=True)
    ]
    topics = [[g["topic"], *r.get("topic", [])] for g, r in zip(gs, extra, strict=True)]
    per_item = {
        "summary_rouge1": [
            mean_over(refs, p["memory_summary"], rouge1_f) for refs, p in zip(summaries, pred, strict=True)
        ],
        "topic_exact": [
            float(any(normalise_topic(t) == normalise_topic(p["topic"]) for t in refs))
            for refs, p in zip(topics, ps, strict=True)
        ],
        "topic_rougeL": [mean_over(refs, p["topic"], rouge_l_f) for refs, p in zip(topics, ps, strict=True)],
        "turn_count_acc_delivered": [
            float(p["turn_count"] == t) for p, t in zip(ps, exact_turns, strict=True)
        ],
        "key_facts_f1": [f.f1 for f in fact_items],
        "unresolved_refs_f1": [r.f1 for r in ref_items],
    }
    report: dict[str, Any] = {
        "n": n,
        "key_facts_precision": facts.precision,
        "key_facts_recall": facts.recall,
        "key_facts_f1": facts.f1,
        "unresolved_refs_precision": refs.precision,
        "unresolved_refs_recall": refs.recall,
        "unresolved_refs_f1": refs.f1,
        **{
            name: float(np.mean(per_item[name]))
            for name in ("summary_rouge1", "topic_exact", "topic_rougeL", "turn_count_acc_delivered")
        },
        "gold_turn_count_off": sum(g["turn_count"] != t for g, t in zip(gs, exact_turns, strict=True)),
        "fact_threshold": threshold,
        "multi_reference": sum(len(s) > 1 or len(t) > 1 for s, t in zip(summaries, topics, strict=True)),
        "facts": {"gold": facts.gold, "predicted": facts.predicted, "matched": facts.matched},
    }
    raw = raw_scores(texts, exact_turns, check) if texts is not None else {}
    for name in (
        "json_valid_raw",
        "json_valid_repaired",
        "schema_valid_raw",
        "schema_valid_repaired",
        "turn_count_acc_raw",
        "unrepairable",
    ):
        report[name] = raw.get(name)
    report["repairs"] = raw.get("repairs")
    report["summary_bertscore"] = report["key_facts_f1_bertscore"] = None
    if bertscore_model:
        scorer, _ = load_metric_model(
            lambda p: BertScorer(p, device=device),
            bertscore_model,
            default=None,
            option="bertscore_model",
            what="bertscore",
        )
        pairs = [(ref, p["memory_summary"]) for refs, p in zip(summaries, pred, strict=True) for ref in refs]
        flat = iter(s["f"] for s in scorer.score([r for r, _ in pairs], [q for _, q in pairs]))
        f1 = [float(np.mean([next(flat) for _ in refs])) for refs in summaries]
        report["summary_bertscore"] = float(np.mean(f1))
        report["key_facts_f1_bertscore"] = set_scores(
            [g["key_facts"] for g in gs],
            [p["key_facts"] for p in ps],
            BERTSCORE_FACT_THRESHOLD,
            _pairwise_bertscore(scorer),
        ).f1
        per_item["summary_bertscore"] = f1
    report["per_item"] = per_item
    return report


__all__ = [
    "BERTSCORE_FACT_THRESHOLD",
    "FACT_THRESHOLD",
    "SetScore",
    "match_count",
    "memory_scores",
    "normalise_topic",
    "raw_scores",
    "rouge1_f",
    "rouge_l_f",
    "set_scores",
    "words",
]
