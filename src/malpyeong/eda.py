"""Exploratory data analysis of CCI / DCS files: statistics, PNG plots and one HTML page.

What is measured (per file, called a *split* after its file name): dialogue and utterance
lengths, speakers and turns, prompt token lengths under a chosen tokenizer with the share over
``max_length``, CCI category and gold-position balance, option-length bias and reference
position, DCS keyword counts and summary lengths, anonymisation tokens (``name1``, ``name2``
…), and duplicates found by :mod:`malpyeong.prep.dedup` (within all files, and dialogues of
one file reappearing in another).

The report carries numbers, ids and plots only — never a sentence of the data — so it can be
published with the code even when the data may not be. (Plots show keyword and category
names, which are single words.)
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from malpyeong.io import atomic_write_json, atomic_write_text
from malpyeong.prep.simhash import normalize

log = logging.getLogger(__name__)

ANON = re.compile(r"name(\d+)")  # the corpora's anonymisation tokens: name1, name2, …
GOLD_LETTERS = ("A", "B", "C")
LENGTH_MARKS = (1024, 2048, 4096)  # common max_length settings: the share of prompts over each
SPLIT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
HANGUL_FONTS = (
    "NanumGothic",
    "NanumBarunGothic",
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "Malgun Gothic",
    "AppleGothic",
    "UnDotum",
    "Baekmuk Gulim",
)


# ---------------------------------------------------------------------------------------------
# tables


def anon_tokens(text: str) -> list[int]:
    """Numbers of the anonymisation tokens in ``text`` (``name2`` → 2), in order."""
    return [int(m) for m in ANON.findall(text)]


def turns(speakers: list[str]) -> int:
    """Speaker turns: runs of consecutive utterances by one speaker."""
    return sum(1 for i, s in enumerate(speakers) if i == 0 or s != speakers[i - 1])


def dialogue_key(item: Any) -> str:
    """Identity of a dialogue: its normalised text (items of one dialogue share it)."""
    return normalize("\n".join(u.utterance for u in item.conversation))


def item_frame(task: Any, splits: dict[str, list[Any]]) -> pd.DataFrame:
    """One row per item: lengths, speakers, turns, anonymisation and task-specific columns."""
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
            if task.name == "cci":
                refs = it.reference_indices
                lens = [len(o) for o in it.options]
                row.update(
                    category=it.category,
                    references=len(refs),
                    ref_first=min(refs),
                    ref_last=max(refs),
                    ref_rel=(min(refs) / (len(conv) - 1)) if len(conv) > 1 else 0.0,
                    ref_from_end=len(conv) - 1 - max(refs),
                    option_chars_mean=float(np.mean(lens)),
                    gold=GOLD_LETTERS[it.label] if it.label is not None else None,
                    gold_chars=lens[it.label] if it.label is not None else None,
                    gold_longest=lens[it.label] == max(lens) if it.label is not None else None,
                    gold_shortest=lens[it.label] == min(lens) if it.label is not None else None,
                    # what a gold option picked at random would score (ties share the max/min)
                    chance_longest=lens.count(max(lens)) / len(lens),
                    chance_shortest=lens.count(min(lens)) / len(lens),
                )
            else:
                row.update(
                    keywords=len(it.keywords),
                    summary_chars=len(it.summary) if it.summary.strip() else None,
                    summary_anon=len(anon_tokens(it.summary)) if it.summary else None,
                )
                if row["summary_chars"]:
                    row["compression"] = row["summary_chars"] / max(row["dialogue_chars"], 1)
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
                rows.append(
                    {"split": split, "id": it.id, "position": i, "of": n, "chars": len(u.utterance)}
                )
    return pd.DataFrame(rows)


def token_frame(
    task: Any,
    splits: dict[str, list[Any]],
    tokenizer: Any,
    backbone: Any,
    prompt: str | None = None,
) -> pd.DataFrame:
    """Prompt tokens per item as the model sees them (chat template applied, nothing cut), and
    prompt + training target tokens where the item has a gold answer."""
    from malpyeong.backbones import encode, render_chat

    spec = task.prompt_spec(prompt)
    rows = []
    for split, items in splits.items():
        for it in items:
            messages = task.messages(it, spec)
            text = render_chat(tokenizer, messages, backbone)
            p = len(encode(tokenizer, text))
            full = None
            if task.has_output(it):
                target = task.target(it, spec)
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


def duplicates(task: Any, splits: dict[str, list[Any]], k: int = 3) -> dict:
    """Duplicate items over all files (dedup's exact + Simhash near clusters), distinct
    dialogues per file, and items whose dialogue (or a 4-utterance window) reappears in an
    earlier file (the contamination guard). Ids and counts only."""
    from malpyeong.prep.dedup import contamination, dedup, official_records

    records, order = [], []
    for split, items in splits.items():
        recs = official_records([it.raw for it in items], task.name, split)
        records += recs
        order.append((split, recs))
    kept, rep = dedup(records, k=k)
    members: dict[str, list[str]] = {}
    for d in rep["dropped"]:
        members.setdefault(d["kept"], []).append(d["id"])
    clusters = [
        {"size": c["size"], "kept": c["kept"], "members": members.get(c["kept"], [])}
        for c in rep["clusters"]
    ]
    out: dict[str, Any] = {
        "k": k,
        "items": len(records),
        "nearest_dialogue_bits": nearest_bits(
            [
                "\n".join(u.utterance for u in it.conversation)
                for items in splits.values()
                for it in items
            ]
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
                1
                for m in found.values()
                if m["unit"] == "dialogue" and m["matched_unit"] == "dialogue"
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


# ---------------------------------------------------------------------------------------------
# plots


def hangul_font() -> str | None:
    """A font family with Hangul glyphs that matplotlib can use, or None (labels stay English).

    Fonts installed after matplotlib built its cache (e.g. ``apt-get install fonts-nanum``) are
    added from the system font folders.
    """
    from matplotlib import font_manager as fm

    names = {f.name for f in fm.fontManager.ttflist}
    for want in HANGUL_FONTS:
        if want in names:
            return want
    for path in fm.findSystemFonts():
        low = Path(path).name.lower()
        if any(k in low for k in ("nanum", "notosanscjk", "notosanskr", "malgun", "undotum")):
            try:
                fm.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
    names = {f.name for f in fm.fontManager.ttflist}
    return next((w for w in HANGUL_FONTS if w in names), None)


@dataclass
class Plotter:
    """Saves figures as PNG into ``out_dir`` and remembers (file, title, note) for the page."""

    out_dir: Path
    order: list[str] = field(default_factory=list)  # split names, file order (colours)
    font: str | None = None
    figures: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.font = hangul_font()
        family = [self.font, "DejaVu Sans"] if self.font else ["DejaVu Sans"]
        plt.rcParams.update(
            {
                "font.family": family,
                "axes.unicode_minus": False,
                "figure.dpi": 100,
                "savefig.dpi": 110,
                "axes.grid": True,
                "grid.alpha": 0.3,
                "axes.spines.top": False,
                "axes.spines.right": False,
            }
        )

    def figure(self, ncols: int = 1, width: float = 7.0, height: float = 4.0) -> tuple[Any, Any]:
        return self.plt.subplots(1, ncols, figsize=(width, height), squeeze=False)

    def save(self, fig: Any, name: str, title: str, note: str = "") -> None:
        fig.tight_layout()
        fig.savefig(self.out_dir / name)
        self.plt.close(fig)
        self.figures.append((name, title, note))

    def korean(self, text: str, english: str) -> str:
        """``text`` over ``(english)`` when Hangul can be drawn, else ``english``."""
        return f"{text}\n({english})" if self.font else english


def _hist_by_split(
    ax: Any, frame: pd.DataFrame, column: str, bins: Any, order: list[str], *, share: bool = True
) -> None:
    """One outlined, lightly filled histogram per split, in file order and colour.

    ``share``: bar heights are the share of the split's rows, so a small dev file is not hidden
    behind a large train file.
    """
    for j, split in enumerate(order):
        values = frame.loc[frame["split"] == split, column].dropna()
        if not len(values):
            continue
        weights = np.full(len(values), 1.0 / len(values)) if share else None
        color = SPLIT_COLORS[j % len(SPLIT_COLORS)]
        ax.hist(values, bins=bins, weights=weights, color=color, alpha=0.25)
        ax.hist(
            values,
            bins=bins,
            weights=weights,
            color=color,
            histtype="step",
            linewidth=1.6,
            label=f"{split} (n={len(values)})",
        )
    ax.set_ylabel("share" if share else "count")
    ax.legend(fontsize=8)


def _bins(values: pd.Series, n: int = 30, integer: bool = False) -> Any:
    values = values.dropna()
    if values.empty:
        return 10
    lo, hi = float(values.min()), float(values.max())
    if integer:
        return np.arange(
            np.floor(lo) - 0.5, np.ceil(hi) + 1.5, max(1, int(np.ceil((hi - lo + 1) / n)))
        )
    return np.linspace(lo, hi if hi > lo else lo + 1, n + 1)


def _bar_counts(ax: Any, table: pd.DataFrame, order: list[str], ylabel: str = "items") -> None:
    """Grouped bars: index = groups on the x axis, columns = splits (file order and colour)."""
    cols = [c for c in order if c in table.columns]
    x = np.arange(len(table.index))
    width = 0.8 / max(len(cols), 1)
    for j, col in enumerate(cols):
        color = SPLIT_COLORS[order.index(col) % len(SPLIT_COLORS)]
        bars = ax.bar(
            x + j * width - 0.4 + width / 2, table[col].values, width, label=str(col), color=color
        )
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, [str(i) for i in table.index])
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.margins(y=0.12)


def plot_common(p: Plotter, items: pd.DataFrame, utts: pd.DataFrame) -> None:
    fig, axes = p.figure(2, 11, 4)
    _hist_by_split(
        axes[0, 0], items, "utterances", _bins(items["utterances"], integer=True), p.order
    )
    axes[0, 0].set(title="Utterances per item", xlabel="utterances", ylabel="share of items")
    _hist_by_split(axes[0, 1], items, "dialogue_chars", _bins(items["dialogue_chars"]), p.order)
    axes[0, 1].set(
        title="Dialogue length", xlabel="characters (all utterances)", ylabel="share of items"
    )
    p.save(fig, "dialogue_length.png", "Dialogue length")

    fig, axes = p.figure(2, 11, 4)
    cap = float(utts["chars"].quantile(0.99))
    clipped = utts.assign(chars=utts["chars"].clip(upper=cap))
    _hist_by_split(axes[0, 0], clipped, "chars", _bins(clipped["chars"], 40), p.order)
    axes[0, 0].set(
        title=f"Utterance length (clipped at p99 = {cap:.0f})",
        xlabel="characters",
        ylabel="share of utterances",
    )
    pos = utts.assign(
        rel=np.where(utts["of"] > 1, utts["position"] / (utts["of"] - 1).clip(lower=1), 0)
    )
    means = (
        pos.groupby(
            ["split", pd.cut(pos["rel"], np.linspace(0, 1, 11), include_lowest=True)],
            observed=False,
            sort=False,
        )["chars"]
        .mean()
        .unstack(0)
    )
    for split in means.columns:
        color = SPLIT_COLORS[p.order.index(split) % len(SPLIT_COLORS)] if split in p.order else None
        axes[0, 1].plot(
            np.linspace(0.05, 0.95, 10), means[split].values, marker="o", label=split, color=color
        )
    axes[0, 1].set(
        title="Mean utterance length by position",
        xlabel="relative position in dialogue",
        ylabel="characters",
        ylim=(0, None),
    )
    axes[0, 1].legend(fontsize=8)
    p.save(
        fig,
        "utterance_length.png",
        "Utterance length",
        "Distinct dialogues only (CCI repeats a dialogue for several questions).",
    )

    fig, axes = p.figure(2, 11, 4)
    sp = items.groupby(["speakers", "split"], sort=True).size().unstack(fill_value=0)
    _bar_counts(axes[0, 0], sp, p.order)
    axes[0, 0].set(title="Speakers per dialogue", xlabel="distinct speakers")
    _hist_by_split(axes[0, 1], items, "turns", _bins(items["turns"], integer=True), p.order)
    axes[0, 1].set(
        title="Speaker turns per dialogue",
        xlabel="turns (runs of one speaker)",
        ylabel="share of items",
    )
    p.save(fig, "speakers_turns.png", "Speakers and turns")

    fig, axes = p.figure(2, 11, 4)
    _hist_by_split(
        axes[0, 0], items, "anon_tokens", _bins(items["anon_tokens"], integer=True), p.order
    )
    axes[0, 0].set(
        title="Anonymisation tokens per dialogue",
        xlabel="name1, name2, … occurrences",
        ylabel="share of items",
    )
    mx = items[items["anon_max"] > 0].groupby(["anon_max", "split"]).size().unstack(fill_value=0)
    if len(mx):
        mx.index = [f"name{i}" for i in mx.index]
        _bar_counts(axes[0, 1], mx, p.order)
    axes[0, 1].set(title="Highest nameK in a dialogue", xlabel="highest token used")
    p.save(fig, "anonymisation.png", "Anonymisation tokens")


def plot_tokens(p: Plotter, tokens: pd.DataFrame, max_length: int, name: str) -> None:
    fig, axes = p.figure(2, 11, 4)
    for ax, column, title in (
        (axes[0, 0], "prompt_tokens", "Prompt tokens"),
        (axes[0, 1], "train_tokens", "Prompt + gold answer tokens"),
    ):
        values = tokens[column].dropna()
        if values.empty:
            ax.set(title=f"{title}: no gold answers")
            continue
        over = (values > max_length).mean()
        ax.axvline(
            max_length,
            color="red",
            linestyle="--",
            label=f"max_length {max_length}: {over:.1%} over",
        )
        for mark in LENGTH_MARKS:
            if mark != max_length and values.min() < mark < values.max():
                ax.axvline(mark, color="grey", linestyle=":",
                           label=f"{mark}: {(values > mark).mean():.1%} over")
        _hist_by_split(ax, tokens, column, _bins(tokens[column], 40), p.order)
        ax.set(title=title, xlabel=f"tokens ({name})", ylabel="share of items")
    p.save(
        fig,
        "token_length.png",
        "Token length under the tokenizer",
        "Chat template applied, nothing cut; the red line is --max_length, dotted lines other "
        "common lengths.",
    )


def plot_cci(p: Plotter, items: pd.DataFrame, categories_en: dict[str, str]) -> None:
    fig, axes = p.figure(2, 12, 4.2)
    cat = items.groupby(["category", "split"], sort=False).size().unstack(fill_value=0)
    cat.index = [p.korean(c, categories_en.get(c, c)) for c in cat.index]
    _bar_counts(axes[0, 0], cat, p.order)
    axes[0, 0].set(title="Categories", xlabel="")
    axes[0, 0].tick_params(axis="x", labelsize=8)
    gold = items.dropna(subset=["gold"])
    if len(gold):
        g = gold.groupby(["gold", "split"]).size().unstack(fill_value=0)
        _bar_counts(axes[0, 1], g, p.order)
        axes[0, 1].set(title="Gold option position", xlabel="gold option")
    p.save(fig, "categories_gold.png", "Category and gold-position balance")

    if len(gold):
        fig, axes = p.figure(2, 12, 4.2)
        share = gold.groupby(["category", "gold"]).size().unstack(fill_value=0)
        share = share.div(share.sum(axis=1), axis=0)
        share.index = [p.korean(c, categories_en.get(c, c)) for c in share.index]
        im = axes[0, 0].imshow(share.values, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        axes[0, 0].grid(False)
        axes[0, 0].set_xticks(range(share.shape[1]), share.columns)
        axes[0, 0].set_yticks(range(share.shape[0]), share.index, fontsize=8)
        for (r, c), v in np.ndenumerate(share.values):
            axes[0, 0].text(c, r, f"{v:.0%}", ha="center", va="center", fontsize=8)
        axes[0, 0].set(title="Gold position by category (labelled files)")
        fig.colorbar(im, ax=axes[0, 0], fraction=0.046)
        order = [s for s in p.order if s in set(gold["split"])]
        g = gold.groupby("split")
        bias = pd.DataFrame(
            {
                "gold is a longest option": g["gold_longest"].mean(),
                "random option is a longest": g["chance_longest"].mean(),
                "gold is a shortest option": g["gold_shortest"].mean(),
                "random option is a shortest": g["chance_shortest"].mean(),
            }
        ).reindex(order)
        x = np.arange(len(bias.index))
        colors = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78")
        for j, col in enumerate(bias.columns):
            bars = axes[0, 1].bar(
                x + (j - 1.5) * 0.2, bias[col].values, 0.2, label=col, color=colors[j]
            )
            axes[0, 1].bar_label(bars, labels=[f"{v:.0%}" for v in bias[col].values], fontsize=7)
        axes[0, 1].set_xticks(x, bias.index)
        axes[0, 1].set(title="Option-length bias", ylabel="share of items", ylim=(0, 1))
        axes[0, 1].legend(fontsize=8)
        p.save(
            fig,
            "gold_bias.png",
            "Gold position by category; option-length bias",
            "Longest/shortest by characters; tied options all count, and the light bars show "
            "what a randomly placed gold option would score on the same items.",
        )

    fig, axes = p.figure(2, 11, 4)
    _hist_by_split(axes[0, 0], items, "ref_rel", np.linspace(0, 1, 21), p.order)
    axes[0, 0].set(
        title="Position of the (first) reference utterance",
        xlabel="relative position (0 = first utterance, 1 = last)",
        ylabel="share of items",
    )
    _hist_by_split(
        axes[0, 1], items, "ref_from_end", _bins(items["ref_from_end"], integer=True), p.order
    )
    axes[0, 1].set(
        title="Utterances after the (last) reference utterance",
        xlabel="utterances after it",
        ylabel="share of items",
    )
    p.save(fig, "reference_position.png", "Reference-utterance position")

    fig, axes = p.figure(2, 11, 4)
    refs = items.groupby(["references", "split"]).size().unstack(fill_value=0)
    _bar_counts(axes[0, 0], refs, p.order)
    axes[0, 0].set(title="Reference utterances per item", xlabel="reference utterances")
    per = items.groupby(["split", "dialogue"], sort=False).size().rename("n").reset_index()
    _hist_by_split(axes[0, 1], per, "n", _bins(per["n"], integer=True), p.order)
    axes[0, 1].set(
        title="Questions per dialogue",
        xlabel="items sharing one dialogue",
        ylabel="share of dialogues",
    )
    p.save(fig, "references_questions.png", "Reference count; questions per dialogue")


def plot_dcs(p: Plotter, items: pd.DataFrame, keywords: Counter) -> None:
    fig, axes = p.figure(2, 11, 4)
    kw = items.groupby(["keywords", "split"]).size().unstack(fill_value=0)
    _bar_counts(axes[0, 0], kw, p.order)
    axes[0, 0].set(title="Subject keywords per item", xlabel="keywords")
    top = keywords.most_common(20)
    if top and p.font:
        names = [k for k, _ in top][::-1]
        axes[0, 1].barh(names, [c for _, c in top][::-1])
        axes[0, 1].set(title="Most frequent keywords (all files)", xlabel="items")
        axes[0, 1].tick_params(axis="y", labelsize=8)
    else:
        counts = sorted(keywords.values(), reverse=True)
        axes[0, 1].plot(range(1, len(counts) + 1), counts, marker=".")
        axes[0, 1].set(
            title="Keyword frequency by rank (no Hangul font for names)",
            xlabel="rank",
            ylabel="items",
            yscale="log",
        )
    p.save(fig, "keywords.png", "Subject keywords", f"{len(keywords)} distinct keywords.")

    gold = items.dropna(subset=["summary_chars"])
    if len(gold):
        fig, axes = p.figure(2, 11, 4)
        _hist_by_split(axes[0, 0], gold, "summary_chars", _bins(gold["summary_chars"], 30), p.order)
        axes[0, 0].set(title="Summary length", xlabel="characters", ylabel="share of items")
        for split, part in gold.groupby("split", sort=False):
            axes[0, 1].scatter(
                part["dialogue_chars"],
                part["summary_chars"],
                s=10,
                alpha=0.6,
                label=split,
                color=SPLIT_COLORS[p.order.index(split) % len(SPLIT_COLORS)],
            )
        axes[0, 1].set(
            title="Summary vs dialogue length",
            xlabel="dialogue characters",
            ylabel="summary characters",
        )
        axes[0, 1].legend(fontsize=8)
        p.save(fig, "summary_length.png", "Summary length (files with gold summaries)")


def plot_duplicates(p: Plotter, dup: dict) -> None:
    fig, axes = p.figure(3, 15, 4.2)
    sizes = Counter(c["size"] for c in dup["clusters"])
    ax = axes[0, 0]
    if sizes:
        xs = sorted(sizes)
        bars = ax.bar([str(x) for x in xs], [sizes[x] for x in xs])
        ax.bar_label(bars, fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            f"no duplicate items\n(exact, or within {dup['k']} bits)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set(xticks=[], yticks=[])
    ax.set(
        title=f"Duplicate-item clusters (Simhash k={dup['k']})",
        xlabel="items in cluster",
        ylabel="clusters",
    )
    ax = axes[0, 1]
    bits = dup["nearest_dialogue_bits"]
    if bits:
        ax.hist(bits, bins=np.arange(-0.5, 65.5, 1), color="#555555")
        ax.axvline(
            dup["k"] + 0.5, color="red", linestyle="--", label=f"dedup threshold k={dup['k']}"
        )
        ax.legend(fontsize=8)
    ax.set(
        title="Nearest other dialogue",
        xlabel="Simhash distance (bits of 64)",
        ylabel="distinct dialogues",
    )
    ax = axes[0, 2]
    cross = dup["cross"]
    if cross:
        labels = [f"{c['items_of']}\nin {c['matched_in']}" for c in cross]
        whole = [c["whole_dialogue"] for c in cross]
        window = [c["window_only"] for c in cross]
        ax.bar(labels, whole, label="whole dialogue")
        b2 = ax.bar(labels, window, bottom=whole, label="4-utterance window only")
        ax.bar_label(
            b2, labels=[str(w + v) for w, v in zip(whole, window, strict=True)], fontsize=8
        )
        top = max(w + v for w, v in zip(whole, window, strict=True))
        ax.set_ylim(0, max(top * 1.25, top + 1))
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    else:
        ax.text(0.5, 0.5, "one file only", ha="center", va="center", transform=ax.transAxes)
        ax.set(xticks=[], yticks=[])
    ax.set(title="Items whose dialogue reappears in an earlier file", ylabel="items")
    p.save(
        fig,
        "duplicates.png",
        "Duplicates",
        "Exact = equal after dropping case, spaces and punctuation; near = Simhash within k "
        "bits (for CCI on dialogue and question alike). The middle panel shows how far each "
        "distinct dialogue is from its nearest neighbour.",
    )


# ---------------------------------------------------------------------------------------------
# the report


def _num(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return round(float(x), 4)
    return x


def summary_table(
    items: pd.DataFrame, tokens: pd.DataFrame | None, max_length: int
) -> pd.DataFrame:
    cols = [
        c
        for c in (
            "utterances",
            "dialogue_chars",
            "turns",
            "anon_tokens",
            "references",
            "option_chars_mean",
            "keywords",
            "summary_chars",
            "compression",
        )
        if c in items
    ]
    agg = items.groupby("split", sort=False)[cols].mean().round(2)
    agg.insert(0, "dialogues", items.groupby("split", sort=False)["dialogue"].nunique())
    agg.insert(0, "items", items.groupby("split", sort=False).size())
    agg.columns = ["items", "dialogues"] + [f"mean {c}" for c in cols]
    if tokens is not None:
        agg = agg.join(token_table(tokens, max_length))
    return agg


def token_table(tokens: pd.DataFrame, max_length: int) -> pd.DataFrame:
    """Per file: prompt tokens (median, max) and the share over ``max_length``."""
    g = tokens.groupby("split", sort=False)
    agg = pd.DataFrame({"items": g.size()})
    agg["median prompt tokens"] = g["prompt_tokens"].median()
    agg["max prompt tokens"] = g["prompt_tokens"].max()
    agg[f"prompts > {max_length}"] = g["prompt_tokens"].apply(lambda s: (s > max_length).mean())
    agg[f"prompt+answer > {max_length}"] = g["train_tokens"].apply(
        lambda s: (s.dropna() > max_length).mean() if s.notna().any() else np.nan
    )
    return agg.drop(columns="items")


def token_figures(tokens: pd.DataFrame, max_length: int) -> dict:
    """The token-length key figures: share over ``max_length`` per file, quantiles, and the
    share of all prompts over each of :data:`LENGTH_MARKS`."""
    return {
        "max_length": max_length,
        "prompts_over_max_length": {
            s: _num((g["prompt_tokens"] > max_length).mean())
            for s, g in tokens.groupby("split", sort=False)
        },
        "prompt_tokens_p50_p95_max": [
            _num(tokens["prompt_tokens"].quantile(q)) for q in (0.5, 0.95, 1.0)
        ],
        "prompts_over": {
            str(mark): _num((tokens["prompt_tokens"] > mark).mean()) for mark in LENGTH_MARKS
        },
        # to rescale the token figures to another tokenizer
        "prompt_chars_per_token": _num(
            tokens["prompt_chars"].sum() / tokens["prompt_tokens"].sum()
        ),
    }


def key_figures(
    task: Any, items: pd.DataFrame, tokens: pd.DataFrame | None, dup: dict, max_length: int
) -> dict:
    """The numbers worth reading first (also saved as stats.json)."""
    f: dict[str, Any] = {
        "items": {s: int(n) for s, n in items.groupby("split", sort=False).size().items()},
        "distinct_dialogues": dup["dialogues"],
        "utterances_per_item_mean": _num(items["utterances"].mean()),
        "dialogue_chars_median": _num(items["dialogue_chars"].median()),
        "items_with_anonymisation": _num((items["anon_tokens"] > 0).mean()),
        "exact_duplicate_items": dup["exact_duplicates"],
        "near_duplicate_items": dup["near_duplicates"],
        "nearest_dialogue_bits_min_median": [
            min(dup["nearest_dialogue_bits"], default=None),
            _num(np.median(dup["nearest_dialogue_bits"])) if dup["nearest_dialogue_bits"] else None,
        ],
        "cross_file_dialogue_reuse": {
            f"{c['items_of']} in {c['matched_in']}": c["items"] for c in dup["cross"]
        },
    }
    if tokens is not None:
        f.update(token_figures(tokens, max_length))
    if task.name == "cci":
        gold = items.dropna(subset=["gold"])
        f["categories"] = {k: int(v) for k, v in items["category"].value_counts().items()}
        f["gold_position"] = {
            k: int(v) for k, v in gold["gold"].value_counts().sort_index().items()
        }
        for end in ("longest", "shortest"):
            f[f"gold_is_a_{end}_option"] = _num(gold[f"gold_{end}"].mean()) if len(gold) else None
            f[f"random_is_a_{end}_option"] = (
                _num(gold[f"chance_{end}"].mean()) if len(gold) else None
            )
        f["reference_in_last_utterance"] = _num((items["ref_from_end"] == 0).mean())
        f["multi_reference_items"] = _num((items["references"] > 1).mean())
    else:
        f["keywords_per_item_mean"] = _num(items["keywords"].mean())
        if items["summary_chars"].notna().any():
            f["summary_chars_median"] = _num(items["summary_chars"].median())
            f["compression_median"] = _num(items["compression"].median())
    return f


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
.note {{ color: #666; font-size: 13px; }}
code {{ background: #f5f5f5; }}
</style></head><body>
<h1>{title}</h1>
<p class="note">{intro}</p>
{body}
</body></html>
"""


def render_html(title: str, intro: str, sections: list[tuple[str, str]]) -> str:
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{content}" for h, content in sections)
    return PAGE.format(title=html.escape(title), intro=intro, body=body)


def _json_block(obj: Any) -> str:
    return f"<pre>{html.escape(json.dumps(obj, ensure_ascii=False, indent=2))}</pre>"


def build_report(
    task: Any,
    splits: dict[str, list[Any]],
    out_dir: str | Path,
    *,
    tokenizer: Any = None,
    backbone: Any = None,
    tokenizer_name: str = "",
    max_length: int = 1024,
    prompt: str | None = None,
    k: int = 3,
) -> dict:
    """Compute everything, write ``index.html``, ``stats.json`` and PNGs into ``out_dir``.

    Returns the key figures. ``splits`` maps a file label to its items, in file order.
    """
    from malpyeong.tasks.cci import CATEGORY_EN

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = item_frame(task, splits)
    utts = utterance_frame(splits)
    tokens = None
    if tokenizer is not None:
        tokens = token_frame(task, splits, tokenizer, backbone, prompt)
    dup = duplicates(task, splits, k=k)
    p = Plotter(out, list(splits))
    plot_common(p, items, utts)
    if tokens is not None:
        plot_tokens(p, tokens, max_length, tokenizer_name or "tokenizer")
    if task.name == "cci":
        plot_cci(p, items, CATEGORY_EN)
    else:
        kw = Counter(k for its in splits.values() for it in its for k in it.keywords)
        plot_dcs(p, items, kw)
    plot_duplicates(p, dup)
    figures = key_figures(task, items, tokens, dup, max_length)

    sections = [
        ("Key figures", _json_block(figures)),
        ("Per file", summary_table(items, tokens, max_length).to_html(float_format="%.3g")),
    ]
    sections += _figure_sections(p)
    rows = "".join(
        f"<tr><td>{c['size']}</td><td>{html.escape(c['kept'])}</td>"
        f"<td style='text-align:left'>{html.escape(', '.join(c['members']))}</td></tr>"
        for c in dup["clusters"][:30]
    )
    cross = "".join(
        f"<tr><td>{html.escape(c['items_of'])}</td><td>{html.escape(c['matched_in'])}</td>"
        f"<td>{c['items']}</td><td>{c['whole_dialogue']}</td><td>{c['window_only']}</td></tr>"
        for c in dup["cross"]
    )
    sections.append(
        (
            "Duplicate clusters (ids)",
            f"<p class='note'>{len(dup['clusters'])} clusters; the first 30 by size. "
            "Exact = equal after dropping case, spaces and punctuation; near = Simhash "
            f"within {k} bits on dialogue and question alike.</p>"
            "<table><tr><th>size</th><th>kept</th><th>others</th></tr>"
            f"{rows}</table>"
            "<table><tr><th>items of</th><th>matched in</th><th>items</th>"
            "<th>whole dialogue</th><th>window only</th></tr>" + cross + "</table>",
        )
    )
    intro = _intro(task, splits, tokenizer_name if tokenizer is not None else None, prompt)
    html_text = render_html(f"malpyeong EDA: {task.name}", intro, sections)
    atomic_write_text(out / "index.html", html_text)
    atomic_write_json(out / "stats.json", {"key_figures": figures, "duplicates": dup}, indent=2)
    return figures


def build_token_report(
    task: Any,
    splits: dict[str, list[Any]],
    out_dir: str | Path,
    *,
    tokenizer: Any,
    backbone: Any,
    tokenizer_name: str = "",
    max_length: int = 1024,
    prompt: str | None = None,
) -> dict:
    """The token lengths only, under one tokenizer (to set several tokenizers beside one full
    report): ``token_length.png``, ``index.html`` and ``stats.json``. Returns the key figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = token_frame(task, splits, tokenizer, backbone, prompt)
    p = Plotter(out, list(splits))
    plot_tokens(p, tokens, max_length, tokenizer_name or "tokenizer")
    figures = {"items": {s: len(v) for s, v in splits.items()}, **token_figures(tokens, max_length)}
    sections = [
        ("Key figures", _json_block(figures)),
        ("Per file", token_table(tokens, max_length).to_html(float_format="%.3g")),
        *_figure_sections(p),
    ]
    intro = _intro(task, splits, tokenizer_name, prompt)
    html_text = render_html(f"malpyeong EDA: {task.name} prompt tokens", intro, sections)
    atomic_write_text(out / "index.html", html_text)
    atomic_write_json(out / "stats.json", {"key_figures": figures}, indent=2)
    return figures


def _figure_sections(p: Plotter) -> list[tuple[str, str]]:
    out = []
    for name, title, note in p.figures:
        note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
        out.append((title, f'{note_html}<img src="{name}" alt="{html.escape(title)}">'))
    return out


def _intro(task: Any, splits: dict[str, list[Any]], tokenizer_name: str | None,
           prompt: str | None) -> str:
    files = ", ".join(f"{html.escape(s)} ({len(v)} items)" for s, v in splits.items())
    tok = html.escape(tokenizer_name) if tokenizer_name is not None else "none (no token lengths)"
    return (
        f"Task <code>{task.name}</code>; files: {files}. Tokenizer: {tok}; prompt "
        f"<code>{html.escape(str(task.prompt_spec(prompt)))}</code>. Numbers, ids and plots "
        "only: no text of the data is reproduced here."
    )
