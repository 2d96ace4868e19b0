"""What run/train.py and orpo/train.py share: their recipe parsers, --list-models, the Ctrl-C
hint (library noise is silenced for every script in :func:`malpyeong.cli.quiet_libraries`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from malpyeong.training.recipe import (
    ORPO_DEFAULTS,
    TRAINER_DEFAULTS,
    ORPOArguments,
    RecipeParser,
    SFTArguments,
)


def sft_parser() -> RecipeParser:
    """SFT recipes: :class:`SFTArguments`, the model's arguments and trl's ``SFTConfig``."""
    from trl import SFTConfig

    return RecipeParser(SFTArguments, SFTConfig, TRAINER_DEFAULTS)


def orpo_parser() -> RecipeParser:
    """ORPO recipes: :class:`ORPOArguments`, the model's arguments and trl's ``ORPOConfig``."""
    from trl.experimental.orpo import ORPOConfig

    return RecipeParser(ORPOArguments, ORPOConfig, ORPO_DEFAULTS)


def has_flag(argv: Sequence[str] | None, flag: str) -> bool:
    """Whether ``flag`` is on the command line (answered before the recipe parser is built)."""
    return flag in (sys.argv[1:] if argv is None else argv)


# What Ctrl-C prints outside the training loop (which says exactly how to continue: see
# trainers.interrupted_hint): before training nothing was replaced; after, --resume continues.
INTERRUPTED = (
    "interrupted; rerun the same command (with --resume once a checkpoint was saved, to continue from it)"
)
