"""The length budget: fit a prompt into the model's max length by cutting conversation only.

The question and options are never cut. CCI drops the utterances farthest from the reference
utterances first; DCS drops from the middle outwards (the task's ``drop_order``); a task whose
unit is not an utterance says what may go through :meth:`~malpyeong.tasks.base.Task.cuts`
(QA: chunks of its document). The number of units to drop is found by bisection on the
rendered token count, so an item costs O(log n) renders instead of n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from malpyeong.models.backbones import Backbone, encode, render_chat
from malpyeong.tasks.base import OMITTED, PromptSpec, Task, TaskItem, chat_messages

__all__ = ["OMITTED", "FittedPrompt", "fit_prompt"]  # OMITTED: the cut mark, now defined with the tasks


@dataclass
class FittedPrompt:
    item_id: str
    text: str
    input_ids: list[int]
    dropped: int  # units (utterances, chunks) cut to fit (0 when the prompt fitted)
    fits: bool  # False when even the shortest form is over budget
    full_tokens: int = 0  # the prompt's length before anything was cut


def fit_prompt(
    task: Task,
    item: TaskItem,
    tokenizer: Any,
    backbone: Backbone,
    spec: PromptSpec,
    max_length: int | None = None,
    *,
    reserve: int = 0,
    add_generation_prompt: bool = True,
) -> FittedPrompt:
    """Render ``item``'s prompt; if longer than ``max_length - reserve`` tokens, cut utterances.

    ``reserve`` keeps room for what follows the prompt (the answer, or generated tokens).
    """

    def render(it: Any) -> tuple[str, list[int]]:
        text = render_chat(
            tokenizer, chat_messages(task, it, spec), backbone, add_generation_prompt=add_generation_prompt
        )
        return text, encode(tokenizer, text)

    text, ids = render(item)
    if max_length is None or len(ids) <= max_length - reserve:
        return FittedPrompt(item.id, text, ids, 0, True, len(ids))
    budget = max_length - reserve
    cuts = task.cuts(item, spec)
    lo, hi = 1, cuts.count  # smallest k that fits lies in [lo, hi]
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        t, i = render(cuts.apply(mid))
        if len(i) <= budget:
            best, hi = (mid, t, i), mid - 1
        else:
            lo = mid + 1
    if best is None:
        t, i = render(cuts.apply(cuts.count))
        return FittedPrompt(item.id, t, i, cuts.count, False, len(ids))
    k, t, i = best
    return FittedPrompt(item.id, t, i, k, True, len(ids))
