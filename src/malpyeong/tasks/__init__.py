"""Tasks: the interface (:mod:`.base`), the registry (:mod:`.registry`) and the tasks themselves.

``get_task("cci")`` finds a task by name; a new task module registers itself with
``@register`` and is imported here.
"""

from __future__ import annotations

from malpyeong.tasks import cci, chat, dcs, memory, qa  # noqa: F401 - importing registers them
from malpyeong.tasks.base import (
    ChoiceTask,
    GenerateTask,
    Metric,
    PromptSpec,
    Task,
    TaskItem,
    Utterance,
)
from malpyeong.tasks.registry import (
    DEFAULT_TASK,
    TASKS,
    get_task,
    register,
    task_names,
    tasks_help,
)

__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "ChoiceTask",
    "GenerateTask",
    "Metric",
    "PromptSpec",
    "Task",
    "TaskItem",
    "Utterance",
    "get_task",
    "register",
    "task_names",
    "tasks_help",
]
