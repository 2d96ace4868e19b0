"""Benchmark: how often the length budget keeps the gold evidence of a question, with the
``retrieve`` strategy (BM25-ranked chunks) against ``head_tail`` (the document's start and
end), on the real QMSum validation meetings.

    python benchmarks/bench_qa_retrieve.py [--data ../shared/data/qmsum/val.jsonl]
        [--budgets 2048 4096 8192] [--reserve 256]

Items: every specific query of every meeting, converted as ``run/convert.py --from qmsum --to
qa`` does (the transcript as context). Gold evidence: the query's relevant text spans (turn
ranges an annotator marked). Each prompt is fitted by the same ``fit_prompt`` prediction uses,
to each budget (prompt tokens = budget - reserve, the reserve standing for the generated
answer), under the tiny Korean byte-level BPE tokenizer of the tests (English costs about one
token per 1.3 characters there, so a budget holds fewer words than under a real tokenizer).
Reported per strategy: the share of queries whose gold spans survive whole and at least half,
the mean share of span characters kept, and the ratio retrieve / head_tail. Skips (exit 0,
message) when the file is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from malpyeong.models.backbones import get_backbone, load_tokenizer
from malpyeong.models.budget import fit_prompt
from malpyeong.models.tiny import build_tiny_model
from malpyeong.prep.converters.qmsum import read_meetings
from malpyeong.prep.converters.qmsum_qa import meeting_items, transcript_lines
from malpyeong.tasks import get_task

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
DEFAULT_DATA = SHARED_DATA / "qmsum" / "val.jsonl"
STRATEGIES = ("head_tail", "retrieve")


def queries_with_spans(path: Path) -> list[tuple[object, list[tuple[int, int]]]]:
    """Each specific query as a qa item and its gold span character ranges in the context."""
    task = get_task("qa")
    out = []
    for meeting in read_meetings(path):
        lines = transcript_lines(meeting)
        where, at = {}, 0
        for turn, line in lines:
            where[turn] = (at, at + len(line))
            at += len(line) + 1
        for record, query in zip(meeting_items(meeting, "bench"), meeting.specific, strict=True):
            problems: list = []
            item = task.parse_item(record, problems)
            ranges = sorted({where[t] for s, e in query.spans for t in range(s, e + 1) if t in where})
            if ranges:
                out.append((item, ranges))
    return out


def coverage(task, item, ranges, spec, dropped: int) -> float:
    """Share of the gold span characters that are in the kept chunks."""
    chunks, order = task.cut_order(item, spec)
    gone = set(order[:dropped])
    kept = [(c.start, c.end) for i, c in enumerate(chunks) if i not in gone]
    total = sum(e - s for s, e in ranges)
    hit = sum(max(0, min(e, ke) - max(s, ks)) for s, e in ranges for ks, ke in kept)
    return hit / total if total else 1.0


def measure(queries, tokenizer, backbone, budget: int, reserve: int) -> dict[str, dict]:
    """Per strategy: coverage of each query's gold spans at ``budget``."""
    task = get_task("qa")
    result = {}
    for strategy in STRATEGIES:
        spec = task.prompt_spec(strategy)
        start = time.perf_counter()
        covers, cut = [], 0
        for item, ranges in queries:
            fitted = fit_prompt(task, item, tokenizer, backbone, spec, budget, reserve=reserve)
            cut += fitted.dropped > 0
            covers.append(coverage(task, item, ranges, spec, fitted.dropped))
        result[strategy] = {
            "queries": len(covers),
            "cut": cut,
            "whole": sum(c >= 1.0 for c in covers) / len(covers),
            "half": sum(c >= 0.5 for c in covers) / len(covers),
            "mean": statistics.fmean(covers),
            "seconds": time.perf_counter() - start,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--budgets", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--reserve", type=int, default=256, help="tokens kept for the answer")
    args = p.parse_args(argv)
    if not args.data.is_file():
        print(f"skipped: {args.data} not found")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model("llama", Path(tmp) / "tiny")
        backbone = get_backbone(str(model))
        tokenizer = load_tokenizer(str(model), backbone)
    queries = queries_with_spans(args.data)
    print(f"{len(queries)} QMSum queries with gold spans from {args.data}")
    print(
        f"{'budget':>7} {'strategy':<10} {'cut':>5} {'spans whole':>12} {'>= half':>8} "
        f"{'mean kept':>10} {'seconds':>8}"
    )
    for budget in args.budgets:
        result = measure(queries, tokenizer, backbone, budget, args.reserve)
        for strategy, r in result.items():
            print(
                f"{budget:>7} {strategy:<10} {r['cut']:>5} {r['whole']:>12.3f} {r['half']:>8.3f} "
                f"{r['mean']:>10.3f} {r['seconds']:>8.1f}"
            )
        ratio = result["retrieve"]["mean"] / max(result["head_tail"]["mean"], 1e-9)
        print(f"{budget:>7} retrieve / head_tail mean span kept: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
