"""Item-level dedup and the dev/test contamination guard, on top of :mod:`.simhash`.

Dedup runs in two stages: exact duplicates (equal after :func:`~.simhash.normalize`, so spacing
and punctuation do not matter), then Simhash near-duplicates (fingerprints within ``k`` bits,
joined transitively into clusters by union-find). One item per cluster is kept, by a
deterministic rule: ``first`` (input order) or ``longest`` (ties: first).

An item may be made of several parts that must *all* be near-duplicates: the task says which
(``Task.dedup_parts``): a CCI item is its dialogue plus its question, so two questions about one
dialogue are not duplicates of each other, while a copy of the whole item is.

The contamination guard compares dialogues, not items: a training item is dropped when its
dialogue, or any window of ``window`` consecutive utterances (with at least ``min_chars``
letters/digits), is an exact or near duplicate of a dev/test dialogue or window of one.

Scale: everything per text is a number in a numpy array (fingerprints, an exact-duplicate key
of the normalised text, the length); texts are read in blocks and dropped after hashing.
:func:`dedup_files` reads its inputs twice, once to hash and once to copy the kept items (for
``text`` files, the original JSONL lines, byte for byte), so memory does not grow with the
texts themselves, only with the arrays and with what the report names.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from malpyeong import data as official
from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json
from malpyeong.prep.simhash import (
    clusters,
    cross_pairs,
    exact_keys,
    fingerprints,
    fingerprints_and_keys,
    groups,
    hamming,
    near_duplicate_pairs,
    normalize,
)
from malpyeong.tasks import TASKS, Task, get_task
from malpyeong.tasks.base import parse_envelope

TEXT = "text"          # the pseudo-task of plain texts and SFT records (not in the task registry)
KEEP = ("first", "longest")
EXAMPLE_CHARS = 300    # report examples are cut here
BLOCK_BYTES = 2 << 20  # text files are read in blocks of about this size (cache-friendly)


def task_names() -> list[str]:
    """What ``--task`` accepts: every registered task, and ``text``."""
    return [*sorted(TASKS), TEXT]


@dataclass
class Record:
    """One unit of dedup: what is compared (``parts``), what is written back (``raw``)."""

    id: str
    parts: list[str]                   # all must be near-duplicates for two records to be
    utterances: list[str]              # dialogue lines, for the contamination windows
    raw: Any                           # the original item/record, written back unchanged
    source: str = ""
    text: str = field(init=False)      # the whole item text (exact dedup, "longest", report)

    def __post_init__(self) -> None:
        self.text = "\n".join(self.parts)


# ---------------------------------------------------------------------------------------------
# official items, through the task
# ---------------------------------------------------------------------------------------------

def task_records(items: Sequence[Any], task: Task, source: str = "") -> list[Record]:
    """Records of typed items (``malpyeong.data.load_items``): the parts and dialogue lines
    are what the task says (``dedup_parts``, ``dialogue_lines``), ``raw`` the item's record."""
    return [Record(it.id, task.dedup_parts(it), task.dialogue_lines(it), it.raw, source)
            for it in items]


def official_records(items: list[dict], task: str | Task, source: str = "") -> list[Record]:
    """Records of raw official items, parsed by ``task`` first (for callers holding dicts)."""
    task = get_task(task)
    typed = []
    for i, raw in enumerate(items):
        problems: list[tuple[str, str]] = []
        item = task.parse_item(raw, problems)
        if problems or item is None:
            where, what = problems[0] if problems else ("item", "cannot be read")
            raise UserError(what, file=source or None, item=official.item_label(raw, i),
                            field=where)
        typed.append(item)
    return task_records(typed, task, source)


def reference_records(path: str | os.PathLike, task: Task | None = None) -> list[Record]:
    """Dev/test dialogues for the contamination guard, from any official file.

    Each item is read as ``task`` when it is one; an item of another task (or any item, for
    ``--task text``) is read through the envelope every dialogue task shares (id, input,
    conversation), since only its dialogue is needed.
    """
    name = str(path)
    raws = official.read_records(path)
    if not isinstance(raws, list):
        raise UserError(f"top level is a {type(raws).__name__}, not a list of items", file=name)
    out = []
    for i, raw in enumerate(raws):
        problems: list[tuple[str, str]] = []
        item = task.parse_item(raw, problems) if task is not None else None
        if item is not None and not problems:
            rid, lines = item.id, task.dialogue_lines(item)
        else:
            problems = []
            rid, _, utterances = parse_envelope(raw, problems, utterance_ids=False)
            if problems:
                where, what = problems[0]
                raise UserError(what, file=name, item=official.item_label(raw, i), field=where,
                                hint="--against takes official files of a dialogue task")
            lines = [u.utterance for u in utterances]
        out.append(Record(str(rid), ["\n".join(lines)], lines, raw, name))
    return out


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
    if len(starts) == 0 or (ends <= starts).any() or _SPACE[buf[starts]].any() \
            or _SPACE[buf[ends - 1]].any():
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

    parts: list[list[str]]            # parts[j][i]: part j of record i
    texts: list[str]                  # the whole text of record i
    ids: Callable[[int], str]         # the id of record i (asked for a few records only)
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
        if not self.path.is_file():
            raise UserError("file not found", file=self.name, hint="check the path")
        first = ""
        for block in _blocks(self.path):
            first = self._decode(block).lstrip()
            if first:
                break
        self.kind = "list" if first.startswith("[") else "jsonl" if first.startswith("{") \
            else "lines"

    def _decode(self, block: bytes) -> str:
        try:
            return block.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"cannot read: not UTF-8 text ({err.reason})", file=self.name) \
                from None

    def _load_list(self) -> list[Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            raise UserError(f"not valid JSON (line {err.lineno}: {err.msg})",
                            file=self.name) from None
        except UnicodeDecodeError as err:
            raise UserError(f"cannot read: not UTF-8 text ({err.reason})", file=self.name) \
                from None
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
                raise UserError(f"not valid JSONL (line {n}: {err.msg})", file=self.name) \
                    from None
            except UnicodeDecodeError as err:
                raise UserError(f"cannot read: not UTF-8 text ({err.reason})", file=self.name,
                                item=str(n)) from None
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
        return Batch([texts], texts, lambda i: self._id(recs[i], labels[i]),
                     lambda: [_utterances(t) for t in texts])

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
                raise UserError("no text", file=self.name, item=batch.ids(i), field="text",
                                hint="give 'text', 'messages' or 'prompt'+'completion'")

    def copy_kept(self, keep: np.ndarray, out: BinaryIO, want: np.ndarray,
                  with_text: np.ndarray, keys: np.ndarray,
                  described: dict[int, tuple[str, str, str]]) -> None:
        """Write the records whose ``keep`` is set; for the records ``want`` (ascending), put
        ``(id, file, text)`` in ``described`` under ``keys`` (the text only where
        ``with_text``, cut for the report)."""

        def describe(start: int, recs: Callable[[int], Any], labels: Sequence[int]) -> None:
            lo, hi = np.searchsorted(want, [start, start + len(labels)])
            for key, g, text_too in zip(keys[lo:hi].tolist(), want[lo:hi].tolist(),
                                        with_text[lo:hi].tolist(), strict=True):
                rec, n = recs(g - start), labels[g - start]
                text = _example(_record_text(rec, self.name, str(n))) if text_too else ""
                described[key] = (self._id(rec, n), self.name, text)

        if self.kind == "list":
            recs = self._load_list()
            if len(recs) != len(keep):
                raise UserError("the file changed while it was being read", file=self.name)
            out.write("".join(json.dumps(recs[i], ensure_ascii=False) + "\n"
                              for i in np.flatnonzero(keep).tolist()).encode("utf-8"))
            describe(0, recs.__getitem__, range(len(recs)))
            return
        start, lineno = 0, 1
        for block in _blocks(self.path):
            if self.kind == "jsonl":
                bounds = _tidy_lines(block)
                if bounds is not None:  # each line is its record as is: copy bytes by mask
                    starts, ends = bounds
                    if start + len(starts) > len(keep):
                        raise UserError("the file changed while it was being read",
                                        file=self.name)
                    sel = keep[start:start + len(starts)]
                    buf = np.frombuffer(block, dtype=np.uint8)
                    line_size = np.diff(np.append(starts, len(buf)))  # with its newline
                    out.write(np.compress(np.repeat(sel, line_size), buf).tobytes())
                    if sel[-1] and block[-1:] != b"\n":
                        out.write(b"\n")
                    describe(start, lambda i, s=starts, e=ends, b=block: _loads(b[s[i]:e[i]]),
                             range(lineno, lineno + len(starts)))
                    start, lineno = start + len(starts), lineno + len(starts)
                    continue
            lines, labels, count = self._lines(block, lineno)
            if start + len(lines) > len(keep):
                raise UserError("the file changed while it was being read", file=self.name)
            sel = np.flatnonzero(keep[start:start + len(lines)]).tolist()
            if self.kind == "jsonl":  # the original line, byte for byte (spaces around cut)
                if sel:
                    out.write(b"\n".join([lines[i] for i in sel]) + b"\n")
                describe(start, lambda i, lines=lines: _loads(lines[i]), labels)
            else:
                out.write("".join(json.dumps({"text": lines[i]}, ensure_ascii=False) + "\n"
                                  for i in sel).encode("utf-8"))
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
            yield Batch([[r.parts[j] for r in recs] for j in range(len(recs[0].parts))],
                        [r.text for r in recs], lambda i: recs[i].id,
                        lambda: [r.utterances for r in recs])


# ---------------------------------------------------------------------------------------------
# dedup on arrays
# ---------------------------------------------------------------------------------------------

def _check(k: int, keep: str) -> None:
    if not 0 <= k <= 63:
        raise UserError(f"k must be between 0 and 63, got {k}", field="k")
    if keep not in KEEP:
        raise UserError(f"unknown keep rule {keep!r}", field="keep", hint=f"one of {KEEP}")


@dataclass
class Signatures:
    """What dedup needs of n records, as arrays: fingerprints per part, exact keys, lengths."""

    fps: np.ndarray      # (n, parts) uint64
    keys: np.ndarray     # (n,) uint64: equal for records whose whole text normalises equally
    lengths: np.ndarray  # (n,) int64: characters of the whole text ("longest")

    @classmethod
    def of(cls, parts: list[list[str]], texts: list[str], features: str) -> Signatures:
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        if len(parts) == 1:  # the text is its only part: one pass gives both
            fps, keys = fingerprints_and_keys(texts, features)
            return cls(fps[:, None], keys, lengths)
        fps = np.stack([fingerprints(p, features) for p in parts], axis=1)
        return cls(fps, exact_keys(texts), lengths)

    @classmethod
    def concat(cls, sigs: list[Signatures], nparts: int) -> Signatures:
        if not sigs:
            return cls(np.zeros((0, nparts), np.uint64), np.zeros(0, np.uint64),
                       np.zeros(0, np.int64))
        return cls(np.concatenate([s.fps for s in sigs]),
                   np.concatenate([s.keys for s in sigs]),
                   np.concatenate([s.lengths for s in sigs]))

    def take(self, idx: np.ndarray) -> Signatures:
        return Signatures(self.fps[idx], self.keys[idx], self.lengths[idx])


def _keepers(label: np.ndarray, lengths: np.ndarray, keep: str) -> np.ndarray:
    """For every label value present, its keeper (first, or longest then first), by label."""
    n = len(label)
    if keep == "first":  # the smallest index of every label: no sort
        first = np.full(int(label.max()) + 1 if n else 0, n, dtype=np.int64)
        np.minimum.at(first, label, np.arange(n))
        return first[first < n]
    o = np.lexsort((np.arange(n), -lengths, label))
    lead = np.ones(n, dtype=bool)
    lead[1:] = label[o][1:] != label[o][:-1]
    return o[lead]


@dataclass
class Plan:
    """The decision for n records: who is kept and which cluster everyone belongs to."""

    kept: np.ndarray    # record indices kept, ascending
    grp: np.ndarray     # exact-duplicate group of each record (numbered by first appearance)
    gkeep: np.ndarray   # gkeep[g]: the record kept of group g
    label: np.ndarray   # cluster of each record (its smallest group number)
    ckeep: np.ndarray   # the record kept of each cluster, by cluster
    size: np.ndarray    # records per cluster number

    @property
    def n_groups(self) -> int:
        return len(self.gkeep)


def plan(sig: Signatures, *, k: int = 3, keep: str = "first") -> Plan:
    """Exact groups (equal keys), then near clusters of the group keepers (every part within
    ``k`` bits), then one keeper per cluster."""
    _check(k, keep)
    n = len(sig.keys)
    grp, first = groups(sig.keys)                 # group ids in order of first appearance
    ng = len(first)
    gkeep = _keepers(grp, sig.lengths, keep)      # gkeep[g]: the record kept for group g
    fps = sig.fps[gkeep]
    nparts = fps.shape[1]
    pairs = near_duplicate_pairs(fps[:, 0], k, spanning=nparts == 1)
    for j in range(1, nparts):
        pairs = pairs[hamming(fps[pairs[:, 0], j], fps[pairs[:, 1], j]) <= k]
    label = clusters(ng, pairs)[grp] if n else grp
    ckeep = _keepers(label, sig.lengths, keep)
    size = np.bincount(label, minlength=ng)
    return Plan(np.sort(ckeep), grp, gkeep, label, ckeep, size)


@dataclass
class ClusterLayout:
    """The clusters of 2+ records as the report lists them (clusters in label order)."""

    clusters: np.ndarray   # cluster labels
    keepers: np.ndarray    # the record kept of each
    dropped: np.ndarray    # every other member, cluster by cluster, input order inside
    dropped_for: np.ndarray  # the keeper each was dropped for
    first: np.ndarray      # the first two dropped members of each cluster (-1: none)
    second: np.ndarray

    @classmethod
    def of(cls, p: Plan) -> ClusterLayout:
        big = np.flatnonzero(p.size > 1)
        keeper = np.full(len(p.size), -1, dtype=np.int64)
        keeper[p.label[p.ckeep]] = p.ckeep
        members = np.flatnonzero(p.size[p.label] > 1)
        members = members[np.argsort(p.label[members], kind="stable")]
        dropped = members[keeper[p.label[members]] != members]
        lo = np.searchsorted(p.label[dropped], big)
        hi = np.searchsorted(p.label[dropped], big, side="right")
        pad = np.append(dropped, -1)
        return cls(big, keeper[big], dropped, keeper[p.label[dropped]], pad[lo],
                   np.where(hi - lo >= 2, pad[np.minimum(lo + 1, len(dropped))], -1))

    def named(self) -> tuple[np.ndarray, np.ndarray]:
        """Every record the report names (ascending), and whether its text is shown."""
        idx = np.concatenate((self.keepers, self.dropped))
        order = np.argsort(idx)
        shown = np.zeros(len(idx), dtype=bool)
        shown[:len(self.keepers)] = True
        shown[len(self.keepers):] = np.isin(self.dropped, np.concatenate((self.first,
                                                                          self.second)))
        return idx[order], shown[order]


def _example(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


def _counts(p: Plan) -> dict[str, int]:
    n = len(p.label)
    return {"n_in": n, "n_exact_dups": n - p.n_groups, "n_near_dups": p.n_groups - len(p.kept),
            "n_out": len(p.kept)}


def _clusters(p: Plan, lay: ClusterLayout, describe: dict[int, tuple[str, str, str]]
              ) -> Iterator[dict]:
    """The report's clusters, largest first (ties in input order), with up to three examples."""
    sizes = p.size[lay.clusters]
    order = np.argsort(-sizes, kind="stable")
    keepers, first, second = lay.keepers.tolist(), lay.first.tolist(), lay.second.tolist()
    for j, size in zip(order.tolist(), sizes[order].tolist(), strict=True):
        shown = [keepers[j], first[j]] + ([second[j]] if second[j] >= 0 else [])
        yield {"size": size, "kept": describe[keepers[j]][0],
               "examples": [{"id": describe[i][0], "text": describe[i][2]} for i in shown]}


def _dropped(p: Plan, lay: ClusterLayout, describe: dict[int, tuple[str, str, str]]
             ) -> Iterator[dict]:
    """Every dropped record (cluster by cluster), why, and the record kept instead."""
    exact = (p.gkeep[p.grp[lay.dropped]] != lay.dropped).tolist()
    for m, e, k in zip(lay.dropped.tolist(), exact, lay.dropped_for.tolist(), strict=True):
        yield {"id": describe[m][0], "source": describe[m][1],
               "reason": "exact" if e else "near", "kept": describe[k][0]}


def build_report(p: Plan, describe: dict[int, tuple[str, str, str]]) -> dict:
    """The dedup report: counts, clusters (largest first, with up to three examples) and every
    dropped record with the record it was dropped for. ``describe[i] = (id, source, text)``
    for every record :meth:`ClusterLayout.named` names."""
    lay = ClusterLayout.of(p)
    return {**_counts(p), "clusters": list(_clusters(p, lay, describe)),
            "dropped": list(_dropped(p, lay, describe))}


def dedup(records: list[Record], *, k: int = 3, features: str = "char5",
          keep: str = "first") -> tuple[list[int], dict]:
    """Indices of the records to keep (input order) and a report of what was removed and why."""
    _check(k, keep)
    if not records:
        return [], build_report(plan(Signatures.concat([], 1), k=k, keep=keep), {})
    nparts = len(records[0].parts)
    if any(len(r.parts) != nparts for r in records):
        raise UserError("records mix different kinds of items; dedup one task at a time")
    sig = Signatures.of([[r.parts[j] for r in records] for j in range(nparts)],
                        [r.text for r in records], features)
    p = plan(sig, k=k, keep=keep)
    named, shown = ClusterLayout.of(p).named()
    describe = {i: (records[i].id, records[i].source, _example(records[i].text) if s else "")
                for i, s in zip(named.tolist(), shown.tolist(), strict=True)}
    return p.kept.tolist(), build_report(p, describe)


def dedup_texts(texts: list[str], *, k: int = 3, features: str = "char5",
                keep: str = "first") -> list[int]:
    """Indices of ``texts`` to keep (for generators such as Magpie that filter plain strings)."""
    _check(k, keep)
    if not texts:
        return []
    return plan(Signatures.of([texts], texts, features), k=k, keep=keep).kept.tolist()


# ---------------------------------------------------------------------------------------------
# contamination guard
# ---------------------------------------------------------------------------------------------

def _units(utts: list[str], window: int) -> list[tuple[str, str]]:
    """(label, text) of the whole dialogue and of every window of ``window`` utterances."""
    units = [("dialogue", "\n".join(utts))]
    if len(utts) > window:
        units += [(f"utterances {s + 1}-{s + window}", "\n".join(utts[s:s + window]))
                  for s in range(len(utts) - window + 1)]
    return units


class Guard:
    """The dev/test side of the contamination check, hashed once; :meth:`check` takes the
    training side in as many batches as needed."""

    def __init__(self, references: list[Record], *, k: int = 3, features: str = "char5",
                 window: int = 4, min_chars: int = 40) -> None:
        if window < 1:
            raise UserError(f"window must be >= 1, got {window}", field="window")
        _check(k, "first")
        self.k, self.features, self.window, self.min_chars = k, features, window, min_chars
        # reference units, deduplicated by normalised text (dev/test items share dialogues)
        self.ref_norm: dict[str, tuple[Record, str, str]] = {}
        self.ref_dialogue: dict[str, tuple[Record, str]] = {}
        for ref in references:
            for unit, text in _units(ref.utterances, window):
                norm = normalize(text)
                if unit == "dialogue" and norm:
                    self.ref_dialogue.setdefault(norm, (ref, unit))
                if len(norm) >= min_chars:
                    self.ref_norm.setdefault(norm, (ref, unit, text))
        self.ref_keys = list(self.ref_norm)
        self.ref_fps = fingerprints([self.ref_norm[key][2] for key in self.ref_keys], features)

    def check(self, utterances: list[list[str]]) -> dict[int, dict]:
        """``{index: match}`` for the dialogues that match a reference dialogue or window:
        the unit, the reference item, file and unit, ``exact`` or ``near``, the bit distance."""
        q_rec, q_unit, q_norm, q_text = [], [], [], []
        found: dict[int, dict] = {}

        def hit(i: int, unit: str, ref: Record, ref_unit: str, kind: str, dist: int) -> None:
            if i not in found:
                found[i] = {"unit": unit, "matched_id": ref.id, "matched_source": ref.source,
                            "matched_unit": ref_unit, "match": kind, "distance": dist}

        for i, utts in enumerate(utterances):
            for unit, text in _units(utts, self.window):
                norm = normalize(text)
                if unit == "dialogue" and norm in self.ref_dialogue:
                    hit(i, unit, *self.ref_dialogue[norm], "exact", 0)
                if len(norm) >= self.min_chars:
                    q_rec.append(i)
                    q_unit.append(unit)
                    q_norm.append(norm)
                    q_text.append(text)
        if not q_text or not self.ref_keys:
            return dict(sorted(found.items()))
        qf = fingerprints(q_text, self.features)
        pairs = cross_pairs(qf, self.ref_fps, self.k)
        if len(pairs):
            dist = hamming(qf[pairs[:, 0]], self.ref_fps[pairs[:, 1]])
            for (q, r), d in zip(pairs.tolist(), dist.tolist(), strict=True):
                ref, ref_unit, _ = self.ref_norm[self.ref_keys[r]]
                kind = "exact" if q_norm[q] == self.ref_keys[r] else "near"
                hit(q_rec[q], q_unit[q], ref, ref_unit, kind, int(d))
        return dict(sorted(found.items()))


def contamination(records: list[Record], references: list[Record], *, k: int = 3,
                  features: str = "char5", window: int = 4,
                  min_chars: int = 40) -> dict[int, dict]:
    """Records whose dialogue or a window of it matches a reference dialogue or window.

    Returns ``{record index: match}`` where match names the record, the reference item and
    file, both units, ``exact`` or ``near`` and the bit distance. Whole dialogues that are equal
    after normalisation always match; other units need ``min_chars`` letters/digits (short
    texts make unreliable fingerprints).
    """
    guard = Guard(references, k=k, features=features, window=window, min_chars=min_chars)
    found = guard.check([r.utterances for r in records])
    return {i: {"id": records[i].id, "source": records[i].source, **m} for i, m in found.items()}


# ---------------------------------------------------------------------------------------------
# files in, files out
# ---------------------------------------------------------------------------------------------

@contextmanager
def _atomic_binary(path: Path) -> Iterator[BinaryIO]:
    """A binary file written to a temporary name and renamed over ``path`` when complete
    (a streamed counterpart of :func:`malpyeong.io.atomic_write_text`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(path: str | os.PathLike, report: dict) -> None:
    """The report as ``json.dumps(report, ensure_ascii=False, indent=2)`` writes it, atomically.

    Values that are iterators (the clusters and dropped items of :meth:`DedupResult.report`)
    are written one element at a time, so a report naming millions of items is never held
    whole. (JSON strings hold no raw newline, so re-indenting an element is a replace.)
    """
    opt = orjson.OPT_INDENT_2
    with _atomic_binary(Path(path)) as fh:
        fh.write(b"{")
        for i, (key, value) in enumerate(report.items()):
            fh.write((b",\n  " if i else b"\n  ") + orjson.dumps(key) + b": ")
            if not isinstance(value, Iterator):
                fh.write(orjson.dumps(value, option=opt).replace(b"\n", b"\n  "))
                continue
            empty = True
            for item in value:
                fh.write((b"[\n    " if empty else b",\n    ")
                         + orjson.dumps(item, option=opt).replace(b"\n", b"\n    "))
                empty = False
            fh.write(b"[]" if empty else b"\n  ]")
        fh.write(b"\n}\n" if report else b"}\n")


@dataclass
class DedupResult:
    """What :func:`dedup_files` decided; the report is made from it as it is written."""

    n_in: int
    contaminated: list[dict]   # the items dropped by the guard, with their match
    plan: Plan                 # over the items left after the guard
    layout: ClusterLayout
    describe: dict[int, tuple[str, str, str]]  # (id, source, example) of the items named

    @property
    def n_clusters(self) -> int:
        return len(self.layout.clusters)

    def report(self) -> dict:
        """The report's fields in order, clusters and dropped items as iterators (see
        :func:`write_report`; ``list()`` them to hold them)."""
        counts = _counts(self.plan)
        return {"n_in": self.n_in, "n_contaminated": len(self.contaminated),
                **{key: v for key, v in counts.items() if key != "n_in"},
                "clusters": _clusters(self.plan, self.layout, self.describe),
                "dropped": _dropped(self.plan, self.layout, self.describe),
                "contaminated": self.contaminated}


def dedup_files(inputs: Sequence[str], task_name: str, out: str | os.PathLike, *,
                against: Sequence[str] = (), k: int = 3, features: str = "char5",
                keep: str = "first", window: int = 4, min_chars: int = 40) -> DedupResult:
    """Read ``inputs`` (in order), drop items leaking ``against`` dialogues, then exact and near
    duplicates; write the kept items to ``out`` (official tasks: a JSON list; ``text``: JSONL).

    Two passes over text inputs: hashing, then copying the kept lines; in between only arrays.
    """
    if task_name not in task_names():
        raise UserError(f"unknown task {task_name!r}", field="task",
                        hint=f"one of {', '.join(task_names())}")
    _check(k, keep)
    task = None if task_name == TEXT else get_task(task_name)
    sources = [TextFile(p) if task is None else ItemFile(p, task) for p in inputs]
    refs = [r for p in against for r in reference_records(p, task)]
    guard = Guard(refs, k=k, features=features, window=window, min_chars=min_chars) \
        if refs else None

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
    cidx = np.flatnonzero(clean)                  # clean record -> input record
    p = plan(sig.take(cidx) if leaked else sig, k=k, keep=keep)
    del sig
    keep_mask = np.zeros(n, dtype=bool)
    keep_mask[cidx[p.kept]] = True
    lay = ClusterLayout.of(p)
    named, shown = lay.named()                    # clean indices, ascending
    want = cidx[named]                            # the same records, as input indices

    # pass 2: write the kept items, collect what the report names
    describe: dict[int, tuple[str, str, str]] = {}
    bounds = np.concatenate(([0], np.cumsum(counts)))
    if task is None:
        with _atomic_binary(Path(out)) as fh:
            for src, a, b in zip(sources, bounds[:-1], bounds[1:], strict=True):
                lo, hi = np.searchsorted(want, [a, b])
                src.copy_kept(keep_mask[a:b], fh, want[lo:hi] - a, shown[lo:hi],
                              named[lo:hi], describe)
    else:
        kept_raw = []
        for src, a in zip(sources, bounds[:-1], strict=True):
            recs = src.records
            kept_raw += [r.raw for i, r in enumerate(recs) if keep_mask[a + i]]
            lo, hi = np.searchsorted(want, [a, a + len(recs)])
            for key, g, s in zip(named[lo:hi].tolist(), want[lo:hi].tolist(),
                                 shown[lo:hi].tolist(), strict=True):
                r = recs[g - a]
                describe[key] = (r.id, r.source, _example(r.text) if s else "")
        atomic_write_json(out, kept_raw, indent=4)
    return DedupResult(n, list(leaked.values()), p, lay, describe)
