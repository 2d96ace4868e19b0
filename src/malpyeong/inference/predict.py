"""Prediction jobs: answer every item with a model, resumably, into results files.

:class:`PredictionJob` is what ``run/test.py`` (plain or routed to experts), ``run/compare.py``,
``run/memory.py`` and the ensemble entry run: the model source, the engine and how it is loaded,
the :class:`~malpyeong.inference.answer.AnswerSettings` (the run folder's prompt and budget as
defaults), routing or not, the output paths and their checks, and resuming are resolved here,
once, so those callers cannot drift apart.

The answers come from the one answering path (:func:`malpyeong.inference.answer.answer_items`).
Results follow :mod:`malpyeong.inference.results`: one row per item is appended to the partial
sidecar as soon as the item is finished; a rerun skips the finished items (the work plan is the
same, so recomputed rows are bit-identical); both final files are written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from malpyeong import __version__
from malpyeong.data import load_items, write_submission
from malpyeong.device import check_device
from malpyeong.errors import UserError
from malpyeong.inference.answer import Answer, AnswerRun, AnswerSettings, answer_items, default_batch_size
from malpyeong.inference.classifier import check_head_scoring
from malpyeong.inference.engines import Engine, GenerationSettings
from malpyeong.inference.loading import (
    ModelSource,
    check_generates,
    check_run_task,
    load_engine,
    resolve_source,
)
from malpyeong.inference.results import partial_path, partial_paths, sidecar_path
from malpyeong.inference.routing import Route, plan_routes, route_complete, route_dir, write_routed
from malpyeong.inference.shard import ALONE, Shard, barrier
from malpyeong.io import JsonlAppender, atomic_write_text, check_distinct, ensure_writable, read_jsonl
from malpyeong.tasks.base import Task, TaskItem

log = logging.getLogger(__name__)


@dataclass
class PredictSummary:
    n: int
    resumed: int
    cut: int
    over_budget: int
    seconds: float
    output: Path
    sidecar: Path
    cut_tokens: tuple[int, int] = (0, 0)  # the cut prompts' tokens before and after cutting
    max_length: int | None = None  # the budget the prompts were fitted to

    @property
    def items_per_s(self) -> float:
        done = self.n - self.resumed
        return done / self.seconds if self.seconds > 0 else math.inf


def _resumed_rows(
    output: Path, meta: dict, overwrite: bool, shard: Shard, own: JsonlAppender | None = None
) -> dict[str, dict]:
    """Rows already in the partial files (by id), after checking they belong to this run.

    The first process checks (and with ``overwrite`` removes) stale files before the others
    read, so no process reads a file that is being deleted; its own file (``own``, already open
    and locked) is emptied rather than removed.
    """
    if shard.rank == 0:
        for part in partial_paths(output):
            rows = read_jsonl(part)
            if rows and rows[0].get("_meta") != meta:
                if not overwrite:
                    raise UserError(
                        "a partial result file from a different run exists",
                        file=str(part),
                        hint="delete it, or pass --overwrite to start over",
                    )
                if own is not None and part == own.path:
                    own.reset()
                else:
                    part.unlink()
    barrier(shard)
    have: dict[str, dict] = {}
    for part in partial_paths(output):
        rows = read_jsonl(part)
        if rows and rows[0].get("_meta") != meta:  # another process found it stale
            raise UserError(
                "a partial result file from a different run exists",
                file=str(part),
                hint="delete it, or pass --overwrite to start over",
            )
        have.update((r["id"], r) for r in rows[1:] if "id" in r)
    return have


def run_prediction(
    engine: Engine,
    task: Task,
    items: Sequence[TaskItem],
    output: str | os.PathLike,
    *,
    settings: AnswerSettings | None = None,
    model_name: str = "",
    overwrite: bool = False,
    progress: bool = True,
    shard: Shard = ALONE,
) -> PredictSummary:
    """Answer every item and write ``output`` + its sidecar (resuming from partial files).

    Under ``shard`` (``accelerate launch --num_processes N run/test.py ...``) each process
    answers its share into its own partial file; the first process writes both final files
    once every process is done. The files are byte-identical to a one-process run's.
    """
    settings = settings or AnswerSettings()
    output = Path(output)
    ensure_writable(output, overwrite)
    side = sidecar_path(output)
    ensure_writable(side, overwrite)
    meta = {
        "model": model_name,
        "task": task.name,
        **settings.meta(task, engine.name),
        "malpyeong_version": __version__,
    }
    part = partial_path(output, shard.rank)
    fresh = not part.exists()
    # The first process opens (and locks) its partial file before reading any: a second run
    # writing the same output at once stops here with one line instead of mixing rows.
    lead = JsonlAppender(part) if shard.rank == 0 else None
    try:
        have = _resumed_rows(output, meta, overwrite, shard, lead)
    except BaseException:
        if lead is not None:
            lead.close()
        raise
    ids = [it.id for it in items]
    done = {i for i, it in enumerate(items) if it.id in have}
    start = time.perf_counter()
    with lead or JsonlAppender(part) as out:
        if not part.stat().st_size:
            out.write({"_meta": meta})
        if len(have):
            log.info("resuming: %d of %d items already done", len(done), len(items))

        def write(i: int, answer: Answer) -> None:
            out.write({"id": ids[i], "output": answer.output, **answer.sidecar})

        try:
            run = answer_items(
                engine, task, items, settings, done=done, on_answer=write, progress=progress, shard=shard
            )
        except UserError:
            if fresh and len(read_jsonl(part)) <= 1:  # refused before any answer: leave no file
                part.unlink()
            raise
    seconds = time.perf_counter() - start
    barrier(shard)
    summary = PredictSummary(
        len(items),
        len(done),
        run.cut,
        run.over_budget,
        seconds,
        output,
        side,
        run.cut_tokens,
        settings.max_length,
    )
    if shard.rank == 0:
        _write_final(task, items, meta, output, side)
    barrier(shard)
    return summary


def _write_final(task: Task, items: Sequence[TaskItem], meta: dict, output: Path, side: Path) -> None:
    """Both final files from every process's partial rows, in item order; then no partials."""
    parts = partial_paths(output)
    rows = {r["id"]: r for part in parts for r in read_jsonl(part)[1:] if "id" in r}
    ids = [it.id for it in items]
    missing = [i for i in ids if i not in rows]
    if missing:
        raise RuntimeError(f"{len(missing)} items have no result (e.g. {missing[0]})")
    outputs = {i: rows[i]["output"] for i in ids}
    empty = [
        it.id
        for it in items
        if "text" in rows[it.id]
        and task.parse_output(it, rows[it.id]["text"]) is None
        and task.fallback_output(it) is not None
    ]
    if empty:
        log.warning(
            "%d item(s) generated nothing usable (e.g. %s); their output is the task's fallback %r",
            len(empty),
            empty[0],
            task.fallback_output(items[ids.index(empty[0])]),
        )
    lines = [json.dumps({"_meta": meta}, ensure_ascii=False)]
    lines += [json.dumps(rows[i], ensure_ascii=False) for i in ids]
    atomic_write_text(side, "\n".join(lines) + "\n")
    write_submission(list(items), outputs, output, overwrite=True)
    for part in parts:
        part.unlink()


# ------------------------------------------------------------------------------- the job


@dataclass
class RoutedSummary:
    """What a routed prediction did: which expert answered how many items."""

    n: int
    routes: list[Route]
    output: Path
    sidecar: Path


@dataclass
class PredictionJob:
    """One prediction: ``model`` answers ``task``'s items into ``output`` (+ its sidecar).

    A value left None takes its default where the model is known: the prompt variant and
    ``max_length`` from the run folder (else baseline, and the model's context size),
    ``batch_size`` from :func:`~malpyeong.inference.answer.default_batch_size`. With ``route``,
    ``model`` is a folder of experts (:mod:`malpyeong.inference.routing`): each item is answered
    by its expert, or by ``fallback``, into one results file.
    """

    task: Task
    model: str  # hub id, model folder, adapter folder, run folder; with route: a folder of experts
    output: str | os.PathLike | None = None  # results file (None: answer() only)
    input: str | os.PathLike | None = None  # the data file: read by run(), never written over
    prompt: str | None = None  # prompt variant (None: the run's, else baseline)
    system_prompt: str | None = None  # exact system prompt text replacing the task's
    max_length: int | None = None  # token budget (None: the run's, else the model's context)
    batch_size: int | None = None  # None: default_batch_size
    scoring: str = "letter"
    permute: bool = False
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    constrain: bool = True
    engine: str = "hf"
    dtype: str | None = "auto"
    device: str | None = None
    load_in_4bit: bool = False
    trust_remote_code: bool | None = None
    tensor_parallel_size: int = 1
    route: str | None = None  # routing field: model is a folder of experts
    fallback: str | None = None  # with route: the model for items without an expert
    model_name: str | None = None  # what the sidecar header calls the model (default: model)
    overwrite: bool = False
    progress: bool = True
    shard: Shard = ALONE
    log: logging.Logger = field(default=log, repr=False)  # where progress notes go

    # ----- settings, resolved once per model source -----
    def source_of(self, model: str, *, expert: bool = False) -> ModelSource:
        """``model`` resolved, refused when its run was trained for another task or when it
        cannot write text (an encoder folder): before anything is loaded."""
        source = resolve_source(model)
        trained = source.run.get("task")
        if expert and trained and trained != self.task.name:
            raise UserError(
                f"expert trained for task {trained}, not {self.task.name}", file=model, field="model"
            )
        check_run_task(source, self.task.name)
        check_generates(source)
        return source

    def settings_for(self, source: ModelSource) -> AnswerSettings:
        """The answer settings for ``source`` before it is loaded: the run's prompt variant
        and max_length where none was given; what cannot apply to the task is refused."""
        spec = self.task.prompt_spec(self.prompt or source.defaults.get("prompt") or "baseline")
        settings = AnswerSettings(
            prompt=replace(spec, system=self.system_prompt),
            max_length=self.max_length or source.defaults.get("max_length"),
            scoring=self.scoring,
            permute=self.permute,
            generation=self.generation,
            batch_size=self.batch_size or 8,
            constrain=self.constrain,
        )
        settings.check_for(self.task, self.engine)
        check_head_scoring(source.run, self.scoring)
        return settings

    def load(self, source: ModelSource, settings: AnswerSettings) -> Engine:
        """The engine for ``source`` (through :mod:`malpyeong.inference.loading`)."""
        return load_engine(
            source,
            engine=self.engine,
            dtype=self.dtype,
            device=self.device,
            load_in_4bit=self.load_in_4bit,
            trust_remote_code=self.trust_remote_code,
            seed=self.generation.seed,
            tensor_parallel_size=self.tensor_parallel_size,
            structured=settings.constrain and self.task.output_schema() is not None,
        )

    def finish(self, settings: AnswerSettings, engine: Engine, *, context: bool = True) -> AnswerSettings:
        """The defaults that need the loaded model: the batch size, and (``context``; no
        max_length given or recorded) the model's context as the budget. A routed expert keeps
        its run's budget: whether its results file is complete is decided before it loads."""
        if self.batch_size is None:
            settings = replace(
                settings, batch_size=default_batch_size(self.task, getattr(engine, "model", None))
            )
        if context and settings.max_length is None and engine.context_size():
            # a bare model: its context is the budget (the conversation is cut to fit it)
            settings = replace(settings, max_length=engine.context_size())
            self.log.info("no --max_length: using the model's context size, %d tokens", settings.max_length)
        return settings

    def meta(self, model: str, settings: AnswerSettings) -> dict:
        """The sidecar header of ``model``'s answers under ``settings``."""
        return {
            "model": model,
            "task": self.task.name,
            **settings.meta(self.task, self.engine),
            "malpyeong_version": __version__,
        }

    def check_output(self) -> None:
        """Before any work: the results file and its sidecar (neither the input, both writable)
        and the device."""
        output = self._output()
        check_distinct(
            [("--output", output), ("its sidecar", sidecar_path(output))], [("--input", self.input)]
        )
        check_device(self.device)
        ensure_writable(output, self.overwrite)
        ensure_writable(sidecar_path(output), self.overwrite)

    # ----- running -----
    def answer(self, items: Sequence[TaskItem]) -> AnswerRun:
        """Answer ``items`` with no results file (``run/memory.py``)."""
        source = self.source_of(self.model)
        settings = self.settings_for(source)
        engine = self.load(source, settings)
        return answer_items(engine, self.task, items, self.finish(settings, engine), progress=self.progress)

    def run(self, items: Sequence[TaskItem] | None = None) -> PredictSummary | RoutedSummary:
        """Predict ``items`` (default: read from ``input``) into ``output``, resuming."""
        if self.route:
            return self._run_routed(items)
        if self.fallback:
            raise UserError("--fallback is for --route", field="fallback")
        source = self.source_of(self.model)
        settings = self.settings_for(source)
        items = self._items(items)
        self.check_output()
        output = self._output()
        shown = {k: v for k, v in settings.meta(self.task, self.engine).items() if k != "prompt"}
        self.log.info(
            "task %s, %d items%s; prompt %s; %s",
            self.task.name,
            len(items),
            f" from {self.input}" if self.input is not None else "",
            settings.prompt,
            ", ".join(f"{k} {v}" for k, v in shown.items()),
        )
        if partial_path(output).exists():
            self.log.info("found %s: resuming", partial_path(output))
        engine = self.load(source, settings)
        return run_prediction(
            engine,
            self.task,
            items,
            output,
            settings=self.finish(settings, engine),
            model_name=self.model_name or self.model,
            overwrite=self.overwrite,
            progress=self.progress,
            shard=self.shard,
        )

    def _run_routed(self, items: Sequence[TaskItem] | None) -> RoutedSummary:
        """Each route's items answered by its model into ``NAME.route/<value>.json`` (an expert
        whose file is complete is not run again), then one results file and sidecar."""
        items = self._items(items)
        routes = plan_routes(self.model, self.task, items, self.route, self.fallback)
        self.check_output()
        output = self._output()
        parts = route_dir(output)
        parts.mkdir(parents=True, exist_ok=True)
        metas: dict[str, dict] = {}
        rows: dict[str, dict] = {}
        for route in routes:
            source = self.source_of(route.model, expert=True)
            settings = self.settings_for(source)
            mine = [items[i] for i in route.indices]
            part = parts / f"{route.name}.json"
            meta = self.meta(route.model, settings)
            if not route_complete(part, meta, len(mine)):
                self.log.info("%s %s: %d items from %s", self.route, route.name, len(mine), route.model)
                engine = self.load(source, settings)
                run_prediction(
                    engine,
                    self.task,
                    mine,
                    part,
                    settings=self.finish(settings, engine, context=False),
                    model_name=route.model,
                    overwrite=True,
                    progress=self.progress,
                )
                del engine
            for row in read_jsonl(sidecar_path(part))[1:]:
                rows[row["id"]] = {**row, "expert": route.name}
            metas[route.name] = meta
        head = {
            "model": self.model_name or self.model,
            "task": self.task.name,
            "route": self.route,
            "experts": metas,
            "malpyeong_version": __version__,
        }
        write_routed(output, items, rows, head)
        return RoutedSummary(len(items), routes, output, sidecar_path(output))

    def _items(self, items: Sequence[TaskItem] | None) -> Sequence[TaskItem]:
        if items is not None:
            return items
        if self.input is None:
            raise ValueError("PredictionJob.run needs items or an input file")
        return load_items(self.input, self.task)

    def _output(self) -> Path:
        if self.output is None:
            raise ValueError("this PredictionJob has no output file")
        return Path(self.output)


__all__ = ["PredictSummary", "PredictionJob", "RoutedSummary", "run_prediction"]
