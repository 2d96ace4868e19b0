"""Loading, validation and submission writing for the official formats."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import NIKL, ROOT, SAMPLES

from malpyeong.cli import run_cli
from malpyeong.data import check_submission, load_items, write_submission
from malpyeong.errors import UserError, UserErrors
from malpyeong.tasks import get_task

VALIDATE = ROOT / "run" / "validate.py"


def _validate_main():
    sys.path.insert(0, str(ROOT / "run"))
    import validate

    return validate.main


def write(path, obj, *, bom=False, jsonl=False):
    if jsonl:
        text = "\n".join(json.dumps(o, ensure_ascii=False) for o in obj) + "\n"
    else:
        text = json.dumps(obj, ensure_ascii=False, indent=4)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_loads_list_jsonl_bom_and_integer_utterance(tmp_path, cci_record):
    cci_record["input"]["conversation"][2]["utterance"] = 40
    a = load_items(write(tmp_path / "a.json", [cci_record], bom=True), get_task("cci"))
    b = load_items(write(tmp_path / "b.jsonl", [cci_record], jsonl=True), get_task("cci"))
    assert a[0].conversation[2].utterance == "40"
    assert a == b
    assert a[0].label == 0 and a[0].category == "동기" and a[0].reference_indices == [3]
    assert a[0].conversation[0].speaker == "1"


def test_dcs_item_fields(tmp_path, dcs_record):
    (item,) = load_items(write(tmp_path / "d.json", [dcs_record]), get_task("dcs"))
    assert item.keywords == ("요리", "취미")
    assert item.conversation[1].speaker == "SD9000002"
    assert item.summary.startswith("두 화자는")


def _break(record, path, value):
    """Set (or with value=DELETE, remove) the field at ``path`` (dotted, ints index lists)."""
    *parents, last = path.split(".")
    node = record
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    key = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value


DELETE = object()

# (name, task, how to break a valid record, text expected in the error line)
CCI_DEFECTS = [
    ("missing id", "id", DELETE, "field 'id'"),
    ("id not a string", "id", 7, "field 'id'"),
    ("missing input", "input", DELETE, "field 'input'"),
    ("conversation not a list", "input.conversation", "대화", "field 'input.conversation'"),
    ("empty conversation", "input.conversation", [], "empty"),
    ("speaker missing", "input.conversation.0.speaker", DELETE, "speaker"),
    ("utterance is a list", "input.conversation.1.utterance", ["a"], "utterance"),
    ("utterance_id missing", "input.conversation.2.utterance_id", DELETE, "utterance_id"),
    ("unknown category", "input.category", "결과", "not one of 원인"),
    ("reference not in conversation", "input.reference_id", ["T9.9.9"], "not an utterance_id"),
    ("reference_id not a list", "input.reference_id", "T1.1.4", "input.reference_id"),
    ("empty option", "input.inference_2", "", "input.inference_2"),
    ("missing option", "input.inference_3", DELETE, "input.inference_3"),
    ("wrong output label", "output", "inference_4", "not one of inference_1"),
    ("output missing", "output", DELETE, "field 'output'"),
]
DCS_DEFECTS = [
    ("keywords not a list", "input.subject_keyword", "요리", "subject_keyword"),
    ("keyword not a string", "input.subject_keyword", ["요리", 3], "subject_keyword"),
    ("empty keyword list", "input.subject_keyword", [], "subject_keyword"),
    ("dcs empty conversation", "input.conversation", [], "empty"),
    ("summary not a string", "output", ["요약"], "not a string"),
    ("dcs utterance missing", "input.conversation.0.utterance", DELETE, "utterance"),
]


@pytest.mark.parametrize("name,path,value,expected", CCI_DEFECTS, ids=[d[0] for d in CCI_DEFECTS])
def test_malformed_cci_record(tmp_path, capsys, cci_record, name, path, value, expected):
    _break(cci_record, path, value)
    bad = write(tmp_path / "bad.json", [cci_record])
    assert run_cli(_validate_main(), ["--task", "cci", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(bad) in err[0] and expected in err[0]
    if path != "id" and name != "missing id":
        assert "t-cci-1" in err[0]  # the item is named by its id


@pytest.mark.parametrize("name,path,value,expected", DCS_DEFECTS, ids=[d[0] for d in DCS_DEFECTS])
def test_malformed_dcs_record(tmp_path, capsys, dcs_record, name, path, value, expected):
    _break(dcs_record, path, value)
    bad = write(tmp_path / "bad.json", [dcs_record])
    assert run_cli(_validate_main(), ["--task", "dcs", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "t-dcs-1" in err[0] and expected in err[0]


FILE_DEFECTS = [
    ("not json", b'[{"id": 1,,}]', "not valid JSON"),
    ("not utf-8", '[{"id": "가"}]'.encode("cp949"), "not UTF-8"),
    ("empty file", b"   \n", "empty file"),
    ("top level object", b'{\n    "id": "x",\n    "input": {}\n}', "not a list"),
    ("top level string", b'"hello"', "not a list"),
    ("empty list", b"[]", "no items"),
    ("item not an object", b"[1]", "not an object"),
]


@pytest.mark.parametrize("name,content,expected", FILE_DEFECTS, ids=[d[0] for d in FILE_DEFECTS])
def test_malformed_file(tmp_path, capsys, name, content, expected):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    assert run_cli(_validate_main(), ["--task", "cci", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(bad) in err[0], err


def test_duplicate_ids_reported(tmp_path, capsys, cci_record):
    bad = write(tmp_path / "dup.json", [cci_record, cci_record])
    assert run_cli(_validate_main(), ["--task", "cci", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "duplicate id" in err and "t-cci-1" in err


def test_many_problems_are_capped(tmp_path, capsys, dcs_record):
    bad = write(tmp_path / "dcs.json", [dcs_record] * 30)
    assert run_cli(_validate_main(), ["--task", "cci", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 21 and "more problem(s)" in err[-1] and "cci file?" in err[-1]


def test_cli_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json at all", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(VALIDATE), "--task", "cci", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_valid_file_prints_count(tmp_path, capsys, cci_record):
    good = write(tmp_path / "good.json", [cci_record])
    assert run_cli(_validate_main(), ["--task", "cci", str(good)]) == 0
    assert "1 cci items (1 with gold output)" in capsys.readouterr().out


def test_require_output(tmp_path, cci_record):
    cci_record["output"] = ""
    path = write(tmp_path / "test.json", [cci_record])
    assert load_items(path, get_task("cci"))[0].label is None
    with pytest.raises(UserErrors, match="1 problem"):
        load_items(path, get_task("cci"), require_output=True)


def test_submission_written_atomically_and_checked(tmp_path, cci_record):
    cci_record["output"] = ""
    test = write(tmp_path / "test.json", [cci_record])
    items = load_items(test, get_task("cci"))
    out = tmp_path / "sub.json"
    write_submission(items, {"t-cci-1": "inference_3"}, out)
    text = out.read_text(encoding="utf-8")
    assert '"output": "inference_3"' in text and "어제 비가" in text  # ensure_ascii=False
    assert text.startswith("[\n    {")  # indent=4
    assert check_submission(out, test, get_task("cci")) == 1
    with pytest.raises(UserError, match="output exists"):
        write_submission(items, {"t-cci-1": "inference_1"}, out)
    write_submission(items, {"t-cci-1": "inference_1"}, out, overwrite=True)
    assert json.loads(out.read_text(encoding="utf-8"))[0]["output"] == "inference_1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_submission_checks(tmp_path, capsys, cci_record):
    cci_record["output"] = ""
    other = json.loads(json.dumps(cci_record))
    other["id"] = "t-cci-2"
    test = write(tmp_path / "test.json", [cci_record, other])
    good = [dict(cci_record, output="inference_2"), dict(other, output="inference_1")]
    write(tmp_path / "ok.json", good)
    assert check_submission(tmp_path / "ok.json", test, get_task("cci")) == 2
    cases = {
        "short.json": ([good[0]], "1 items, the test file has 2"),
        "dup.json": ([good[0], good[0]], "duplicate id"),
        "foreign.json": ([good[0], dict(good[1], id="zzz")], "id not in the test file"),
        "label.json": ([good[0], dict(good[1], output="B")], "is not one of"),
    }
    main = _validate_main()
    for name, (rows, expected) in cases.items():
        write(tmp_path / name, rows)
        assert (
            run_cli(main, ["--task", "cci", "--submission", str(tmp_path / name), "--test", str(test)]) == 2
        )
        assert expected in capsys.readouterr().err


def test_shipped_samples_validate():
    for task in ("cci", "dcs"):
        for split in ("train", "dev", "test"):
            path = SAMPLES / f"{task}_{split}.json"
            if not path.exists():
                pytest.skip("samples not written yet")
            items = load_items(path, get_task(task), require_output=split != "test")
            assert len(items) >= 8


REAL = {"cci": 1515, "dcs": 511}


@pytest.mark.skipif(not NIKL.is_dir(), reason="real NIKL files not present")
@pytest.mark.parametrize("task", ["cci", "dcs"])
def test_every_real_file_validates(capsys, task):
    files = sorted(str(p) for p in NIKL.glob(f"{task}_*.json"))
    assert run_cli(_validate_main(), ["--task", task, *files]) == 0
    total = sum(int(line.split(": ")[1].split()[0]) for line in capsys.readouterr().out.splitlines())
    assert total == REAL[task]
