"""Fine-tuning: SFT (full / LoRA / QLoRA) and ORPO, one flat YAML recipe per run.

The flow every training script follows: parse the recipe and flags and validate them (before any
model is loaded) -> tokenizer -> datasets built by the task -> model and adapters -> a trl trainer
that evaluates the task's own metric on the dev set, keeps the best checkpoint and stops early ->
the run folder.

One job per module (each imports only the ones above it):

    recipe       the run's dataclasses (script, model, trainer defaults), RecipeParser, validation
    examples     token-id rows built from the task's items and from extra chat records
    models       the model to train (full / LoRA / QLoRA), adapter merging
    evaluation   the task's dev metric on the model being trained
    trainers     trl's trainers with that metric, completion-only loss, early stopping
    outputs      the run folder: creation, config.yaml, dev metrics, weights, malpyeong_run.json
    preference   the objectives beside ORPO (DPO, SimPO, KTO): trainers, configs, defaults
    stages       staged training: a run that starts from an earlier run (init_from)
    sft, orpo    the two end-to-end runs (orpo runs every preference objective)
    classification  a head over a choice task's options (--objective classification)
    experts      what run/train.py runs: one model, or one expert per category
    entry        what run/train.py and orpo/train.py share: parsers, a quiet console

Every public name is re-exported here, so ``from malpyeong.training import train_sft`` works.
"""

from __future__ import annotations

from malpyeong.cli import quiet_libraries
from malpyeong.training.classification import (
    build_classification_rows,
    load_classifier_for_training,
    train_classification,
)
from malpyeong.training.entry import INTERRUPTED, has_flag, orpo_parser, sft_parser
from malpyeong.training.evaluation import TaskEvaluator, load_dev_items
from malpyeong.training.examples import (
    SENTINEL,
    BudgetStats,
    assistant_affixes,
    augment_options,
    build_record_examples,
    build_sft_examples,
    completion_ids,
    load_sft_records,
    mix_extra_rows,
    option_orders,
)
from malpyeong.training.experts import train_experts, train_run
from malpyeong.training.models import is_zero3, load_training_model, lora_config, merge_adapter
from malpyeong.training.orpo import build_orpo_rows, pair_margins, train_orpo
from malpyeong.training.outputs import (
    check_resume,
    check_run_folder,
    dev_summary,
    main_process,
    open_run_folder,
    prepare_output_dir,
    resolved_config,
    resume_checkpoint,
    run_info,
    run_inputs,
    save_run,
    wait_for_everyone,
    write_config,
    write_dev_metrics,
)
from malpyeong.training.preference import (
    PREFERENCE_DEFAULTS,
    algorithm_of,
    config_class,
    preference_parser,
    preference_trainer_class,
)
from malpyeong.training.recipe import (
    ALGORITHMS,
    ATTENTION,
    BATCHING,
    DTYPES,
    METHODS,
    ORPO_DEFAULTS,
    TRAINER_DEFAULTS,
    CommonArguments,
    ModelArguments,
    ORPOArguments,
    RecipeParser,
    SFTArguments,
    batching_changes,
    check_values,
    resolve_trainer_args,
)
from malpyeong.training.sft import train_sft
from malpyeong.training.stages import INIT_DIR, begin_stage, end_stage
from malpyeong.training.trainers import (
    TaskMetricsMixin,
    accepts_logits_to_keep,
    callbacks_for,
    completion_loss,
    orpo_trainer_class,
    run_training,
    sft_trainer_class,
)

__all__ = [
    "ALGORITHMS",
    "INIT_DIR",
    "PREFERENCE_DEFAULTS",
    "algorithm_of",
    "begin_stage",
    "config_class",
    "end_stage",
    "preference_parser",
    "preference_trainer_class",
    "ATTENTION",
    "BATCHING",
    "DTYPES",
    "INTERRUPTED",
    "METHODS",
    "ORPO_DEFAULTS",
    "SENTINEL",
    "TRAINER_DEFAULTS",
    "BudgetStats",
    "CommonArguments",
    "ModelArguments",
    "ORPOArguments",
    "RecipeParser",
    "SFTArguments",
    "TaskEvaluator",
    "TaskMetricsMixin",
    "accepts_logits_to_keep",
    "assistant_affixes",
    "augment_options",
    "batching_changes",
    "build_classification_rows",
    "build_orpo_rows",
    "build_record_examples",
    "build_sft_examples",
    "callbacks_for",
    "check_resume",
    "check_run_folder",
    "check_values",
    "completion_ids",
    "completion_loss",
    "dev_summary",
    "has_flag",
    "is_zero3",
    "load_classifier_for_training",
    "load_dev_items",
    "load_sft_records",
    "load_training_model",
    "lora_config",
    "main_process",
    "merge_adapter",
    "mix_extra_rows",
    "open_run_folder",
    "option_orders",
    "orpo_parser",
    "orpo_trainer_class",
    "pair_margins",
    "prepare_output_dir",
    "quiet_libraries",
    "resolve_trainer_args",
    "resolved_config",
    "resume_checkpoint",
    "run_info",
    "run_inputs",
    "run_training",
    "save_run",
    "sft_parser",
    "sft_trainer_class",
    "train_classification",
    "train_experts",
    "train_orpo",
    "train_run",
    "train_sft",
    "wait_for_everyone",
    "write_config",
    "write_dev_metrics",
]
