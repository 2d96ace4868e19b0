"""Weight merging: LoRA adapters with peft, full models with a streaming merger or mergekit.

One YAML in mergekit's schema describes a merge::

    merge_method: linear            # linear, task_arithmetic, ties, dare_ties, slerp, ...
    base_model: path/or/hub-id      # the common base (adapters; task arithmetic, ties, ...)
    models:
      - model: runs/cci/qwen_lora   # a run folder, an adapter folder or a full model folder
        parameters: {weight: 0.6, density: 0.7}
      - model: runs/cci/qwen_lora_seed2
        parameters: {weight: 0.4, density: 0.7}
    parameters: {normalize: true}   # defaults for every model, and method-wide options
    dtype: bfloat16                 # the dtype tensors are merged in; out_dtype: the saved one
    tokenizer_source: base          # base, or a model path (union / tokenizer: -> mergekit)
    search:                         # malpyeong's own key (ignored by mergekit): the --search grid
      merge_method: [linear, ties]
      weight: [[0.5, 0.5], [0.7, 0.3]]
      density: [0.5, 0.8]

**LoRA adapters on one base** are merged by peft's ``add_weighted_adapter`` into one new adapter
(or, with ``fold``, also into a full copy of the base). The method names mean what they mean for
full models: ``linear`` is the weighted *mean* of the adapters' weight deltas (``normalize``
true by default, as mergekit's linear) and ``task_arithmetic`` their weighted *sum*; both are
exact, computed with peft's ``cat`` combination (the new adapter's rank is the sum of the ranks).
peft's own ``linear`` mixes the A and B factors separately, which adds cross terms
``B_i A_j`` -- not a weighted sum of the deltas -- so it is not used. ``ties``, ``dare_linear``,
``dare_ties``, ``magnitude_prune`` (and their ``_svd`` variants), ``svd`` and ``cat`` are passed
to peft under their peft names with the weights as given; the non-svd ones prune the A and B
factors, the ``_svd`` ones the full delta before refactorising it to ``svd_rank``.

**Full models** are merged out of core. ``linear`` and ``task_arithmetic`` with scalar weights
run through our streaming merger (:func:`stream_merge`): each tensor is read from each model
with plain file reads at its safetensors offset (no memory map, so pages of the inputs never
count in the process's memory), combined with the same arithmetic as mergekit's methods, and
written straight to the output file, whose header is computed in advance. The peak memory is the
interpreter plus a few copies of the largest tensor. Everything else (ties, dare, slerp,
model_stock, slices, ``base+adapter`` references, tokenizer unions) goes to mergekit's own
lazy-loading executor (``engine: mergekit`` forces it for any method).

The output is a run folder like the trainer's: ``adapter/`` (a peft adapter with the tokenizer)
and/or ``model/`` (a full model with the tokenizer) plus ``malpyeong_run.json``, so
``run/test.py --model OUT`` and ``from_pretrained`` load it unchanged.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError

log = logging.getLogger(__name__)

RUN_FILE = "malpyeong_run.json"  # the trainer's loader contract (malpyeong.training.RUN_FILE)
STREAM_METHODS = ("linear", "task_arithmetic")
# YAML merge_method -> peft add_weighted_adapter combination_type, for LoRA adapters.
ADAPTER_METHODS = {
    "linear": "cat", "task_arithmetic": "cat", "cat": "cat", "svd": "svd",
    "ties": "ties", "ties_svd": "ties_svd", "dare_linear": "dare_linear",
    "dare_ties": "dare_ties", "dare_linear_svd": "dare_linear_svd",
    "dare_ties_svd": "dare_ties_svd", "magnitude_prune": "magnitude_prune",
    "magnitude_prune_svd": "magnitude_prune_svd",
}
DENSITY_METHODS = {"ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
                   "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd", "della",
                   "della_linear", "breadcrumbs", "breadcrumbs_ties"}
DEFAULT_NORMALIZE = {"linear": True, "ties": True}  # mergekit's defaults; others False
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "sentencepiece.bpe.model",
                   "spiece.model")
OUR_KEYS = ("search",)  # top-level keys that are ours, not mergekit's


# ------------------------------------------------------------------------------------- config


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
    if (path / RUN_FILE).is_file():
        run = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
        if run.get("adapter_dir") and (path / run["adapter_dir"] / "adapter_config.json").is_file():
            path = path / run["adapter_dir"]
        elif run.get("merged_dir") and (path / run["merged_dir"] / "config.json").is_file():
            path = path / run["merged_dir"]
        else:
            raise UserError("run folder has neither an adapter nor a model", file=str(path),
                            hint=f"check {RUN_FILE}")
    if (path / "adapter_config.json").is_file():
        return str(path), "adapter", run
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError("not a model folder (no config.json or adapter_config.json)",
                        file=str(path), field="models")
    return str(path), "full", run


def parse_config(raw: Any, source: str = "<config>", folder: Path | None = None) -> MergeConfig:
    """Validate the part of mergekit's schema malpyeong interprets; keep the rest for mergekit."""
    folder = folder or Path.cwd()
    if not isinstance(raw, dict):
        raise UserError("a merge config is a YAML mapping", file=source)
    method = raw.get("merge_method")
    if not isinstance(method, str):
        raise UserError("missing merge_method", file=source, field="merge_method",
                        hint="e.g. linear, task_arithmetic, ties, dare_ties, slerp")
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
            raise UserError("parameters must be a mapping", file=source,
                            field=f"models[{i}].parameters")
        path, kind, run = _resolve_model(entry["model"], folder)
        models.append(ModelRef(entry["model"], path, kind, dict(params), run))
    base = raw.get("base_model")
    if base is not None and not isinstance(base, str):
        raise UserError("base_model must be a path or hub id", file=source, field="base_model")
    if base is not None:
        path, kind, _ = _resolve_model(base, folder)
        if kind == "adapter":
            raise UserError("base_model is an adapter; give the model it was trained on",
                            file=source, field="base_model")
        base = path
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise UserError("parameters must be a mapping", file=source, field="parameters")
    tok = raw.get("tokenizer_source")
    if isinstance(tok, str) and tok not in ("base", "union"):
        tok = _resolve_path(tok, folder)
    search = raw.get("search")
    if search is not None and not isinstance(search, dict):
        raise UserError("search must be a mapping of lists", file=source, field="search")
    kinds = {m.kind for m in models}
    if "adapter" in kinds and len(kinds) > 1:
        raise UserError("mixes LoRA adapters and full models", file=source, field="models",
                        hint="merge adapters on their own, or write full ones as base+adapter")
    return MergeConfig(raw, method, models, base, dict(parameters), raw.get("dtype"),
                       raw.get("out_dtype"), tok, search, source)


def load_config(path: str | os.PathLike) -> MergeConfig:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", file=str(p))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"not valid YAML ({err})".replace("\n", " "), file=str(p)) from None
    return parse_config(raw, str(p), p.resolve().parent)


def mergekit_dict(cfg: MergeConfig) -> dict[str, Any]:
    """The config as mergekit reads it: our keys dropped, model paths resolved."""
    out = {k: copy.deepcopy(v) for k, v in cfg.raw.items() if k not in OUR_KEYS}
    if cfg.models:
        out["models"] = [{"model": m.path, **({"parameters": m.params} if m.params else {})}
                         for m in cfg.models]
    if cfg.base_model:
        out["base_model"] = cfg.base_model
    if cfg.tokenizer_source and "tokenizer_source" in out:
        out["tokenizer_source"] = cfg.tokenizer_source
    return out


def with_point(cfg: MergeConfig, method: str, weights: Sequence[float] | None,
               density: float | None) -> MergeConfig:
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


# ------------------------------------------------------------------------------------- output


def _staging(out: Path, overwrite: bool) -> Path:
    """A fresh folder next to ``out`` to build the result in (renamed into place at the end)."""
    if out.exists() and not overwrite:
        raise UserError("output exists", file=str(out), hint="pass --overwrite to replace it")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not any(
            (out / m).exists() for m in (RUN_FILE, "merge_config.yaml", "adapter", "model")))):
        # --overwrite replaces a run folder, never an arbitrary folder given by mistake.
        raise UserError("exists and is not a run folder; refusing to replace it", file=str(out),
                        hint="choose a new --output")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def _publish(stage: Path, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(stage, out)
    return out


def copy_tokenizer(src: str | os.PathLike, dst: Path) -> list[str]:
    """Copy the tokenizer files of a local folder; returns the names copied."""
    src = Path(src)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def _run_info(cfg: MergeConfig, model: str, method: str, adapter_dir: str | None,
              merged_dir: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """``malpyeong_run.json`` for the merge: task/prompt carried over when the inputs agree."""
    info: dict[str, Any] = {"model": model, "method": method, "adapter_dir": adapter_dir,
                            "merged_dir": merged_dir, "stage": "merge"}
    runs = [m.run for m in cfg.models if m.run]
    for key in ("task", "prompt", "max_length", "target_style"):
        values = {json.dumps(r.get(key)) for r in runs}
        info[key] = runs[0].get(key) if runs and len(values) == 1 else None
    info.update({k: v for k, v in extra.items() if v is not None})
    info["merge"] = {"method": cfg.method, "models": [m.spec for m in cfg.models],
                     "weights": [m.params.get("weight") for m in cfg.models]}
    return info


def _write_run(stage: Path, cfg: MergeConfig, info: dict[str, Any]) -> None:
    import yaml

    from malpyeong.io import atomic_write_json, atomic_write_text

    atomic_write_json(stage / RUN_FILE, info)
    atomic_write_text(stage / "merge_config.yaml",
                      yaml.safe_dump(cfg.raw, allow_unicode=True, sort_keys=False))


# ----------------------------------------------------------------------------------- adapters


def adapter_base(cfg: MergeConfig) -> str:
    """The base the adapters were trained on: base_model, else their common base."""
    if cfg.base_model:
        return cfg.base_model
    bases = set()
    for m in cfg.models:
        conf = json.loads((Path(m.path) / "adapter_config.json").read_text(encoding="utf-8"))
        bases.add(conf.get("base_model_name_or_path"))
    if len(bases) != 1 or None in bases:
        raise UserError(f"the adapters name different bases: {sorted(map(str, bases))}",
                        file=cfg.source, field="base_model", hint="set base_model")
    return bases.pop()


def _scalar(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{what} must be a number for this merge (gradients and filters need "
                        "full models and mergekit)", file=source, field=what)
    return float(value)


def adapter_arguments(cfg: MergeConfig) -> dict[str, Any]:
    """peft ``add_weighted_adapter`` arguments for ``cfg`` (weights normalised for linear)."""
    if cfg.method not in ADAPTER_METHODS:
        raise UserError(f"merge_method '{cfg.method}' is not available for LoRA adapters",
                        file=cfg.source, field="merge_method",
                        hint=", ".join(ADAPTER_METHODS) + "; or fold each adapter into the base "
                        "and merge full models (models: - model: BASE+ADAPTER)")
    weights = [_scalar(cfg.param(m, "weight", 1.0), "weight", cfg.source) for m in cfg.models]
    if cfg.method == "linear" and cfg.normalize():
        total = sum(weights)
        if abs(total) < 1e-12:
            raise UserError("weights sum to 0 and normalize is on", file=cfg.source,
                            field="weight")
        weights = [w / total for w in weights]
    args: dict[str, Any] = {"weights": weights,
                            "combination_type": ADAPTER_METHODS[cfg.method]}
    if cfg.method in DENSITY_METHODS:
        densities = {_scalar(cfg.param(m, "density", 1.0), "density", cfg.source)
                     for m in cfg.models}
        if len(densities) > 1:
            raise UserError("peft takes one density for all adapters", file=cfg.source,
                            field="density")
        args["density"] = densities.pop()
        sign = cfg.parameters.get("majority_sign_method", "total")
        if sign not in ("total", "frequency"):
            raise UserError("majority_sign_method is total or frequency", file=cfg.source,
                            field="majority_sign_method")
        args["majority_sign_method"] = sign
    if cfg.method.endswith("svd") and cfg.parameters.get("svd_rank") is not None:
        args["svd_rank"] = int(cfg.parameters["svd_rank"])
    return args


def _torch_dtype(name: str | None, default: Any = None) -> Any:
    import torch

    if name in (None, "auto"):
        return default
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
             "float64": torch.float64, "fp32": torch.float32, "fp16": torch.float16,
             "bf16": torch.bfloat16}
    if name not in table:
        raise UserError(f"unknown dtype '{name}'", field="dtype", hint=", ".join(table))
    return table[name]


def load_adapters(cfg: MergeConfig, *, device: str = "cpu") -> Any:
    """The base with every adapter loaded (named ``m0``, ``m1``, ...)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = adapter_base(cfg)
    for m in cfg.models:
        conf = json.loads((Path(m.path) / "adapter_config.json").read_text(encoding="utf-8"))
        if conf.get("peft_type", "LORA") != "LORA" or conf.get("use_dora"):
            raise UserError("only plain LoRA adapters can be merged (not DoRA or other types)",
                            file=m.path, field="peft_type")
    dtype = _torch_dtype(cfg.dtype, torch.float32)
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except OSError as err:
        raise UserError(f"cannot load the base model ({err})".split("\n")[0], file=str(base),
                        field="base_model") from None
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
        raise UserError(f"peft cannot merge these adapters: {err}", file=cfg.source,
                        field="models") from None
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
        raise UserError(f"{cfg.method} on LoRA factors needs adapters of one rank (have "
                        f"{sorted(ranks)})", file=cfg.source, field="merge_method",
                        hint=f"use {cfg.method}_svd, linear or cat")


def save_adapter_run(peft_model: Any, cfg: MergeConfig, name: str, stage: Path, *,
                     fold: bool, extra: dict[str, Any]) -> dict[str, Any]:
    """Write ``adapter/`` (+ ``merged/`` with ``fold``) and the run file into ``stage``."""
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
    conf_path = adapter_dir / "adapter_config.json"
    conf = json.loads(conf_path.read_text(encoding="utf-8"))
    conf["base_model_name_or_path"] = base
    conf_path.write_text(json.dumps(conf, indent=2), encoding="utf-8")
    tok_src = _tokenizer_source(cfg, base)
    copy_tokenizer(tok_src, adapter_dir)
    merged_dir = None
    if fold:
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(str(stage / "merged"), safe_serialization=True)
        copy_tokenizer(tok_src, stage / "merged")
        merged_dir = "merged"
    info = _run_info(cfg, base, "lora", "adapter", merged_dir, extra)
    _write_run(stage, cfg, info)
    return info


def _tokenizer_source(cfg: MergeConfig, base: str) -> str:
    if cfg.tokenizer_source and cfg.tokenizer_source not in ("base", "union"):
        return cfg.tokenizer_source
    if cfg.tokenizer_source == "base":
        return base
    first = Path(cfg.models[0].path) if cfg.models else Path(base)
    return str(first) if any((first / n).is_file() for n in TOKENIZER_FILES) else base


# ------------------------------------------------------------------- streaming full-model merge

ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
             "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
             "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


@dataclass
class TensorInfo:
    file: Path
    start: int  # absolute byte offset in the file
    nbytes: int
    dtype: str  # safetensors code
    shape: tuple[int, ...]


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor locations and metadata of one safetensors file (its JSON header only)."""
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise UserError("not a safetensors file", file=str(path))
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise UserError("not a safetensors file (bad header)", file=str(path)) from None
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        out[name] = TensorInfo(path, 8 + size + b, e - b, h["dtype"], tuple(h["shape"]))
    return out, meta


def model_tensors(folder: str | os.PathLike) -> dict[str, TensorInfo]:
    """Every tensor of a model folder (single file or sharded with an index)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise UserError("no safetensors weights (model.safetensors[.index.json])",
                        file=str(folder), hint="use engine: mergekit for .bin checkpoints")
    out: dict[str, TensorInfo] = {}
    for f in files:
        out.update(read_header(folder / f)[0])
    return out


class TensorReader:
    """Reads one tensor at a time with plain reads (no mmap); drops the pages it read."""

    def __init__(self) -> None:
        self._files: dict[Path, Any] = {}

    def read(self, info: TensorInfo) -> Any:
        import torch

        fh = self._files.get(info.file)
        if fh is None:
            fh = self._files[info.file] = open(info.file, "rb", buffering=0)
        dtype = getattr(torch, ST_DTYPES[info.dtype])
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        buf = bytearray(info.nbytes)
        view = memoryview(buf)
        done = 0
        while done < info.nbytes:
            n = os.preadv(fh.fileno(), [view[done:]], info.start + done)
            if n <= 0:
                raise UserError("file ends early", file=str(info.file))
            done += n
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fh.fileno(), info.start, info.nbytes, os.POSIX_FADV_DONTNEED)
        return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()


def _st_code(dtype: Any) -> str:
    name = str(dtype).replace("torch.", "")
    for code, n in ST_DTYPES.items():
        if n == name:
            return code
    raise ValueError(f"no safetensors code for {dtype}")


class SafetensorsWriter:
    """Writes a safetensors file tensor by tensor: the header (all offsets) goes first."""

    def __init__(self, path: Path, specs: Sequence[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> None:
        import numpy as np

        header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        self.expected = []
        for name, code, shape in specs:
            size = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[code]
            header[name] = {"dtype": code, "shape": list(shape),
                            "data_offsets": [offset, offset + size]}
            self.expected.append((name, size))
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # 8-byte alignment of the data, as safetensors writes
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<Q", len(blob)))
        self.fh.write(blob)
        self.next = 0

    def write(self, name: str, tensor: Any) -> None:
        want, size = self.expected[self.next]
        if name != want:
            raise RuntimeError(f"tensor {name} written out of order (expected {want})")
        data = tensor.contiguous().reshape(-1).view(__import__("torch").uint8).numpy()
        if data.nbytes != size:
            raise RuntimeError(f"tensor {name}: {data.nbytes} bytes, header says {size}")
        self.fh.write(memoryview(data))
        self.next += 1

    def close(self) -> None:
        if self.next != len(self.expected):
            raise RuntimeError("not every tensor was written")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def stream_unsupported(cfg: MergeConfig) -> str | None:
    """Why the streaming merger cannot do ``cfg`` (None when it can)."""
    if cfg.method not in STREAM_METHODS:
        return f"method {cfg.method}"
    if any(k in cfg.raw for k in ("slices", "modules", "tokenizer", "chat_template")):
        return "slices/modules/tokenizer settings"
    if cfg.tokenizer_source == "union":
        return "tokenizer_source: union"
    if any(m.kind != "full" for m in cfg.models):
        return "adapter references"
    refs = [m.path for m in cfg.models] + ([cfg.base_model] if cfg.base_model else [])
    for ref in refs:
        p = Path(ref)
        if not ((p / "model.safetensors").is_file()
                or (p / "model.safetensors.index.json").is_file()):
            return f"{ref} is not a local safetensors model"
    allowed_model, allowed_top = {"weight"}, {"normalize", "lambda", "weight"}
    for m in cfg.models:
        if set(m.params) - allowed_model:
            return f"parameters {sorted(set(m.params) - allowed_model)}"
        if not isinstance(cfg.param(m, "weight", 0.0), (int, float)):
            return "weight gradients or filters"
    if set(cfg.parameters) - allowed_top:
        return f"parameters {sorted(set(cfg.parameters) - allowed_top)}"
    if cfg.method == "task_arithmetic" and not cfg.base_model:
        return "task_arithmetic without base_model"
    return None


def parse_size(text: str | int) -> int:
    """'2GB', '500MB', '1e9' -> bytes."""
    if isinstance(text, int):
        return text
    t = str(text).strip().upper()
    for unit, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * mult)
    return int(float(t))


def stream_merge(cfg: MergeConfig, out_dir: Path, *, shard_size: int = 5 * 10**9,
                 progress: bool = True) -> Path:
    """Merge full models tensor by tensor into ``out_dir`` (see the module docstring).

    ``linear``: ``sum(w_i * T_i) / sum(w_i)`` (``normalize``, default on) computed in float32
    (float64 for float64 inputs), cast back to the merge dtype. ``task_arithmetic``:
    ``B + lambda * sum(w_i * (T_i - B))`` (divided by ``sum(w_i)`` when ``normalize``), in the
    merge dtype, as mergekit computes them.
    """
    import torch

    why = stream_unsupported(cfg)
    if why:
        raise UserError(f"the streaming merger cannot do this config ({why})", file=cfg.source,
                        hint="use --engine mergekit")
    base_path = cfg.base_model if cfg.method == "task_arithmetic" else None
    members = [m for m in cfg.models if base_path is None or m.path != base_path]
    if not members:
        raise UserError("no models besides the base", file=cfg.source, field="models")
    weights = [float(cfg.param(m, "weight", 1.0)) for m in members]
    tables = [model_tensors(m.path) for m in members]
    base_table = model_tensors(base_path) if base_path else None
    ref = base_table or tables[0]
    for m, t in zip([*members, *([None] if base_table else [])],
                    [*tables, *([base_table] if base_table else [])], strict=True):
        where = m.path if m else base_path
        if set(t) != set(ref):
            diff = sorted(set(t) ^ set(ref))
            raise UserError(f"tensor names differ from the first model's: {', '.join(diff[:3])}"
                            + (" ..." if len(diff) > 3 else ""), file=where,
                            hint="models of one architecture and vocabulary only; "
                                 "mergekit can handle other cases")
        for name, info in t.items():
            if info.shape != ref[name].shape:
                raise UserError(f"tensor {name} has shape {info.shape}, the first model "
                                f"{ref[name].shape}", file=where)
    merge_dtype = _torch_dtype(cfg.dtype)
    out_dtype = _torch_dtype(cfg.out_dtype) or merge_dtype
    normalize = cfg.normalize()
    lam = float(cfg.parameters.get("lambda", 1.0))
    names = sorted(ref, key=lambda n: (str(ref[n].file), ref[n].start))

    def out_code(name: str) -> str:
        native = ST_DTYPES[ref[name].dtype]
        floating = native.startswith(("float", "bfloat"))
        if floating and out_dtype is not None:
            return _st_code(out_dtype)
        if floating and merge_dtype is not None:
            return _st_code(merge_dtype)
        return ref[name].dtype

    specs = [(n, out_code(n), ref[n].shape) for n in names]
    shards: list[list[tuple[str, str, tuple[int, ...]]]] = [[]]
    used = 0
    for spec in specs:
        size = math.prod(spec[2]) * _ITEMSIZE[spec[1]]
        if shards[-1] and used + size > shard_size:
            shards.append([])
            used = 0
        shards[-1].append(spec)
        used += size
    files = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    out_dir.mkdir(parents=True, exist_ok=True)
    reader = TensorReader()
    bar = _bar(len(names), progress, "merge tensors")
    try:
        for fname, shard in zip(files, shards, strict=True):
            writer = SafetensorsWriter(out_dir / fname, shard)
            for name, code, _ in shard:
                tensor = _merge_one(reader, name, [t[name] for t in tables],
                                    base_table[name] if base_table else None, weights,
                                    cfg.method, merge_dtype, normalize, lam)
                writer.write(name, tensor.to(getattr(torch, ST_DTYPES[code])))
                del tensor
                bar.update(1)
            writer.close()
    finally:
        reader.close()
        bar.close()
    if len(files) > 1:
        from malpyeong.io import atomic_write_json

        total = sum(math.prod(s[2]) * _ITEMSIZE[s[1]] for s in specs)
        atomic_write_json(out_dir / "model.safetensors.index.json", {
            "metadata": {"total_size": total},
            "weight_map": {s[0]: f for f, shard in zip(files, shards, strict=True)
                           for s in shard}})
    _finish_model_folder(cfg, out_dir, base_path or members[0].path, out_dtype or merge_dtype)
    return out_dir


def _merge_one(reader: TensorReader, name: str, infos: list[TensorInfo], base: TensorInfo | None,
               weights: list[float], method: str, merge_dtype: Any, normalize: bool,
               lam: float) -> Any:
    """One output tensor; the same operations, in the same order, as mergekit's methods."""
    import torch

    def load(info: TensorInfo) -> Any:
        t = reader.read(info)
        return t.to(merge_dtype) if merge_dtype is not None and t.is_floating_point() else t

    if method == "linear":
        first = load(infos[0])
        if not first.is_floating_point():
            return first
        acc = torch.float64 if first.dtype == torch.float64 else torch.float32
        w = torch.tensor(weights, dtype=acc)
        result = torch.zeros_like(first, dtype=acc)
        result.addcmul_(first, w[0])
        out_type = first.dtype
        del first
        for info, coef in zip(infos[1:], w[1:], strict=True):
            t = load(info)
            result.addcmul_(t, coef)
            del t
        if normalize:
            result.div_(w.sum())
        return result.to(out_type)
    b = load(base)
    if not b.is_floating_point():
        return b
    deltas = b.new_empty((len(infos), *b.shape))
    for i, info in enumerate(infos):
        deltas[i] = load(info) - b
    w = torch.tensor(weights, dtype=deltas.dtype).reshape(-1, *([1] * b.dim()))
    deltas.mul_(w)
    mixed = deltas.sum(dim=0)
    del deltas
    divisor = w.sum(dim=0)
    divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if lam != 1:
        mixed *= lam
    return (b + mixed).to(b.dtype)


def _finish_model_folder(cfg: MergeConfig, out_dir: Path, ref_model: str, dtype: Any) -> None:
    """config.json (dtype updated), generation config, tokenizer, provenance."""
    import yaml

    conf = json.loads((Path(ref_model) / "config.json").read_text(encoding="utf-8"))
    if dtype is not None:
        key = "dtype" if "dtype" in conf or "torch_dtype" not in conf else "torch_dtype"
        conf[key] = str(dtype).replace("torch.", "")
    (out_dir / "config.json").write_text(json.dumps(conf, indent=2), encoding="utf-8")
    gen = Path(ref_model) / "generation_config.json"
    if gen.is_file():
        shutil.copy2(gen, out_dir / gen.name)
    copy_tokenizer(_tokenizer_source(cfg, ref_model) if cfg.tokenizer_source else ref_model,
                   out_dir)
    (out_dir / "mergekit_config.yml").write_text(
        yaml.safe_dump(mergekit_dict(cfg), allow_unicode=True, sort_keys=False), encoding="utf-8")


def _bar(total: int, enabled: bool, desc: str) -> Any:
    from malpyeong.generation import progress_bar

    return progress_bar(total, enabled, desc)


# ------------------------------------------------------------------------------------ mergekit


def mergekit_merge(cfg: MergeConfig, out_dir: Path, *, device: str = "cpu", seed: int | None = 0,
                   shard_size: int = 5 * 10**9, progress: bool = True) -> Path:
    """Run mergekit (its lazy, tensor-by-tensor executor) on ``cfg`` into ``out_dir``."""
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
    except ImportError:
        raise UserError("this merge needs mergekit, which is not installed",
                        hint="pip install mergekit") from None
    from pydantic import ValidationError

    try:
        config = MergeConfiguration.model_validate(mergekit_dict(cfg))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise UserError(f"mergekit rejects the config: {first.get('msg')}", file=cfg.source,
                        field=where or None) from None
    itemsize = {"float32": 4, "float64": 8}.get(cfg.out_dtype or cfg.dtype or "", 2)
    options = MergeOptions(device=device, random_seed=seed, lazy_unpickle=True,
                           copy_tokenizer=True, quiet=not progress, write_model_card=True,
                           out_shard_size=max(1, shard_size // itemsize), safe_serialization=True)
    try:
        run_merge(config, str(out_dir), options=options)
    except (ValueError, RuntimeError, KeyError, OSError) as err:
        raise UserError(f"mergekit failed: {type(err).__name__}: {err}".split("\n")[0],
                        file=cfg.source) from err
    return out_dir


# ---------------------------------------------------------------------------------------- jobs


ENGINES = ("auto", "stream", "mergekit")


def merge_full(cfg: MergeConfig, out_dir: Path, *, engine: str = "auto", device: str = "cpu",
               seed: int | None = 0, shard_size: int = 5 * 10**9, progress: bool = True) -> str:
    """Merge full models into ``out_dir`` (a plain model folder); returns the engine used."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine '{engine}'", field="engine", hint=", ".join(ENGINES))
    why = stream_unsupported(cfg)
    if engine == "stream" or (engine == "auto" and why is None):
        stream_merge(cfg, out_dir, shard_size=shard_size, progress=progress)
        return "stream"
    log.info("merging with mergekit%s", f" ({why})" if why and engine == "auto" else "")
    mergekit_merge(cfg, out_dir, device=device, seed=seed, shard_size=shard_size,
                   progress=progress)
    return "mergekit"


@dataclass
class EvalOptions:
    """How ``--search`` scores a candidate on dev (the prompt the models were trained with)."""

    task: str
    dev: str
    prompt: str | None = None
    max_length: int | None = None
    scoring: str = "letter"
    batch_size: int = 8
    limit: int | None = None
    max_new_tokens: int = 128
    device: str = "cpu"


@dataclass
class MergeJob:
    config: str
    output: str
    overwrite: bool = False
    fold: bool = False
    engine: str = "auto"
    device: str = "cpu"
    seed: int | None = 0
    shard_size: int = 5 * 10**9
    search: EvalOptions | None = None
    progress: bool = True


def run_merge_job(job: MergeJob, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Merge (or search and merge) as ``ensemble/merge.py`` was asked; returns the run info."""
    cfg = load_config(job.config)
    out = Path(job.output)
    stage = _staging(out, job.overwrite)
    try:
        if job.search is not None:
            info = _search(cfg, job, stage, echo)
        elif cfg.kind == "adapter":
            echo(f"merging {len(cfg.models)} LoRA adapters ({cfg.method}) with peft")
            peft_model = load_adapters(cfg, device=job.device)
            add_merged_adapter(peft_model, cfg, "merged")
            info = save_adapter_run(peft_model, cfg, "merged", stage, fold=job.fold, extra={})
        else:
            if job.fold:
                raise UserError("--fold applies to LoRA adapters", field="fold")
            engine = merge_full(cfg, stage / "model", engine=job.engine, device=job.device,
                                seed=job.seed, shard_size=job.shard_size, progress=job.progress)
            echo(f"merged {len(cfg.models)} full models ({cfg.method}) with {engine}")
            ref = cfg.base_model or cfg.models[0].path.split("+")[0]
            info = _run_info(cfg, ref, "full", None, "model", {"engine": engine})
            _write_run(stage, cfg, info)
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    where = ", ".join(f"{out / d}" for d in (info.get("adapter_dir"), info.get("merged_dir"))
                      if d)
    echo(f"wrote {out} ({where})")
    return info


# ------------------------------------------------------------------------------------- search


def search_grid(cfg: MergeConfig) -> list[tuple[str, list[float], float | None]]:
    """(method, weights, density) points: the ``search:`` block, else a small default grid."""
    grid = cfg.search or {}
    n = len(cfg.models)
    methods = grid.get("merge_method") or [cfg.method]
    methods = [methods] if isinstance(methods, str) else list(methods)
    given = [float(cfg.param(m, "weight", 1.0)) for m in cfg.models]
    weights = grid.get("weight")
    if weights is None:
        weights = [given, [1.0 / n] * n]
        for i in range(n):  # lean towards each model in turn
            weights.append([(2.0 if j == i else 1.0) / (n + 1) for j in range(n)])
    for w in weights:
        if not isinstance(w, list) or len(w) != n:
            raise UserError(f"search weight {w} needs one number per model ({n})",
                            file=cfg.source, field="search.weight")
    densities = grid.get("density")
    if densities is None:
        set_density = cfg.param(cfg.models[0], "density") if cfg.models else None
        densities = [set_density] if set_density is not None else [0.3, 0.5, 0.7]
    points, seen = [], set()
    for method, w, d in itertools.product(methods, weights, densities):
        d = d if method in DENSITY_METHODS else None
        key = (method, tuple(round(float(x), 9) for x in w), d)
        if key not in seen:
            seen.add(key)
            points.append((method, [float(x) for x in w], d))
    return points


def evaluate_model(model: Any, tokenizer: Any, backbone: Any, task: Any, items: list,
                   opts: EvalOptions) -> float:
    """The task metric on dev: CCI accuracy from option scores, DCS ROUGE-1 of generations."""
    import numpy as np

    if task.kind == "choice":
        from malpyeong.predict import score_choices

        probs = score_choices(model, tokenizer, backbone, task, items, prompt=opts.prompt,
                              batch_size=opts.batch_size, max_length=opts.max_length,
                              scoring=opts.scoring, progress=False)
        gold = np.array([task.label_index(it) for it in items])
        return float((np.asarray(probs).argmax(axis=1) == gold).mean())
    from malpyeong.backbones import end_of_turn_ids
    from malpyeong.generation import generate_texts
    from malpyeong.metrics import rouge1
    from malpyeong.predict import generation_prompts

    fitted = generation_prompts(task, items, tokenizer, backbone, prompt=opts.prompt,
                                max_length=opts.max_length, max_new_tokens=opts.max_new_tokens)
    texts = generate_texts(model, tokenizer, [f.input_ids for f in fitted],
                           max_new_tokens=opts.max_new_tokens, batch_size=opts.batch_size,
                           stop_token_ids=end_of_turn_ids(tokenizer, backbone), progress=False)
    preds = [task.clean_output(t) or "." for t in texts]
    return rouge1([it.summary for it in items], preds)


def _eval_setup(cfg: MergeConfig, opts: EvalOptions) -> tuple[Any, Any, Any, list]:
    from malpyeong.backbones import get_backbone, load_tokenizer
    from malpyeong.data import load_items
    from malpyeong.tasks import get_task

    task = get_task(opts.task)
    items = load_items(opts.dev, task, require_output=True)
    if opts.limit:
        items = items[:opts.limit]
    runs = [m.run for m in cfg.models if m.run]
    if opts.prompt is None and runs and runs[0].get("prompt"):
        opts.prompt = runs[0]["prompt"]
    if opts.max_length is None and runs and runs[0].get("max_length"):
        opts.max_length = runs[0]["max_length"]
    base = adapter_base(cfg) if cfg.kind == "adapter" else (
        cfg.base_model or cfg.models[0].path.split("+")[0])
    backbone = get_backbone(base)
    tok_src = _tokenizer_source(cfg, base)
    return task, items, backbone, load_tokenizer(tok_src, backbone)


def _fmt_point(method: str, weights: list[float], density: float | None) -> list[str]:
    return [method, "[" + ", ".join(f"{w:.3g}" for w in weights) + "]",
            "-" if density is None else f"{density:g}"]


def _search(cfg: MergeConfig, job: MergeJob, stage: Path,
            echo: Callable[[str], None]) -> dict[str, Any]:
    import gc

    opts = job.search
    points = search_grid(cfg)
    task, items, backbone, tokenizer = _eval_setup(cfg, opts)
    metric = "accuracy" if task.kind == "choice" else "rouge1"
    echo(f"search: {len(points)} candidate merges, scored by dev {metric} on {len(items)} items")
    rows: list[tuple[str, list[float], float | None, float]] = []
    best_i = -1
    if cfg.kind == "adapter":
        peft_model = load_adapters(cfg, device=opts.device)
        peft_model.eval()
        for method, weights, density in points:  # every point checked before any is scored
            point = with_point(cfg, method, weights, density)
            adapter_arguments(point)
            check_ranks(peft_model, point)
        for i, (method, weights, density) in enumerate(points):
            point = with_point(cfg, method, weights, density)
            add_merged_adapter(peft_model, point, f"g{i}")
            peft_model.set_adapter(f"g{i}")
            score = evaluate_model(peft_model, tokenizer, backbone, task, items, opts)
            rows.append((method, weights, density, score))
            echo("  " + "  ".join(_fmt_point(method, weights, density)) + f"  {score:.4f}")
            peft_model.set_adapter("m0")
            peft_model.delete_adapter(f"g{i}")
            if best_i < 0 or score > rows[best_i][3]:
                best_i = i
        method, weights, density, score = rows[best_i]
        best = with_point(cfg, method, weights, density)
        add_merged_adapter(peft_model, best, "merged")
        info = save_adapter_run(peft_model, best, "merged", stage, fold=job.fold,
                                extra={"search_score": score})
    else:
        from malpyeong.backbones import load_model

        best_dir = None
        for i, (method, weights, density) in enumerate(points):
            point = with_point(cfg, method, weights, density)
            cand = stage / f"candidate-{i}"
            engine = merge_full(point, cand, engine=job.engine, device=job.device,
                                seed=job.seed, shard_size=job.shard_size, progress=False)
            model = load_model(str(cand), "full", backbone=backbone, dtype="auto")
            model.to(opts.device).eval()
            score = evaluate_model(model, tokenizer, backbone, task, items, opts)
            del model
            gc.collect()
            rows.append((method, weights, density, score))
            echo("  " + "  ".join(_fmt_point(method, weights, density))
                 + f"  {score:.4f}  ({engine})")
            if best_i < 0 or score > rows[best_i][3]:
                if best_dir is not None:
                    shutil.rmtree(best_dir)
                best_i, best_dir = i, cand
            else:
                shutil.rmtree(cand)
        os.replace(best_dir, stage / "model")
        method, weights, density, score = rows[best_i]
        best = with_point(cfg, method, weights, density)
        ref = best.base_model or best.models[0].path.split("+")[0]
        info = _run_info(best, ref, "full", None, "model", {"search_score": score})
        _write_run(stage, best, info)
    table = format_search_table(rows, metric, best_i)
    echo(table)
    from malpyeong.io import atomic_write_json

    atomic_write_json(stage / "merge_search.json", {
        "metric": metric, "dev": opts.dev, "n": len(items), "best": best_i,
        "rows": [{"merge_method": m, "weights": w, "density": d, metric: s}
                 for m, w, d, s in rows]})
    return info


def format_search_table(rows: Sequence[tuple[str, list[float], float | None, float]],
                        metric: str, best: int) -> str:
    cells = [["method", "weights", "density", metric]]
    for i, (m, w, d, s) in enumerate(rows):
        cells.append(_fmt_point(m, w, d) + [f"{s:.4f}" + ("  <- best" if i == best else "")])
    widths = [max(len(r[j]) for r in cells) for j in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True))
                     + "  " + r[3] for r in cells)


__all__ = [
    "ADAPTER_METHODS", "ENGINES", "EvalOptions", "MergeConfig", "MergeJob", "ModelRef",
    "SafetensorsWriter", "TensorReader", "add_merged_adapter", "adapter_arguments",
    "adapter_base", "evaluate_model", "format_search_table", "load_adapters", "load_config",
    "merge_full", "mergekit_dict", "mergekit_merge", "model_tensors", "parse_config",
    "parse_size", "read_header", "run_merge_job", "save_adapter_run", "search_grid",
    "stream_merge", "stream_unsupported", "with_point",
]
