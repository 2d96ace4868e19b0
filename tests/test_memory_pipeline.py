"""The memory task end to end on CPU with a tiny Qwen2: LoRA training on converted data, then
predict (constrained and free) -> evaluate printing every metric -> field-wise vote, teacher
labels through run/distill.py, and a published model's exact system prompt."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, SAMPLES, load_script
from test_memory_convert import DIALOGSUM

from malpyeong.cli import run_cli
from malpyeong.data import check_submission, load_items
from malpyeong.inference.results import read_results
from malpyeong.io import read_jsonl
from malpyeong.tasks import get_task
from malpyeong.tasks import memory as memory_module

pytestmark = pytest.mark.slow


@pytest.fixture
def small_bounds(monkeypatch):
    """Short decoding bounds: a random model's strings run to the bound."""
    for name, value in (
        ("MAX_TOPIC_CHARS", 12),
        ("MAX_SUMMARY_CHARS", 24),
        ("MAX_FACTS", 2),
        ("MAX_FACT_CHARS", 16),
        ("MAX_REFS", 1),
        ("MAX_REF_CHARS", 8),
    ):
        monkeypatch.setattr(memory_module, name, value)


def call(script: str, *args, capsys) -> str:
    code = run_cli(load_script(script).main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def dialogsum_file(path, n: int):
    """Hand-made DialogSum-shaped records (ours), varied so they differ."""
    rows = []
    for i in range(n):
        rows.append(
            {
                **DIALOGSUM,
                "fname": f"ds_{i}",
                "topic": ("theater", "travel", "food")[i % 3],
                "dialogue": DIALOGSUM["dialogue"] + f"\n#Person2#: Row {i}, seat {i + 3}.",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_train_predict_evaluate_vote(tiny_models, tmp_path, capsys, small_bounds):
    qwen2 = tiny_models["qwen2"]
    converted = tmp_path / "memory.json"
    call(
        "run/convert.py",
        "--from",
        "dialogsum",
        "--to",
        "memory",
        "--in",
        dialogsum_file(tmp_path / "ds.jsonl", 6),
        "--out",
        converted,
        capsys=capsys,
    )
    runs = []
    for seed in (1, 2):
        out = tmp_path / f"run{seed}"
        call(
            "run/train.py",
            "--config",
            ROOT / "resource/configs/memory/tiny_lora.yaml",
            "--model",
            qwen2,
            "--train_file",
            converted,
            "--dev_file",
            SAMPLES / "memory_dev.jsonl",
            "--output_dir",
            out,
            "--max_steps",
            "2",
            "--seed",
            seed,
            "--report_to",
            "none",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--eval_max_new_tokens",
            "200",
            capsys=capsys,
        )
        metrics = json.loads((out / "dev_metrics.json").read_text(encoding="utf-8"))
        assert metrics["metric"] == "summary_rouge1"
        assert metrics["best_report"]["turn_count_acc_delivered"] == 1.0
        runs.append(out)
    dev, test = SAMPLES / "memory_dev.jsonl", SAMPLES / "memory_test.jsonl"
    for run in runs:
        for data, split in ((dev, "dev"), (test, "test")):
            call(
                "run/test.py",
                "--model",
                run,
                "--task",
                "memory",
                "--input",
                data,
                "--output",
                tmp_path / split / f"{run.name}.json",
                "--max_new_tokens",
                "200",
                "--no_progress",
                capsys=capsys,
            )
    shown = call(
        "run/evaluate.py",
        "--task",
        "memory",
        "--gold",
        dev,
        "--pred",
        tmp_path / "dev" / "run1.json",
        capsys=capsys,
    )
    lines = dict(
        line.split(None, 1)
        for line in shown.splitlines()[1:]
        if line[:1].isalpha() and not line.startswith(("facts:", "note:", "repairs:"))
    )
    for metric in get_task("memory").metrics:
        assert metric.name in lines, metric.name
    assert lines["schema_valid_raw"] == "1.0000" and lines["json_valid_raw"] == "1.0000"
    assert lines["turn_count_acc_delivered"] == "1.0000" and lines["unrepairable"] == "0"
    assert lines["summary_bertscore"] == "not computed"

    call(
        "run/test.py",
        "--model",
        runs[0],
        "--task",
        "memory",
        "--input",
        dev,
        "--output",
        tmp_path / "free.json",
        "--max_new_tokens",
        "12",
        "--no_constrain",
        "--no_progress",
        capsys=capsys,
    )
    report = json.loads(
        call(
            "run/evaluate.py",
            "--task",
            "memory",
            "--gold",
            dev,
            "--pred",
            tmp_path / "free.json",
            "--json",
            capsys=capsys,
        )
    )
    assert report["turn_count_acc_delivered"] == 1.0  # exact, even from the fallback
    assert report["unrepairable"] == 5 and report["schema_valid_raw"] == 0.0

    submission = tmp_path / "submission.json"
    shown = call(
        "ensemble/vote.py",
        tmp_path / "test" / "run1.json",
        tmp_path / "test" / "run2.json",
        "--output",
        submission,
        "--test",
        test,
        capsys=capsys,
    )
    assert "memory: 3 outputs combined field by field from 2 models" in shown
    assert check_submission(submission, test, get_task("memory")) == 3
    voted = {r["id"]: r["output"] for r in json.loads(submission.read_text(encoding="utf-8"))}
    items = {it.id: it for it in load_items(test, get_task("memory"))}
    assert all(v["memory_state"]["turn_count"] == items[i].turn_count for i, v in voted.items())


def test_published_model_prompt_and_teacher_labels(tiny_models, tmp_path, capsys, small_bounds):
    qwen2 = tiny_models["qwen2"]
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are MemoryBot. Reply with the memory JSON.\n", encoding="utf-8")
    dev = SAMPLES / "memory_dev.jsonl"
    out = tmp_path / "published.json"
    call(
        "run/test.py",
        "--model",
        qwen2,
        "--task",
        "memory",
        "--input",
        dev,
        "--output",
        out,
        "--max_new_tokens",
        "200",
        "--system_prompt_file",
        prompt,
        "--no_progress",
        capsys=capsys,
    )
    meta = read_jsonl(out.with_name("published.sidecar.jsonl"))[0]["_meta"]
    assert meta["system_prompt"] == "You are MemoryBot. Reply with the memory JSON."
    assert meta["constrain"] is True
    assert len(read_results(out).outputs) == 5

    labels = tmp_path / "teacher.jsonl"
    call(
        "run/distill.py",
        "--teacher",
        qwen2,
        "--task",
        "memory",
        "--in",
        SAMPLES / "memory_train.jsonl",
        "--out",
        labels,
        "--max_new_tokens",
        "200",
        "--max_length",
        "1024",
        "--no_progress",
        capsys=capsys,
    )
    records = read_jsonl(labels)
    task = get_task("memory")
    items = {it.id: it for it in load_items(SAMPLES / "memory_train.jsonl", task)}
    assert len(records) == 8  # constrained: every teacher output validates
    for rec in records:
        value = json.loads(rec["completion"])
        assert task.check_output(value) is None
        assert value["memory_state"]["turn_count"] == items[rec["id"]].turn_count
