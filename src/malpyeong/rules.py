"""Competition rules (``--rules 2025``): what an edition of 말평 allows, checked before work starts.

A small table, from the published conditions as issue 14 summarises them: the 2025 edition
forbids external data and data augmentation in the 가 setting and ensembles in both, and limits
a submission to one 24 GB GPU; in 2024 ensembles were allowed (the winners voted over up to 11
models) and the 나 setting limited inference to one RTX 4090 (24 GB). ``ensemble/vote.py``
refuses to combine models under rules without ensembles; ``run/train.py`` refuses extra
training files (Magpie, distillation records) under rules without external data, option-order
copies and synthetic items under rules without augmentation, and prints a memory estimate of the
recipe against the VRAM limit (:mod:`malpyeong.training.vram`) before anything is loaded.

A task names the editions it belongs to; rules of another edition say so in a note (their
checks still apply: a 2025 team may train on 2024 data under 2025 conditions). Retrieval (``--retrieve``) reads a corpus: external data,
unless the competition itself ships that corpus with the task (the 2025 norms task's
reference document), so without external data only such a task may retrieve.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from malpyeong.errors import UserError


@dataclass(frozen=True)
class Rules:
    name: str
    ensembles: bool  # may several models' outputs be combined (voting, MBR, selection)?
    external_data: bool  # may training use data beyond the task's official files?
    vram_gb: float | None  # the GPU memory a run may use (None: no limit)
    summary: str
    augmentation: bool = True  # may the training data be augmented (copies, synthetic items)?

    @property
    def edition(self) -> str:
        return self.name.split("-", 1)[0]


RULES: dict[str, Rules] = {
    r.name: r
    for r in [
        Rules("2024-가", True, False, None, "2024, 가 setting: official data only"),
        Rules(
            "2024-나",
            True,
            True,
            24.0,
            "2024, 나 setting: external data allowed, one 24 GB GPU (RTX 4090) for inference",
        ),
        Rules(
            "2025-가",
            False,
            False,
            24.0,
            "2025, 가 setting: official data only, no augmentation, no ensembles, one 24 GB GPU",
            augmentation=False,
        ),
        Rules(
            "2025-나",
            False,
            True,
            24.0,
            "2025, 나 setting: external data allowed, no ensembles, one 24 GB GPU",
        ),
    ]
}
ALIASES = {"2024": "2024-가", "2025": "2025-가"}  # an edition alone means its stricter setting


def get_rules(name: str) -> Rules:
    """The rules called ``name`` (``2025`` = ``2025-가``); one error line for an unknown name."""
    key = ALIASES.get(name, name)
    if key in RULES:
        return RULES[key]
    known = sorted(RULES) + sorted(ALIASES)
    close = difflib.get_close_matches(name, known, n=1)
    raise UserError(
        f"unknown rules '{name}'",
        field="rules",
        hint=(f"did you mean '{close[0]}'? " if close else "") + "one of " + ", ".join(known),
    )


def check_ensemble(rules: Rules, n_models: int) -> None:
    """Refuse to combine ``n_models`` (> 1) models' outputs where ensembles are not allowed."""
    if n_models > 1 and not rules.ensembles:
        raise UserError(
            f"the {rules.name} rules allow no ensembles: {n_models} models' results would be combined",
            field="rules",
            hint="submit one model's results (run/test.py), or drop --rules",
        )


def check_external_data(rules: Rules, files: list[str] | None) -> None:
    """Refuse extra training files where only the official data may be used."""
    if files and not rules.external_data:
        raise UserError(
            f"the {rules.name} rules allow no external data: {len(files)} extra training file(s) given",
            file=files[0],
            field="extra_train_files",
            hint="train on the official files only, or use a 나 setting's rules",
        )


def edition_note(rules: Rules, task: str, editions: tuple[str, ...]) -> str | None:
    """A note when ``task`` belongs to another edition than ``rules`` (their checks still apply:
    a 2025 team may train on 2024 data under 2025 conditions); None otherwise."""
    if editions and rules.edition not in editions:
        return (
            f"the {rules.name} rules are the {rules.edition} edition's; {task} is a "
            f"{'/'.join(editions)} task (the rules' checks are applied as they are)"
        )
    return None


def check_augmentation(rules: Rules, what: str | None) -> None:
    """Refuse augmented training data (``what`` says which, None: none) where it is not allowed."""
    if what and not rules.augmentation:
        raise UserError(
            f"the {rules.name} rules allow no data augmentation: {what}",
            field="rules",
            hint="train on the official items only, or use a 나 setting's rules",
        )


def check_retrieval(rules: Rules, *, official_corpus: bool, index: str) -> None:
    """Refuse retrieval over a user's corpus where external data is not allowed (a corpus the
    competition ships with the task is allowed)."""
    if not rules.external_data and not official_corpus:
        raise UserError(
            f"the {rules.name} rules allow no external data: this task's competition ships no "
            "corpus, so a retrieval corpus is external data",
            file=index,
            field="retrieve",
            hint="leave out --retrieve, or use a 나 setting's rules",
        )


__all__ = [
    "ALIASES",
    "RULES",
    "Rules",
    "check_augmentation",
    "check_ensemble",
    "check_external_data",
    "check_retrieval",
    "edition_note",
    "get_rules",
]
