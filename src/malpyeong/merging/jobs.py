"""What ``ensemble/merge.py`` runs: one merge, or a search that keeps the best, into a run folder."""

from __future__ import annotations

import gc
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.inference.loading import ModelSource, load_weights
from malpyeong.io import atomic_write_json, check_distinct
from malpyeong.merging.adapters import (
    adapter_arguments,
    add_merged_adapter,
    check_ranks,
    load_adapters,
    save_adapter_run,
)
from malpyeong.merging.config import MergeConfig, load_config, require_models, with_point
from malpyeong.merging.mergekit_engine import mergekit_merge
from malpyeong.merging.output import publish, run_info, staging, write_run
from malpyeong.merging.search import (
    EvalOptions,
    eval_setup,
    evaluate_model,
    fmt_point,
    format_search_table,
    search_grid,
)
from malpyeong.merging.streaming import stream_merge, stream_unsupported
from malpyeong.models.runfolder import MERGE_SEARCH, WEIGHTS_DIR

log = logging.getLogger(__name__)

ENGINES = ("auto", "stream", "mergekit")


def merge_full(
    cfg: MergeConfig,
    out_dir: Path,
    *,
    engine: str = "auto",
    device: str = "cpu",
    seed: int | None = 0,
    shard_size: int = 5 * 10**9,
    progress: bool = True,
) -> str:
    """Merge full models into ``out_dir`` (a plain model folder); returns the engine used."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine '{engine}'", field="engine", hint=", ".join(ENGINES))
    why = stream_unsupported(cfg)
    if engine == "stream" or (engine == "auto" and why is None):
        stream_merge(cfg, out_dir, shard_size=shard_size, progress=progress)
        return "stream"
    log.info("merging with mergekit%s", f" ({why})" if why and engine == "auto" else "")
    mergekit_merge(cfg, out_dir, device=device, seed=seed, shard_size=shard_size, progress=progress)
    return "mergekit"


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
    require_models(cfg.models, cfg.source)
    out = Path(job.output)
    check_distinct(
        [("--output", out)],
        [
            *((f"model {m.spec}", p) for m in cfg.models for p in m.path.split("+")),
            ("base_model", cfg.base_model),
            ("--config", job.config),
        ],
        folders=["--output"],
    )
    stage = staging(out, job.overwrite)
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
            # the model at the folder's root, as mergekit writes it (from_pretrained(out))
            engine = merge_full(
                cfg,
                stage,
                engine=job.engine,
                device=job.device,
                seed=job.seed,
                shard_size=job.shard_size,
                progress=job.progress,
            )
            echo(f"merged {len(cfg.models)} full models ({cfg.method}) with {engine}")
            ref = cfg.base_model or cfg.models[0].path.split("+")[0]
            info = run_info(cfg, ref, "full", None, WEIGHTS_DIR, {"engine": engine})
            write_run(stage, cfg, info)
        publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    parts = [
        f"adapter {out / info['adapter_dir']}" if info.get("adapter_dir") else "",
        "a full model at its root" if info.get("merged_dir") else "",
    ]
    echo(f"wrote {out} ({', '.join(p for p in parts if p)})")
    return info


def _search(cfg: MergeConfig, job: MergeJob, stage: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    opts = job.search
    points = search_grid(cfg)
    task, items, backbone, tokenizer = eval_setup(cfg, opts)
    metric = task.dev_metric
    higher = task.metric(metric).higher_is_better

    def better(score: float, best: int) -> bool:
        return best < 0 or (score > rows[best][3] if higher else score < rows[best][3])

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
            echo("  " + "  ".join(fmt_point(method, weights, density)) + f"  {score:.4f}")
            peft_model.set_adapter("m0")
            peft_model.delete_adapter(f"g{i}")
            if better(score, best_i):
                best_i = i
        method, weights, density, score = rows[best_i]
        best = with_point(cfg, method, weights, density)
        add_merged_adapter(peft_model, best, "merged")
        info = save_adapter_run(
            peft_model, best, "merged", stage, fold=job.fold, extra={"search_score": score}
        )
    else:
        best_dir = None
        for i, (method, weights, density) in enumerate(points):
            point = with_point(cfg, method, weights, density)
            cand = stage / f"candidate-{i}"
            engine = merge_full(
                point,
                cand,
                engine=job.engine,
                device=job.device,
                seed=job.seed,
                shard_size=job.shard_size,
                progress=False,
            )
            source = ModelSource("local", str(cand), backbone.name, tokenizer=str(cand))
            model = load_weights(source, backbone, tokenizer, dtype="auto", device=opts.device)
            score = evaluate_model(model, tokenizer, backbone, task, items, opts)
            del model
            gc.collect()
            rows.append((method, weights, density, score))
            echo("  " + "  ".join(fmt_point(method, weights, density)) + f"  {score:.4f}  ({engine})")
            if better(score, best_i):
                if best_dir is not None:
                    shutil.rmtree(best_dir)
                best_i, best_dir = i, cand
            else:
                shutil.rmtree(cand)
        for f in best_dir.iterdir():  # the best model at the folder's root
            os.replace(f, stage / f.name)
        best_dir.rmdir()
        method, weights, density, score = rows[best_i]
        best = with_point(cfg, method, weights, density)
        ref = best.base_model or best.models[0].path.split("+")[0]
        info = run_info(best, ref, "full", None, WEIGHTS_DIR, {"search_score": score})
        write_run(stage, best, info)
    table = format_search_table(rows, metric, best_i)
    echo(table)
    atomic_write_json(
        stage / MERGE_SEARCH,
        {
            "metric": metric,
            "dev": opts.dev,
            "n": len(items),
            "best": best_i,
            "rows": [{"merge_method": m, "weights": w, "density": d, metric: s} for m, w, d, s in rows],
        },
    )
    return info
