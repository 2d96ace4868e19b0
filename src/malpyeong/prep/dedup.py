"""Item-level dedup and the dev/test contamination guard, on top of :mod:`.simhash`.

Dedup runs in two stages: exact duplicates (equal after :func:`~.simhash.normalize`, so spacing
and punctuation do not matter), then Simhash near-duplicates (fingerprints within ``k`` bits,
joined transitively into clusters by union-find). One item per cluster is kept, by a
deterministic rule: ``first`` (input order) or ``longest`` (ties: first).

An item may be made of several parts that must *all* be near-duplicates: a CCI item is its
dialogue plus its question (category, reference ids, options), so two questions about one
dialogue are not duplicates of each other, while a copy of the whole item is.

The contamination guard compares dialogues, not items: a training item is dropped when its
dialogue, or any window of ``window`` consecutive utterances (with at least ``min_chars``
letters/digits), is an exact or near duplicate of a dev/test dialogue or window of one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from malpyeong import data as official
from malpyeong.errors import UserError
from malpyeong.prep.simhash import (
    clusters,
    cross_pairs,
    fingerprints,
    hamming,
    near_duplicate_pairs,
    normalize,
)
from malpyeong.tasks import get_task

TASKS = ("cci", "dcs", "text")
KEEP = ("first", "longest")
EXAMPLE_CHARS = 300  # report examples are cut here


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
# reading (kept small and isolated: it will be swapped for malpyeong.data)
# ---------------------------------------------------------------------------------------------

def read_official(path: str | os.PathLike, task: str | None = None) -> list[dict]:
    """Raw items of an official CCI/DCS file, validated as ``task`` when it is given."""
    if task is not None:
        return [item.raw for item in official.load_items(path, get_task(task))]
    records = official.read_records(path)
    if not isinstance(records, list):
        raise UserError("expected a JSON list of items", file=str(path))
    return records


def _conversation(item: Any, path: str, index: int) -> list[str]:
    label = str(item.get("id", index)) if isinstance(item, dict) else str(index)
    conv = item.get("input", {}).get("conversation") if isinstance(item, dict) else None
    if not isinstance(conv, list) or not all(isinstance(u, dict) and "utterance" in u
                                             for u in conv):
        raise UserError("missing or malformed", file=path, item=label,
                        field="input.conversation",
                        hint="expected a list of {speaker, utterance} objects")
    return [str(u["utterance"]) for u in conv]


def official_records(items: list[dict], task: str, source: str = "") -> list[Record]:
    """CCI: parts = dialogue, question (category + reference ids + options); DCS: dialogue +
    subject keywords as one part."""
    out = []
    for i, item in enumerate(items):
        utts = _conversation(item, source, i)
        inp = item["input"]
        dialogue = "\n".join(utts)
        if task == "cci":
            refs = inp.get("reference_id", [])
            refs = refs if isinstance(refs, list) else [refs]
            question = "\n".join([str(inp.get("category", "")), " ".join(map(str, refs))]
                                 + [str(inp.get(f"inference_{j}", "")) for j in (1, 2, 3)])
            parts = [dialogue, question]
        else:
            kw = inp.get("subject_keyword", [])
            kw = kw if isinstance(kw, list) else [kw]
            parts = [dialogue + "\n" + " ".join(map(str, kw))]
        out.append(Record(str(item.get("id", i)), parts, utts, item, source))
    return out


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


def text_records(path: str | os.PathLike) -> list[Record]:
    """JSONL with ``text`` (or ``messages`` / ``prompt`` + ``completion``: all string content),
    a JSON list of such records, or plain text lines (each line one record)."""
    path = Path(path)
    name = str(path)
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read: {err.__class__.__name__}", file=name) from None
    lines = content.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    rows: list[tuple[int, Any]]
    if first.startswith("["):
        try:
            data = json.loads(content)
        except json.JSONDecodeError as err:
            raise UserError(f"not valid JSON (line {err.lineno}: {err.msg})", file=name) from None
        if not isinstance(data, list):
            raise UserError("expected a JSON list of records", file=name)
        rows = list(enumerate(data))
    elif first.startswith("{"):
        rows = []
        for lineno, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise UserError(f"not valid JSONL (line {lineno}: {err.msg})",
                                    file=name) from None
    else:
        rows = [(n, {"text": ln}) for n, ln in enumerate(lines, 1) if ln.strip()]
    out = []
    for n, rec in rows:
        if not isinstance(rec, dict):
            raise UserError("record is not an object", file=name, item=str(n))
        text = rec["text"] if isinstance(rec.get("text"), str) else "\n".join(_strings(rec))
        if not text.strip():
            raise UserError("no text", file=name, item=str(rec.get("id", n)),
                            field="text", hint="give 'text', 'messages' or 'prompt'+'completion'")
        utts = [_SPEAKER.sub("", ln) for ln in text.splitlines() if ln.strip()]
        out.append(Record(str(rec.get("id", f"{path.name}:{n}")), [text], utts, rec, name))
    return out


def read_records(path: str | os.PathLike, task: str) -> list[Record]:
    """Records of one input file for ``task`` (cci, dcs or text)."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}", field="task", hint=f"one of {', '.join(TASKS)}")
    if task == "text":
        return text_records(path)
    return official_records(read_official(path, task), task, str(path))


def reference_records(path: str | os.PathLike) -> list[Record]:
    """Dev/test dialogues for the contamination guard (any official file: CCI or DCS)."""
    return official_records(read_official(path), "dcs", str(path))


# ---------------------------------------------------------------------------------------------
# dedup
# ---------------------------------------------------------------------------------------------

def _check(k: int, keep: str) -> None:
    if not 0 <= k <= 63:
        raise UserError(f"k must be between 0 and 63, got {k}", field="k")
    if keep not in KEEP:
        raise UserError(f"unknown keep rule {keep!r}", field="keep", hint=f"one of {KEEP}")


def _keepers(label: np.ndarray, lengths: np.ndarray, keep: str) -> np.ndarray:
    """For every label value present, its keeper (first, or longest then first), by label."""
    n = len(label)
    second = -lengths if keep == "longest" else np.zeros(n, dtype=np.int64)
    o = np.lexsort((np.arange(n), second, label))
    lead = np.ones(n, dtype=bool)
    lead[1:] = label[o][1:] != label[o][:-1]
    return o[lead]


def _example(r: Record) -> dict:
    text = r.text if len(r.text) <= EXAMPLE_CHARS else r.text[:EXAMPLE_CHARS] + "…"
    return {"id": r.id, "text": text}


def dedup(records: list[Record], *, k: int = 3, features: str = "char5",
          keep: str = "first") -> tuple[list[int], dict]:
    """Indices of the records to keep (input order) and a report of what was removed and why."""
    _check(k, keep)
    n = len(records)
    report: dict[str, Any] = {"n_in": n, "n_exact_dups": 0, "n_near_dups": 0, "n_out": n,
                              "clusters": [], "dropped": []}
    if n == 0:
        return [], report
    lengths = np.array([len(r.text) for r in records], dtype=np.int64)
    # stage 1: exact duplicates after normalisation (group ids in order of first appearance)
    group_of: dict[str, int] = {}
    grp = np.array([group_of.setdefault(normalize(r.text), len(group_of)) for r in records])
    ng = len(group_of)
    gkeep = _keepers(grp, lengths, keep)          # gkeep[g]: the record kept for group g
    # stage 2: near duplicates among the group keepers; every part must be near
    reps = [records[i] for i in gkeep]
    nparts = len(reps[0].parts)
    if any(len(r.parts) != nparts for r in reps):
        raise UserError("records mix different kinds of items; dedup one task at a time")
    fps = [fingerprints([r.parts[j] for r in reps], features) for j in range(nparts)]
    pairs = near_duplicate_pairs(fps[0], k, spanning=nparts == 1)
    for f in fps[1:]:
        pairs = pairs[hamming(f[pairs[:, 0]], f[pairs[:, 1]]) <= k]
    label = clusters(ng, pairs)[grp]              # cluster id (a group id) of every record
    ckeep = _keepers(label, lengths, keep)
    kept = ckeep.tolist()
    size = np.bincount(label, minlength=ng)
    clist = []
    big = np.flatnonzero(size[label[ckeep]] > 1)
    if len(big):
        corder = np.argsort(label, kind="stable")
        cb = np.concatenate(([0], np.cumsum(size)))
        for best in ckeep[big].tolist():
            c = label[best]
            others = [int(m) for m in corder[cb[c]:cb[c + 1]] if m != best]
            clist.append({"size": int(size[c]), "kept": records[best].id,
                          "examples": [_example(records[i]) for i in [best] + others[:2]]})
            for m in others:
                reason = "exact" if gkeep[grp[m]] != m else "near"
                report["dropped"].append({"id": records[m].id, "source": records[m].source,
                                          "reason": reason, "kept": records[best].id})
    kept.sort()
    clist.sort(key=lambda c: -c["size"])  # stable: ties stay in input order
    report.update(n_exact_dups=n - ng, n_near_dups=ng - len(kept), n_out=len(kept),
                  clusters=clist)
    return kept, report


def dedup_texts(texts: list[str], *, k: int = 3, features: str = "char5",
                keep: str = "first") -> list[int]:
    """Indices of ``texts`` to keep (for generators such as Magpie that filter plain strings)."""
    recs = [Record(str(i), [t], t.splitlines(), None) for i, t in enumerate(texts)]
    return dedup(recs, k=k, features=features, keep=keep)[0]


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


def contamination(records: list[Record], references: list[Record], *, k: int = 3,
                  features: str = "char5", window: int = 4,
                  min_chars: int = 40) -> dict[int, dict]:
    """Records whose dialogue or a window of it matches a reference dialogue or window.

    Returns ``{record index: match}`` where match names the record, the reference item and
    file, both units, ``exact`` or ``near`` and the bit distance. Whole dialogues that are equal
    after normalisation always match; other units need ``min_chars`` letters/digits (short
    texts make unreliable fingerprints).
    """
    if window < 1:
        raise UserError(f"window must be >= 1, got {window}", field="window")
    _check(k, "first")
    # reference units, deduplicated by normalised text (dev/test items share dialogues)
    ref_norm: dict[str, tuple[Record, str, str]] = {}
    ref_dialogue: dict[str, tuple[Record, str]] = {}
    for ref in references:
        for unit, text in _units(ref.utterances, window):
            norm = normalize(text)
            if unit == "dialogue" and norm:
                ref_dialogue.setdefault(norm, (ref, unit))
            if len(norm) >= min_chars:
                ref_norm.setdefault(norm, (ref, unit, text))
    ref_keys = list(ref_norm)
    q_rec, q_unit, q_norm, q_text = [], [], [], []
    found: dict[int, dict] = {}

    def hit(i: int, unit: str, ref: Record, ref_unit: str, kind: str, dist: int) -> None:
        if i not in found:
            found[i] = {"id": records[i].id, "source": records[i].source, "unit": unit,
                        "matched_id": ref.id, "matched_source": ref.source,
                        "matched_unit": ref_unit, "match": kind, "distance": dist}

    for i, r in enumerate(records):
        for unit, text in _units(r.utterances, window):
            norm = normalize(text)
            if unit == "dialogue" and norm in ref_dialogue:
                hit(i, unit, *ref_dialogue[norm], "exact", 0)
            if len(norm) >= min_chars:
                q_rec.append(i)
                q_unit.append(unit)
                q_norm.append(norm)
                q_text.append(text)
    if not q_text or not ref_keys:
        return found
    qf = fingerprints(q_text, features)
    rf = fingerprints([ref_norm[key][2] for key in ref_keys], features)
    pairs = cross_pairs(qf, rf, k)
    if len(pairs):
        dist = hamming(qf[pairs[:, 0]], rf[pairs[:, 1]])
        for (q, r), d in zip(pairs.tolist(), dist.tolist(), strict=True):
            ref, ref_unit, _ = ref_norm[ref_keys[r]]
            kind = "exact" if q_norm[q] == ref_keys[r] else "near"
            hit(q_rec[q], q_unit[q], ref, ref_unit, kind, int(d))
    return dict(sorted(found.items()))
