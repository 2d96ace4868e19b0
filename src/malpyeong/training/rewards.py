"""The rewards of a GRPO run, as trl's ``GRPOTrainer`` calls them, and the group statistics.

The task names its rewards (:meth:`malpyeong.tasks.base.Task.rewards`: ``format``, ``correct``,
``quality``, ...) with default weights; ``reward_weights`` (``format=0.2,correct=1`` on the
command line, or a mapping in the recipe) changes them, and ``extra_rewards`` adds a user's own
functions by dotted path (``package.module.function`` or ``path/to/file.py:function``), written
as trl's reward functions are: ``f(prompts, completions, **columns) -> list[float | None]``. The
columns a user function receives besides trl's own: ``id`` (the item's id), ``row`` (its
position in the training file) and ``reference`` (the gold completion as the model would write
it).

A group is the ``num_generations`` completions of one prompt. A group whose rewards do not
differ gives every completion an advantage of zero: nothing to learn from that prompt on that
step. :func:`zero_spread` finds them, for either way trl combines several rewards.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError, one_line
from malpyeong.tasks.base import Task
from malpyeong.tasks.rewards import Reward

AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")  # trl's multi_objective_aggregation
SPREAD_TOLERANCE = 1e-6  # rewards closer than this count as equal


def parse_reward_weights(value: str | dict | None) -> dict[str, float]:
    """``name=weight`` pairs from ``format=0.2,correct=1`` (flag) or ``{format: 0.2}`` (recipe)."""
    if value is None or value == "":
        return {}
    hint = "write name=weight pairs separated by commas, e.g. format=0.2,correct=1,quality=0.5"
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for part in value.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise UserError(f"'{part.strip()}' is not name=weight", field="reward_weights", hint=hint)
            name, weight = part.split("=", 1)
            pairs.append((name.strip(), weight.strip()))
    else:
        raise UserError(f"must be name=weight pairs, got {value!r}", field="reward_weights", hint=hint)
    weights: dict[str, float] = {}
    for name, weight in pairs:
        if not name:
            raise UserError("a weight without a reward name", field="reward_weights", hint=hint)
        try:
            number = float(weight) if not isinstance(weight, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise UserError(f"the weight of '{name}' is not a number: {weight!r}", field="reward_weights")
        if name in weights:
            raise UserError(f"'{name}' is weighted twice", field="reward_weights")
        weights[name] = number
    return weights


def load_user_reward(path: str) -> Callable:
    """A user's reward function: ``package.module.function`` or ``path/to/file.py:function``."""
    hint = "give package.module.function (importable) or path/to/file.py:function"
    if ":" in path:
        file, name = path.rsplit(":", 1)
        where = Path(file)
        if not where.is_file():
            raise UserError("file not found", file=file, field="extra_rewards", hint=hint)
        spec = importlib.util.spec_from_file_location(f"malpyeong_user_reward_{where.stem}", where)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's code: one line, not a traceback
            raise UserError(f"cannot load: {one_line(err, 200)}", file=file, field="extra_rewards") from None
    else:
        module_name, _, name = path.rpartition(".")
        if not module_name:
            raise UserError(f"'{path}' names no module", field="extra_rewards", hint=hint)
        if "" not in sys.path and "." not in sys.path:  # a module beside the command, as python -m finds it
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # noqa: BLE001 - the user's code: one line, not a traceback
            raise UserError(
                f"cannot import {module_name}: {one_line(err, 200)}", field="extra_rewards", hint=hint
            ) from None
    func = getattr(module, name, None)
    if not callable(func):
        raise UserError(f"'{name}' is not a function of {path.rsplit(':', 1)[0]}", field="extra_rewards")
    return func


class TaskRewardFunction:
    """One of the task's rewards in trl's reward-function form: it reads the items by the
    ``row`` column, so the gold output comes from the item as the task parsed it."""

    def __init__(self, reward: Reward, items: Sequence[Any]) -> None:
        self.reward, self.items = reward, items
        self.__name__ = reward.name  # trl logs rewards/<name>/mean and /std

    def __call__(self, prompts: list, completions: list, row: list[int], **_: Any) -> list[float | None]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return self.reward([self.items[r] for r in row], texts)


@dataclass(frozen=True)
class RewardSet:
    """The rewards of a run, in the order trl gets them, with their weights."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    funcs: tuple[Callable, ...]
    helps: tuple[str, ...]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights, strict=True))


def reward_set(
    task: Task,
    items: Sequence[Any],
    weights: dict[str, float],
    extra: Sequence[str] = (),
    *,
    bertscore_model: str | None = None,
    device: str | None = None,
) -> RewardSet:
    """The task's rewards (with ``bertscore`` when a model is given) and the user's, weighted:
    ``weights`` overrides the defaults by name; a name no reward has is refused."""
    rewards = task.rewards(bertscore_model=bertscore_model, device=device)
    names = [r.name for r in rewards]
    funcs: list[Callable] = [TaskRewardFunction(r, items) for r in rewards]
    helps = [r.help for r in rewards]
    defaults = [r.weight for r in rewards]
    for path in extra:
        func = load_user_reward(path)
        name = getattr(func, "__name__", path)
        if name in names:
            raise UserError(
                f"reward '{name}' is already a reward of task {task.name}",
                field="extra_rewards",
                hint="rename the function",
            )
        names.append(name)
        funcs.append(func)
        helps.append(f"user reward {path}")
        defaults.append(1.0)
    unknown = [n for n in weights if n not in names]
    if unknown:
        raise UserError(
            f"no reward called '{unknown[0]}' for task {task.name}",
            field="reward_weights",
            hint="rewards: " + ", ".join(names),
        )
    final = [weights.get(n, d) for n, d in zip(names, defaults, strict=True)]
    if not any(final):
        raise UserError("every reward has weight 0: nothing to learn", field="reward_weights")
    return RewardSet(tuple(names), tuple(final), tuple(funcs), tuple(helps))


def zero_spread(rewards: Any, weights: Sequence[float], group_size: int, aggregation: str) -> Any:
    """Per group of ``group_size`` consecutive rows of ``rewards`` (completions x rewards, NaN
    where a reward does not apply): True where the group teaches nothing.

    ``sum_then_normalize`` (trl's default): the weighted sums are all equal. ``normalize_then_sum``:
    every reward of non-zero weight is equal across the group (each is normalised within the
    group before the weighted sum, so a flat reward contributes zero).
    """
    import torch

    values = torch.as_tensor(rewards, dtype=torch.float32)
    w = torch.as_tensor(list(weights), dtype=torch.float32)
    if aggregation == "normalize_then_sum":
        grouped = values[:, w != 0].reshape(-1, group_size, int((w != 0).sum()))
    else:
        total = (values * w).nansum(dim=1)
        total[torch.isnan(values).all(dim=1)] = torch.nan
        grouped = total.reshape(-1, group_size, 1)
    present = ~torch.isnan(grouped)
    high = torch.where(present, grouped, -torch.inf).amax(dim=1)
    low = torch.where(present, grouped, torch.inf).amin(dim=1)
    spread = torch.where(present.any(dim=1), high - low, torch.zeros_like(high))
    return (spread <= SPREAD_TOLERANCE).all(dim=1)


__all__ = [
    "AGGREGATIONS",
    "RewardSet",
    "TaskRewardFunction",
    "load_user_reward",
    "parse_reward_weights",
    "reward_set",
    "zero_spread",
]
