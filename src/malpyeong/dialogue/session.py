"""A chat session: its settings, every turn, the memory, and what each prompt cost.

The session is the whole state of a conversation, so it is saved (atomically) after every
turn and a later ``run/chat.py --session FILE`` continues exactly where it stopped: the same
settings, turns, running summary and buffer give the same next prompt. Settings are fixed
when a session starts; a resumed session refuses a flag that would change one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.inference.engines import check_generation
from malpyeong.io import atomic_write_json
from malpyeong.tasks.base import Utterance

FORMAT = 1
MEMORIES = ("none", "window", "summary_buffer")


@dataclass(frozen=True)
class ChatSettings:
    model: str
    task: str
    character: str
    user: str = "User"
    memory: str = "summary_buffer"  # none | window | summary_buffer
    memory_tokens: int = 512  # the verbatim buffer's budget, in the chat model's tokens
    summary_tokens: int = 128  # the running summary's budget
    summarizer: str | None = None  # None: the chat model; "extractive"; or a model / run folder
    prompt: str = "baseline"
    persona: str | None = None  # the character's description (text)
    max_length: int = 2048  # prompt + reply, in tokens
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.memory not in MEMORIES:
            raise UserError(f"unknown memory '{self.memory}'", field="memory", hint=", ".join(MEMORIES))
        for name in ("memory_tokens", "summary_tokens", "max_length", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if self.max_new_tokens >= self.max_length:
            raise UserError(
                f"leaves no room for a prompt in max_length {self.max_length}", field="max_new_tokens"
            )
        if not self.character.strip() or not self.user.strip():
            raise UserError("names must not be empty", field="character")
        check_generation(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )

    @property
    def budget(self) -> int:
        """Tokens a prompt may take: room is kept for the reply."""
        return self.max_length - self.max_new_tokens


@dataclass
class Session:
    settings: ChatSettings
    turns: list[dict] = field(default_factory=list)  # {"speaker", "utterance"}
    memory: str = ""  # the running summary of turns[:folded]
    folded: int = 0  # turns before this index are in the memory (or forgotten), not the buffer
    log: list[dict] = field(default_factory=list)  # one row per reply: what its prompt held

    @property
    def buffer(self) -> list[dict]:
        return self.turns[self.folded :]

    def utterances(self, turns: list[dict] | None = None) -> tuple[Utterance, ...]:
        return tuple(
            Utterance(t["speaker"], t["utterance"]) for t in (self.buffer if turns is None else turns)
        )

    def reset(self) -> None:
        self.turns, self.memory, self.folded, self.log = [], "", 0, []

    def as_dict(self) -> dict:
        return {
            "malpyeong_chat": FORMAT,
            "settings": dataclasses.asdict(self.settings),
            "turns": self.turns,
            "memory": self.memory,
            "folded": self.folded,
            "log": self.log,
        }

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.as_dict(), indent=1)


def load_session(path: str | os.PathLike) -> Session:
    """A saved session; one error naming the file when it is not one."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the session ({type(err).__name__})", file=str(p)) from None
    if not isinstance(data, dict) or data.get("malpyeong_chat") != FORMAT:
        raise UserError("not a chat session file", file=str(p), hint="written by run/chat.py")
    try:
        settings = ChatSettings(**data["settings"])
        turns = [{"speaker": str(t["speaker"]), "utterance": str(t["utterance"])} for t in data["turns"]]
        session = Session(
            settings,
            turns,
            str(data.get("memory") or ""),
            int(data.get("folded") or 0),
            list(data.get("log") or []),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"damaged session ({type(err).__name__}: {err})", file=str(p)) from None
    if not 0 <= session.folded <= len(session.turns):
        raise UserError("damaged session (folded past the last turn)", file=str(p))
    return session


def check_resume(session: Session, given: dict[str, Any], path: str) -> None:
    """Flags given on a resumed session must agree with the settings it started with."""
    stored = dataclasses.asdict(session.settings)
    clash = [
        f"--{k} {v!r} (session: {stored[k]!r})"
        for k, v in given.items()
        if v is not None and k in stored and v != stored[k]
    ]
    if clash:
        raise UserError(
            "a resumed session keeps its settings: " + ", ".join(clash),
            file=path,
            hint="drop these flags, or start a new session file",
        )
