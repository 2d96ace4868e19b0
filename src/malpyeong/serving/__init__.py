"""Serving what we train: an OpenAI-compatible HTTP server and a web page (``run/serve.py``).

One module per job:

- :mod:`.config`: what the server is told (names, limits, the bind check) and its error type;
- :mod:`.registry`: the served models, adapters of one base sharing it, ensembles;
- :mod:`.batching`: the model thread, batching per adapter, streaming rows;
- :mod:`.chat`: ``/v1/chat/completions`` (OpenAI's protocol, server-sent events);
- :mod:`.sessions`: chat sessions with ``run/chat.py``'s summary-buffer memory, kept on disk;
- :mod:`.predict`: ``/v1/tasks/{task}/predict``, the answering path of ``run/test.py``, and
  served ensembles voted with ``ensemble/vote.py``'s code;
- :mod:`.app`: routes, the guard (body size, API key), one-line errors;
- :mod:`.server`: loading, uvicorn, draining on Ctrl-C;
- :mod:`.web`: the Gradio page (chat with memory, memory state, task items).

Serving adds sessions and batching, not a second way to answer: every answer comes from the
engines and the answering path that prediction uses.

The server's libraries (FastAPI, uvicorn, Gradio) are the ``serve`` extra: this package's top
imports only what describes a server, so a missing extra is one line from
:func:`~malpyeong.serving.config.require_libraries`; the server itself is
:mod:`malpyeong.serving.server` (``serve``, ``Running``).
"""

from malpyeong.serving.config import (
    EnsembleSpec,
    Limits,
    ServeConfig,
    SessionDefaults,
    parse_ensemble,
    parse_model,
    require_libraries,
)

__all__ = [
    "EnsembleSpec",
    "Limits",
    "ServeConfig",
    "SessionDefaults",
    "parse_ensemble",
    "parse_model",
    "require_libraries",
]
