"""Dedup over files, as ``run/dedup.py`` runs it: any number of inputs, streamed.

``--task`` is a registered task (its files are read and validated through it, small enough to
hold) or ``text``: JSONL (``text``, or the strings of ``messages`` / ``prompt`` + ``completion``),
a JSON list of such records, or plain lines. Text files are read twice, in blocks: once to hash
every record (only arrays are kept), once to copy the kept records (JSONL: the original lines,
byte for byte) and read the few the report names; the report is written a piece at a time. So
memory grows with the arrays (~200 bytes per text) and with what the report names, not with the
texts.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from malpyeong import data as official
from malpyeong.errors import UserError
from malpyeong.io import atomic_open, atomic_write_json, require_file
from malpyeong.prep.dedup import (
    ClusterLayout,
    Guard,
    Plan,
    Signatures,
    check_settings,
    plan,
    reference_records,
    report_clusters,
    report_counts,
    report_dropped,
    report_example,
    task_records,
)
from malpyeong.tasks import Task, get_task
from malpyeong.tasks import task_names as registered_tasks

TEXT = "text"  # the pseudo-task of plain texts and SFT records (not in the task registry)
BLOCK_BYTES = 2 << 20  # text files are read in blocks of about this size (cache-friendly)


def task_names() -> list[str]:
    """What ``--task`` accepts: every registered task, and ``text``."""
    return [*registered_tasks(), TEXT]


# ---------------------------------------------------------------------------------------------
# text records (JSONL / JSON list / plain lines), streamed
# ---------------------------------------------------------------------------------------------

_SPEAKER = re.compile(r"^\s*(?:\[[^\]\n]{1,20}\]|[^\s:：\[\]]{1,20}\s*[:：])\s*")


def _strings(obj: Any) -> list[str]:
    """All string content of an SFT record, in order (role names left out)."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for key, v in obj.items() if key != "role" for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def _record_text(rec: Any, name: str, label: str) -> str:
    """``text``, or all string content (``messages``, ``prompt`` + ``completion``, ...)."""
    if not isinstance(rec, dict):
        raise UserError("record is not an object", file=name, item=label)
    text = rec.get("text")
    return text if isinstance(text, str) else "\n".join(_strings(rec))


def _utterances(text: str) -> list[str]:
    """Dialogue lines of a text record, speaker labels (``A:``, ``[user]``) removed."""
    return [_SPEAKER.sub("", ln) for ln in text.splitlines() if ln.strip()]


_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\x0b\x0c")] = True  # what bytes.strip() strips


def _tidy_lines(block: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Start and end (its newline, or the end) of every line of a block when no line is blank
    or has spaces for ``strip`` to cut (each line is its record as is); else None."""
    buf = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(buf) and buf[-1] != 10:
        ends = np.append(ends, len(buf))
    starts = np.concatenate(([0], ends[:-1] + 1))
    if len(starts) == 0 or (ends <= starts).any() or _SPACE[buf[starts]].any() or _SPACE[buf[ends - 1]].any():
        return None
    return starts, ends


def _loads(line: bytes) -> Any:
    """A line that :meth:`TextFile._parse` has read once already."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


@dataclass
class Batch:
    """Consecutive records of one input file: the texts dedup compares."""

    parts: list[list[str]]  # parts[j][i]: part j of record i
    texts: list[str]  # the whole text of record i
    ids: Callable[[int], str]  # the id of record i (asked for a few records only)
    utterances: Callable[[], list[list[str]]]  # dialogue lines (only for the guard)

    def __len__(self) -> int:
        return len(self.texts)


def _blocks(path: Path) -> Iterator[bytes]:
    """Whole lines of a file, in blocks of about BLOCK_BYTES (a UTF-8 BOM dropped)."""
    with open(path, "rb") as fh:
        rest = fh.read(3)
        if rest == b"\xef\xbb\xbf":
            rest = b""
        while chunk := fh.read(BLOCK_BYTES):
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                rest += chunk
                continue
            yield rest + chunk[:cut]
            rest = chunk[cut:]
        if rest:
            yield rest


class TextFile:
    """A ``--task text`` input: JSONL (streamed in blocks), a JSON list (read whole), or plain
    text lines (streamed; each line a record ``{"text": line}``).

    :meth:`batches` is the hashing pass; :meth:`copy_kept` the second pass, which writes the
    kept records (JSONL: the original lines; otherwise one JSON object per line, as read) and
    returns the ids and texts the report needs. Records are labelled by line number (JSON
    list: index) when they have no ``id``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = str(path)
        require_file(self.path)
        first = ""
        for block in _blocks(self.path):
            first = self._decode(block).lstrip()
            if first:
                break
        self.kind = "list" if first.startswith("[") else "jsonl" if first.startswith("{") else "lines"

    def _decode(self, block: bytes) -> str:
        try:
            return block.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"cannot read: not UTF-8 text ({err.reason})", file=self.name) from None

    def _load_list(self) -> list[Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            raise UserError(f"not valid JSON (line {err.lineno}: {err.msg})", file=self.name) from None
        except UnicodeDecodeError as err:
            raise UserError(f"cannot read: not UTF-8 text ({err.reason})", file=self.name) from None
        if not isinstance(data, list):
            raise UserError("expected a JSON list of records", file=self.name)
        return data

    def _lines(self, block: bytes, lineno: int) -> tuple[list[Any], Sequence[int], int]:
        """The non-blank lines of a block (JSONL: stripped bytes; plain: str as they are),
        their line numbers, and how many lines the block had."""
        if self.kind == "lines":
            lines = self._decode(block).splitlines()
            full = [ln.strip() for ln in lines]
        else:
            lines = block.split(b"\n")
            if not lines[-1]:
                lines.pop()
            lines = full = list(map(bytes.strip, lines))  # JSON allows spaces around
        count = len(lines)
        labels: Sequence[int] = range(lineno, lineno + count)
        if not all(full):  # blank lines are skipped; the others keep their numbers
            labels = [n for n, f in zip(labels, full, strict=True) if f]
            lines = [ln for ln, f in zip(lines, full, strict=True) if f]
        return lines, labels, count

    def _parse(self, lines: list[bytes], labels: Sequence[int]) -> list[Any]:
        """JSON of every line: orjson, and json where orjson refuses (NaN, huge integers), so
        what json reads is read, and a bad line is named as json names it."""
        try:
            return [orjson.loads(ln) for ln in lines]
        except orjson.JSONDecodeError:
            pass
        out = []
        for ln, n in zip(lines, labels, strict=True):
            try:
                out.append(orjson.loads(ln))
                continue
            except orjson.JSONDecodeError:
                pass
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError as err:
                raise UserError(f"not valid JSONL (line {n}: {err.msg})", file=self.name) from None
            except UnicodeDecodeError as err:
                raise UserError(
                    f"cannot read: not UTF-8 text ({err.reason})", file=self.name, item=str(n)
                ) from None
        return out

    def _id(self, rec: Any, label: int) -> str:
        return str(rec.get("id", f"{self.path.name}:{label}"))

    def _batch(self, recs: list[Any], labels: Sequence[int]) -> Batch:
        try:  # the common case, without a Python loop: every record has a string "text"
            texts = list(map(itemgetter("text"), recs))
            simple = set(map(type, texts)) == {str}
        except (KeyError, TypeError):
            simple = False
        if not simple:
            texts = [_record_text(r, self.name, str(n)) for r, n in zip(recs, labels, strict=True)]
        return Batch(
            [texts], texts, lambda i: self._id(recs[i], labels[i]), lambda: [_utterances(t) for t in texts]
        )

    # --- the two passes ---

    def batches(self) -> Iterator[Batch]:
        if self.kind == "list":
            recs = self._load_list()
            yield self._batch(recs, range(len(recs)))
            return
        lineno = 1
        for block in _blocks(self.path):
            if self.kind == "jsonl":  # orjson allows spaces around a line; a blank one fails
                lines = block.split(b"\n")
                if not lines[-1]:
                    lines.pop()
                count, labels = len(lines), range(lineno, lineno + len(lines))
                try:
                    recs = [orjson.loads(ln) for ln in lines]
                except orjson.JSONDecodeError:
                    lines, labels, count = self._lines(block, lineno)
                    recs = self._parse(lines, labels)
            else:
                lines, labels, count = self._lines(block, lineno)
                recs = [{"text": ln} for ln in lines]
            lineno += count
            yield self._batch(recs, labels)

    def check_blank(self, batch: Batch, keys: np.ndarray) -> None:
        """A record with no text at all is a mistake (texts of punctuation only are not)."""
        for i in np.flatnonzero(keys == 0).tolist():  # empty after normalisation
            if not batch.texts[i].strip():
                raise UserError(
                    "no text",
                    file=self.name,
                    item=batch.ids(i),
                    field="text",
                    hint="give 'text', 'messages' or 'prompt'+'completion'",
                )

    def copy_kept(
        self,
        keep: np.ndarray,
        out: BinaryIO,
        want: np.ndarray,
        with_text: np.ndarray,
        keys: np.ndarray,
        described: dict[int, tuple[str, str, str]],
    ) -> None:
        """Write the records whose ``keep`` is set; for the records ``want`` (ascending), put
        ``(id, file, text)`` in ``described`` under ``keys`` (the text only where
        ``with_text``, cut for the report)."""

        def describe(start: int, recs: Callable[[int], Any], labels: Sequence[int]) -> None:
            lo, hi = np.searchsorted(want, [start, start + len(labels)])
            for key, g, text_too in zip(
                keys[lo:hi].tolist(), want[lo:hi].tolist(), with_text[lo:hi].tolist(), strict=True
            ):
                rec, n = recs(g - start), labels[g - start]
                text = report_example(_record_text(rec, self.name, str(n))) if text_too else ""
                described[key] = (self._id(rec, n), self.name, text)

        if self.kind == "list":
            recs = self._load_list()
            if len(recs) != len(keep):
                raise UserError("the file changed while it was being read", file=self.name)
            out.write(
                "".join(
                    json.dumps(recs[i], ensure_ascii=False) + "\n" for i in np.flatnonzero(keep).tolist()
                ).encode("utf-8")
            )
            describe(0, recs.__getitem__, range(len(recs)))
            return
        start, lineno = 0, 1
        for block in _blocks(self.path):
            if self.kind == "jsonl":
                bounds = _tidy_lines(block)
                if bounds is not None:  # each line is its record as is: copy bytes by mask
                    starts, ends = bounds
                    if start + len(starts) > len(keep):
                        raise UserError("the file changed while it was being read", file=self.name)
                    sel = keep[start : start + len(starts)]
                    buf = np.frombuffer(block, dtype=np.uint8)
                    line_size = np.diff(np.append(starts, len(buf)))  # with its newline
                    out.write(np.compress(np.repeat(sel, line_size), buf).tobytes())
                    if sel[-1] and block[-1:] != b"\n":
                        out.write(b"\n")
                    describe(
                        start,
                        lambda i, s=starts, e=ends, b=block: _loads(b[s[i] : e[i]]),
                        range(lineno, lineno + len(starts)),
                    )
                    start, lineno = start + len(starts), lineno + len(starts)
                    continue
            lines, labels, count = self._lines(block, lineno)
            if start + len(lines) > len(keep):
                raise UserError("the file changed while it was being read", file=self.name)
            sel = np.flatnonzero(keep[start : start + len(lines)]).tolist()
            if self.kind == "jsonl":  # the original line, byte for byte (spaces around cut)
                if sel:
                    out.write(b"\n".join([lines[i] for i in sel]) + b"\n")
                describe(start, lambda i, lines=lines: _loads(lines[i]), labels)
            else:
                out.write(
                    "".join(json.dumps({"text": lines[i]}, ensure_ascii=False) + "\n" for i in sel).encode(
                        "utf-8"
                    )
                )
                describe(start, lambda i, lines=lines: {"text": lines[i]}, labels)
            start, lineno = start + len(lines), lineno + count
        if start != len(keep):
            raise UserError("the file changed while it was being read", file=self.name)


class ItemFile:
    """An official file of a registered task, read and validated through the task (small
    enough to hold: the competition files have thousands of items)."""

    def __init__(self, path: str | os.PathLike, task: Task) -> None:
        self.name = str(path)
        self.records = task_records(official.load_items(path, task), task, self.name)

    def batches(self) -> Iterator[Batch]:
        recs = self.records
        if recs:
            yield Batch(
                [[r.parts[j] for r in recs] for j in range(len(recs[0].parts))],
                [r.text for r in recs],
                lambda i: recs[i].id,
                lambda: [r.utterances for r in recs],
            )


# ---------------------------------------------------------------------------------------------
# files in, files out
# ---------------------------------------------------------------------------------------------


def write_report(path: str | os.PathLike, report: dict) -> None:
    """The report as ``json.dumps(report, ensure_ascii=False, indent=2)`` writes it, atomically.

    Values that are iterators (the clusters and dropped items of :meth:`DedupResult.report`)
    are written one element at a time, so a report naming millions of items is never held
    whole. (JSON strings hold no raw newline, so re-indenting an element is a replace.)
    """
    opt = orjson.OPT_INDENT_2
    with atomic_open(path, "wb") as fh:
        fh.write(b"{")
        for i, (key, value) in enumerate(report.items()):
            fh.write((b",\n  " if i else b"\n  ") + orjson.dumps(key) + b": ")
            if not isinstance(value, Iterator):
                fh.write(orjson.dumps(value, option=opt).replace(b"\n", b"\n  "))
                continue
            empty = True
            for item in value:
                fh.write(
                    (b"[\n    " if empty else b",\n    ")
                    + orjson.dumps(item, option=opt).replace(b"\n", b"\n    ")
                )
                empty = False
            fh.write(b"[]" if empty else b"\n  ]")
        fh.write(b"\n}\n" if report else b"}\n")


@dataclass
class DedupResult:
    """What :func:`dedup_files` decided; the report is made from it as it is written."""

    n_in: int
    contaminated: list[dict]  # the items dropped by the guard, with their match
    plan: Plan  # over the items left after the guard
    layout: ClusterLayout
    describe: dict[int, tuple[str, str, str]]  # (id, source, example) of the items named

    @property
    def n_clusters(self) -> int:
        return len(self.layout.clusters)

    def report(self) -> dict:
        """The report's fields in order, clusters and dropped items as iterators (see
        :func:`write_report`; ``list()`` them to hold them)."""
        counts = report_counts(self.plan)
        return {
            "n_in": self.n_in,
            "n_contaminated": len(self.contaminated),
            **{key: v for key, v in counts.items() if key != "n_in"},
            "clusters": report_clusters(self.plan, self.layout, self.describe),
            "dropped": report_dropped(self.plan, self.layout, self.describe),
            "contaminated": self.contaminated,
        }


def dedup_files(
    inputs: Sequence[str],
    task_name: str,
    out: str | os.PathLike,
    *,
    against: Sequence[str] = (),
    k: int = 3,
    features: str = "char5",
    keep: str = "first",
    window: int = 4,
    min_chars: int = 40,
) -> DedupResult:
    """Read ``inputs`` (in order), drop items leaking ``against`` dialogues, then exact and near
    duplicates; write the kept items to ``out`` (official tasks: a JSON list; ``text``: JSONL).

    Two passes over text inputs: hashing, then copying the kept lines; in between only arrays.
    """
    if task_name not in task_names():
        raise UserError(f"unknown task {task_name!r}", field="task", hint=f"one of {', '.join(task_names())}")
    check_settings(k, keep)
    task = None if task_name == TEXT else get_task(task_name)
    sources = [TextFile(p) if task is None else ItemFile(p, task) for p in inputs]
    refs = [r for p in against for r in reference_records(p, task)]
    guard = Guard(refs, k=k, features=features, window=window, min_chars=min_chars) if refs else None

    # pass 1: hash every record; the guard sees each batch's dialogues
    sigs: list[Signatures] = []
    leaked: dict[int, dict] = {}
    counts = []
    for src in sources:
        n_src = 0
        for batch in src.batches():
            offset = sum(counts) + n_src
            if guard is not None:
                for i, m in guard.check(batch.utterances()).items():
                    leaked[offset + i] = {"id": batch.ids(i), "source": src.name, **m}
            sig = Signatures.of(batch.parts, batch.texts, features)
            if isinstance(src, TextFile):
                src.check_blank(batch, sig.keys)
            if sigs and sigs[0].fps.shape[1] != sig.fps.shape[1]:
                raise UserError("records mix different kinds of items; dedup one task at a time")
            sigs.append(sig)
            n_src += len(batch)
        counts.append(n_src)
    n = sum(counts)
    if n == 0:
        raise UserError("no items in the input", file=", ".join(map(str, inputs)))
    sig = Signatures.concat(sigs, sigs[0].fps.shape[1])
    del sigs
    clean = np.ones(n, dtype=bool)
    clean[list(leaked)] = False
    cidx = np.flatnonzero(clean)  # clean record -> input record
    p = plan(sig.take(cidx) if leaked else sig, k=k, keep=keep)
    del sig
    keep_mask = np.zeros(n, dtype=bool)
    keep_mask[cidx[p.kept]] = True
    lay = ClusterLayout.of(p)
    named, shown = lay.named()  # clean indices, ascending
    want = cidx[named]  # the same records, as input indices

    # pass 2: write the kept items, collect what the report names
    describe: dict[int, tuple[str, str, str]] = {}
    bounds = np.concatenate(([0], np.cumsum(counts)))
    if task is None:
        with atomic_open(out, "wb") as fh:
            for src, a, b in zip(sources, bounds[:-1], bounds[1:], strict=True):
                lo, hi = np.searchsorted(want, [a, b])
                src.copy_kept(keep_mask[a:b], fh, want[lo:hi] - a, shown[lo:hi], named[lo:hi], describe)
    else:
        kept_raw = []
        for src, a in zip(sources, bounds[:-1], strict=True):
            recs = src.records
            kept_raw += [r.raw for i, r in enumerate(recs) if keep_mask[a + i]]
            lo, hi = np.searchsorted(want, [a, a + len(recs)])
            for key, g, s in zip(
                named[lo:hi].tolist(), want[lo:hi].tolist(), shown[lo:hi].tolist(), strict=True
            ):
                r = recs[g - a]
                describe[key] = (r.id, r.source, report_example(r.text) if s else "")
        atomic_write_json(out, kept_raw, indent=4)
    return DedupResult(n, list(leaked.values()), p, lay, describe)
