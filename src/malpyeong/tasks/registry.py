"""The task registry: tasks register by name, callers find them by name.

An unknown name suggests the nearest known one. Command-line ``--task`` choices and help come
from here, so a registered task appears in every script without editing it.
"""

from __future__ import annotations

from malpyeong.errors import UserError
from malpyeong.tasks.base import Task, suggest

TASKS: dict[str, type[Task]] = {}
# The task a training run is for when its recipe names none (the competition's headline task,
# so `run/train.py --model X` works as the teams' scripts did).
DEFAULT_TASK = "cci"


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: ``@register class MemoryTask(GenerateTask): name = "memory"``."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str | Task) -> Task:
    if isinstance(name, Task):
        return name
    key = str(name).lower()
    if key not in TASKS:
        raise UserError(f"unknown task '{name}'", field="task", hint=suggest(key, sorted(TASKS)))
    return TASKS[key]()


def task_names() -> list[str]:
    return sorted(TASKS)


def tasks_help() -> str:
    """``name: description`` of every registered task, for ``--task``'s help."""
    return "; ".join(f"{n}: {TASKS[n].description}" if TASKS[n].description else n for n in task_names())
