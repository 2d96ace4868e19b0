"""Benchmark: batched DCS generation (as run/test.py runs it) against a batch-1 generate loop.

    python benchmarks/bench_dcs_generation.py [--data ../shared/data/nikl/dcs_test.json]
        [--n 32] [--batch_size 8] [--max_length 1024] [--max_new_tokens 256] [--threads 0]
        [--hidden_size 64] [--layers 2]

Model: a random-weight Llama-architecture model with the tiny 2,000-token Korean BPE tokenizer,
built on the spot; default the tiny model the tests and demo use (hidden 64, 2 layers),
``--hidden_size 256 --layers 4`` for a compute-bound one. Prompts: the first --n
real DCS test conversations, baseline prompt, fitted to --max_length (prompt + new tokens) by
the length budget. Both decode greedily for exactly the same budget of --max_new_tokens and
stop at EOS / end of turn.

Ours: ``run_prediction`` end to end (length-sorted, left-padded batches of --batch_size,
results + sidecar written). Baseline: ``model.generate`` on one prompt at a time in file order.
Prints both rates, the ratio, and how many generations are identical (greedy decoding of the
same model: all of them, barring float ties). Skips (exit 0, message) when the file is absent.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from malpyeong.data import load_items
from malpyeong.inference.answer import AnswerSettings, generation_prompts
from malpyeong.inference.engines import GenerationSettings, HFEngine
from malpyeong.inference.generation import cut_at_stop, stop_token_ids_for
from malpyeong.inference.loading import load_for_inference
from malpyeong.inference.predict import run_prediction
from malpyeong.inference.results import read_results
from malpyeong.models.backbones import end_of_turn_ids
from malpyeong.models.tiny import build_tiny_model
from malpyeong.tasks import get_task
from malpyeong.tasks.base import BASELINE

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
DEFAULT_DATA = SHARED_DATA / "nikl" / "dcs_test.json"


def batch_one_loop(
    model, tokenizer, backbone, task, items, max_length: int, max_new_tokens: int
) -> tuple[list[str], float]:
    import torch

    stops = stop_token_ids_for(model, tokenizer, end_of_turn_ids(tokenizer, backbone))
    texts = []
    start = time.perf_counter()
    for item in items:
        ids = generation_prompts(
            task, [item], tokenizer, backbone, BASELINE, max_length=max_length, max_new_tokens=max_new_tokens
        )[0].input_ids
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        new = out[0, len(ids) :].tolist()
        texts.append(tokenizer.decode(cut_at_stop(new, set(stops)), skip_special_tokens=False))
    return texts, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--n", type=int, default=32, help="number of conversations (0: all)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=1024)
    p.add_argument("--max_new_tokens", type=int, default=256, help="run/test.py's default")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--hidden_size",
        type=int,
        default=64,
        help="tiny model width (64: the tiny model the tests and demo use)",
    )
    p.add_argument("--layers", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the real DCS test file is needed)")
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task("dcs")
    items = load_items(args.data, task)
    if args.n:
        items = items[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(
            "llama", Path(tmp) / "model", hidden_size=args.hidden_size, layers=args.layers
        )
        loaded = load_for_inference(str(model_dir))
        model, tok, backbone = loaded.model, loaded.tokenizer, loaded.backbone
        fitted = generation_prompts(
            task,
            items,
            tok,
            backbone,
            BASELINE,
            max_length=args.max_length,
            max_new_tokens=args.max_new_tokens,
        )
        lengths = sorted(len(f.input_ids) for f in fitted)
        print(
            f"{len(items)} conversations from {args.data}; prompt tokens min {lengths[0]} / "
            f"median {lengths[len(lengths) // 2]} / max {lengths[-1]} (budget "
            f"{args.max_length} incl. {args.max_new_tokens} new); greedy, "
            f"{args.max_new_tokens} new tokens; torch threads {torch.get_num_threads()}"
        )

        out = Path(tmp) / "results" / "dcs.json"
        settings = AnswerSettings(
            max_length=args.max_length,
            batch_size=args.batch_size,
            generation=GenerationSettings(max_new_tokens=args.max_new_tokens),
        )
        start = time.perf_counter()
        run_prediction(
            HFEngine(model, tok, backbone),
            task,
            items,
            out,
            settings=settings,
            model_name="tiny",
            progress=False,
        )
        ours_s = time.perf_counter() - start
        res = read_results(out)
        ours = [res.texts[it.id] for it in items]
        theirs, base_s = batch_one_loop(
            model, tok, backbone, task, items, args.max_length, args.max_new_tokens
        )
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    new_tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in theirs)
    print(
        f"ours (run_prediction, batch {args.batch_size}): {len(items) / ours_s:7.2f} items/s ({ours_s:.1f} s)"
    )
    print(
        f"baseline (batch-1 generate loop): {len(items) / base_s:7.2f} items/s ({base_s:.1f} s);"
        f" {new_tokens / len(items):.0f} tokens per generated text when re-encoded"
    )
    print(f"speed-up: {base_s / ours_s:.2f}x; identical generations: {same}/{len(items)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
