"""Write a SYNTHETIC data set that a tiny model can learn: train, dev and test files.

    python run/synthetic.py --task cci --out out/synthetic --train 1200 --dev 60 --test 60

Not competition data, and labelled so: every id starts with ``synthetic-``. The task makes
records in the official layout whose answer follows a rule visible in the text (CCI: the right
inference names the thing the target utterance talks about; the wrong ones name things no
dialogue mentions. DCS: the summary is a template sentence filled with the facts the dialogue
states), so a tiny random-weight model starts at chance and a few hundred training steps teach
it the rule: what the demo shows. Writes OUT/<task>_train.json, OUT/<task>_dev.json
(with gold outputs) and OUT/<task>_test.json (outputs empty, as an official test file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json, check_distinct, ensure_writable
from malpyeong.tasks import get_task

SPLITS = ("train", "dev", "test")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    task_argument(parser)
    parser.add_argument("--out", required=True, help="folder for the three files")
    parser.add_argument("--train", type=int, default=1200, help="training items")
    parser.add_argument("--dev", type=int, default=60, help="dev items (with gold)")
    parser.add_argument("--test", type=int, default=60, help="test items (no gold)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    verbose_argument(parser)
    args = parser.parse_args(argv)
    task = get_task(args.task)
    sizes = {split: getattr(args, split) for split in SPLITS}
    for split, n in sizes.items():
        if n < 1:
            raise UserError(f"must be at least 1, got {n}", field=split)
    paths = {split: Path(args.out) / f"{task.name}_{split}.json" for split in SPLITS}
    check_distinct([(f"the {s} file", p) for s, p in paths.items()])
    for path in paths.values():
        ensure_writable(path, args.overwrite)
    records = {
        split: task.synthetic_records(n, args.seed * 3 + k, split)
        for k, (split, n) in enumerate(sizes.items())
    }
    for split, path in paths.items():
        atomic_write_json(path, records[split])
    print(
        f"wrote SYNTHETIC {task.name} data (not competition data; ids synthetic-*): "
        + ", ".join(f"{paths[s]} ({sizes[s]} items)" for s in SPLITS)
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
