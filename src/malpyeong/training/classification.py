"""A classification head for choice tasks (``--objective classification``).

What the 2024 CCI 가 winner did instead of writing a letter: the backbone is loaded as a
sequence classifier (``AutoModelForSequenceClassification``; its LM head replaced by a
``score`` layer with one output per option), the prompt is the same fitted chat prompt that
prediction feeds a letter-scoring model, and the loss is cross-entropy on the gold option
read at the prompt's last token. With LoRA / QLoRA the new head is trained in full and saved
with the adapter (peft's ``modules_to_save``). Option-order augmentation works as for SFT (the
label moves with the options).

Prediction reads the head's softmax through :class:`malpyeong.inference.classifier.ClassifierEngine`, so
results files, sidecar probabilities, voting and selection are the same as for letter scoring.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from malpyeong.errors import UserError
from malpyeong.inference.classifier import OBJECTIVE
from malpyeong.io import atomic_write_json
from malpyeong.models.backbones import Backbone, load_model
from malpyeong.models.budget import fit_prompt
from malpyeong.models.runfolder import DATA_STATS, write_run
from malpyeong.tasks import ChoiceTask, get_task
from malpyeong.tasks.base import PromptSpec, TaskItem
from malpyeong.training.examples import BudgetStats, training_items
from malpyeong.training.models import is_zero3
from malpyeong.training.outputs import (
    main_process,
    save_run,
    write_config,
    write_dev_metrics,
)
from malpyeong.training.recipe import ModelArguments, SFTArguments, resolve_trainer_args
from malpyeong.training.start import start_run
from malpyeong.training.trainers import callbacks_for, run_training

log = logging.getLogger(__name__)

HEAD_NAMES = ("score", "classifier")  # the new head's module name in transformers' classifiers


def head_name(model: Any) -> str:
    """The classifier's head module (``score`` for Llama, Gemma-2, Qwen2, Mistral)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in HEAD_NAMES:
        if hasattr(base, name):
            return name
    raise UserError(
        f"{type(base).__name__} has no classification head ({', '.join(HEAD_NAMES)})",
        field="objective",
        hint="use --objective sft for this backbone",
    )


def build_classification_rows(
    task: ChoiceTask,
    items: Sequence[TaskItem],
    tokenizer: Any,
    backbone: Backbone,
    spec: PromptSpec,
    max_length: int | None,
) -> tuple[list[dict], BudgetStats]:
    """``{"id", "input_ids", "labels"}`` rows: the fitted prompt (as prediction renders it, generation
    prompt included) and the gold option's index."""
    stats = BudgetStats(items=len(items))
    rows = []
    for item in items:
        fitted = fit_prompt(task, item, tokenizer, backbone, spec, max_length)
        stats.prompts_cut += fitted.dropped > 0
        if not fitted.fits:
            stats.over_budget += 1
            continue
        rows.append({"id": item.id, "input_ids": list(fitted.input_ids), "labels": task.label_index(item)})
        stats.tokens += len(fitted.input_ids)
    stats.examples = len(rows)
    if stats.over_budget:
        log.warning(
            "%d example(s) dropped: over max_length %s even with the conversation cut",
            stats.over_budget,
            max_length,
        )
    return rows, stats


def head_lora_config(model_args: ModelArguments, head: str) -> Any:
    """LoRA for sequence classification: adapters as for SFT, the head trained and saved whole."""
    from peft import LoraConfig

    modules = list(model_args.lora_target_modules)
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules="all-linear" if modules == ["all-linear"] else modules,
        bias="none",
        task_type="SEQ_CLS",
        modules_to_save=[head],
    )


def load_classifier_for_training(
    model_args: ModelArguments, config: Any, backbone: Backbone, num_labels: int, pad_token_id: int
) -> Any:
    """The classifier to train: full weights, or a (4-bit for qlora) base with LoRA adapters
    and a fully trained head."""
    from transformers import set_seed

    set_seed(config.seed)  # the head's and the adapters' start weights follow the recipe's seed
    remote = True if getattr(config, "trust_remote_code", False) else None
    model = load_model(
        model_args.model,
        model_args.method,
        backbone=backbone,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=remote,
        num_labels=num_labels,
    )
    model.config.pad_token_id = pad_token_id  # the head reads the last token that is not padding
    if model_args.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs=config.gradient_checkpointing_kwargs,
        )
    if model_args.method == "full":
        return model
    from peft import get_peft_model

    zero3 = is_zero3(config) and model_args.method == "lora"
    kwargs = {"autocast_adapter_dtype": False} if zero3 else {}
    model = get_peft_model(model, head_lora_config(model_args, head_name(model)), **kwargs)
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def task_metrics(task: ChoiceTask, items: Sequence[TaskItem]) -> Any:
    """``compute_metrics`` for the Trainer: the task's dev metric from the head's argmax."""

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        outputs = {it.id: task.output_for(int(np.argmax(row))) for it, row in zip(items, logits, strict=True)}
        report = task.dev_evaluate(list(items), outputs)
        return {task.dev_metric: float(report[task.dev_metric])}

    return compute


def train_classification(script: SFTArguments, model_args: ModelArguments, config: Any) -> Path:
    """Train a classification head on a choice task end to end and return the run folder."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer

    task = get_task(script.task)
    if OBJECTIVE not in task.objectives:  # the recipe check already refused it; kept for callers
        raise UserError(f"task {task.name} has no options to classify", field="objective")
    if script.merge:
        raise UserError(
            "--merge is for language-model adapters; a classification run is loaded as base + adapter + head",
            field="merge",
            hint="drop --merge",
        )
    if script.extra_train_files:
        raise UserError(
            "extra SFT records carry no option label to classify",
            field="objective",
            hint="drop --extra_train_files, or train with --objective sft",
        )
    config = resolve_trainer_args(
        model_args, config, task, has_dev=bool(script.dev_file), task_metric=bool(script.dev_file)
    )
    # the rows hold only what the classifier takes; peft's wrapper hides the forward signature
    # the Trainer would inspect to drop columns
    config = dataclasses.replace(config, remove_unused_columns=False)
    with start_run(script, model_args, config, stages=False) as run:  # no init_from: a new head
        out, backbone, tokenizer = run.out, run.backbone, run.tokenizer
        max_length = config.max_length
        spec = task.prompt_spec(script.prompt)

        train_items, n_items, dev_items = training_items(task, script, config.seed)
        rows, train_stats = build_classification_rows(
            task, train_items, tokenizer, backbone, spec, max_length
        )
        train_stats.items = n_items
        if not rows:
            raise UserError(
                "no training example fits max_length",
                field="max_length",
                hint=f"raise --max_length (now {max_length})",
            )
        dev_rows, dev_stats = build_classification_rows(
            task, dev_items, tokenizer, backbone, spec, max_length
        )
        fitted_ids = {r["id"] for r in dev_rows}
        dev_kept = [it for it in dev_items if it.id in fitted_ids]  # the rows' items, in order
        log.info(
            "classification: %d train examples, %d dev items, %d labels",
            len(rows),
            len(dev_rows),
            task.n_choices,
        )

        model = load_classifier_for_training(
            model_args, config, backbone, task.n_choices, tokenizer.pad_token_id
        )
        checkpoint = run.open()  # everything checked: the old run may go now
        if main_process():
            atomic_write_json(
                out / DATA_STATS,
                {
                    "train": train_stats.as_dict(),
                    "dev": dev_stats.as_dict() if dev_items else None,
                    "extra": None,
                },
            )
            write_config(out, script, model_args, config)
        trainer = Trainer(
            model=model,
            args=config,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            train_dataset=Dataset.from_list(_tensor_rows(rows)),
            eval_dataset=Dataset.from_list(_tensor_rows(dev_rows)) if dev_rows else None,
            compute_metrics=task_metrics(task, dev_kept) if dev_rows else None,
            callbacks=callbacks_for(script, config),
        )
        run_training(trainer, checkpoint)
        if main_process():
            write_dev_metrics(out, None, trainer)
        info = save_run(
            trainer,
            tokenizer,
            out,
            script,
            model_args,
            task,
            max_length,
            stage="classification",
            target_style=None,
            backbone=backbone,
        )
        if main_process():  # the loader's contract: a sequence classifier over the options
            write_run(
                out,
                {**info, "objective": OBJECTIVE, "num_labels": task.n_choices, "category": script.category},
            )
    return out


def _tensor_rows(rows: list[dict]) -> list[dict]:
    """The rows without their item ids (the collator pads only token ids and labels)."""
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]


__all__ = [
    "OBJECTIVE",
    "build_classification_rows",
    "head_lora_config",
    "head_name",
    "load_classifier_for_training",
    "task_metrics",
    "train_classification",
]
