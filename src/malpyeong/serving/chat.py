"""``POST /v1/chat/completions``: OpenAI's chat protocol over our engines.

The request is read strictly (OpenAI's field names and types; a field we do not know, or one
whose feature we do not offer -- ``n`` > 1, tools, logprobs, penalties -- is a 400 naming it,
never silently ignored). The messages are rendered with the model's chat template (its
backbone entry's quirks, as prediction renders prompts) and must fit: at most the server's
``max_prompt_tokens``, and with the reply within the model's context. Decoding follows
OpenAI's names: ``max_tokens`` (or ``max_completion_tokens``), ``temperature`` (0 or absent:
greedy, the toolkit's default; above 0: sampling), ``top_p``, ``seed``, ``stop`` (up to four
strings), ``response_format`` (``json_object`` or ``json_schema``: constrained decoding with
llguidance, as the memory task uses). ``stream: true`` answers in server-sent events, one
chunk per piece of text as it is generated, ``stream_options.include_usage`` adds the usage
chunk. Extra fields of ours: ``session`` (server-side memory, :mod:`.sessions`), with
``character`` and ``user_name``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from malpyeong.inference.constrain import json_constraint
from malpyeong.inference.engines import GenerationSettings
from malpyeong.models.backbones import encode, render_chat
from malpyeong.serving.batching import Completion, GenerateJob, Scheduler
from malpyeong.serving.config import ApiError, Limits
from malpyeong.serving.registry import Served

DEFAULT_MAX_TOKENS = 256  # a request that names no length (OpenAI's is "up to the context")
COMPACT = {"x-guidance": {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}}


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class ChatRequest(Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    # ours: server-side chat sessions
    session: str | None = None
    character: str | None = Field(None, min_length=1, max_length=64)
    user_name: str | None = Field(None, min_length=1, max_length=64)

    def check_supported(self) -> None:
        """Features OpenAI has and we do not: refused by name, not ignored."""
        refused = {
            "n": self.n not in (None, 1),
            "logprobs": bool(self.logprobs) or bool(self.top_logprobs),
            "presence_penalty": self.presence_penalty not in (None, 0),
            "frequency_penalty": self.frequency_penalty not in (None, 0),
            "logit_bias": bool(self.logit_bias),
            "tools": bool(self.tools) or self.tool_choice not in (None, "none"),
            "functions": bool(self.functions) or self.function_call not in (None, "none"),
        }
        for name, bad in refused.items():
            if bad:
                raise ApiError(400, f"'{name}' is not supported by this server", param=name)
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ApiError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s or len(s) > 64 for s in stops):
            raise ApiError(400, "stop takes up to 4 non-empty strings of at most 64 characters", param="stop")
        return tuple(stops)

    def asked_tokens(self, limits: Limits) -> int | None:
        """``max_tokens`` (or ``max_completion_tokens``) when given, checked against the limit."""
        asked = self.max_tokens or self.max_completion_tokens
        if asked is not None and asked > limits.max_new_tokens:
            raise ApiError(
                400,
                f"max_tokens {asked} is over this server's limit of {limits.max_new_tokens}",
                param="max_tokens",
            )
        return asked

    def generation(self, max_new_tokens: int) -> GenerationSettings:
        sample = self.temperature is not None and self.temperature > 0
        return GenerationSettings(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=self.temperature if sample else 1.0,
            top_p=self.top_p if sample and self.top_p is not None else 1.0,
            seed=self.seed or 0,
        )

    def schema(self) -> dict | None:
        """The JSON schema ``response_format`` asks for, in the compact layout the tasks' own
        schemas use (no free whitespace: a weak model cannot pad its budget away)."""
        fmt = self.response_format
        if fmt is None or fmt.get("type") == "text":
            return None
        if fmt.get("type") == "json_object":
            return {**COMPACT, "type": "object"}
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if isinstance(schema, dict):
                return {**COMPACT, **schema}
            raise ApiError(
                400,
                "response_format.json_schema.schema must be a JSON schema object",
                param="response_format",
            )
        raise ApiError(
            400, "response_format.type must be text, json_object or json_schema", param="response_format"
        )


def prompt_ids(
    served: Served, messages: list[Message], limits: Limits, asked: int | None
) -> tuple[list[int], int]:
    """The messages rendered by the model's chat template, checked against the budgets, and
    how many tokens the reply may have: ``asked``, else the default within the model's context."""
    engine = served.engine
    rendered = [
        {
            "role": "system" if m.role == "developer" else m.role,
            "content": m.text(),
            **({"name": m.name} if m.name else {}),
        }
        for m in messages
    ]
    try:
        text = render_chat(engine.tokenizer, rendered, engine.backbone)
    except Exception as err:  # noqa: BLE001 - a template's own refusal (roles out of order, ...)
        message = " ".join(str(err).split())[:200]
        raise ApiError(
            400, f"the chat template of {served.name} rejects these messages: {message}", param="messages"
        ) from None
    ids = encode(engine.tokenizer, text)
    if len(ids) > limits.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt is {len(ids)} tokens, over this server's limit of {limits.max_prompt_tokens}",
            kind="context_length_exceeded",
            param="messages",
        )
    context = served.context()
    room = context - len(ids) if context else None
    max_new = asked or min(DEFAULT_MAX_TOKENS, limits.max_new_tokens, *([room] if room else []))
    if room is not None and (room < 1 or max_new > room):
        raise ApiError(
            400,
            f"the prompt ({len(ids)} tokens) and max_tokens ({max_new}) exceed the context of "
            f"{served.name} ({context} tokens)",
            kind="context_length_exceeded",
            param="messages",
        )
    return ids, max_new


async def check_schema(scheduler: Scheduler, served: Served, schema: dict) -> None:
    """A response_format schema llguidance cannot compile is the request's mistake (400)."""
    engine = served.engine

    def compile_it() -> None:
        json_constraint(schema, engine.tokenizer, len(engine.tokenizer), engine.stop_token_ids())

    try:
        await scheduler.call(compile_it)
    except (ValueError, TypeError, RuntimeError) as err:
        message = " ".join(str(err).split())[:200]
        raise ApiError(400, f"response_format schema: {message}", param="response_format") from None


class Channel:
    """Text from the model thread to a streamed response, in order."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.ready = asyncio.Event()

    def put(self, text: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, text)

    def mark_ready(self) -> None:
        self.loop.call_soon_threadsafe(self.ready.set)

    async def texts(self, done: asyncio.Future) -> AsyncIterator[str]:
        """Every piece of text until ``done`` (the job's future) has settled."""
        while True:
            getter = asyncio.ensure_future(self.queue.get())
            finished, _ = await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            if getter in finished:
                yield getter.result()
                continue
            getter.cancel()
            while not self.queue.empty():  # what the model thread sent before it finished
                yield self.queue.get_nowait()
            return


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def response_body(
    cid: str, model: str, content: str, completion: Completion, prompt_tokens: int, extra: dict | None = None
) -> dict:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": completion.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(prompt_tokens, completion.tokens),
        **(extra or {}),
    }


def chunk(cid: str, model: str, created: int, delta: dict, finish: str | None = None) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def event_stream(
    model: str,
    channel: Channel,
    done: asyncio.Future,
    outcome: Callable[[Any], tuple[Completion, int]],
    include_usage: bool,
    error_body: Callable[[BaseException], dict],
) -> AsyncIterator[str]:
    """Server-sent events of one completion: the role, each piece of text, the end (and the
    usage), then ``[DONE]``; a failure after the stream began is one ``error`` event."""
    cid, created = completion_id(), int(time.time())
    yield chunk(cid, model, created, {"role": "assistant", "content": ""})
    async for text in channel.texts(done):
        yield chunk(cid, model, created, {"content": text})
    if done.exception() is not None:
        yield f"data: {json.dumps(error_body(done.exception()), ensure_ascii=False)}\n\n"
    else:
        completion, prompt_tokens = outcome(done.result())
        yield chunk(cid, model, created, {}, completion.finish_reason)
        if include_usage:
            body = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage(prompt_tokens, completion.tokens),
            }
            yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"


def plain_job(served: Served, req: ChatRequest, ids: list[int], max_new: int, sink: Any) -> GenerateJob:
    settings = req.generation(max_new)
    return GenerateJob(
        served.engine,
        settings,
        prompt=ids,
        schema=req.schema(),
        stops=req.stops(),
        sink=sink,
        alone=settings.do_sample and req.seed is not None,
    )


__all__ = [
    "Channel",
    "ChatRequest",
    "DEFAULT_MAX_TOKENS",
    "check_schema",
    "event_stream",
    "plain_job",
    "prompt_ids",
    "response_body",
]
