"""Self-distillation (run/distill.py --self): candidates from the fine-tuned model, over-long and
repetitive ones dropped, the best against gold (or by MBR without gold) kept, and records the
trainer reads."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import ROOT, load_script
from test_training import write_json

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.ensemble.mbr import rouge1_similarity
from malpyeong.errors import UserError
from malpyeong.io import read_jsonl, resume_path
from malpyeong.prep.self_distill import (
    SelfDistillSettings,
    candidate_problem,
    generate_candidates,
    select_candidates,
)
from malpyeong.tasks import get_task
from malpyeong.training import sft_parser, train_sft

GOLD = "두 화자는 요리 취미에 대해 이야기했습니다."


def _records(dcs_record) -> list[dict]:
    with_gold = dict(copy.deepcopy(dcs_record), id="g", output=GOLD)
    without = dict(copy.deepcopy(dcs_record), id="n", output="")
    return [with_gold, without]


def test_candidate_problems():
    settings = SelfDistillSettings()
    assert candidate_problem("짧은 요약입니다.", 10, settings) is None
    assert candidate_problem("가" * 21, 10, settings) == "too_long"
    assert candidate_problem("요리 이야기 " * 6, 100, settings) == "repetitive"
    with pytest.raises(UserError, match="unknown value 'best'"):
        SelfDistillSettings(select="best")


def test_best_against_gold_else_mbr(dcs_record, tmp_path):
    task = get_task("dcs")
    items = load_items(write_json(tmp_path / "d.json", _records(dcs_record)), task)
    texts = {
        "g": [
            "두 화자는 여행에 대해 이야기했습니다.",  # on topic, worse against gold
            "두 화자는 요리 취미에 대해 길게 이야기했습니다.",  # best against gold
            GOLD + " " + "그리고 다른 이야기도 많이 했습니다." * 3,  # over-long
            "요리 요리 요리 요리 요리 요리 요리 요리",
        ],  # repetitive
        "n": [
            "화자들은 요리를 좋아한다.",
            "화자들은 요리를 정말 좋아한다.",
            "날씨가 맑다.",
            "화자들은 요리를 좋아한다고 말했다.",
        ],
    }
    spec = task.prompt_spec(None)
    records, report = select_candidates(
        task, items, texts, SelfDistillSettings(), rouge1_similarity, prompt=spec
    )
    by_id = {r["id"]: r for r in records}
    assert by_id["g"]["completion"] == texts["g"][1] and by_id["g"]["selected_by"] == "gold"
    assert by_id["n"]["selected_by"] == "mbr"
    assert by_id["n"]["completion"] in (texts["n"][0], texts["n"][1], texts["n"][3])
    assert report["candidates_dropped"] == {"too_long": 1, "repetitive": 1}
    assert report["selected_by"] == {"gold": 1, "mbr": 1} and report["n_kept"] == 2
    assert all(
        r["source"] == "self_distill" and r["prompt_messages"] == task.messages(it, spec)
        for r, it in zip(records, items, strict=True)
    )
    # --select mbr ignores gold; --select gold needs it everywhere
    records, _ = select_candidates(
        task, items, texts, SelfDistillSettings(select="mbr"), rouge1_similarity, prompt=spec
    )
    assert {r["selected_by"] for r in records} == {"mbr"}
    with pytest.raises(UserError, match="have no gold output"):
        select_candidates(
            task, items, texts, SelfDistillSettings(select="gold"), rouge1_similarity, prompt=spec
        )


def test_generate_candidates_resumes(dcs_record, tmp_path):
    task = get_task("dcs")
    items = load_items(write_json(tmp_path / "d.json", _records(dcs_record)), task)
    calls: list[tuple[list[str], int]] = []

    def generate(batch, k):
        calls.append(([it.id for it in batch], k))
        return [f"{it.id} 요약 {k}" for it in batch]

    rows: list[dict] = []
    texts = generate_candidates(items, generate, 2, on_row=rows.append)
    assert texts == {"g": ["g 요약 0", "g 요약 1"], "n": ["n 요약 0", "n 요약 1"]}
    assert calls == [(["g", "n"], 0), (["g", "n"], 1)]
    done = {r["key"]: r for r in rows[:3]}
    calls.clear()
    assert generate_candidates(items, generate, 2, done=done) == texts
    assert calls == [(["n"], 1)]


def test_self_distill_cli_writes_records_the_trainer_reads(tiny_llama, dcs_record, tmp_path, capsys):
    train = write_json(
        tmp_path / "train.json",
        _records(dcs_record)[:1] + [dict(copy.deepcopy(dcs_record), id=f"t{i}") for i in range(3)],
    )
    run = tmp_path / "runs" / "dcs_lora"
    common = [
        "--model",
        str(tiny_llama),
        "--task",
        "dcs",
        "--train_file",
        str(train),
        "--report_to",
        "none",
        "--gradient_checkpointing",
        "false",
        "--disable_tqdm",
        "true",
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "512",
    ]
    train_sft(*sft_parser().parse(common + ["--output_dir", str(run)]))

    cli = load_script(ROOT / "run" / "distill.py")
    out = tmp_path / "dcs_self.jsonl"
    argv = [
        "--teacher",
        str(run),
        "--self",
        "--task",
        "dcs",
        "--in",
        str(train),
        "--out",
        str(out),
        "--num_candidates",
        "3",
        "--max_new_tokens",
        "8",
        "--batch_size",
        "4",
        "--max_length",
        "512",
        "--no_progress",
    ]
    assert run_cli(cli.main, argv) == 0
    assert "items kept, 3 candidates each" in capsys.readouterr().out
    records = read_jsonl(out)
    report = json.loads(out.with_name(out.name + ".report.json").read_text(encoding="utf-8"))
    assert report["n_items"] == 4 and report["n_kept"] == len(records) >= 1
    assert set(report["selected_by"]) <= {"gold", "mbr", "single"}
    assert all(r["source"] == "self_distill" for r in records)
    raw = read_jsonl(resume_path(out))
    assert raw[0]["_meta"]["self"] is True and len(raw) == 1 + 4 * 3
    first = out.read_bytes()
    # everything is in the raw file: --overwrite rebuilds OUT without the model
    assert run_cli(cli.main, argv + ["--overwrite"]) == 0
    assert out.read_bytes() == first and read_jsonl(resume_path(out)) == raw

    # the next round trains on them
    second = tmp_path / "runs" / "dcs_round2"
    train_sft(*sft_parser().parse(common + ["--output_dir", str(second), "--extra_train_files", str(out)]))
    stats = json.loads((second / "data_stats.json").read_text(encoding="utf-8"))
    assert stats["extra"]["examples"] == len(records), stats["extra"]

    # --self is for generate tasks
    capsys.readouterr()
    assert (
        run_cli(
            cli.main,
            [
                "--teacher",
                str(run),
                "--self",
                "--task",
                "cci",
                "--in",
                str(ROOT / "resource" / "data" / "cci_train.json"),
                "--out",
                str(tmp_path / "c.jsonl"),
            ],
        )
        == 2
    )
    assert "--self is for generate tasks" in capsys.readouterr().err
