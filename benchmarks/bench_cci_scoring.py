"""Benchmark: CCI option scoring as run/test.py runs it, against the official baseline's loop.

    python benchmarks/bench_cci_scoring.py [--data ../shared/data/nikl/cci_test.json]
        [--batch_size 0] [--limit 0] [--threads 0] [--no_grad_baseline] [--hidden_size 64] [--layers 2]

Model: a random-weight Llama-architecture model built on the spot with the project's tiny
2,000-token Korean BPE tokenizer (a real CCI prompt is 400-1,200 tokens). Default: the tiny model
the tests and demo use (hidden 64, 2 layers); ``--hidden_size 256 --layers 4`` gives a model
whose matrix products, not per-call overhead, cost the time (the CPU ceiling for batching).
Same model, same prompts (baseline prompt, no length budget), same items for both.

Ours: ``run_prediction`` end to end (prompt rendering, letter scoring with shared-prefix
batches, results + sidecar written). Baseline, as the official NIKL test.py does it: one item at
a time in file order, ``model(**inputs)`` on the whole prompt (autograd left on, as there; pass
--no_grad_baseline to time it under ``torch.inference_mode`` instead), argmax over the logits
of ``tokenizer.vocab['A'/'B'/'C']`` at the last position. Asserts identical predictions and
prints both rates and the ratio. Skips (exit 0, message) when the data file is absent.
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
from malpyeong.inference.answer import AnswerSettings, default_batch_size
from malpyeong.inference.engines import HFEngine
from malpyeong.inference.loading import load_for_inference
from malpyeong.inference.predict import run_prediction
from malpyeong.inference.results import read_results
from malpyeong.models.budget import fit_prompt
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
DEFAULT_DATA = SHARED_DATA / "nikl" / "cci_test.json"


def baseline(model, tokenizer, backbone, task, items, no_grad: bool) -> tuple[list[str], float]:
    """The official loop: one item at a time, full logits, argmax over the A/B/C logits."""
    import contextlib

    import torch

    letters = [tokenizer.vocab[c] for c in "ABC"]
    outputs = []
    start = time.perf_counter()
    with torch.inference_mode() if no_grad else contextlib.nullcontext():
        for item in items:
            ids = fit_prompt(task, item, tokenizer, backbone, BASELINE).input_ids
            inputs = {"input_ids": torch.tensor([ids])}
            logits = model(**inputs).logits[:, -1].flatten()
            probs = torch.softmax(torch.stack([logits[i] for i in letters]), dim=0)
            outputs.append(task.output_for(int(probs.argmax())))
    return outputs, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--batch_size", type=int, default=0, help="0: run/test.py's default")
    p.add_argument("--limit", type=int, default=0, help="first N items only (0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no_grad_baseline", action="store_true")
    p.add_argument(
        "--hidden_size",
        type=int,
        default=64,
        help="tiny model width (64: the tiny model the tests and demo use; 256 makes "
        "the matrix products, not per-call overhead, dominate)",
    )
    p.add_argument("--layers", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the real CCI test file is needed)")
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task("cci")
    items = load_items(args.data, task)
    if args.limit:
        items = items[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(
            "llama", Path(tmp) / "model", hidden_size=args.hidden_size, layers=args.layers
        )
        loaded = load_for_inference(str(model_dir))
        model, tok, backbone = loaded.model, loaded.tokenizer, loaded.backbone
        n_params = sum(p.numel() for p in model.parameters())
        lengths = sorted(len(fit_prompt(task, it, tok, backbone, BASELINE).input_ids) for it in items)
        print(
            f"{len(items)} items from {args.data}; model: llama hidden {args.hidden_size}, {args.layers} layers, "
            f"{n_params / 1e6:.1f}M parameters; prompt tokens min {lengths[0]} / median "
            f"{lengths[len(lengths) // 2]} / max {lengths[-1]}; torch threads "
            f"{torch.get_num_threads()}"
        )

        args.batch_size = args.batch_size or default_batch_size(task, model)
        out = Path(tmp) / "results" / "bench.json"
        start = time.perf_counter()
        run_prediction(
            HFEngine(model, tok, backbone),
            task,
            items,
            out,
            settings=AnswerSettings(batch_size=args.batch_size),
            model_name="tiny",
            progress=False,
        )
        ours_s = time.perf_counter() - start
        res = read_results(out)
        ours = [res.outputs[it.id] for it in items]

        theirs, base_s = baseline(model, tok, backbone, task, items, args.no_grad_baseline)
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(
        f"ours (run_prediction, batch {args.batch_size}): {len(items) / ours_s:8.2f} items/s ({ours_s:.1f} s)"
    )
    print(
        f"baseline (official loop{', inference_mode' if args.no_grad_baseline else ''}): "
        f"{len(items) / base_s:8.2f} items/s ({base_s:.1f} s)"
    )
    print(f"speed-up: {base_s / ours_s:.2f}x; same predictions: {same}/{len(items)}")
    assert same == len(items), "predictions differ"
    return 0


if __name__ == "__main__":
    sys.exit(main())
