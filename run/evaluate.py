"""Score a results file against gold answers, after the official submission checks.

    python run/evaluate.py --task cci --gold resource/data/cci_dev.json --pred results/cci_dev.json
    python run/evaluate.py --task dcs --gold data/dcs_dev.json --pred results/dcs_dev.json \
        --bertscore_model models/bert-base-multilingual-cased --bleurt_checkpoint models/BLEURT-20

CCI: accuracy, per category, confusion matrix, accuracy by gold option position. DCS: ROUGE-1
(official Mecab scorer), BERTScore, BLEURT-20 and their mean x100 as the leaderboard shows it;
a metric whose model is not available locally is reported as missing, with the reason. --json
prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout too

from malpyeong.cli import run_cli  # noqa: E402
from malpyeong.data import check_submission, load_items  # noqa: E402
from malpyeong.errors import UserError  # noqa: E402
from malpyeong.results import read_results  # noqa: E402
from malpyeong.tasks import TASKS, get_task  # noqa: E402

DCS_METRICS = ("rouge1", "bertscore", "bleurt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    p.add_argument("--gold", required=True, help="the file with gold outputs (dev)")
    p.add_argument("--pred", required=True, help="results/NAME.json from run/test.py")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--per_item", action="store_true", help="with --json: keep per-item scores")
    p.add_argument("--bertscore_model", default=None,
                   help="DCS: BERTScore model path or hub id (default bert-base-multilingual-cased)")
    p.add_argument("--bleurt_checkpoint", default=None,
                   help="DCS: local BLEURT-20 PyTorch checkpoint folder (without it: not computed)")
    p.add_argument("--skip", nargs="*", default=[], choices=DCS_METRICS,
                   help="DCS metrics to leave out on purpose")
    p.add_argument("--device", default=None, help="device for the DCS metric models")
    return p.parse_args(argv)


def pad(text: str, width: int) -> str:
    """Left-justify by display width (a Hangul syllable takes two columns)."""
    import unicodedata

    used = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(width - used, 0)


def cci_text(report: dict) -> str:
    lines = [f"accuracy  {report['accuracy']:.4f}  ({report['correct']}/{report['n']})"]
    if report.get("by_category"):
        lines.append("by category:")
        for cat, r in report["by_category"].items():
            lines.append(f"  {pad(cat, 14)}{r['accuracy']:.4f}  ({r['correct']}/{r['n']})")
    lines.append("by gold position:")
    for label, r in report["by_gold_position"].items():
        lines.append(f"  {label:<14}{r['accuracy']:.4f}  ({r['correct']}/{r['n']})")
    labels = report["confusion"]["labels"]
    lines.append("confusion (rows: gold, columns: predicted):")
    lines.append(" " * 16 + "".join(f"{lab:>13}" for lab in labels))
    for lab, row in zip(labels, report["confusion"]["matrix"], strict=True):
        lines.append(f"  {lab:<14}" + "".join(f"{v:>13}" for v in row))
    dist = report.get("pred_distribution", {})
    if dist:
        lines.append("predicted: " + ", ".join(f"{k} {v}" for k, v in dist.items()))
    if report.get("invalid_predictions"):
        lines.append(f"invalid predictions: {report['invalid_predictions']}")
    return "\n".join(lines)


def dcs_text(report: dict) -> str:
    lines = []
    for name in DCS_METRICS:
        value = report.get(name)
        lines.append(f"{name:<10}{'not computed' if value is None else f'{value:.4f}'}")
    agg = report.get("aggregate")
    if agg is None:
        lines.append("aggregate not computed (no metric available)")
    else:
        note = "" if report.get("complete") else \
            f"  (mean of {', '.join(report['aggregate_of'])} only: not comparable with the leaderboard)"
        lines.append(f"aggregate {agg:.2f}{note}")
    lines += [f"note: {n}" for n in report.get("notices", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    n = check_submission(args.pred, args.gold, task)
    gold = load_items(args.gold, task, require_output=True)
    results = read_results(args.pred)
    options = {}
    if task.name == "dcs":
        options = {"bertscore_model": args.bertscore_model,
                   "bleurt_checkpoint": args.bleurt_checkpoint, "skip": args.skip,
                   "device": args.device}
    elif args.bertscore_model or args.bleurt_checkpoint or args.skip:
        raise UserError("--bertscore_model/--bleurt_checkpoint/--skip are DCS options",
                        field="task")
    report = task.evaluate(gold, results.outputs, **options)
    if args.json:
        if not args.per_item:
            report.pop("per_item", None)
        print(json.dumps({"task": task.name, "pred": args.pred, "gold": args.gold, "n": n,
                          **report}, ensure_ascii=False, indent=2, default=str))
        return 0
    print(f"{args.pred}: valid {task.name} submission, {n} items; scored against {args.gold}")
    print(cci_text(report) if task.kind == "choice" else dcs_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
