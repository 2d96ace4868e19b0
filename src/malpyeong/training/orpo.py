"""Preference training (ORPO, DPO, SimPO, KTO; see :mod:`malpyeong.training.preference`), end to
end: pairs (or KTO's unpaired examples) rendered for the model -> model (optionally continuing
an SFT adapter, or starting from an earlier run) -> the objective's trl trainer with the task's
dev metric -> the run folder, with the held-out chosen-minus-rejected margin before and after."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from malpyeong.device import model_device
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json
from malpyeong.models.backbones import Backbone, encode
from malpyeong.models.budget import fit_prompt
from malpyeong.models.runfolder import (
    ADAPTER_DIR,
    DATA_STATS,
    DEV_METRICS,
    adapter_base,
    model_key,
    write_run,
)
from malpyeong.tasks import PromptSpec, Task, get_task
from malpyeong.training.evaluation import TaskEvaluator, dev_answer_settings, load_dev_items
from malpyeong.training.examples import BudgetStats, assistant_affixes
from malpyeong.training.models import load_training_model
from malpyeong.training.outputs import (
    main_process,
    run_info,
    save_run,
    write_config,
    write_dev_metrics,
)
from malpyeong.training.pairs import build_pairs, read_pairs
from malpyeong.training.preference import (
    as_pairs,
    drop_reference_adapter,
    preference_trainer_class,
    reference_kwargs,
    unpaired_rows,
)
from malpyeong.training.recipe import ModelArguments, ORPOArguments, resolve_trainer_args
from malpyeong.training.stages import end_stage
from malpyeong.training.start import start_run
from malpyeong.training.trainers import callbacks_for, run_training
from malpyeong.training.unpaired import read_unpaired, unpair


def build_orpo_rows(
    pairs: Sequence[dict],
    task: Task,
    tokenizer: Any,
    backbone: Backbone,
    spec: PromptSpec,
    max_length: int | None,
) -> tuple[list[dict], BudgetStats]:
    """Rows ``{prompt, chosen, rejected}`` as text: the prompt rendered and fitted for this model,
    the responses followed by the template's end-of-turn (see :func:`assistant_affixes`)."""
    before, after = assistant_affixes(tokenizer, backbone)
    stats = BudgetStats()
    items: dict[str, Any] = {}
    rows = []
    for pair in pairs:
        key = json.dumps(pair["record"], sort_keys=True, ensure_ascii=False)
        if key not in items:
            problems: list = []
            items[key] = task.parse_item(pair["record"], problems)
            if items[key] is None:
                raise UserError(
                    f"invalid record: {problems[0][0]}: {problems[0][1]}", item=pair.get("id"), field="record"
                )
        item = items[key]
        chosen = before + pair["chosen"].strip() + after
        rejected = before + pair["rejected"].strip() + after
        longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (chosen, rejected))
        fitted = fit_prompt(task, item, tokenizer, backbone, spec, max_length, reserve=longest)
        stats.prompts_cut += fitted.dropped > 0
        if not fitted.fits:
            stats.over_budget += 1
            continue
        rows.append(
            {"id": pair.get("id", item.id), "prompt": fitted.text, "chosen": chosen, "rejected": rejected}
        )
        stats.tokens += len(fitted.input_ids) + longest
        stats.completion_tokens += longest
    stats.items, stats.examples = len(items), len(rows)
    return rows, stats


def pair_margins(model: Any, tokenizer: Any, rows: Sequence[dict], batch_size: int = 8) -> list[float]:
    """Per pair: log p(chosen | prompt) - log p(rejected | prompt), summed over response tokens.

    The held-out check that preference training moved the model the right way.
    """
    import torch

    device = model_device(model)
    seqs: list[tuple[list[int], int]] = []
    for row in rows:
        prompt = encode(tokenizer, row["prompt"])
        for side in ("chosen", "rejected"):
            done = tokenizer(row[side], add_special_tokens=False)["input_ids"]
            seqs.append((prompt + done, len(prompt)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    totals: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(seqs), batch_size):
            batch = seqs[lo : lo + batch_size]
            width = max(len(s) for s, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (s, _) in enumerate(batch):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            with torch.no_grad():
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
                logits = out.logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            got = logp.gather(-1, ids[:, 1:].unsqueeze(-1).to(logp.device)).squeeze(-1)
            for r, (s, start) in enumerate(batch):
                totals.append(float(got[r, start - 1 : len(s) - 1].sum()))
    finally:
        model.train(was_training)
    return [totals[i] - totals[i + 1] for i in range(0, len(totals), 2)]


def check_adapter_base(sft_adapter: str | None, model: str) -> None:
    """ORPO continues an SFT adapter: it must have been trained on the base being loaded."""
    if not sft_adapter:
        return
    base = adapter_base(sft_adapter)
    if model_key(base) != model_key(model):
        raise UserError(
            f"this adapter was trained on {base}, not on --model {model}",
            file=sft_adapter,
            field="sft_adapter",
            hint="give the SFT run's own base as --model, or another adapter",
        )


def train_orpo(script: ORPOArguments, model_args: ModelArguments, config: Any) -> Path:
    """Run preference training (``script.algorithm``) end to end and return the run folder
    (everything that can be refused is checked before an old run is replaced, as in
    :func:`~malpyeong.training.sft.train_sft`)."""
    from datasets import Dataset

    kto = script.algorithm == "kto"
    pairs = read_pairs(script.pairs) if script.pairs else []
    examples = (read_unpaired(script.unpaired) if script.unpaired else unpair(pairs)) if kto else []
    pairs = pairs or as_pairs(examples)  # KTO from unpaired examples only
    task_name = script.task or pairs[0]["task"]
    task = get_task(task_name)
    check_adapter_base(script.sft_adapter, model_args.model)
    styles = {p.get("target_style") for p in pairs}
    target_style = styles.pop() if len(styles) == 1 else None
    if script.max_train_items:
        keep = list(dict.fromkeys(p["source_id"] for p in pairs))[: script.max_train_items]
        pairs = [p for p in pairs if p["source_id"] in set(keep)]
        examples = [e for e in examples if e["source_id"] in set(keep)]
    dev_items = load_dev_items(task, script)
    if script.dev_pairs:
        dev_pairs = read_pairs(script.dev_pairs)
    elif dev_items:
        dev_pairs = build_pairs(task, dev_items, target_style=target_style)
    else:
        dev_pairs = []
    config = resolve_trainer_args(
        model_args, config, task, has_dev=bool(dev_pairs), task_metric=bool(dev_items)
    )
    with start_run(script, model_args, config) as run:
        out, model_args, backbone, tokenizer = run.out, run.model_args, run.backbone, run.tokenizer
        max_length = config.max_length
        spec = task.prompt_spec(script.prompt)
        rows, train_stats = build_orpo_rows(
            as_pairs(examples) if kto else pairs, task, tokenizer, backbone, spec, max_length
        )
        if not rows:
            raise UserError("no pair fits max_length", field="max_length")
        dev_rows, dev_stats = build_orpo_rows(dev_pairs, task, tokenizer, backbone, spec, max_length)
        if dev_pairs and not dev_rows:
            raise UserError("no dev pair fits max_length", field="max_length")
        eval_rows = dev_rows
        if kto:  # the trainer reads unpaired rows; the margins stay on the held-out pairs
            rows = unpaired_rows(rows, examples, config.seed)
            dev_examples = unpair(dev_pairs)
            rendered, _ = build_orpo_rows(as_pairs(dev_examples), task, tokenizer, backbone, spec, max_length)
            eval_rows = unpaired_rows(rendered, dev_examples, config.seed)

        model = load_training_model(model_args, config, backbone, sft_adapter=script.sft_adapter)
        checkpoint = run.open()  # everything checked: the old run may go now
        if main_process():
            stats = {"train": train_stats.as_dict(), "dev": dev_stats.as_dict() if dev_rows else None}
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
                        stage=script.algorithm,
                        target_style=target_style,
                        merged=False,
                    ),
                    "finished": False,
                },
            )  # the final run file follows the weights
        reference = reference_kwargs(
            script.algorithm, model, model_args, config, started_in_memory=bool(script.sft_adapter)
        )
        margins_before = pair_margins(model, tokenizer, dev_rows[:64]) if dev_rows else []
        evaluator = (
            TaskEvaluator(
                task, dev_items, tokenizer, backbone, dev_answer_settings(script, spec, max_length, config)
            )
            if dev_items
            else None
        )
        trainer = preference_trainer_class(script.algorithm)(
            model=model,
            args=config,
            processing_class=tokenizer,
            train_dataset=Dataset.from_list(rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            callbacks=callbacks_for(script, config),
            **reference,
        )
        trainer.task_evaluator = evaluator
        run_training(trainer, checkpoint)
        # every rank runs the forward passes (ZeRO-3 gathers parameters collectively)
        margins_after = pair_margins(trainer.model, tokenizer, dev_rows[:64]) if dev_rows else []
        if main_process():
            dev = write_dev_metrics(out, evaluator, trainer)
            if dev_rows:
                dev["heldout_margin"] = {
                    "pairs": len(margins_after),
                    "before": _mean(margins_before),
                    "after": _mean(margins_after),
                }
                atomic_write_json(out / DEV_METRICS, dev)
        info = save_run(
            trainer,
            tokenizer,
            out,
            script,
            model_args,
            task,
            max_length,
            stage=script.algorithm,
            target_style=target_style,
            backbone=backbone,
        )
        if main_process():
            drop_reference_adapter(out / ADAPTER_DIR)
        end_stage(out, info, run.chain, model_args.method)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
