"""ORPO: pair building (CCI, DCS), the pairs file, and preference training on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, load_script
from test_training import build_synthetic_model, make_synthetic_cci, write_json

from malpyeong.data import load_items, write_submission
from malpyeong.errors import UserError
from malpyeong.models.backbones import get_backbone, load_tokenizer
from malpyeong.tasks import get_task
from malpyeong.training import (
    build_orpo_rows,
    orpo_parser,
    pair_margins,
    sft_parser,
    train_orpo,
    train_sft,
)
from malpyeong.training.pairs import build_pairs, read_pairs, write_pairs


def test_cci_pairs_two_per_item_in_the_sft_style(cci_record, tmp_path):
    task = get_task("cci")
    items = load_items(write_json(tmp_path / "c.json", [cci_record]), task)
    pairs = build_pairs(task, items)
    gold = "A. 화자2는 맑은 날씨를 즐기고 싶어 한다."
    assert [(p["id"], p["chosen"], p["rejected"], p["rejected_from"]) for p in pairs] == [
        ("t-cci-1#B", gold, "B. 화자2는 비 오는 날을 좋아한다.", "option:B"),
        ("t-cci-1#C", gold, "C. 화자2는 우산을 사고 싶어 한다.", "option:C"),
    ]
    assert all(p["record"] == cci_record and p["target_style"] == "letter_text" for p in pairs)
    letters = build_pairs(task, items, target_style="letter")
    assert [(p["chosen"], p["rejected"]) for p in letters] == [("A", "B"), ("A", "C")]
    with pytest.raises(UserError, match="generate tasks"):
        build_pairs(task, items, results="x.json")


def _dcs(i: int, keywords: list[str], summary: str) -> dict:
    return {
        "id": f"d{i}",
        "input": {
            "conversation": [
                {"speaker": "SD1", "utterance": f"대화 {i} 첫 발화"},
                {"speaker": "SD2", "utterance": "응답"},
            ],
            "subject_keyword": keywords,
        },
        "output": summary,
    }


def test_dcs_pairs_use_model_outputs_then_dialogues_sharing_keywords(tmp_path):
    task = get_task("dcs")
    records = [
        _dcs(1, ["요리", "취미"], "요리 요약"),
        _dcs(2, ["요리", "가족"], "가족 요리 요약"),
        _dcs(3, ["여행"], "여행 요약"),
        _dcs(4, ["취미", "요리"], "취미 요리 요약"),
    ]
    items = load_items(write_json(tmp_path / "d.json", records), task)
    results = tmp_path / "results" / "sft.json"
    write_submission(items, {"d1": "모델이 쓴 요약", "d2": "가족 요리 요약", "d3": "", "d4": "x"}, results)
    pairs = {p["source_id"]: p for p in build_pairs(task, items, results=results)}
    assert pairs["d1"]["rejected"] == "모델이 쓴 요약"
    assert pairs["d1"]["rejected_from"] == "results:sft"
    # d2's output equals its gold summary, d3 has none: fall back to other dialogues
    assert pairs["d2"]["rejected_from"] in ("other:d1", "other:d4")  # two shared keywords win
    assert pairs["d3"]["rejected_from"].startswith("other:")
    assert pairs["d4"]["rejected"] == "x"
    plain = {p["source_id"]: p for p in build_pairs(task, items)}
    assert plain["d1"]["rejected_from"] == "other:d4" and plain["d4"]["rejected_from"] == "other:d1"
    assert plain == {p["source_id"]: p for p in build_pairs(task, items)}  # stable
    assert all(p["chosen"] != p["rejected"] for p in plain.values())


def test_pairs_file_round_trip_and_errors(cci_record, tmp_path):
    task = get_task("cci")
    pairs = build_pairs(task, load_items(write_json(tmp_path / "c.json", [cci_record]), task))
    path = write_pairs(pairs, tmp_path / "p.jsonl")
    assert read_pairs(path) == pairs
    with pytest.raises(UserError, match="output exists"):
        write_pairs(pairs, path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "chosen": "A"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1 lacks source_id, task, record, rejected"):
        read_pairs(bad)
    mixed = [dict(pairs[0]), dict(pairs[1], task="dcs")]
    with pytest.raises(UserError, match="several tasks"):
        read_pairs(write_pairs(mixed, tmp_path / "m.jsonl"))
    with pytest.raises(UserError, match="file not found"):
        read_pairs(tmp_path / "none.jsonl")
    # one checked JSONL reader (io.read_jsonl_file) for pairs and unpaired examples: a file
    # written by hand keeps its last row without a final newline, a bad line is named
    lines = [json.dumps(p, ensure_ascii=False) for p in pairs]
    (tmp_path / "hand.jsonl").write_text("\n".join(lines), encoding="utf-8")
    assert read_pairs(tmp_path / "hand.jsonl") == pairs
    (tmp_path / "torn.jsonl").write_text(lines[0] + "\n" + lines[1][:20], encoding="utf-8")
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        read_pairs(tmp_path / "torn.jsonl")
    (tmp_path / "list.jsonl").write_text(lines[0] + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 2 lacks id, source_id, task, record, chosen, rejected"):
        read_pairs(tmp_path / "list.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="no pairs in the file"):
        read_pairs(tmp_path / "empty.jsonl")


def test_build_pairs_cli(tmp_path, capsys):
    from malpyeong.cli import run_cli

    cli = load_script(ROOT / "orpo" / "build_pairs.py")
    out = tmp_path / "pairs.jsonl"
    data = ROOT / "resource" / "data" / "cci_train.json"
    assert run_cli(cli.main, ["--task", "cci", "--data", str(data), "--out", str(out)]) == 0
    n_items = len(json.loads(data.read_text(encoding="utf-8")))
    assert len(read_pairs(out)) == 2 * n_items
    assert f"{2 * n_items} pairs from {n_items} cci items" in capsys.readouterr().out
    assert run_cli(cli.main, ["--task", "cci", "--data", str(data), "--out", str(out)]) == 2
    assert "output exists" in capsys.readouterr().err


def test_orpo_rows_render_per_model_and_end_once(tiny_models, cci_record, tmp_path):
    task = get_task("cci")
    pairs = build_pairs(task, load_items(write_json(tmp_path / "c.json", [cci_record]), task))
    path = str(tiny_models["gemma2"])
    tok = load_tokenizer(path)
    rows, stats = build_orpo_rows(pairs, task, tok, get_backbone(path), task.prompt_spec("highlight"), 1024)
    assert stats.items == 1 and stats.examples == 2
    assert rows[0]["chosen"] == "A. 화자2는 맑은 날씨를 즐기고 싶어 한다.<end_of_turn>"
    assert rows[0]["prompt"].endswith("<start_of_turn>model\n")
    assert "<start_of_turn>system" not in rows[0]["prompt"]


def test_orpo_continues_an_sft_adapter(tiny_llama, tmp_path):
    import torch
    from safetensors.torch import load_file

    train = write_json(tmp_path / "train.json", make_synthetic_cci(12, 8, "o"))
    common = [
        "--model",
        str(tiny_llama),
        "--report_to",
        "none",
        "--gradient_checkpointing",
        "false",
        "--disable_tqdm",
        "true",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--max_length",
        "512",
    ]
    sft = tmp_path / "sft"
    train_sft(*sft_parser().parse(common + ["--train_file", str(train), "--output_dir", str(sft)]))
    pairs = write_pairs(
        build_pairs(get_task("cci"), load_items(train, get_task("cci"))), tmp_path / "p.jsonl"
    )
    out = tmp_path / "orpo"
    train_orpo(
        *orpo_parser().parse(
            common
            + [
                "--pairs",
                str(pairs),
                "--sft_adapter",
                str(sft),
                "--output_dir",
                str(out),
                "--learning_rate",
                "1e-3",
            ]
        )
    )
    info = json.loads((out / "malpyeong_run.json").read_text())
    assert (info["stage"], info["task"], info["target_style"]) == ("orpo", "cci", "letter_text")
    before = load_file(sft / "adapter" / "adapter_model.safetensors")
    after = load_file(out / "adapter" / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert (saved["sft_adapter"], saved["beta"], saved["model"]) == (
        str(sft / "adapter"),
        0.1,
        str(tiny_llama),
    )


def test_orpo_raises_the_heldout_margin(tmp_path):
    """Preference training raises held-out log p(chosen) - log p(rejected), from a random model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train, dev = make_synthetic_cci(600, 11, "t"), make_synthetic_cci(40, 12, "d")
    path = build_synthetic_model(tmp_path / "model", train)
    task = get_task("cci")
    pairs = write_pairs(
        build_pairs(task, load_items(write_json(tmp_path / "t.json", train), task)), tmp_path / "pairs.jsonl"
    )
    dev_file = write_json(tmp_path / "dev.json", dev)
    out = tmp_path / "orpo"
    train_orpo(
        *orpo_parser().parse(
            [
                "--model",
                str(path),
                "--pairs",
                str(pairs),
                "--dev_file",
                str(dev_file),
                "--output_dir",
                str(out),
                "--report_to",
                "none",
                "--gradient_checkpointing",
                "false",
                "--disable_tqdm",
                "true",
                "--max_length",
                "512",
                "--learning_rate",
                "3e-3",
                "--beta",
                "0.5",
                "--max_steps",
                "60",
                "--per_device_train_batch_size",
                "8",
                "--warmup_steps",
                "0.05",
                "--eval_strategy",
                "steps",
                "--eval_steps",
                "30",
                "--save_strategy",
                "steps",
                "--save_steps",
                "30",
                "--lora_dropout",
                "0",
                "--lora_target_modules",
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
                "embed_tokens",
            ]
        )
    )
    margin = json.loads((out / "dev_metrics.json").read_text())["heldout_margin"]
    assert margin["pairs"] == 64 and margin["after"] > margin["before"] + 1.0, margin
    # the saved adapter reproduces the gain
    tok = load_tokenizer(str(path))
    dev_pairs = build_pairs(task, load_items(dev_file, task))
    rows, _ = build_orpo_rows(dev_pairs, task, tok, get_backbone(str(path)), task.prompt_spec(None), 512)
    base = AutoModelForCausalLM.from_pretrained(path)
    before = sum(pair_margins(base, tok, rows)) / len(rows)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), out / "adapter")
    after = sum(pair_margins(tuned, tok, rows)) / len(rows)
    assert after > before + 1.0, (before, after)
    assert Path(out / "malpyeong_run.json").is_file()
