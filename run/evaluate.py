"""Score a results file against gold answers, after the official submission checks.

    python run/evaluate.py --task cci --gold resource/data/cci_dev.json --pred results/cci_dev.json
    python run/evaluate.py --task dcs --gold data/dcs_dev.json --pred results/dcs_dev.json \
        --bertscore_model models/bert-base-multilingual-cased --bleurt_checkpoint models/BLEURT-20

What is reported comes from the task: CCI accuracy, per category, confusion matrix, accuracy by
gold option position; DCS ROUGE-1 (official Mecab scorer), BERTScore, BLEURT-20 and their mean
x100 as the leaderboard shows it (a metric whose model is not available locally is reported as
missing, with the reason). The metric options below belong to the tasks that name them. --json
prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from malpyeong.cli import add_metric_options, given_metric_options, run_cli, task_argument, verbose_argument
from malpyeong.data import check_submission, load_items
from malpyeong.inference.results import read_results
from malpyeong.tasks import get_task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    task_argument(p)
    p.add_argument("--gold", required=True, help="the file with gold outputs (dev)")
    p.add_argument("--pred", required=True, help="results/NAME.json from run/test.py")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--per_item", action="store_true", help="with --json: keep per-item scores")
    verbose_argument(p)
    add_metric_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    given = given_metric_options(args, task)
    n = check_submission(args.pred, args.gold, task)
    gold = load_items(args.gold, task, require_output=True)
    results = read_results(args.pred)
    if task.evaluate_sidecar:  # per-item figures prediction kept beside the outputs
        given["sidecar"] = {
            i: {k: row[k] for k in task.evaluate_sidecar if k in row} for i, row in results.rows.items()
        }
    report = task.evaluate(gold, results.outputs, **given)
    if args.json:
        if not args.per_item:
            report.pop("per_item", None)
        print(
            json.dumps(
                {"task": task.name, "pred": args.pred, "gold": args.gold, "n": n, **report},
                ensure_ascii=False,
                indent=2,
                default=str,
            )
        )
        return 0
    print(f"{args.pred}: valid {task.name} submission, {n} items; scored against {args.gold}")
    print(task.format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
