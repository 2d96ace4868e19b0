"""``POST /v1/tasks/{task}/predict``: items answered through the same path as ``run/test.py``.

The body holds ``items`` in the task's official input format (read by the task's own parser,
every problem of every item reported), or a bare ``conversation`` (``[{"speaker",
"utterance"}]``), which the task turns into an item itself (:meth:`Task.live_item`: a pasted
dialogue for the memory-state generator). The model answers them with
:func:`~malpyeong.inference.answer.answer_items` under the settings ``run/test.py``'s
prediction job (:class:`~malpyeong.inference.predict.PredictionJob`) resolves for it: the run's
prompt variant and max_length (else the model's context), letter scoring, the task's JSON schema
as a constraint. Each output comes back in the official output format
with what the results sidecar would hold (option probabilities, or the raw generation).

Any registered task is served the same way: nothing here knows a task by name. An ensemble
(``--ensemble NAME=A,B,C``) answers with each member and combines them with ``vote.py``'s code
(:func:`~malpyeong.ensemble.members.combine_members`), saying how each member answered.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from malpyeong.ensemble.members import combine_members, member_results
from malpyeong.errors import UserError, UserErrors
from malpyeong.inference.answer import AnswerRun, AnswerSettings, answer_items
from malpyeong.inference.engines import GenerationSettings
from malpyeong.inference.predict import PredictionJob
from malpyeong.inference.scoring import SCORINGS
from malpyeong.serving.batching import Scheduler
from malpyeong.serving.config import ApiError, Limits
from malpyeong.serving.registry import Ensemble, Registry, Served
from malpyeong.tasks import Task, get_task, task_names
from malpyeong.tasks.base import Utterance

QUIET = logging.getLogger(__name__ + ".job")  # the job's notes are for a terminal, not per request
QUIET.setLevel(logging.WARNING)


class Turn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    speaker: str | int
    utterance: str


class PredictRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    model: str
    items: list[Any] | None = Field(None, min_length=1)
    conversation: list[Turn] | None = Field(None, min_length=1)
    prompt: str | None = Field(None, max_length=200)
    max_new_tokens: int | None = Field(None, ge=1)
    scoring: str | None = None
    permute: bool = False


def find_task(name: str) -> Task:
    try:
        return get_task(name)
    except UserError as err:
        raise ApiError(
            404, f"unknown task '{name[:80]}' ({err.hint})", kind="not_found_error", param="task"
        ) from None


def task_cards() -> list[dict]:
    """The registered tasks, as the web page lists them."""
    cards = []
    for name in task_names():
        task = get_task(name)
        cards.append(
            {
                "name": name,
                "description": task.description,
                "kind": task.kind,
                "combiner": task.combiner,
                "json_output": task.output_schema() is not None,
                "live_reply": task.live_reply,
                "prompt_flags": sorted(task.prompt_flags),
            }
        )
    return cards


def task_example(name: str) -> dict:
    """One made-up item of the task in its official input format (the web page's starting
    point), from the task's own synthetic generator."""
    task = find_task(name)
    try:
        record = task.synthetic_records(1, 0, "test")[0]
    except UserError as err:
        raise ApiError(
            404, f"task {task.name} has no example: {err.problem}", kind="not_found_error"
        ) from None
    return {"task": task.name, "item": record}


def read_items(task: Task, req: PredictRequest, limits: Limits) -> list[Any]:
    """The request's items, each read by the task's parser (every problem, one line each)."""
    if (req.items is None) == (req.conversation is None):
        raise ApiError(400, "give either items (the task's official format) or a conversation", param="items")
    if req.conversation is not None:
        conversation = tuple(Utterance(str(t.speaker), t.utterance) for t in req.conversation)
        return [task.live_item(conversation, item_id="conversation")]
    if len(req.items) > limits.max_items:
        raise ApiError(
            400,
            f"{len(req.items)} items, over this server's limit of {limits.max_items} per request",
            param="items",
        )
    items, errors, seen = [], [], set()
    for index, record in enumerate(req.items):
        label = (
            record.get("id")
            if isinstance(record, dict) and isinstance(record.get("id"), str)
            else f"#{index}"
        )
        problems: list[tuple[str, str]] = []
        item = task.parse_item(record, problems)
        errors += [UserError(p, item=label, field=f) for f, p in problems]
        if item is not None and not problems:
            if item.id in seen:
                errors.append(UserError("duplicate id", item=label, field="id"))
            seen.add(item.id)
            items.append(item)
    if errors:
        raise UserErrors(errors)
    return items


def settings_for(served: Served, task: Task, req: PredictRequest, limits: Limits) -> AnswerSettings:
    """What ``run/test.py`` answers this model with: its prediction job's settings (the run's
    prompt variant and max_length, else baseline and the model's context; the batch size for
    the task and device), with the request's prompt variant, scoring and reply length."""
    asked = req.max_new_tokens or GenerationSettings().max_new_tokens
    if asked > limits.max_new_tokens:
        raise ApiError(
            400,
            f"max_new_tokens {asked} is over this server's limit of {limits.max_new_tokens}",
            param="max_new_tokens",
        )
    if req.scoring is not None and req.scoring not in SCORINGS:
        raise ApiError(
            400, f"unknown scoring '{req.scoring[:40]}' (one of {', '.join(SCORINGS)})", param="scoring"
        )
    job = PredictionJob(
        task=task,
        model=served.name,
        prompt=req.prompt,
        scoring=req.scoring or "letter",
        permute=req.permute,
        generation=GenerationSettings(max_new_tokens=asked),
        engine=served.engine.name,
        progress=False,
        log=QUIET,
    )
    try:  # run/test.py's checks of the model: the task it was trained for, that it writes text
        job.check_source(served.source)
    except UserError as err:  # named as served: the server's folders stay out of its replies
        raise ApiError(400, f"{served.name}: {err.problem}", param="model") from None
    return job.finish(job.settings_for(served.source), served.engine)


def answers(run: AnswerRun, items: list[Any]) -> list[dict]:
    return [
        {"id": it.id, "output": a.output, **a.sidecar}
        for it, a in zip(items, run.answers, strict=True)
        if a is not None
    ]


async def predict(
    scheduler: Scheduler, registry: Registry, task_name: str, req: PredictRequest, limits: Limits
) -> dict:
    task = find_task(task_name)
    target = registry.get(req.model)
    if isinstance(target, Ensemble):
        return await predict_ensemble(scheduler, registry, target, task, req, limits)
    settings = settings_for(target, task, req, limits)
    items = read_items(task, req, limits)
    run = await scheduler.call(lambda: answer_items(target.engine, task, items, settings, progress=False))
    return {
        "object": "prediction",
        "model": target.name,
        "task": task.name,
        "outputs": answers(run, items),
        "usage": {
            "items": len(items),
            "cut": run.cut,
            "over_budget": run.over_budget,
            "unusable": run.unusable,
        },
    }


async def predict_ensemble(
    scheduler: Scheduler,
    registry: Registry,
    ensemble: Ensemble,
    task: Task,
    req: PredictRequest,
    limits: Limits,
) -> dict:
    """Each member answers (its own run's settings, as ``run/test.py`` would), then the answers
    are combined by vote.py's code; every member's answer is in the response."""
    members = [registry.model(m) for m in ensemble.members]
    plans = [(m, settings_for(m, task, req, limits)) for m in members]
    items = read_items(task, req, limits)

    def run_all() -> list[AnswerRun]:
        return [answer_items(m.engine, task, items, s, progress=False) for m, s in plans]

    runs = await scheduler.call(run_all)
    ids = [it.id for it in items]
    results = [
        member_results(m.name, ids, run.outputs, [a.sidecar for a in run.answers])
        for m, run in zip(members, runs, strict=True)
    ]
    combined = combine_members(task, results, items, method=ensemble.method, weights=ensemble.weights)
    outputs = []
    for n, it in enumerate(items):
        votes = {
            m.name: {
                "output": run.answers[n].output,
                **{k: v for k, v in run.answers[n].sidecar.items() if k != "dropped"},
            }
            for m, run in zip(members, runs, strict=True)
        }
        outputs.append(
            {
                "id": it.id,
                "output": combined.outputs[it.id],
                "members": votes,
                "tie": combined.ties.get(it.id),
            }
        )
    return {
        "object": "prediction",
        "model": ensemble.name,
        "task": task.name,
        "ensemble": {
            "members": list(ensemble.members),
            "method": combined.method,
            "weights": ensemble.weights,
        },
        "outputs": outputs,
        "usage": {"items": len(items), "cut": sum(r.cut for r in runs)},
    }


__all__ = ["PredictRequest", "find_task", "predict", "task_cards", "task_example"]
