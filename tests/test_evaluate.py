"""run/evaluate.py: official checks first, then the CCI report or the DCS scores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLES, load_script

EVALUATE = ROOT / "run" / "evaluate.py"
LABELS = ("inference_1", "inference_2", "inference_3")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EVALUATE), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "HF_HUB_OFFLINE": "1",
            "PATH": "/usr/bin:/bin",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT / "src"),
        },
    )  # this checkout


def in_process(argv: list[str], capsys) -> tuple[int, str, str]:

    from malpyeong.cli import run_cli

    script = load_script(EVALUATE)

    code = run_cli(script.main, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def write_predictions(path, gold_path, pick) -> list[dict]:
    rows = json.loads(gold_path.read_text(encoding="utf-8"))
    gold = [r["output"] for r in rows]
    for i, r in enumerate(rows):
        r["output"] = pick(i, r["output"])
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=4), encoding="utf-8")
    return gold


def test_cci_report_numbers(tmp_path, capsys):
    gold_path = SAMPLES / "cci_dev.json"
    pred = tmp_path / "pred.json"
    # right on even positions, on odd ones the next label (always wrong)
    gold = write_predictions(
        pred, gold_path, lambda i, g: g if i % 2 == 0 else LABELS[(LABELS.index(g) + 1) % 3]
    )
    code, out, err = in_process(
        ["--task", "cci", "--gold", str(gold_path), "--pred", str(pred), "--json"], capsys
    )
    assert code == 0, err
    report = json.loads(out)
    n = len(gold)
    right = (n + 1) // 2
    assert report["n"] == n and report["correct"] == right
    assert report["accuracy"] == pytest.approx(right / n, abs=1e-12)
    matrix = report["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == n
    assert sum(matrix[i][i] for i in range(3)) == right
    for label in LABELS:
        idx = [i for i, g in enumerate(gold) if g == label]
        want = sum(1 for i in idx if i % 2 == 0)
        assert report["by_gold_position"][label]["correct"] == want
        assert report["by_gold_position"][label]["n"] == len(idx)
    assert sum(r["n"] for r in report["by_category"].values()) == n
    code, out, _ = in_process(["--task", "cci", "--gold", str(gold_path), "--pred", str(pred)], capsys)
    assert code == 0
    assert f"accuracy  {right / n:.4f}  ({right}/{n})" in out
    assert "confusion" in out and "by category" in out


def test_official_checks_come_first(tmp_path, capsys):
    gold_path = SAMPLES / "cci_dev.json"
    rows = json.loads(gold_path.read_text(encoding="utf-8"))
    rows[1]["output"] = "inference_4"
    pred = tmp_path / "bad.json"
    pred.write_text(json.dumps(rows[:-1], ensure_ascii=False), encoding="utf-8")
    code, out, err = in_process(["--task", "cci", "--gold", str(gold_path), "--pred", str(pred)], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert any("items, the test file has" in line for line in lines)
    assert any(rows[1]["id"] in line and "inference_4" in line for line in lines)
    assert "Traceback" not in err


def test_missing_pred_file_is_one_line_exit_2():
    proc = run("--task", "cci", "--gold", str(SAMPLES / "cci_dev.json"), "--pred", "nope.json")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dcs_scores_with_models_left_out(tmp_path, capsys):
    gold_path = SAMPLES / "dcs_dev.json"
    pred = tmp_path / "dcs.json"
    write_predictions(pred, gold_path, lambda i, g: g)  # perfect summaries
    code, out, err = in_process(
        [
            "--task",
            "dcs",
            "--gold",
            str(gold_path),
            "--pred",
            str(pred),
            "--skip",
            "bertscore",
            "bleurt",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["rouge1"] == pytest.approx(1.0, abs=1e-12)
    assert report["bertscore"] is None and report["bleurt"] is None
    assert report["aggregate"] == pytest.approx(100.0) and report["complete"] is False
    assert "per_item" not in report
    code, out, _ = in_process(
        ["--task", "dcs", "--gold", str(gold_path), "--pred", str(pred), "--skip", "bertscore", "bleurt"],
        capsys,
    )
    assert code == 0
    assert "rouge1    1.0000" in out and "not comparable with the leaderboard" in out
    assert "bleurt    not computed" in out


def test_dcs_unavailable_metric_models_are_reported_not_fatal(tmp_path, capsys):
    gold_path = SAMPLES / "dcs_dev.json"
    pred = tmp_path / "dcs.json"
    write_predictions(pred, gold_path, lambda i, g: "두 화자는 이 대화에서 일상에 대해 이야기했습니다.")
    # no metric model named: the default BERTScore model is not in the offline cache and no
    # BLEURT checkpoint is given -> both reported, the rest scored
    code, out, err = in_process(["--task", "dcs", "--gold", str(gold_path), "--pred", str(pred)], capsys)
    assert code == 0, err
    assert "bertscore not computed" in out and "bleurt    not computed" in out
    assert "note: bertscore" in out and "note: bleurt" in out
    assert "aggregate" in out
    # a model the user named that does not load: one line, exit 2 (never a silent gap)
    for option, name in (("--bertscore_model", "no-such-bert"), ("--bleurt_checkpoint", "no-such-bleurt")):
        code, out, err = in_process(
            ["--task", "dcs", "--gold", str(gold_path), "--pred", str(pred), option, str(tmp_path / name)],
            capsys,
        )
        assert code == 2 and len(err.strip().splitlines()) == 1 and name in err, err


def test_dcs_options_are_refused_for_cci(tmp_path, capsys):
    gold_path = SAMPLES / "cci_dev.json"
    pred = tmp_path / "p.json"
    write_predictions(pred, gold_path, lambda i, g: g)
    code, _, err = in_process(
        ["--task", "cci", "--gold", str(gold_path), "--pred", str(pred), "--bleurt_checkpoint", "x"], capsys
    )
    assert code == 2 and "--bleurt_checkpoint do not apply to task cci" in err
