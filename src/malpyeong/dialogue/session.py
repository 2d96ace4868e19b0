"""A chat session: its settings, every turn, the memory, and what each prompt cost.

The session is the whole state of a conversation, so it is saved (atomically) after every
turn and a later ``run/chat.py --session FILE`` continues exactly where it stopped: the same
settings, turns, running summary and buffer give the same next prompt. Settings are fixed
when a session starts; a resumed session refuses a flag that would change one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError, UserErrors
from malpyeong.inference.engines import check_generation
from malpyeong.io import atomic_write_json, json_loads, read_text
from malpyeong.tasks import TASKS, get_task
from malpyeong.tasks.base import Utterance

MEMORY = "memory"  # not a task name: the session field (and setting) holding the chat's memory

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
        problems = settings_problems(dataclasses.asdict(self))
        if problems:
            field_name, problem = problems[0]
            raise UserError(problem, field=field_name)

    @property
    def budget(self) -> int:
        """Tokens a prompt may take: room is kept for the reply."""
        return self.max_length - self.max_new_tokens


SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "task": (str,),
    "character": (str,),
    "user": (str,),
    MEMORY: (str,),
    "memory_tokens": (int,),
    "summary_tokens": (int,),
    "summarizer": (str, type(None)),
    "prompt": (str,),
    "persona": (str, type(None)),
    "max_length": (int,),
    "max_new_tokens": (int,),
    "do_sample": (bool,),
    "temperature": (int, float),
    "top_p": (int, float),
    "seed": (int,),
}
TYPE_NAMES = {
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__.replace("str", "text").replace("dict", "object")


def settings_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Every way ``values`` are not chat settings, as ``(field, problem)``: types first (a
    ``bool`` is no number here, JSON's ``true`` is not 1), then the values."""
    problems: list[tuple[str, str]] = []
    for name, value in values.items():
        kinds = SETTING_TYPES.get(name)
        if kinds is None:
            problems.append((name, "unknown setting"))
        elif type(value) not in kinds:
            want = " or ".join(TYPE_NAMES[k] for k in kinds)
            problems.append((name, f"must be {want}, got {_kind(value)} {value!r}"))
    if problems:
        return problems
    if values.get(MEMORY) not in MEMORIES:
        problems.append((MEMORY, f"unknown memory {values.get(MEMORY)!r} (one of {', '.join(MEMORIES)})"))
    for name in ("memory_tokens", "summary_tokens", "max_length", "max_new_tokens"):
        if name in values and values[name] < 1:
            problems.append((name, f"must be at least 1, got {values[name]}"))
    if values.get("max_new_tokens", 0) >= values.get("max_length", 1 << 30) >= 1:
        problems.append(
            ("max_new_tokens", f"leaves no room for a prompt in max_length {values['max_length']}")
        )
    for name in ("character", "user"):
        if name in values and not values[name].strip():
            problems.append((name, "must not be empty"))
    try:
        check_generation(**{k: values[k] for k in GENERATION_SETTINGS if k in values})
    except UserError as err:
        problems.append((err.field or "settings", err.problem))
    return problems


GENERATION_SETTINGS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed")


@dataclass
class Session:
    settings: ChatSettings
    turns: list[dict] = field(default_factory=list)  # {"speaker", "utterance"}
    memory: str = ""  # the running summary of turns[:folded]
    folded: int = 0  # turns before this index are in the memory (or forgotten), not the buffer
    log: list[dict] = field(default_factory=list)  # one row per reply: what its prompt held
    # --input FILE: how far it was read ({"file", "lines", "sha256"}), so a rerun continues
    script: dict | None = None

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
            "memory": self.memory,  # not a task name: the chat's memory strategy
            "folded": self.folded,
            "log": self.log,
            **({"input": self.script} if self.script is not None else {}),
        }

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.as_dict(), indent=1)


RESUME_HINT = "fix the file, or give another --session to start a new one"


def load_session(path: str | os.PathLike) -> Session:
    """A saved session, checked like a data file before anything uses it: every problem
    (field, what was expected, what was found) reported at once, naming the file."""
    name = str(path)
    text = read_text(path, field="session")
    try:
        data = json_loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as err:
        raise UserError(
            f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})", file=name, hint=RESUME_HINT
        ) from None
    except ValueError as err:  # NaN / Infinity: not JSON
        raise UserError(f"not valid JSON: {err}", file=name, hint=RESUME_HINT) from None
    if not isinstance(data, dict) or "malpyeong_chat" not in data:
        raise UserError("not a chat session file", file=name, hint="written by run/chat.py")
    if data["malpyeong_chat"] != FORMAT:
        raise UserError(
            f"session format {data['malpyeong_chat']!r}; this version reads format {FORMAT}", file=name
        )
    problems = session_problems(data)
    if problems:
        raise UserErrors([UserError(p, file=name, field=f, hint=RESUME_HINT) for f, p in problems[:20]])
    return Session(
        ChatSettings(**data["settings"]),
        [{"speaker": t["speaker"], "utterance": t["utterance"]} for t in data["turns"]],
        data.get(MEMORY, ""),
        data.get("folded", 0),
        list(data.get("log", [])),
        data.get("input"),
    )


def session_problems(data: dict) -> list[tuple[str, str]]:
    """Every way a parsed session file is not one, as ``(field, problem)``."""
    problems: list[tuple[str, str]] = []
    known = {"malpyeong_chat", "settings", "turns", MEMORY, "folded", "log", "input"}
    problems += [(k, "unknown field") for k in data if k not in known]
    settings = data.get("settings")
    if not isinstance(settings, dict):
        problems.append(("settings", f"must be an object, got {_kind(settings)}"))
    else:
        missing = [k for k in ("model", "task", "character") if k not in settings]
        problems += [(f"settings.{k}", "missing") for k in missing]
        problems += [(f"settings.{f}", p) for f, p in settings_problems(settings)]
        if not problems:
            problems += task_problems(settings.get("task"), settings.get("prompt", "baseline"))
    turns = data.get("turns")
    if not isinstance(turns, list):
        problems.append(("turns", f"must be a list of turns, got {_kind(turns)}"))
        turns = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            problems.append((f"turns[{i}]", f"must be an object {{speaker, utterance}}, got {_kind(turn)}"))
            continue
        problems += [(f"turns[{i}].{k}", "unknown field") for k in turn if k not in ("speaker", "utterance")]
        for key in ("speaker", "utterance"):
            value = turn.get(key)
            if not isinstance(value, str) or (key == "speaker" and not value.strip()):
                what = "a name" if key == "speaker" else "text"
                problems.append((f"turns[{i}].{key}", f"must be {what}, got {_kind(value)} {value!r}"))
    if not isinstance(data.get(MEMORY, ""), str):
        problems.append((MEMORY, f"must be text (the running summary), got {_kind(data[MEMORY])}"))
    folded = data.get("folded", 0)
    if type(folded) is not int or not 0 <= folded <= len(turns):
        problems.append(
            ("folded", f"must be a whole number from 0 to {len(turns)} (the turns), got {folded!r}")
        )
    log = data.get("log", [])
    if not isinstance(log, list) or not all(isinstance(r, dict) for r in log):
        problems.append(("log", "must be a list of objects"))
    script = data.get("input")
    if script is not None and not (
        isinstance(script, dict)
        and isinstance(script.get("file"), str)
        and type(script.get("lines")) is int
        and script["lines"] >= 0
        and isinstance(script.get("sha256"), str)
    ):
        problems.append(("input", "must be an object {file: text, lines: a whole number, sha256: text}"))
    return problems


def script_record(path: str | os.PathLike, done: list[str]) -> dict:
    """How far a scripted chat has read ``--input``: its first ``len(done)`` lines."""
    digest = hashlib.sha256("\n".join(done).encode("utf-8")).hexdigest()
    return {"file": str(Path(path).resolve()), "lines": len(done), "sha256": digest}


def script_start(session: Session, path: str | os.PathLike, lines: list[str]) -> tuple[int, str | None]:
    """Where a scripted chat starts in ``lines`` (of ``--input path``) and what to tell the user.

    The same file as the session read before continues after the lines it answered (rerunning
    the command resumes, never sending early lines twice); another file starts at its first
    line; the same file changed in the lines already answered is refused (which lines were
    answered is no longer known)."""
    done = session.script
    if done is None:
        return 0, None
    if done["file"] != str(Path(path).resolve()):
        return (
            0,
            f"reading {path} from its first line (this session's earlier lines came from {done['file']})",
        )
    n = done["lines"]
    if n > len(lines) or script_record(path, lines[:n])["sha256"] != done["sha256"]:
        raise UserError(
            f"changed since this session read its first {n} line(s); which were answered is no longer known",
            file=str(path),
            field="input",
            hint="restore the file and add new lines at its end, or put the new lines in another file",
        )
    if n == len(lines):
        return n, f"all {n} line(s) of {path} were answered already in this session; nothing to do"
    return n, f"continuing {path} after its first {n} line(s), answered before in this session"


def task_problems(name: Any, prompt: Any) -> list[tuple[str, str]]:
    """The session's task must exist and hold a live chat; its prompt must be one of the task's."""
    if name not in TASKS:
        return [("settings.task", f"unknown task {name!r}")]
    task = get_task(name)
    if not task.live_reply:
        return [("settings.task", f"task {name} cannot hold a live chat")]
    try:
        task.prompt_spec(prompt)
    except UserError as err:
        return [("settings.prompt", err.problem)]
    return []


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
