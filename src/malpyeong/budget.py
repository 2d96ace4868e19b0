"""The length budget: fit a prompt into the model's max length by cutting conversation only.

The question and options are never cut. CCI drops the utterances farthest from the reference
utterances first; DCS drops from the middle outwards (the task's ``drop_order``). The number of
utterances to drop is found by bisection on the rendered token count, so an item costs
O(log n) renders instead of n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from malpyeong.backbones import Backbone, encode, render_chat
from malpyeong.tasks.base import PromptSpec, Task, Utterance

OMITTED = Utterance("", "…")  # stands where utterances were cut, so the model sees a gap


@dataclass
class FittedPrompt:
    item_id: str
    text: str
    input_ids: list[int]
    dropped: int  # utterances cut to fit (0 when the prompt fitted)
    fits: bool  # False when even the shortest form is over budget


def _cut(task: Task, item: Any, order: list[int], k: int) -> Any:
    if k == 0:
        return item
    gone = set(order[:k])
    conv: list[Utterance] = []
    for i, u in enumerate(item.conversation):
        if i in gone:
            if not conv or conv[-1] is not OMITTED:
                conv.append(OMITTED)
        else:
            conv.append(u)
    return task.with_conversation(item, tuple(conv))


def fit_prompt(task: Task, item: Any, tokenizer: Any, backbone: Backbone, spec: PromptSpec,
               max_length: int | None = None, *, reserve: int = 0,
               add_generation_prompt: bool = True) -> FittedPrompt:
    """Render ``item``'s prompt; if longer than ``max_length - reserve`` tokens, cut utterances.

    ``reserve`` keeps room for what follows the prompt (the answer, or generated tokens).
    """

    def render(it: Any) -> tuple[str, list[int]]:
        text = render_chat(tokenizer, task.messages(it, spec), backbone,
                           add_generation_prompt=add_generation_prompt)
        return text, encode(tokenizer, text)

    text, ids = render(item)
    if max_length is None or len(ids) <= max_length - reserve:
        return FittedPrompt(item.id, text, ids, 0, True)
    budget = max_length - reserve
    order = task.drop_order(item)
    lo, hi = 1, len(order)  # smallest k that fits lies in [lo, hi]
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        t, i = render(_cut(task, item, order, mid))
        if len(i) <= budget:
            best, hi = (mid, t, i), mid - 1
        else:
            lo = mid + 1
    if best is None:
        t, i = render(_cut(task, item, order, len(order)))
        return FittedPrompt(item.id, t, i, len(order), False)
    k, t, i = best
    return FittedPrompt(item.id, t, i, k, True)
