"""Staged training: a run that starts where an earlier run ended (``init_from``).

What the CCI 나 runner-up did: a QLoRA stage, then full fine-tuning from its result. The
earlier run's adapter is merged into a bf16 copy of its base (never into 4-bit weights), saved
in this run's folder as ``init_model/`` with the tokenizer, and this run loads it as its base:
full fine-tuning continues from it, or a new LoRA / QLoRA adapter is trained on top of it. An
earlier full-weight run is used as it is. The run file records the chain of runs
(``init_from``, ``stages``) and the original base (``base_model``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.models.backbones import Backbone, get_backbone, load_tokenizer
from malpyeong.models.runfolder import (
    INIT_DIR,
    MODEL_CONFIG,
    adapter_of,
    read_run,
    tokenizer_of,
    weights_of,
    write_run,
)
from malpyeong.training.models import merge_adapter
from malpyeong.training.outputs import main_process, wait_for_everyone
from malpyeong.training.recipe import ModelArguments


def root_base(run: dict) -> str:
    """The base model a chain of runs started from."""
    return run.get("base_model") or run["model"]


def start_from(
    init_from: str, model_args: ModelArguments, out: Path, *, main: bool = True
) -> tuple[ModelArguments, dict]:
    """The model arguments of a stage that starts from the run ``init_from``, and the chain
    entry to record. ``model_args.model`` must name the chain's base model (its backbone
    quirks apply); it is replaced by the weights to start from."""
    folder = Path(init_from)
    run = read_run(folder)
    base = root_base(run)
    if model_args.model not in (None, base):
        raise UserError(
            f"init_from run was trained on {base}, the recipe names {model_args.model}",
            field="init_from",
            hint=f"set model: {base} (or drop it)",
        )
    backbone = get_backbone(base)
    weights = weights_of(folder, run)
    if weights is None:
        weights = out / INIT_DIR
        if main and not (weights / MODEL_CONFIG).is_file():
            merge_base = run["model"]  # the earlier run's own base (itself a merge if chained)
            merge_adapter(
                merge_base,
                adapter_of(folder, run),
                weights,
                backbone=get_backbone(merge_base),
                dtype="bf16",
                tokenizer=_tokenizer(merge_base, folder, run),
            )
            _mark_chat_format(weights, backbone)
    stage = {
        "run": str(folder),
        "stage": run.get("stage"),
        "method": run.get("method"),
        "model": run["model"],
    }
    chain = {"init_from": str(folder), "base_model": base, "stages": [*run.get("stages", []), stage]}
    return dataclasses.replace(model_args, model=str(weights)), chain


def begin_stage(
    init_from: str | None, model_args: ModelArguments, out: Path
) -> tuple[ModelArguments, Backbone, dict | None]:
    """What a training run starts from: the model arguments (the earlier run's weights with
    ``init_from``), the backbone of the chain's base, and the chain to record (or None)."""
    if not init_from:
        return model_args, get_backbone(model_args.model), None
    model_args, chain = start_from(init_from, model_args, out, main=main_process())
    wait_for_everyone()  # the main process wrote init_model/
    return model_args, get_backbone(chain["base_model"]), chain


def end_stage(out: Path, info: dict, chain: dict | None, method: str) -> dict:
    """Record the chain in the run file (main process); see :func:`finish_stage`."""
    if chain is None or not main_process():
        return info
    return finish_stage(out, info, chain, method)


def _tokenizer(base: str, folder: Path, run: dict) -> Any:
    adapter = adapter_of(folder, run)
    return load_tokenizer(tokenizer_of(adapter, folder, base), get_backbone(base))


def _mark_chat_format(weights: Path, backbone: Backbone) -> None:
    """Record the base's chat format in the merged copy's config.json, so the copy renders
    prompts as the base does (its backbone entry is found by name, the copy has none)."""
    path = weights / MODEL_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config["malpyeong_chat_format"] = backbone.chat_format
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def finish_stage(out: Path, info: dict, chain: dict, method: str) -> dict:
    """Add the chain to the run file. Full weights (at the run folder's root) replace
    ``init_model/``, which is dropped, and the run's base is the chain's; an adapter's base
    stays ``init_model/``."""
    info = {**info, **chain}
    if method == "full":
        info["model"] = chain["base_model"]
        if (out / INIT_DIR).is_dir():
            shutil.rmtree(out / INIT_DIR)
    write_run(out, info)
    return info


__all__ = ["INIT_DIR", "begin_stage", "end_stage", "finish_stage", "root_base", "start_from"]
