"""EDA: per-item statistics on constructed items, and the HTML + PNG report on our samples."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, load_script

from malpyeong.data import load_items
from malpyeong.eda import anon_tokens, build_report, duplicates, item_frame, nearest_bits, turns
from malpyeong.tasks import get_task


def write(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def test_small_measures():
    assert anon_tokens("name1 씨랑 name12, 그리고 name1") == [1, 12, 1]
    assert anon_tokens("이름 없음") == []
    assert turns(["1", "1", "2", "1", "1"]) == 3
    assert turns([]) == 0
    assert nearest_bits(["같은 문장입니다", "같은 문장입니다"]) == []  # one distinct text
    bits = nearest_bits(
        [
            "오늘 날씨가 정말 맑고 좋아서 산책을 나갔다",
            "오늘 날씨가 정말 맑고 좋아서 산책을 나갔어",
            "내일은 회사에서 중요한 회의가 오후 세 시에 있다",
        ]
    )
    assert len(bits) == 3 and bits[0] == bits[1] < bits[2]


def test_item_frame_on_constructed_items(cci_record, dcs_record, tmp_path):
    rec = copy.deepcopy(cci_record)
    rec["input"]["conversation"][1]["utterance"] = "name1 씨도 신발이 다 젖었어? name2도?"
    rec["input"]["conversation"][2]["speaker"] = 2
    items = load_items(write(tmp_path / "c.json", [rec]), get_task("cci"))
    row = item_frame(get_task("cci"), {"train": items}).iloc[0]
    assert row["utterances"] == 4 and row["speakers"] == 2 and row["turns"] == 2
    assert row["anon_tokens"] == 2 and row["anon_max"] == 2
    assert row["category"] == "동기" and row["gold"] == "A" and row["references"] == 1
    assert row["ref_first"] == 3 and row["ref_rel"] == 1.0 and row["ref_from_end"] == 0
    assert [len(rec["input"][f"inference_{i}"]) for i in (1, 2, 3)] == [22, 18, 18]
    assert row["gold_longest"] and not row["gold_shortest"]
    assert row["chance_longest"] == pytest.approx(1 / 3)
    assert row["chance_shortest"] == pytest.approx(2 / 3)
    dcs = load_items(write(tmp_path / "d.json", [dcs_record]), get_task("dcs"))
    row = item_frame(get_task("dcs"), {"dev": dcs}).iloc[0]
    chars = sum(len(u["utterance"]) for u in dcs_record["input"]["conversation"])
    assert row["terms"] == dcs_record["input"]["subject_keyword"] and row["dialogue_chars"] == chars
    assert row["output_chars"] == len(dcs_record["output"])
    assert row["compression"] == pytest.approx(len(dcs_record["output"]) / chars)


def test_duplicates_and_cross_file_reuse(cci_record, tmp_path):
    a = copy.deepcopy(cci_record)
    b = copy.deepcopy(cci_record)
    b["id"] = "copy"
    b["input"]["inference_1"] += "!"  # punctuation only: an exact duplicate after normalising
    c = copy.deepcopy(cci_record)
    c["id"] = "other-question"
    c["input"]["category"] = "원인"
    c["input"]["inference_1"] = "비가 와서 신발이 젖었다."
    c["input"]["inference_2"] = "산책을 좋아해서 공원에 갔다."
    c["input"]["inference_3"] = "우산을 잃어버려서 새로 샀다."
    task = get_task("cci")
    train = load_items(write(tmp_path / "train.json", [a, b, c]), task)
    dev_rec = copy.deepcopy(cci_record)
    dev_rec["id"] = "dev-1"
    dev = load_items(write(tmp_path / "dev.json", [dev_rec]), task)
    dup = duplicates(task, {"train": train, "dev": dev})
    assert dup["exact_duplicates"] == 2  # 'copy' and the dev item duplicate the first item
    assert dup["near_duplicates"] == 0
    assert dup["clusters"] == [{"size": 3, "kept": "t-cci-1", "members": ["copy", "dev-1"]}]
    assert dup["dialogues"] == {"train": 1, "dev": 1}
    assert dup["cross"] == [
        {
            "items_of": "dev",
            "matched_in": "train",
            "items": 1,
            "whole_dialogue": 1,
            "window_only": 0,
            "ids": ["dev-1"],
        }
    ]


def _texts(path):
    """Every utterance, option and summary of a data file (to prove none reach the report)."""
    out = []
    for rec in json.loads(path.read_text(encoding="utf-8")):
        inp = rec["input"]
        out += [str(u["utterance"]) for u in inp["conversation"]]
        out += [inp[k] for k in ("inference_1", "inference_2", "inference_3") if k in inp]
        if isinstance(rec.get("output"), str) and not rec["output"].startswith("inference_"):
            out.append(rec["output"])
    return [t for t in out if len(t) >= 6]


@pytest.mark.skipif(not (SAMPLES / "cci_train.json").exists(), reason="sample files not present")
def test_cci_report_on_samples(tiny_models, tmp_path):
    from malpyeong.models.backbones import get_backbone, load_tokenizer

    task = get_task("cci")
    files = {s: SAMPLES / f"cci_{s}.json" for s in ("train", "dev", "test")}
    splits = {s: load_items(p, task) for s, p in files.items()}
    path = str(tiny_models["gemma2"])
    backbone = get_backbone(path)
    figures = build_report(
        task,
        splits,
        tmp_path / "cci",
        tokenizer=load_tokenizer(path, backbone),
        backbone=backbone,
        tokenizer_name="tiny-gemma2",
        max_length=256,
    )
    out = tmp_path / "cci"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "anonymisation.png",
        "categories_gold.png",
        "dialogue_length.png",
        "duplicates.png",
        "gold_bias.png",
        "reference_position.png",
        "references_questions.png",
        "speakers_turns.png",
        "token_length.png",
        "utterance_length.png",
    ]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert all(f'src="{p}"' in page for p in pngs)
    assert figures["items"] == {s: len(v) for s, v in splits.items()}
    assert sum(figures["categories"].values()) == sum(len(v) for v in splits.values())
    assert sum(figures["gold_position"].values()) == len(splits["train"]) + len(splits["dev"])
    assert set(figures["prompts_over_max_length"]) == {"train", "dev", "test"}
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["key_figures"] == json.loads(json.dumps(figures))
    for text in sum((_texts(p) for p in files.values()), []):
        assert text not in page and text not in json.dumps(stats, ensure_ascii=False), text


@pytest.mark.skipif(not (SAMPLES / "dcs_train.json").exists(), reason="sample files not present")
def test_dcs_report_cli_on_samples(tmp_path):
    out = tmp_path / "dcs"
    files = [str(SAMPLES / f"dcs_{s}.json") for s in ("train", "dev", "test")]
    cmd = [
        sys.executable,
        str(ROOT / "eda" / "report.py"),
        "--task",
        "dcs",
        "--data",
        *files,
        "--out",
        str(out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MALPYEONG_LOG": "WARNING"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "anonymisation.png",
        "dialogue_length.png",
        "duplicates.png",
        "keywords.png",
        "output_length.png",
        "speakers_turns.png",
        "utterance_length.png",
    ]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "no token lengths" in page
    assert re.search(r"dcs_train \(\d+ items\)", page)
    for text in sum(
        (_texts(ROOT / "resource" / "data" / f"dcs_{s}.json") for s in ("train", "dev", "test")), []
    ):
        assert text not in page, text
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "--overwrite" in r.stderr and r.stderr.count("\n") == 1


def test_report_cli_bad_input(tmp_path):
    bad = write(tmp_path / "bad.json", [{"id": "x", "input": {}, "output": ""}])
    cmd = [
        sys.executable,
        str(ROOT / "eda" / "report.py"),
        "--task",
        "cci",
        "--data",
        str(bad),
        "--out",
        str(tmp_path / "o"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "bad.json: item x: field 'input.conversation'" in r.stderr


@pytest.mark.skipif(not (SAMPLES / "dcs_dev.json").exists(), reason="sample files not present")
def test_report_without_a_hangul_font_keeps_english_labels(monkeypatch, tmp_path):
    import malpyeong.eda as eda
    import malpyeong.eda.plots as plots

    monkeypatch.setattr(plots, "hangul_font", lambda: None)
    task = get_task("dcs")
    splits = {"dev": load_items(SAMPLES / "dcs_dev.json", task)}
    figures = build_report(task, splits, tmp_path / "r")
    assert (tmp_path / "r" / "keywords.png").exists()
    assert figures["items"] == {"dev": len(splits["dev"])}
    plotter = eda.Plotter(tmp_path / "p")
    assert plotter.font is None and plotter.korean("원인", "cause") == "cause"


@pytest.mark.skipif(not (SAMPLES / "dcs_dev.json").exists(), reason="sample files not present")
def test_token_report_cli_writes_token_lengths_only(tiny_models, tmp_path):
    from malpyeong.cli import run_cli
    from malpyeong.models.backbones import encode, get_backbone, load_tokenizer, render_chat

    report = load_script(ROOT / "eda" / "report.py")
    out = tmp_path / "tokens-gemma2"
    files = [str(SAMPLES / f"dcs_{s}.json") for s in ("dev", "test")]
    argv = [
        "--task",
        "dcs",
        "--data",
        *files,
        "--out",
        str(out),
        "--tokens_only",
        "--tokenizer",
        str(tiny_models["gemma2"]),
        "--max_length",
        "512",
    ]
    assert run_cli(report.main, argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "stats.json", "token_length.png"]
    figures = json.loads((out / "stats.json").read_text(encoding="utf-8"))["key_figures"]
    # the shares are those of the prompts as the model sees them
    task, path = get_task("dcs"), str(tiny_models["gemma2"])
    backbone = get_backbone(path)
    tok = load_tokenizer(path, backbone)
    lengths = [
        len(encode(tok, render_chat(tok, task.messages(it), backbone)))
        for f in files
        for it in load_items(f, task)
    ]
    for mark in ("1024", "2048", "4096"):
        assert figures["prompts_over"][mark] == round(sum(n > int(mark) for n in lengths) / len(lengths), 4)
    assert figures["items"] == {"dcs_dev": 8, "dcs_test": 8} and figures["max_length"] == 512
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Tokenizer: gemma2" in page and 'src="token_length.png"' in page
    for text in sum((_texts(Path(f)) for f in files), []):
        assert text not in page, text
    assert run_cli(report.main, argv[:-4] + ["--out", str(tmp_path / "x"), "--tokens_only"]) == 2
