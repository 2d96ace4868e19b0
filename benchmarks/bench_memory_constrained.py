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

Then the mask alone: what the logits processor did (rows whose top token passed without a
mask, masks of the schema without length bounds, exact masks) and its time per generated token
and row; and llguidance's own mask time, replayed over the constrained generations' tokens one
row at a time (one thread), for the exact schema and for it without ``maxLength``, beside
llguidance's published figures scaled to this vocabulary: about 50 us per token for a 128k
vocabulary (its README), and MaskBench's 64 us mean / 46 us median on Llama-3's 128,256-token
tokenizer. ``--texts`` writes the constrained generations; ``--compare`` checks them against a
file written by another version (``PYTHONPATH=/path/to/other/src python ... --texts other.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from malpyeong.data import load_items
from malpyeong.inference import constrain
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import GenerationSettings
from malpyeong.inference.loading import load_engine, resolve_source
from malpyeong.models.tiny import build_tiny_model
from malpyeong.prep.converters.dialogsum_memory import dialogsum_to_memory
from malpyeong.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
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
DEFAULT_DATA = SHARED_DATA / "dialogsum" / "dialogsum.dev.jsonl"
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


PUBLISHED_US = 50.0  # llguidance README: about 50 us of CPU per token, 128k vocabulary
PUBLISHED_VOCAB = 128_000
MASKBENCH_US = (64.0, 46.0)  # MaskBench, LLGuidance: mean and median us per token, Llama-3
MASKBENCH_VOCAB = 128_256


def count_decoding_steps(engine, rows: list[list[int]] | None = None) -> list[int]:
    """Wrap the model's ``generate`` to record, per row, the tokens it generated (up to and
    including its stop token): the exact work, which re-tokenising the text would not give.
    ``rows`` receives each row's tokens before its stop token."""
    steps: list[int] = []
    original = engine.model.generate
    stops = set(engine.stop_token_ids()) | {engine.tokenizer.eos_token_id}

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        for row in out[:, kwargs["input_ids"].shape[1] :].tolist():
            n = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            steps.append(n)
            if rows is not None:
                rows.append([t for t in row[:n] if t not in stops])
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
        "texts": texts,
        "seconds": seconds,
        "cpu": cpu,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "valid": valid,
        "exact": exact,
    }


def record_processors() -> list:
    """Keep every logits processor the constrained runs make (for their counters)."""
    made: list = []
    original = constrain.JsonConstraint.logits_processor

    def logits_processor(self, *args, **kwargs):
        made.append(original(self, *args, **kwargs))
        return made[-1]

    constrain.JsonConstraint.logits_processor = logits_processor
    return made


def replay_masks(engine, task, rows: list[list[int]]) -> dict[str, list[float]]:
    """llguidance's mask time per token (us), one row at a time on one thread, over the tokens
    the constrained run generated: for the exact schema and without its length bounds."""
    import llguidance
    import llguidance.torch as lt

    schema = task.output_schema()
    tables = constrain.token_tables(
        engine.tokenizer, engine.model.get_output_embeddings().weight.shape[0], engine.stop_token_ids()
    )
    out: dict[str, list[float]] = {}
    for name, variant in (("exact", schema), ("without maxLength", constrain.without_length_bounds(schema))):
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(variant))
        mask = lt.allocate_token_bitmask(1, tables.ll.vocab_size)
        times = []
        for row in rows:
            matcher = llguidance.LLMatcher(tables.ll, grammar, log_level=0)
            for token in row:
                start = time.process_time_ns()
                lt.fill_next_token_bitmask(matcher, mask, 0)
                times.append((time.process_time_ns() - start) / 1000)
                if not matcher.consume_token(token):
                    break
        out[name] = times
    return out


def report_masks(processors: list, replay: dict[str, list[float]], constrained: dict, vocab: int) -> None:
    stats = constrain.ConstraintStats()
    for p in processors:
        stats.add(p.stats)
    rows = max(stats.rows, 1)
    print(
        f"processor: {stats.rows} row-steps: top token allowed without a mask {stats.top_allowed}, "
        f"masks without length bounds {stats.relaxed_masks}, exact masks {stats.exact_masks}, "
        f"closing {stats.closing}"
    )
    print(
        f"processor time per generated token and row: {stats.seconds / rows * 1e6:.0f} us, of which "
        f"llguidance's masks {stats.mask_seconds / rows * 1e6:.0f} us (CPU; the "
        f"constrained run's CPU time per token was {constrained['cpu'] / constrained['tokens'] * 1e6:.0f} us)"
    )
    scale = vocab / PUBLISHED_VOCAB
    mb_scale = vocab / MASKBENCH_VOCAB
    if vocab >= 32_000:  # the published figures are for 128k vocabularies
        print(
            f"llguidance published, scaled to {vocab:,} tokens: {PUBLISHED_US * scale:.0f} us per token "
            f"(README); MaskBench {MASKBENCH_US[0] * mb_scale:.0f} us mean / "
            f"{MASKBENCH_US[1] * mb_scale:.0f} us median"
        )
    for name, times in replay.items():
        mean, median = statistics.mean(times), statistics.median(times)
        versus = (
            f" (x{mean / (MASKBENCH_US[0] * mb_scale):.2f} of MaskBench's mean)" if vocab >= 32_000 else ""
        )
        print(
            f"llguidance mask alone, {name} schema, replayed over {len(times)} tokens: mean {mean:.0f} us, "
            f"median {median:.0f} us{versus}"
        )
    per_token = stats.mask_seconds / rows * 1e6
    versus = (
        f" = x{per_token / (PUBLISHED_US * scale):.2f} of the published figure "
        f"(x{per_token / (MASKBENCH_US[0] * mb_scale):.2f} of MaskBench's mean)"
        if vocab >= 32_000
        else ""
    )
    print(f"ours: llguidance mask time per generated token {per_token:.0f} us{versus}")


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
    p.add_argument(
        "--texts",
        help="write the constrained generations here (JSON list), to compare two versions' outputs",
    )
    p.add_argument("--compare", help="a --texts file of another version: are the generations identical?")
    p.add_argument(
        "--sample",
        action="store_true",
        help="sample (temperature 1, seeded) instead of greedy: every row is then masked by the exact schema",
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
            generation=GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=args.sample),
            batch_size=args.batch_size,
        )
        print(
            f"{len(items)} memory items ({source}); tiny random Qwen2 ({args.tokenizer} tokenizer, "
            f"{len(engine.tokenizer)} tokens), batch {args.batch_size}, "
            f"{'sampling' if args.sample else 'greedy'}, max_new_tokens {args.max_new_tokens}, {torch.get_num_threads()} thread(s)"
        )
        token_rows: list[list[int]] = []
        steps = count_decoding_steps(engine, token_rows)
        free = AnswerSettings(generation=settings.generation, batch_size=args.batch_size, constrain=False)
        processors = record_processors()
        run(engine, steps, task, items[:2], settings)  # warm-up: the tokenizer bridge, kernels
        run(engine, steps, task, items[:2], free)
        processors.clear()
        token_rows.clear()
        results = {
            "constrained": run(engine, steps, task, items, settings),
            "unconstrained": run(engine, steps, task, items, free),
        }
        counters = hasattr(constrain, "ConstraintStats")  # an older version (--compare) has none
        replay = replay_masks(engine, task, token_rows[: len(items)]) if counters else {}
    for name, r in results.items():
        print(
            f"{name:<14} {r['tokens']:6d} tokens in {r['seconds']:7.2f} s wall "
            f"({r['cpu']:.2f} s CPU) = {r['tokens_per_s']:7.1f} tokens/s; schema-valid raw "
            f"{r['valid']}/{len(items)}, exact turn_count {r['exact']}/{len(items)}"
        )
    c, u = results["constrained"], results["unconstrained"]
    if args.texts:
        Path(args.texts).write_text(json.dumps(c["texts"], ensure_ascii=False, indent=0), encoding="utf-8")
    if args.compare:
        other = json.loads(Path(args.compare).read_text(encoding="utf-8"))
        same = sum(a == b for a, b in zip(c["texts"], other, strict=True))
        print(f"constrained generations identical to {args.compare}: {same}/{len(other)}")
    if counters:
        report_masks(processors, replay, c, len(engine.tokenizer))
    per_token = (c["cpu"] / c["tokens"]) / (u["cpu"] / u["tokens"])
    print(
        f"constrained / unconstrained: {c['tokens_per_s'] / u['tokens_per_s']:.2f}x tokens/s, "
        f"{c['seconds'] / u['seconds']:.2f}x wall time, {per_token:.2f}x CPU time per token"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
