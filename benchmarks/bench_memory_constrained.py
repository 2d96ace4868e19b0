"""Benchmark: the cost of constrained decoding (JSON schema, llguidance) for the memory task.

    python benchmarks/bench_memory_constrained.py [--data ../shared/data/dialogsum/dialogsum.dev.jsonl]
        [--n 16] [--batch_size 8] [--max_new_tokens 256] [--threads 0] [--tokenizer real]

Model: a random-weight Qwen2-architecture model built on the spot, with the tiny 2,000-token BPE
tokenizer (the tiny model the tests use) or, with ``--tokenizer real``, Qwen2's own 151,646-token
tokenizer (the constraint's mask is computed over the whole vocabulary at every step). Items: the first --n DialogSum dev dialogues converted
to memory items (``--from dialogsum --to memory``), or our shipped sample files when the real
file is absent. Both runs answer the same items through the one answering path
(``answer_items``, the HF engine, length-sorted batches, greedy), once under the memory task's
JSON schema and once free (``--no_constrain``), with the same --max_new_tokens.

Prints for each: generated tokens (counted at ``generate``), wall time, tokens/s, the share of schema-valid raw outputs
and of exact delivered turn counts; then the ratios constrained / unconstrained (the
constraint's cost per generated token, and in wall time).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from malpyeong.data import load_items
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import GenerationSettings
from malpyeong.inference.loading import load_engine, resolve_source
from malpyeong.models.tiny import build_tiny_model
from malpyeong.prep.converters.dialogsum_memory import dialogsum_to_memory
from malpyeong.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = next(
    (
        p / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
        for p in ROOT.parents
        if (p / "shared" / "data" / "dialogsum").is_dir()
    ),
    ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl",
)
SAMPLES = [ROOT / "resource" / "data" / f"memory_{s}.jsonl" for s in ("train", "dev")]


def memory_items(task, data: Path, n: int, tmp: Path) -> tuple[list, str]:
    if data.is_file():
        converted = dialogsum_to_memory(data, argparse.Namespace(turn_count="utterances"))
        path = tmp / "memory.json"
        path.write_text(
            json.dumps(converted.data[:n] if n else converted.data, ensure_ascii=False), encoding="utf-8"
        )
        return load_items(path, task), f"{data.name} converted"
    items = [it for p in SAMPLES for it in load_items(p, task)]
    return (items[:n] if n else items), "our sample files (real DialogSum not found)"


def count_decoding_steps(engine) -> list[int]:
    """Wrap the model's ``generate`` to record, per row, the tokens it generated (up to and
    including its stop token): the exact work, which re-tokenising the text would not give."""
    steps: list[int] = []
    original = engine.model.generate
    stops = set(engine.stop_token_ids()) | {engine.tokenizer.eos_token_id}

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        for row in out[:, kwargs["input_ids"].shape[1] :].tolist():
            n = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            steps.append(n)
        return out

    engine.model.generate = generate
    return steps


def run(engine, steps: list[int], task, items, settings: AnswerSettings) -> dict:
    steps.clear()
    start, cpu = time.perf_counter(), time.process_time()
    result = answer_items(engine, task, items, settings, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    texts = [a.sidecar["text"] for a in result.answers]
    tokens = sum(steps)
    valid = 0
    for t in texts:
        try:
            valid += task.check_output(json.loads(t)) is None
        except ValueError:
            pass
    exact = sum(
        a.output["memory_state"]["turn_count"] == it.turn_count
        for a, it in zip(result.answers, items, strict=True)
    )
    return {
        "seconds": seconds,
        "cpu": cpu,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "valid": valid,
        "exact": exact,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--n", type=int, default=16, help="number of dialogues (0: all)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument(
        "--tokenizer",
        choices=("ours", "real"),
        default="ours",
        help="ours: the tiny 2,000-token BPE; real: Qwen2's own tokenizer",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1, as the tests: a tiny model gains nothing "
        "from more, and on a shared CPU the OpenMP threads stall each other; "
        "0: torch's default)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task("memory")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items, source = memory_items(task, Path(args.data), args.n, tmp)
        model = build_tiny_model("qwen2", tmp / "tiny-qwen2", tokenizer=args.tokenizer)
        engine = load_engine(resolve_source(str(model)), device="cpu")
        settings = AnswerSettings(
            generation=GenerationSettings(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size
        )
        print(
            f"{len(items)} memory items ({source}); tiny random Qwen2 ({args.tokenizer} tokenizer, "
            f"{len(engine.tokenizer)} tokens), batch {args.batch_size}, "
            f"greedy, max_new_tokens {args.max_new_tokens}, {torch.get_num_threads()} thread(s)"
        )
        steps = count_decoding_steps(engine)
        free = AnswerSettings(generation=settings.generation, batch_size=args.batch_size, constrain=False)
        run(engine, steps, task, items[:2], settings)  # warm-up: the tokenizer bridge, kernels
        run(engine, steps, task, items[:2], free)
        results = {
            "constrained": run(engine, steps, task, items, settings),
            "unconstrained": run(engine, steps, task, items, free),
        }
    for name, r in results.items():
        print(
            f"{name:<14} {r['tokens']:6d} tokens in {r['seconds']:7.2f} s wall "
            f"({r['cpu']:.2f} s CPU) = {r['tokens_per_s']:7.1f} tokens/s; schema-valid raw "
            f"{r['valid']}/{len(items)}, exact turn_count {r['exact']}/{len(items)}"
        )
    c, u = results["constrained"], results["unconstrained"]
    per_token = (c["cpu"] / c["tokens"]) / (u["cpu"] / u["tokens"])
    print(
        f"constrained / unconstrained: {c['tokens_per_s'] / u['tokens_per_s']:.2f}x tokens/s, "
        f"{c['seconds'] / u['seconds']:.2f}x wall time, {per_token:.2f}x CPU time per token"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
