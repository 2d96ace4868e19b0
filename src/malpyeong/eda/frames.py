"""EDA tables: one row per item, per utterance and per prompt, and duplicates.

Task-specific columns come from the task (:meth:`~malpyeong.tasks.base.Task.eda_columns`,
:meth:`~malpyeong.tasks.base.Task.key_terms`); nothing here knows a task by name.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from malpyeong.models.backbones import encode, render_chat
from malpyeong.prep.dedup import contamination, dedup, task_records
from malpyeong.prep.simhash import normalize
from malpyeong.tasks.base import Task

ANON = re.compile(r"name(\d+)")  # the corpora's anonymisation tokens: name1, name2, …


def anon_tokens(text: str) -> list[int]:
    """Numbers of the anonymisation tokens in ``text`` (``name2`` → 2), in order."""
    return [int(m) for m in ANON.findall(text)]


def turns(speakers: list[str]) -> int:
    """Speaker turns: runs of consecutive utterances by one speaker."""
    return sum(1 for i, s in enumerate(speakers) if i == 0 or s != speakers[i - 1])


def dialogue_key(item: Any) -> str:
    """Identity of a dialogue: its normalised text (items of one dialogue share it)."""
    return normalize("\n".join(u.utterance for u in item.conversation))


def item_frame(task: Task, splits: dict[str, list[Any]]) -> pd.DataFrame:
    """One row per item: lengths, speakers, turns, anonymisation, and the task's own columns
    (:meth:`~malpyeong.tasks.base.Task.eda_columns`), which decide the task's plots and
    figures: ``category``, ``gold`` and option lengths, reference positions, ``terms``,
    ``output_chars``."""
    rows = []
    for split, items in splits.items():
        for it in items:
            conv = it.conversation
            speakers = [u.speaker for u in conv]
            text = "\n".join(u.utterance for u in conv)
            anon = anon_tokens(text)
            row = {
                "split": split,
                "id": it.id,
                "utterances": len(conv),
                "dialogue_chars": sum(len(u.utterance) for u in conv),
                "speakers": len(set(speakers)),
                "turns": turns(speakers),
                "anon_tokens": len(anon),
                "anon_max": max(anon, default=0),
                "dialogue": dialogue_key(it),
            }
            terms = task.key_terms(it)
            if terms:
                row["terms"] = list(terms)
            row.update(task.eda_columns(it))
            if row.get("output_chars"):
                row["compression"] = row["output_chars"] / max(row["dialogue_chars"], 1)
            rows.append(row)
    return pd.DataFrame(rows)


def utterance_frame(splits: dict[str, list[Any]]) -> pd.DataFrame:
    """One row per utterance of every *distinct* dialogue (CCI repeats dialogues across items)."""
    rows = []
    for split, items in splits.items():
        seen: set[str] = set()
        for it in items:
            key = dialogue_key(it)
            if key in seen:
                continue
            seen.add(key)
            n = len(it.conversation)
            for i, u in enumerate(it.conversation):
                rows.append({"split": split, "id": it.id, "position": i, "of": n, "chars": len(u.utterance)})
    return pd.DataFrame(rows)


def token_frame(
    task: Task,
    splits: dict[str, list[Any]],
    tokenizer: Any,
    backbone: Any,
    prompt: str | None = None,
) -> pd.DataFrame:
    """Prompt tokens per item as the model sees them (chat template applied, nothing cut), and
    prompt + training target tokens where the item has a gold answer."""
    spec = task.prompt_spec(prompt)
    rows = []
    for split, items in splits.items():
        for it in items:
            messages = task.messages(it, spec)
            text = render_chat(tokenizer, messages, backbone)
            p = len(encode(tokenizer, text))
            full = None
            if task.has_output(it):
                target = task.target(it)
                done = render_chat(
                    tokenizer,
                    messages + [{"role": "assistant", "content": target}],
                    backbone,
                    add_generation_prompt=False,
                )
                full = len(encode(tokenizer, done))
            rows.append(
                {
                    "split": split,
                    "id": it.id,
                    "prompt_tokens": p,
                    "train_tokens": full,
                    "prompt_chars": len(text),
                }
            )
    return pd.DataFrame(rows)


def nearest_bits(texts: list[str], chunk: int = 1024) -> list[int]:
    """For each distinct text (after normalisation), the Simhash distance to the nearest other
    one: how far the data sit from the dedup threshold."""
    from malpyeong.prep.simhash import fingerprints, hamming

    distinct = list(dict.fromkeys(t for t in (normalize(x) for x in texts) if t))
    if len(distinct) < 2:
        return []
    fps = fingerprints(distinct)
    best = np.full(len(fps), 64, dtype=np.int64)
    for lo in range(0, len(fps), chunk):
        d = hamming(fps[lo : lo + chunk, None], fps[None, :]).astype(np.int64)
        d[np.arange(d.shape[0]), np.arange(lo, lo + d.shape[0])] = 64  # not itself
        best[lo : lo + chunk] = d.min(axis=1)
    return best.tolist()


def duplicates(task: Task, splits: dict[str, list[Any]], k: int = 3) -> dict:
    """Duplicate items over all files (dedup's exact + Simhash near clusters), distinct
    dialogues per file, and items whose dialogue (or a 4-utterance window) reappears in an
    earlier file (the contamination guard). Ids and counts only."""
    records, order = [], []
    for split, items in splits.items():
        recs = task_records(items, task, split)
        records += recs
        order.append((split, recs))
    kept, rep = dedup(records, k=k)
    members: dict[str, list[str]] = {}
    for d in rep["dropped"]:
        members.setdefault(d["kept"], []).append(d["id"])
    clusters = [
        {"size": c["size"], "kept": c["kept"], "members": members.get(c["kept"], [])} for c in rep["clusters"]
    ]
    out: dict[str, Any] = {
        "k": k,
        "items": len(records),
        "nearest_dialogue_bits": nearest_bits(
            ["\n".join(u.utterance for u in it.conversation) for items in splits.values() for it in items]
        ),
        "exact_duplicates": rep["n_exact_dups"],
        "near_duplicates": rep["n_near_dups"],
        "clusters": clusters,
        "dialogues": {s: len({dialogue_key(it) for it in items}) for s, items in splits.items()},
        "cross": [],
    }
    for j, (split_j, recs_j) in enumerate(order):
        for split_i, recs_i in order[:j]:
            found = contamination(recs_j, recs_i, k=k)
            whole = sum(
                1 for m in found.values() if m["unit"] == "dialogue" and m["matched_unit"] == "dialogue"
            )
            out["cross"].append(
                {
                    "items_of": split_j,
                    "matched_in": split_i,
                    "items": len(found),
                    "whole_dialogue": whole,
                    "window_only": len(found) - whole,
                    "ids": [m["id"] for m in found.values()][:50],
                }
            )
    return out
