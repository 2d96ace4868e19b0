"""The character's reply to a prompt, shown as it is written.

Generation is the engine's (:func:`malpyeong.inference.generation.generate_texts`: the chat
format's end-of-turn stops it, greedy unless sampling is asked for, seeded per turn so a
resumed session samples the same), with a streamer that prints the reply as tokens arrive.
What is printed is the task's cleaned reply (its first line, without the character's name if
the model wrote it), so the screen shows what the session stores. The pieces
(:func:`reply_generation`, :func:`reply_streamer`, :func:`finish_reply`) are also what a server
uses for a session's turn inside a batch of other requests (:mod:`malpyeong.serving`).
"""

from __future__ import annotations

from typing import IO, Any

from malpyeong.dialogue.history import Prompt
from malpyeong.dialogue.session import ChatSettings
from malpyeong.errors import UserError
from malpyeong.inference.engines import Engine, GenerationSettings
from malpyeong.tasks import TASKS, get_task
from malpyeong.tasks.base import Task


class ReplyStreamer:
    """A transformers streamer (``put`` / ``end``) that writes the cleaned reply so far."""

    def __init__(self, tokenizer: Any, view: Any, out: IO[str], held: tuple[str, ...]) -> None:
        self.tokenizer, self.view, self.out, self.held = tokenizer, view, out, held
        self.ids: list[int] = []
        self.shown = ""

    def put(self, value: Any) -> None:
        if value.dim() > 1 and value.shape[-1] > 1:  # the prompt, sent once before the tokens
            self.ids, self.shown = [], ""
            return
        self.ids.extend(int(t) for t in value.flatten().tolist())
        raw = self.tokenizer.decode(self.ids, skip_special_tokens=True).rstrip("\ufffd")
        start = raw.lstrip().casefold()
        if any(h.startswith(start) for h in self.held):  # may still become "Name:": wait
            return
        self.write(self.view(raw))

    def write(self, text: str) -> None:
        if text.startswith(self.shown) and len(text) > len(self.shown):
            self.out.write(text[len(self.shown) :])
            self.out.flush()
            self.shown = text

    def end(self) -> None:
        pass


def reply_generation(settings: ChatSettings, turn: int) -> GenerationSettings:
    """How the reply to turn ``turn`` is decoded: the session's settings, seeded per turn."""
    return GenerationSettings(
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed + turn,
    )


def reply_streamer(
    tokenizer: Any, task: Task, item: Any, settings: ChatSettings, out: IO[str]
) -> ReplyStreamer:
    """A streamer that writes ``item``'s cleaned reply to ``out`` as it is generated, holding
    back a start that may still become the character's name."""

    def view(text: str) -> str:
        return task.parse_output(item, text) or ""

    held = tuple(f"{p.casefold()}:" for p in (settings.character, "assistant", "model"))
    return ReplyStreamer(tokenizer, view, out, held)


def finish_reply(
    task: Task, item: Any, raw: str, streamer: ReplyStreamer | None, out: IO[str] | None, end: str = "\n"
) -> str:
    """The reply the session stores for a raw generation; what the streamer has not shown of it
    yet is written to ``out``, then ``end``."""
    reply = task.parse_output(item, raw) or task.fallback_output(item)
    if streamer is not None and out is not None:
        if reply.startswith(streamer.shown):
            streamer.write(reply)
        else:  # rare: the cleaned text changed under what was shown; show the reply again
            out.write(f" -> {reply}")
        out.write(end)
        out.flush()
    return reply


def generate_reply(
    engine: Engine,
    task: Task,
    prompt: Prompt,
    settings: ChatSettings,
    turn: int,
    out: IO[str] | None,
) -> tuple[str, str]:
    """``(reply, raw generation)``; the reply is streamed to ``out`` when given."""
    streamer = reply_streamer(engine.tokenizer, task, prompt.item, settings, out) if out is not None else None
    raw = engine.generate(
        [prompt.input_ids],
        reply_generation(settings, turn),
        batch_size=1,
        progress=False,
        stream=(lambda batch: streamer) if streamer is not None else None,
    )[0]
    return finish_reply(task, prompt.item, raw, streamer, out), raw


def reply_task(name: str | None, run_task: str | None) -> Task:
    """The task that holds a live chat: ``name``, else the run's task when it can, else the only
    registered task that can (:attr:`~malpyeong.tasks.base.Task.live_reply`)."""
    able = sorted(n for n, cls in TASKS.items() if cls.live_reply)
    name = name or (run_task if run_task in able else None) or (able[0] if len(able) == 1 else None)
    if name is None:
        raise UserError("which task replies?", field="task", hint=f"--task {' or '.join(able)}")
    task = get_task(name)
    if not task.live_reply:
        raise UserError(
            f"task {task.name} cannot hold a live chat",
            field="task",
            hint=f"tasks that can: {', '.join(able)}",
        )
    return task
