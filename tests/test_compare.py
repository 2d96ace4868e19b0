"""Model comparison: the paired statistics, and run/compare.py's verdicts and reports on
results files (identical ones, and a pair where one is better by construction)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLES, load_script

from malpyeong.cli import run_cli
from malpyeong.metrics import stats
from malpyeong.metrics.comparison import compare

WORDS = ("회의", "예산", "일정", "공원", "도서관", "축제", "버스", "학교", "시장", "병원")


def test_paired_statistics():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    zeros = [0.0] * 30
    assert stats.permutation_p(zeros) == 1.0 and stats.wilcoxon_p(zeros) == 1.0
    assert stats.paired_bootstrap(zeros) == (0.0, 0.0, 1.0)
    better = [0.1 + 0.01 * i for i in range(20)]
    assert stats.permutation_p(better, resamples=2000) == pytest.approx(1 / 2001)
    assert stats.wilcoxon_p(better) < 1e-5
    noise = np.random.default_rng(1).normal(0, 1, 200)
    lo, hi = stats.mean_ci(noise, seed=3)
    assert lo < noise.mean() < hi and (lo, hi) == stats.mean_ci(noise, seed=3)
    assert stats.permutation_p(noise) > 0.05


def test_compare_counts_and_verdicts():
    ids = [str(i) for i in range(6)]
    c = compare(
        ids, {"a": [1, 1, 1, 0, 0.5, float("nan")], "b": [0, 0, 0, 0, 0.5, 1.0]}, metric="f1", resamples=500
    )
    pair = c.pairs[0]
    assert (pair.n, pair.wins, pair.ties, pair.losses) == (5, 3, 2, 0)
    assert pair.mean_diff == pytest.approx(0.6) and pair.p_adjusted is None
    assert c.models[0].n == 5 and c.models[1].n == 6
    lower = compare(
        ids[:5], {"a": [1.0] * 5, "b": [0.0] * 5}, metric="loss", higher_is_better=False, resamples=500
    )
    assert (lower.pairs[0].wins, lower.pairs[0].losses) == (0, 5)


def qa_files(tmp_path, n: int = 40):
    """Our own gold items, a model that answers them right and one that answers another item."""
    gold, good, bad = [], [], []
    for i in range(n):
        w, v = WORDS[i % 10], WORDS[(i + 3) % 10]
        answer = f"{w} 근처에서 {i}번 모임을 열기로 했다"
        gold.append(
            {
                "id": f"g{i}",
                "input": {"context": f"{w}와 {v} 이야기 {i}", "question": f"{i}번 모임은?"},
                "output": {"answer": answer, "rationale": f"{w} 이야기에서 정했다"},
            }
        )
        good.append({**gold[-1], "output": {"answer": answer + "고 한다"}})
        bad.append({**gold[-1], "output": {"answer": f"{v} 앞에서 헤어졌다"}})
    paths = {}
    for name, rows in (("gold", gold), ("good", good), ("bad", bad), ("same", bad)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return paths


def run_compare(capsys, *args) -> tuple[int, str, str]:
    code = run_cli(load_script("run/compare.py").main, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_identical_files_differ_in_nothing_and_a_better_model_wins(tmp_path, capsys):
    p = qa_files(tmp_path)
    out = tmp_path / "same_report"
    code, shown, err = run_compare(
        capsys,
        "--task",
        "qa",
        "--gold",
        p["gold"],
        "--pred",
        p["bad"],
        p["same"],
        "--metric",
        "f1",
        "--out",
        out,
    )
    assert code == 0, err
    assert "bad vs same: no significant difference in f1 at alpha=0.05" in shown
    assert "wins/ties/losses 0/40/0; permutation p=1;" in shown
    out = tmp_path / "report"
    code, shown, err = run_compare(
        capsys,
        "--task",
        "qa",
        "--gold",
        p["gold"],
        "--pred",
        p["bad"],
        p["good"],
        "--metric",
        "rouge1",
        "--out",
        out,
    )
    assert code == 0, err
    assert "good is better than bad in rouge1: significant at alpha=0.05" in shown
    assert "wins/ties/losses 0/0/40" in shown  # A = bad loses every item
    for name in (
        "report.md",
        "report.html",
        "report.json",
        "scores.csv",
        "distribution.png",
        "scatter_bad_vs_good.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "distribution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| bad − good | 40 |" in md and "![distribution.png](distribution.png)" in md
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and "<td>bad − good</td>" in page
    assert len((out / "scores.csv").read_text(encoding="utf-8").splitlines()) == 41
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["pairs"][0]["significant"] is True and report["n_items"] == 40
    code, _, err = run_compare(
        capsys, "--task", "qa", "--gold", p["gold"], "--pred", p["bad"], p["good"], "--out", out
    )
    assert code == 2 and "output exists" in err  # reports are not overwritten by default


def test_similarity_with_a_local_embedder_and_three_models(tmp_path, capsys, tiny_embedder):
    p = qa_files(tmp_path, 20)
    code, shown, err = run_compare(
        capsys,
        "--task",
        "qa",
        "--gold",
        p["gold"],
        "--pred",
        p["bad"],
        p["same"],
        p["good"],
        "--metric",
        "similarity",
        "--embedder",
        tiny_embedder,
        "--resamples",
        "2000",
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    assert shown.count("Holm-adjusted") == 3 and "bad vs same: no significant difference" in shown
    assert "good is better than bad in similarity" in shown


def test_compare_works_for_dcs_and_reports_mistakes(tmp_path, capsys):
    gold = json.loads((SAMPLES / "dcs_dev.json").read_text(encoding="utf-8"))
    short = [{**r, "output": r["output"].split()[0]} for r in gold]
    (tmp_path / "full.json").write_text(json.dumps(gold, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "short.json").write_text(json.dumps(short, ensure_ascii=False), encoding="utf-8")
    code, shown, err = run_compare(
        capsys,
        "--task",
        "dcs",
        "--gold",
        SAMPLES / "dcs_dev.json",
        "--pred",
        tmp_path / "full.json",
        tmp_path / "short.json",
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    assert "full is better than short in rouge1: significant" in shown
    code, _, err = run_compare(
        capsys,
        "--task",
        "dcs",
        "--gold",
        SAMPLES / "dcs_dev.json",
        "--pred",
        tmp_path / "full.json",
        "--out",
        tmp_path / "r2",
    )
    assert code == 2 and "two or more models" in err
    code, _, err = run_compare(
        capsys,
        "--task",
        "qa",
        "--gold",
        SAMPLES / "qa_dev.jsonl",
        "--pred",
        tmp_path / "a.json",
        tmp_path / "b.json",
        "--metric",
        "rogue1",
        "--out",
        tmp_path / "r3",
    )
    assert code == 2 and "did you mean 'rouge1'" in err
    code, _, err = run_compare(
        capsys,
        "--task",
        "dcs",
        "--gold",
        SAMPLES / "dcs_dev.json",
        "--pred",
        tmp_path / "full.json",
        tmp_path / "short.json",
        "--embedder",
        "x",
        "--out",
        tmp_path / "r4",
    )
    assert code == 2 and "--embedder do not apply to task dcs" in err
