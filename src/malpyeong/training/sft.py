"""Supervised fine-tuning, end to end: recipe -> tokenizer -> examples built by the task ->
model and adapters -> trl's SFTTrainer with the task's dev metric -> the run folder."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json
from malpyeong.models.runfolder import DATA_STATS, write_run
from malpyeong.tasks import get_task
from malpyeong.training.evaluation import TaskEvaluator, dev_answer_settings
from malpyeong.training.examples import build_sft_examples, mix_extra_rows, training_items
from malpyeong.training.models import load_training_model
from malpyeong.training.outputs import (
    main_process,
    run_info,
    save_run,
    write_config,
    write_dev_metrics,
)
from malpyeong.training.recipe import (
    ModelArguments,
    SFTArguments,
    batching_changes,
    resolve_trainer_args,
)
from malpyeong.training.stages import end_stage
from malpyeong.training.start import start_run
from malpyeong.training.trainers import callbacks_for, run_training, sft_trainer_class

log = logging.getLogger(__name__)


def train_sft(script: SFTArguments, model_args: ModelArguments, config: Any) -> Path:
    """Run SFT end to end and return the run folder.

    Everything that can be refused is checked first -- the run folder, the recipe against a
    resumed run, the tokenizer, every data file, the examples, the model -- and only then is
    an old run replaced (``--overwrite``) and the new one written.
    """
    from datasets import Dataset

    task = get_task(script.task)
    config = resolve_trainer_args(
        model_args, config, task, has_dev=bool(script.dev_file), task_metric=bool(script.dev_file)
    )
    with start_run(script, model_args, config) as run:
        out, model_args, backbone, tokenizer = run.out, run.model_args, run.backbone, run.tokenizer
        max_length = config.max_length

        train_items, n_items, dev_items = training_items(task, script, config.seed)
        spec = task.prompt_spec(script.prompt)
        rows, train_stats = build_sft_examples(
            task, train_items, tokenizer, backbone, spec, max_length, target_style=script.target_style
        )
        train_stats.items = n_items  # before option-order augmentation; examples counts the copies
        if not rows:
            raise UserError(
                "no training example fits max_length",
                field="max_length",
                hint=f"raise --max_length (now {max_length})",
            )
        rows, extra_stats = mix_extra_rows(rows, script, task, tokenizer, backbone, max_length, config.seed)
        dev_rows, dev_stats = build_sft_examples(
            task, dev_items, tokenizer, backbone, spec, max_length, target_style=script.target_style
        )
        if dev_items and not dev_rows:
            raise UserError("no dev example fits max_length", file=script.dev_file, field="max_length")
        stats = {
            "train": train_stats.as_dict(),
            "dev": dev_stats.as_dict() if dev_items else None,
            "extra": extra_stats,
        }
        log.info(
            "train: %d examples (%d prompts cut, %d over budget); dev: %d items",
            train_stats.examples,
            train_stats.prompts_cut,
            train_stats.over_budget,
            len(dev_items),
        )

        attn = model_args.attn_implementation or backbone.attn_implementation
        trainer_config = dataclasses.replace(config, **batching_changes(script.batching, attn, config))
        model = load_training_model(model_args, trainer_config, backbone)
        checkpoint = run.open()  # everything checked: the old run may go now
        if main_process():
            atomic_write_json(out / DATA_STATS, stats)
            write_config(out, script, run.recipe_args, config)
            write_run(
                out,
                {
                    **run_info(
                        script,
                        model_args,
                        task,
                        max_length,
                        stage="sft",
                        target_style=script.target_style,
                        merged=False,
                    ),
                    "finished": False,
                },
            )  # the final run file follows the weights
        evaluator = (
            TaskEvaluator(
                task, dev_items, tokenizer, backbone, dev_answer_settings(script, spec, max_length, config)
            )
            if dev_items
            else None
        )
        trainer = sft_trainer_class()(
            model=model,
            args=trainer_config,
            processing_class=tokenizer,
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(dev_rows) if dev_rows else None,
            callbacks=callbacks_for(script, trainer_config),
        )
        trainer.task_evaluator = evaluator
        if not script.completion_logits:
            trainer._completion_logits = False
        run_training(trainer, checkpoint)
        if main_process():
            write_dev_metrics(out, evaluator, trainer)
        info = save_run(
            trainer,
            tokenizer,
            out,
            script,
            model_args,
            task,
            max_length,
            stage="sft",
            target_style=script.target_style,
            backbone=backbone,
        )
        end_stage(out, info, run.chain, model_args.method)
    return out
