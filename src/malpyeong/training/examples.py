"""Training examples: token ids built from the task's items and from extra chat records.

Why the datasets are token ids built here rather than chat messages handed to trl: the prompt a
model is trained on must be exactly the prompt prediction feeds it: rendered by
:func:`malpyeong.models.backbones.render_chat` (the system turn folded for Gemma, whose template rejects
it), encoded once without a second BOS, and cut by the length budget
(:func:`malpyeong.models.budget.fit_prompt`). The completion is the task's target followed by what the
chat template writes after an assistant turn up to its end-of-turn token (``<end_of_turn>``,
``<|eot_id|>``, ``<|im_end|>``, or EOS for templates without one), exactly once. The loss covers
only the completion.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from malpyeong.data import item_label, load_items, read_records
from malpyeong.errors import UserError
from malpyeong.inference.routing import select_items
from malpyeong.models.backbones import (  # noqa: F401 - the affix helpers are re-exported
    SENTINEL,
    Backbone,
    assistant_affixes,
    completion_ids,
    encode,
    render_chat,
)
from malpyeong.models.budget import fit_prompt
from malpyeong.tasks.base import ChoiceTask, PromptSpec, Task, TaskItem
from malpyeong.training.evaluation import load_dev_items
from malpyeong.training.recipe import SFTArguments

log = logging.getLogger(__name__)


@dataclass
class BudgetStats:
    """How the length budget treated a split's prompts."""

    items: int = 0
    examples: int = 0
    prompts_cut: int = 0  # prompts that lost utterances to fit max_length
    over_budget: int = 0  # examples dropped: even the shortest prompt + completion did not fit
    tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def option_orders(n: int, copies: int, key: str, seed: int) -> list[tuple[int, ...]]:
    """``copies`` distinct non-identity orders of ``n`` options, the same for a given item key."""
    perms = [p for p in itertools.permutations(range(n)) if p != tuple(range(n))]
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return rng.sample(perms, min(copies, len(perms)))


def augment_options(
    task: ChoiceTask, items: Sequence[TaskItem], copies: int = 1, seed: int = 0
) -> list[TaskItem]:
    """Each item, then ``copies`` versions with its options permuted (the label moves with them)."""
    out: list[Any] = []
    for item in items:
        out.append(item)
        for order in option_orders(task.n_choices, copies, item.id, seed):
            out.append(task.permuted(item, order))
    return out


def training_items(task: Task, script: SFTArguments, seed: int) -> tuple[list[Any], int, list[Any]]:
    """The recipe's training items (its category only, capped at ``max_train_items``, then
    option-order copies), how many there were before the copies, and its dev items (same
    category)."""
    items = load_items(script.train_file, task, require_output=True)
    items = select_items(task, items, script.category, file=script.train_file)
    if script.max_train_items:
        items = items[: script.max_train_items]
    n_items = len(items)
    if script.shuffle_options:
        items = augment_options(task, items, script.shuffle_copies, seed)
    dev_items = select_items(
        task, load_dev_items(task, script), script.category, file=script.dev_file, required=False
    )
    return items, n_items, dev_items


def build_sft_examples(
    task: Task,
    items: Sequence[TaskItem],
    tokenizer: Any,
    backbone: Backbone,
    spec: PromptSpec,
    max_length: int | None,
    *,
    target_style: str | None = None,
) -> tuple[list[dict], BudgetStats]:
    """Pre-tokenised prompt-completion rows (``input_ids``, ``labels`` = -100 on the prompt)."""
    affixes = assistant_affixes(tokenizer, backbone)
    stats = BudgetStats(items=len(items))
    rows = []
    for item in items:
        done = completion_ids(tokenizer, affixes, task.target_for(item, spec, style=target_style))
        fitted = fit_prompt(task, item, tokenizer, backbone, spec, max_length, reserve=len(done))
        stats.prompts_cut += fitted.dropped > 0
        ids = list(fitted.input_ids) + done
        if not fitted.fits or (max_length is not None and len(ids) > max_length):
            if task.over_budget == "error":
                raise UserError(
                    f"does not fit max_length {max_length} even with every {task.cut_unit} "
                    f"unit cut: prompt {len(fitted.input_ids)} + completion {len(done)} tokens",
                    item=item.id,
                    field="max_length",
                    hint="raise --max_length, or shorten this item's question or answer",
                )
            stats.over_budget += 1
            continue
        rows.append({"id": item.id, "input_ids": ids, "labels": [-100] * len(fitted.input_ids) + done})
        stats.tokens += len(ids)
        stats.completion_tokens += len(done)
    stats.examples = len(rows)
    if stats.over_budget:
        log.warning(
            "%d example(s) dropped: prompt + completion exceed max_length %s even with the conversation cut",
            stats.over_budget,
            max_length,
        )
    return rows, stats


def load_sft_records(path: str | os.PathLike, task: str | None = None) -> list[tuple[str, list[dict], str]]:
    """``(id, prompt messages, completion)`` of each record of a Magpie / distillation file.

    A record that names a task (distillation records do) must name ``task``, when given: a
    distillation file of another task would teach the wrong answer format.
    """
    records = read_records(path)
    if not isinstance(records, list):
        raise UserError("expected JSONL records or a JSON list of them", file=str(path))
    out = []
    for index, rec in enumerate(records):
        label = item_label(rec, index)
        named = rec.get("task") if isinstance(rec, dict) else None
        if task is not None and named is not None and named != task:
            raise UserError(
                f"a record of task {named!r}; this run trains {task!r}",
                file=str(path),
                item=label,
                field="task",
                hint="mix in only records of the run's task (or general ones "
                "without a task, such as Magpie's)",
            )
        if isinstance(rec, dict) and isinstance(rec.get("messages"), list) and rec["messages"]:
            *prompt, last = rec["messages"]
            completion = (
                last.get("content") if isinstance(last, dict) and last.get("role") == "assistant" else None
            )
            where = "messages"
        elif isinstance(rec, dict) and isinstance(rec.get("prompt_messages"), list):
            prompt, completion, where = rec["prompt_messages"], rec.get("completion"), "completion"
        else:
            raise UserError(
                "neither 'messages' nor 'prompt_messages' + 'completion'",
                file=str(path),
                item=label,
                field="messages",
            )
        ok = prompt and all(
            isinstance(m, dict)
            and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str)
            for m in prompt
        )
        if not ok or not isinstance(completion, str) or not completion.strip():
            raise UserError(
                "needs chat turns {role, content} and a final assistant answer",
                file=str(path),
                item=label,
                field=where,
            )
        out.append((label, prompt, completion))
    return out


def build_record_examples(
    records: Sequence[tuple[str, list[dict], str]], tokenizer: Any, backbone: Backbone, max_length: int | None
) -> tuple[list[dict], BudgetStats]:
    """Rows like ``build_sft_examples``'s from chat records; ones over ``max_length`` are dropped
    (their text is free-form, so there is no conversation to cut)."""
    affixes = assistant_affixes(tokenizer, backbone)
    stats = BudgetStats(items=len(records))
    rows = []
    for rid, prompt, completion in records:
        prompt_ids = encode(tokenizer, render_chat(tokenizer, prompt, backbone))
        done = completion_ids(tokenizer, affixes, completion)
        ids = prompt_ids + done
        if max_length is not None and len(ids) > max_length:
            stats.over_budget += 1
            continue
        rows.append({"id": rid, "input_ids": ids, "labels": [-100] * len(prompt_ids) + done})
        stats.tokens += len(ids)
        stats.completion_tokens += len(done)
    stats.examples = len(rows)
    return rows, stats


def mix_extra_rows(
    rows: list[dict],
    script: SFTArguments,
    task: Task,
    tokenizer: Any,
    backbone: Backbone,
    max_length: int | None,
    seed: int,
) -> tuple[list[dict], dict | None]:
    """Gold rows plus the recipe's extra records, by ``extra_train_ratio`` (see :func:`mix`).

    Says per file how many records fit ``max_length`` (the others are dropped: free text has no
    conversation to cut) and how many were mixed in; a file none of whose records fits, or one
    holding records of another task, is refused before any training.
    """
    if not script.extra_train_files:
        return rows, None
    extra: list[dict] = []
    per_file = []
    for path in script.extra_train_files:
        records = load_sft_records(path, task.name)
        built, stats = build_record_examples(records, tokenizer, backbone, max_length)
        if records and not built:
            raise UserError(
                f"none of its {len(records)} record(s) fits max_length {max_length}",
                file=str(path),
                field="extra_train_files",
                hint="raise --max_length, or leave the file out",
            )
        if stats.over_budget:
            log.warning(
                "%s: %d of %d record(s) longer than max_length %s are dropped",
                path,
                stats.over_budget,
                len(records),
                max_length,
            )
        per_file.append(
            {
                "file": str(path),
                "records": len(records),
                "fit": len(built),
                "over_max_length": stats.over_budget,
            }
        )
        extra += built
    ratio = (
        script.extra_train_ratio if script.extra_train_ratio is not None else len(extra) / max(len(rows), 1)
    )
    mixed = mix(rows, extra, ratio, seed)
    mixed_in = len(mixed) - len(rows)
    log.info(
        "extra records: %d of %d fit max_length %s; %d mixed in with %d gold examples (extra_train_ratio %s)",
        len(extra),
        sum(f["records"] for f in per_file),
        max_length,
        mixed_in,
        len(rows),
        script.extra_train_ratio or "all",
    )
    info = {
        "items": sum(f["records"] for f in per_file),
        "examples": len(extra),
        "over_budget": sum(f["over_max_length"] for f in per_file),
        "files": list(script.extra_train_files),
        "per_file": per_file,
        "mixed_in": mixed_in,
    }
    return mixed, info


def mix(records_a: Sequence[dict], records_b: Sequence[dict], ratio: float, seed: int = 0) -> list[dict]:
    """All of ``records_a`` plus ``round(ratio * len(records_a))`` records drawn from
    ``records_b`` without replacement (all of them when there are fewer), shuffled with ``seed``.

    ``ratio`` is synthetic per gold record: 0.5 adds one Magpie record for every two gold ones.
    """
    if ratio < 0:
        raise UserError(f"mix ratio must be >= 0, got {ratio}", field="ratio")
    rng = random.Random(seed)
    want = round(ratio * len(records_a))
    b = list(records_b)
    picked = rng.sample(b, min(want, len(b)))
    out = list(records_a) + picked
    rng.shuffle(out)
    return out
