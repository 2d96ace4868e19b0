"""What run/train.py and orpo/train.py share: their recipe parsers and a quiet console."""

from __future__ import annotations

import logging
import os
import sys
import warnings
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


def quiet_libraries() -> None:
    """Keep third-party chatter (kernel hub notices, tokenizer fork warnings) off the console."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO lives in trl.experimental
    # trl's configs still default the deprecated alias; the value is honoured either way
    warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated",
                            category=FutureWarning)
    for name in ("bitsandbytes", "kernels", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # the datasets map bars over our pre-tokenised rows are noise; training keeps its bar
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def has_flag(argv: Sequence[str] | None, flag: str) -> bool:
    """Whether ``flag`` is on the command line (answered before the recipe parser is built)."""
    return flag in (sys.argv[1:] if argv is None else argv)
