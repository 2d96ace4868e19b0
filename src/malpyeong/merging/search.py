"""``--search``: the grid of candidate merges and how one candidate is scored on dev."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import GenerationSettings, HFEngine
from malpyeong.merging.adapters import adapter_base
from malpyeong.merging.config import DENSITY_METHODS, MergeConfig
from malpyeong.merging.output import tokenizer_source
from malpyeong.models.backbones import Backbone, get_backbone, load_tokenizer
from malpyeong.tasks import Task, TaskItem, get_task


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
            raise UserError(
                f"search weight {w} needs one number per model ({n})", file=cfg.source, field="search.weight"
            )
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


def evaluate_model(
    model: Any, tokenizer: Any, backbone: Backbone, task: Task, items: list[TaskItem], opts: EvalOptions
) -> float:
    """The task's dev metric of one candidate, answered through the shared answering path."""
    settings = AnswerSettings(
        prompt=task.prompt_spec(opts.prompt),
        max_length=opts.max_length,
        scoring=opts.scoring,
        batch_size=opts.batch_size,
        generation=GenerationSettings(max_new_tokens=opts.max_new_tokens),
    )
    run = answer_items(HFEngine(model, tokenizer, backbone), task, items, settings, progress=False)
    outputs = {it.id: out for it, out in zip(items, run.outputs, strict=True)}
    return float(task.dev_evaluate(items, outputs)[task.dev_metric])


def eval_setup(cfg: MergeConfig, opts: EvalOptions) -> tuple[Task, list, Backbone, Any]:
    task = get_task(opts.task)
    items = load_items(opts.dev, task, require_output=True)
    if opts.limit:
        items = items[: opts.limit]
    runs = [m.run for m in cfg.models if m.run]
    if opts.prompt is None and runs and runs[0].get("prompt"):
        opts.prompt = runs[0]["prompt"]
    if opts.max_length is None and runs and runs[0].get("max_length"):
        opts.max_length = runs[0]["max_length"]
    base = (
        adapter_base(cfg) if cfg.kind == "adapter" else (cfg.base_model or cfg.models[0].path.split("+")[0])
    )
    backbone = get_backbone(base)
    tok_src = tokenizer_source(cfg, base)
    return task, items, backbone, load_tokenizer(tok_src, backbone)


def fmt_point(method: str, weights: list[float], density: float | None) -> list[str]:
    return [
        method,
        "[" + ", ".join(f"{w:.3g}" for w in weights) + "]",
        "-" if density is None else f"{density:g}",
    ]


def format_search_table(
    rows: Sequence[tuple[str, list[float], float | None, float]], metric: str, best: int
) -> str:
    cells = [["method", "weights", "density", metric]]
    for i, (m, w, d, s) in enumerate(rows):
        cells.append(fmt_point(m, w, d) + [f"{s:.4f}" + ("  <- best" if i == best else "")])
    widths = [max(len(r[j]) for r in cells) for j in range(3)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in cells
    )
