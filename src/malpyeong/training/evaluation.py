"""The task's own dev metric during training, answered by the same path prediction uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from malpyeong.data import load_items
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import GenerationSettings, HFEngine
from malpyeong.inference.shard import current_shard
from malpyeong.models.backbones import Backbone
from malpyeong.tasks.base import PromptSpec, Task
from malpyeong.training.recipe import CommonArguments


@dataclass
class TaskEvaluator:
    """The task's dev metric (:attr:`~malpyeong.tasks.base.Task.dev_metric`), computed on the
    model being trained: the dev items are answered by :func:`malpyeong.inference.answer.answer_items`
    (option scoring, or generation) and scored by the task's ``dev_evaluate``. Under several
    processes each answers its share of the items once and all get every answer, so every
    process sees the same metric (best checkpoint, early stopping)."""

    task: Task
    items: list
    tokenizer: Any
    backbone: Backbone
    settings: AnswerSettings
    history: list[dict] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.task.dev_metric

    def __call__(self, model: Any) -> dict[str, float]:
        import torch

        generates = not self.settings.scores(self.task)
        was_training = model.training
        use_cache = getattr(model.config, "use_cache", None)
        model.eval()
        try:
            with torch.no_grad():
                if generates:
                    model.config.use_cache = True
                shard = current_shard()
                mine = self.items[shard.rank :: shard.world]
                run = answer_items(
                    HFEngine(model, self.tokenizer, self.backbone),
                    self.task,
                    mine,
                    self.settings,
                    progress=False,
                )
        finally:
            if use_cache is not None:
                model.config.use_cache = use_cache
            model.train(was_training)
        pairs = [(it.id, out) for it, out in zip(mine, run.outputs, strict=True)]
        if not shard.alone:  # each process answered its share: every process gets them all
            from accelerate.utils import gather_object

            pairs = gather_object(pairs)
        outputs = dict(pairs)
        report = self.task.dev_evaluate(self.items, outputs)
        report = {
            **report,
            "answered_per_process": [len(self.items[r :: shard.world]) for r in range(shard.world)],
        }
        if generates:
            report = {
                **report,
                "n": len(self.items),
                "examples": [{"id": it.id, "prediction": outputs[it.id]} for it in self.items[:5]],
            }
        self.reports.append(report)
        return {self.metric: float(report[self.metric])}


def dev_answer_settings(
    script: CommonArguments, spec: PromptSpec, max_length: int | None, config: Any
) -> AnswerSettings:
    """How dev items are answered during training: as prediction would, with the run's prompt
    and budget (letter scoring; greedy decoding of ``eval_max_new_tokens``)."""
    return AnswerSettings(
        prompt=spec,
        max_length=max_length,
        batch_size=config.per_device_eval_batch_size,
        generation=GenerationSettings(max_new_tokens=script.eval_max_new_tokens),
    )


def load_dev_items(task: Task, script: CommonArguments) -> list:
    """The dev items the task metric is computed on: ``dev_eval_items`` of them, else the
    task's default (all for a choice task, the first 50 for a generation task)."""
    if not script.dev_file:
        return []
    items = load_items(script.dev_file, task, require_output=True)
    limit = script.dev_eval_items or task.dev_eval_items
    return items[:limit] if limit else items
