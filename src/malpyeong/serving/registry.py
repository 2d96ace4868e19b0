"""The served models: every name loaded once, adapters of one base sharing it, and ensembles.

Each ``--model NAME=SOURCE`` is resolved as ``run/test.py`` resolves ``--model``
(:func:`~malpyeong.inference.loading.resolve_source`: run folder, adapter folder, model folder
or hub id). Names whose weights are the same base (LoRA runs of one backbone, and the backbone
itself) are loaded together: the base once, each adapter attached under its name
(:func:`~malpyeong.inference.loading.load_adapters`; with ``--engine vllm`` one
``LLM(enable_lora=True)`` and a ``LoRARequest`` per name). A name alone on its base loads as
``run/test.py`` loads it (an adapter merged in; a classification head as its own engine).
Each name keeps its run's defaults (prompt variant, max_length, task), as prediction does.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from malpyeong.errors import UserError
from malpyeong.inference.classifier import is_classifier_run
from malpyeong.inference.engines import Engine
from malpyeong.inference.loading import (
    VLLM_LORA_RANKS,
    ModelSource,
    check_generates,
    load_adapters,
    load_engine,
    load_vllm_adapters,
    resolve_source,
)
from malpyeong.models.runfolder import ADAPTER_CONFIG, model_key, read_json
from malpyeong.serving.config import ApiError, EnsembleSpec, ServeConfig
from malpyeong.tasks import Task, get_task

log = logging.getLogger(__name__)


@dataclass
class Served:
    """One served name: its engine, where it came from, and its run's defaults."""

    name: str
    engine: Engine
    source: ModelSource
    shared: str | None = None  # the base it shares with other names, when it does

    @property
    def task(self) -> Task | None:
        """The task its run was trained for (None: a bare model, or a run that names none)."""
        name = self.source.run.get("task")
        return get_task(name) if name else None

    @property
    def prompt(self) -> str | None:
        return self.source.defaults.get("prompt")

    @property
    def max_length(self) -> int | None:
        return self.source.defaults.get("max_length")

    def context(self) -> int | None:
        return self.engine.context_size()

    def card(self, created: int) -> dict:
        task = self.task
        info = {"kind": "model", "source": self.source.kind, "task": task.name if task else None}
        if self.shared:
            info["shares_base_with"] = self.shared
        return {"id": self.name, "object": "model", "created": created, "owned_by": "malpyeong", **info}


@dataclass
class Ensemble:
    name: str
    members: tuple[str, ...]
    weights: tuple[float, ...] | None
    method: str | None

    def card(self, created: int) -> dict:
        return {
            "id": self.name,
            "object": "model",
            "created": created,
            "owned_by": "malpyeong",
            "kind": "ensemble",
            "members": list(self.members),
            "method": self.method or "hard",
            "weights": list(self.weights) if self.weights else None,
        }


class Registry:
    def __init__(self, models: dict[str, Served], ensembles: dict[str, Ensemble]) -> None:
        self.models, self.ensembles = models, ensembles
        self.created = int(time.time())

    def get(self, name: object) -> Served | Ensemble:
        if isinstance(name, str):
            if name in self.models:
                return self.models[name]
            if name in self.ensembles:
                return self.ensembles[name]
        shown = name if isinstance(name, str) and len(name) <= 80 else "(that name)"
        raise ApiError(
            404,
            f"unknown model '{shown}'; served: {', '.join(self.names())}",
            kind="not_found_error",
            param="model",
        )

    def model(self, name: object) -> Served:
        found = self.get(name)
        if isinstance(found, Ensemble):
            raise ApiError(
                400,
                f"{found.name} is an ensemble: it answers task items (POST /v1/tasks/TASK/predict), not chats",
                param="model",
            )
        return found

    def names(self) -> list[str]:
        return [*self.models, *self.ensembles]

    def cards(self) -> list[dict]:
        return [m.card(self.created) for m in self.models.values()] + [
            e.card(self.created) for e in self.ensembles.values()
        ]


def load_registry(config: ServeConfig) -> Registry:
    """Resolve every source first (one line for the first mistake, before anything loads), then
    load each base once."""
    sources = {name: resolve_source(source) for name, source in config.models.items()}
    for source in sources.values():
        check_generates(source)  # an encoder or a bare classifier: refused before any loads
    groups: dict[str, list[str]] = defaultdict(list)
    alone: list[str] = []
    for name, source in sources.items():
        if is_classifier_run(source.run):
            if config.engine != "hf":
                raise UserError("a classification head runs on the hf engine", file=name, field="engine")
            alone.append(name)
        else:
            groups[model_key(source.weights)].append(name)
    models: dict[str, Served] = {}
    for name in alone:
        models[name] = Served(name, _load_one(sources[name], config), sources[name])
    for names in groups.values():
        group = {n: sources[n] for n in names}
        if config.engine == "vllm":
            engines: dict[str, Engine] = dict(
                load_vllm_adapters(
                    group,
                    dtype=config.dtype,
                    tensor_parallel_size=config.tensor_parallel_size,
                    trust_remote_code=config.trust_remote_code,
                )
            )
        elif len(names) == 1:
            engines = {names[0]: _load_one(group[names[0]], config)}
        else:
            engines = load_adapters(
                group, dtype=config.dtype, device=config.device, trust_remote_code=config.trust_remote_code
            )
        for n in names:
            others = [o for o in names if o != n]
            models[n] = Served(n, engines[n], sources[n], shared=", ".join(others) if others else None)
    ordered = {n: models[n] for n in config.models}
    ensembles = {e.name: _ensemble(e, ordered, config) for e in config.ensembles}
    return Registry(ordered, ensembles)


def vllm_commands(config: ServeConfig) -> list[str]:
    """The ``vllm serve`` command that serves each base of ``config`` and its adapters through
    vLLM's own OpenAI server (what ``--engine vllm`` does in this server): the base under its
    name when it is served itself, each adapter as ``--lora-modules NAME=FOLDER``. Nothing is
    loaded; the run folders are only read."""
    sources = {name: resolve_source(source) for name, source in config.models.items()}
    groups: dict[str, list[str]] = defaultdict(list)
    for name, source in sources.items():
        if is_classifier_run(source.run):
            raise UserError("a classification head does not run on vLLM", file=name, field="model")
        groups[model_key(source.weights)].append(name)
    commands = []
    for port, names in enumerate(groups.values(), config.port):
        first = sources[names[0]]
        bare = [n for n in names if not sources[n].adapter]
        adapters = {n: sources[n].adapter for n in names if sources[n].adapter}
        parts = ["vllm serve", shlex.quote(first.weights), "--host 127.0.0.1", f"--port {port}"]
        if bare:
            parts.append("--served-model-name " + " ".join(shlex.quote(n) for n in bare))
        if adapters:
            ranks = [int(read_json(Path(p) / ADAPTER_CONFIG).get("r") or 16) for p in adapters.values()]
            rank = next((r for r in VLLM_LORA_RANKS if r >= max(ranks)), max(ranks))
            parts += [
                "--enable-lora",
                f"--max-loras {len(adapters)}",
                f"--max-lora-rank {rank}",
                "--lora-modules",
            ]
            parts += [shlex.quote(f"{n}={p}") for n, p in adapters.items()]
        if config.api_key:
            parts.append('--api-key "$MALPYEONG_API_KEY"')
        commands.append(" \\\n    ".join(_pairs(parts)))
    return commands


def _pairs(parts: list[str]) -> list[str]:
    """Command parts on lines of about 100 characters."""
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part) > 96:
            lines.append(line)
            line = part
        else:
            line = f"{line} {part}".strip()
    return [*lines, line]


def _load_one(source: ModelSource, config: ServeConfig) -> Engine:
    return load_engine(
        source,
        engine=config.engine,
        dtype=config.dtype,
        device=config.device,
        trust_remote_code=config.trust_remote_code,
        tensor_parallel_size=config.tensor_parallel_size,
        structured=True,
    )


def _ensemble(spec: EnsembleSpec, models: dict[str, Served], config: ServeConfig) -> Ensemble:
    tasks = {m: models[m].task.name for m in spec.members if models[m].task is not None}
    if len(set(tasks.values())) > 1:
        raise UserError(
            f"ensemble {spec.name} mixes models of different tasks: "
            + ", ".join(f"{m} ({t})" for m, t in tasks.items()),
            field="ensemble",
        )
    return Ensemble(spec.name, spec.members, spec.weights, config.vote_method)


__all__ = ["Ensemble", "Registry", "Served", "load_registry", "vllm_commands"]
