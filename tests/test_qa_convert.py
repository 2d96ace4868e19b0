"""Converters into qa: flat rows (JSON, JSONL, CSV) and QMSum meetings (our own small file, and
the real validation split when it is present)."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import ROOT, load_script

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.tasks import get_task

# beside the checkout (CI, the main checkout) or beside its parent folder (a worktree in wt/)
QMSUM = next(
    (
        p
        for p in (
            ROOT.parent / "shared" / "data" / "qmsum" / "val.jsonl",
            ROOT.parents[1] / "shared" / "data" / "qmsum" / "val.jsonl",
        )
        if p.is_file()
    ),
    ROOT.parent / "shared" / "data" / "qmsum" / "val.jsonl",
)
QA = get_task("qa")
ROWS = [
    {
        "id": "r1",
        "context": "가게는 아홉 시에 연다.",
        "question": "몇 시에 여나요?",
        "answer": "아홉 시",
        "cot_answer": "첫 문장에 쓰여 있다.",
    },
    {"context": "점심은 열두 시다.", "question": "점심은 언제인가요?", "answer": "열두 시", "cot_answer": ""},
    {"context": ["첫 문단.", "둘째 문단."], "question": "문단은 몇 개인가요?", "answer": ""},
]


def convert(capsys, *args) -> tuple[int, str, str]:
    code = run_cli(load_script("run/convert.py").main, [str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("layout", ["json", "jsonl", "csv"])
def test_flat_rows_become_qa_items(layout, tmp_path, capsys):
    src = tmp_path / f"flat.{layout}"
    if layout == "json":
        src.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    elif layout == "jsonl":
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    else:
        with open(src, "w", encoding="utf-8-sig", newline="") as fh:
            writer = csv.DictWriter(fh, ["id", "context", "question", "answer", "cot_answer"])
            writer.writeheader()
            for r in ROWS:
                writer.writerow(
                    {
                        **r,
                        "context": "\n\n".join(r["context"])
                        if isinstance(r["context"], list)
                        else r["context"],
                    }
                )
    out = tmp_path / "qa.json"
    code, shown, err = convert(capsys, "--from", "flat", "--to", "qa", "--in", src, "--out", out)
    assert code == 0, err
    assert "3 qa items (2 with an answer, 1 of them with a rationale; 1 without an answer" in shown
    items = load_items(out, QA)
    assert [it.id for it in items][0] == "r1" and items[1].id == "flat-00001"
    assert QA.reference(items[0]) == {"answer": "아홉 시", "rationale": "첫 문장에 쓰여 있다."}
    assert QA.reference(items[1]) == {"answer": "열두 시"}
    assert items[2].context == "첫 문단.\n\n둘째 문단." and not QA.has_output(items[2])


def test_flat_problems_are_all_reported(tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text(
        json.dumps({"context": "", "question": "q?"})
        + "\n"
        + json.dumps({"context": "c", "question": "q", "cot_answer": "why"})
        + "\n",
        encoding="utf-8",
    )
    code, _, err = convert(capsys, "--from", "flat", "--to", "qa", "--in", src, "--out", tmp_path / "o.json")
    assert code == 2
    assert err.splitlines() == [
        f"error: {src}: item row 1: field 'context': empty",
        f"error: {src}: item row 2: field 'answer': empty, but the row has a cot_answer",
    ]
    csv_src = tmp_path / "bad.csv"
    csv_src.write_text("context,answer\nx,y\n", encoding="utf-8")
    code, _, err = convert(capsys, "--from", "flat", "--in", csv_src, "--out", tmp_path / "o.json")
    assert code == 2 and "no column 'question'" in err


def meeting(turns: list[tuple[str, str]], queries: list[tuple[str, str, list]]) -> dict:
    return {
        "topic_list": [{"topic": "plan", "relevant_text_span": [["0", str(len(turns) - 1)]]}],
        "general_query_list": [{"query": "Summarise.", "answer": "They planned."}],
        "specific_query_list": [{"query": q, "answer": a, "relevant_text_span": s} for q, a, s in queries],
        "meeting_transcripts": [{"speaker": s, "content": c} for s, c in turns],
    }


def test_qmsum_queries_become_items_with_span_rationales(tmp_path, capsys):
    src = tmp_path / "dev.jsonl"
    turns = [
        ("Ann", "Let us start {vocalsound} with the budget."),
        ("Bo", "{disfmarker}"),
        ("Bo", "The budget is ten thousand."),
        ("Cy", "And the colour should be blue."),
    ]
    lines = [
        meeting(
            turns,
            [
                ("What was the budget?", "Ten thousand.", [["2", "2"]]),
                ("Which colour?", "Blue.", [["3", "3"], ["0", "0"]]),
            ],
        )
    ]
    src.write_text("".join(json.dumps(m) + "\n" for m in lines), encoding="utf-8")
    out = tmp_path / "qa.json"
    code, shown, err = convert(capsys, "--from", "qmsum", "--to", "qa", "--in", src, "--out", out)
    assert code == 0, err
    assert "2 qa items from 1 meetings (2 with a rationale; 1 general queries not converted)" in shown
    assert "2 transcription marks removed" in shown
    items = load_items(out, QA)
    assert items[0].id == "qmsum-dev-m001-q01"
    assert items[0].context == (
        "Ann: Let us start with the budget.\nBo: The budget is ten thousand.\n"
        "Cy: And the colour should be blue."
    )
    assert items[0].rationale == "Bo: The budget is ten thousand."
    assert items[1].rationale == "Ann: Let us start with the budget.\nCy: And the colour should be blue."
    report = json.loads((tmp_path / "qa.json.report.json").read_text(encoding="utf-8"))
    assert report["items"] == 2 and report["marks_removed"] == 2


@pytest.mark.skipif(not QMSUM.is_file(), reason="the real QMSum file is not present")
def test_real_qmsum_validation_converts_and_validates(tmp_path, capsys):
    out = tmp_path / "qmsum_qa.json"
    code, shown, err = convert(capsys, "--from", "qmsum", "--to", "qa", "--in", QMSUM, "--out", out)
    assert code == 0, err
    items = load_items(out, QA, require_output=True)
    assert len(items) == 237 and all(it.rationale for it in items)
    assert "237 qa items from 35 meetings" in shown
