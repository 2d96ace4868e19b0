"""One model thread, and the batching of requests that arrive together.

Every model call of the server runs on one thread, in the order the work arrived: the engines
of adapters that share a base switch that base to their adapter on each call
(:class:`~malpyeong.inference.engines.AdapterEngine`), and torch's random state is global, so
calls must not overlap. What keeps concurrent clients from waiting in line is batching: when a
generation arrives, the thread waits a short window (``window`` seconds, default 10 ms), then
takes every waiting generation with the same *key* -- the same engine (so the same adapter)
and the same decoding settings -- up to ``max_batch``, and answers them in one
``engine.generate`` call. Requests that arrive while a batch runs wait for the next one, which
takes all of them. Greedy rows of a batch decode exactly as alone (left padding; the load test
checks every reply), so batching changes the speed, never the answer; a sampled request with
its own ``seed`` is answered alone, so the same seed gives the same reply.

Each row of a batch is followed by a :class:`RowStream`, fed by the batch's streamer one token
per step: it knows when its row stopped, counts its tokens, and hands the text written so far
to the request's sink (a streamed response), holding back a tail that may still become a stop
string. Other work (a task's items through the answering path, a session's summary) is a
:class:`CallJob` run on the same thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from malpyeong.inference.engines import Engine, GenerationSettings
from malpyeong.inference.generation import cut_at_strings

log = logging.getLogger(__name__)

Sink = Callable[[str], None]  # receives the text a row adds, as it is written


class Stopping(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass
class Completion:
    """One row's answer: the text (special tokens removed, cut at a stop string), the raw
    generation the engine returned, its length in tokens and why it ended."""

    text: str
    raw: str
    tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"


class RowStream:
    """One row of a batch, fed a token per decoding step (see the module docstring).

    ``inner``: a streamer of its own that sees the row's tokens (a chat session's
    :class:`~malpyeong.dialogue.reply.ReplyStreamer`, which shows the task's cleaned reply);
    without one the text itself goes to ``sink``."""

    def __init__(
        self,
        tokenizer: Any,
        stop_ids: Sequence[int],
        *,
        sink: Sink | None = None,
        stops: Sequence[str] = (),
        inner: Any = None,
        max_new_tokens: int | None = None,
    ) -> None:
        self.tokenizer, self.stop_ids, self.sink, self.stops = tokenizer, set(stop_ids), sink, tuple(stops)
        self.inner, self.max_new_tokens = inner, max_new_tokens
        self.ids: list[int] = []
        self.stopped = False
        self.seen = False  # fed by a streamer (the HF engine); else the text comes whole
        self.shown = ""

    def text_of(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def add(self, token: int, value: Any = None) -> None:
        self.seen = True
        if self.stopped:
            return
        if token in self.stop_ids:
            self.stopped = True
            return
        self.ids.append(token)
        if self.inner is not None:
            self.inner.put(value)
            return
        if self.sink is None:
            return
        text = self.text_of(self.ids).rstrip("\ufffd")  # a character still being written
        cut = cut_at_strings(text, self.stops)
        if len(cut) < len(text):
            self.stopped = True
        else:  # a tail that may become a stop string waits
            cut = text[: len(text) - _held(text, self.stops)]
        self.emit(cut)

    def emit(self, text: str) -> None:
        if self.sink is not None and text.startswith(self.shown) and len(text) > len(self.shown):
            self.sink(text[len(self.shown) :])
            self.shown = text

    def completion(self, raw: str) -> Completion:
        """The row's answer once the batch is done (what was not streamed yet is sent now)."""
        # an engine that streams nothing (vLLM) returns the text whole, already cut at its end
        ids = self.ids if self.seen else self.tokenizer.encode(raw, add_special_tokens=False)
        text = self.text_of(ids)
        cut = cut_at_strings(text, self.stops)
        ended = self.stopped or len(cut) < len(text)
        if not self.seen and self.max_new_tokens is not None:
            ended = ended or len(ids) < self.max_new_tokens
        if self.inner is None:
            self.emit(cut)
        return Completion(cut, raw, len(ids), "stop" if ended else "length")


def _held(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` may be the start of a stop string."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


class BatchStreamer:
    """The transformers streamer of one batch: the prompt first (ignored), then one token per
    row at each step, handed to each row's :class:`RowStream`."""

    def __init__(self, rows: Sequence[RowStream]) -> None:
        self.rows = list(rows)
        self.started = False

    def put(self, value: Any) -> None:
        if not self.started:  # generate() sends the prompt once before the new tokens
            self.started = True
            return
        flat = value.reshape(-1)
        for r, row in enumerate(self.rows):
            row.add(int(flat[r]), flat[r : r + 1])

    def end(self) -> None:
        pass


@dataclass(eq=False)
class GenerateJob:
    """A generation to batch with others of the same key.

    ``prepare`` runs on the model thread before the batch is generated and sets ``prompt`` (a
    chat session builds its prompt there: folding old turns may call a summariser model);
    ``finish`` turns the :class:`Completion` into the job's result on the model thread (a
    session stores the reply). ``make_inner`` builds the row's own streamer once the prompt is
    known."""

    engine: Engine
    settings: GenerationSettings
    prompt: list[int] | None = None
    schema: dict | None = None
    stops: tuple[str, ...] = ()
    sink: Sink | None = None
    alone: bool = False  # answered in a batch of its own (a seeded sampled request)
    prepare: Callable[[GenerateJob], None] | None = None
    finish: Callable[[Completion], Any] | None = None
    make_inner: Callable[[], Any] | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    arrived: float = field(default_factory=time.monotonic)

    def key(self) -> Any:
        if self.alone:
            return self
        # the seed only matters when sampling: greedy rows of any seed share a batch
        settings = self.settings if self.settings.do_sample else replace(self.settings, seed=0)
        schema = json.dumps(self.schema, sort_keys=True) if self.schema is not None else None
        return (id(self.engine), settings, schema)


@dataclass(eq=False)
class CallJob:
    """Any other model work, run on the model thread in turn."""

    fn: Callable[[], Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Scheduler:
    """The model thread and its queue (see the module docstring)."""

    def __init__(self, *, window: float = 0.01, max_batch: int = 32) -> None:
        self.window, self.max_batch = window, max_batch
        self._pending: list[GenerateJob | CallJob] = []
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="malpyeong-model", daemon=True)
        self.batches: deque[int] = deque(maxlen=4096)  # the sizes of the latest batches (tests)
        self.batch_count = self.batched_rows = self.largest_batch = 0  # figures for /health

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: GenerateJob | CallJob) -> concurrent.futures.Future:
        with self._cond:
            if self._closing:
                raise Stopping("the server is shutting down")
            self._pending.append(job)
            self._cond.notify_all()
        return job.future

    async def run(self, job: GenerateJob | CallJob) -> Any:
        return await asyncio.wrap_future(self.submit(job))

    async def call(self, fn: Callable[[], Any]) -> Any:
        return await self.run(CallJob(fn))

    def close(self, timeout: float | None = None) -> bool:
        """Take no new work, finish what is queued, stop the thread; False when ``timeout``
        passed first."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._busy

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                first = self._pending[0]
                if isinstance(first, GenerateJob):
                    key = first.key()
                    deadline = first.arrived + self.window
                    while (wait := deadline - time.monotonic()) > 0 and not self._closing:
                        if sum(isinstance(j, GenerateJob) and j.key() == key for j in self._pending) >= (
                            self.max_batch
                        ):
                            break
                        self._cond.wait(wait)
                    batch = [j for j in self._pending if isinstance(j, GenerateJob) and j.key() == key]
                    batch = batch[: self.max_batch]
                else:
                    batch = [first]
                chosen = set(map(id, batch))
                self._pending = [j for j in self._pending if id(j) not in chosen]
                self._busy = True
            try:
                if isinstance(first, CallJob):
                    _settle(first.future, first.fn)
                else:
                    self._generate(batch)
            finally:
                with self._cond:
                    self._busy = False

    def _generate(self, batch: list[GenerateJob]) -> None:
        ready = []
        for job in batch:
            if job.prepare is not None:
                try:
                    job.prepare(job)
                except BaseException as err:  # noqa: BLE001 - the job's own failure, reported to it
                    job.future.set_exception(err)
                    continue
            ready.append(job)
        if not ready:
            return
        engine, settings = ready[0].engine, ready[0].settings
        stops = engine.stop_token_ids()
        rows = [
            RowStream(
                engine.tokenizer,
                stops,
                sink=job.sink,
                stops=job.stops,
                inner=job.make_inner() if job.make_inner is not None else None,
                max_new_tokens=settings.max_new_tokens,
            )
            for job in ready
        ]
        self.batches.append(len(ready))
        self.batch_count += 1
        self.batched_rows += len(ready)
        self.largest_batch = max(self.largest_batch, len(ready))
        try:
            texts = engine.generate(
                [job.prompt or [] for job in ready],
                settings,
                batch_size=len(ready),
                progress=False,
                schema=ready[0].schema,
                stream=lambda indices: BatchStreamer([rows[i] for i in indices]),
            )
        except BaseException as err:  # noqa: BLE001 - every request of the batch hears of it
            for job in ready:
                job.future.set_exception(err)
            return
        for job, row, raw in zip(ready, rows, texts, strict=True):
            completion = row.completion(raw)
            _settle(job.future, (lambda j=job, c=completion: j.finish(c) if j.finish else c))


def _settle(future: concurrent.futures.Future, fn: Callable[[], Any]) -> None:
    try:
        result = fn()
    except BaseException as err:  # noqa: BLE001 - handed to the waiting request
        future.set_exception(err)
    else:
        future.set_result(result)


__all__ = [
    "BatchStreamer",
    "CallJob",
    "Completion",
    "GenerateJob",
    "RowStream",
    "Scheduler",
    "Stopping",
]
