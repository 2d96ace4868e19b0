"""The converter registry: converters are found by ``(from, to)``.

A converter is a function ``(input path, parsed options) -> Converted``, registered with
:func:`converter`; its own command-line options (if any) are added by its ``add_options``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError


@dataclass
class Converted:
    """What a converter produced: records (or one mapping), how to write them, a report."""

    data: Any  # a list of records (json / jsonl) or a mapping (yaml)
    report: str  # one line: items, what was split or dropped and why
    layout: str = "json"  # json (a JSON list, indent 4), jsonl, or yaml
    details: dict = field(default_factory=dict)  # figures for OUT.report.json


ConvertFn = Callable[[Path, argparse.Namespace], Converted]


@dataclass
class Converter:
    source: str
    target: str
    help: str
    run: ConvertFn
    add_options: Callable[[argparse._ArgumentGroup], None] | None = None


CONVERTERS: dict[tuple[str, str], Converter] = {}


def converter(
    source: str, target: str, help: str, add_options: Callable[[argparse._ArgumentGroup], None] | None = None
) -> Callable[[ConvertFn], ConvertFn]:
    """Register ``fn`` as the converter from ``source`` to ``target``."""

    def wrap(fn: ConvertFn) -> ConvertFn:
        CONVERTERS[(source, target)] = Converter(source, target, help, fn, add_options)
        return fn

    return wrap


def find_converter(source: str, target: str | None) -> Converter:
    """The converter for ``source`` (to ``target`` when the source has several)."""
    matches = [c for (s, t), c in CONVERTERS.items() if s == source and target in (None, t)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"--from {s} --to {t}" for s, t in sorted(CONVERTERS))
    if not matches:
        raise UserError(
            f"no converter from '{source}'" + (f" to '{target}'" if target else ""),
            field="from",
            hint=f"known: {known}" if known else "none registered",
        )
    raise UserError(
        f"'{source}' converts to several targets",
        field="to",
        hint=", ".join(f"--to {c.target}" for c in matches),
    )


__all__ = ["CONVERTERS", "Converted", "Converter", "converter", "find_converter"]
