"""Chat sessions with memory, kept by the server: ``run/chat.py``'s session, server-side.

A request that names a ``session`` sends only its new line; the server keeps the rest, exactly
as ``run/chat.py`` does (the same code: :class:`~malpyeong.dialogue.session.Session`, the
summary-buffer :class:`~malpyeong.dialogue.history.Memory` with its budget rules, the reply
cleaned and streamed by :mod:`malpyeong.dialogue.reply`). Each session is one file,
``<sessions>/<id>.json``, written atomically after every turn, so a restarted server continues
every conversation where it stopped. The id is checked to be a plain name (letters, digits,
``_``, ``-``): it never reaches the file system as a path. Turns of one session run one after
another (a lock per id); sessions never see each other's turns.

A session's settings are fixed by its first request (model, character, user name, the persona
from a system message, reply length and sampling) with the server's memory defaults; a later
request that asks for different ones is refused (409), as ``run/chat.py`` refuses flags that
would change a resumed session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malpyeong.dialogue.history import Memory, Prompt
from malpyeong.dialogue.reply import finish_reply, reply_generation, reply_streamer, reply_task
from malpyeong.dialogue.session import ChatSettings, Session, check_resume, load_session
from malpyeong.dialogue.summarize import ExtractiveSummarizer, ModelSummarizer, engine_summarizer
from malpyeong.errors import UserError, UserErrors
from malpyeong.serving.batching import Completion, GenerateJob, Sink
from malpyeong.serving.config import ApiError, SessionDefaults
from malpyeong.serving.registry import Registry, Served
from malpyeong.tasks import get_task
from malpyeong.tasks.base import PromptSpec

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
KEPT = 1024  # sessions kept in memory; older ones are read from their files again when used
DEFAULT_MAX_LENGTH = 2048  # run/chat.py's, when the run says none (and the model takes it)


def check_session_id(sid: object) -> str:
    if not isinstance(sid, str) or not SESSION_ID.fullmatch(sid):
        raise ApiError(
            400,
            "a session id is 1-64 letters, digits, '_' or '-', starting with a letter or digit",
            param="session",
        )
    return sid


class SessionStore:
    """The sessions of a server: files in ``folder``, the ones in use kept in memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.cache: dict[str, Session] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    def path(self, sid: str) -> Path:
        return self.folder / f"{check_session_id(sid)}.json"

    def lock(self, sid: str) -> asyncio.Lock:
        return self.locks.setdefault(check_session_id(sid), asyncio.Lock())

    def get(self, sid: str) -> Session | None:
        if sid in self.cache:
            return self.cache[sid]
        path = self.path(sid)
        if not path.exists():
            return None
        try:
            session = load_session(path)
        except UserError as err:  # run/chat.py's loader: every problem found; the first one said
            first = err.errors[0] if isinstance(err, UserErrors) else err
            where = f"field '{first.field}': " if first.field else ""
            more = len(err.errors) - 1 if isinstance(err, UserErrors) else 0
            raise ApiError(
                409,
                f"session {sid} cannot be read: {where}{first.problem}"
                + (f" (and {more} more problem(s))" if more else ""),
                param="session",
            ) from None
        self.cache[sid] = session
        return session

    def save(self, sid: str, session: Session) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        session.save(self.path(sid))
        self.cache.pop(sid, None)
        self.cache[sid] = session  # the most recently used last
        for old in list(self.cache)[: max(0, len(self.cache) - KEPT)]:
            lock = self.locks.get(old)
            if lock is None or not lock.locked():  # saved already: its file has it
                self.cache.pop(old)
                self.locks.pop(old, None)

    def forget(self, sid: str) -> None:
        """Drop the copy in memory (after a failed turn: the file holds the last good state)."""
        self.cache.pop(sid, None)

    def delete(self, sid: str) -> bool:
        self.cache.pop(sid, None)
        path = self.path(sid)
        if path.exists():
            path.unlink()
            return True
        return False

    def flush(self) -> int:
        """Write every session in memory (each is written after its turns anyway); how many."""
        for sid, session in list(self.cache.items()):
            self.save(sid, session)
        return len(self.cache)


@dataclass
class SessionRequest:
    """What a chat request says about its session."""

    sid: str
    line: str  # the user's new line
    character: str | None
    user: str | None
    persona: str | None  # a system message's text, used when the session starts
    max_new_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None


class SinkWriter:
    """A text stream (``write``/``flush``) over a sink: what ``run/chat.py`` prints goes to the
    client instead."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def write(self, text: str) -> int:
        if text:
            self.sink(text)
        return len(text)

    def flush(self) -> None:
        pass


def new_settings(req: SessionRequest, served: Served, defaults: SessionDefaults) -> ChatSettings:
    """A new session's settings: the request's, the run's prompt and max_length, the server's
    memory defaults (what ``run/chat.py`` makes of its flags)."""
    task = reply_task(None, served.source.run.get("task"))
    spec = task.prompt_spec(served.prompt)
    if req.persona:
        spec = PromptSpec(spec.flags | {"persona"})
    context = served.context()
    max_length = served.max_length or DEFAULT_MAX_LENGTH
    if context:
        max_length = min(max_length, context)
    return ChatSettings(
        model=served.name,
        task=task.name,
        character=req.character or "Assistant",
        user=req.user or "User",
        memory=defaults.memory,
        memory_tokens=defaults.memory_tokens,
        summary_tokens=defaults.summary_tokens,
        summarizer=defaults.summarizer,
        prompt=str(spec),
        persona=req.persona,
        max_length=max_length,
        max_new_tokens=req.max_new_tokens or defaults.max_new_tokens,
        **sampling(req),
    )


def sampling(req: SessionRequest) -> dict:
    """OpenAI's sampling fields as a session's: temperature 0 or none is greedy."""
    values: dict[str, Any] = {}
    if req.temperature is not None:
        values["do_sample"] = req.temperature > 0
        if req.temperature > 0:
            values["temperature"] = req.temperature
    if req.top_p is not None:
        values["top_p"] = req.top_p
    if req.seed is not None:
        values["seed"] = req.seed
    return values


def open_session(
    store: SessionStore, req: SessionRequest, served: Served, defaults: SessionDefaults
) -> Session:
    """The session ``req`` continues, or a new one; a request that would change a running
    session's settings is refused."""
    session = store.get(req.sid)
    if session is None:
        return Session(new_settings(req, served, defaults))
    given = {
        "model": served.name,
        "character": req.character,
        "user": req.user,
        "max_new_tokens": req.max_new_tokens,
        **sampling(req),
    }
    try:
        check_resume(session, given, f"session {req.sid}")
    except UserError as err:
        raise ApiError(
            409, err.problem + " (start a new session id to change them)", param="session"
        ) from None
    if req.persona and req.persona != session.settings.persona:
        raise ApiError(409, f"session {req.sid} keeps the persona it started with", param="session")
    return session


def summariser(session: Session, served: Served, registry: Registry, language: str) -> Any:
    """The session's summariser, as ``run/chat.py --summarizer`` names it: the chat model
    itself, ``extractive``, or another served model."""
    s = session.settings
    if s.memory != "summary_buffer":
        return None
    if s.summarizer is None:
        return ModelSummarizer(served.engine, s.summary_tokens, language)
    if s.summarizer == "extractive":
        return ExtractiveSummarizer(served.engine.tokenizer, s.summary_tokens, s.user)
    other = registry.model(s.summarizer)
    return engine_summarizer(
        other.engine,
        other.source,
        chat_task=s.task,
        max_tokens=s.summary_tokens,
        user=s.user,
        language=language,
    )


def session_job(
    store: SessionStore,
    session: Session,
    req: SessionRequest,
    served: Served,
    registry: Registry,
    sink: Sink | None,
    ready: Any = None,
) -> GenerateJob:
    """The job of one turn: on the model thread the user's line joins the session and the
    prompt is built within the budget (:meth:`Memory.prompt`, folding old turns into the
    summary), then the reply is generated in a batch with other requests and stored, and the
    session saved. The job's result is ``(reply, completion, prompt)``."""
    s = session.settings
    task = get_task(s.task)
    spec = task.prompt_spec(s.prompt)
    language = "ko" if "ko" in spec else "en"
    memory = Memory(task, spec, served.engine.tokenizer, served.engine.backbone, None)
    turn = len(session.turns)
    state: dict[str, Any] = {}

    def prepare(job: GenerateJob) -> None:
        memory.summarise = summariser(session, served, registry, language)
        session.turns.append({"speaker": s.user, "utterance": req.line})
        prompt = memory.prompt(session)
        state["prompt"] = prompt
        job.prompt = prompt.input_ids
        if ready is not None:
            ready()

    def make_inner() -> Any:
        if sink is None:
            return None
        state["out"] = SinkWriter(sink)
        state["streamer"] = reply_streamer(
            served.engine.tokenizer, task, state["prompt"].item, s, state["out"]
        )
        return state["streamer"]

    def finish(completion: Completion) -> tuple[str, Completion, Prompt]:
        prompt: Prompt = state["prompt"]
        reply = finish_reply(
            task, prompt.item, completion.raw, state.get("streamer"), state.get("out"), end=""
        )
        session.turns.append({"speaker": s.character, "utterance": reply})
        session.log.append({"turn": turn, **prompt.info})
        memory.update(session)
        store.save(req.sid, session)
        return reply, completion, prompt

    return GenerateJob(
        served.engine,
        reply_generation(s, turn),
        sink=sink,
        alone=s.do_sample,
        prepare=prepare,
        finish=finish,
        make_inner=make_inner,
    )


def memory_view(sid: str, session: Session, served: Served | None = None) -> dict:
    """What the session remembers: the running summary and the verbatim buffer (the web
    page's memory panel), with their token counts when the model is served."""
    s = session.settings
    view: dict[str, Any] = {
        "id": sid,
        "settings": dataclasses.asdict(s),
        "turns": len(session.turns),
        "folded": session.folded,
        "summary": session.memory,
        "buffer": session.buffer,
        "last_prompt": session.log[-1] if session.log else None,
    }
    if served is not None:
        task = get_task(s.task)
        engine = served.engine
        memory = Memory(task, task.prompt_spec(s.prompt), engine.tokenizer, engine.backbone, None)
        view["summary_tokens"] = memory.count(session.memory)
        view["buffer_tokens"] = sum(memory.turn_tokens(t) for t in session.buffer)
    return view


__all__ = [
    "SessionRequest",
    "SessionStore",
    "check_session_id",
    "memory_view",
    "open_session",
    "session_job",
]
