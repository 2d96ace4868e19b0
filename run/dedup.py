"""Remove exact and near-duplicate items (Simhash), and items leaking dev/test dialogues.

    python run/dedup.py --task cci --in resource/data/cci_train.json --out data/cci_train.dedup.json
    python run/dedup.py --task cci --in train.json aug.json --out data/train.clean.json \\
        --against resource/data/cci_dev.json resource/data/cci_test.json
    python run/dedup.py --task text --in magpie.jsonl --out magpie.dedup.jsonl --k 4 --keep longest

Exact duplicates (equal after dropping case, spaces and punctuation) go first, then items whose
64-bit Simhash fingerprints are within --k bits (clusters by union-find; one item kept per
cluster: --keep first | longest). --task is any registered task (its files are read and
validated through it, and it says what is compared: CCI items on dialogue *and* question, so
different questions about one dialogue all stay) or text: JSONL (``text``, or the strings of
``messages`` / ``prompt`` + ``completion``), a JSON list of such records, or plain lines; text
files are streamed (millions of lines in bounded memory) and kept JSONL lines are copied as
they were. --against drops items whose dialogue, or any --window consecutive utterances of it,
is an exact/near copy of a dialogue (or window) of the given dev/test files (official files of
any task). Output: the kept items in the input's format (tasks: official JSON list; text:
JSONL), and a JSON report (default OUT with suffix .report.json) that says which item was
dropped for which.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.errors import UserError
from malpyeong.io import check_distinct, ensure_writable
from malpyeong.prep.dedup import KEEP
from malpyeong.prep.dedup_files import TEXT, dedup_files, write_report
from malpyeong.prep.simhash import FEATURES
from malpyeong.tasks import tasks_help


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    task_argument(
        p,
        extra=(TEXT,),
        help=f"{tasks_help()}; {TEXT}: JSONL (text, messages or "
        "prompt + completion), a JSON list of such records, or plain lines",
    )
    p.add_argument(
        "--in",
        dest="inputs",
        nargs="+",
        required=True,
        metavar="FILE",
        help="input files, read in this order ('first' means first here)",
    )
    p.add_argument("--out", required=True, help="kept items")
    p.add_argument("--k", type=int, default=3, help="max Hamming distance of near-duplicates")
    p.add_argument(
        "--features",
        choices=FEATURES,
        default="char5",
        help="char5: character 5-grams; morph3: Mecab morpheme 3-grams (slower)",
    )
    p.add_argument("--keep", choices=KEEP, default="first", help="which item of a cluster stays")
    p.add_argument(
        "--against",
        nargs="+",
        default=[],
        metavar="FILE",
        help="official dev/test files whose dialogues must not leak into the output",
    )
    p.add_argument("--window", type=int, default=4, help="utterances per window for --against")
    p.add_argument(
        "--min-window-chars", type=int, default=40, help="windows with fewer letters/digits are not compared"
    )
    p.add_argument("--report", help="JSON report (default: OUT with suffix .report.json)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    verbose_argument(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0 <= args.k <= 63:
        raise UserError(f"--k must be between 0 and 63, got {args.k}", field="k")
    if args.window < 1:
        raise UserError(f"--window must be >= 1, got {args.window}", field="window")
    out = Path(args.out)
    report_path = Path(args.report) if args.report else out.with_suffix(".report.json")
    check_distinct(
        [("--out", out), ("--report", report_path)],
        [*(("--in", f) for f in args.inputs), *(("--against", f) for f in args.against)],
    )
    ensure_writable(out, args.overwrite)
    ensure_writable(report_path, args.overwrite)
    t0 = time.perf_counter()

    result = dedup_files(
        args.inputs,
        args.task,
        out,
        against=args.against,
        k=args.k,
        features=args.features,
        keep=args.keep,
        window=args.window,
        min_chars=args.min_window_chars,
    )
    report = {
        "task": args.task,
        "inputs": args.inputs,
        "against": args.against,
        "k": args.k,
        "features": args.features,
        "keep": args.keep,
        "window": args.window,
        "min_window_chars": args.min_window_chars,
        **result.report(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_report(report_path, report)

    print(
        f"{report['n_in']} in -> {report['n_out']} kept: {report['n_contaminated']} leaking "
        f"dev/test dialogues, {report['n_exact_dups']} exact and {report['n_near_dups']} near "
        f"duplicates removed ({result.n_clusters} clusters); wrote {out} and {report_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
