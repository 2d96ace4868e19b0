"""Activation checkpointing as transformers 5 names it, and what LoRA under ZeRO-3 needs of it.

transformers 5 renamed ``gradient_checkpointing`` / ``gradient_checkpointing_kwargs`` to
``activation_checkpointing`` / ``activation_checkpointing_kwargs``; the old names stay aliases
until v6, resolved once when the arguments are built. trl's trainers still write the old name
afterwards (their reentrant setting for PEFT under ZeRO-3), which the Trainer then never reads;
trl's ORPO and CPO trainers, and the plain Trainer of the classification head, set nothing. So
recipes and flags are read under the current names here, and :func:`reentrant_under_zero3`
sets the current name itself for every trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from malpyeong.errors import UserError

log = logging.getLogger(__name__)

# TrainingArguments fields transformers 5 renamed (old name -> current name).
RENAMED_KEYS = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


def current_names(recipe: dict[str, Any], path: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """``recipe`` with its renamed keys under their current names, and the old names found. An
    old and a new key with different values are refused (which one is meant?)."""
    out = dict(recipe)
    found = []
    for old, new in RENAMED_KEYS.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in out and out[new] != value:
            raise UserError(
                f"'{old}' ({value!r}) and '{new}' ({out[new]!r}) disagree; '{old}' is transformers' "
                f"old name of '{new}'",
                file=path,
                field=old,
                hint=f"keep only {new}",
            )
        out[new] = value
        found.append(old)
    return out, found


def current_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``args`` with ``--gradient_checkpointing[=...]`` (and its ``_kwargs``) as the current
    flag, and the old names found."""
    out, found = [], []
    for arg in args:
        flag, eq, value = arg.partition("=")
        name = flag[2:] if flag.startswith("--") else None
        if name in RENAMED_KEYS:
            found.append(name)
            arg = f"--{RENAMED_KEYS[name]}{eq}{value}"
        out.append(arg)
    return out, found


def note_renamed(found: Sequence[str]) -> None:
    """One note for every old name a recipe or command line used."""
    if found:
        names = sorted(set(found))
        log.warning(
            "note: %s: transformers' old name of %s (removed in transformers 6), read as the new; "
            "rename it in the recipe",
            ", ".join(names),
            ", ".join(RENAMED_KEYS[n] for n in names),
        )


def reentrant_under_zero3(config: Any, model: Any, zero3: bool) -> None:
    """PEFT adapters under DeepSpeed ZeRO-3 with activation checkpointing need reentrant
    checkpointing (non-reentrant fails in backward with a ``CheckpointError``: trl issue 2514):
    set on ``config`` under the current name (and the alias, to the same dict)."""
    if not (zero3 and config.activation_checkpointing and hasattr(model, "peft_config")):
        return
    kwargs = dict(config.activation_checkpointing_kwargs or {})
    if kwargs.get("use_reentrant") is False:
        log.warning("use_reentrant: false does not work for LoRA under ZeRO-3; using reentrant checkpointing")
    kwargs["use_reentrant"] = True
    config.activation_checkpointing_kwargs = config.gradient_checkpointing_kwargs = kwargs


__all__ = ["RENAMED_KEYS", "current_flags", "current_names", "note_renamed", "reentrant_under_zero3"]
