"""Metrics of character chat: how close a reply is to the script's, and how varied replies are.

- ROUGE-L: F1 of the longest common subsequence of tokens, reply against the gold reply,
  averaged over items. Tokens are the official DCS scorer's (:func:`.official.rouge_tokens`:
  lowercased, characters outside ``[A-Za-z0-9가-힣]`` as spaces, Mecab morphemes; an English
  word stays one token), so Korean and English replies are both scored sensibly.
- BERTScore F1 against the gold reply, with a local encoder (:func:`.official.bertscore`).
- Perplexity of the gold replies under the model: ``exp(-sum log p / tokens)`` over all gold
  reply tokens, from the log-likelihoods prediction stores per item (the answering path scores
  each gold reply as the training completion, end-of-turn included).
- distinct-1 / distinct-2: distinct n-grams over all n-grams of all generated replies (the
  usual measure of a chatbot's blandness), on the same tokens.
- Average reply length in whitespace words.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from malpyeong.metrics.official import BERTSCORE_LAYER, BERTSCORE_MODEL, bertscore, cached_file, rouge_tokens

CHAT_METRICS = ("rougeL", "bertscore", "perplexity", "distinct1", "distinct2", "avg_words")
SKIPPABLE = ("bertscore", "perplexity")


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (two rows of the usual table)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_pair(ref: str, pred: str) -> float:
    """ROUGE-L F1 of one reply against its gold reply (0 when either has no token)."""
    r, p = rouge_tokens(ref), rouge_tokens(pred)
    if not r or not p:
        return 0.0
    common = lcs_length(r, p)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def distinct_n(preds: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over every reply (n-grams never cross replies)."""
    grams = [tuple(toks[i : i + n]) for toks in map(rouge_tokens, preds) for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def perplexity(logprobs: Sequence[float], tokens: Sequence[int]) -> float:
    """``exp`` of the mean negative log-likelihood per token over all items."""
    total = sum(tokens)
    if total <= 0:
        raise ValueError("no tokens to score")
    return math.exp(-sum(logprobs) / total)


def chat_scores(
    refs: Sequence[str],
    preds: Sequence[str],
    *,
    ref_logprobs: Sequence[tuple[float, int] | None] | None = None,
    bertscore_model: str | None = None,
    bertscore_layer: int | None = None,
    skip: Collection[str] = (),
    device: str | None = None,
) -> dict[str, Any]:
    """Every chat metric (None where it could not be computed, with a notice saying why)."""
    if len(refs) != len(preds) or not refs:
        raise ValueError(f"{len(refs)} gold replies but {len(preds)} predictions")
    rouge = [rouge_l_pair(r, p) for r, p in zip(refs, preds, strict=True)]
    out: dict[str, Any] = {
        "rougeL": sum(rouge) / len(rouge),
        "bertscore": None,
        "perplexity": None,
        "distinct1": distinct_n(preds, 1),
        "distinct2": distinct_n(preds, 2),
        "avg_words": sum(len(p.split()) for p in preds) / len(preds),
        "n": len(refs),
        "notices": [],
        "per_item": {"rougeL": rouge},
    }
    if "perplexity" in skip:
        out["notices"].append("perplexity not computed: skipped on request")
    else:
        scored = [x for x in (ref_logprobs or []) if x is not None]
        if not scored:
            out["notices"].append(
                "perplexity not computed: the results hold no gold-reply "
                "log-likelihoods (run run/test.py on a file with gold replies)"
            )
        else:
            out["perplexity"] = perplexity([x[0] for x in scored], [x[1] for x in scored])
            out["perplexity_items"] = len(scored)
            if len(scored) < len(refs):
                out["notices"].append(
                    f"perplexity over {len(scored)} of {len(refs)} items "
                    "(the others have no gold-reply log-likelihood)"
                )
    if "bertscore" in skip:
        out["notices"].append("bertscore not computed: skipped on request")
    else:
        model = bertscore_model or BERTSCORE_MODEL
        layer = bertscore_layer or default_layer(model)
        result = bertscore(
            refs, preds, model, layer=layer, device=device, required=bertscore_model is not None
        )
        out["bertscore"] = result.value
        if result.notice:
            out["notices"].append(result.notice)
        else:
            out["per_item"]["bertscore"] = result.per_item
            out["bertscore_model"] = {"model": str(model), "layer": layer}
    return out


def default_layer(model: str) -> int:
    """mBERT's layer 9, or the last layer of a smaller encoder (read from a local config only:
    no download is tried here; bertscore() reports a model it cannot load)."""
    local = Path(model) / "config.json"
    found = str(local) if local.is_file() else cached_file(str(model))
    try:
        layers = (
            int(json.loads(Path(found).read_text(encoding="utf-8"))["num_hidden_layers"]) if found else None
        )
    except (OSError, ValueError, KeyError, TypeError):
        layers = None
    return BERTSCORE_LAYER if layers is None else min(BERTSCORE_LAYER, layers)


__all__ = [
    "CHAT_METRICS",
    "SKIPPABLE",
    "chat_scores",
    "distinct_n",
    "lcs_length",
    "perplexity",
    "rouge_l_pair",
]
