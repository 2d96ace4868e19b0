"""Start the server: load the models, build the application, run it under uvicorn.

Ctrl-C (or SIGTERM) drains: uvicorn stops accepting connections and lets the requests in
flight finish (streamed replies included, up to ``drain_timeout`` seconds), then the model
thread finishes what is queued and every session in memory is written. :class:`Running` runs
the same server on a thread (tests, benchmarks, the web page's own server), on port 0 for a
free port.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from malpyeong.errors import UserError
from malpyeong.serving.app import ServerState, create_app
from malpyeong.serving.batching import Scheduler
from malpyeong.serving.config import ServeConfig
from malpyeong.serving.registry import Registry, load_registry
from malpyeong.serving.sessions import SessionStore

log = logging.getLogger(__name__)


def build_state(config: ServeConfig, registry: Registry | None = None) -> ServerState:
    registry = registry if registry is not None else load_registry(config)
    summarizer = config.session_defaults.summarizer
    if summarizer not in (None, "extractive") and summarizer not in registry.models:
        raise UserError(
            f"--summarizer {summarizer} is not a served model",
            field="summarizer",
            hint=f"'extractive', or one of {', '.join(registry.models)}",
        )
    scheduler = Scheduler(window=config.window, max_batch=config.max_batch)
    return ServerState(config, registry, scheduler, SessionStore(config.sessions))


def build_app(state: ServerState, *, on_stop: Callable[[ServerState], None] | None = None) -> Any:
    app = create_app(state, on_stop=on_stop)
    app.state.web_api = None
    if state.config.web:
        from malpyeong.serving.web import mount_web

        app.state.web_api = mount_web(app, state.config)
    return app


def uvicorn_server(app: Any, config: ServeConfig, *, announce: Callable[[str], None] | None = None) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.servers:
                port = self.servers[0].sockets[0].getsockname()[1]
                web_api = getattr(app.state, "web_api", None)
                if web_api is not None:  # the page calls the port actually bound (port 0)
                    web_api.base = config.self_url.rsplit(":", 1)[0] + f":{port}"
                if announce is not None:
                    announce(f"http://{_shown_host(config.host)}:{port}")

    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(config.drain_timeout),
        lifespan="on",
    )
    return Server(settings)


def _shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(config: ServeConfig, *, out: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C; what it serves and where goes to ``out``."""
    state = build_state(config)
    width = max(len(n) for n in state.registry.names())
    for name, served in state.registry.models.items():
        src = served.source
        what = f"adapter {src.adapter} on {src.weights}" if src.adapter and served.shared else src.weights
        task = f"; task {served.task.name}" if served.task else ""
        out(f"  {name:<{width}}  {what}{task}")
    for name, ensemble in state.registry.ensembles.items():
        out(
            f"  {name:<{width}}  ensemble of {', '.join(ensemble.members)} ({ensemble.method or 'hard'} voting)"
        )

    def stopped(s: ServerState) -> None:
        out(
            f"stopped: requests in flight finished, {len(s.sessions.cache)} session(s) saved in {s.config.sessions}"
        )

    def ready(url: str) -> None:
        web = f"; web page {url}/web/" if config.web else ""
        key = " (Bearer key required)" if config.api_key else ""
        out(f"serving on {url}/v1{key}{web}; Ctrl-C drains and stops")
        sys.stdout.flush()

    server = uvicorn_server(build_app(state, on_stop=stopped), config, announce=ready)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises the Ctrl-C it drained for again: done cleanly
        pass
    return 0


class Running:
    """A server on a background thread (``with Running(config) as url: ...``)."""

    def __init__(
        self, config: ServeConfig, registry: Registry | None = None, *, timeout: float = 300
    ) -> None:
        self.state = build_state(config, registry)
        self.url: str | None = None
        self.server = uvicorn_server(build_app(self.state), config, announce=self._ready)
        self.thread = threading.Thread(target=self.server.run, name="malpyeong-server", daemon=True)
        self.timeout = timeout
        self._started = threading.Event()

    def _ready(self, url: str) -> None:
        self.url = url
        self._started.set()

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self._started.wait(0.1):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
        return self.url or ""

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["Running", "build_app", "build_state", "serve"]
