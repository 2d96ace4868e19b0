"""Teacher distillation: gold-consistent CCI rationales only, DCS summaries cleaned, resume from
the raw file, and run/distill.py end to end on a tiny teacher."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import ROOT, load_script

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.io import open_resume, read_jsonl, resume_path
from malpyeong.prep.distill import (
    build_records,
    distill,
    student_prompt,
)
from malpyeong.tasks import get_task


def cci_items(cci_record, tmp_path, labels=(0, 1, 2)):
    rows = []
    for i, label in enumerate(labels):
        r = copy.deepcopy(cci_record)
        r["id"] = f"c{i}"
        r["output"] = f"inference_{label + 1}"
        rows.append(r)
    path = tmp_path / "cci.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path, load_items(path, get_task("cci"), require_output=True)


def test_rationale_and_student_prompt():
    cci, dcs = get_task("cci"), get_task("dcs")
    assert (
        cci.rationale_of("대화에서 화자2가 산책을 제안했다.\n정답: A") == "대화에서 화자2가 산책을 제안했다."
    )
    assert cci.rationale_of("정답: B") == ""
    assert cci.rationale_of("이유만 있다") == "이유만 있다"
    assert str(student_prompt(cci, None)) == "cot"
    assert str(student_prompt(cci, "highlight")) == "cot+highlight"
    assert str(student_prompt(cci, "cot+definitions")) == "cot+definitions"
    assert str(student_prompt(dcs, None)) == "baseline"
    assert str(student_prompt(dcs, "persona")) == "persona"


def test_cci_keeps_only_gold_consistent_rationales(cci_record, tmp_path):
    task = get_task("cci")
    _, items = cci_items(cci_record, tmp_path, labels=(0, 1, 2, 0, 0))
    answers = {
        "c0": "화자2는 맑은 날씨에 산책을 제안했다.\n정답: A",  # right
        "c1": "화자2는 날씨를 즐기려 한다.\n정답: A",  # wrong (gold B)
        "c2": "근거는 세 번째 선택지이다. 정답: C",  # right, same line
        "c3": "정답: A",  # right but no rationale
        "c4": "잘 모르겠다.",
    }  # no answer
    seen: list[list[str]] = []

    def teacher(batch):
        seen.append([it.id for it in batch])
        return [answers[it.id] for it in batch]

    records, report = distill(task, items, teacher, chunk_size=2, show_progress=False)
    assert [r["id"] for r in records] == ["c0", "c2"]
    assert records[0] == {
        "id": "c0",
        "prompt_messages": task.messages(items[0], task.prompt_spec("cot")),
        "completion": "화자2는 맑은 날씨에 산책을 제안했다.\n정답: A",
        "source": "distill",
        "task": "cci",
    }
    assert records[1]["completion"] == "근거는 세 번째 선택지이다.\n정답: C"
    assert records[1]["completion"] == task.target(items[2], rationale="근거는 세 번째 선택지이다.")
    assert report["dropped"] == {"wrong_answer": 1, "no_rationale": 1, "no_answer": 1}
    assert report["dropped_ids"] == {"c1": "wrong_answer", "c3": "no_rationale", "c4": "no_answer"}
    assert report["teacher_accuracy"] == pytest.approx(3 / 5)
    assert sorted(sum(seen, [])) == ["c0", "c1", "c2", "c3", "c4"]
    assert all(len(b) <= 2 for b in seen)
    # the prompt the student sees is the teacher's (cot), with any extra flags kept
    records, _ = build_records(task, items, answers, prompt="highlight")
    assert records[0]["prompt_messages"] == task.messages(items[0], task.prompt_spec("cot+highlight"))


def test_cci_needs_gold(cci_record):
    task = get_task("cci")
    rec = dict(cci_record, output="")
    problems: list = []
    item = task.parse_item(rec, problems)
    with pytest.raises(UserError, match="no gold answer"):
        distill(task, [item], lambda b: ["정답: A"] * len(b), show_progress=False)


def test_dcs_summaries_are_cleaned(dcs_record, tmp_path):
    task = get_task("dcs")
    path = tmp_path / "dcs.json"
    second = dict(copy.deepcopy(dcs_record), id="d2")
    path.write_text(json.dumps([dcs_record, second], ensure_ascii=False), encoding="utf-8")
    items = load_items(path, get_task("dcs"))
    texts = {"t-dcs-1": "요약: 두 화자는 요리에 대해 이야기했습니다.<end_of_turn>", "d2": "<eos>"}
    records, report = distill(task, items, lambda b: [texts[it.id] for it in b], show_progress=False)
    assert records == [
        {
            "id": "t-dcs-1",
            "prompt_messages": task.messages(items[0]),
            "completion": "두 화자는 요리에 대해 이야기했습니다.",
            "source": "distill",
            "task": "dcs",
        }
    ]
    assert report["dropped"] == {"unusable": 1} and "teacher_accuracy" not in report


def test_resume_from_raw_file(cci_record, tmp_path):
    task = get_task("cci")
    _, items = cci_items(cci_record, tmp_path, labels=(0, 1, 2, 1))
    letters = "ABC"

    def teacher(batch):
        return [f"{it.id}의 근거.\n정답: {letters[it.label]}" for it in batch]

    meta = {"teacher": "stub", "task": "cci"}
    raw = resume_path(tmp_path / "out.jsonl")
    assert raw.name == "out.jsonl.raw.jsonl"
    done, app = open_resume(raw, meta, "id")
    calls = []

    def failing(batch):
        if calls:
            raise KeyboardInterrupt
        calls.append(batch)
        return teacher(batch)

    with app, pytest.raises(KeyboardInterrupt):
        distill(task, items, failing, done=done, on_row=app.write, chunk_size=2, show_progress=False)
    assert len(read_jsonl(raw)) == 3  # header + one chunk
    done, app = open_resume(raw, meta, "id")
    assert len(done) == 2
    asked: list[str] = []

    def counting(batch):
        asked.extend(it.id for it in batch)
        return teacher(batch)

    with app:
        records, report = distill(
            task, items, counting, done=done, on_row=app.write, chunk_size=2, show_progress=False
        )
    assert sorted(asked) == sorted(set(it.id for it in items) - set(done))
    full, _ = distill(task, items, teacher, show_progress=False)
    assert records == full and report["n_kept"] == 4
    # another teacher's outputs are never mixed in
    with pytest.raises(UserError, match="teacher was 'stub', now 'other'"):
        open_resume(raw, {"teacher": "other", "task": "cci"}, "id")


# ---------------------------------------------------------------------------------------------
# run/distill.py end to end


def _call(capsys, *args: str) -> SimpleNamespace:
    """run/distill.py's main in this process (the model loads without a new interpreter)."""
    module = load_script(ROOT / "run" / "distill.py")
    capsys.readouterr()
    code = run_cli(module.main, list(args))
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def _run(*args: str) -> subprocess.CompletedProcess:
    # this checkout's package first, as conftest does for the tests themselves
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MALPYEONG_LOG": "WARNING", "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, str(ROOT / "run" / "distill.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_distill_cli_end_to_end(tiny_llama, cci_record, dcs_record, tmp_path, capsys):
    dcs_path = tmp_path / "dcs.json"
    dcs_path.write_text(
        json.dumps([dcs_record, dict(copy.deepcopy(dcs_record), id="d2")], ensure_ascii=False),
        encoding="utf-8",
    )
    out = tmp_path / "dcs_distill.jsonl"
    common = [
        "--teacher",
        str(tiny_llama),
        "--task",
        "dcs",
        "--in",
        str(dcs_path),
        "--out",
        str(out),
        "--max_new_tokens",
        "8",
        "--batch_size",
        "2",
        "--no_progress",
    ]
    r = _run(*common)
    assert r.returncode == 0, r.stderr
    task = get_task("dcs")
    items = {it.id: it for it in load_items(dcs_path, get_task("dcs"))}
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    report = json.loads(out.with_name(out.name + ".report.json").read_text(encoding="utf-8"))
    assert report["n_items"] == 2 and report["n_kept"] == len(records) >= 1
    assert report["n_kept"] + sum(report["dropped"].values()) == 2
    for rec in records:
        assert rec["source"] == "distill" and rec["task"] == "dcs"
        assert rec["prompt_messages"] == task.messages(items[rec["id"]])
        assert isinstance(rec["completion"], str) and rec["completion"].strip()
    raw_rows = read_jsonl(resume_path(out))
    assert len(raw_rows) == 3 and raw_rows[0]["_meta"]["teacher"] == str(tiny_llama)
    first = out.read_bytes()

    r = _run(*common)  # no --overwrite: refused, one line
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--overwrite" in r.stderr
    r = _call(capsys, *common, "--overwrite")  # everything is in the raw file: nothing appended
    assert r.returncode == 0, r.stderr
    assert read_jsonl(resume_path(out)) == raw_rows and out.read_bytes() == first

    # CCI: the tiny teacher cannot answer, so nothing is kept, but every item was asked
    cci_path, _ = cci_items(cci_record, tmp_path, labels=(0, 2))
    out = tmp_path / "cci_distill.jsonl"
    r = _call(
        capsys,
        "--teacher",
        str(tiny_llama),
        "--task",
        "cci",
        "--in",
        str(cci_path),
        "--out",
        str(out),
        "--max_new_tokens",
        "6",
        "--no_progress",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(out.with_name(out.name + ".report.json").read_text(encoding="utf-8"))
    assert report["n_items"] == 2 and report["prompt"] == "cot"
    assert report["n_kept"] + sum(report["dropped"].values()) == 2
    assert len(read_jsonl(resume_path(out))) == 3
    assert len(out.read_text(encoding="utf-8").splitlines()) == report["n_kept"]


def test_distill_cli_bad_input(cci_record, tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps([dict(cci_record, output="")], ensure_ascii=False), encoding="utf-8")
    r = _run(
        "--teacher",
        "nobody/none",
        "--task",
        "cci",
        "--in",
        str(path),
        "--out",
        str(tmp_path / "o.jsonl"),
    )
    assert r.returncode == 2 and "needs gold outputs" in r.stderr
    assert r.stderr.count("\n") == 1
    r = _run(
        "--teacher",
        "x",
        "--task",
        "cci",
        "--in",
        str(path),
        "--out",
        str(tmp_path / "o"),
        "--prompt",
        "cott",
    )
    assert r.returncode == 2 and "unknown prompt variant 'cott'" in r.stderr
