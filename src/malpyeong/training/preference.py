"""Preference objectives beside ORPO, through trl's trainers: one recipe key (``algorithm``)
chooses the trainer, its config class and our defaults for it.

    orpo   trl.experimental.orpo.ORPOTrainer   odds-ratio penalty on the SFT loss, no reference
    dpo    trl.DPOTrainer                      against a reference model: a frozen copy of the
                                               starting adapter (LoRA), the starting weights
                                               (full), or reference log-probs computed once
                                               before training (``precompute_ref_log_probs``)
    simpo  trl.experimental.cpo.CPOTrainer     ``loss_type: simpo``, ``cpo_alpha: 0``: SimPO's
                                               length-normalised margin, no reference (trl's
                                               DPO has no SimPO loss)
    kto    trl.KTOTrainer                      unpaired desirable / undesirable answers, with the
                                               same reference as DPO

Every trainer gets rows already rendered for the model (the prompt fitted to the length budget,
the responses ending with the template's end-of-turn) and tokenises them our way: no second BOS,
no extra EOS, whatever the trainer would have done with plain text.
"""

from __future__ import annotations

import copy
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from malpyeong.errors import UserError
from malpyeong.models.backbones import encode
from malpyeong.models.runfolder import is_adapter
from malpyeong.tasks.base import suggest
from malpyeong.training.recipe import (
    ALGORITHMS,
    ORPO_DEFAULTS,
    ModelArguments,
    ORPOArguments,
    RecipeParser,
)
from malpyeong.training.trainers import TaskMetricsMixin, orpo_trainer_class, rendered_pair_row

# Our defaults per objective, over trl's: the learning rate of a LoRA preference stage, and
# SimPO's beta / gamma from its paper (gamma / beta = 0.5).
PREFERENCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "orpo": ORPO_DEFAULTS,
    "dpo": {**ORPO_DEFAULTS, "beta": 0.1},
    "simpo": {**ORPO_DEFAULTS, "loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.0, "simpo_gamma": 1.0},
    "kto": {**ORPO_DEFAULTS, "beta": 0.1},
}


def check_algorithm(name: str) -> str:
    if name not in ALGORITHMS:
        raise UserError(f"unknown value '{name}'", field="algorithm", hint=suggest(name, list(ALGORITHMS)))
    return name


def algorithm_of(argv: Sequence[str]) -> str:
    """The objective a command line asks for, before its recipe is parsed (the trainer config
    class depends on it): ``--algorithm X``, else the recipe's ``algorithm:``, else orpo."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--algorithm" and i + 1 < len(args):
            return check_algorithm(args[i + 1])
        if arg.startswith("--algorithm="):
            return check_algorithm(arg.split("=", 1)[1])
    if "--config" in args and args.index("--config") + 1 < len(args):
        path = Path(args[args.index("--config") + 1])
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        except yaml.YAMLError:
            data = None  # the parser reports the broken recipe
        if isinstance(data, dict) and data.get("algorithm") is not None:
            return check_algorithm(str(data["algorithm"]))
    return "orpo"


def config_class(algorithm: str) -> type:
    """trl's config dataclass for ``algorithm``."""
    check_algorithm(algorithm)
    if algorithm == "orpo":
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig
    if algorithm == "dpo":
        from trl import DPOConfig

        return DPOConfig
    if algorithm == "simpo":
        from trl.experimental.cpo import CPOConfig

        return CPOConfig
    from trl import KTOConfig

    return KTOConfig


def preference_parser(algorithm: str = "orpo") -> RecipeParser:
    """Preference recipes: :class:`ORPOArguments`, the model's arguments and the trl config
    of ``algorithm`` with our defaults for it."""
    return RecipeParser(
        ORPOArguments, config_class(algorithm), {**PREFERENCE_DEFAULTS[algorithm], "algorithm": algorithm}
    )


# ---------------------------------------------------------------------------------------------
# trainers


def dpo_trainer_class() -> type:
    from trl import DPOTrainer

    class MalpyeongDPOTrainer(TaskMetricsMixin, DPOTrainer):
        """trl's DPOTrainer on rows rendered for the model (see the module docstring)."""

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            tok = self._tokenizer

            def tokenize(row: dict) -> dict:
                return {
                    "prompt_ids": encode(tok, row["prompt"]),
                    "chosen_ids": tok(row["chosen"], add_special_tokens=False)["input_ids"],
                    "rejected_ids": tok(row["rejected"], add_special_tokens=False)["input_ids"],
                }

            return dataset.map(tokenize, remove_columns=dataset.column_names)

    return MalpyeongDPOTrainer


def simpo_trainer_class() -> type:
    from trl.experimental.cpo import CPOTrainer

    class MalpyeongSimPOTrainer(TaskMetricsMixin, CPOTrainer):
        """trl's CPOTrainer (SimPO with ``loss_type: simpo``, ``cpo_alpha: 0``) on rendered rows."""

        def tokenize_row(self, feature: dict, model: Any = None) -> dict:
            return rendered_pair_row(self.processing_class, self.max_length, feature)

    return MalpyeongSimPOTrainer


def kto_trainer_class() -> type:
    from trl import KTOTrainer

    class MalpyeongKTOTrainer(TaskMetricsMixin, KTOTrainer):
        """trl's KTOTrainer on rendered ``{prompt, completion, label}`` rows; the mismatched
        completions of the KL estimate are built as trl builds them (rotated within a batch)."""

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            tok = self._tokenizer

            def tokenize(row: dict) -> dict:
                return {
                    "prompt_ids": encode(tok, row["prompt"]),
                    "completion_ids": tok(row["completion"], add_special_tokens=False)["input_ids"],
                }

            dataset = dataset.map(tokenize, remove_columns=[c for c in dataset.column_names if c != "label"])
            if self.calculate_KL:

                def rotate(batch: dict) -> dict:
                    ids = batch["completion_ids"]
                    return {"KL_completion_ids": [ids[-1]] + ids[:-1]}

                dataset = dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)
            return dataset

    return MalpyeongKTOTrainer


def preference_trainer_class(algorithm: str) -> type:
    check_algorithm(algorithm)
    return {
        "orpo": orpo_trainer_class,
        "dpo": dpo_trainer_class,
        "simpo": simpo_trainer_class,
        "kto": kto_trainer_class,
    }[algorithm]()


def reference_kwargs(
    algorithm: str, model: Any, model_args: ModelArguments, config: Any, started_in_memory: bool
) -> dict:
    """The trainer's ``ref_model`` where trl would pick the wrong one.

    trl finds the reference itself for an adapter (a frozen copy of the starting adapter) and
    for full weights loaded from disk (reloaded from the same folder). Full weights changed in
    memory before training (an SFT adapter merged in) are not on disk: the reference is a
    frozen copy of them, unless reference log-probs are computed once before training.
    """
    if algorithm not in ("dpo", "kto") or model_args.method != "full" or not started_in_memory:
        return {}
    if getattr(config, "precompute_ref_log_probs", False):
        return {}
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return {"ref_model": ref}


def drop_reference_adapter(adapter_dir: Path) -> None:
    """trl keeps DPO's / KTO's reference as a second, frozen adapter named ``ref`` and peft
    saves it beside the trained one (``adapter/ref/``). It is the starting adapter, not the
    result: removed, so the folder holds what was trained."""
    ref = Path(adapter_dir) / "ref"
    if is_adapter(ref):
        shutil.rmtree(ref)


# ---------------------------------------------------------------------------------------------
# KTO rows


def as_pairs(examples: Sequence[dict]) -> list[dict]:
    """Unpaired examples in the pair layout (the completion on both sides), so the pair row
    builder renders and fits their prompts exactly as it does for pairs."""
    return [{**e, "chosen": e["completion"], "rejected": e["completion"]} for e in examples]


def unpaired_rows(rendered: Sequence[dict], examples: Sequence[dict], seed: int) -> list[dict]:
    """``{prompt, completion, label}`` rows from rendered :func:`as_pairs` rows, shuffled.

    KTO reads its data in order (the KL estimate pairs neighbours in a batch), so the rows are
    shuffled here, with the run's seed, to mix desirable and undesirable answers in each batch.
    """
    label = {e["id"]: e["label"] for e in examples}
    rows = [
        {"id": r["id"], "prompt": r["prompt"], "completion": r["chosen"], "label": label[r["id"]]}
        for r in rendered
    ]
    random.Random(seed).shuffle(rows)
    return rows


__all__ = [
    "PREFERENCE_DEFAULTS",
    "algorithm_of",
    "as_pairs",
    "check_algorithm",
    "config_class",
    "dpo_trainer_class",
    "drop_reference_adapter",
    "kto_trainer_class",
    "preference_parser",
    "preference_trainer_class",
    "reference_kwargs",
    "simpo_trainer_class",
    "unpaired_rows",
]
