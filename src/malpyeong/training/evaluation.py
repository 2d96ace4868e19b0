"""The task's own dev metric during training, answered by the same path prediction uses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from malpyeong.data import load_items
from malpyeong.device import model_device
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import GenerationSettings, HFEngine
from malpyeong.inference.shard import Shard, current_shard
from malpyeong.models.backbones import Backbone
from malpyeong.tasks.base import PromptSpec, Task
from malpyeong.training.recipe import CommonArguments


@dataclass
class TaskEvaluator:
    """The task's dev metric (:attr:`~malpyeong.tasks.base.Task.dev_metric`), computed on the
    model being trained: the dev items are answered by :func:`malpyeong.inference.answer.answer_items`
    (option scoring, or generation) and scored by the task's ``dev_evaluate``. Under several
    processes each answers its share of the items once and all get every answer, so every
    process sees the same metric (best checkpoint, early stopping).

    Every process also makes the same number of model calls, which DeepSpeed ZeRO-3 requires
    (each forward pass gathers the sharded weights from all processes): the shares are padded
    to equal size with repeats whose answers are dropped (so ``generate`` runs as many batches
    everywhere; transformers keeps their steps in lock-step with ``synced_gpus``), and a process
    that made fewer forward passes (option scoring plans its batches per share) makes the
    missing ones on a one-token input. ``model_calls_per_process`` in the report shows it.

    Under ZeRO-3 those missing passes would come too late: learning how many calls the others
    made is itself a collective, which a process still in its own forward passes (each one an
    all-gather of the weights) would meet out of order. So under ZeRO-3 every process answers
    every item: the same plan, the same calls in the same order, by construction (the dev
    metric is not split across the GPUs there)."""

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
                everything = not shard.alone and zero3_enabled()
                mine = list(self.items) if everything else share(self.items, shard)
                with counted_calls(model) as calls:
                    run = answer_items(
                        HFEngine(model, self.tokenizer, self.backbone),
                        self.task,
                        mine,
                        self.settings,
                        progress=False,
                    )
                    if not shard.alone and not everything:
                        even_out(model, self.tokenizer, calls)
        finally:
            if use_cache is not None:
                model.config.use_cache = use_cache
            model.train(was_training)
        answered = [len(self.items[r :: shard.world]) for r in range(shard.world)]
        real = len(mine) if everything else answered[shard.rank]  # the repeats after them are dropped
        pairs = [(it.id, out) for it, out in zip(mine[:real], run.outputs[:real], strict=True)]
        counts = [dict(calls)]
        if not shard.alone:  # each process answered its share: every process gets them all
            from accelerate.utils import gather_object

            if not everything:
                pairs = gather_object(pairs)
            counts = gather_object(counts)  # after the same calls everywhere: in step
        outputs = dict(pairs)
        report = self.task.dev_evaluate(self.items, outputs)
        report = {
            **report,
            "answered_per_process": [len(self.items)] * shard.world if everything else answered,
            "model_calls_per_process": counts,
        }

        if generates:
            report = {
                **report,
                "n": len(self.items),
                "examples": [{"id": it.id, "prediction": outputs[it.id]} for it in self.items[:5]],
            }
        self.reports.append(report)
        return {self.metric: float(report[self.metric])}


def zero3_enabled() -> bool:
    """Whether the trainer in this process shards its weights with DeepSpeed ZeRO-3 (what
    transformers asks to turn on ``synced_gpus``)."""
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # no DeepSpeed integration: no ZeRO-3
        return False
    return bool(is_deepspeed_zero3_enabled())


def share(items: Sequence[Any], shard: Shard) -> list:
    """This process's items (every ``world``-th), padded to the largest share's size with
    repeats of its own first items (of the first item when it has none)."""
    mine = list(items[shard.rank :: shard.world])
    size = -(-len(items) // shard.world)
    source = mine or list(items[:1])
    while source and len(mine) < size:
        mine += source[: size - len(mine)]
    return mine


@contextmanager
def counted_calls(model: Any) -> Iterator[dict[str, int]]:
    """Count the calls made on ``model`` in the block: ``generate`` calls, and forward passes
    outside them (option scoring, reference log-likelihoods)."""
    calls = {"generate": 0, "forward": 0}
    inside = [False]
    real_generate = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        calls["generate"] += 1
        inside[0] = True
        try:
            return real_generate(*args, **kwargs)
        finally:
            inside[0] = False

    def count(module: Any, args: Any) -> None:
        if not inside[0]:
            calls["forward"] += 1

    own = model.__dict__.get("generate")  # an instance attribute already (a wrapper): put back
    hook = model.register_forward_pre_hook(count)
    model.generate = generate
    try:
        yield calls
    finally:
        hook.remove()
        if own is None:
            del model.generate
        else:
            model.generate = own


def even_out(model: Any, tokenizer: Any, calls: dict[str, int]) -> None:
    """Make the calls other processes made and this one did not (one-token inputs), so that
    every process ends the evaluation with the same ``generate`` and forward counts."""
    import torch
    from accelerate.utils import gather_object

    everyone = gather_object([dict(calls)])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    ids = torch.tensor([[pad]], device=device)
    mask = torch.ones_like(ids)
    for _ in range(max(c["generate"] for c in everyone) - calls["generate"]):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, pad_token_id=pad)
    for _ in range(max(c["forward"] for c in everyone) - calls["forward"]):
        model(input_ids=ids, attention_mask=mask)


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
