"""Is one model really better than another? Per-item scores of several models on the same
items, summarised per model and compared pair by pair, with the reports ``run/compare.py``
writes (Markdown, HTML, JSON, CSV, PNG).

Per model: mean, median and a bootstrap CI of the mean. Per pair: the mean paired difference
with its paired-bootstrap CI, win / tie / loss counts, a paired permutation test (the verdict's
test; Holm-adjusted when there are several pairs) and the Wilcoxon signed-rank test beside it.
Items where a score is NaN (a metric that does not apply to the item) are left out of the pairs
that have it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from malpyeong.io import atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_writable
from malpyeong.metrics import stats

TIE = 1e-12  # differences smaller than this are ties (float noise)


@dataclass
class ModelSummary:
    name: str
    n: int
    mean: float
    median: float
    ci: tuple[float, float]


@dataclass
class PairResult:
    a: str
    b: str
    n: int
    mean_diff: float  # mean of a - b
    ci: tuple[float, float]
    wins: int  # items where a scores better than b
    ties: int
    losses: int
    p_permutation: float
    p_bootstrap: float
    p_wilcoxon: float
    p_adjusted: float | None  # Holm, when several pairs are compared
    significant: bool
    verdict: str


@dataclass
class Comparison:
    metric: str
    higher_is_better: bool
    alpha: float
    level: float
    resamples: int
    seed: int
    ids: list[str]
    scores: dict[str, list[float]]
    models: list[ModelSummary] = field(default_factory=list)
    pairs: list[PairResult] = field(default_factory=list)


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def compare(
    ids: list[str],
    scores: dict[str, list[float]],
    *,
    metric: str,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Summaries per model and every pair's paired tests (``scores[name]`` in ``ids`` order)."""
    c = Comparison(metric, higher_is_better, alpha, level, resamples, seed, ids, scores)
    for name, values in scores.items():
        x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
        lo, hi = stats.mean_ci(x, level=level, resamples=resamples, seed=seed)
        c.models.append(ModelSummary(name, len(x), float(x.mean()), float(np.median(x)), (lo, hi)))
    names = list(scores)
    raw = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa, pb = np.asarray(scores[a], dtype=float), np.asarray(scores[b], dtype=float)
            keep = ~(np.isnan(pa) | np.isnan(pb))
            d = pa[keep] - pb[keep]
            sign = 1 if higher_is_better else -1
            lo, hi, p_boot = stats.paired_bootstrap(d, level=level, resamples=resamples, seed=seed)
            raw.append(
                PairResult(
                    a,
                    b,
                    len(d),
                    float(d.mean()),
                    (lo, hi),
                    int(np.sum(sign * d > TIE)),
                    int(np.sum(np.abs(d) <= TIE)),
                    int(np.sum(sign * d < -TIE)),
                    stats.permutation_p(d, resamples=resamples, seed=seed),
                    p_boot,
                    stats.wilcoxon_p(d),
                    None,
                    False,
                    "",
                )
            )
    adjusted = stats.holm([p.p_permutation for p in raw]) if len(raw) > 1 else [None] * len(raw)
    for pair, adj in zip(raw, adjusted, strict=True):
        pair.p_adjusted = adj
        p = adj if adj is not None else pair.p_permutation
        pair.significant = p < alpha
        pair.verdict = verdict(pair, metric, higher_is_better, alpha, level)
    c.pairs = raw
    return c


def verdict(pair: PairResult, metric: str, higher_is_better: bool, alpha: float, level: float) -> str:
    """One line: which model is better on ``metric`` and whether that is significant."""
    p_text = f"permutation p={pair.p_permutation:.4g}" + (
        f" (Holm-adjusted {pair.p_adjusted:.4g})" if pair.p_adjusted is not None else ""
    )
    detail = (
        f"mean difference {pair.mean_diff:+.4f}, {level:.0%} CI [{pair.ci[0]:+.4f}, "
        f"{pair.ci[1]:+.4f}]; wins/ties/losses {pair.wins}/{pair.ties}/{pair.losses}; "
        f"{p_text}; Wilcoxon p={pair.p_wilcoxon:.4g}"
    )
    if not pair.significant:
        return f"{pair.a} vs {pair.b}: no significant difference in {metric} at alpha={alpha} ({detail})"
    a_better = (pair.mean_diff > 0) == higher_is_better
    winner, loser = (pair.a, pair.b) if a_better else (pair.b, pair.a)
    agree = "" if pair.p_wilcoxon < alpha else "; Wilcoxon does not agree"
    return f"{winner} is better than {loser} in {metric}: significant at alpha={alpha} ({detail}{agree})"


def tables(c: Comparison) -> list[tuple[list[str], list[list[str]]]]:
    """The per-model table and (with two models or more) the per-pair table: header, rows."""
    models = (
        ["model", "n", f"mean {c.metric}", "median", f"{c.level:.0%} CI of the mean"],
        [
            [m.name, str(m.n), _fmt(m.mean), _fmt(m.median), f"[{_fmt(m.ci[0])}, {_fmt(m.ci[1])}]"]
            for m in c.models
        ],
    )
    out = [models]
    if c.pairs:
        rows = []
        for p in c.pairs:
            perm = f"{p.p_permutation:.4g}" + (
                f" (Holm {p.p_adjusted:.4g})" if p.p_adjusted is not None else ""
            )
            rows.append(
                [
                    f"{p.a} − {p.b}",
                    str(p.n),
                    f"{p.mean_diff:+.4f}",
                    f"[{p.ci[0]:+.4f}, {p.ci[1]:+.4f}]",
                    f"{p.wins} / {p.ties} / {p.losses}",
                    perm,
                    f"{p.p_wilcoxon:.4g}",
                    "yes" if p.significant else "no",
                ]
            )
        out.append(
            (
                [
                    "pair (A − B)",
                    "n",
                    "mean difference",
                    f"{c.level:.0%} CI",
                    "wins / ties / losses",
                    "permutation p",
                    "Wilcoxon p",
                    "significant",
                ],
                rows,
            )
        )
    return out


def markdown_table(c: Comparison) -> str:
    blocks = []
    for header, rows in tables(c):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def plot_files(c: Comparison) -> list[str]:
    return ["distribution.png"] + [f"scatter_{_slug(p.a)}_vs_{_slug(p.b)}.png" for p in c.pairs]


def _png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    return buf.getvalue()


def draw_plots(c: Comparison) -> dict[str, bytes]:
    """The per-model distribution (violin and box) and a per-item scatter per pair, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs: dict[str, bytes] = {}
    names = list(c.scores)
    data = [[v for v in c.scores[n] if not math.isnan(v)] for n in names]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 4))
    ax.violinplot(data, showextrema=False)
    ax.boxplot(data, widths=0.15, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=15)
    ax.set_ylabel(c.metric)
    ax.set_title(f"{c.metric} per item ({len(c.ids)} items)")
    pngs["distribution.png"] = _png(fig)
    plt.close(fig)
    for pair, fname in zip(c.pairs, plot_files(c)[1:], strict=True):
        a, b = np.asarray(c.scores[pair.a]), np.asarray(c.scores[pair.b])
        fig, ax = plt.subplots(figsize=(4.6, 4.6))
        ax.scatter(b, a, s=12, alpha=0.6)
        lo = float(np.nanmin(np.concatenate([a, b])))
        hi = float(np.nanmax(np.concatenate([a, b])))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
        ax.set_xlabel(f"{pair.b} ({c.metric})")
        ax.set_ylabel(f"{pair.a} ({c.metric})")
        ax.set_title(f"{pair.a} wins {pair.wins}, ties {pair.ties}, loses {pair.losses}")
        pngs[fname] = _png(fig)
        plt.close(fig)
    return pngs


def intro(c: Comparison) -> str:
    return (
        f"Metric: {c.metric} ({'higher' if c.higher_is_better else 'lower'} is better), "
        f"{len(c.ids)} items; {c.resamples:,} resamples (seed {c.seed}); "
        f"significance level {c.alpha}."
    )


def report_markdown(c: Comparison, title: str, sources: dict[str, str]) -> str:
    parts = [f"# {title}", "", intro(c), "", markdown_table(c), "", "## Verdicts", ""]
    parts += [f"- {p.verdict}" for p in c.pairs] or ["- only one model: nothing to compare"]
    parts += ["", "## Inputs", ""] + [f"- {name}: `{src}`" for name, src in sources.items()]
    parts += ["", "## Plots", ""] + [f"![{f}]({f})" for f in plot_files(c)]
    return "\n".join(parts) + "\n"


def report_html(c: Comparison, title: str, intro: str, pngs: dict[str, bytes]) -> str:
    """One self-contained page: the tables, the verdicts and the plots inline."""
    tabs = []
    for header, rows in tables(c):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows)
        tabs.append(f"<table><tr>{head}</tr>{body}</table>")
    verdicts = "".join(f"<li>{html.escape(p.verdict)}</li>" for p in c.pairs)
    images = "".join(
        f'<p><img alt="{f}" src="data:image/png;base64,{base64.b64encode(pngs[f]).decode()}"></p>'
        for f in plot_files(c)
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        "</title><style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.3em .6em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>{''.join(tabs)}"
        f"<h2>Verdicts</h2><ul>{verdicts}</ul><h2>Plots</h2>{images}</body></html>\n"
    )


def report_files(c: Comparison) -> list[str]:
    return ["report.md", "report.html", "report.json", "scores.csv", *plot_files(c)]


def write_reports(
    c: Comparison, out_dir: str | Path, *, title: str, sources: dict[str, str], overwrite: bool = False
) -> list[Path]:
    """Every report file into ``out_dir`` (none is written if one exists without
    ``overwrite``)."""
    out = Path(out_dir)
    paths = [ensure_writable(out / name, overwrite) for name in report_files(c)]
    pngs = draw_plots(c)
    markdown = report_markdown(c, title, sources)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", report_html(c, title, intro(c), pngs))
    atomic_write_json(
        out / "report.json",
        {
            **{k: v for k, v in asdict(c).items() if k not in ("scores", "ids")},
            "sources": sources,
            "n_items": len(c.ids),
        },
        indent=2,
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", *c.scores])
    for i, item in enumerate(c.ids):
        writer.writerow([item, *(c.scores[n][i] for n in c.scores)])
    atomic_write_text(out / "scores.csv", buf.getvalue())
    for name, data in pngs.items():
        atomic_write_bytes(out / name, data)
    return paths


__all__ = [
    "Comparison",
    "ModelSummary",
    "PairResult",
    "compare",
    "markdown_table",
    "report_files",
    "verdict",
    "write_reports",
]
