"""Reproduce an ensemble entry: train every member, predict dev and test, score, vote, check.

    python run/ensemble_entry.py --recipes resource/configs/cci/malbbungchi/ \\
        --test cci_test.json --out results/malbbungchi/
    # the whole flow on a CPU with tiny random models of each member's family (minutes):
    python run/ensemble_entry.py --recipes resource/configs/cci/malbbungchi/ \\
        --test resource/data/cci_test.json --out results/malbbungchi_tiny/ \\
        --model_override tiny=models/tiny --set num_train_epochs=1 activation_checkpointing=false

--recipes is a folder of recipes, one per member (every *.yaml in it). Each member is trained
from its recipe into OUT/runs/<member>/, predicts the dev file (the recipes' dev_file, or --dev)
and --test into OUT/dev/ and OUT/test/, and is scored on dev; the test predictions are voted
(default: the task's default, hard voting for a choice task, which is what the 말뿡치 entry did;
ties are broken by summed probabilities, then dev accuracy) into OUT/submission.json, checked
with the official submission checks, and a table of the members and the ensemble is printed
(and kept in OUT/members.json). A member whose licence is non-commercial is named with a warning.

Interrupted (even kill -9)? Run the same command again: finished members are skipped, a member
stopped mid-training continues from its last checkpoint, predictions continue item by item.

This is one Python process over the library (training.train_sft, predict.run_prediction,
ensemble.run_vote, data.check_submission), not a shell script over run/train.py and run/test.py:
the imports stay loaded between the eight members, every recipe is parsed (and every mistake
reported) before the first member trains, and the resume decisions use the run-folder format's
own functions. Exit 2 with one line on stderr for a user mistake.
"""

from __future__ import annotations

import argparse
import sys

from malpyeong.cli import run_cli, verbose_argument
from malpyeong.ensemble import METHODS
from malpyeong.ensemble.entry import EntryJob, run_entry
from malpyeong.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", required=True, help="folder of the members' recipes (*.yaml)")
    p.add_argument("--test", required=True, help="the test file to predict and submit")
    p.add_argument("--out", required=True, help="output folder (runs, predictions, submission)")
    p.add_argument("--dev", help="dev file with gold outputs (default: the recipes' dev_file)")
    p.add_argument(
        "--method", choices=METHODS, help="voting method (default: the task's; hard voting for a choice task)"
    )
    p.add_argument(
        "--model_override",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=PATH",
        help="tiny=DIR: every member on a tiny random model of its family (built in "
        "DIR); MODEL=PATH: that recipe model replaced by PATH",
    )
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key for every member (e.g. num_train_epochs=1)",
    )
    p.add_argument("--batch_size", type=int, default=None, help="prediction batch size")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    verbose_argument(p)
    args = p.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"must be at least 1, got {args.batch_size}", field="batch_size")
    run_entry(
        EntryJob(
            recipes=args.recipes,
            test=args.test,
            out=args.out,
            dev=args.dev,
            method=args.method,
            model_override=args.model_override,
            set=args.set,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
