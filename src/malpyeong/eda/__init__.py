"""Exploratory data analysis of task data files: statistics, PNG plots and one HTML page.

What is measured (per file, called a *split* after its file name): dialogue and utterance
lengths, speakers and turns, prompt token lengths under a chosen tokenizer with the share over
``max_length``, CCI category and gold-position balance, option-length bias and reference
position, DCS keyword counts and summary lengths, anonymisation tokens (``name1``, ``name2``
…), and duplicates found by :mod:`malpyeong.prep.dedup` (within all files, and dialogues of
one file reappearing in another).

The report carries numbers, ids and plots only — never a sentence of the data — so it can be
published with the code even when the data may not be. (Plots show keyword and category
names, which are single words.)

Modules: :mod:`.frames` (the tables), :mod:`.plots` (the figures), :mod:`.report` (key figures,
HTML, :func:`build_report`).
"""

from __future__ import annotations

from malpyeong.eda.frames import (
    anon_tokens,
    dialogue_key,
    duplicates,
    item_frame,
    nearest_bits,
    token_frame,
    turns,
    utterance_frame,
)
from malpyeong.eda.plots import Plotter, hangul_font
from malpyeong.eda.report import (
    build_report,
    build_token_report,
    key_figures,
    render_html,
    summary_table,
    token_figures,
    token_table,
)

__all__ = [
    "Plotter",
    "anon_tokens",
    "build_report",
    "build_token_report",
    "token_figures",
    "token_table",
    "dialogue_key",
    "duplicates",
    "hangul_font",
    "item_frame",
    "key_figures",
    "nearest_bits",
    "render_html",
    "summary_table",
    "token_frame",
    "turns",
    "utterance_frame",
]
