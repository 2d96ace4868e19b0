"""Retrieved passages for the items a model answers or trains on (``--retrieve INDEX``).

Training and prediction both call :func:`with_passages`, so a model is asked with the
passages it was trained with: the same index folder, the same ``k`` and ranking mode, searched
with the task's own query (:meth:`~malpyeong.tasks.base.Task.retrieval_query`). The settings go
into the run file (prediction's defaults) and into the results sidecar's header (a resumed
prediction must use the same ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.retrieval.index import KINDS, META, Index
from malpyeong.rules import Rules, check_retrieval
from malpyeong.tasks.base import Task

DEFAULT_K = 5


@dataclass(frozen=True)
class RetrievalSettings:
    index: str  # the index folder (run/retrieve.py build)
    k: int = DEFAULT_K  # passages per item
    mode: str | None = None  # sparse, dense or hybrid (default: the index's kind)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UserError(f"must be at least 1, got {self.k}", field="retrieve_k")
        if self.mode is not None and self.mode not in KINDS:
            raise UserError(f"unknown mode '{self.mode}'", field="retrieve_mode", hint=", ".join(KINDS))
        if not (Path(self.index) / META).is_file():
            raise UserError(
                "not a retrieval index (no index.json)",
                file=self.index,
                field="retrieve",
                hint="build one with run/retrieve.py build --corpus FILES --out FOLDER",
            )

    def meta(self) -> dict:
        return {"index": str(Path(self.index).resolve()), "k": self.k, "mode": self.mode}

    @classmethod
    def from_meta(cls, meta: dict) -> RetrievalSettings:
        return cls(meta["index"], int(meta.get("k", DEFAULT_K)), meta.get("mode"))


def check_task_retrieval(task: Task, settings: RetrievalSettings | None, rules: Rules | None) -> None:
    """Before any work: the task takes passages, and the rules allow its corpus."""
    if settings is None:
        return
    if not task.retrieval:
        raise UserError(
            f"task {task.name} does not take retrieved passages",
            field="retrieve",
            hint="leave out --retrieve",
        )
    if rules is not None:
        check_retrieval(rules, official_corpus=task.official_corpus, index=settings.index)


def with_passages(
    task: Task, items: Sequence[Any], settings: RetrievalSettings | None, *, device: str | None = None
) -> list[Any]:
    """``items`` with their top ``settings.k`` passages (unchanged without settings)."""
    if settings is None or not items:
        return list(items)
    index = Index.load(settings.index, device=device)
    return task.add_passages(list(items), index, settings.k, mode=index.check_mode(settings.mode))


__all__ = ["DEFAULT_K", "RetrievalSettings", "check_task_retrieval", "with_passages"]
