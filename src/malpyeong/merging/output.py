"""The merge's run folder: built in a staging folder, published by rename; tokenizer and run file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from malpyeong.errors import UserError
from malpyeong.io import atomic_write_text, make_temp_dir
from malpyeong.merging.config import MergeConfig
from malpyeong.models.runfolder import MERGE_CONFIG, is_run_folder
from malpyeong.models.runfolder import run_info as make_run_info
from malpyeong.models.runfolder import write_run as write_run_file

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def staging(out: Path, overwrite: bool) -> Path:
    """A fresh folder next to ``out`` to build the result in (renamed into place at the end)."""
    if out.exists() and not overwrite:
        raise UserError("output exists", file=str(out), hint="pass --overwrite to replace it")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_run_folder(out))):
        # --overwrite replaces a run folder, never an arbitrary folder given by mistake.
        raise UserError(
            "exists and is not a run folder; refusing to replace it",
            file=str(out),
            hint="choose a new --output",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return make_temp_dir(out.parent, prefix=f".{out.name}.")


def publish(stage: Path, out: Path) -> Path:
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


def tokenizer_source(cfg: MergeConfig, base: str) -> str:
    if cfg.tokenizer_source and cfg.tokenizer_source not in ("base", "union"):
        return cfg.tokenizer_source
    if cfg.tokenizer_source == "base":
        return base
    first = Path(cfg.models[0].path) if cfg.models else Path(base)
    return str(first) if any((first / n).is_file() for n in TOKENIZER_FILES) else base


def run_info(
    cfg: MergeConfig,
    model: str,
    method: str,
    adapter_dir: str | None,
    merged_dir: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The run file of a merge: task, prompt, max_length and target style carried over when
    the inputs agree (see :mod:`malpyeong.models.runfolder`)."""
    runs = [m.run for m in cfg.models if m.run]
    shared = {}
    for key in ("task", "prompt", "max_length", "target_style"):
        values = {json.dumps(r.get(key)) for r in runs}
        shared[key] = runs[0].get(key) if runs and len(values) == 1 else None
    info = make_run_info(
        model, method, adapter_dir=adapter_dir, merged_dir=merged_dir, stage="merge", **shared
    )
    info.update({k: v for k, v in extra.items() if v is not None})
    info["merge"] = {
        "method": cfg.method,
        "models": [m.spec for m in cfg.models],
        "weights": [m.params.get("weight") for m in cfg.models],
    }
    return info


def write_run(stage: Path, cfg: MergeConfig, info: dict[str, Any]) -> None:
    write_run_file(stage, info)
    atomic_write_text(stage / MERGE_CONFIG, yaml.safe_dump(cfg.raw, allow_unicode=True, sort_keys=False))
