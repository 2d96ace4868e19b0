"""Build a retrieval index from corpus files, query it, or measure it against relevance labels.

    python run/retrieve.py build --corpus resource/data/norms/*.md --out indexes/norms
    python run/retrieve.py build --corpus norms/*.md --out indexes/norms-hybrid --kind hybrid \\
        --embedder nlpai-lab/KURE-v1            # or BAAI/bge-m3, or a local folder
    python run/retrieve.py query --index indexes/norms --query "'깨끗이'와 '깨끗히' 중 무엇이 맞나요?" -k 3
    python run/retrieve.py evaluate --index indexes/norms --labels resource/data/norms_relevance.jsonl

Corpus files: Markdown (cut at headings), text (cut at blank lines) or JSONL (one passage per
record, ``{"id", "title", "text"}``); ``--by size`` cuts every file into pieces of about
``--chunk_chars`` characters instead. Every passage gets the id ``<file stem>:<n>``, listed
with its text in the index folder's ``passages.jsonl``: the ids a relevance file names.
Kinds: sparse (BM25 over Mecab morphemes), dense (a sentence-transformers model), hybrid (both,
fused by reciprocal rank; ``--mode sparse`` / ``dense`` ranks by one part alone). Training and
prediction take the index folder as ``--retrieve INDEX`` (run/train.py, run/test.py).
``evaluate`` prints recall@k and MRR (``--json`` for the full report, with each question's
ranks). Exit 2 with one line on stderr for a user mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from malpyeong.cli import run_cli, verbose_argument
from malpyeong.errors import UserError
from malpyeong.retrieval.corpus import BY
from malpyeong.retrieval.dense import EMBEDDERS
from malpyeong.retrieval.evaluation import evaluate_retrieval, read_relevance
from malpyeong.retrieval.index import KINDS, Index, check_index_output, check_kind


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build an index folder from corpus files")
    b.add_argument("--corpus", nargs="+", required=True, help="text, Markdown or JSONL files")
    b.add_argument("--out", required=True, help="the index folder to write")
    b.add_argument("--kind", default="sparse", choices=KINDS)
    b.add_argument("--by", default="section", choices=BY, help="cut at sections (default) or by size")
    b.add_argument(
        "--chunk_chars",
        type=int,
        default=None,
        help="piece size in characters (default: sections up to 1200 kept whole; 300 by size)",
    )
    b.add_argument(
        "--embedder",
        default=None,
        help="dense and hybrid: a sentence-transformers model: "
        + "; ".join(f"{k} ({v})" for k, v in EMBEDDERS.items()),
    )
    b.add_argument("--query_prefix", default="", help="dense: text put before every query (e5: 'query: ')")
    b.add_argument("--passage_prefix", default="", help="dense: text put before every passage")
    b.add_argument("--device", default=None, help="dense: cpu or cuda (default cpu)")
    b.add_argument("--batch_size", type=int, default=32, help="dense: passages embedded at a time")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index folder")
    for name, help_text in (
        ("query", "print the top passages for a query"),
        ("evaluate", "recall@k and MRR"),
    ):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--index", required=True, help="an index folder from 'build'")
        s.add_argument("--mode", default=None, choices=KINDS, help="rank by (default: the index's kind)")
        s.add_argument("--device", default=None, help="dense: cpu or cuda")
        if name == "query":
            s.add_argument("--query", required=True, help="the question")
            s.add_argument("-k", type=int, default=5, help="passages to print")
        else:
            s.add_argument("--labels", required=True, help='JSONL: {"query": ..., "relevant": [passage ids]}')
            s.add_argument("-k", type=int, nargs="+", default=[1, 5, 10], help="cutoffs of recall@k")
            s.add_argument("--json", action="store_true", help="print the full report as JSON")
    for s in sub.choices.values():
        verbose_argument(s)
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> int:
    check_kind(args.kind, args.embedder)
    if args.batch_size < 1:
        raise UserError(f"must be at least 1, got {args.batch_size}", field="batch_size")
    check_index_output(Path(args.out), args.overwrite)
    start = time.perf_counter()
    index = Index.build(
        args.corpus,
        args.kind,
        by=args.by,
        chunk_chars=args.chunk_chars,
        embedder=args.embedder,
        query_prefix=args.query_prefix,
        passage_prefix=args.passage_prefix,
        device=args.device,
        batch_size=args.batch_size,
        progress=True,
    )
    out = index.save(args.out, overwrite=args.overwrite)
    print(f"{out}: {index.describe()} from {len(args.corpus)} file(s), {time.perf_counter() - start:.1f}s")
    return 0


def query(args: argparse.Namespace) -> int:
    index = Index.load(args.index, device=args.device)
    for hit in index.search(args.query, args.k, mode=args.mode):
        title = f" [{hit.passage.title}]" if hit.passage.title else ""
        text = " ".join(hit.passage.text.split())
        print(f"{hit.rank}. {hit.passage.id}{title} (score {hit.score:.4f})\n   {text[:200]}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    index = Index.load(args.index, device=args.device)
    questions = read_relevance(args.labels)
    report = evaluate_retrieval(index, questions, args.k, mode=args.mode, labels_file=args.labels)
    if args.json:
        print(
            json.dumps({"index": args.index, "labels": args.labels, **report}, ensure_ascii=False, indent=2)
        )
        return 0
    print(f"{args.index}: {index.describe()}; {report['questions']} questions from {args.labels}")
    shown = [f"recall@{k} {report[f'recall@{k}']:.4f}" for k in sorted(set(args.k))]
    print(f"{report['mode']:<7} " + "  ".join(shown) + f"  MRR {report['mrr']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return {"build": build, "query": query, "evaluate": evaluate}[args.command](args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
