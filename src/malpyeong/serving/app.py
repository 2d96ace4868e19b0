"""The HTTP application: routes, the guard in front of them, and one-line errors.

Routes (OpenAI's where OpenAI has one)::

    GET    /health                          no key needed: {"status": "ok"}
    GET    /v1/models                       the served names (models and ensembles)
    GET    /v1/models/{name}
    POST   /v1/chat/completions             chat, streamed or not; ``session`` for memory
    GET    /v1/tasks                        the registered tasks
    GET    /v1/tasks/{task}/example         a made-up item in the task's official format
    POST   /v1/tasks/{task}/predict         items in the task's official format -> outputs
    GET    /v1/sessions/{id}                a session's memory: summary and buffer
    POST   /v1/sessions/{id}/reset          forget its turns and memory (keeps its settings)
    DELETE /v1/sessions/{id}
    /web                                    the Gradio page (``--web``)

Every refusal is a 4xx whose body is one line of JSON in OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``): malformed JSON, a field of the wrong type,
an unknown model or task, a prompt over the budget, a body over the size limit, a missing or
wrong API key. A bug is a 500 with the same one line (the traceback goes to the server's log,
never to the client).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from malpyeong.errors import UserError, UserErrors
from malpyeong.io import json_loads
from malpyeong.serving.batching import Scheduler, Stopping
from malpyeong.serving.chat import (
    Channel,
    ChatRequest,
    check_schema,
    completion_id,
    event_stream,
    plain_job,
    prompt_ids,
    response_body,
)
from malpyeong.serving.config import ApiError, ServeConfig
from malpyeong.serving.predict import PredictRequest, predict, task_cards, task_example
from malpyeong.serving.registry import Registry
from malpyeong.serving.sessions import (
    SessionRequest,
    SessionStore,
    check_session_id,
    memory_view,
    open_session,
    session_job,
)

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    config: ServeConfig
    registry: Registry
    scheduler: Scheduler
    sessions: SessionStore


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def api_error(err: BaseException) -> ApiError:
    """Any exception as the refusal a client sees."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, UserErrors):
        lines = err.lines()
        more = f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else ""
        return ApiError(400, lines[0] + more, param=err.errors[0].field)
    if isinstance(err, UserError):
        return ApiError(400, err.line(), param=err.field)
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
        return ApiError(400, f"field '{where}': {first.get('msg', 'invalid')}{more}", param=where)
    if isinstance(err, Stopping):
        return ApiError(503, "the server is shutting down", kind="server_error")
    log.error("internal error", exc_info=err)
    return ApiError(
        500, f"internal error ({type(err).__name__}); the server log has the details", kind="server_error"
    )


async def read_body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        data = json_loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        message = " ".join(str(err).split())[:120]
        raise ApiError(400, f"the body is not valid JSON: {message}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(data).__name__}")
    return model.model_validate(data)


class Guard:
    """Pure ASGI middleware in front of everything: the body size limit (413, whatever the
    client claims in Content-Length) and the API key on ``/v1`` (401)."""

    def __init__(self, app: Any, *, max_body: int, api_key: str | None) -> None:
        self.app, self.max_body, self.api_key = app, max_body, api_key

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and scope["path"].startswith("/v1"):
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self.api_key.encode()
            ):
                what = "a wrong API key" if given else "no API key"
                err = ApiError(401, f"{what}: send Authorization: Bearer KEY", kind="authentication_error")
                await _send_error(send, err)
                return
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            await _send_error(send, ApiError(400, "the Content-Length header is not a number"))
            return
        if length is not None and int(length) > self.max_body:
            await _send_error(send, _too_large(self.max_body))
            return
        seen = 0
        started = False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLarge:
            if not started:
                await _send_error(send, _too_large(self.max_body))


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over this server's limit of {limit} bytes", param="body")


async def _send_error(send: Callable, err: ApiError) -> None:
    body = json.dumps(err.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": err.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(state: ServerState, *, on_stop: Callable[[ServerState], None] | None = None) -> FastAPI:
    """The application over loaded models; the model thread starts and stops with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.scheduler.start()
        try:
            yield
        finally:
            # uvicorn has stopped taking requests and let the ones in flight finish (drain)
            await asyncio.to_thread(state.scheduler.close, state.config.drain_timeout)
            saved = state.sessions.flush()
            if on_stop is not None:
                on_stop(state)
            log.debug("stopped; %d session(s) saved", saved)

    app = FastAPI(title="malpyeong", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, max_body=state.config.limits.max_body_bytes, api_key=state.config.api_key)
    registry, scheduler, store, limits = state.registry, state.scheduler, state.sessions, state.config.limits

    @app.exception_handler(Exception)
    async def any_error(request: Request, err: Exception) -> JSONResponse:
        return error_response(api_error(err))

    @app.exception_handler(ApiError)
    async def refused(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = "no such route" if err.status_code == 404 else str(err.detail)
        return error_response(
            ApiError(err.status_code, f"{message}: {request.method} {request.url.path[:100]}")
        )

    for kind in (UserError, ValidationError, Stopping):
        app.add_exception_handler(kind, any_error)

    @app.get("/health")
    async def health() -> dict:
        count, rows = scheduler.batch_count, scheduler.batched_rows
        return {
            "status": "ok",
            "models": len(registry.models),
            "queued": not scheduler.idle,
            "batches": count,
            "largest_batch": scheduler.largest_batch,
            "mean_batch": round(rows / count, 2) if count else 0,
        }

    @app.get("/")
    async def root() -> Any:
        if state.config.web:
            return RedirectResponse("/web/")
        return {"object": "malpyeong", "api": "/v1", "models": registry.names()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": registry.cards()}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict:
        return registry.get(name).card(registry.created)

    @app.get("/v1/tasks")
    async def tasks() -> dict:
        return {"object": "list", "data": task_cards()}

    @app.get("/v1/tasks/{task}/example")
    async def example(task: str) -> dict:
        return task_example(task)

    @app.post("/v1/tasks/{task}/predict")
    async def task_predict(task: str, request: Request) -> dict:
        req = await read_body(request, PredictRequest)
        return await predict(scheduler, registry, task, req, limits)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        req = await read_body(request, ChatRequest)
        req.check_supported()
        served = registry.model(req.model)
        if req.session is not None:
            return await session_chat(req, served)
        req.stops()  # checked before any work
        ids, max_new = prompt_ids(served, req.messages, limits, req.asked_tokens(limits))
        schema = req.schema()
        if schema is not None:
            await check_schema(scheduler, served, schema)
        if not req.stream:
            completion = await scheduler.run(plain_job(served, req, ids, max_new, None))
            return response_body(completion_id(), served.name, completion.text, completion, len(ids))
        channel = Channel()
        job = plain_job(served, req, ids, max_new, channel.put)
        done = asyncio.wrap_future(scheduler.submit(job))
        return sse(served.name, channel, done, lambda c: (c, len(ids)), req)

    async def session_chat(req: ChatRequest, served: Any) -> Any:
        if req.response_format is not None or req.stop is not None:
            raise ApiError(
                400, "a session's replies follow its task: no stop or response_format", param="session"
            )
        last = req.messages[-1]
        if last.role != "user":
            raise ApiError(400, "with a session, the last message is the user's new line", param="messages")
        systems = [m.text() for m in req.messages if m.role in ("system", "developer")]
        sreq = SessionRequest(
            sid=check_session_id(req.session),
            line=last.text(),
            character=req.character,
            user=req.user_name,
            persona="\n".join(systems) or None,
            max_new_tokens=req.max_tokens or req.max_completion_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
        )
        if not sreq.line.strip():
            raise ApiError(400, "the new line is empty", param="messages")
        if sreq.max_new_tokens is not None and sreq.max_new_tokens > limits.max_new_tokens:
            raise ApiError(
                400, f"max_tokens is over this server's limit of {limits.max_new_tokens}", param="max_tokens"
            )
        lock = store.lock(sreq.sid)
        await lock.acquire()  # the turns of one session run one after another
        try:
            session = open_session(store, sreq, served, state.config.session_defaults)
            channel = Channel() if req.stream else None
            job = session_job(
                store,
                session,
                sreq,
                served,
                registry,
                channel.put if channel else None,
                ready=channel.mark_ready if channel else None,
            )
            done = asyncio.wrap_future(scheduler.submit(job))
        except BaseException:
            lock.release()
            raise

        def settled(future: asyncio.Future) -> None:
            if future.cancelled() or future.exception() is not None:
                store.forget(sreq.sid)  # the file holds the last good state
            lock.release()

        done.add_done_callback(settled)
        if channel is None:
            reply, completion, prompt = await done
            extra = {"session": sreq.sid}
            return response_body(
                completion_id(), served.name, reply, completion, len(prompt.input_ids), extra
            )
        waiter = asyncio.ensure_future(channel.ready.wait())
        await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
        if done.done() and done.exception() is not None:
            waiter.cancel()
            raise done.exception()
        return sse(served.name, channel, done, lambda r: (r[1], len(r[2].input_ids)), req)

    def sse(
        model: str, channel: Channel, done: asyncio.Future, outcome: Callable, req: ChatRequest
    ) -> StreamingResponse:
        include = bool(req.stream_options and req.stream_options.include_usage)
        events = event_stream(model, channel, done, outcome, include, lambda e: api_error(e).body())
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/v1/sessions/{sid}")
    async def session_memory(sid: str) -> dict:
        session = store.get(check_session_id(sid))
        if session is None:
            raise ApiError(404, f"no session {sid}", kind="not_found_error", param="session")
        served = registry.models.get(session.settings.model)
        return memory_view(sid, session, served)

    @app.post("/v1/sessions/{sid}/reset")
    async def session_reset(sid: str) -> dict:
        async with store.lock(check_session_id(sid)):
            session = store.get(sid)
            if session is None:
                raise ApiError(404, f"no session {sid}", kind="not_found_error", param="session")
            session.reset()
            store.save(sid, session)
            return memory_view(sid, session, registry.models.get(session.settings.model))

    @app.delete("/v1/sessions/{sid}")
    async def session_delete(sid: str) -> dict:
        async with store.lock(check_session_id(sid)):
            return {"id": sid, "deleted": store.delete(sid)}

    return app


__all__ = ["Guard", "ServerState", "api_error", "create_app"]
