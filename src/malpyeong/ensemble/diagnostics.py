"""Dev diagnostics of an ensemble and its members, and their printed tables.

Choice tasks: per-model accuracy, pairwise agreement, error correlation, ensemble and oracle
accuracy. Generate tasks: each model's, the MBR ensemble's and the oracle's ROUGE-1 (and
BERTScore) against gold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from malpyeong import metrics


def choice_diagnostics(
    names: Sequence[str], votes: np.ndarray, gold: np.ndarray, ensemble_pred: np.ndarray | None = None
) -> dict[str, Any]:
    """Per-model accuracy, pairwise agreement, error correlation, ensemble and oracle accuracy.

    Error correlation is the Pearson (phi) correlation of the models' 0/1 error indicators;
    None where a model is never (or always) wrong.
    """
    correct = votes == gold[None, :]
    m = len(names)
    agree = np.array([[float((votes[a] == votes[b]).mean()) for b in range(m)] for a in range(m)])
    err = (~correct).astype(np.float64)
    centered = err - err.mean(axis=1, keepdims=True)
    norms = np.sqrt((centered**2).sum(axis=1))
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
        note = f", {d['ensemble_note']}" if d.get("ensemble_note") else ""
        lines.append(f"ensemble accuracy {d['ensemble']:.4f}{note} (best single {best:.4f})")
    lines.append(f"oracle (any model right) {d['oracle']:.4f}; all models wrong {d['all_wrong']:.4f}")
    return "\n".join(lines)


def generate_diagnostics(
    names: Sequence[str],
    candidates: Sequence[Sequence[str]],
    refs: Sequence[str],
    chosen: Sequence[str],
    *,
    bertscore_model: str | None = None,
) -> dict[str, Any]:
    """Each model's, the MBR ensemble's and the oracle's ROUGE-1 (and BERTScore) against gold."""
    m = len(names)
    per_model = [[c[j] for c in candidates] for j in range(m)]
    rouge = {n: metrics.rouge1(refs, per_model[j]) for j, n in enumerate(names)}
    items = [metrics.rouge1_items(refs, per_model[j]) for j in range(m)]
    best_j = [max(range(m), key=lambda j, i=i: (items[j][i], -j)) for i in range(len(refs))]
    oracle_texts = [candidates[i][j] for i, j in enumerate(best_j)]
    out: dict[str, Any] = {
        "models": list(names),
        "n": len(refs),
        "rouge1": rouge,
        "ensemble": {"rouge1": metrics.rouge1(refs, chosen)},
        "oracle": {"rouge1": metrics.rouge1(refs, oracle_texts)},
    }
    if bertscore_model:
        scorer, _ = metrics.load_metric_model(
            metrics.BertScorer, bertscore_model, default=None, option="bertscore_model", what="bertscore"
        )

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
    lines.append(
        f"{'oracle':<{width}}  {d['oracle']['rouge1'] * 100:6.2f}  (best candidate "
        "per id by ROUGE-1 against gold)"
    )
    return "\n".join(lines)
