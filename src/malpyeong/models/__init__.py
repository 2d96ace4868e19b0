"""Models: what a model family is and what a folder on disk is.

    backbones   the family quirks registry (chat template, system role, attention, padding,
                LoRA targets, licence) and load_model / load_tokenizer, the loader itself
    budget      fit_prompt: a prompt cut to its token budget (shared by training and prediction)
    runfolder   the run-folder format: every file name a run folder holds, and their finders
    tiny        tiny random-weight models of the real architectures (tests, the demo)

The device a model runs on is the ground floor's (:mod:`malpyeong.device`); loading a model to
answer with goes through :mod:`malpyeong.inference.loading`.
"""

from __future__ import annotations

from malpyeong.models.backbones import REGISTRY, Backbone, get_backbone, load_model, load_tokenizer
from malpyeong.models.budget import FittedPrompt, fit_prompt
from malpyeong.models.runfolder import RUN_FILE, is_finished_run, read_run, run_info, write_run
from malpyeong.models.tiny import FAMILIES, build_tiny_model

__all__ = [
    "FAMILIES",
    "REGISTRY",
    "RUN_FILE",
    "Backbone",
    "FittedPrompt",
    "build_tiny_model",
    "fit_prompt",
    "get_backbone",
    "is_finished_run",
    "load_model",
    "load_tokenizer",
    "read_run",
    "run_info",
    "write_run",
]
