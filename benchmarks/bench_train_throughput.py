"""Training throughput: our SFT trainer against the official baseline's batch-1 loop.

    python benchmarks/bench_train_throughput.py [--items 256] [--batch_size 8] [--threads 1]

Input: the real CCI training file (/work/shared/data/nikl/cci_train.json, or --data); the
benchmark is skipped when it is absent. Model: a tiny random-weight Llama (real architecture,
our Korean BPE tokenizer) with LoRA on every linear layer, on the CPU. Both loops see the same
examples (prompt + completion token ids from ``build_sft_examples``, loss on the completion) for
one pass:

- ours: ``MalpyeongSFTTrainer`` (trl SFTTrainer) with our batching (length-grouped batches of
  ``--batch_size``; padding-free where flash attention is available),
- baseline: a plain ``transformers.Trainer`` with batch size 1 and a padding collator, as the
  official NIKL baseline trains (batch 1, gradient accumulation).

Printed: real (non-padding) tokens per second, the non-padding fraction of the token slots the
model computed, and the ratios. Targets: >= 1.5x throughput, >= 0.9 non-padding fraction.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the shared data folder: $MALPYEONG_SHARED_DATA, else shared/data beside the checkout or any
# folder above it (a git worktree sits deeper than the main checkout)
SHARED_DATA = (
    Path(os.environ["MALPYEONG_SHARED_DATA"])
    if os.environ.get("MALPYEONG_SHARED_DATA")
    else next(
        (p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()),
        Path(__file__).resolve().parents[2] / "shared" / "data",
    )
)
DEFAULT_DATA = SHARED_DATA / "nikl" / "cci_train.json"


class CountingCollator:
    """Wraps a collator; counts real tokens and the token slots of the padded batches."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.real = 0
        self.slots = 0

    def __call__(self, features):
        self.real += sum(len(f["input_ids"]) for f in features)
        batch = self.inner(features)
        self.slots += int(batch["input_ids"].numel())
        return batch


def run(
    trainer_cls, model, args, rows, collator, tokenizer, completion_logits: bool | None = None
) -> tuple[float, CountingCollator]:
    from datasets import Dataset

    counter = CountingCollator(collator)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=counter,
        processing_class=tokenizer,
    )
    if completion_logits is False:
        trainer._completion_logits = False  # trl's own loss: fused LM head over every position
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, counter


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--items", type=int, default=256, help="training items used by both loops")
    parser.add_argument("--batch_size", type=int, default=8, help="our per-device batch size")
    parser.add_argument("--max_length", type=int, default=1024)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument(
        "--vocab_size",
        type=int,
        default=32000,
        help="tiny tokenizer's vocabulary, trained on the file's own texts (real "
        "Korean backbones have 32k-256k)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)"
    )
    args = parser.parse_args()
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the real CCI training file)")
        return 0

    import torch
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from malpyeong.data import load_items
    from malpyeong.models.backbones import get_backbone, load_tokenizer
    from malpyeong.models.tiny import SEED_TEXT, build_tiny_model
    from malpyeong.tasks import get_task
    from malpyeong.training import (
        batching_changes,
        build_sft_examples,
        lora_config,
        quiet_libraries,
        sft_parser,
        sft_trainer_class,
    )

    quiet_libraries()
    torch.set_num_threads(args.threads)
    task = get_task("cci")
    all_items = load_items(args.data, task, require_output=True)
    items = all_items[: args.items]
    with tempfile.TemporaryDirectory() as tmp:
        texts = SEED_TEXT.splitlines() + [
            s for it in all_items for m in task.messages(it) for s in m["content"].splitlines()
        ]
        path = build_tiny_model(
            "llama", Path(tmp) / "tiny", hidden_size=args.hidden_size, vocab_size=args.vocab_size, texts=texts
        )
        backbone = get_backbone(str(path))
        tokenizer = load_tokenizer(str(path), backbone)
        rows, stats = build_sft_examples(task, items, tokenizer, backbone, "baseline", args.max_length)
        rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
        lengths = sorted(len(r["input_ids"]) for r in rows)
        print(
            f"data: {len(rows)} examples from {args.data} (tokens per example: min {lengths[0]}, "
            f"median {lengths[len(lengths) // 2]}, max {lengths[-1]}; "
            f"{stats.prompts_cut} prompts "
            f"cut to {args.max_length}); model: tiny llama hidden {args.hidden_size}, vocabulary "
            f"{len(tokenizer)}, LoRA r16; "
            f"CPU threads {args.threads}"
        )

        def fresh_model():
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            return get_peft_model(model, lora_config(16, 32, 0.0))

        common = {
            "num_train_epochs": 1,
            "learning_rate": 1e-4,
            "report_to": [],
            "save_strategy": "no",
            "eval_strategy": "no",
            "logging_steps": 10_000,
            "disable_tqdm": True,
            "seed": 0,
            "dataloader_pin_memory": False,
            "gradient_checkpointing": False,
            "bf16": False,
        }

        # ours: the recipe parser's config, our batching, our trainer class
        argv = [
            "--model",
            str(path),
            "--train_file",
            args.data,
            "--output_dir",
            f"{tmp}/ours",
            "--per_device_train_batch_size",
            str(args.batch_size),
            "--gradient_accumulation_steps",
            "1",
            "--max_length",
            str(args.max_length),
        ]
        _, _, config = sft_parser().parse(argv)
        batching = batching_changes("auto", backbone.attn_implementation, config)
        config = dataclasses.replace(
            config, **common, load_best_model_at_end=False, activation_checkpointing=False, **batching
        )
        ours_collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
        ours_time, ours = run(sft_trainer_class(), fresh_model(), config, rows, ours_collator, tokenizer)
        # the same without completion-only logits: how much of the gain is batching alone
        fused_time, _ = run(
            sft_trainer_class(),
            fresh_model(),
            config,
            rows,
            ours_collator,
            tokenizer,
            completion_logits=False,
        )

        # baseline: plain transformers Trainer, batch 1, padding collator
        base_args = TrainingArguments(
            output_dir=f"{tmp}/base",
            per_device_train_batch_size=1,
            gradient_accumulation_steps=1,
            remove_unused_columns=False,
            activation_checkpointing=False,
            **common,
        )
        base_collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        base_time, base = run(Trainer, fresh_model(), base_args, rows, base_collator, tokenizer)

    ours_tps, base_tps = ours.real / ours_time, base.real / base_time
    print(
        f"ours     : batch {args.batch_size} length-grouped  {ours.real:>8} real tokens in "
        f"{ours_time:6.1f}s = {ours_tps:8.0f} tokens/s, non-padding fraction "
        f"{ours.real / ours.slots:.3f}"
    )
    print(
        f"baseline : batch 1 padded           {base.real:>8} real tokens in {base_time:6.1f}s = "
        f"{base_tps:8.0f} tokens/s, non-padding fraction {base.real / base.slots:.3f}"
    )
    fused_tps = ours.real / fused_time
    print(
        f"ablation : ours with trl's fused LM head over all positions: {fused_tps:8.0f} tokens/s "
        f"(x{fused_tps / base_tps:.2f} of baseline)"
    )
    print(
        f"ratio    : throughput x{ours_tps / base_tps:.2f} (target >= 1.5), "
        f"our non-padding fraction {ours.real / ours.slots:.3f} (target >= 0.9)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
