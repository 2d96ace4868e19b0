"""How every trainer starts a run: the run folder checked, a resumed run's recipe checked, the
stage's starting weights (``init_from``), the backbone and the tokenizer -- the same steps, in
the same order, for SFT, the classification head and the preference trainers.

The old run folder is replaced only when the trainer says everything is checked
(:meth:`RunStart.open`), except for a stage that starts from an adapter run: that one merges the
adapter into this folder first, so the folder is opened before the weights are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.models.backbones import Backbone, get_backbone, load_tokenizer
from malpyeong.training.outputs import (
    check_resume,
    check_run_folder,
    open_run_folder,
    resume_checkpoint,
    run_inputs,
)
from malpyeong.training.recipe import CommonArguments, ModelArguments
from malpyeong.training.stages import begin_stage


@dataclass
class RunStart:
    """A run being started: where it writes, what it trains, and with which tokenizer."""

    out: Path  # the run folder (checked; replaced only by open())
    model_args: ModelArguments  # the weights to train (a stage's init_model/, else the recipe's)
    recipe_args: ModelArguments  # the recipe's own (config.yaml keeps the recipe's base)
    backbone: Backbone
    tokenizer: Any
    chain: dict | None  # the stage chain to record (None: not a stage)
    resume: bool
    overwrite: bool
    stack: ExitStack = field(repr=False)  # holds the folder's lock until the run ends
    opened: bool = False

    def open_folder(self) -> None:
        """Replace an old run (``--overwrite``) and hold the folder's lock until the run ends."""
        if not self.opened:
            self.stack.enter_context(open_run_folder(self.out, overwrite=self.overwrite, resume=self.resume))
            self.opened = True

    def open(self) -> Path | None:
        """Everything is checked: open the folder (:meth:`open_folder`) and return the
        checkpoint to resume from (None for a new run)."""
        self.open_folder()
        return resume_checkpoint(self.out) if self.resume else None


@contextmanager
def start_run(
    script: CommonArguments, model_args: ModelArguments, config: Any, *, stages: bool = True
) -> Iterator[RunStart]:
    """Check the run folder (``config.output_dir``: see :func:`~malpyeong.training.outputs.
    check_run_folder`) and a resumed run's recipe, then load the starting point -- with
    ``stages`` the run named by ``script.init_from`` when there is one (see
    :mod:`malpyeong.training.stages`), else ``model_args.model`` -- and its tokenizer."""
    out = check_run_folder(
        config.output_dir,
        overwrite=script.overwrite,
        resume=script.resume,
        inputs=run_inputs(script, model_args),
    )
    if script.resume:
        check_resume(out, script, model_args, config)
    with ExitStack() as stack:
        run = RunStart(out, model_args, model_args, None, None, None, script.resume, script.overwrite, stack)
        init_from = script.init_from if stages else None
        if init_from:  # a stage from an adapter run merges it into this folder first
            run.open_folder()
        if stages:
            run.model_args, run.backbone, run.chain = begin_stage(init_from, model_args, out)
        else:
            run.backbone = get_backbone(model_args.model)
        run.tokenizer = load_tokenizer(
            run.model_args.model, run.backbone, trust_remote_code=True if config.trust_remote_code else None
        )
        yield run


__all__ = ["RunStart", "start_run"]
