"""Magpie: synthesise Korean instruction–response pairs from an aligned chat model.

    python run/magpie.py --model rtzr/ko-gemma-2-9b-it --n 20000 --out data/magpie.jsonl \\
        --system "당신은 한국어 일상 대화를 돕는 조수입니다. 모든 질문과 답은 한국어로 씁니다."

The model sees only its chat family's pre-query template (e.g. ``<bos><start_of_turn>user\\n``)
and samples a user instruction (temperature 1, top-p 1, cut at the first newline or end of
turn); the response is then generated greedily with the full chat template. --n is the number
of samples drawn; the filters (Hangul ratio, length, repetition, refusals, Simhash near-duplicate
instructions) keep a subset, and OUT.report.json says how many were dropped for what.

Output: JSONL, one ``{"id", "messages": [user, assistant], "source": "magpie"}`` per kept pair.
Every sample is also kept in OUT.raw.jsonl: rerun the same command to resume after an
interruption (finished samples are not redone); rerun with --overwrite to re-filter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from malpyeong.cli import run_cli, verbose_argument
from malpyeong.errors import UserError
from malpyeong.inference.loading import load_for_inference, load_weights, resolve_source
from malpyeong.io import (
    atomic_write_json,
    atomic_write_text,
    check_distinct,
    check_folder_writable,
    ensure_writable,
    open_resume,
    resume_path,
)
from malpyeong.prep.filters import FilterConfig, filter_pairs
from malpyeong.prep.magpie import engine_functions, generate_pairs, pre_query, to_record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="aligned chat model: hub id or local path")
    p.add_argument("--n", type=int, required=True, help="samples to draw (before filtering)")
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument("--system", help="system prompt that steers the instructions (not written out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=512, help="response length limit")
    p.add_argument("--max_instruction_tokens", type=int, default=128)
    p.add_argument("--dtype", default="auto", help="bf16, fp16, fp32 or auto")
    p.add_argument(
        "--min_hangul",
        type=float,
        default=FilterConfig.min_hangul,
        help="minimum share of Hangul among letters",
    )
    p.add_argument(
        "--dedup_k",
        type=int,
        default=FilterConfig.dedup_k,
        help="Simhash bits for near-duplicate instructions; -1: no dedup",
    )
    p.add_argument(
        "--no_filter",
        action="store_true",
        help="keep every pair with a non-empty instruction and response",
    )
    p.add_argument("--report", help="report JSON (default OUT.report.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--no_progress", action="store_true")
    verbose_argument(p)
    args = p.parse_args(argv)
    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}", field="n")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}", field="batch_size")
    if args.max_new_tokens < 1 or args.max_instruction_tokens < 1:
        raise UserError("token limits must be at least 1", field="max_new_tokens")
    if not 0.0 <= args.min_hangul <= 1.0:
        raise UserError(f"--min_hangul must be in [0, 1], got {args.min_hangul}", field="min_hangul")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    report_path = Path(args.report or out.with_name(out.name + ".report.json"))  # goes with OUT
    check_distinct([("--out", out), ("--report", report_path), ("the raw file", resume_path(out))])
    ensure_writable(out, args.overwrite)  # the report goes with OUT (rewritten with it)
    check_folder_writable(report_path.parent, what=str(report_path))
    source = resolve_source(args.model)
    chat = load_for_inference(source, with_model=False)  # the tokenizer: the pre-query
    backbone, tokenizer = chat.backbone, chat.tokenizer
    query = pre_query(backbone, tokenizer, args.system)
    meta = {
        "model": args.model,
        "chat_format": backbone.chat_format,
        "pre_query": query,
        "system": args.system,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "max_instruction_tokens": args.max_instruction_tokens,
    }
    done, raw = open_resume(resume_path(out), meta, "index")
    with raw:
        pending = sum(1 for i in range(args.n) if i not in done)
        if pending:
            model = load_weights(chat.source, backbone, tokenizer, dtype=args.dtype)
            sample, respond = engine_functions(
                model,
                tokenizer,
                backbone,
                system=args.system,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                max_instruction_tokens=args.max_instruction_tokens,
            )
        else:
            sample = respond = None  # everything is in the raw file already
        rows = generate_pairs(
            args.n,
            sample,
            respond,
            seed=args.seed,
            chunk_size=args.batch_size,
            done=done,
            on_row=raw.write,
            show_progress=not args.no_progress,
        )
    config = FilterConfig(min_hangul=args.min_hangul, dedup_k=None if args.dedup_k < 0 else args.dedup_k)
    if args.no_filter:
        kept = [r for r in rows if r["instruction"].strip() and r["response"].strip()]
        report = {"n_in": len(rows), "n_out": len(kept), "filters": "off"}
    else:
        kept, report = filter_pairs(rows, config)
    records = [to_record(r) for r in kept]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(
        report_path,
        {
            "model": args.model,
            "n": args.n,
            "resumed": len(done),
            "raw": str(resume_path(out)),
            **report,
        },
    )
    print(
        f"{out}: {len(records)} of {args.n} samples kept "
        f"({args.n - len(records)} filtered; see {report_path})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
