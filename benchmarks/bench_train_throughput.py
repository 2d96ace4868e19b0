"""Training throughput: our SFT trainer against trl's packed SFTTrainer and the official batch-1 loop.

    python benchmarks/bench_train_throughput.py [--items 256] [--batch_size 8] [--threads 1]
        [--rounds 1] [--variants ours,ours_packed,trl_packed,baseline]

Input: the real CCI training file (/work/shared/data/nikl/cci_train.json, or --data); the
benchmark is skipped when it is absent. Model: a tiny random-weight Llama (real architecture,
our Korean BPE tokenizer trained on the file's texts) with LoRA r16 on every linear layer, on
the CPU, SDPA attention. Every variant trains one pass over the same examples (prompt +
completion token ids from ``build_sft_examples``, loss on the completion only), each in its own
process (so that its peak RSS is its own), one after the other, ``--rounds`` times interleaved:

- ours: ``MalpyeongSFTTrainer`` from the recipe parser's config, ``--batching auto`` (on a CPU:
  length-grouped batches of ``--batch_size``), completion-only logits;
- ours_packed: the same with ``--batching packing`` (trl's best-fit-decreasing packing into
  ``--max_length`` rows, padding-free, position ids restart per example), as many packed rows
  per step as trl_packed;
- trl_packed: trl's own ``SFTTrainer`` as a user would set it up for speed: ``packing=True``
  (bfd, padding-free), its own loss (its chunked LM head over every position), as many packed
  rows per step as carry about ``--batch_size`` examples' tokens;
- baseline: a plain ``transformers.Trainer`` with batch size 1 and a padding collator, as the
  official NIKL baseline trains.

Printed per variant: real (non-padding) tokens per CPU second of the training loop (and its wall
time), the non-padding share of the token slots the model computed, peak RSS; then each one's
ratio to trl_packed and to the baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
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
VARIANTS = ("ours", "ours_packed", "trl_packed", "baseline")
COMMON = {
    "num_train_epochs": 1,
    "learning_rate": 1e-4,
    "report_to": [],
    "save_strategy": "no",
    "eval_strategy": "no",
    "logging_steps": 10_000,
    "disable_tqdm": True,
    "seed": 0,
    "dataloader_pin_memory": False,
    "bf16": False,
}


class CountingCollator:
    """Wraps a collator; counts real tokens and the token slots of the batches it makes."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.real = 0
        self.slots = 0

    def __call__(self, features):
        self.real += sum(len(f["input_ids"]) for f in features)  # a packed row holds only real tokens
        batch = self.inner(features)
        self.slots += int(batch["input_ids"].numel())
        return batch


def worker(args: argparse.Namespace) -> dict:
    """One variant's training pass in this process; returns its figures."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from malpyeong.models.backbones import get_backbone, load_tokenizer
    from malpyeong.training import (
        batching_changes,
        lora_config,
        quiet_libraries,
        sft_parser,
        sft_trainer_class,
    )

    quiet_libraries()
    torch.set_num_threads(args.threads)
    rows = json.loads(Path(args.rows).read_text(encoding="utf-8"))
    path = args.model_dir
    backbone = get_backbone(path)
    tokenizer = load_tokenizer(path, backbone)
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa"),
        lora_config(16, 32, 0.0),
    )
    out = f"{args.scratch}/{args.worker}"
    data = Dataset.from_list(rows)
    if args.worker in ("ours", "ours_packed"):
        argv = ["--model", path, "--train_file", args.data, "--output_dir", out]
        per_step = args.packs_per_step if args.worker == "ours_packed" else args.batch_size
        argv += ["--per_device_train_batch_size", str(per_step), "--gradient_accumulation_steps", "1"]
        argv += ["--max_length", str(args.max_length)]
        _, _, config = sft_parser().parse(argv)
        mode = "packing" if args.worker == "ours_packed" else "auto"
        batching = batching_changes(mode, "sdpa", config)
        config = dataclasses.replace(
            config, **COMMON, load_best_model_at_end=False, activation_checkpointing=False, **batching
        )
        collator = None if mode == "packing" else DataCollatorForLanguageModeling(tokenizer.pad_token_id)
        trainer = sft_trainer_class()(
            model=model, args=config, train_dataset=data, data_collator=collator, processing_class=tokenizer
        )
    elif args.worker == "trl_packed":
        config = SFTConfig(
            output_dir=out,
            packing=True,
            packing_strategy="bfd",
            max_length=args.max_length,
            per_device_train_batch_size=args.packs_per_step,
            gradient_accumulation_steps=1,
            activation_checkpointing=False,
            **COMMON,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    else:
        config = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=1,
            remove_unused_columns=False,
            activation_checkpointing=False,
            **COMMON,
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=model, args=config, train_dataset=data, data_collator=collator)
    counter = trainer.data_collator = CountingCollator(trainer.data_collator)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "variant": args.worker,
        "seconds": seconds,
        "cpu": cpu,
        "real": counter.real,
        "slots": counter.slots,
        "steps": trainer.state.global_step,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[str, str, dict]:
    """The tiny model and the examples every variant trains on, written to ``tmp``."""
    from malpyeong.data import load_items
    from malpyeong.models.backbones import get_backbone, load_tokenizer
    from malpyeong.models.tiny import SEED_TEXT, build_tiny_model
    from malpyeong.tasks import get_task
    from malpyeong.training import build_sft_examples, quiet_libraries

    quiet_libraries()
    task = get_task("cci")
    all_items = load_items(args.data, task, require_output=True)
    texts = SEED_TEXT.splitlines() + [
        s for it in all_items for m in task.messages(it) for s in m["content"].splitlines()
    ]
    path = build_tiny_model(
        "llama", tmp / "tiny", hidden_size=args.hidden_size, vocab_size=args.vocab_size, texts=texts
    )
    backbone = get_backbone(str(path))
    tokenizer = load_tokenizer(str(path), backbone)
    rows, stats = build_sft_examples(
        task, all_items[: args.items], tokenizer, backbone, task.prompt_spec("baseline"), args.max_length
    )
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    (tmp / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    lengths = sorted(len(r["input_ids"]) for r in rows)
    info = {
        "examples": len(rows),
        "tokens": sum(lengths),
        "min": lengths[0],
        "median": lengths[len(lengths) // 2],
        "max": lengths[-1],
        "cut": stats.prompts_cut,
        "vocab": len(tokenizer),
    }
    return str(path), str(tmp / "rows.json"), info


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--items", type=int, default=256, help="training items used by every variant")
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
    parser.add_argument("--rounds", type=int, default=1, help="times each variant runs, interleaved")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    for hidden in ("--model_dir", "--rows", "--scratch"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--packs_per_step", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the real CCI training file)")
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, rows, info = prepare(args, Path(tmp))
        mean = info["tokens"] / info["examples"]
        packs = max(1, round(args.batch_size * mean / args.max_length))
        print(
            f"data: {info['examples']} examples from {args.data} ({info['tokens']} tokens; per example "
            f"min {info['min']}, median {info['median']}, max {info['max']}; {info['cut']} prompts cut "
            f"to {args.max_length}); model: tiny llama hidden {args.hidden_size}, vocabulary "
            f"{info['vocab']}, LoRA r16, SDPA; CPU threads {args.threads}; trl_packed: {packs} packed "
            f"rows of up to {args.max_length} tokens per step (about {args.batch_size} examples)"
        )
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                cmd = [sys.executable, __file__, "--worker", variant, "--model_dir", model_dir]
                cmd += ["--rows", rows, "--scratch", tmp, "--data", args.data]
                cmd += ["--batch_size", str(args.batch_size), "--max_length", str(args.max_length)]
                cmd += ["--threads", str(args.threads), "--packs_per_step", str(packs)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode:
                    print(done.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{variant} failed (exit {done.returncode})")
                runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = {v: min(r, key=lambda x: x["cpu"]) for v, r in runs.items()}
    rate = {v: b["real"] / b["cpu"] for v, b in best.items()}
    for v, b in best.items():
        spread = ", ".join(f"{r['real'] / r['cpu']:.0f}" for r in runs[v])
        print(
            f"{v:<12} {b['real']:>7} real tokens in {b['cpu']:6.1f} s CPU ({b['seconds']:.1f} s wall, "
            f"{b['steps']} steps) = {rate[v]:7.0f} tokens per CPU second (runs: {spread}); "
            f"non-padding share {b['real'] / b['slots']:.3f}; peak RSS {b['peak_rss_mb']:.0f} MB"
        )
    for peer in ("trl_packed", "baseline"):
        if peer in rate:
            print(
                f"ratio to {peer} (tokens per CPU second): "
                + ", ".join(f"{v} x{rate[v] / rate[peer]:.2f}" for v in rate if v != peer)
            )
    print(
        "machine: a shared 2-core CPU (other jobs running): CPU seconds are the figure to compare "
        "(wall time waits for the other jobs); the best of --rounds per variant"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
