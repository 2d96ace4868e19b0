"""What the server is told at start (parsed once, at the edge), its limits, and its errors.

Names: a served model or ensemble is called by a short name (``--model NAME=RUN``): letters,
digits and ``. _ : -``, at most 64 characters, so no request can name a file -- a request's
``model`` is only ever looked up among these names, never opened as a path.

Safe by default: the server binds 127.0.0.1; any other address needs ``--api_key`` (then every
``/v1`` request must carry ``Authorization: Bearer KEY``). Every request is bounded: its body
(``max_body_bytes``), its prompt (``max_prompt_tokens``), what it may generate
(``max_new_tokens``) and how many items a task request holds (``max_items``).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from malpyeong.errors import UserError
from malpyeong.inference.engines import ENGINES

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
LOOPBACK_NAMES = ("localhost",)


class ApiError(Exception):
    """A request the server refuses: an HTTP status and one line (OpenAI's error shape)."""

    def __init__(
        self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> dict:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        }


def check_name(name: str, what: str = "model") -> str:
    if not NAME.fullmatch(name):
        raise UserError(
            f"'{name}' is not a usable {what} name",
            field=what,
            hint="letters, digits and . _ : - (at most 64), e.g. --model cci-a=runs/cci/a",
        )
    return name


def parse_model(spec: str) -> tuple[str, str]:
    """``NAME=SOURCE`` (a run folder, model folder, adapter folder or hub id), or ``SOURCE``
    alone, named after its last path part."""
    name, sep, source = spec.partition("=")
    if not sep:
        source = spec
        name = Path(spec.rstrip("/")).name or spec
    if not source:
        raise UserError(f"'{spec}' names no model", field="model", hint="--model NAME=RUN_FOLDER")
    return check_name(name), source


@dataclass(frozen=True)
class EnsembleSpec:
    """``--ensemble NAME=A,B,C``: served models voted as one (``A:2`` gives A a weight)."""

    name: str
    members: tuple[str, ...]
    weights: tuple[float, ...] | None = None


def parse_ensemble(spec: str) -> EnsembleSpec:
    name, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise UserError(f"'{spec}' is not NAME=A,B,C", field="ensemble", hint="--ensemble vote3=a,b,c")
    members, weights = [], []
    for part in rest.split(","):
        member, colon, weight = part.strip().partition(":")
        try:
            w = float(weight) if colon else 1.0
        except ValueError:
            raise UserError(f"weight '{weight}' of {member} is not a number", field="ensemble") from None
        if not math.isfinite(w) or w < 0:
            raise UserError(f"weight of {member} must be a finite number >= 0", field="ensemble")
        members.append(check_name(member, "ensemble member"))
        weights.append(w)
    if len(members) < 2 or len(set(members)) < len(members):
        raise UserError(f"ensemble {name} needs two or more different members", field="ensemble")
    given = any(":" in p for p in rest.split(","))
    return EnsembleSpec(check_name(name, "ensemble"), tuple(members), tuple(weights) if given else None)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_prompt_tokens: int = 8192
    max_new_tokens: int = 1024
    max_items: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_prompt_tokens", "max_new_tokens", "max_items"):
            if getattr(self, name) < 1:
                raise UserError(f"must be at least 1, got {getattr(self, name)}", field=name)


@dataclass(frozen=True)
class SessionDefaults:
    """How a new chat session remembers (``run/chat.py``'s flags and defaults)."""

    memory: str = "summary_buffer"
    memory_tokens: int = 512
    summary_tokens: int = 128
    summarizer: str | None = None  # None: the chat model itself; "extractive"; or a served name
    max_new_tokens: int = 64


@dataclass(frozen=True)
class ServeConfig:
    models: dict[str, str]  # name -> source, as given
    ensembles: tuple[EnsembleSpec, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    engine: str = "hf"
    dtype: str = "auto"
    device: str | None = None
    trust_remote_code: bool | None = None
    tensor_parallel_size: int = 1
    window: float = 0.01  # seconds a batch waits for more requests
    max_batch: int = 32
    limits: Limits = field(default_factory=Limits)
    sessions: Path = Path("sessions/server")
    session_defaults: SessionDefaults = field(default_factory=SessionDefaults)
    vote_method: str | None = None  # None: vote.py's default (hard)
    web: bool = False
    drain_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.models:
            raise UserError("no model to serve", field="model", hint="--model NAME=RUN_FOLDER")
        if self.engine not in ENGINES:
            raise UserError(f"unknown engine '{self.engine}'", field="engine", hint=", ".join(ENGINES))
        if self.max_batch < 1 or self.window < 0:
            raise UserError("--max_batch must be >= 1 and --batch_window_ms >= 0", field="max_batch")
        if not 0 <= self.port < 65536:
            raise UserError(f"port {self.port} is not a TCP port", field="port")
        names = list(self.models) + [e.name for e in self.ensembles]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"named twice: {', '.join(twice)}", field="model")
        for e in self.ensembles:
            unknown = [m for m in e.members if m not in self.models]
            if unknown:
                raise UserError(
                    f"ensemble {e.name} names unknown model(s): {', '.join(unknown)}",
                    field="ensemble",
                    hint=f"served models: {', '.join(self.models)}",
                )
        check_bind(self.host, self.api_key)

    @property
    def self_url(self) -> str:
        """Where the server reaches itself (the web page served by the same command)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"


def require_libraries(web: bool = False) -> None:
    """The server's libraries, or one line saying how to get them."""
    wanted = ["fastapi", "uvicorn", "httpx", *(["gradio"] if web else [])]
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"the server needs {', '.join(missing)}", hint='pip install -e ".[serve]"')


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Any address but loopback is reachable from other machines: refuse it without a key."""
    if not is_loopback(host) and not api_key:
        raise UserError(
            f"refusing to listen on {host} without --api_key: anyone who can reach it could use the models",
            field="host",
            hint="give --api_key KEY (clients send Authorization: Bearer KEY), or keep --host 127.0.0.1",
        )
    if api_key is not None and len(api_key) < 8:
        raise UserError("an API key of fewer than 8 characters is too easy to guess", field="api_key")


__all__ = [
    "ApiError",
    "EnsembleSpec",
    "Limits",
    "ServeConfig",
    "SessionDefaults",
    "check_bind",
    "check_name",
    "is_loopback",
    "parse_ensemble",
    "parse_model",
    "require_libraries",
]
