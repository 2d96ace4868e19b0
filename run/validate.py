"""Check competition data files, or a submission against its test file.

    python run/validate.py --task cci resource/data/cci_train.json resource/data/cci_dev.json
    python run/validate.py --task cci --submission results/submission.json --test resource/data/cci_test.json

Valid: one line per file with its item count, exit 0. Invalid: one line per problem on stderr
(file, item id or #index, field, what is wrong), exit 2.
"""

from __future__ import annotations

import argparse
import sys

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.data import check_submission, load_items
from malpyeong.errors import UserError, UserErrors
from malpyeong.tasks import get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    task_argument(parser)
    parser.add_argument("files", nargs="*", help="data files (JSON list or JSONL)")
    parser.add_argument("--gold", action="store_true", help="require gold outputs (train/dev files)")
    parser.add_argument("--submission", help="a predictions file to check against --test")
    parser.add_argument("--test", help="the test file the submission answers")
    verbose_argument(parser)
    args = parser.parse_args(argv)
    task = get_task(args.task)
    if args.submission or args.test:
        if not (args.submission and args.test):
            raise UserError("--submission and --test go together", field="submission")
        n = check_submission(args.submission, args.test, task)
        print(f"{args.submission}: valid {task.name} submission, {n} items")
        return 0
    if not args.files:
        raise UserError("no files given", hint="python run/validate.py --task cci FILE...")
    errors: list[UserError] = []
    for path in args.files:
        try:
            items = load_items(path, task, require_output=args.gold)
        except UserErrors as errs:
            errors.extend(errs.errors)
            continue
        except UserError as err:
            errors.append(err)
            continue
        labelled = sum(task.has_output(it) for it in items)
        print(f"{path}: {len(items)} {task.name} items ({labelled} with gold output)")
    if errors:
        raise UserErrors(errors)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
