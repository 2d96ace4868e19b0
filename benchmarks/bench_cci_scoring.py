"""Benchmark: CCI option scoring as run/test.py runs it, against the official baseline's loop.

    python benchmarks/bench_cci_scoring.py [--data ../shared/data/nikl/cci_test.json]
        [--batch_size 0] [--limit 0] [--threads 1] [--no_grad_baseline] [--hidden_size 64] [--layers 2] [--rounds 1]

Model: a random-weight Llama-architecture model built on the spot with the project's tiny
2,000-token Korean BPE tokenizer (a real CCI prompt is 400-1,200 tokens). Default: the tiny model
the tests and demo use (hidden 64, 2 layers); ``--hidden_size 256 --layers 4`` gives a model
whose matrix products, not per-call overhead, cost the time (the CPU ceiling for batching).
Same model, same prompts (baseline prompt, no length budget), same items for both.

Ours: ``run_prediction`` end to end (prompt rendering, letter scoring with shared-prefix
batches, results + sidecar + submission written). Baseline, as the official NIKL test.py does
it: one item at a time in file order, ``model(**inputs)`` on the whole prompt (autograd left on,
as there; pass --no_grad_baseline to time it under ``torch.inference_mode`` instead), argmax
over the logits of ``tokenizer.vocab['A'/'B'/'C']`` at the last position, then the submission
written (``json.dump(..., indent=4)`` as there). Asserts identical predictions and prints both
rates and the ratio, in wall time and in CPU time (the figure to read on a shared machine);
``--rounds N`` runs ours then the baseline N times, interleaved, and sums the times.

Then where the time goes, for both: CPU seconds in prompt fitting (tokenizing), the model's
forward passes (of which attention), our prefix-cache copies and masks, and writing the files;
and the work each side computed: token positions (padding included) and attention query-key
pairs. The token ceiling is the baseline's token positions over ours (what computing fewer
tokens allows, if time followed tokens); the attention ceiling is the same for query-key pairs
(a shared prefix is computed once, but every later token still attends over it).
Skips (exit 0, message) when the data file is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from malpyeong.data import load_items, write_submission
from malpyeong.inference import predict, scoring
from malpyeong.inference.answer import AnswerSettings, default_batch_size
from malpyeong.inference.engines import HFEngine
from malpyeong.inference.loading import load_for_inference
from malpyeong.inference.predict import run_prediction
from malpyeong.inference.results import read_results
from malpyeong.models import budget
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


class Phases:
    """CPU seconds spent inside wrapped functions, per label (outermost call only, so a
    label's time is not counted twice when it recurses), and counters of computed work."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._depth: dict[str, int] = defaultdict(int)
        self._undo: list = []

    def wrap(self, owner, name: str, label: str, count=None) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)  # keeps the signature: callers inspect a model's forward
        def timed(*args, **kwargs):
            if count is not None:
                count(self.counts, *args, **kwargs)
            self._depth[label] += 1
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self._depth[label] -= 1
                if not self._depth[label]:
                    self.seconds[label] += time.process_time() - start

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def count_tokens(counts, *args, **kwargs) -> None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is not None:
        counts["token positions"] += int(ids.numel())


def count_pairs(counts, query, key, *args, **kwargs) -> None:
    """Query-key pairs an attention call computes (a causal call without a mask: half)."""
    pairs = query.shape[0] * query.shape[1] * query.shape[2] * key.shape[2]
    causal = kwargs.get("is_causal") and kwargs.get("attn_mask") is None
    counts["attention pairs"] += pairs // 2 if causal else pairs


def instrument(model, phases: Phases) -> None:
    import torch

    phases.wrap(model, "forward", "model forward", count_tokens)
    phases.wrap(torch.nn.functional, "scaled_dot_product_attention", "  of which attention", count_pairs)
    for owner in (scoring, budget, sys.modules[__name__]):
        if hasattr(owner, "fit_prompt"):
            phases.wrap(owner, "fit_prompt", "prompt fitting (tokenizing)")
    phases.wrap(scoring, "_member_mask", "prefix masks")
    phases.wrap(scoring.copy, "deepcopy", "prefix cache copies")
    from transformers import DynamicCache

    for name in ("batch_repeat_interleave", "batch_select_indices"):
        phases.wrap(DynamicCache, name, "prefix cache copies")
    for owner in (predict, sys.modules[__name__]):
        phases.wrap(owner, "write_submission", "writing files")
    phases.wrap(predict.JsonlAppender, "write", "writing files")
    phases.wrap(scoring, "plan_units", "planning batches", keep_plan)


def keep_plan(counts, seqs, *args, **kwargs) -> None:
    counts["plan sequences"] = seqs  # read back by needed_pairs()
    counts["plan args"] = (args, kwargs)


def needed_pairs(counts) -> float:
    """The attention query-key pairs our plan needs per head and layer if nothing were padded
    (each computed token attends to its own context only, causally): the baseline's pairs over
    this are what sharing prefixes alone could save in attention."""
    seqs = counts.get("plan sequences")
    if seqs is None:
        return float("nan")
    args, kwargs = counts["plan args"]
    plan = scoring.plan_units(seqs, *args, **kwargs)
    root = plan.root
    need = root * root / 2
    for unit in plan.units:
        starts = [unit.groups[g][1] for g in unit.group_of] if unit.groups else [0] * len(unit.members)
        heads = {p for _, p in unit.groups if any(starts)}
        need += sum((p - root) * (root + (p - root) / 2) for p in heads)
        for i, start in zip(unit.members, starts, strict=True):
            tail = len(seqs[i].ids) - start
            need += tail * (start + tail / 2)
    return need


def baseline(
    model, tokenizer, backbone, task, items, no_grad: bool, out: Path
) -> tuple[list[str], float, float]:
    """The official loop: one item at a time, full logits, argmax over the A/B/C logits; then the
    submission written as the official script writes it."""
    import torch

    letters = [tokenizer.vocab[c] for c in "ABC"]
    outputs = []
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode() if no_grad else contextlib.nullcontext():
        for item in items:
            ids = fit_prompt(task, item, tokenizer, backbone, BASELINE).input_ids
            inputs = {"input_ids": torch.tensor([ids])}
            logits = model(**inputs).logits[:, -1].flatten()
            probs = torch.softmax(torch.stack([logits[i] for i in letters]), dim=0)
            outputs.append(task.output_for(int(probs.argmax())))
    write_submission(list(items), {it.id: o for it, o in zip(items, outputs, strict=True)}, out)
    return outputs, time.perf_counter() - start, time.process_time() - cpu


def report(ours: Phases, base: Phases, ours_cpu: float, base_cpu: float) -> None:
    labels = [
        "prompt fitting (tokenizing)",
        "model forward",
        "  of which attention",
        "prefix cache copies",
        "prefix masks",
        "planning batches",
        "writing files",
    ]
    print(f"{'CPU seconds':<30} {'ours':>8} {'baseline':>9}")
    for label in labels:
        print(f"{label:<30} {ours.seconds.get(label, 0.0):8.2f} {base.seconds.get(label, 0.0):9.2f}")
    rest_ours = ours_cpu - sum(v for k, v in ours.seconds.items() if not k.startswith(" "))
    rest_base = base_cpu - sum(v for k, v in base.seconds.items() if not k.startswith(" "))
    print(f"{'everything else':<30} {rest_ours:8.2f} {rest_base:9.2f}")
    print(f"{'total':<30} {ours_cpu:8.2f} {base_cpu:9.2f}")
    for name in ("token positions", "attention pairs"):
        a, b = ours.counts[name], base.counts[name]
        print(f"{name:<30} {a:>14,} {b:>16,}  (baseline / ours x{b / a:.2f})")
    need = needed_pairs(ours.counts)
    per_head = base.counts["attention pairs"] / sum(
        len(s.ids) ** 2 / 2 for s in ours.counts["plan sequences"]
    )
    need *= per_head  # heads x layers, as counted at the attention calls
    print(
        f"{'attention pairs, unpadded':<30} {need:>14,.0f}  (baseline / that x{base.counts['attention pairs'] / need:.2f}:"
        f" padding and masked-out blocks are {1 - need / ours.counts['attention pairs']:.0%} of what ours computes)"
    )
    token_ceiling = base.counts["token positions"] / ours.counts["token positions"]
    attention_ceiling = base.counts["attention pairs"] / ours.counts["attention pairs"]
    speedup = base_cpu / ours_cpu
    attention = "  of which attention"
    outside = (base.seconds["model forward"] - base.seconds[attention]) / (
        ours.seconds["model forward"] - ours.seconds[attention]
    )
    inside = base.seconds[attention] / ours.seconds[attention]
    print(
        f"CPU speed-up x{speedup:.2f} = {speedup / token_ceiling:.2f} of the token ceiling "
        f"(x{token_ceiling:.2f}); forward passes outside attention x{outside:.2f} "
        f"({outside / token_ceiling:.2f} of the token ceiling), attention x{inside:.2f} "
        f"(its ceiling: x{attention_ceiling:.2f} fewer query-key pairs)"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--batch_size", type=int, default=0, help="0: run/test.py's default")
    p.add_argument("--limit", type=int, default=0, help="first N items only (0: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--no_grad_baseline", action="store_true")
    p.add_argument(
        "--hidden_size",
        type=int,
        default=64,
        help="tiny model width (64: the tiny model the tests and demo use; 256 makes "
        "the matrix products, not per-call overhead, dominate)",
    )
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="ours then the baseline, this many times (summed)")
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
        ours_phases, base_phases = Phases(), Phases()
        ours_s = ours_cpu = base_s = base_cpu = 0.0
        for round_ in range(args.rounds):  # interleaved: the machine's load hits both alike
            out = Path(tmp) / f"results{round_}" / "bench.json"
            instrument(model, ours_phases)
            start, cpu = time.perf_counter(), time.process_time()
            run_prediction(
                HFEngine(model, tok, backbone),
                task,
                items,
                out,
                settings=AnswerSettings(batch_size=args.batch_size),
                model_name="tiny",
                progress=False,
            )
            ours_s, ours_cpu = ours_s + time.perf_counter() - start, ours_cpu + time.process_time() - cpu
            ours_phases.restore()
            res = read_results(out)
            ours = [res.outputs[it.id] for it in items]

            instrument(model, base_phases)
            theirs, seconds, cpu = baseline(
                model, tok, backbone, task, items, args.no_grad_baseline, Path(tmp) / f"baseline{round_}.json"
            )
            base_s, base_cpu = base_s + seconds, base_cpu + cpu
            base_phases.restore()
            if ours != theirs:
                break
        n = len(items) * args.rounds
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(
        f"ours (run_prediction, batch {args.batch_size}): {n / ours_s:8.2f} items/s "
        f"({ours_s:.1f} s wall, {ours_cpu:.1f} s CPU)"
    )
    print(
        f"baseline (official loop{', inference_mode' if args.no_grad_baseline else ''}): "
        f"{n / base_s:8.2f} items/s ({base_s:.1f} s wall, {base_cpu:.1f} s CPU)"
    )
    print(
        f"speed-up: x{base_s / ours_s:.2f} wall, x{base_cpu / ours_cpu:.2f} CPU; same predictions: "
        f"{same}/{len(items)} (machine: a shared 2-core CPU, so read the CPU figures)"
    )
    report(ours_phases, base_phases, ours_cpu, base_cpu)
    assert same == len(items), "predictions differ"
    return 0


if __name__ == "__main__":
    sys.exit(main())
