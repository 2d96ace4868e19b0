"""EDA report of CCI / DCS data files: an HTML page with PNG plots and a stats.json.

    python eda/report.py --task cci --out docs/eda/cci --tokenizer rtzr/ko-gemma-2-9b-it \\
        --data resource/data/cci_{train,dev,test}.json --max_length 1024
    python eda/report.py --task cci --out docs/eda/cci/tokens-llama3 --tokens_only \\
        --tokenizer models/real-llama3 --data resource/data/cci_{train,dev,test}.json

Plots: dialogue and utterance lengths, speakers and turns, prompt token lengths under
--tokenizer (chat template applied) with the share over --max_length and over 1,024 / 2,048 /
4,096 tokens, category and gold-position balance and option-length bias (CCI),
reference-utterance position (CCI), keyword counts and summary lengths (DCS), anonymisation
tokens (name1, name2 …), duplicate clusters and dialogues shared between files (Simhash dedup). The page holds numbers, ids and plots only, never
a sentence of the data, so it can be committed even when the data may not be.
--tokens_only writes the token lengths alone (one such report per tokenizer beside the full one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.io import check_distinct
from malpyeong.tasks import get_task


def split_names(paths: list[str]) -> list[str]:
    """File labels for the plots: the file stem, made unique with its folder when needed."""
    stems = [Path(p).stem for p in paths]
    return [
        f"{Path(p).parent.name}/{s}" if stems.count(s) > 1 else s for p, s in zip(paths, stems, strict=True)
    ]


def _label(model: str | None) -> str:
    """A hub id as given; a local folder by its name (no machine paths in a shared report)."""
    if not model:
        return ""
    return Path(model).name if Path(model).exists() else model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    task_argument(p)
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="data files, in order")
    p.add_argument("--out", required=True, help="report folder (index.html, stats.json, *.png)")
    p.add_argument("--tokenizer", help="model whose tokenizer measures prompt lengths")
    p.add_argument("--max_length", type=int, default=1024, help="token budget to compare with")
    p.add_argument("--prompt", help="prompt variant for token lengths (default baseline)")
    p.add_argument(
        "--tokens_only",
        action="store_true",
        help="only the token lengths under --tokenizer (to compare tokenizers)",
    )
    p.add_argument("--k", type=int, default=3, help="Simhash bits for near-duplicates")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    verbose_argument(p)
    args = p.parse_args(argv)
    task = get_task(args.task)
    task.prompt_spec(args.prompt)
    if args.max_length < 1:
        raise UserError(f"--max_length must be at least 1, got {args.max_length}", field="max_length")
    if not 0 <= args.k <= 63:
        raise UserError(f"--k must be between 0 and 63, got {args.k}", field="k")
    if args.tokens_only and not args.tokenizer:
        raise UserError("--tokens_only needs --tokenizer", field="tokenizer")
    out = Path(args.out)
    if (out / "index.html").exists() and not args.overwrite:
        raise UserError("report exists", file=str(out / "index.html"), hint="pass --overwrite to replace it")
    check_distinct(
        [(f"--out {name}", out / name) for name in ("index.html", "stats.json")],
        [("--data", path) for path in args.data],
    )
    names = split_names(args.data)
    if len(set(names)) != len(names):
        raise UserError("the same file is given twice", field="data")
    splits = {name: load_items(path, task) for name, path in zip(names, args.data, strict=True)}
    tokenizer = backbone = None
    if args.tokenizer:
        from malpyeong.models.backbones import get_backbone, load_tokenizer

        backbone = get_backbone(args.tokenizer)
        tokenizer = load_tokenizer(args.tokenizer, backbone)
    from malpyeong.eda import build_report, build_token_report

    common = {
        "tokenizer": tokenizer,
        "backbone": backbone,
        "tokenizer_name": _label(args.tokenizer),
        "max_length": args.max_length,
        "prompt": args.prompt,
    }
    if args.tokens_only:
        figures = build_token_report(task, splits, out, **common)
    else:
        figures = build_report(task, splits, out, **common, k=args.k)
    print(f"wrote {out / 'index.html'} ({sum(len(v) for v in splits.values())} items)")
    if "prompts_over_max_length" in figures:
        over = ", ".join(f"{s} {v:.1%}" for s, v in figures["prompts_over_max_length"].items())
        print(f"prompts over {args.max_length} tokens: {over}")
        marks = ", ".join(f"{m}: {v:.1%}" for m, v in figures["prompts_over"].items())
        print(f"all prompts over {marks}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
