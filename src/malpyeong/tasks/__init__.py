"""Task registry: ``get_task("cci")``; an unknown name suggests the nearest known one."""

from __future__ import annotations

from malpyeong.errors import UserError
from malpyeong.tasks.base import ChoiceTask, GenerateTask, PromptSpec, Task, suggest
from malpyeong.tasks.cci import CCITask
from malpyeong.tasks.dcs import DCSTask

TASKS: dict[str, type[Task]] = {"cci": CCITask, "dcs": DCSTask}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator for new tasks: ``@register class MemoryTask(GenerateTask): name = "memory"``."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> Task:
    if isinstance(name, Task):
        return name
    key = str(name).lower()
    if key not in TASKS:
        raise UserError(f"unknown task '{name}'", field="task", hint=suggest(key, sorted(TASKS)))
    return TASKS[key]()


__all__ = ["TASKS", "ChoiceTask", "GenerateTask", "PromptSpec", "Task", "get_task", "register"]
