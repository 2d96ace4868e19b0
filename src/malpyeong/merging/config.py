"""The merge YAML (mergekit's schema): validate it, resolve its models, derive grid points."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.io import read_yaml, require_file
from malpyeong.models.runfolder import (
    ADAPTER_CONFIG,
    MODEL_CONFIG,
    RUN_FILE,
    adapter_of,
    has_run_file,
    is_adapter,
    is_model,
    read_run,
    weights_of,
)

DENSITY_METHODS = {
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
    "della",
    "della_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
}
DEFAULT_NORMALIZE = {"linear": True, "ties": True}  # mergekit's defaults; others False
OUR_KEYS = ("search",)  # top-level keys that are ours, not mergekit's


@dataclass
class ModelRef:
    """One ``models:`` entry, resolved: what it is and where its weights are."""

    spec: str  # as written in the YAML
    path: str  # adapter folder, model folder, hub id, or mergekit's "base+lora" syntax
    kind: str  # "adapter" | "full" | "base+lora"
    params: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] | None = None  # the run folder's malpyeong_run.json, if any


@dataclass
class MergeConfig:
    raw: dict[str, Any]
    method: str
    models: list[ModelRef]
    base_model: str | None
    parameters: dict[str, Any]
    dtype: str | None
    out_dtype: str | None
    tokenizer_source: str | None
    search: dict[str, Any] | None
    source: str = ""

    @property
    def kind(self) -> str:
        return "adapter" if all(m.kind == "adapter" for m in self.models) else "full"

    def param(self, model: ModelRef, name: str, default: Any = None) -> Any:
        """A model's parameter, else the top-level one, else ``default``."""
        if name in model.params:
            return model.params[name]
        return self.parameters.get(name, default)

    def normalize(self) -> bool:
        return bool(self.parameters.get("normalize", DEFAULT_NORMALIZE.get(self.method, False)))


def _resolve_path(value: str, folder: Path) -> str:
    """A local path as given (relative to the working folder, else to the YAML's), or a hub id."""
    p = Path(value).expanduser()
    if p.exists():
        return str(p.resolve())
    q = folder / value
    if q.exists():
        return str(q.resolve())
    return value


def _resolve_model(spec: str, folder: Path) -> tuple[str, str, dict | None]:
    """(path, kind, run info) of a models: entry; run folders resolve to their weights."""
    if "+" in spec and not Path(spec).exists():
        base, lora = spec.split("+", 1)
        return f"{_resolve_path(base, folder)}+{_resolve_path(lora, folder)}", "base+lora", None
    path = Path(_resolve_path(spec, folder))
    run = None
    if has_run_file(path):  # a run folder: its adapter, else its full model
        run = read_run(path)
        found = adapter_of(path, run) or weights_of(path, run)
        if found is None:
            raise UserError(
                "run folder has neither an adapter nor a model", file=str(path), hint=f"check {RUN_FILE}"
            )
        path = found
    if is_adapter(path):
        return str(path), "adapter", run
    if path.is_dir() and not is_model(path):
        raise UserError(
            f"not a model folder (no {MODEL_CONFIG} or {ADAPTER_CONFIG})", file=str(path), field="models"
        )
    return str(path), "full", run


def _looks_local(spec: str) -> bool:
    """A reference that can only be a local path (a hub id is ``name`` or ``org/name``)."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def _check_finite(value: Any, source: str, field: str) -> None:
    """A NaN or infinite weight or density would silently write a NaN model."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"must be a finite number, got {value}", file=source, field=field)
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, source, f"{field}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, source, f"{field}[{i}]")


def require_models(models: Sequence[ModelRef], source: str) -> None:
    """Every model that can only be a local path (``runs/x``, ``./m``) must exist: a missing one
    is reported as missing, not as a hub id that fails later in another way."""
    for i, m in enumerate(models):
        paths = m.path.split("+") if m.kind == "base+lora" else [m.path]
        specs = m.spec.split("+") if m.kind == "base+lora" else [m.spec]
        for spec, path in zip(specs, paths, strict=True):
            if not Path(path).exists() and _looks_local(spec):
                raise UserError(
                    "model not found (no such folder)",
                    file=source,
                    field=f"models[{i}]",
                    hint=f"{spec}: check the path (relative to the working folder or to the YAML's folder)",
                )


def parse_config(raw: Any, source: str = "<config>", folder: Path | None = None) -> MergeConfig:
    """Validate the part of mergekit's schema malpyeong interprets; keep the rest for mergekit."""
    folder = folder or Path.cwd()
    if not isinstance(raw, dict):
        raise UserError("a merge config is a YAML mapping", file=source)
    method = raw.get("merge_method")
    if not isinstance(method, str):
        raise UserError(
            "missing merge_method",
            file=source,
            field="merge_method",
            hint="e.g. linear, task_arithmetic, ties, dare_ties, slerp",
        )
    if raw.get("slices") or raw.get("modules"):
        models_raw: list = []
    else:
        models_raw = raw.get("models")
        if not isinstance(models_raw, list) or not models_raw:
            raise UserError("models: must be a non-empty list", file=source, field="models")
    models = []
    for i, entry in enumerate(models_raw):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise UserError("each entry needs model: PATH", file=source, field=f"models[{i}]")
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise UserError("parameters must be a mapping", file=source, field=f"models[{i}].parameters")
        _check_finite(params, source, f"models[{i}].parameters")
        path, kind, run = _resolve_model(entry["model"], folder)
        models.append(ModelRef(entry["model"], path, kind, dict(params), run))
    base = raw.get("base_model")
    if base is not None and not isinstance(base, str):
        raise UserError("base_model must be a path or hub id", file=source, field="base_model")
    if base is not None:
        path, kind, _ = _resolve_model(base, folder)
        if kind == "adapter":
            raise UserError(
                "base_model is an adapter; give the model it was trained on", file=source, field="base_model"
            )
        base = path
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise UserError("parameters must be a mapping", file=source, field="parameters")
    _check_finite(parameters, source, "parameters")
    _check_finite(raw.get("search"), source, "search")
    tok = raw.get("tokenizer_source")
    if isinstance(tok, str) and tok not in ("base", "union"):
        tok = _resolve_path(tok, folder)
    search = raw.get("search")
    if search is not None and not isinstance(search, dict):
        raise UserError("search must be a mapping of lists", file=source, field="search")
    kinds = {m.kind for m in models}
    if "adapter" in kinds and len(kinds) > 1:
        require_models(models, source)  # a missing adapter folder reads as a hub id: say so
        full = [m.spec for m in models if m.kind != "adapter"]
        raise UserError(
            "mixes LoRA adapters and full models (full: " + ", ".join(full) + ")",
            file=source,
            field="models",
            hint="merge adapters on their own, or write full ones as base+adapter; "
            "a name that is not a local folder is read as a hub id",
        )
    return MergeConfig(
        raw,
        method,
        models,
        base,
        dict(parameters),
        raw.get("dtype"),
        raw.get("out_dtype"),
        tok,
        search,
        source,
    )


def load_config(path: str | os.PathLike) -> MergeConfig:
    p = require_file(path, field="config")
    raw = read_yaml(p, field="config")
    return parse_config(raw, str(p), p.resolve().parent)


def mergekit_dict(cfg: MergeConfig) -> dict[str, Any]:
    """The config as mergekit reads it: our keys dropped, model paths resolved."""
    out = {k: copy.deepcopy(v) for k, v in cfg.raw.items() if k not in OUR_KEYS}
    if cfg.models:
        out["models"] = [
            {"model": m.path, **({"parameters": m.params} if m.params else {})} for m in cfg.models
        ]
    if cfg.base_model:
        out["base_model"] = cfg.base_model
    if cfg.tokenizer_source and "tokenizer_source" in out:
        out["tokenizer_source"] = cfg.tokenizer_source
    return out


def with_point(
    cfg: MergeConfig, method: str, weights: Sequence[float] | None, density: float | None
) -> MergeConfig:
    """A copy of ``cfg`` with another method, per-model weights and density (a grid point)."""
    new = copy.deepcopy(cfg)
    new.method = new.raw["merge_method"] = method
    for i, m in enumerate(new.models):
        if weights is not None:
            m.params["weight"] = float(weights[i])
        if density is not None and method in DENSITY_METHODS:
            m.params["density"] = float(density)
        elif method not in DENSITY_METHODS:
            m.params.pop("density", None)
    new.raw["models"] = [{"model": m.spec, "parameters": m.params} for m in new.models]
    return new


def torch_dtype(name: str | None, default: Any = None) -> Any:
    import torch

    if name in (None, "auto"):
        return default
    table = {
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float64": torch.float64,
        "fp32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
    }
    if name not in table:
        raise UserError(f"unknown dtype '{name}'", field="dtype", hint=", ".join(table))
    return table[name]
