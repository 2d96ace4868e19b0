"""Build KTO's unpaired examples (JSONL): desirable and undesirable answers; no model is needed.

    python orpo/build_unpaired.py --task cci --data resource/data/cci_train.json --out kto/cci.jsonl
    python orpo/build_unpaired.py --task dcs --data resource/data/dcs_train.json \\
        --results results/dcs_sft.json --threshold 0.35 --out kto/dcs.jsonl

CCI: the gold option's answer is desirable, each wrong option's undesirable (the pairs of
orpo/build_pairs.py, unpaired). DCS with --results (a results file run/test.py wrote on these
items): the gold summary is desirable; the model's own summary is scored against gold with the
task's dev metric (ROUGE-1) and is desirable at --threshold or above, undesirable below. Without
--results, DCS falls back to the pairs (another dialogue's summary is undesirable).
Train with: python orpo/train.py --algorithm kto --unpaired OUT ...
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.io import check_outputs
from malpyeong.tasks import get_task
from malpyeong.training.unpaired import build_unpaired, write_unpaired


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    task_argument(parser)
    parser.add_argument("--data", required=True, help="training file with gold outputs")
    parser.add_argument("--out", required=True, help="examples file to write (JSONL)")
    parser.add_argument(
        "--target_style",
        default=None,
        help="response style of the task's targets (CCI: letter_text or letter)",
    )
    parser.add_argument(
        "--results", help="generate tasks: a results file whose outputs are scored against gold"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="with --results: a score at or above this is desirable"
    )
    parser.add_argument(
        "--metric", default=None, help="with --results: the metric scored (default: the task's dev metric)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    verbose_argument(parser)
    args = parser.parse_args(argv)

    task = get_task(args.task)
    if args.metric is not None:
        task.metric(args.metric)  # an unknown metric fails before the work
    check_outputs(
        [("--out", args.out)], [("--data", args.data), ("--results", args.results)], overwrite=args.overwrite
    )
    items = load_items(args.data, task, require_output=True)
    rows = build_unpaired(
        task,
        items,
        target_style=args.target_style,
        results=args.results,
        threshold=args.threshold,
        metric=args.metric,
        seed=args.seed,
    )
    labels = Counter(r["label"] for r in rows)
    if not labels[True] or not labels[False]:
        raise UserError(
            "KTO needs desirable and undesirable examples; all came out "
            f"{'desirable' if labels[True] else 'undesirable'}",
            field="threshold",
            hint="change --threshold",
        )
    write_unpaired(rows, args.out, overwrite=True)
    print(
        f"{args.out}: {len(rows)} examples from {len(items)} {task.name} items "
        f"({labels[True]} desirable, {labels[False]} undesirable)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
