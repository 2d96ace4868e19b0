"""Axolotl training config -> our recipe (YAML), to read before training with it.

``run/train.py --config axolotl.yaml`` reads an Axolotl config directly through the same mapping
(:mod:`malpyeong.training.axolotl`); this converter writes the recipe that mapping makes, checked by the
recipe parser as ``run/train.py`` would check it, and reports every key that was mapped, ignored
(with the reason) or given without a value.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from malpyeong.errors import UserError
from malpyeong.prep.converters.registry import Converted, converter
from malpyeong.training.axolotl import is_axolotl, read_config, to_recipe


def add_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--recipe_task",
        metavar="TASK",
        help="the recipe's task (default: the one task that reads the training file of 'datasets')",
    )


@converter(
    "axolotl",
    "recipe",
    "an Axolotl training config (YAML) -> our recipe (YAML); every key mapped or listed as ignored",
    add_options=add_options,
)
def convert(path: Path, args: argparse.Namespace) -> Converted:
    data = read_config(path)
    if not is_axolotl(data):
        raise UserError(
            "not an Axolotl config (no 'base_model')",
            file=str(path),
            hint="an Axolotl config names its model in base_model",
        )
    mapping = to_recipe(data, source=path, task=getattr(args, "recipe_task", None))
    check(mapping.recipe)
    report = "; ".join(mapping.report())
    details = {
        "mapped": [{"axolotl": k, "ours": v} for k, v in mapping.mapped],
        "ignored": [{"axolotl": k, "why": v} for k, v in mapping.ignored],
        "unset": mapping.unset,
    }
    return Converted(
        data=mapping.recipe, report=f"our recipe from {path}: {report}", layout="yaml", details=details
    )


def check(recipe: dict) -> None:
    """The recipe through the parser run/train.py uses (a mistake stops here, in one line)."""
    from malpyeong.training import sft_parser

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "recipe.yaml"
        copy.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
        sft_parser().parse(["--config", str(copy)])
