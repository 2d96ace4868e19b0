"""Turn TV or film scripts into dialogue pairs: a character's reply and the turns before it.

    python run/script_pairs.py --in resource/data/scripts/ --out data/pairs.jsonl
    python run/script_pairs.py --in ../shared/data/scripts/friends/ --out data/joey.jsonl \
        --character Joey --context 4 --min_words 2 --persona personas.json

Reads plain-text scripts (``Name: speech``), HTML transcript pages (``<b>Name:</b> speech``,
``<strong>``, entities, ``<br>``, lines wrapped over several rows) and Word documents (.docx),
in UTF-8, Windows-1252, Latin-1 or CP949 (detected). A folder given to --in means the scripts
in it. Scene headings end a scene and no pair crosses one; stage directions, notes, credits,
commercial breaks and titles are removed (see malpyeong.prep.screenplays.parse). Each record is
one reply in the ``chat`` task's layout (JSONL when --out ends in .jsonl, else a JSON list);
the report (episodes, scenes, lines read, pairs written, lines dropped by reason, top
speakers) is printed and saved as OUT.report.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from malpyeong.cli import run_cli, verbose_argument
from malpyeong.data import check_written
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json, atomic_write_text, check_outputs
from malpyeong.prep.screenplays import (
    PairOptions,
    build_pairs,
    parse_source,
    read_mapping,
    read_personas,
    read_source,
)
from malpyeong.tasks import get_task
from malpyeong.tasks.chat import ChatTask

TARGET_TASK = ChatTask.name  # the layout the records are written in
SCRIPT_SUFFIXES = (".txt", ".text", ".html", ".htm", ".xhtml", ".docx")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--in",
        dest="inputs",
        nargs="+",
        required=True,
        help="script files, or folders of them (.txt .html .htm .docx)",
    )
    p.add_argument("--out", required=True, help="pairs file (.jsonl, or .json for a list)")
    p.add_argument("--context", type=int, default=4, help="turns before each reply (default 4)")
    p.add_argument("--character", default=None, help="keep only this speaker's replies")
    p.add_argument("--min_words", type=int, default=1, help="skip replies with fewer words (default 1)")
    p.add_argument(
        "--multi",
        choices=("keep", "drop"),
        default="keep",
        help="lines of several speakers (All:, Monica and Rachel:): keep as turns (default) or drop",
    )
    p.add_argument(
        "--no_merge", action="store_true", help="keep one speaker's consecutive lines as separate turns"
    )
    p.add_argument(
        "--aliases", default=None, help="JSON or YAML mapping of other spellings to a speaker (RACH: Rachel)"
    )
    p.add_argument(
        "--persona",
        default=None,
        help="JSON or YAML mapping speaker -> description, or a text file describing "
        "--character; written into each record (used by --prompt persona)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    verbose_argument(p)
    return p.parse_args(argv)


def script_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SCRIPT_SUFFIXES)
            if not found:
                raise UserError(
                    "no script files in the folder", file=name, hint=f"expected {' '.join(SCRIPT_SUFFIXES)}"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError("file not found", file=name, field="in")
    return files


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.context < 1:
        raise UserError(f"must be at least 1, got {args.context}", field="context")
    if args.min_words < 1:
        raise UserError(f"must be at least 1, got {args.min_words}", field="min_words")
    out = Path(args.out)
    files = script_files(args.inputs)
    check_outputs(  # before any work: no script, alias or persona file is replaced
        [("--out", out), ("the report", out.with_name(out.name + ".report.json"))],
        [*(("--in", f) for f in files), ("--aliases", args.aliases), ("--persona", args.persona)],
        overwrite=args.overwrite,
    )
    for name in args.inputs:
        folder = Path(name)
        if (
            folder.is_dir()
            and out.suffix.lower() in SCRIPT_SUFFIXES
            and out.resolve().parent == folder.resolve()
        ):
            raise UserError(
                f"--out is in the --in folder {name} with a script's extension: the next run would read it as a script",
                file=str(out),
                hint="write the pairs as .jsonl or .json, or elsewhere",
            )
    options = PairOptions(
        context=args.context,
        character=args.character,
        min_words=args.min_words,
        merge_consecutive=not args.no_merge,
        aliases=read_mapping(args.aliases, "aliases") if args.aliases else {},
        personas=read_personas(args.persona, args.character) if args.persona else {},
    )
    episodes = [parse_source(read_source(f), keep_multi=args.multi == "keep") for f in files]
    records, report = build_pairs(episodes, options)
    for line in report.lines():
        print(line)
    if not records:
        raise UserError(
            "no dialogue pairs found",
            field="in",
            hint="scripts need lines like 'Name: speech'"
            + (f"; is '{args.character}' a speaker?" if args.character else ""),
        )
    check_written(records, get_task(TARGET_TASK), str(out), require_output=True)  # what training reads
    if out.suffix.lower() == ".jsonl":
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    else:
        atomic_write_json(out, records, indent=4)
    atomic_write_json(out.with_name(out.name + ".report.json"), report.as_dict(top=20))
    print(f"wrote {len(records)} pairs to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
