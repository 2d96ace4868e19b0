"""Sequence-level knowledge distillation: a teacher writes training targets for a student.

DCS: the teacher summarises each dialogue; the cleaned summary becomes a completion.
CCI: the teacher answers with the task's ``cot`` prompt (a short rationale, then ``정답: X``);
a rationale is kept only when the teacher's answer is the gold one, and the completion is the
task's own CoT target (``<rationale>\\n정답: <gold letter>``), so a student trained on it learns
reasoning that led to the right answer.

The generation itself is injected (``generate``: items → texts), so the logic here is tested
with a stub teacher; :func:`engine_generate` binds the answering path on a loaded model.

Output records, one per kept item, in the trainer's prompt–completion format::

    {"id": <item id>, "prompt_messages": [system, user], "completion": "...",
     "source": "distill", "task": <the task name>}

``id`` is the id of the item the record was made from, so gold and teacher records of one item
can be told apart only by ``source``.

Resume: every teacher output is appended to a raw JSONL file (``OUT.raw.jsonl``, first line a
``{"_meta": ...}`` header with the settings; :func:`malpyeong.io.open_resume`); a rerun skips
the ids already there and refuses to mix outputs made with other settings. The raw file stays
after the run, so changing only the post-processing never needs the teacher again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from malpyeong.cli import progress_bar
from malpyeong.errors import UserError
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import Engine
from malpyeong.tasks.base import PromptSpec, Task, TaskItem, chat_messages

log = logging.getLogger(__name__)

# prompts (whatever the bound engine takes: items here) -> one raw text per prompt
Generate = Callable[[list[Any]], list[str]]
SOURCE = "distill"


# ---------------------------------------------------------------------------------------------
# distillation


def run_teacher(
    items: Sequence[TaskItem],
    generate: Generate,
    *,
    done: dict[str, dict] | None = None,
    on_row: Callable[[dict], None] | None = None,
    chunk_size: int = 32,
    length: Callable[[Any], int] | None = None,
    show_progress: bool = True,
) -> dict[str, dict]:
    """Teacher text for every item not in ``done``: ``{id: {"id", "text"}}`` for all items.

    Items go to ``generate`` in chunks of ``chunk_size`` (longest first by ``length``, so
    batches are even and an out-of-memory shows at once); each chunk's rows are reported to
    ``on_row`` (the raw-file writer) as soon as it is done.
    """
    rows = {k: v for k, v in (done or {}).items()}
    pending = [it for it in items if it.id not in rows]
    if length is not None:
        pending.sort(key=lambda it: -length(it))
    bar = progress_bar(len(items), show_progress, "teacher", initial=len(items) - len(pending))
    try:
        for lo in range(0, len(pending), chunk_size):
            chunk = pending[lo : lo + chunk_size]
            texts = generate(chunk)
            if len(texts) != len(chunk):
                raise RuntimeError(f"generate returned {len(texts)} texts for {len(chunk)} prompts")
            for it, text in zip(chunk, texts, strict=True):
                row = {"id": it.id, "text": text}
                rows[it.id] = row
                if on_row is not None:
                    on_row(row)
            bar.update(len(chunk))
    finally:
        bar.close()
    return rows


def build_records(
    task: Task, items: Sequence[TaskItem], texts: dict[str, str], *, prompt: str | None = None
) -> tuple[list[dict], dict]:
    """Training records from teacher texts, and a report of what was kept and why not.

    The task decides (:meth:`~malpyeong.tasks.base.Task.distill_completion`): CCI keeps a
    rationale when the teacher's answer is the gold one; a generate task keeps what its output
    parser accepts.
    """
    spec = student_prompt(task, prompt)
    records: list[dict] = []
    why: dict[str, str] = {}
    for it in items:
        text = texts.get(it.id)
        if text is None:
            why[it.id] = "missing"
            continue
        completion, reason = task.distill_completion(it, text)
        if completion is None:
            why[it.id] = reason
            continue
        records.append(
            {
                "id": it.id,
                "prompt_messages": chat_messages(task, it, spec),
                "completion": completion,
                "source": SOURCE,
                "task": task.name,
            }
        )
    counts = dict(Counter(why.values()))
    report = {
        "task": task.name,
        "prompt": str(spec),
        "n_items": len(items),
        "n_kept": len(records),
        "dropped": counts,
        "dropped_ids": why,
    }
    if task.distill_needs_gold:
        unanswered = counts.get("missing", 0) + counts.get("no_answer", 0)
        right = len(items) - unanswered - counts.get("wrong_answer", 0)
        report["teacher_accuracy"] = right / len(items) if items else 0.0
    return records, report


def student_prompt(task: Task, prompt: str | PromptSpec | None) -> PromptSpec:
    """The prompt variant teacher and student share: the given one plus the task's
    ``distill_flags`` (CCI: ``cot``, so the teacher writes its reasoning)."""
    spec = task.prompt_spec(prompt)
    return replace(spec, flags=spec.flags | task.distill_flags)


def distill(
    task: Task,
    items: Sequence[TaskItem],
    generate: Generate,
    *,
    prompt: str | None = None,
    done: dict[str, dict] | None = None,
    on_row: Callable[[dict], None] | None = None,
    chunk_size: int = 32,
    show_progress: bool = True,
) -> tuple[list[dict], dict]:
    """Run the teacher on ``items`` (skipping ``done``) and build the kept training records."""
    if task.distill_needs_gold:
        missing = [it.id for it in items if not task.has_output(it)]
        if missing:
            raise UserError(
                f"{len(missing)} item(s) have no gold answer, e.g. {missing[0]}",
                field="output",
                hint=f"{task.name} distillation checks the teacher against gold: give a training file",
            )

    def size(it: Any) -> int:
        return sum(len(line) for line in task.dialogue_lines(it))

    rows = run_teacher(
        items,
        generate,
        done=done,
        on_row=on_row,
        chunk_size=chunk_size,
        length=size,
        show_progress=show_progress,
    )
    return build_records(task, items, {k: r["text"] for k, r in rows.items()}, prompt=prompt)


# ---------------------------------------------------------------------------------------------
# the real teacher


def engine_generate(engine: Engine, task: Task, settings: AnswerSettings) -> Generate:
    """``generate(items)`` on a loaded teacher: the answering path in generation mode, so the
    teacher's prompts are fitted and decoded exactly as prediction does it."""
    settings = replace(settings, generate=True)

    def generate(items: list[TaskItem]) -> list[str]:
        run = answer_items(engine, task, items, settings, progress=False)
        if run.over_budget:
            log.warning("%d prompt(s) stay over --max_length after cutting the dialogue", run.over_budget)
        return [a.sidecar["text"] for a in run.answers]

    return generate
