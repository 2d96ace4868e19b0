"""The character's reply to a prompt, shown as it is written.

Generation is the toolkit's own (:func:`malpyeong.inference.generation.generate_texts`: the chat
format's end-of-turn stops it, greedy unless sampling is asked for, seeded per turn so a
resumed session samples the same), with a streamer that prints the reply as tokens arrive.
What is printed is the task's cleaned reply (its first line, without the character's name if
the model wrote it), so the screen shows what the session stores.
"""

from __future__ import annotations

from typing import IO, Any

from malpyeong.dialogue.history import Prompt
from malpyeong.dialogue.session import ChatSettings
from malpyeong.inference.engines import HFEngine
from malpyeong.inference.generation import generate_texts
from malpyeong.tasks.base import GenerateTask


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


def generate_reply(
    engine: HFEngine,
    task: GenerateTask,
    prompt: Prompt,
    settings: ChatSettings,
    turn: int,
    out: IO[str] | None,
) -> tuple[str, str]:
    """``(reply, raw generation)``; the reply is streamed to ``out`` when given."""
    item = prompt.item

    def view(text: str) -> str:
        return task.parse_output(item, text) or ""

    streamer = None
    if out is not None:
        held = tuple(f"{p.casefold()}:" for p in (settings.character, "assistant", "model"))
        streamer = ReplyStreamer(engine.tokenizer, view, out, held)
    raw = generate_texts(
        engine.model,
        engine.tokenizer,
        [prompt.input_ids],
        max_new_tokens=settings.max_new_tokens,
        batch_size=1,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop_token_ids=engine.stop_token_ids(),
        seed=settings.seed + turn,
        progress=False,
        streamer=streamer,
    )[0]
    reply = task.parse_output(item, raw) or task.fallback_output(item)
    if streamer is not None:
        if reply.startswith(streamer.shown):
            streamer.write(reply)
        else:  # rare: the cleaned text changed under what was shown; show the reply again
            out.write(f" -> {reply}")
        out.write("\n")
        out.flush()
    return reply, raw
