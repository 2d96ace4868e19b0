"""EDA plots: one PNG per figure, drawn with matplotlib (Agg), Hangul labels when a font has
them and English ones otherwise. Which plots a report gets depends on the columns the task
gives (choice options, reference positions, key terms, output lengths)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
        return np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5, max(1, int(np.ceil((hi - lo + 1) / n))))
    return np.linspace(lo, hi if hi > lo else lo + 1, n + 1)


def _bar_counts(ax: Any, table: pd.DataFrame, order: list[str], ylabel: str = "items") -> None:
    """Grouped bars: index = groups on the x axis, columns = splits (file order and colour)."""
    cols = [c for c in order if c in table.columns]
    x = np.arange(len(table.index))
    width = 0.8 / max(len(cols), 1)
    for j, col in enumerate(cols):
        color = SPLIT_COLORS[order.index(col) % len(SPLIT_COLORS)]
        bars = ax.bar(x + j * width - 0.4 + width / 2, table[col].values, width, label=str(col), color=color)
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, [str(i) for i in table.index])
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.margins(y=0.12)


def plot_common(p: Plotter, items: pd.DataFrame, utts: pd.DataFrame) -> None:
    fig, axes = p.figure(2, 11, 4)
    _hist_by_split(axes[0, 0], items, "utterances", _bins(items["utterances"], integer=True), p.order)
    axes[0, 0].set(title="Utterances per item", xlabel="utterances", ylabel="share of items")
    _hist_by_split(axes[0, 1], items, "dialogue_chars", _bins(items["dialogue_chars"]), p.order)
    axes[0, 1].set(title="Dialogue length", xlabel="characters (all utterances)", ylabel="share of items")
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
    pos = utts.assign(rel=np.where(utts["of"] > 1, utts["position"] / (utts["of"] - 1).clip(lower=1), 0))
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
    _hist_by_split(axes[0, 0], items, "anon_tokens", _bins(items["anon_tokens"], integer=True), p.order)
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
                ax.axvline(
                    mark, color="grey", linestyle=":", label=f"{mark}: {(values > mark).mean():.1%} over"
                )
        _hist_by_split(ax, tokens, column, _bins(tokens[column], 40), p.order)
        ax.set(title=title, xlabel=f"tokens ({name})", ylabel="share of items")
    p.save(
        fig,
        "token_length.png",
        "Token length under the tokenizer",
        "Chat template applied, nothing cut; the red line is --max_length, dotted lines other "
        "common lengths.",
    )


def plot_choice(p: Plotter, items: pd.DataFrame, labels: dict[str, str]) -> None:
    """Category balance, gold-option position and option-length bias (choice tasks)."""
    fig, axes = p.figure(2, 12, 4.2)
    cat = items.groupby(["category", "split"], sort=False).size().unstack(fill_value=0)
    cat.index = [p.korean(c, labels.get(c, c)) for c in cat.index]
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
        share.index = [p.korean(c, labels.get(c, c)) for c in share.index]
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
            bars = axes[0, 1].bar(x + (j - 1.5) * 0.2, bias[col].values, 0.2, label=col, color=colors[j])
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


def plot_references(p: Plotter, items: pd.DataFrame) -> None:
    """Where the reference (target) utterances sit, and questions per dialogue."""
    fig, axes = p.figure(2, 11, 4)
    _hist_by_split(axes[0, 0], items, "ref_rel", np.linspace(0, 1, 21), p.order)
    axes[0, 0].set(
        title="Position of the (first) reference utterance",
        xlabel="relative position (0 = first utterance, 1 = last)",
        ylabel="share of items",
    )
    _hist_by_split(axes[0, 1], items, "ref_from_end", _bins(items["ref_from_end"], integer=True), p.order)
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


def plot_outputs(p: Plotter, items: pd.DataFrame) -> None:
    """Key terms per item and the most frequent ones (``terms``: DCS subject keywords); gold
    output length (``output_chars``)."""
    if "terms" in items:
        terms = items["terms"].map(lambda t: t if isinstance(t, list) else [])
        counts = Counter(t for ts in terms for t in ts)
        fig, axes = p.figure(2, 11, 4)
        per = items.assign(n_terms=terms.map(len))
        kw = per.groupby(["n_terms", "split"]).size().unstack(fill_value=0)
        _bar_counts(axes[0, 0], kw, p.order)
        axes[0, 0].set(title="Key terms per item", xlabel="terms")
        top = counts.most_common(20)
        if top and p.font:
            names = [k for k, _ in top][::-1]
            axes[0, 1].barh(names, [c for _, c in top][::-1])
            axes[0, 1].set(title="Most frequent terms (all files)", xlabel="items")
            axes[0, 1].tick_params(axis="y", labelsize=8)
        else:
            ranked = sorted(counts.values(), reverse=True)
            axes[0, 1].plot(range(1, len(ranked) + 1), ranked, marker=".")
            axes[0, 1].set(
                title="Term frequency by rank (no Hangul font for names)",
                xlabel="rank",
                ylabel="items",
                yscale="log",
            )
        p.save(fig, "keywords.png", "Key terms", f"{len(counts)} distinct terms.")

    gold = items.dropna(subset=["output_chars"]) if "output_chars" in items else items[:0]
    if len(gold):
        fig, axes = p.figure(2, 11, 4)
        _hist_by_split(axes[0, 0], gold, "output_chars", _bins(gold["output_chars"], 30), p.order)
        axes[0, 0].set(title="Gold output length", xlabel="characters", ylabel="share of items")
        for split, part in gold.groupby("split", sort=False):
            axes[0, 1].scatter(
                part["dialogue_chars"],
                part["output_chars"],
                s=10,
                alpha=0.6,
                label=split,
                color=SPLIT_COLORS[p.order.index(split) % len(SPLIT_COLORS)],
            )
        axes[0, 1].set(
            title="Gold output vs dialogue length",
            xlabel="dialogue characters",
            ylabel="output characters",
        )
        axes[0, 1].legend(fontsize=8)
        p.save(fig, "output_length.png", "Gold output length (files with gold outputs)")


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
        ax.axvline(dup["k"] + 0.5, color="red", linestyle="--", label=f"dedup threshold k={dup['k']}")
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
        ax.bar_label(b2, labels=[str(w + v) for w, v in zip(whole, window, strict=True)], fontsize=8)
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
