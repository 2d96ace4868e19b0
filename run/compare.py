"""Compare models on the same dev items, item by item: is the difference real?

    python run/compare.py --task qa --gold dev.json --pred results/a.json results/b.json \
        --metric similarity --embedder models/ko-sroberta-multitask --out report/
    python run/compare.py --task qa --models runs/qa/llama runs/qa/qwen --data dev.json \
        --metric rouge1 --max_length 32768 --out report/       # generate first, then compare

Each model's output is scored per item by the task's metric (the task says which metrics it
has: ``--metric`` defaults to its quick dev metric). The report gives per model the mean,
median and a bootstrap confidence interval, and per pair the mean paired difference with its
paired-bootstrap interval, win / tie / loss counts, a paired permutation test (Holm-adjusted
over several pairs) and the Wilcoxon signed-rank test, and one verdict line. Written to --out:
report.md, report.html (self-contained), report.json, scores.csv (per item), distribution.png
and one scatter_A_vs_B.png per pair. With --models the predictions are made first by the same
code as run/test.py, into OUT/predictions/ (resumable).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from malpyeong.cli import add_metric_options, given_metric_options, run_cli, task_argument, verbose_argument
from malpyeong.data import check_submission, load_items
from malpyeong.errors import UserError
from malpyeong.inference.engines import GenerationSettings
from malpyeong.inference.predict import PredictionJob
from malpyeong.inference.results import read_results
from malpyeong.io import check_distinct, check_folder_writable, ensure_writable
from malpyeong.metrics.comparison import compare, markdown_table, write_reports
from malpyeong.tasks import Task, get_task

log = logging.getLogger("compare")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    task_argument(p)
    p.add_argument("--gold", help="dev file with gold outputs (with --pred)")
    p.add_argument("--pred", nargs="+", help="results files from run/test.py (two or more)")
    p.add_argument(
        "--models", nargs="+", help="models to generate with first (hub ids, folders, run folders)"
    )
    p.add_argument("--data", help="dev file with gold outputs (with --models)")
    p.add_argument("--metric", help="the task's metric to compare on (default: its dev metric)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap and permutation draws")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing report files")
    g = p.add_argument_group("generation (with --models)")
    g.add_argument("--prompt", default=None, help="prompt variant (default: each run's, or baseline)")
    g.add_argument("--max_length", type=int, default=None, help="token budget (default: the run's)")
    g.add_argument("--max_new_tokens", type=int, default=256)
    g.add_argument("--batch_size", type=int, default=8)
    g.add_argument("--dtype", default="auto")
    add_metric_options(p)  # --device serves generation and the metric models
    verbose_argument(p)
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if bool(args.pred) == bool(args.models):
        raise UserError("give either --pred FILES with --gold, or --models with --data", field="pred")
    if args.pred and not args.gold:
        raise UserError("--pred needs --gold (the dev file the predictions answer)", field="gold")
    if args.models and not args.data:
        raise UserError("--models needs --data (the dev file to answer)", field="data")
    if len(args.pred or args.models) < 2:
        raise UserError("two or more models are needed to compare", field="pred")
    if not 0 < args.alpha < 1:
        raise UserError(f"must be in (0, 1), got {args.alpha}", field="alpha")
    for name in ("batch_size", "max_length", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"must be at least 1, got {value}", field=name)
    if args.resamples < 100:
        raise UserError(f"must be at least 100, got {args.resamples}", field="resamples")


FIXED_REPORTS = ("report.md", "report.html", "report.json", "scores.csv", "distribution.png")


def check_out(args: argparse.Namespace) -> None:
    """The report folder, before any prediction or scoring: a folder that can be written, whose
    report files are no input and exist only with --overwrite (the plot per pair is named by
    the models and checked again when written)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError("is a file; --out is the report folder", file=str(out))
    check_folder_writable(out, what=str(out))
    reports = [(f"--out {name}", out / name) for name in FIXED_REPORTS]
    check_distinct(
        reports, [("--gold", args.gold), ("--data", args.data), *(("--pred", p) for p in args.pred or [])]
    )
    for _, path in reports:
        ensure_writable(path, args.overwrite)


def unique_names(paths: list[str]) -> list[str]:
    """A short name per input (file stem or folder name), made unique by its parent folder."""
    names = [Path(p.rstrip("/")).stem if p.endswith(".json") else Path(p.rstrip("/")).name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{Path(p.rstrip('/')).parent.name}/{n}" for p, n in zip(paths, names, strict=True)]
    if len(set(names)) < len(names):
        raise UserError("two inputs have the same name", field="pred", hint=", ".join(paths))
    return names


def generate(task: Task, args: argparse.Namespace, names: list[str]) -> list[str]:
    """Predict ``--data`` with each of ``--models`` (as run/test.py does); the results paths."""
    items = load_items(args.data, task)
    jobs = []
    for model, name in zip(args.models, names, strict=True):
        out = Path(args.out) / "predictions" / f"{name.replace('/', '_')}.json"
        job = PredictionJob(
            task,
            model,
            output=out,
            input=args.data,
            prompt=args.prompt,
            max_length=args.max_length,
            batch_size=args.batch_size,
            generation=GenerationSettings(max_new_tokens=args.max_new_tokens, seed=args.seed),
            dtype=args.dtype,
            device=getattr(args, "device", None),
            overwrite=args.overwrite,
            log=log,
        )
        job.settings_for(job.source_of(model))  # every model checked before the first generates
        jobs.append(job)
    paths = []
    for job in jobs:
        out = Path(job.output)
        if out.exists() and not args.overwrite:
            log.info("%s: predictions exist, reused", out)
        else:
            summary = job.run(items)
            print(f"{out}: {summary.n} predictions; {summary.cut} prompts cut to fit")
        paths.append(str(out))
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    check_args(args)
    check_out(args)
    options = given_metric_options(args, task)
    metric = task.metric(args.metric or task.dev_metric)
    names = unique_names(args.pred or args.models)
    gold_path = args.gold or args.data
    preds = args.pred or generate(task, args, names)
    gold = load_items(gold_path, task, require_output=True)
    scores = {}
    for name, path in zip(names, preds, strict=True):
        check_submission(path, gold_path, task)
        outputs = read_results(path).outputs
        scores[name] = task.item_scores(gold, outputs, metric.name, **options)
    result = compare(
        [it.id for it in gold],
        scores,
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        alpha=args.alpha,
        resamples=args.resamples,
        seed=args.seed,
    )
    write_reports(
        result,
        args.out,
        title=f"{task.name}: {' vs '.join(names)} on {metric.name}",
        sources=dict(zip(names, preds, strict=True)),
        overwrite=args.overwrite,
    )
    print(markdown_table(result))
    for pair in result.pairs:
        print(pair.verdict)
    print(f"reports in {args.out}: report.md, report.html, report.json, scores.csv, PNG plots")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
