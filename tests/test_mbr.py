"""MBR for summaries: the candidate closest to the others wins (ROUGE-1 or any similarity)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import load_script

from malpyeong.cli import run_cli
from malpyeong.ensemble import mbr_choose, rouge1_similarity

ROOT = Path(__file__).resolve().parents[1]
VOTE = load_script(ROOT / "ensemble/vote.py")

pytest.importorskip("mecab", reason="ROUGE-1 needs python-mecab-ko")

# Our own sentences: a core summary and three expansions that each add unrelated details.
CORE = "두 화자는 주말에 함께 영화를 보기로 했다."
EXTRA = [
    "화자1은 팝콘을 미리 사 두겠다고 했다.",
    "화자2는 표를 인터넷으로 예매했다.",
    "비가 온다고 해서 우산을 챙기기로 했다.",
]


def jaccard(pairs):
    out = []
    for a, b in pairs:
        sa, sb = set(a.split()), set(b.split())
        out.append(len(sa & sb) / len(sa | sb))
    return out


def test_mbr_picks_the_medoid_by_rouge1():
    outer = [f"{CORE} {e}" for e in EXTRA]
    for pos in range(4):
        cands = outer[:pos] + [CORE] + outer[pos:]
        out = mbr_choose([cands], rouge1_similarity)
        assert out.choice == [pos] and out.winners == [[pos]] and not out.ties


def test_mbr_scores_are_mean_similarities():
    cands = [["a b c", "a b d", "a x y", "a b c"]]
    out = mbr_choose(cands, jaccard)
    # sim(0,1)=2/4, sim(0,2)=1/5, sim(0,3)=1, sim(1,2)=1/5, sim(1,3)=2/4, sim(2,3)=1/5
    assert out.scores[0].tolist() == pytest.approx(
        [(0.5 + 0.2 + 1) / 3, (0.5 + 0.2 + 0.5) / 3, 0.2, (1 + 0.5 + 0.2) / 3]
    )
    # Models 0 and 3 wrote the same text: one choice, both win, no tie.
    assert out.winners == [[0, 3]] and out.choice == [0] and not out.ties
    # Weighted: the mean over the others is weighted by the others' weights.
    out = mbr_choose(cands, jaccard, weights=[1, 10, 1, 1])
    assert out.scores[0, 0] == pytest.approx((10 * 0.5 + 0.2 + 1) / 12)
    assert out.scores[0, 2] == pytest.approx((0.2 + 10 * 0.2 + 0.2) / 12)
    assert out.winners == [[0, 3]]


def test_mbr_two_candidates_tie_and_need_priority():
    cands = [["a b c", "a b d"]]
    out = mbr_choose(cands, jaccard)
    assert out.ties and out.ties[0].winner is None and out.choice == [-1]
    out = mbr_choose(cands, jaccard, priority=[1, 0])
    assert out.choice == [1] and out.ties[0].rule == "priority"
    out = mbr_choose(cands, jaccard, weights=[1, 2])
    assert out.choice == [1] and out.ties[0].rule == "weights"


def _dcs_rows(record: dict, n: int, outputs: list[str] | None) -> list[dict]:
    rows = []
    for i in range(n):
        r = copy.deepcopy(record)
        r["id"] = f"s-{i:02d}"
        r["output"] = outputs[i] if outputs is not None else ""
        rows.append(r)
    return rows


def test_cli_mbr_with_gold(tmp_path, dcs_record, capsys):
    from malpyeong.metrics import rouge1

    outer = [f"{CORE} {e}" for e in EXTRA]
    # Item 0: model b wrote the core (the medoid). Item 1: model c did.
    texts = {
        "a": [outer[0], outer[1]],
        "b": [CORE, outer[2]],
        "c": [outer[1], CORE],
        "d": [outer[2], outer[0]],
    }
    paths = []
    for name, outs in texts.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(_dcs_rows(dcs_record, 2, outs), ensure_ascii=False), encoding="utf-8")
        paths.append(str(p))
    gold = tmp_path / "dev.json"
    refs = [CORE, "두 화자는 주말 영화 약속을 잡았다."]
    gold.write_text(json.dumps(_dcs_rows(dcs_record, 2, refs), ensure_ascii=False), encoding="utf-8")
    test = tmp_path / "test.json"
    test.write_text(json.dumps(_dcs_rows(dcs_record, 2, None), ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "mbr.json"
    report = tmp_path / "report.json"
    assert (
        run_cli(
            VOTE.main,
            [
                *paths,
                "--task",
                "dcs",
                "--gold",
                str(gold),
                "--output",
                str(out),
                "--test",
                str(test),
                "--report",
                str(report),
            ],
        )
        == 0
    )
    text = capsys.readouterr().out
    assert [r["output"] for r in json.loads(out.read_text())] == [CORE, CORE]
    assert "MBR by rouge1: 0 of 2 ids were ties" in text
    assert "s-00: b" in text and "s-01: c" in text
    rep = json.loads(report.read_text())
    assert rep["winners"] == {"s-00": ["b"], "s-01": ["c"]}
    assert rep["dev"]["ensemble"]["rouge1"] == pytest.approx(rouge1(refs, [CORE, CORE]))
    assert rep["dev"]["rouge1"]["a"] == pytest.approx(rouge1(refs, texts["a"]))
    assert rep["dev"]["oracle"]["rouge1"] >= rep["dev"]["ensemble"]["rouge1"]
    assert "MBR ensemble" in text and "passes the official submission checks" in text


def test_cli_mbr_two_models_need_priority(tmp_path, dcs_record, capsys):
    paths = []
    for name, t in (("x", CORE), ("y", f"{CORE} {EXTRA[0]}")):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(_dcs_rows(dcs_record, 1, [t]), ensure_ascii=False), encoding="utf-8")
        paths.append(str(p))
    out = tmp_path / "o.json"
    assert run_cli(VOTE.main, [*paths, "--task", "dcs", "--output", str(out)]) == 2
    assert "--priority" in capsys.readouterr().err and not out.exists()
    assert run_cli(VOTE.main, [*paths, "--task", "dcs", "--output", str(out), "--priority", "y", "x"]) == 0
    assert json.loads(out.read_text())[0]["output"] == f"{CORE} {EXTRA[0]}"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 10-layer BERT with a character vocabulary of our sentences."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    chars = sorted(set("".join([CORE, *EXTRA]).replace(" ", "")))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    path = tmp_path_factory.mktemp("bert")
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False)
    import torch

    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=10,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=128,
        )
    ).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_mbr_by_bertscore_uses_pairwise_f1(tiny_bert, tmp_path, dcs_record, capsys):
    from malpyeong.metrics import BertScorer

    texts = {"a": f"{CORE} {EXTRA[0]}", "b": CORE, "c": f"{CORE} {EXTRA[1]}", "d": EXTRA[2]}
    paths = []
    for name, t in texts.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(_dcs_rows(dcs_record, 1, [t]), ensure_ascii=False), encoding="utf-8")
        paths.append(str(p))
    scorer = BertScorer(str(tiny_bert))
    names = list(texts)
    mean = {}
    for x in names:
        others = [y for y in names if y != x]
        f = scorer.score([texts[y] for y in others], [texts[x]] * len(others))
        mean[x] = sum(s["f"] for s in f) / len(f)
    expected = max(names, key=lambda n: mean[n])
    out = tmp_path / "o.json"
    assert (
        run_cli(
            VOTE.main, [*paths, "--task", "dcs", "--output", str(out), "--bertscore-model", str(tiny_bert)]
        )
        == 0
    )
    assert "MBR by bertscore" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["output"] == texts[expected]
