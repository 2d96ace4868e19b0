"""The SYNTHETIC DCS set of the demo: records in the official layout whose summary restates the
facts the dialogue states, and a tiny random-weight model that learns to write it (ROUGE-1 by
the official scorer from at most 0.2 to at least 0.9)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, load_script

from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.tasks import get_task
from malpyeong.tasks.dcs_synthetic import synthetic_summary

SUMMARY = re.compile(r"^화자([12])(은|는) (\S+) (\S+) 함께 (\S+)에 가서 (\S+) 했다\.$")


def test_records_parse_and_every_fact_of_the_summary_is_in_the_dialogue():
    task = get_task("dcs")
    records = task.synthetic_records(300, 5, "train")
    assert records == task.synthetic_records(300, 5, "train")  # the seed fixes the files
    problems: list = []
    items = [task.parse_item(r, problems) for r in records]
    assert problems == [] and all(items)
    assert [r["id"] for r in records[:2]] == ["synthetic-train-0", "synthetic-train-1"]
    shapes = set()
    for record in records:
        turns = record["input"]["conversation"]
        speaker, topic, when, who, where, what = SUMMARY.match(record["output"]).groups()
        assert topic == {"1": "은", "2": "는"}[speaker]  # 화자1은 (일), 화자2는 (이)
        told = [t["utterance"] for t in turns if str(t["speaker"]) == speaker]
        text = " ".join(told)
        # when, with whom, where and what, written in the dialogue as the summary writes them
        for fact in (when, f"{who} 함께", f"{where}에", what):
            assert fact in text, (fact, record)
        assert len(turns) in (4, 6) and turns[0]["speaker"] != int(speaker)
        shapes.add(text.index(when) < text.index(f"{who} 함께"))
    assert shapes == {True, False}  # the facts come in more than one order
    assert all(r["output"] == "" for r in task.synthetic_records(5, 5, "test"))


def test_particles_follow_the_last_syllable():
    assert (
        synthetic_summary(1, "어제", "민수", "바다", "낚시")
        == "화자1은 어제 민수와 함께 바다에 가서 낚시를 했다."
    )
    assert synthetic_summary(2, "토요일", "서연", "공원", "운동") == (
        "화자2는 토요일에 서연과 함께 공원에 가서 운동을 했다."
    )


def test_synthetic_cli_writes_labelled_dcs_files(tmp_path, capsys):
    load_script("run/synthetic.py").main(
        ["--task", "dcs", "--out", str(tmp_path), "--train", "12", "--dev", "4", "--test", "3"]
    )
    out = capsys.readouterr().out
    assert out.startswith("wrote SYNTHETIC dcs data (not competition data; ids synthetic-*): ")
    task = get_task("dcs")
    dev = load_items(tmp_path / "dcs_dev.json", task)
    assert [it.id for it in dev] == [f"synthetic-dev-{i}" for i in range(4)]
    assert all(task.has_output(it) for it in dev)
    test = json.loads((tmp_path / "dcs_test.json").read_text(encoding="utf-8"))
    assert len(test) == 3 and all(r["output"] == "" for r in test)


def test_corpus_items_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="at least 1"):
        load_script("run/tiny_model.py").main(
            ["--family", "llama", "--out", str(tmp_path / "m"), "--corpus", "x.json", "--task", "dcs"]
            + ["--corpus_items", "0"]
        )


def _rouge1(model: Path, dev: Path, out: Path, *extra: str) -> float:
    """ROUGE-1 (the official scorer's) of the greedy summaries run/test.py writes for ``dev``."""
    from malpyeong.metrics import rouge1

    load_script("run/test.py").main(
        ["--model", str(model), "--task", "dcs", "--input", str(dev), "--output", str(out)]
        + ["--max_new_tokens", "32", "--no_progress", *extra]
    )
    gold = {r["id"]: r["output"] for r in json.loads(dev.read_text(encoding="utf-8"))}
    pred = {r["id"]: r["output"] for r in json.loads(out.read_text(encoding="utf-8"))}
    return rouge1([gold[i] for i in gold], [pred[i] for i in gold])


@pytest.mark.slow
def test_a_tiny_model_learns_the_synthetic_summaries(tmp_path):
    """The demo's commands and recipe (resource/configs/dcs/tiny_synthetic_full.yaml), shortened
    to 200 steps with one dev evaluation at the end."""
    task = get_task("dcs")
    load_script("run/synthetic.py").main(
        ["--task", "dcs", "--out", str(tmp_path), "--train", "2400", "--dev", "30", "--test", "1"]
    )
    train, dev = tmp_path / "dcs_train.json", tmp_path / "dcs_dev.json"
    model = tmp_path / "model"
    load_script("run/tiny_model.py").main(
        ["--family", "llama", "--out", str(model), "--corpus", str(train), "--task", task.name]
        + ["--output_scale", "16", "--corpus_items", "600"]
    )
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(model).tokenize(" 민수와 바다에 낚시를")
    assert len(tokens) == 3, tokens  # --corpus_items 600: each fact is one token to copy
    before = _rouge1(model, dev, tmp_path / "before.json", "--max_length", "512")
    run = tmp_path / "run"
    recipe = ROOT / "resource" / "configs" / "dcs" / "tiny_synthetic_full.yaml"
    load_script("run/train.py").main(
        ["--config", str(recipe), "--model", str(model), "--train_file", str(train)]
        + ["--dev_file", str(dev), "--output_dir", str(run), "--max_steps", "200"]
        + ["--eval_steps", "200", "--save_steps", "200", "--report_to", "none"]
    )
    after = _rouge1(run, dev, tmp_path / "after.json")
    # before: a random model writes a few particles at best; after: the template with the facts
    assert (before <= 0.2, after >= 0.9) == (True, True), (before, after)
