"""Build ORPO preference pairs (JSONL) from a training file; no model is needed.

    python orpo/build_pairs.py --task cci --data resource/data/cci_train.json --out pairs/cci.jsonl
    python orpo/build_pairs.py --task dcs --data resource/data/dcs_train.json \\
        --results results/dcs_sft.json --out pairs/dcs.jsonl

CCI: two pairs per item; chosen = the gold option's response, rejected = each wrong option's
response, in the SFT target style (--target_style letter_text: "A. <option>", or letter: "A").
DCS: chosen = the gold summary; rejected = the model's own summary from --results (a results file
written by run/test.py on these items) or, for items it lacks, the summary of a different
dialogue sharing the most keywords. The prompt is rendered per model at training time.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.io import check_distinct, ensure_writable
from malpyeong.tasks import get_task
from malpyeong.training.pairs import build_pairs, write_pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    task_argument(parser)
    parser.add_argument("--data", required=True, help="training file with gold outputs")
    parser.add_argument("--out", required=True, help="pairs file to write (JSONL)")
    parser.add_argument(
        "--target_style",
        default=None,
        help="response style of the task's targets (CCI: letter_text, the "
        "default, or letter); use the one the SFT run used",
    )
    parser.add_argument(
        "--results", help="generate tasks: a results file whose outputs are the rejected answers"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="tie-break when picking another item's output as rejected"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    verbose_argument(parser)
    args = parser.parse_args(argv)

    task = get_task(args.task)
    check_distinct([("--out", args.out)], [("--data", args.data), ("--results", args.results)])
    ensure_writable(args.out, args.overwrite)  # fail before the work, not after
    items = load_items(args.data, task, require_output=True)
    pairs = build_pairs(task, items, target_style=args.target_style, results=args.results, seed=args.seed)
    if not pairs:
        raise UserError("no pairs could be built", file=args.data)
    write_pairs(pairs, args.out, overwrite=True)
    kinds = Counter(p["rejected_from"].split(":")[0] for p in pairs)
    detail = ", ".join(f"{n} rejected from {k}" for k, n in sorted(kinds.items()))
    print(f"{args.out}: {len(pairs)} pairs from {len(items)} {task.name} items ({detail})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
