"""GRPO with the task's own rewards, through trl's ``GRPOTrainer``, end to end: prompts from a
task data file (fitted to the length budget as SFT fits them, the gold outputs kept for the
rewards) -> model (a base, an SFT adapter continued, or an earlier run's weights) -> rollouts
(HF generate, or vLLM with trl's ``use_vllm``) scored by the task's rewards -> the run folder,
which predicts like any other.

What is ours around trl's trainer:

- the prompts are rendered by the task and fitted to ``max_length - max_completion_length``
  tokens, and tokenised without a second BOS (:meth:`_tokenize_prompts`);
- generation stops at the template's end of turn as well as at EOS (Gemma's
  ``<end_of_turn>``, Llama-3's ``<|eot_id|>``);
- the rewards are the task's (:mod:`malpyeong.training.rewards`), weighted by name;
- per generation batch, the groups whose rewards do not differ (no gradient) are counted
  (``groups/zero_spread`` in the logs) and, with ``drop_zero_spread``, their prompts are left
  out of the next epoch (:class:`GroupFilter`), a curriculum that keeps the batches informative;
- trl's log history (``rewards/<name>/mean`` and ``/std``, ``reward``, ``groups/...``) is kept
  in the run folder as ``log_history.json``; TensorBoard gets the same.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.data import load_items
from malpyeong.device import cuda_available
from malpyeong.errors import UserError
from malpyeong.inference.passages import DEFAULT_K, RetrievalSettings, check_task_retrieval, with_passages
from malpyeong.io import atomic_write_json
from malpyeong.models.backbones import Backbone, encode, end_of_turn_ids
from malpyeong.models.budget import fit_prompt
from malpyeong.models.runfolder import (
    ADAPTER_DIR,
    DATA_STATS,
    LOG_HISTORY,
    TRAINER_STATE,
    find_adapter,
    has_run_file,
    read_run,
    write_run,
)
from malpyeong.rules import edition_note, get_rules
from malpyeong.tasks import DEFAULT_TASK, PromptSpec, Task, get_task, task_names
from malpyeong.training.evaluation import TaskEvaluator, dev_answer_settings, load_dev_items
from malpyeong.training.examples import BudgetStats
from malpyeong.training.models import load_training_model
from malpyeong.training.orpo import check_adapter_base
from malpyeong.training.outputs import main_process, run_info, save_run, write_config, write_dev_metrics
from malpyeong.training.preference import drop_reference_adapter
from malpyeong.training.recipe import (
    TRAINER_DEFAULTS,
    CommonArguments,
    ModelArguments,
    RecipeParser,
    trainer_arg_changes,
)
from malpyeong.training.rewards import (
    AGGREGATIONS,
    RewardSet,
    parse_reward_weights,
    reward_set,
    zero_spread,
)
from malpyeong.training.stages import end_stage
from malpyeong.training.start import start_run
from malpyeong.training.trainers import TaskMetricsMixin, callbacks_for, run_training

log = logging.getLogger(__name__)


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class GRPOArguments(CommonArguments):
    """What a GRPO run needs beyond trl's ``GRPOConfig`` (generation length, group size,
    temperature, KL beta, clipping, vLLM: every GRPOConfig field is a recipe key too)."""

    algorithm: str = field(
        default="grpo", metadata=_help("grpo (orpo/train.py's other objectives: orpo ...)")
    )
    task: str = field(default=DEFAULT_TASK, metadata=_help(f"the task: {', '.join(task_names())}"))
    train_file: str | None = field(
        default=None,
        metadata=_help("prompts with gold outputs (the task's official layout); the gold feeds the rewards"),
    )
    max_length: int = field(
        default=1024,
        metadata=_help("prompt + completion budget: prompts are cut to max_length - max_completion_length"),
    )
    target_style: str | None = field(
        default=None,
        metadata=_help("how the gold is written for user rewards' 'reference' (default: the starting run's)"),
    )
    sft_adapter: str | None = field(
        default=None, metadata=_help("continue this SFT run's LoRA adapter (a run folder or adapter folder)")
    )
    extra_rewards: list[str] | None = field(
        default=None,
        metadata=_help(
            "your own reward functions, trl's form f(prompts, completions, **columns): "
            "package.module.function or path/to/file.py:function"
        ),
    )
    bertscore_model: str | None = field(
        default=None,
        metadata=_help("a local BERTScore model: adds the 'bertscore' reward beside ROUGE-1 'quality'"),
    )
    drop_zero_spread: bool = field(
        default=False,
        metadata=_help(
            "leave the prompts whose group of samples all scored the same out of the next epoch "
            "(they teach nothing: all right or all wrong)"
        ),
    )
    rules: str | None = field(
        default=None,
        metadata=_help(
            "competition rules, e.g. 2025-가: recorded, a retrieval corpus they count as external "
            "data refused, and a memory estimate against their VRAM"
        ),
    )
    retrieve: str | None = field(
        default=None,
        metadata=_help(
            "a retrieval index folder (run/retrieve.py build): each prompt lists its top passages, "
            "as in training with run/train.py --retrieve (and the run's default at prediction)"
        ),
    )
    retrieve_k: int = field(default=DEFAULT_K, metadata=_help("with --retrieve: passages per item"))
    retrieve_mode: str | None = field(
        default=None, metadata=_help("with --retrieve: sparse, dense or hybrid (default: the index's kind)")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.algorithm != "grpo":
            raise UserError(f"this parser trains grpo, not '{self.algorithm}'", field="algorithm")
        task = get_task(self.task)
        if self.target_style is not None:
            task.check_target_style(self.target_style)
        if not self.train_file:
            raise UserError(
                "no training data given",
                field="train_file",
                hint="pass --train_file FILE (the task's official layout, with outputs)",
            )
        if self.max_length < 2:
            raise UserError(f"must be at least 2, got {self.max_length}", field="max_length")
        rules = get_rules(self.rules) if self.rules is not None else None
        if rules is not None:  # GRPO reads the task's own file only: no external data
            note = edition_note(rules, task.name, task.editions)
            if note:
                log.info(note)
        check_task_retrieval(task, self.retrieval(), rules)
        if self.sft_adapter:
            self.sft_adapter = str(find_adapter(self.sft_adapter, "sft_adapter"))
        if self.sft_adapter and self.init_from:
            raise UserError("--sft_adapter and --init_from exclude each other", field="sft_adapter")

    def retrieval(self) -> RetrievalSettings | None:
        """The retrieval settings (None without --retrieve); checked when built."""
        if self.retrieve is None:
            return None
        return RetrievalSettings(self.retrieve, self.retrieve_k, self.retrieve_mode)


def grpo_config_class() -> type:
    """trl's ``GRPOConfig`` with ``reward_weights`` by name (``format=0.2,correct=1`` or a
    mapping) instead of a list in the order of the reward functions.

    Made on first use (trl is imported only when training) and kept as this module's
    ``GRPORecipeConfig``, where pickle finds it (the trainer saves its arguments with
    ``torch.save``)."""
    made = globals().get("GRPORecipeConfig")
    if made is not None:
        return made
    from trl import GRPOConfig

    @dataclass
    class GRPORecipeConfig(GRPOConfig):
        reward_weights: str | None = field(
            default=None,
            metadata={
                "help": "weight per reward, by name: format=0.2,correct=1,quality=0.5 (recipe: a "
                "mapping); unnamed rewards keep the task's default weight"
            },
        )

    GRPORecipeConfig.__qualname__ = "GRPORecipeConfig"
    GRPORecipeConfig.__name__ = "GRPOConfig"  # as --help names trl's config
    globals()["GRPORecipeConfig"] = GRPORecipeConfig
    return GRPORecipeConfig


# Our defaults over trl's: the run folder, logs and checkpoints as every recipe has them. The
# GRPO hyperparameters (learning rate 1e-6, num_generations 8, max_completion_length 512,
# temperature 1, beta 0, epsilon 0.2, loss_type dapo, scale_rewards group) stay trl's.
GRPO_DEFAULTS: dict[str, Any] = {
    key: TRAINER_DEFAULTS[key]
    for key in (
        "output_dir",
        "lr_scheduler_type",
        "warmup_steps",
        "logging_steps",
        "eval_strategy",
        "save_strategy",
        "save_total_limit",
        "metric_for_best_model",
        "report_to",
    )
} | {"num_train_epochs": 1.0, "load_best_model_at_end": False, "algorithm": "grpo"}


def grpo_parser() -> RecipeParser:
    """GRPO recipes: :class:`GRPOArguments`, the model's arguments and trl's ``GRPOConfig``."""
    return RecipeParser(GRPOArguments, grpo_config_class(), GRPO_DEFAULTS)


def check_grpo_config(config: Any) -> None:
    """What trl would only find out after the model is loaded (or never)."""
    if config.multi_objective_aggregation not in AGGREGATIONS:
        raise UserError(
            f"unknown value '{config.multi_objective_aggregation}'",
            field="multi_objective_aggregation",
            hint="sum_then_normalize (trl's default: the weighted sum normalised in the group) or "
            "normalize_then_sum (each reward normalised in the group, then the weighted sum)",
        )
    if config.use_vllm:
        if not cuda_available():
            raise UserError("vLLM generates on a GPU only", field="use_vllm", hint="drop use_vllm on a CPU")
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError(
                "vLLM is not installed", field="use_vllm", hint="pip install vllm, or drop use_vllm"
            )
    if config.max_completion_length is None or config.max_completion_length < 1:
        raise UserError("must be at least 1", field="max_completion_length")


# ---------------------------------------------------------------------------------------------
# the zero-spread filter


class GroupFilter:
    """Counts the groups whose rewards do not differ and, with ``drop``, leaves their prompts
    out of the next epoch: each epoch's prompts are those not found flat in the epoch before.

    Its state (what is dropped from this epoch, what was found so far) is saved in every
    checkpoint's ``trainer_state.json`` (a transformers ``ExportableState``), so a resumed run
    drops the same prompts.
    """

    def __init__(self, drop: bool = False) -> None:
        self.drop = drop
        self.dropped: list[int] = []  # rows left out of the current epoch
        self.seen: list[int] = []  # rows whose group had zero spread in the current epoch
        self.resumed = False

    def observe(self, rows: Sequence[int], flat: Sequence[bool]) -> None:
        new = {int(r) for r, f in zip(rows, flat, strict=True) if f} - set(self.seen)
        self.seen = sorted(set(self.seen) | new)

    def next_epoch(self) -> set[int]:
        """The rows to leave out of the epoch that starts now."""
        if self.resumed:  # the checkpoint's epoch goes on with its own set
            self.resumed = False
        else:
            self.dropped = list(self.seen) if self.drop else []
            self.seen = []
        return set(self.dropped)

    def state(self) -> dict:
        return {"args": {"drop": self.drop}, "attributes": {"dropped": self.dropped, "seen": self.seen}}

    def restore(self, checkpoint: Path) -> None:
        """The state saved in ``checkpoint`` (nothing when it holds none)."""
        data = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
        saved = (data.get("stateful_callbacks") or {}).get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if saved:
            self.dropped = list(saved["attributes"].get("dropped", []))
            self.seen = list(saved["attributes"].get("seen", []))
            self.resumed = True


def grpo_trainer_class() -> type:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    class GroupFilterCallback(GroupFilter, TrainerCallback, ExportableState):
        """:class:`GroupFilter` as a callback, so checkpoints carry its state."""

    class FilteredRepeatSampler(RepeatSampler):
        """trl's ``RepeatSampler`` (same order, same chunks) without the dropped prompts; when
        fewer than one generation batch of prompts would be left, nothing is dropped."""

        def __init__(self, group_filter: GroupFilter, rows: Sequence[int], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.group_filter, self.rows = group_filter, list(rows)

        def __iter__(self) -> Any:
            import torch

            dropped = self.group_filter.next_epoch()
            if self.shuffle:
                order = torch.randperm(self.num_samples, generator=self.generator).tolist()
            else:
                order = list(range(self.num_samples))
            kept = [i for i in order if self.rows[i] not in dropped]
            if len(kept) < self.batch_size:
                log.warning("dropping %d prompts would leave less than one batch: none dropped", len(dropped))
                kept = order
            chunks = [kept[i : i + self.batch_size] for i in range(0, len(kept), self.batch_size)]
            for chunk in chunks:
                if len(chunk) < self.batch_size:
                    continue
                for _ in range(self.repeat_count):
                    for index in chunk:
                        for _ in range(self.mini_repeat_count):
                            yield index

    class MalpyeongGRPOTrainer(TaskMetricsMixin, GRPOTrainer):
        """trl's GRPOTrainer on prompts already rendered for the model, counting (and with the
        filter, dropping) the groups with zero spread."""

        group_filter: GroupFilter | None = None

        def _tokenize_prompts(self, prompts: list) -> Any:
            if prompts and isinstance(prompts[0], str):  # rendered text: no second BOS
                return [encode(self.processing_class, p) for p in prompts], None, {}
            return super()._tokenize_prompts(prompts)

        def _calculate_rewards(
            self, inputs: list, prompts: list, completions: list, completion_ids: list
        ) -> Any:
            from accelerate.utils import gather_object

            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids)
            mode = "train" if self.model.training else "eval"
            size = self.num_generations if mode == "train" else self.num_generations_eval
            flat = zero_spread(
                rewards.detach().float().cpu(),
                self.reward_weights.tolist(),
                size,
                self.multi_objective_aggregation,
            )
            self._metrics[mode]["groups/zero_spread"].append(float(flat.sum()))
            self._metrics[mode]["groups/total"].append(float(flat.numel()))
            if mode == "train" and self.group_filter is not None and self.group_filter.drop:
                rows = gather_object([int(x["row"]) for x in inputs])
                self.group_filter.observe(rows[::size], flat.tolist())
                self._metrics[mode]["groups/dropped"].append(float(len(self.group_filter.dropped)))
            return rewards

        def _get_train_sampler(self, dataset: Any = None) -> Any:
            dataset = self.train_dataset if dataset is None else dataset
            if self.group_filter is None or not self.group_filter.drop:
                return super()._get_train_sampler(dataset)
            return FilteredRepeatSampler(
                self.group_filter,
                dataset["row"],
                data_source=dataset,
                mini_repeat_count=self.num_generations,
                batch_size=self.args.generation_batch_size // self.num_generations,
                repeat_count=self.num_iterations * self.args.steps_per_generation,
                shuffle=self.shuffle_dataset,
                seed=self.args.seed,
            )

    MalpyeongGRPOTrainer.filter_class = GroupFilterCallback
    MalpyeongGRPOTrainer.sampler_class = FilteredRepeatSampler
    return MalpyeongGRPOTrainer


# ---------------------------------------------------------------------------------------------
# rows


def build_grpo_rows(
    task: Task,
    items: Sequence[Any],
    tokenizer: Any,
    backbone: Backbone,
    spec: PromptSpec,
    max_length: int,
    completion_length: int,
    *,
    target_style: str | None,
    first_row: int = 0,
) -> tuple[list[dict], BudgetStats]:
    """Rows ``{prompt, row, id, reference}``: the prompt rendered and fitted to leave
    ``completion_length`` tokens for the completion; ``row`` the item's position (from
    ``first_row``) by which the rewards find it; ``reference`` the gold completion."""
    stats = BudgetStats()
    rows = []
    for i, item in enumerate(items):
        fitted = fit_prompt(task, item, tokenizer, backbone, spec, max_length, reserve=completion_length)
        stats.prompts_cut += fitted.dropped > 0
        if not fitted.fits:
            stats.over_budget += 1
            continue
        reference = task.target_for(item, spec, style=target_style)
        rows.append({"prompt": fitted.text, "row": first_row + i, "id": item.id, "reference": reference})
        stats.tokens += len(fitted.input_ids)
    stats.items, stats.examples = len(items), len(rows)
    return rows, stats


def _starting_style(script: GRPOArguments) -> str | None:
    """The target style of the run training starts from (init_from, or the SFT adapter's run)."""
    for folder in (script.init_from, script.sft_adapter and str(Path(script.sft_adapter).parent)):
        if folder and has_run_file(folder):
            style = read_run(folder).get("target_style")
            if style:
                return style
    return None


def train_grpo(script: GRPOArguments, model_args: ModelArguments, config: Any) -> Path:
    """Run GRPO end to end and return the run folder (everything that can be refused is
    checked before an old run is replaced, as in :func:`~malpyeong.training.sft.train_sft`)."""
    from datasets import Dataset

    task = get_task(script.task)
    check_adapter_base(script.sft_adapter, model_args.model)
    check_grpo_config(config)
    style = task.check_target_style(script.target_style or _starting_style(script))
    retrieval = script.retrieval()  # the passages each prompt lists, as SFT's (and prediction's)
    items = with_passages(
        task, load_items(script.train_file, task, require_output=True)[: script.max_train_items], retrieval
    )
    dev_items = with_passages(task, load_dev_items(task, script), retrieval)
    rewards = reward_set(
        task,
        [*items, *dev_items],
        parse_reward_weights(config.reward_weights),
        script.extra_rewards or (),
        bertscore_model=script.bertscore_model,
    )
    for key, value in trainer_arg_changes(
        model_args, config, task, has_dev=bool(dev_items), task_metric=bool(dev_items)
    ).items():
        setattr(config, key, value)  # not dataclasses.replace: GRPOConfig's derived batch sizes
    with start_run(script, model_args, config) as run:
        out, model_args, backbone, tokenizer = run.out, run.model_args, run.backbone, run.tokenizer
        spec = task.prompt_spec(script.prompt)
        reserve = config.max_completion_length
        if reserve >= script.max_length:
            raise UserError(
                f"max_completion_length {reserve} leaves no room for a prompt in max_length "
                f"{script.max_length}",
                field="max_length",
            )
        rows, train_stats = build_grpo_rows(
            task, items, tokenizer, backbone, spec, script.max_length, reserve, target_style=style
        )
        if not rows:
            raise UserError("no prompt fits max_length - max_completion_length", field="max_length")
        dev_rows, dev_stats = build_grpo_rows(
            task,
            dev_items,
            tokenizer,
            backbone,
            spec,
            script.max_length,
            reserve,
            target_style=style,
            first_row=len(items),
        )
        model = load_training_model(model_args, config, backbone, sft_adapter=script.sft_adapter)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.generation_config.eos_token_id = end_of_turn_ids(tokenizer, backbone)  # stop at end of turn
        checkpoint = run.open()  # everything checked: the old run may go now
        extra = _run_extra(script, config, rewards)
        if main_process():
            stats = {"train": train_stats.as_dict(), "dev": dev_stats.as_dict() if dev_items else None}
            atomic_write_json(out / DATA_STATS, stats)
            write_config(out, script, run.recipe_args, config)
            info = run_info(
                script,
                model_args,
                task,
                script.max_length,
                stage="grpo",
                target_style=style,
                merged=False,
                extra=extra,
            )
            write_run(out, {**info, "finished": False})  # the final run file follows the weights
        evaluator = (
            TaskEvaluator(
                task,
                dev_items,
                tokenizer,
                backbone,
                dev_answer_settings(script, spec, script.max_length, config),
            )
            if dev_items
            else None
        )
        trainer_config = copy.copy(config)
        trainer_config.reward_weights = list(rewards.weights)
        cls = grpo_trainer_class()
        group_filter = cls.filter_class(drop=script.drop_zero_spread)
        if checkpoint is not None:
            group_filter.restore(checkpoint)
        trainer = cls(
            model=model,
            reward_funcs=list(rewards.funcs),
            args=trainer_config,
            processing_class=tokenizer,
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(dev_rows) if dev_rows else None,
            callbacks=[*callbacks_for(script, config), group_filter],
        )
        trainer.group_filter = group_filter
        trainer.task_evaluator = evaluator
        run_training(trainer, checkpoint)
        if main_process():
            write_dev_metrics(out, evaluator, trainer)
            atomic_write_json(out / LOG_HISTORY, trainer.state.log_history)
        info = save_run(
            trainer,
            tokenizer,
            out,
            script,
            model_args,
            task,
            script.max_length,
            stage="grpo",
            target_style=style,
            backbone=backbone,
            extra=extra,
        )
        if main_process():
            drop_reference_adapter(out / ADAPTER_DIR)
        end_stage(out, info, run.chain, model_args.method)
    return out


def _run_extra(script: GRPOArguments, config: Any, rewards: RewardSet) -> dict:
    """What the run file records of a GRPO run: the rewards, their weights and how they were
    combined, the group size, the filter, and the rules followed."""
    return {
        "rewards": rewards.as_dict(),
        "reward_aggregation": config.multi_objective_aggregation,
        "scale_rewards": config.scale_rewards,
        "num_generations": config.num_generations,
        "drop_zero_spread": script.drop_zero_spread,
        "rules": get_rules(script.rules).name if script.rules else None,
    }


def reward_summary(out: Path) -> list[str]:
    """Lines on how each reward's mean moved over training, and the groups with zero spread
    (from the run folder's log history)."""
    path = out / LOG_HISTORY
    if not path.is_file():
        return []
    history = [h for h in json.loads(path.read_text(encoding="utf-8")) if "reward" in h]
    if not history:
        return []
    lines = []
    names = sorted({k[len("rewards/") : -len("/mean")] for h in history for k in h if k.endswith("/mean")})
    for name in names:
        key = f"rewards/{name}/mean"
        # a logging step whose batch the reward did not apply to (None from every item) has none
        scored = [(h["step"], h[key]) for h in history if isinstance(h.get(key), (int, float))]
        scored = [(step, v) for step, v in scored if not math.isnan(v)]
        if not scored:
            lines.append(f"reward {name}: applied to no completion")
            continue
        (first_step, first), (last_step, last) = scored[0], scored[-1]
        lines.append(f"reward {name}: {first:.3f} at step {first_step} -> {last:.3f} at step {last_step}")
    flat = [h["groups/zero_spread"] for h in history if "groups/zero_spread" in h]
    total = [h["groups/total"] for h in history if "groups/total" in h]
    if flat and total:
        lines.append(
            f"groups with zero spread: {sum(flat) / len(flat):.2f} of {sum(total) / len(total):.2f} per "
            "generation batch on average"
        )
    return lines


__all__ = [
    "GRPO_DEFAULTS",
    "GRPOArguments",
    "GroupFilter",
    "build_grpo_rows",
    "check_grpo_config",
    "grpo_config_class",
    "grpo_parser",
    "grpo_trainer_class",
    "reward_summary",
    "train_grpo",
]
