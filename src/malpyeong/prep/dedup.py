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

Everything per item is a number in a numpy array (:class:`Signatures`: fingerprints, a key of
the normalised text for exact duplicates, the length), so the decision (:func:`plan`) needs no
object per item; :mod:`.dedup_files` streams files through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from malpyeong import data as official
from malpyeong.errors import UserError
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
from malpyeong.tasks import Task, get_task
from malpyeong.tasks.base import parse_envelope

KEEP = ("first", "longest")
EXAMPLE_CHARS = 300  # report examples are cut here


@dataclass
class Record:
    """One unit of dedup: what is compared (``parts``), what is written back (``raw``)."""

    id: str
    parts: list[str]  # all must be near-duplicates for two records to be
    utterances: list[str]  # dialogue lines, for the contamination windows
    raw: Any  # the original item/record, written back unchanged
    source: str = ""
    text: str = field(init=False)  # the whole item text (exact dedup, "longest", report)

    def __post_init__(self) -> None:
        self.text = "\n".join(self.parts)


# ---------------------------------------------------------------------------------------------
# official items, through the task
# ---------------------------------------------------------------------------------------------


def task_records(items: Sequence[Any], task: Task, source: str = "") -> list[Record]:
    """Records of typed items (``malpyeong.data.load_items``): the parts and dialogue lines
    are what the task says (``dedup_parts``, ``dialogue_lines``), ``raw`` the item's record."""
    return [Record(it.id, task.dedup_parts(it), task.dialogue_lines(it), it.raw, source) for it in items]


def official_records(items: list[dict], task: str | Task, source: str = "") -> list[Record]:
    """Records of raw official items, parsed by ``task`` first (for callers holding dicts)."""
    task = get_task(task)
    typed = []
    for i, raw in enumerate(items):
        problems: list[tuple[str, str]] = []
        item = task.parse_item(raw, problems)
        if problems or item is None:
            where, what = problems[0] if problems else ("item", "cannot be read")
            raise UserError(what, file=source or None, item=official.item_label(raw, i), field=where)
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
                raise UserError(
                    what,
                    file=name,
                    item=official.item_label(raw, i),
                    field=where,
                    hint="--against takes official files of a dialogue task",
                )
            lines = [u.utterance for u in utterances]
        out.append(Record(str(rid), ["\n".join(lines)], lines, raw, name))
    return out


# ---------------------------------------------------------------------------------------------
# dedup on arrays
# ---------------------------------------------------------------------------------------------


def check_settings(k: int, keep: str) -> None:
    if not 0 <= k <= 63:
        raise UserError(f"k must be between 0 and 63, got {k}", field="k")
    if keep not in KEEP:
        raise UserError(f"unknown keep rule {keep!r}", field="keep", hint=f"one of {KEEP}")


@dataclass
class Signatures:
    """What dedup needs of n records, as arrays: fingerprints per part, exact keys, lengths."""

    fps: np.ndarray  # (n, parts) uint64
    keys: np.ndarray  # (n,) uint64: equal for records whose whole text normalises equally
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
            return cls(np.zeros((0, nparts), np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64))
        return cls(
            np.concatenate([s.fps for s in sigs]),
            np.concatenate([s.keys for s in sigs]),
            np.concatenate([s.lengths for s in sigs]),
        )

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

    kept: np.ndarray  # record indices kept, ascending
    grp: np.ndarray  # exact-duplicate group of each record (numbered by first appearance)
    gkeep: np.ndarray  # gkeep[g]: the record kept of group g
    label: np.ndarray  # cluster of each record (its smallest group number)
    ckeep: np.ndarray  # the record kept of each cluster, by cluster
    size: np.ndarray  # records per cluster number

    @property
    def n_groups(self) -> int:
        return len(self.gkeep)


def plan(sig: Signatures, *, k: int = 3, keep: str = "first") -> Plan:
    """Exact groups (equal keys), then near clusters of the group keepers (every part within
    ``k`` bits), then one keeper per cluster."""
    check_settings(k, keep)
    n = len(sig.keys)
    grp, first = groups(sig.keys)  # group ids in order of first appearance
    ng = len(first)
    gkeep = _keepers(grp, sig.lengths, keep)  # gkeep[g]: the record kept for group g
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

    clusters: np.ndarray  # cluster labels
    keepers: np.ndarray  # the record kept of each
    dropped: np.ndarray  # every other member, cluster by cluster, input order inside
    dropped_for: np.ndarray  # the keeper each was dropped for
    first: np.ndarray  # the first two dropped members of each cluster (-1: none)
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
        return cls(
            big,
            keeper[big],
            dropped,
            keeper[p.label[dropped]],
            pad[lo],
            np.where(hi - lo >= 2, pad[np.minimum(lo + 1, len(dropped))], -1),
        )

    def named(self) -> tuple[np.ndarray, np.ndarray]:
        """Every record the report names (ascending), and whether its text is shown."""
        idx = np.concatenate((self.keepers, self.dropped))
        order = np.argsort(idx)
        shown = np.zeros(len(idx), dtype=bool)
        shown[: len(self.keepers)] = True
        shown[len(self.keepers) :] = np.isin(self.dropped, np.concatenate((self.first, self.second)))
        return idx[order], shown[order]


def report_example(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


def report_counts(p: Plan) -> dict[str, int]:
    n = len(p.label)
    return {
        "n_in": n,
        "n_exact_dups": n - p.n_groups,
        "n_near_dups": p.n_groups - len(p.kept),
        "n_out": len(p.kept),
    }


def report_clusters(p: Plan, lay: ClusterLayout, describe: dict[int, tuple[str, str, str]]) -> Iterator[dict]:
    """The report's clusters, largest first (ties in input order), with up to three examples."""
    sizes = p.size[lay.clusters]
    order = np.argsort(-sizes, kind="stable")
    keepers, first, second = lay.keepers.tolist(), lay.first.tolist(), lay.second.tolist()
    for j, size in zip(order.tolist(), sizes[order].tolist(), strict=True):
        shown = [keepers[j], first[j]] + ([second[j]] if second[j] >= 0 else [])
        yield {
            "size": size,
            "kept": describe[keepers[j]][0],
            "examples": [{"id": describe[i][0], "text": describe[i][2]} for i in shown],
        }


def report_dropped(p: Plan, lay: ClusterLayout, describe: dict[int, tuple[str, str, str]]) -> Iterator[dict]:
    """Every dropped record (cluster by cluster), why, and the record kept instead."""
    exact = (p.gkeep[p.grp[lay.dropped]] != lay.dropped).tolist()
    for m, e, k in zip(lay.dropped.tolist(), exact, lay.dropped_for.tolist(), strict=True):
        yield {
            "id": describe[m][0],
            "source": describe[m][1],
            "reason": "exact" if e else "near",
            "kept": describe[k][0],
        }


def build_report(p: Plan, describe: dict[int, tuple[str, str, str]]) -> dict:
    """The dedup report: counts, clusters (largest first, with up to three examples) and every
    dropped record with the record it was dropped for. ``describe[i] = (id, source, text)``
    for every record :meth:`ClusterLayout.named` names."""
    lay = ClusterLayout.of(p)
    return {
        **report_counts(p),
        "clusters": list(report_clusters(p, lay, describe)),
        "dropped": list(report_dropped(p, lay, describe)),
    }


def dedup(
    records: list[Record], *, k: int = 3, features: str = "char5", keep: str = "first"
) -> tuple[list[int], dict]:
    """Indices of the records to keep (input order) and a report of what was removed and why."""
    check_settings(k, keep)
    if not records:
        return [], build_report(plan(Signatures.concat([], 1), k=k, keep=keep), {})
    nparts = len(records[0].parts)
    if any(len(r.parts) != nparts for r in records):
        raise UserError("records mix different kinds of items; dedup one task at a time")
    sig = Signatures.of(
        [[r.parts[j] for r in records] for j in range(nparts)], [r.text for r in records], features
    )
    p = plan(sig, k=k, keep=keep)
    named, shown = ClusterLayout.of(p).named()
    describe = {
        i: (records[i].id, records[i].source, report_example(records[i].text) if s else "")
        for i, s in zip(named.tolist(), shown.tolist(), strict=True)
    }
    return p.kept.tolist(), build_report(p, describe)


def dedup_texts(texts: list[str], *, k: int = 3, features: str = "char5", keep: str = "first") -> list[int]:
    """Indices of ``texts`` to keep (for generators such as Magpie that filter plain strings)."""
    check_settings(k, keep)
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
        units += [
            (f"utterances {s + 1}-{s + window}", "\n".join(utts[s : s + window]))
            for s in range(len(utts) - window + 1)
        ]
    return units


class Guard:
    """The dev/test side of the contamination check, hashed once; :meth:`check` takes the
    training side in as many batches as needed."""

    def __init__(
        self,
        references: list[Record],
        *,
        k: int = 3,
        features: str = "char5",
        window: int = 4,
        min_chars: int = 40,
    ) -> None:
        if window < 1:
            raise UserError(f"window must be >= 1, got {window}", field="window")
        check_settings(k, "first")
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
                found[i] = {
                    "unit": unit,
                    "matched_id": ref.id,
                    "matched_source": ref.source,
                    "matched_unit": ref_unit,
                    "match": kind,
                    "distance": dist,
                }

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


def contamination(
    records: list[Record],
    references: list[Record],
    *,
    k: int = 3,
    features: str = "char5",
    window: int = 4,
    min_chars: int = 40,
) -> dict[int, dict]:
    """Records whose dialogue or a window of it matches a reference dialogue or window.

    Returns ``{record index: match}`` where match names the record, the reference item and
    file, both units, ``exact`` or ``near`` and the bit distance. Whole dialogues that are equal
    after normalisation always match; other units need ``min_chars`` letters/digits (short
    texts make unreliable fingerprints).
    """
    guard = Guard(references, k=k, features=features, window=window, min_chars=min_chars)
    found = guard.check([r.utterances for r in records])
    return {i: {"id": records[i].id, "source": records[i].source, **m} for i, m in found.items()}
