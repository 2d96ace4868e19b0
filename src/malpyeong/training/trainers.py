"""trl's trainers as our runs use them: the task metric at every evaluation, completion-only
logits for SFT, ORPO on rows already rendered for the model, early stopping on the dev metric."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from malpyeong.errors import Interrupted, UserError, one_line
from malpyeong.models.backbones import encode
from malpyeong.models.runfolder import complete_checkpoints
from malpyeong.training.evaluation import TaskEvaluator
from malpyeong.training.recipe import CommonArguments


class TaskMetricsMixin:
    """Adds the task metric (``eval_accuracy`` / ``eval_rouge1``) to every evaluation.

    It is added inside the evaluation loop, so the best-checkpoint logic, early stopping and
    the logs all see it like the eval loss.
    """

    task_evaluator: TaskEvaluator | None = None

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only,  # type: ignore[misc]
            ignore_keys,
            metric_key_prefix,
        )
        if self.task_evaluator is not None and metric_key_prefix == "eval":
            scores = self.task_evaluator(self.model)  # type: ignore[attr-defined]
            for key, value in scores.items():
                output.metrics[f"{metric_key_prefix}_{key}"] = value
            state = self.state  # type: ignore[attr-defined]
            self.task_evaluator.history.append(
                {
                    "step": state.global_step,
                    "epoch": state.epoch,
                    **{k: v for k, v in output.metrics.items() if isinstance(v, (int, float))},
                }
            )
        return output


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the causal LM's forward can project only chosen positions onto the vocabulary."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def completion_loss(trainer: Any, model: Any, inputs: dict, num_items_in_batch: Any = None) -> Any:
    """Token-mean NLL of the completion, with logits computed at completion positions only.

    A CCI prompt is hundreds of tokens and its answer a few; projecting every position onto a
    vocabulary of 128k-256k entries (or, on a CPU, running trl's fused LM head over all of them)
    is wasted work. The positions whose next token is a target in any row of the batch are
    passed as ``logits_to_keep``; the loss is normalised exactly as trl's SFTTrainer does
    (by ``num_items_in_batch`` under gradient accumulation, scaled for data parallelism).
    """
    import torch
    import torch.nn.functional as F

    mode = "train" if trainer.model.training else "eval"
    targets = inputs["labels"][:, 1:]
    keep = (targets != -100).any(0).nonzero().flatten()
    if keep.numel() == 0:  # nothing to learn in this batch (cannot happen with our rows)
        keep = torch.zeros(1, dtype=torch.long, device=targets.device)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    out = model(**forward, use_cache=False, logits_to_keep=keep)
    logits = out.logits.float()
    tgt = targets[:, keep]
    mask = tgt != -100
    loss_sum = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100, reduction="sum")
    count = mask.sum() if num_items_in_batch is None else num_items_in_batch
    loss = loss_sum / torch.as_tensor(count, device=loss_sum.device).clamp(min=1)
    if trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
        loss = loss * (trainer.accelerator.num_processes // trainer.get_tp_size())
    with torch.no_grad():  # the same logged metrics as trl's SFTTrainer
        gather = trainer.accelerator.gather_for_metrics
        logp = torch.log_softmax(logits[mask], dim=-1)
        valid = gather(mask.sum()).sum()
        entropy = gather(-(logp.exp() * logp).sum()).sum()
        correct = gather((logits.argmax(-1)[mask] == tgt[mask]).sum()).sum()
        metrics = trainer._metrics[mode]
        metrics["entropy"].append((entropy / valid).item() if valid > 0 else 0.0)
        metrics["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                seen = inputs["attention_mask"].sum()
            else:
                seen = torch.tensor(inputs["input_ids"].numel(), device=targets.device)
            trainer._total_train_tokens += int(gather(seen).sum().item())
        metrics["num_tokens"] = [trainer._total_train_tokens]
    return loss


def sft_trainer_class() -> type:
    from trl import SFTTrainer

    class MalpyeongSFTTrainer(TaskMetricsMixin, SFTTrainer):
        """trl's SFTTrainer with the task metric at each evaluation and completion-only logits
        (:func:`completion_loss`) where the model supports them."""

        def compute_loss(
            self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            usable = getattr(self, "_completion_logits", None)
            if usable is None:
                plain = (
                    self.args.loss_type == "nll"
                    and self.compute_loss_func is None
                    and self.args.label_smoothing_factor == 0
                    and not self.aux_loss_enabled
                    and self.accelerator.parallelism_config is None
                )
                usable = self._completion_logits = plain and accepts_logits_to_keep(self.model)
            if return_outputs or not usable:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return completion_loss(self, model, inputs, num_items_in_batch)

    return MalpyeongSFTTrainer


def orpo_trainer_class() -> type:
    from trl.experimental.orpo import ORPOTrainer

    class MalpyeongORPOTrainer(TaskMetricsMixin, ORPOTrainer):
        """ORPO on rows whose prompt is already rendered and fitted, and whose chosen/rejected
        already end with the template's end-of-turn: tokenised here without a second BOS and
        without trl's extra EOS."""

        def tokenize_row(self, feature: dict, model: Any = None) -> dict:
            return rendered_pair_row(self.processing_class, self.max_length, feature)

    return MalpyeongORPOTrainer


def rendered_pair_row(tok: Any, max_length: int, feature: dict) -> dict:
    """A ``{prompt, chosen, rejected}`` row already rendered for the model, as the token ids
    trl's ORPO and CPO trainers take (no second BOS, no extra EOS)."""
    prompt = encode(tok, feature["prompt"])
    out: dict[str, list[int]] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    room = max(0, max_length - len(prompt))
    for side in ("chosen", "rejected"):
        done = tok(feature[side], add_special_tokens=False)["input_ids"][:room]
        out[f"{side}_input_ids"] = prompt + done
        out[f"{side}_attention_mask"] = [1] * (len(prompt) + len(done))
        out[f"{side}_labels"] = [-100] * len(prompt) + done
    return out


def callbacks_for(script: CommonArguments, config: Any) -> list:
    from transformers import EarlyStoppingCallback

    if (
        script.early_stopping_patience
        and config.load_best_model_at_end
        and str(config.eval_strategy).lower() not in ("no", "intervalstrategy.no")
    ):
        return [EarlyStoppingCallback(script.early_stopping_patience, script.early_stopping_threshold)]
    return []


def interrupted_hint(out: Path) -> str:
    """What Ctrl-C during training prints: how to continue, from what is on disk."""
    complete, _ = complete_checkpoints(out)
    if complete:
        return (
            f"interrupted; to continue from {complete[-1].name}, rerun the same command with "
            "--resume (without --overwrite)"
        )
    return (
        "interrupted before the first checkpoint was saved; rerun the same command with "
        "--overwrite to start again"
    )


def run_training(trainer: Any, checkpoint: Path | None) -> None:
    """``trainer.train()``, from ``checkpoint`` when resuming; a checkpoint that cannot be
    resumed is a user mistake (one line), not a traceback."""
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_hint(Path(trainer.args.output_dir))) from None
    except (ValueError, RuntimeError) as err:
        if checkpoint is not None and ("checkpoint" in str(err).lower() or "size mismatch" in str(err)):
            raise UserError(
                f"cannot resume from {checkpoint.name}: {one_line(err, 300)}", file=str(checkpoint)
            ) from None
        raise
