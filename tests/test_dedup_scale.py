"""The streamed, array-based dedup path keeps exactly what the record-by-record path kept.

``old_*`` below is the previous implementation of ``run/dedup.py`` in a few lines (read every
record into memory, group exact duplicates by a dict of :func:`normalize`\\ d strings, hash the
group keepers, cluster, keep by a lexsort), kept here as the reference the new path must match:
same items kept, same order, same report.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import NIKL, load_script

from malpyeong import tasks as task_registry
from malpyeong.cli import run_cli
from malpyeong.errors import UserError
from malpyeong.prep import dedup as D
from malpyeong.prep import dedup_files as F
from malpyeong.prep import simhash as S
from malpyeong.tasks.dcs import DCSTask

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "resource" / "data"


# --------------------------------------------------------------------------------------------
# the previous path, as the reference
# --------------------------------------------------------------------------------------------


def old_text_records(path: Path) -> list[tuple[str, list[str], dict]]:
    """(id, parts, record) as the old reader made them: whole file, splitlines, json.loads."""
    content = path.read_text(encoding="utf-8-sig")
    lines = content.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first.startswith("["):
        rows = list(enumerate(json.loads(content)))
    elif first.startswith("{"):
        rows = [(n, json.loads(ln)) for n, ln in enumerate(lines, 1) if ln.strip()]
    else:
        rows = [(n, {"text": ln}) for n, ln in enumerate(lines, 1) if ln.strip()]
    out = []
    for n, rec in rows:
        text = rec["text"] if isinstance(rec.get("text"), str) else "\n".join(F._strings(rec))
        out.append((str(rec.get("id", f"{path.name}:{n}")), [text], rec))
    return out


def old_official_records(items: list[dict], task: str) -> list[tuple[str, list[str], dict]]:
    """The old raw-schema reading of official items (before the task views)."""
    out = []
    for item in items:
        inp = item["input"]
        dialogue = "\n".join(str(u["utterance"]) for u in inp["conversation"])
        if task == "cci":
            question = "\n".join(
                [str(inp["category"]), " ".join(inp["reference_id"])]
                + [str(inp[f"inference_{j}"]) for j in (1, 2, 3)]
            )
            parts = [dialogue, question]
        else:
            parts = [dialogue + "\n" + " ".join(inp["subject_keyword"])]
        out.append((item["id"], parts, item))
    return out


def old_keepers(label: np.ndarray, lengths: np.ndarray, keep: str) -> np.ndarray:
    n = len(label)
    second = -lengths if keep == "longest" else np.zeros(n, dtype=np.int64)
    o = np.lexsort((np.arange(n), second, label))
    lead = np.ones(n, dtype=bool)
    lead[1:] = label[o][1:] != label[o][:-1]
    return o[lead]


def old_dedup(
    recs: list[tuple[str, list[str], dict]], sources: list[str], k: int, keep: str
) -> tuple[list[int], dict]:
    texts = ["\n".join(parts) for _, parts, _ in recs]
    n = len(recs)
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    group_of: dict[str, int] = {}
    grp = np.array([group_of.setdefault(S.normalize(t), len(group_of)) for t in texts])
    ng = len(group_of)
    gkeep = old_keepers(grp, lengths, keep)
    nparts = len(recs[0][1])
    fps = [S.fingerprints([recs[i][1][j] for i in gkeep]) for j in range(nparts)]
    pairs = S.near_duplicate_pairs(fps[0], k, spanning=nparts == 1)
    for f in fps[1:]:
        pairs = pairs[S.hamming(f[pairs[:, 0]], f[pairs[:, 1]]) <= k]
    label = S.clusters(ng, pairs)[grp]
    ckeep = old_keepers(label, lengths, keep)
    size = np.bincount(label, minlength=ng)
    clist, dropped = [], []
    corder = np.argsort(label, kind="stable")
    cb = np.concatenate(([0], np.cumsum(size)))

    def ex(i: int) -> dict:
        t = texts[i]
        return {"id": recs[i][0], "text": t if len(t) <= 300 else t[:300] + "…"}

    for best in ckeep[np.flatnonzero(size[label[ckeep]] > 1)].tolist():
        c = label[best]
        others = [int(m) for m in corder[cb[c] : cb[c + 1]] if m != best]
        clist.append(
            {"size": int(size[c]), "kept": recs[best][0], "examples": [ex(i) for i in [best] + others[:2]]}
        )
        for m in others:
            dropped.append(
                {
                    "id": recs[m][0],
                    "source": sources[m],
                    "reason": "exact" if gkeep[grp[m]] != m else "near",
                    "kept": recs[best][0],
                }
            )
    clist.sort(key=lambda c: -c["size"])
    kept = sorted(ckeep.tolist())
    return kept, {
        "n_exact_dups": n - ng,
        "n_near_dups": ng - len(kept),
        "n_out": len(kept),
        "clusters": clist,
        "dropped": dropped,
    }


# --------------------------------------------------------------------------------------------
# a generated corpus with planted duplicates (our own syllables, nothing from real data)
# --------------------------------------------------------------------------------------------


def make_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    syll = [chr(0xAC00 + i) for i in rng.choice(11172, 300, replace=False)]
    words = ["".join(rng.choice(syll, int(rng.integers(1, 4)))) for _ in range(2000)]
    base = [
        " ".join(rng.choice(words, int(rng.integers(20, 60)))) + rng.choice([".", "?", "!"]) for _ in range(n)
    ]
    out = list(base)
    for i in rng.choice(n, n // 5, replace=False).tolist():  # exact after normalisation
        out.append(base[i].replace(" ", "  ", 2).replace(".", "!") + " ")
    for i in rng.choice(n, n // 4, replace=False).tolist():  # near: a few edits
        chars = list(base[i])
        for _ in range(int(rng.integers(1, 3))):
            chars.insert(int(rng.integers(1, len(chars))), syll[int(rng.integers(300))])
        out.append("".join(chars))
    extras = [
        "ΟΔΟΣ Σοφός ΣΑΣ " + base[0],
        "İstanbul İİ " + base[1],
        "ㅋㅋㅋㅋㅋㅋ " + base[2],
        "ㅋㅋ " + base[2],
        'he said "yes" \\ ok ' + base[3],
        base[4] + "\n둘째 줄\t끝",
        "😀 𐐀 " + base[5],
        "!!!",
        "?!",
        "가",
        "가!",
    ]
    out += extras
    return [out[i] for i in rng.permutation(len(out))]


def write_corpus(path: Path, texts: list[str], seed: int) -> None:
    """JSONL in the layouts people write: json.dumps (with and without ensure_ascii), orjson
    spacing, ids, SFT messages and prompt/completion records, blank and CRLF lines, a BOM."""
    rng = np.random.default_rng(seed)
    lines = []
    for i, t in enumerate(texts):
        kind = int(rng.integers(10))
        if kind == 0:
            lines.append(json.dumps({"id": f"r{i}", "text": t}, ensure_ascii=False))
        elif kind == 1:
            lines.append(json.dumps({"text": t}))  # \uXXXX escapes
        elif kind == 2:
            lines.append(json.dumps({"text": t}, ensure_ascii=False, separators=(",", ":")))
        elif kind == 3:
            lines.append(
                json.dumps(
                    {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "네."}]},
                    ensure_ascii=False,
                )
            )
        elif kind == 4:
            lines.append(
                "  " + json.dumps({"prompt": t, "completion": "네", "score": 1.5}, ensure_ascii=False) + "\r"
            )
        else:
            lines.append(json.dumps({"text": t}, ensure_ascii=False))
        if kind == 5:
            lines.append("   ")  # a blank line
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8"))  # no final newline


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many blocks and chunks, so their boundaries are crossed often."""
    monkeypatch.setattr(F, "BLOCK_BYTES", 3000)
    monkeypatch.setattr(S, "_CHUNK_CHARS", 5000)


@pytest.mark.parametrize("keep, k", [("first", 3), ("longest", 3), ("first", 6)])
def test_text_path_keeps_what_the_old_path_kept(
    tmp_path: Path, small_blocks: None, keep: str, k: int
) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.txt"
    write_corpus(a, make_texts(600, seed=1), seed=2)
    plain = make_texts(150, seed=1)[:300]  # overlaps file a
    b.write_text("\n\n".join(t.replace("\n", " ") for t in plain) + "\n", encoding="utf-8")
    recs = old_text_records(a) + old_text_records(b)
    sources = [str(a)] * len(old_text_records(a)) + [str(b)] * len(old_text_records(b))
    want_kept, want_report = old_dedup(recs, sources, k, keep)
    assert want_report["n_exact_dups"] > 100 and want_report["n_near_dups"] > 30

    out = tmp_path / "out.jsonl"
    argv = ["--task", "text", "--in", str(a), str(b), "--out", str(out), "--k", str(k), "--keep", keep]
    assert run_cli(load_script(ROOT / "run" / "dedup.py").main, argv) == 0
    got = [json.loads(ln) for ln in out.read_text(encoding="utf-8").splitlines()]
    assert got == [recs[i][2] for i in want_kept]
    report = json.loads(out.with_suffix(".report.json").read_text(encoding="utf-8"))
    assert {key: report[key] for key in want_report} == want_report
    assert report["n_in"] == len(recs)
    # JSONL lines are copied as they were (only the spaces around a line are cut)
    a_lines = [ln.strip() for ln in a.read_bytes()[3:].split(b"\n") if ln.strip()]
    out_lines = out.read_bytes().split(b"\n")
    assert all(out_lines[j] == a_lines[i] for j, i in enumerate(want_kept) if i < len(a_lines))


def test_official_path_keeps_what_the_old_path_kept(tmp_path: Path) -> None:
    for task in ("cci", "dcs"):
        items = json.loads((DATA / f"{task}_train.json").read_text(encoding="utf-8"))
        planted = copy.deepcopy(items[:5])
        for j, it in enumerate(planted):
            it["id"] = f"copy-{j}"
            conv = it["input"]["conversation"]
            conv[0]["utterance"] = conv[0]["utterance"] + " ..."  # spacing/punct only
        path = tmp_path / f"{task}.json"
        path.write_text(json.dumps(items + planted, ensure_ascii=False), encoding="utf-8")
        recs = old_official_records(items + planted, task)
        want_kept, want_report = old_dedup(recs, [str(path)] * len(recs), 3, "first")
        assert want_report["n_exact_dups"] >= 5

        out = tmp_path / f"{task}.out.json"
        result = F.dedup_files([str(path)], task, out)
        assert json.loads(out.read_text(encoding="utf-8")) == [recs[i][2] for i in want_kept]
        report = result.report()
        report = {**report, "clusters": list(report["clusters"]), "dropped": list(report["dropped"])}
        assert {key: report[key] for key in want_report} == want_report


def test_write_report_streams_what_json_dumps_writes(tmp_path: Path) -> None:
    report = {
        "task": "text",
        "inputs": ["a.jsonl", "b"],
        "against": [],
        "k": 3,
        "empty": {},
        "n": None,
        "ok": True,
        "x": 0.125,
        "clusters": [
            {
                "size": 2,
                "kept": "a:1",
                "examples": [{"id": "a:1", "text": '줄바꿈\n"따옴표" \\ 탭\t😀'}, {"id": "b", "text": ""}],
            }
        ]
        * 3,
        "dropped": [],
        "contaminated": [{"id": "x", "unit": "dialogue"}],
    }
    want = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    F.write_report(tmp_path / "a.json", report)
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == want
    streamed = {**report, "clusters": iter(report["clusters"]), "dropped": iter([])}
    F.write_report(tmp_path / "b.json", streamed)
    assert (tmp_path / "b.json").read_text(encoding="utf-8") == want


def test_groups_number_by_first_appearance() -> None:
    gid, first = S.groups(np.array([7, 3, 7, 9, 3, 3, 1], dtype=np.uint64))
    assert gid.tolist() == [0, 1, 0, 2, 1, 1, 3] and first.tolist() == [0, 1, 3, 6]
    gid, first = S.groups(np.zeros(0, dtype=np.uint64))
    assert len(gid) == 0 and len(first) == 0


def test_task_choices_come_from_the_registry(capsys: pytest.CaptureFixture) -> None:
    assert F.task_names() == [*sorted(task_registry.TASKS), "text"]

    class ToyTask(DCSTask):
        name = "toy-summary"

    task_registry.register(ToyTask)
    try:
        assert "toy-summary" in F.task_names()
        cli = load_script(ROOT / "run" / "dedup.py")
        with pytest.raises(SystemExit):
            cli.parse_args(["--help"])
        assert "toy-summary" in capsys.readouterr().out
    finally:
        del task_registry.TASKS["toy-summary"]


def test_against_a_file_of_another_task_reads_its_conversation(tmp_path: Path) -> None:
    """A DCS training file guarded by CCI dev items (and the other way round): the items that
    are not of the task are read through the shared envelope."""
    dcs = json.loads((DATA / "dcs_train.json").read_text(encoding="utf-8"))
    cci = json.loads((DATA / "cci_dev.json").read_text(encoding="utf-8"))
    leaked = copy.deepcopy(dcs[0])
    leaked["id"] = "leak"
    leaked["input"]["conversation"] = [
        {"speaker": u["speaker"], "utterance": u["utterance"]} for u in cci[0]["input"]["conversation"]
    ]
    train = tmp_path / "dcs_train.json"
    train.write_text(json.dumps(dcs[:3] + [leaked], ensure_ascii=False), encoding="utf-8")
    dev = tmp_path / "cci_dev.json"
    dev.write_text(json.dumps(cci[:2], ensure_ascii=False), encoding="utf-8")
    result = F.dedup_files([str(train)], "dcs", tmp_path / "o.json", against=[str(dev)])
    assert [m["id"] for m in result.contaminated] == ["leak"]
    assert result.contaminated[0]["matched_id"] == cci[0]["id"]
    assert result.contaminated[0]["matched_unit"] == "dialogue"
    refs = D.reference_records(dev, DCSTask())
    assert [r.id for r in refs] == [c["id"] for c in cci[:2]]
    with pytest.raises(UserError, match="--against takes official"):
        bad = tmp_path / "bad.json"
        bad.write_text('[{"id": "x", "input": {}}]', encoding="utf-8")
        D.reference_records(bad, None)


def test_jsonl_lines_are_copied_byte_for_byte(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    rows = [
        b'{"text": "\\ub3c4\\uc11c\\uad00\\uc5d0 \\uac14\\ub2e4", "n": NaN}',  # json only
        b'{"text":"\xeb\x8f\x84\xec\x84\x9c\xea\xb4\x80\xec\x97\x90  \xea\xb0\x94\xeb\x8b\xa4!"}',
        b'{"text": "other words entirely, a different sentence", "big": 123456789012345678901}',
        b"",
        b"  \r",
        b'  {"text": "keep my spaces out"}  \r',
    ]
    src.write_bytes(b"\n".join(rows) + b"\n")
    out = tmp_path / "out.jsonl"
    assert (
        run_cli(
            load_script(ROOT / "run" / "dedup.py").main,
            ["--task", "text", "--in", str(src), "--out", str(out)],
        )
        == 0
    )
    assert out.read_bytes().split(b"\n") == [rows[0], rows[2], rows[5].strip(), b""]
    report = json.loads(out.with_suffix(".report.json").read_text(encoding="utf-8"))
    assert report["dropped"] == [
        {"id": "in.jsonl:2", "source": str(src), "reason": "exact", "kept": "in.jsonl:1"}
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "a"}\n{"text": "b"\n', "not valid JSONL (line 2: Expecting ',' delimiter)"),
        (b'{"text": "a"}\n["x"]\n', "item 2: record is not an object"),
        (b'{"text": "a"}\n\n{"text": "  "}\n', "item in.jsonl:3: field 'text': no text"),
        (b'{"text": "\xff"}\n', "not UTF-8"),
    ],
)
def test_bad_jsonl_is_one_line_naming_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, message: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    code = run_cli(
        load_script(ROOT / "run" / "dedup.py").main,
        ["--task", "text", "--in", str(src), "--out", str(tmp_path / "o.jsonl")],
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.jsonl").exists()
    assert not list(tmp_path.glob(".o.jsonl.*"))  # no temporary file left behind


def test_table_order_packs_the_masked_bits() -> None:
    rng = np.random.default_rng(5)
    u = rng.integers(0, 2**63, 5000, dtype=np.int64).astype(np.uint64)
    u[:50] = u[50:100]
    for mask in [
        0xFFFF,
        0xFFFF << 48,
        (0xFFF << 3) | (0x3 << 40),
        S._tables(3, 0, 5)[7],
        (1 << 33) - 1,
        0xFFFFFFFFFF,
    ]:
        order, sk = S._table_order(u, mask)
        masked = (u & np.uint64(mask))[order]
        assert sorted(order.tolist()) == list(range(len(u)))
        assert (sk[1:] >= sk[:-1]).all()
        assert np.array_equal(sk[1:] == sk[:-1], masked[1:] == masked[:-1])
        assert len(np.unique(sk)) == len(np.unique(masked))


@pytest.mark.skipif(not (NIKL / "cci_train.json").exists(), reason="real NIKL files not present")
def test_real_cci_train_against_dev(tmp_path: Path, nikl: Path = NIKL) -> None:
    """On the competition files: the same items kept as the old path, and the 4 training items
    whose whole dialogue is a dev dialogue caught by the guard (ids only, no text)."""
    items = json.loads((nikl / "cci_train.json").read_text(encoding="utf-8-sig"))
    recs = old_official_records(items, "cci")
    want_kept, want_report = old_dedup(recs, [""] * len(recs), 3, "first")
    result = F.dedup_files([str(nikl / "cci_train.json")], "cci", tmp_path / "all.json")
    assert result.plan.kept.tolist() == want_kept
    assert [c["size"] for c in result.report()["clusters"]] == [c["size"] for c in want_report["clusters"]]
    guarded = F.dedup_files(
        [str(nikl / "cci_train.json")], "cci", tmp_path / "clean.json", against=[str(nikl / "cci_dev.json")]
    )
    whole = {
        m["id"] for m in guarded.contaminated if m["unit"] == "dialogue" and m["matched_unit"] == "dialogue"
    }
    assert len(whole) == 4


def test_text_records_against_dev_across_blocks(tmp_path: Path, small_blocks: None) -> None:
    """The guard sees every block: a dev dialogue pasted into an SFT record (speaker labels and
    all) is found wherever it sits in a long file, and named by its line."""
    dev = json.loads((DATA / "cci_dev.json").read_text(encoding="utf-8"))
    utts = [str(u["utterance"]) for u in dev[0]["input"]["conversation"]]
    pasted = "\n".join(f"{'AB'[i % 2]}: {u}" for i, u in enumerate(utts))
    texts = make_texts(300, seed=4)
    rows = [{"text": t} for t in texts]
    rows.insert(
        250,
        {"messages": [{"role": "user", "content": pasted}, {"role": "assistant", "content": "요약입니다."}]},
    )
    src = tmp_path / "sft.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    dev_file = tmp_path / "dev.json"
    dev_file.write_text(json.dumps(dev[:1], ensure_ascii=False), encoding="utf-8")
    result = F.dedup_files([str(src)], "text", tmp_path / "o.jsonl", against=[str(dev_file)])
    # the record also holds the answer, so a window of it matches, not the whole dialogue
    assert [(m["id"], m["unit"], m["matched_id"], m["match"]) for m in result.contaminated] == [
        ("sft.jsonl:251", "utterances 1-4", dev[0]["id"], "exact")
    ]
    kept = [json.loads(ln) for ln in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[250] not in kept and len(kept) == result.plan.kept.size
