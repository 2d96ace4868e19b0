"""Item-level dedup, the contamination guard, and run/dedup.py end to end (our own dialogues)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

from malpyeong.cli import run_cli
from malpyeong.errors import UserError
from malpyeong.prep.dedup import (
    Record,
    contamination,
    dedup,
    dedup_texts,
    official_records,
)

ROOT = Path(__file__).resolve().parents[1]

DEV_DIALOGUE = [
    "이번 주 토요일에 시간 괜찮으면 같이 등산 갈래?",
    "좋아, 어느 산으로 갈 생각이야? 너무 험한 곳은 자신이 없어.",
    "집 근처 뒷산 둘레길이 완만해서 초보자도 두 시간이면 충분하대.",
    "그럼 김밥이랑 과일을 조금 싸 가자. 물은 내가 챙길게.",
    "아침 여덟 시에 지하철역 앞에서 만나는 걸로 하자.",
    "알겠어, 늦지 않게 알람 두 개 맞춰 둘게.",
]
OTHER_DIALOGUE = [
    "어제 새로 산 전기밥솥으로 현미밥을 처음 지어 봤어.",
    "현미는 물을 얼마나 부어야 해? 나는 늘 질게 되더라.",
    "설명서에 현미 눈금이 따로 있어서 그대로 맞추니까 괜찮았어.",
    "불리는 시간도 필요해? 바로 해도 되는 거야?",
    "한 시간 정도 불렸더니 훨씬 부드러웠어. 다음엔 잡곡도 섞어 보려고.",
]
THIRD_DIALOGUE = [
    "다음 달에 이사하는데 짐 정리가 끝이 안 나.",
    "안 쓰는 물건은 중고 장터에 올려 보는 건 어때?",
    "책장이랑 의자는 벌써 팔았고 남은 건 옷이랑 그릇이야.",
    "그릇은 동네 나눔 모임에 내놓으면 금방 가져가더라.",
]


def cci_item(
    iid: str,
    utts: list[str],
    category: str = "원인",
    ref: int = 2,
    options: tuple[str, str, str] = ("첫째 추론이다.", "둘째 추론이다.", "셋째 추론이다."),
    dialogue_id: str = "",
) -> dict:
    did = dialogue_id or f"D{iid}"
    return {
        "id": iid,
        "input": {
            "conversation": [
                {"speaker": 1 + i % 2, "utterance": u, "utterance_id": f"{did}.{i + 1}"}
                for i, u in enumerate(utts)
            ],
            "reference_id": [f"{did}.{ref}"],
            "category": category,
            "inference_1": options[0],
            "inference_2": options[1],
            "inference_3": options[2],
        },
        "output": "inference_1",
    }


def rec(i: int, text: str) -> Record:
    return Record(f"r{i}", [text], text.splitlines(), None)


LONG = (
    "도서관 이층 카페에서 유자차를 마시며 창밖을 보는 시간이 요즘 하루 중 가장 좋다. "
    "퇴근하고 들러서 한 시간쯤 소설을 읽다 보면 복잡했던 머리가 조금씩 정리된다. 지난주에는 "
    "역사 소설을 다 읽었고 이번 주에는 요리책에서 찌개 만드는 법을 골라 따라 해 볼 생각이다. "
    "주말에는 조카와 함께 동화 읽기 모임에도 가 보려고 한다."
)


def test_dedup_exact_near_and_distinct() -> None:
    texts = [
        LONG,
        LONG.replace(" ", "").replace(".", "!"),  # exact after normalisation
        "전혀 다른 글: 내일은 자전거를 타고 한강까지 가 볼 예정이다. 날씨가 맑으면 좋겠다.",
        LONG.replace("소설을", "소설들을", 1),  # near (2 bits)
        "세 번째 글: 저녁으로 김치볶음밥을 만들어 먹었는데 달걀을 두 개나 올렸다.",
    ]
    kept, report = dedup([rec(i, t) for i, t in enumerate(texts)], k=3)
    assert kept == [0, 2, 4]
    assert (report["n_in"], report["n_exact_dups"], report["n_near_dups"], report["n_out"]) == (5, 1, 1, 3)
    assert report["dropped"] == [
        {"id": "r1", "source": "", "reason": "exact", "kept": "r0"},
        {"id": "r3", "source": "", "reason": "near", "kept": "r0"},
    ]
    (cluster,) = report["clusters"]
    assert cluster["size"] == 3 and cluster["kept"] == "r0"
    assert [e["id"] for e in cluster["examples"]] == ["r0", "r1", "r3"]


def test_keep_rule_is_deterministic() -> None:
    texts = [LONG, LONG + " 끝!", LONG.replace("소설을", "소설들을", 1) + " 끝!"]
    recs = [rec(i, t) for i, t in enumerate(texts)]
    assert dedup(recs, keep="first")[0] == [0]
    assert dedup(recs, keep="longest")[0] == [2]
    assert dedup(recs[:2] + [rec(2, LONG + " 끝?")], keep="longest")[0] == [1]  # tie: first
    assert dedup_texts(texts, keep="longest") == [2]
    with pytest.raises(UserError):
        dedup(recs, keep="shortest")


def test_cci_questions_on_one_dialogue_are_not_duplicates() -> None:
    items = [
        cci_item("a", OTHER_DIALOGUE, dialogue_id="D1"),
        cci_item(
            "b",
            OTHER_DIALOGUE,
            category="반응",
            ref=3,
            dialogue_id="D1",
            options=("화자1은 밥솥에 만족한다.", "화자1은 밥을 태웠다.", "화자2는 현미를 싫어한다."),
        ),
        cci_item("c", OTHER_DIALOGUE, dialogue_id="D1"),
    ]  # a copy of item a
    kept, report = dedup(official_records(items, "cci"))
    assert kept == [0, 1]
    assert report["dropped"] == [{"id": "c", "source": "", "reason": "exact", "kept": "a"}]


def test_contamination_drops_planted_dev_dialogue_and_window() -> None:
    dev = read_records_from([cci_item("dev-1", DEV_DIALOGUE)])
    train = read_records_from(
        [
            cci_item("t-planted", DEV_DIALOGUE),  # the dev dialogue
            cci_item("t-window", THIRD_DIALOGUE[:2] + DEV_DIALOGUE[1:5] + THIRD_DIALOGUE[2:]),
            cci_item("t-clean", OTHER_DIALOGUE),
            cci_item("t-short", THIRD_DIALOGUE[:2] + DEV_DIALOGUE[5:]),  # 1 shared line
        ]
    )
    found = contamination(train, dev, k=3, window=4)
    assert sorted(found) == [0, 1]
    assert found[0] == {
        "id": "t-planted",
        "source": "",
        "unit": "dialogue",
        "matched_id": "dev-1",
        "matched_source": "",
        "matched_unit": "dialogue",
        "match": "exact",
        "distance": 0,
    }
    assert found[1]["unit"] == "utterances 3-6" and found[1]["matched_unit"] == "utterances 2-5"
    assert found[1]["match"] == "exact"
    # a window that is only a near copy (one word changed) is caught too
    edited = [u.replace("김밥이랑", "김밥하고") for u in DEV_DIALOGUE[1:5]]
    near = contamination(
        read_records_from([cci_item("t-near", OTHER_DIALOGUE[:1] + edited)]), dev, k=6, window=4
    )
    assert near[0]["match"] == "near" and 0 < near[0]["distance"] <= 6


def read_records_from(items: list[dict]) -> list[Record]:
    return official_records(copy.deepcopy(items), "cci")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _cli():
    mod = load_script(ROOT / "run" / "dedup.py")
    return mod.main


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=4), encoding="utf-8")
    return path


def test_cli_cci_with_against(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_json(
        tmp_path / "train.json",
        [
            cci_item("t1", OTHER_DIALOGUE, dialogue_id="D1"),
            cci_item("t2", DEV_DIALOGUE),
            cci_item("t3", OTHER_DIALOGUE, dialogue_id="D1"),
            cci_item("t4", THIRD_DIALOGUE),
        ],
    )
    dev = write_json(tmp_path / "dev.json", [cci_item("d1", DEV_DIALOGUE)])
    out = tmp_path / "out" / "clean.json"
    main = _cli()
    argv = ["--task", "cci", "--in", str(train), "--out", str(out), "--against", str(dev)]
    assert run_cli(main, argv) == 0
    assert "4 in -> 2 kept: 1 leaking" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert text.startswith('[\n    {\n        "id": "t1"') and "현미밥" in text  # indent 4, no \u
    assert [x["id"] for x in json.loads(text)] == ["t1", "t4"]
    report = json.loads((tmp_path / "out" / "clean.report.json").read_text(encoding="utf-8"))
    assert (report["n_in"], report["n_contaminated"], report["n_exact_dups"], report["n_out"]) == (4, 1, 1, 2)
    assert report["contaminated"][0]["id"] == "t2"
    assert report["dropped"][0]["id"] == "t3"
    # refuses to overwrite, then does with --overwrite
    assert run_cli(main, argv) == 2
    assert "output exists" in capsys.readouterr().err
    assert run_cli(main, argv + ["--overwrite", "--keep", "longest", "--k", "0"]) == 0


def test_cli_text_jsonl_and_plain_lines(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": LONG}, {"role": "assistant", "content": "네."}]},
        {"prompt": LONG, "completion": "네."},
        {"text": "완전히 다른 문장입니다. 오늘은 도서관이 쉬는 날이라 집에서 책을 읽었다."},
    ]
    src = tmp_path / "sft.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    plain = tmp_path / "lines.txt"
    plain.write_text(f"{LONG}\n\n{LONG}  \n다른 줄입니다. 이 줄은 남아야 한다.\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert run_cli(_cli(), ["--task", "text", "--in", str(src), str(plain), "--out", str(out)]) == 0
    got = [json.loads(ln) for ln in out.read_text(encoding="utf-8").splitlines()]
    assert got == [rows[0], rows[2], {"text": "다른 줄입니다. 이 줄은 남아야 한다."}]
    report = json.loads(out.with_suffix(".report.json").read_text(encoding="utf-8"))
    assert [(d["id"], d["source"], d["kept"]) for d in report["dropped"]] == [
        ("sft.jsonl:2", str(src), "sft.jsonl:1"),
        ("lines.txt:1", str(plain), "sft.jsonl:1"),
        ("lines.txt:3", str(plain), "sft.jsonl:1"),
    ]  # line numbers count the blank line


# The input is validated like run/validate.py does it: one line per problem, file: item: field.
@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON or JSONL"),
        ('"text"', "not a list of items"),
        (
            '[{"id": "x3", "input": {"subject_keyword": ["a"]}, "output": ""}]',
            "item x3: field 'input.conversation': missing or not a list",
        ),
        (
            '[{"id": "x", "input": {"conversation": "hi", "subject_keyword": ["a"]}, "output": ""}]',
            "item x: field 'input.conversation': missing or not a list",
        ),
    ],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    code = run_cli(_cli(), ["--task", "dcs", "--in", str(bad), "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.json").exists()


def test_cli_missing_file_exits_2_in_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout, not another install
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run" / "dedup.py"),
            "--task",
            "cci",
            "--in",
            str(tmp_path / "nope.json"),
            "--out",
            str(tmp_path / "o.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "nope.json" in proc.stderr
    assert "Traceback" not in proc.stderr
