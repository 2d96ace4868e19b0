"""The engine of a model trained with a classification head (``--objective classification``).

It answers a choice task as a letter-scoring model does, through
:func:`malpyeong.inference.answer.answer_items`: the same fitted prompts (every option order with
``--permute``), probabilities over the options in the file's original order, one
:class:`~malpyeong.inference.scoring.ItemScore` per item. So its results file and sidecar are the same
as a letter-scored model's, and vote, soft-vote and select with them. The probabilities are the
softmax of the head's logits, read at each prompt's last token; batches are right-padded as in
training, so no prompt token sees padding and the answers do not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from malpyeong.cli import progress_bar
from malpyeong.device import model_device
from malpyeong.errors import UserError
from malpyeong.inference.engines import Engine, GenerationSettings
from malpyeong.inference.scoring import ChoicePrompts, ItemScore, softmax, unpermute
from malpyeong.inference.shard import ALONE, Shard
from malpyeong.models.backbones import Backbone
from malpyeong.tasks.base import ChoiceTask, TaskItem

OBJECTIVE = "classification"


def is_classifier_run(run: dict) -> bool:
    """Whether a run file describes a classification-head run."""
    return run.get("objective") == OBJECTIVE


def check_head_scoring(run: dict, scoring: str) -> None:
    """Before loading: a classification run scores through its head, not by letter or loglik."""
    if is_classifier_run(run) and scoring != "letter":
        raise UserError(
            f"a classification head scores the options itself; --scoring {scoring} is for language models",
            field="scoring",
        )


def head_probs(model: Any, rows: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
    """Softmax of the head over the options for each token sequence (one forward pass)."""
    import torch

    for row in rows:
        if row and row[-1] == pad_id:
            raise UserError(
                "a prompt ends with the pad token: the head cannot find its last token",
                field="model",
                hint="give the tokenizer a distinct pad token",
            )
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[r, : len(row)] = 1
    device = model_device(model)
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return np.stack([softmax(row) for row in logits.double().cpu().numpy()])


@dataclass
class ClassifierEngine(Engine):
    """A sequence classifier over a choice task's options (its head's softmax as the scores)."""

    model: Any
    tokenizer: Any
    backbone: Backbone
    name: str = "hf"  # answers as the transformers engine does; the results header says so

    def score(
        self,
        task: ChoiceTask,
        items: Sequence[TaskItem],
        prompts: ChoicePrompts,
        *,
        scoring: str,
        batch_size: int,
        done: Collection[int] = (),
        on_item: Callable[[int, ItemScore], None] | None = None,
        progress: bool = True,
        shard: Shard = ALONE,
    ) -> list[ItemScore | None]:
        check_head_scoring({"objective": OBJECTIVE}, scoring)
        n_out = getattr(getattr(self.model, "config", None), "num_labels", task.n_choices)
        if n_out != task.n_choices:
            raise UserError(
                f"the head has {n_out} outputs, task {task.name} has {task.n_choices} options", field="model"
            )
        orders = prompts.orders
        per_batch = max(1, batch_size // len(orders))  # an item's option orders stay together
        order = sorted(range(len(items)), key=lambda i: (-len(prompts.fitted[i][0].input_ids), i))
        units = [order[lo : lo + per_batch] for lo in range(0, len(order), per_batch)]
        mine = shard.batches(units)
        done_set = set(done)
        results: list[ItemScore | None] = [None] * len(items)
        todo = [u for k, u in enumerate(units) if k in mine and not set(u) <= done_set]
        bar = progress_bar(
            sum(len(u) for k, u in enumerate(units) if k in mine),
            progress,
            "score (head)",
            initial=sum(len(set(u) & done_set) for k, u in enumerate(units) if k in mine),
        )
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        if getattr(self.model, "training", False):
            self.model.eval()
        try:
            for unit in todo:
                rows = [prompts.fitted[i][k].input_ids for i in unit for k in range(len(orders))]
                probs = head_probs(self.model, rows, pad)
                for n, i in enumerate(unit):
                    if i in done_set:
                        continue
                    mean = np.zeros(task.n_choices, dtype=np.float64)
                    for k, shown in enumerate(orders):
                        mean += unpermute(probs[n * len(orders) + k], shown)
                    results[i] = ItemScore(mean / len(orders))
                    if on_item is not None:
                        on_item(i, results[i])
                    bar.update(1)
        finally:
            bar.close()
        return results

    def generate(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        *,
        batch_size: int,
        done: Collection[int] = (),
        on_result: Callable[[int, str], None] | None = None,
        progress: bool = True,
        shard: Shard = ALONE,
    ) -> list[str]:
        raise UserError(
            "a classification head does not generate text",
            field="model",
            hint="use a model trained with --objective sft for generation",
        )


__all__ = ["OBJECTIVE", "ClassifierEngine", "check_head_scoring", "head_probs", "is_classifier_run"]
