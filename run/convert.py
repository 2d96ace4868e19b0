"""Convert public datasets and other tools' files into malpyeong's formats.

    python run/convert.py --list
    python run/convert.py --from SOURCE --to TARGET --in INPUT --out OUTPUT [converter options]

Each (source, target) pair is a converter of ``malpyeong.prep.converters``; ``--list`` shows
them with their options. The output is written atomically (never over an existing file without
--overwrite) and validated by the target task's parser when the target is a task, so what comes
out is what ``run/validate.py`` accepts. One report line says what was converted, split or
dropped; the figures go to OUTPUT.report.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from malpyeong.cli import run_cli, verbose_argument
from malpyeong.data import check_written
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json, atomic_write_text, check_outputs
from malpyeong.prep.converters import CONVERTERS, find_converter
from malpyeong.tasks import TASKS, get_task


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the converters and exit")
    p.add_argument("--from", dest="source", help="the input's format")
    p.add_argument("--to", dest="target", help="what to produce (a task name, or 'recipe')")
    p.add_argument("--in", dest="inp", help="the input file")
    p.add_argument("--out", help="the output file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    verbose_argument(p)
    for conv in CONVERTERS.values():
        if conv.add_options is not None:
            conv.add_options(p.add_argument_group(f"--from {conv.source} --to {conv.target}"))
    return p.parse_args(argv)


def converter_options(conv) -> list[str]:
    """The option strings a converter adds (``--max_length`` for qmsum)."""
    if conv.add_options is None:
        return []
    group = argparse.ArgumentParser(add_help=False).add_argument_group()
    conv.add_options(group)
    return [s for action in group._group_actions for s in action.option_strings]


def check_options(conv, argv: list[str]) -> None:
    """An option of another converter, given to this one, would be ignored: refused instead."""
    own = set(converter_options(conv))
    foreign = {
        opt: other
        for other in CONVERTERS.values()
        for opt in converter_options(other)
        if opt not in own and any(a == opt or a.startswith(opt + "=") for a in argv)
    }
    if foreign:
        raise UserError(
            ", ".join(sorted(foreign)) + f" do(es) not apply to --from {conv.source} --to {conv.target}",
            field="from",
            hint="; ".join(
                f"{o} is for --from {c.source} --to {c.target}" for o, c in sorted(foreign.items())
            )
            + (
                f"; this converter takes {', '.join(sorted(own))}"
                if own
                else "; this converter takes no options"
            ),
        )


def write(out: str, converted) -> None:
    if converted.layout == "yaml":
        atomic_write_text(out, yaml.safe_dump(converted.data, allow_unicode=True, sort_keys=False))
    elif converted.layout == "jsonl":
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in converted.data))
    else:
        atomic_write_json(out, converted.data, indent=4)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for (source, target), conv in sorted(CONVERTERS.items()):
            print(f"--from {source} --to {target}: {conv.help}")
        return 0
    if not (args.source and args.inp and args.out):
        raise UserError("--from, --in and --out are needed", hint="--list shows the converters")
    conv = find_converter(args.source, args.target)
    check_options(conv, sys.argv[1:] if argv is None else [str(a) for a in argv])
    out = Path(args.out)
    check_outputs(
        [("--out", out), ("the report", out.with_name(out.name + ".report.json"))],
        [("--in", args.inp)],
        overwrite=args.overwrite,
    )
    converted = conv.run(Path(args.inp), args)
    if conv.target in TASKS:  # what is written is what run/validate.py accepts, or nothing is written
        check_written(converted.data, get_task(conv.target), args.inp)
    write(args.out, converted)
    if converted.details:
        atomic_write_json(out.with_name(out.name + ".report.json"), converted.details)
    print(f"{args.out}: {converted.report}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
