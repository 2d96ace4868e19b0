"""Metrics: the official NIKL scorers (:mod:`.official`: CCI accuracy and report, DCS ROUGE-1
over Mecab morphemes, BERTScore, BLEURT-20), and one module per task that needs more.

A task's ``evaluate`` calls what it needs from here; nothing here knows a task by name beyond
the scorer it implements.
"""

from __future__ import annotations

from malpyeong.metrics.official import (
    BERTSCORE_MODEL,
    DCS_METRICS,
    BertScorer,
    BleurtScorer,
    MetricResult,
    accuracy,
    bertscore,
    bleurt,
    cci_report,
    dcs_scores,
    load_metric_model,
    rouge1,
    rouge1_items,
    rouge1_pair,
    rouge_tokens,
)

__all__ = [
    "BERTSCORE_MODEL",
    "DCS_METRICS",
    "BertScorer",
    "load_metric_model",
    "BleurtScorer",
    "MetricResult",
    "accuracy",
    "bertscore",
    "bleurt",
    "cci_report",
    "dcs_scores",
    "rouge1",
    "rouge1_items",
    "rouge1_pair",
    "rouge_tokens",
]
