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
"""

from malpyeong.serving.config import (
    EnsembleSpec,
    Limits,
    ServeConfig,
    SessionDefaults,
    parse_ensemble,
    parse_model,
)
from malpyeong.serving.server import Running, build_app, build_state, serve

__all__ = [
    "EnsembleSpec",
    "Limits",
    "Running",
    "ServeConfig",
    "SessionDefaults",
    "build_app",
    "build_state",
    "parse_ensemble",
    "parse_model",
    "serve",
]
