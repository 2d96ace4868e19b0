"""The EDA report: key figures, a per-file table, and one HTML page beside the plots."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from malpyeong.eda.frames import duplicates, item_frame, token_frame, utterance_frame
from malpyeong.eda.plots import (
    LENGTH_MARKS,
    Plotter,
    plot_choice,
    plot_common,
    plot_duplicates,
    plot_outputs,
    plot_references,
    plot_tokens,
)
from malpyeong.io import atomic_write_json, atomic_write_text
from malpyeong.tasks.base import Task


def _num(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return round(float(x), 4)
    return x


def summary_table(items: pd.DataFrame, tokens: pd.DataFrame | None, max_length: int) -> pd.DataFrame:
    cols = [
        c
        for c in (
            "utterances",
            "dialogue_chars",
            "turns",
            "anon_tokens",
            "references",
            "option_chars_mean",
            "output_chars",
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
            s: _num((g["prompt_tokens"] > max_length).mean()) for s, g in tokens.groupby("split", sort=False)
        },
        "prompt_tokens_p50_p95_max": [_num(tokens["prompt_tokens"].quantile(q)) for q in (0.5, 0.95, 1.0)],
        "prompts_over": {str(mark): _num((tokens["prompt_tokens"] > mark).mean()) for mark in LENGTH_MARKS},
        # to rescale the token figures to another tokenizer
        "prompt_chars_per_token": _num(tokens["prompt_chars"].sum() / tokens["prompt_tokens"].sum()),
    }


def key_figures(
    task: Task, items: pd.DataFrame, tokens: pd.DataFrame | None, dup: dict, max_length: int
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
    if "category" in items:
        f["categories"] = {k: int(v) for k, v in items["category"].value_counts().items()}
    if "gold" in items:
        gold = items.dropna(subset=["gold"])
        f["gold_position"] = {k: int(v) for k, v in gold["gold"].value_counts().sort_index().items()}
        for end in ("longest", "shortest"):
            f[f"gold_is_a_{end}_option"] = _num(gold[f"gold_{end}"].mean()) if len(gold) else None
            f[f"random_is_a_{end}_option"] = _num(gold[f"chance_{end}"].mean()) if len(gold) else None
    if "ref_from_end" in items:
        f["reference_in_last_utterance"] = _num((items["ref_from_end"] == 0).mean())
        f["multi_reference_items"] = _num((items["references"] > 1).mean())
    if "terms" in items:
        f["terms_per_item_mean"] = _num(
            items["terms"].map(lambda t: len(t) if isinstance(t, list) else 0).mean()
        )
    if "output_chars" in items and items["output_chars"].notna().any():
        f["output_chars_median"] = _num(items["output_chars"].median())
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
    task: Task,
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
    if "category" in items or "gold" in items:
        plot_choice(p, items, task.eda_labels)
    if "ref_rel" in items:
        plot_references(p, items)
    if "terms" in items or "output_chars" in items:
        plot_outputs(p, items)
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
    task: Task,
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


def _intro(task: Task, splits: dict[str, list[Any]], tokenizer_name: str | None, prompt: str | None) -> str:
    files = ", ".join(f"{html.escape(s)} ({len(v)} items)" for s, v in splits.items())
    tok = html.escape(tokenizer_name) if tokenizer_name is not None else "none (no token lengths)"
    return (
        f"Task <code>{task.name}</code>; files: {files}. Tokenizer: {tok}; prompt "
        f"<code>{html.escape(str(task.prompt_spec(prompt)))}</code>. Numbers, ids and plots "
        "only: no text of the data is reproduced here."
    )
