"""The DialogSum and QMSum converters to memory items: golden outputs for hand-made records
shaped like each dataset, the unresolved-reference rule, errors, and the real files when
present (../shared/data; skipped without them)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, load_script

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.prep.converters.memory_labels import sentences, unresolved_refs
from malpyeong.tasks import get_task

DATA = next(
    (d for d in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if d.is_dir()),
    ROOT.parent / "shared" / "data",
)


def convert(tmp_path, capsys, *args) -> tuple[list[dict], str, dict]:
    out = tmp_path / "memory.json"
    code = run_cli(load_script("run/convert.py").main, [*map(str, args), "--out", str(out), "--overwrite"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((tmp_path / "memory.json.report.json").read_text(encoding="utf-8"))
    return json.loads(out.read_text(encoding="utf-8")), captured.out, report


def conv(*pairs):
    return [{"speaker": s, "utterance": u} for s, u in pairs]


def state(facts, refs, topic, turns, summary):
    return {
        "memory_state": {"key_facts": facts, "unresolved_refs": refs, "topic": topic, "turn_count": turns},
        "memory_summary": summary,
    }


DIALOGSUM = {
    "fname": "ds_1",
    "topic": "theater",
    "dialogue": "#Person1#: Did you bring the tickets for tonight?\n"
    "#Person2#: Yes, two seats in row F.\nthe show starts at eight.\n"
    "#Person1#: Great. Can you also grab that blanket?",
    "summary": "#Person2# has two tickets in row F for tonight. The show starts at eight!",
}


def test_dialogsum_golden(tmp_path, capsys):
    src = tmp_path / "dialogsum.jsonl"
    src.write_text(json.dumps(DIALOGSUM) + "\n", encoding="utf-8")
    records, shown, report = convert(tmp_path, capsys, "--from", "dialogsum", "--to", "memory", "--in", src)
    assert records == [
        {
            "id": "ds_1",
            "input": {
                "conversation": conv(
                    ("#Person1#", "Did you bring the tickets for tonight?"),
                    ("#Person2#", "Yes, two seats in row F. the show starts at eight."),
                    ("#Person1#", "Great. Can you also grab that blanket?"),
                )
            },
            "output": state(
                ["#Person2# has two tickets in row F for tonight.", "The show starts at eight!"],
                ["that blanket"],
                "theater",
                3,
                "#Person2# has two tickets in row F for tonight. The show starts at eight!",
            ),
        }
    ]
    assert "1 memory items from 1 DialogSum dialogues; 2.00 key facts per item" in shown
    assert "1 continuation lines joined" in shown and report["lines_joined"] == 1
    # the other reading of turn_count: #Person1# | #Person2# | #Person1#
    src.write_text(
        json.dumps({**DIALOGSUM, "dialogue": "#Person1#: Hi.\n#Person1#: Hello?\n#Person2#: Hi there."})
        + "\n",
        encoding="utf-8",
    )
    records, _, _ = convert(
        tmp_path,
        capsys,
        "--from",
        "dialogsum",
        "--to",
        "memory",
        "--in",
        src,
        "--turn_count",
        "speaker_turns",
    )
    assert records[0]["input"]["turn_count_by"] == "speaker_turns"
    assert records[0]["output"]["memory_state"]["turn_count"] == 2


def test_dialogsum_bad_records_are_one_line_each(tmp_path, capsys):
    src = tmp_path / "dialogsum.jsonl"
    rows = [
        DIALOGSUM,
        {"fname": "ds_2", "dialogue": "no speaker here", "summary": "x.", "topic": "t"},
        {"fname": "ds_3", "dialogue": "#Person1#: hi"},
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    code = run_cli(
        load_script("run/convert.py").main,
        ["--from", "dialogsum", "--to", "memory", "--in", str(src), "--out", str(tmp_path / "out.json")],
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {src}: item ds_2: field 'dialogue': the dialogue does not start with a '#PersonN#:' line",
        f"error: {src}: item ds_3: field 'summary': missing or not a non-empty string",
        f"error: {src}: item ds_3: field 'topic': missing or not a non-empty string",
    ]
    assert not (tmp_path / "out.json").exists()


TURNS = [
    ("Chair", "Let us start with the budget for the new remote."),
    ("Finance", "We have twelve euros per unit at most."),
    ("Design", "Then the case has to be plastic, not metal."),
    ("Chair", "Agreed, plastic it is."),
    ("Marketing", "Our survey says young people want bright colours."),
    ("Design", "We could offer a yellow and a blue version."),
    ("Marketing", "And a voice feature would sell well."),
    ("Finance", ""),
]
MEETING = {
    "topic_list": [
        {"topic": "Budget", "relevant_text_span": [["0", "3"]]},
        {"topic": "Market survey", "relevant_text_span": [["4", "7"]]},
    ],
    "general_query_list": [
        {
            "query": "Summarize the meeting.",
            "answer": "The team set the budget and discussed the survey. They chose plastic.",
        }
    ],
    "specific_query_list": [
        {
            "query": "What was the budget?",
            "relevant_text_span": [["1", "2"]],
            "answer": "The budget is twelve euros per unit. So the case is plastic.",
        },
        {
            "query": "What did the survey show?",
            "relevant_text_span": [["4", "6"]],
            "answer": "Young people want bright colours. A voice feature would sell.",
        },
        {
            "query": "What about materials and colours?",
            "relevant_text_span": [["2", "5"]],
            "answer": "Plastic cases in yellow and blue.",
        },
    ],
    "meeting_transcripts": [{"speaker": s, "content": c} for s, c in TURNS],
}


def test_qmsum_golden(tmp_path, capsys):
    src = tmp_path / "qmsum.jsonl"
    src.write_text(json.dumps(MEETING) + "\n", encoding="utf-8")
    records, shown, report = convert(
        tmp_path, capsys, "--from", "qmsum", "--to", "memory", "--in", src, "--max_length", "2048"
    )
    assert records == [
        {
            "id": "qmsum-1-t1-s1",
            "input": {"conversation": conv(*TURNS[:4])},
            "output": state(
                ["The budget is twelve euros per unit.", "So the case is plastic."],
                [],
                "Budget",
                4,
                "The budget is twelve euros per unit.",
            ),
        },
        {
            "id": "qmsum-1-t2-s1",
            "input": {"conversation": conv(*TURNS[4:7])},  # empty turn left out
            "output": state(
                ["Young people want bright colours.", "A voice feature would sell."],
                [],
                "Market survey",
                3,
                "Young people want bright colours.",
            ),
        },
    ]
    assert "1 of 3 specific queries outside every topic span" in shown  # the one across topics
    assert report["empty_turns_dropped"] == 1 and report["windows_split"] == 0


def test_qmsum_splits_long_windows_at_turn_boundaries(tmp_path, capsys):
    src = tmp_path / "qmsum.jsonl"
    src.write_text(json.dumps(MEETING) + "\n", encoding="utf-8")
    # 290 tokens: the system prompt takes about 190, half of the rest (about 50 tokens, 200
    # characters) is the dialogue's: the budget window is cut after its third turn
    records, shown, report = convert(
        tmp_path, capsys, "--from", "qmsum", "--to", "memory", "--in", src, "--max_length", "290"
    )
    assert records == [
        {
            "id": "qmsum-1-t1-s1-w1",
            "input": {"conversation": conv(*TURNS[:3])},
            "output": state(
                ["The budget is twelve euros per unit."],
                [],
                "Budget",
                3,
                "The budget is twelve euros per unit.",
            ),
        },
        {
            "id": "qmsum-1-t1-s1-w2",
            "input": {"conversation": conv(TURNS[3])},
            "output": state([], [], "Budget", 1, "The team set the budget and discussed the survey."),
        },
        {
            "id": "qmsum-1-t2-s1",
            "input": {"conversation": conv(*TURNS[4:7])},
            "output": state(
                ["Young people want bright colours."],
                [],
                "Market survey",
                3,
                "Young people want bright colours.",
            ),
        },
    ]
    assert (
        report["windows_split"],
        report["items"],
        report["facts_dropped_to_fit"],
        report["summary_from_span_answer"],
        report["summary_from_general_answer"],
    ) == (1, 3, 2, 2, 1)
    assert "1 windows split at turn boundaries to fit max_length 290" in shown


def test_sentences_and_unresolved_refs():
    assert sentences("One fact. Two facts!  Three? ") == ["One fact.", "Two facts!", "Three?"]
    talk = [
        "I bought a lamp and two chairs.",
        "Where is the lamp?",
        "Put that lamp near those boxes.",
        "Fine, and bring this cable. That is all.",
    ]
    # 'that lamp' was named before; 'those boxes' and 'this cable' were not; 'That is' is no noun
    assert unresolved_refs(talk) == ["those boxes", "this cable"]
    assert unresolved_refs(["Pass me that chair."]) == ["that chair"]
    # after this/that, a verb form is not a noun ("the one that comes"), nor a summing-up noun
    assert unresolved_refs(["Here's the lid that comes with it. We'll discuss this issue."]) == []


@pytest.mark.skipif(not (DATA / "dialogsum").is_dir(), reason="real DialogSum data not available")
def test_real_dialogsum_dev_converts_and_validates(tmp_path, capsys):
    records, shown, report = convert(
        tmp_path,
        capsys,
        "--from",
        "dialogsum",
        "--to",
        "memory",
        "--in",
        DATA / "dialogsum" / "dialogsum.dev.jsonl",
    )
    items = load_items(tmp_path / "memory.json", get_task("memory"), require_output=True)
    assert len(items) == len(records) == 500 == report["items"]
    assert all(it.turn_count == it.state["memory_state"]["turn_count"] for it in items)
    assert "500 memory items from 500 DialogSum dialogues" in shown


@pytest.mark.skipif(not (DATA / "qmsum").is_dir(), reason="real QMSum data not available")
def test_real_qmsum_val_converts_and_validates(tmp_path, capsys):
    records, shown, report = convert(
        tmp_path, capsys, "--from", "qmsum", "--to", "memory", "--in", DATA / "qmsum" / "val.jsonl"
    )
    items = load_items(tmp_path / "memory.json", get_task("memory"), require_output=True)
    assert len(items) == len(records) == report["items"] > 35
    assert report["meetings"] == 35 and report["windows_split"] > 0
    assert "windows split at turn boundaries to fit max_length 512" in shown
