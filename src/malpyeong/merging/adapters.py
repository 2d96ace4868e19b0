"""LoRA adapters on one base merged into one new adapter by peft's ``add_weighted_adapter``.

The method names mean what they mean for full models: ``linear`` is the weighted *mean* of the
adapters' weight deltas (``normalize`` true by default, as mergekit's linear) and
``task_arithmetic`` their weighted *sum*; both are exact, computed with peft's ``cat``
combination (the new adapter's rank is the sum of the ranks). peft's own ``linear`` mixes the A
and B factors separately, which adds cross terms ``B_i A_j`` -- not a weighted sum of the
deltas -- so it is not used. ``ties``, ``dare_linear``, ``dare_ties``, ``magnitude_prune`` (and
their ``_svd`` variants), ``svd`` and ``cat`` are passed to peft under their peft names with the
weights as given; the non-svd ones prune the A and B factors, the ``_svd`` ones the full delta
before refactorising it to ``svd_rank``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError, one_line
from malpyeong.merging.config import DENSITY_METHODS, MergeConfig, torch_dtype
from malpyeong.merging.output import copy_tokenizer, run_info, tokenizer_source, write_run
from malpyeong.models.runfolder import ADAPTER_CONFIG, WEIGHTS_DIR, model_key
from malpyeong.models.runfolder import adapter_base as trained_on

# YAML merge_method -> peft add_weighted_adapter combination_type, for LoRA adapters.
ADAPTER_METHODS = {
    "linear": "cat",
    "task_arithmetic": "cat",
    "cat": "cat",
    "svd": "svd",
    "ties": "ties",
    "ties_svd": "ties_svd",
    "dare_linear": "dare_linear",
    "dare_ties": "dare_ties",
    "dare_linear_svd": "dare_linear_svd",
    "dare_ties_svd": "dare_ties_svd",
    "magnitude_prune": "magnitude_prune",
    "magnitude_prune_svd": "magnitude_prune_svd",
}


def adapter_base(cfg: MergeConfig) -> str:
    """The base the adapters were trained on, which they must all share (and ``base_model``,
    when given, must be): adapters of different bases cannot be merged meaningfully, even when
    their shapes happen to agree."""
    declared = {m.spec: trained_on(m.path) for m in cfg.models}
    keys = {model_key(b) for b in declared.values()}
    if len(keys) > 1:
        raise UserError(
            "the adapters were trained on different bases: "
            + "; ".join(f"{spec} on {base}" for spec, base in declared.items()),
            file=cfg.source,
            field="models",
            hint="merge adapters of one base model",
        )
    base = next(iter(declared.values()))
    if cfg.base_model and model_key(cfg.base_model) != model_key(base):
        raise UserError(
            f"base_model is {cfg.base_model}, but the adapters were trained on {base}",
            file=cfg.source,
            field="base_model",
            hint="set base_model to the adapters' base, or leave it out",
        )
    return cfg.base_model or base


def _scalar(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(
            f"{what} must be a number for this merge (gradients and filters need full models and mergekit)",
            file=source,
            field=what,
        )
    return float(value)


def adapter_arguments(cfg: MergeConfig) -> dict[str, Any]:
    """peft ``add_weighted_adapter`` arguments for ``cfg`` (weights normalised for linear)."""
    if cfg.method not in ADAPTER_METHODS:
        raise UserError(
            f"merge_method '{cfg.method}' is not available for LoRA adapters",
            file=cfg.source,
            field="merge_method",
            hint=", ".join(ADAPTER_METHODS) + "; or fold each adapter into the base "
            "and merge full models (models: - model: BASE+ADAPTER)",
        )
    weights = [_scalar(cfg.param(m, "weight", 1.0), "weight", cfg.source) for m in cfg.models]
    if cfg.method == "linear" and cfg.normalize():
        total = sum(weights)
        if abs(total) < 1e-12:
            raise UserError("weights sum to 0 and normalize is on", file=cfg.source, field="weight")
        weights = [w / total for w in weights]
    args: dict[str, Any] = {"weights": weights, "combination_type": ADAPTER_METHODS[cfg.method]}
    if cfg.method in DENSITY_METHODS:
        densities = {_scalar(cfg.param(m, "density", 1.0), "density", cfg.source) for m in cfg.models}
        if len(densities) > 1:
            raise UserError("peft takes one density for all adapters", file=cfg.source, field="density")
        args["density"] = densities.pop()
        sign = cfg.parameters.get("majority_sign_method", "total")
        if sign not in ("total", "frequency"):
            raise UserError(
                "majority_sign_method is total or frequency", file=cfg.source, field="majority_sign_method"
            )
        args["majority_sign_method"] = sign
    if cfg.method.endswith("svd") and cfg.parameters.get("svd_rank") is not None:
        args["svd_rank"] = int(cfg.parameters["svd_rank"])
    return args


def load_adapters(cfg: MergeConfig, *, device: str = "cpu") -> Any:
    """The base with every adapter loaded (named ``m0``, ``m1``, ...)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = adapter_base(cfg)
    for m in cfg.models:
        conf = json.loads((Path(m.path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        if conf.get("peft_type", "LORA") != "LORA" or conf.get("use_dora"):
            raise UserError(
                "only plain LoRA adapters can be merged (not DoRA or other types)",
                file=m.path,
                field="peft_type",
            )
    dtype = torch_dtype(cfg.dtype, torch.float32)
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except OSError as err:
        raise UserError(
            f"cannot load the base model ({one_line(err)})", file=str(base), field="base_model"
        ) from None
    model.to(device)
    peft_model = PeftModel.from_pretrained(model, cfg.models[0].path, adapter_name="m0")
    for i, m in enumerate(cfg.models[1:], 1):
        peft_model.load_adapter(m.path, adapter_name=f"m{i}")
    return peft_model


def add_merged_adapter(peft_model: Any, cfg: MergeConfig, name: str) -> None:
    """Add adapter ``name`` = the merge of ``m0..`` described by ``cfg``."""
    from peft.tuners.lora import LoraLayer

    args = adapter_arguments(cfg)
    adapters = [f"m{i}" for i in range(len(cfg.models))]
    check_ranks(peft_model, cfg)
    try:
        peft_model.add_weighted_adapter(adapters, adapter_name=name, **args)
    except ValueError as err:
        raise UserError(f"peft cannot merge these adapters: {err}", file=cfg.source, field="models") from None
    # peft copies use_rslora into the new adapter although the merged factors already carry
    # each adapter's scaling (its r = lora_alpha makes the plain scaling exactly 1): without
    # this, an rsLoRA merge would come out sqrt(r) times too strong.
    conf = peft_model.peft_config[name]
    if getattr(conf, "use_rslora", False):
        conf.use_rslora = False
        for module in peft_model.modules():
            if isinstance(module, LoraLayer) and name in module.scaling:
                module.scaling[name] = 1.0


def check_ranks(peft_model: Any, cfg: MergeConfig) -> None:
    """peft's factor-wise methods need equal ranks; say so before any work is done."""
    combination = ADAPTER_METHODS.get(cfg.method)
    if combination in ("cat", "svd") or (combination or "").endswith("_svd"):
        return
    ranks = {peft_model.peft_config[f"m{i}"].r for i in range(len(cfg.models))}
    if len(ranks) > 1:
        raise UserError(
            f"{cfg.method} on LoRA factors needs adapters of one rank (have {sorted(ranks)})",
            file=cfg.source,
            field="merge_method",
            hint=f"use {cfg.method}_svd, linear or cat",
        )


def save_adapter_run(
    peft_model: Any, cfg: MergeConfig, name: str, stage: Path, *, fold: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write ``adapter/`` (+ with ``fold`` the merged full model at the root) and the run file
    into ``stage``."""
    peft_model.set_adapter(name)
    for other in list(peft_model.peft_config):
        if other != name:
            peft_model.delete_adapter(other)
    adapter_dir = stage / "adapter"
    peft_model.save_pretrained(str(adapter_dir), selected_adapters=[name])
    if name != "default":  # peft saves non-default adapters in a subfolder
        sub = adapter_dir / name
        for f in sub.iterdir():
            os.replace(f, adapter_dir / f.name)
        sub.rmdir()
    base = adapter_base(cfg)
    conf_path = adapter_dir / ADAPTER_CONFIG
    conf = json.loads(conf_path.read_text(encoding="utf-8"))
    conf["base_model_name_or_path"] = base
    conf_path.write_text(json.dumps(conf, indent=2), encoding="utf-8")
    tok_src = tokenizer_source(cfg, base)
    copy_tokenizer(tok_src, adapter_dir)
    merged_dir = None
    if fold:
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(str(stage), safe_serialization=True)
        copy_tokenizer(tok_src, stage)
        merged_dir = WEIGHTS_DIR
    info = run_info(cfg, base, "lora", "adapter", merged_dir, extra)
    write_run(stage, cfg, info)
    return info
