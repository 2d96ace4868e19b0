"""Inference: the one path that answers items with a model, and the jobs built on it.

    answer      answer_items: fit the prompt to the budget, score options or generate, clean,
                turn into the task's output (AnswerSettings: what decides the answers)
    engines     the answering engines: transformers (HFEngine) and vLLM (VLLMEngine)
    scoring     option scoring (letter logits, option log-likelihood, permutations)
    generation  batched generation, stop strings
    constrain   decoding under a task's JSON schema (llguidance)
    classifier  a classification-head run as an engine
    shard       splitting one run's work between processes
    loading     every model load for answering: what a folder or hub id is, and its engine
    predict     PredictionJob (what run/test.py, run/compare.py, run/memory.py and the ensemble
                entry run) and run_prediction (resumable results files)
    results     the results file and its sidecar: names and reader
    routing     per-category experts: which expert answers which item

Callers import from the modules (``from malpyeong.inference.predict import PredictionJob``);
the names below are the package's public parts, re-exported for a reader's overview.
"""

from __future__ import annotations

from malpyeong.inference.answer import Answer, AnswerRun, AnswerSettings, answer_items, default_batch_size
from malpyeong.inference.engines import ENGINES, Engine, GenerationSettings, HFEngine, VLLMEngine
from malpyeong.inference.loading import (
    Loaded,
    ModelSource,
    load_engine,
    load_for_inference,
    load_weights,
    resolve_source,
)
from malpyeong.inference.predict import PredictionJob, PredictSummary, RoutedSummary, run_prediction
from malpyeong.inference.results import Results, read_results, sidecar_path
from malpyeong.inference.routing import Route, plan_routes, select_items
from malpyeong.inference.scoring import SCORINGS
from malpyeong.inference.shard import ALONE, Shard, current_shard

__all__ = [
    "ALONE",
    "ENGINES",
    "SCORINGS",
    "Answer",
    "AnswerRun",
    "AnswerSettings",
    "Engine",
    "GenerationSettings",
    "HFEngine",
    "Loaded",
    "ModelSource",
    "PredictSummary",
    "PredictionJob",
    "Results",
    "Route",
    "RoutedSummary",
    "Shard",
    "VLLMEngine",
    "answer_items",
    "current_shard",
    "default_batch_size",
    "load_engine",
    "load_for_inference",
    "load_weights",
    "plan_routes",
    "read_results",
    "resolve_source",
    "run_prediction",
    "select_items",
    "sidecar_path",
]
