"""Metrics: CCI breakdowns, official-parity ROUGE-1, BERTScore math, BLEURT loading, DCS bundle.

All texts here are written for these tests (none comes from the competition data). Models are
tiny random networks built in tmp_path, so everything runs offline in seconds.
"""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import pytest

from malpyeong import metrics
from malpyeong.errors import UserError
from malpyeong.metrics import (
    accuracy,
    bertscore,
    bleurt,
    cci_report,
    dcs_scores,
    official,
    rouge1,
    rouge1_items,
    rouge1_pair,
    rouge_tokens,
)

# ------------------------------------------------------------------------------------------ CCI

I1, I2, I3 = "inference_1", "inference_2", "inference_3"
GOLD = [I1, I1, I2, I3, I2, I1, I3, I3, I2, I1]
PRED = [I1, I2, I2, I3, I1, I1, I2, I3, I2, I3]
CATS = ["A", "A", "B", "B", "C", "C", "A", "B", "C", "A"]


def test_accuracy_counts_exact_matches():
    assert accuracy(GOLD, PRED) == 0.6  # items 1, 3, 4, 6, 8, 9
    assert accuracy([I1], [I1]) == 1.0
    with pytest.raises(ValueError):
        accuracy([I1, I2], [I1])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_cci_report_on_constructed_example():
    rep = cci_report(GOLD, PRED, CATS)
    assert (rep["n"], rep["correct"], rep["accuracy"]) == (10, 6, 0.6)
    # rows gold, columns pred: gold i1 -> pred i1,i2,i1,i3; gold i2 -> i2,i1,i2; gold i3 -> i3,i2,i3
    assert rep["confusion"]["matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert rep["confusion"]["labels"] == [I1, I2, I3]
    assert rep["by_category"] == {
        "A": {"n": 4, "correct": 1, "accuracy": 0.25},
        "B": {"n": 3, "correct": 3, "accuracy": 1.0},
        "C": {"n": 3, "correct": 2, "accuracy": 2 / 3},
    }
    assert rep["by_gold_position"] == {
        I1: {"n": 4, "correct": 2, "accuracy": 0.5},
        I2: {"n": 3, "correct": 2, "accuracy": 2 / 3},
        I3: {"n": 3, "correct": 2, "accuracy": 2 / 3},
    }
    assert rep["pred_distribution"] == {I1: 3, I2: 4, I3: 3}
    assert rep["invalid_predictions"] == 0


def test_cci_report_invalid_prediction_and_multi_category():
    rep = cci_report([I1, I2, I3], [I1, "inference_4", I3], [["x", "y"], "x", "y"])
    assert rep["correct"] == 2 and rep["invalid_predictions"] == 1
    assert rep["confusion"]["matrix"] == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert rep["by_category"]["x"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert rep["by_category"]["y"] == {"n": 2, "correct": 2, "accuracy": 1.0}
    assert "by_category" not in cci_report([I1], [I1])
    with pytest.raises(ValueError):
        cci_report(["bogus"], [I1])


# -------------------------------------------------------------------------------------- ROUGE-1
# Golden pairs. Morphemes are python-mecab-ko's (mecab-ko-dic 2.1.1); they are asserted first so a
# dictionary change shows up as such, not as a wrong score.
#
# 1. ref  "나는 사과를 좋아한다."  -> 나 / 는 / 사과 / 를 / 좋아한다            (5)
#    pred "나는 배를 좋아한다"     -> 나 / 는 / 배 / 를 / 좋아한다              (5)
#    overlap {나, 는, 를, 좋아한다} = 4;  P = 4/5, R = 4/5, F = 2PR/(P+R) = 4/5
# 2. ref  "오늘 날씨가 맑다."      -> 오늘 / 날씨 / 가 / 맑 / 다                (5)
#    pred "오늘은 날씨가 흐리다."  -> 오늘 / 은 / 날씨 / 가 / 흐리 / 다         (6)
#    overlap {오늘, 날씨, 가, 다} = 4;  P = 4/6 = 2/3, R = 4/5,
#    F = 2(2/3)(4/5) / (2/3 + 4/5) = (16/15) / (22/15) = 8/11
# 3. ref  "고양이가 고양이를 본다" -> 고양이 / 가 / 고양이 / 를 / 본다         (5)
#    pred "고양이 고양이 고양이"   -> 고양이 / 고양이 / 고양이                  (3)
#    clipped overlap: min(3 in pred, 2 in ref) = 2;  P = 2/3, R = 2/5,
#    F = 2(2/3)(2/5) / (2/3 + 2/5) = (8/15) / (16/15) = 1/2
# 4. ref  "두 사람은 주말에 영화를 봤다."
#         -> 두 / 사람 / 은 / 주말 / 에 / 영화 / 를 / 봤 / 다                  (9)
#    pred "화자는 주말에 친구와 영화를 봤다고 말했다."
#         -> 화자 / 는 / 주말 / 에 / 친구 / 와 / 영화 / 를 / 봤 / 다고 / 말 / 했 / 다   (13)
#    overlap {주말, 에, 영화, 를, 봤, 다} = 6 (은≠는, 다고≠다);  P = 6/13, R = 6/9 = 2/3,
#    F = 2(6/13)(2/3) / (6/13 + 2/3) = (24/39) / (44/39) = 6/11
GOLDEN = [
    (
        "나는 사과를 좋아한다.",
        "나는 배를 좋아한다",
        ("나", "는", "사과", "를", "좋아한다"),
        ("나", "는", "배", "를", "좋아한다"),
        Fraction(4, 5),
        Fraction(4, 5),
        Fraction(4, 5),
    ),
    (
        "오늘 날씨가 맑다.",
        "오늘은 날씨가 흐리다.",
        ("오늘", "날씨", "가", "맑", "다"),
        ("오늘", "은", "날씨", "가", "흐리", "다"),
        Fraction(2, 3),
        Fraction(4, 5),
        Fraction(8, 11),
    ),
    (
        "고양이가 고양이를 본다",
        "고양이 고양이 고양이",
        ("고양이", "가", "고양이", "를", "본다"),
        ("고양이", "고양이", "고양이"),
        Fraction(2, 3),
        Fraction(2, 5),
        Fraction(1, 2),
    ),
    (
        "두 사람은 주말에 영화를 봤다.",
        "화자는 주말에 친구와 영화를 봤다고 말했다.",
        ("두", "사람", "은", "주말", "에", "영화", "를", "봤", "다"),
        ("화자", "는", "주말", "에", "친구", "와", "영화", "를", "봤", "다고", "말", "했", "다"),
        Fraction(6, 13),
        Fraction(2, 3),
        Fraction(6, 11),
    ),
]


@pytest.mark.parametrize(("ref", "pred", "ref_toks", "pred_toks", "p", "r", "f"), GOLDEN)
def test_rouge1_golden_pairs(ref, pred, ref_toks, pred_toks, p, r, f):
    assert rouge_tokens(ref) == ref_toks
    assert rouge_tokens(pred) == pred_toks
    got = rouge1_pair(ref, pred)
    assert got["p"] == pytest.approx(float(p), abs=1e-9)
    assert got["r"] == pytest.approx(float(r), abs=1e-9)
    assert got["f"] == pytest.approx(float(f), abs=1e-9)


def test_rouge1_corpus_is_mean_of_item_f():
    refs = [g[0] for g in GOLDEN]
    preds = [g[1] for g in GOLDEN]
    expected = float(sum(g[6] for g in GOLDEN) / len(GOLDEN))  # (4/5 + 8/11 + 1/2 + 6/11) / 4
    assert rouge1(refs, preds) == pytest.approx(expected, abs=1e-9)
    assert rouge1_items(refs, preds) == pytest.approx([float(g[6]) for g in GOLDEN], abs=1e-9)


def _independent_rouge1(refs: list[str], preds: list[str]) -> float:
    """The official formula written plainly, sharing no code with malpyeong.metrics."""
    from mecab import MeCab

    tagger = MeCab()

    def kept(c: str) -> bool:
        return c.isascii() and c.isalnum() or "가" <= c <= "힣"

    def toks(text: str) -> list[str]:
        text = " ".join(text.split()[:1000]).lower()
        text = "".join(c if kept(c) else " " for c in text).strip()
        return [m for m in tagger.morphs(text) if m.strip()] if text else []

    fs = []
    for ref, pred in zip(refs, preds, strict=True):
        rt, pt = toks(ref), toks(pred)
        left, overlap = list(rt), 0
        for t in pt:
            if t in left:
                left.remove(t)
                overlap += 1
        p = overlap / len(pt) if pt else 0.0
        r = overlap / len(rt) if rt else 0.0
        fs.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    return sum(fs) / len(fs)


_WORDS = (
    "오늘",
    "날씨가",
    "좋다",
    "화자는",
    "친구와",
    "주말에",
    "영화를",
    "봤다",
    "학교에서",
    "선생님이",
    "말씀하셨다",
    "그래서",
    "우리는",
    "밥을",
    "먹었다",
    "정말",
    "재미있었다",
    "Seoul",
    "TOWER",
    "coffee",
    "Zoom으로",
    "2024년",
    "3월",
    "10시",
    "4.5점",
    "ㅋㅋ",
    "ㅠㅠ",
    "!",
    "?!",
    "...",
    "(웃음)",
    '"인용"',
    "漢字",
    "café",
    "😀",
    "-",
    "A+",
    "여행을",
    "다녀왔다고",
    "했다",
    "가족과",
    "함께",
    "요리를",
    "배우고",
    "싶다고",
    "한다",
)


def test_rouge1_matches_independent_reimplementation_on_random_pairs():
    rng = random.Random(20240607)
    refs, preds = [], []
    for _ in range(40):
        ref_words = [rng.choice(_WORDS) for _ in range(rng.randint(0, 25))]
        pred_words = rng.sample(ref_words, k=len(ref_words) // 2)
        pred_words += [rng.choice(_WORDS) for _ in range(rng.randint(0, 15))]
        rng.shuffle(pred_words)
        sep = rng.choice([" ", "  ", "\n", " \t"])
        refs.append(sep.join(ref_words))
        preds.append(" ".join(pred_words))
    assert rouge1(refs, preds) == pytest.approx(_independent_rouge1(refs, preds), abs=1e-9)
    for ref, pred in zip(refs[:10], preds[:10], strict=True):
        assert rouge1([ref], [pred]) == pytest.approx(_independent_rouge1([ref], [pred]), abs=1e-9)


def test_rouge1_lowercases_and_keeps_digits():
    assert rouge_tokens("SEOUL tower!") == ("seoul", "tower")
    assert rouge1_pair("Seoul Tower", "SEOUL tower")["f"] == 1.0
    assert rouge_tokens("2024년 3월, 가격은 3.5달러") == (
        "2024",
        "년",
        "3",
        "월",
        "가격",
        "은",
        "3",
        "5",
        "달러",
    )
    assert rouge1_pair("2024년 3월", "2023년 3월")["f"] == pytest.approx(3 / 4, abs=1e-9)


def test_rouge1_drops_punctuation_jamo_and_symbols():
    assert rouge_tokens("사과, 배... 그리고 (귤)!") == ("사과", "배", "그리고", "귤")
    assert rouge_tokens("ㅋㅋㅋ 😀 ^^ 漢字 é") == ()
    assert rouge1_pair("사과, 배!", "사과 배")["f"] == 1.0
    assert rouge_tokens("사과\n배\t감") == ("사과", "배", "감")


def test_rouge1_limits_to_first_1000_raw_words():
    thousand = " ".join(["사과"] * 1000)
    # Words past the 1,000th are ignored, so the extra words do not lower precision.
    assert rouge1_pair(thousand, thousand + " 바나나" * 10) == {"p": 1.0, "r": 1.0, "f": 1.0}
    # The limit counts raw whitespace words, punctuation included, before cleaning.
    assert rouge1_pair("사과", " ".join(["!"] * 1000 + ["사과"]))["f"] == 0.0
    assert rouge1_pair("사과", " ".join(["!"] * 999 + ["사과"]))["f"] == 1.0
    assert rouge1_pair(" ".join(["!"] * 1000 + ["사과"]), "사과")["f"] == 0.0


def test_rouge1_empty_sides_score_zero():
    assert rouge1_pair("나는 학생이다", "") == {"p": 0.0, "r": 0.0, "f": 0.0}
    assert rouge1_pair("나는 학생이다", "   ")["f"] == 0.0
    assert rouge1_pair("나는 학생이다", "?!...")["f"] == 0.0
    assert rouge1_pair("", "나는 학생이다")["f"] == 0.0
    assert rouge1(["나는 학생이다", "나는 학생이다"], ["", "나는 학생이다"]) == 0.5
    with pytest.raises(ValueError):
        rouge1(["a"], ["a", "b"])


# ------------------------------------------------------------------------------------ BERTScore

_BERT_TEXTS = [
    "오늘 날씨가 정말 좋네요.",
    "오늘은 날씨가 좋아요",
    "Hello World 2024년",
    "hello world",
    "우리는 내일 공원에 갈 거예요!",
    "친구들과 함께 영화를 봤어요.",
]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 10-layer random BERT with a character vocabulary, saved like a hub checkpoint."""
    torch = pytest.importorskip("torch")
    import transformers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    chars = sorted(set("".join(_BERT_TEXTS).replace(" ", "")))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    path = tmp_path_factory.mktemp("tiny_bert")
    if int(transformers.__version__.split(".")[0]) >= 5:
        tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False)
    else:  # transformers 4 builds the fast tokenizer from a vocab.txt file
        (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=False)
    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=10,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _hand_bertscore(path, ref: str, cand: str, layer: int = 9) -> float:
    """Greedy matching from the full model's hidden states, one sentence at a time, in float64."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def states(text):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc, output_hidden_states=True).hidden_states[layer][0].double()
        return h / h.norm(dim=-1, keepdim=True)

    r, c = states(ref), states(cand)
    sim = c @ r.T  # rows: candidate tokens, cols: reference tokens ([CLS]/[SEP] included)
    p = sim.max(dim=1).values[1:-1].mean()  # [CLS]/[SEP] carry no weight
    rec = sim.max(dim=0).values[1:-1].mean()
    return float(2 * p * rec / (p + rec))


def test_bertscore_equals_hand_computation(tiny_bert):
    refs = [_BERT_TEXTS[0], _BERT_TEXTS[2], _BERT_TEXTS[4], _BERT_TEXTS[5]]
    preds = [_BERT_TEXTS[1], _BERT_TEXTS[3], _BERT_TEXTS[5], _BERT_TEXTS[5]]
    res = bertscore(refs, preds, model_path=str(tiny_bert), device="cpu", batch_size=3)
    assert res.notice is None
    hand = [_hand_bertscore(tiny_bert, r, c) for r, c in zip(refs, preds, strict=True)]
    assert res.per_item == pytest.approx(hand, abs=1e-5)
    assert res.per_item[3] == pytest.approx(1.0, abs=1e-6)  # identical texts
    assert res.value == pytest.approx(sum(hand) / len(hand), abs=1e-5)
    assert len({round(v, 4) for v in hand}) == 4  # the test inputs really differ


def test_bertscore_empty_candidate_scores_zero(tiny_bert):
    res = bertscore(
        [_BERT_TEXTS[0], _BERT_TEXTS[1]], ["", _BERT_TEXTS[1]], model_path=str(tiny_bert), device="cpu"
    )
    assert res.per_item[0] == 0.0
    assert res.per_item[1] == pytest.approx(1.0, abs=1e-6)


def test_bertscore_absent_model_returns_none_with_notice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = bertscore(["가"], ["가"], model_path=str(tmp_path / "no_such_model"))
    assert res.value is None and res.per_item is None
    assert "bertscore not computed" in res.notice and "no_such_model" in res.notice


def test_bertscore_too_few_layers_is_reported(tiny_bert):
    res = bertscore(["가"], ["가"], model_path=str(tiny_bert), layer=11, device="cpu")
    assert res.value is None and "layer 11" in res.notice


# --------------------------------------------------------------------------------------- BLEURT

_SPM_TEXTS = [
    "오늘 날씨가 정말 좋네요.",
    "the quick brown fox jumps over the lazy dog",
    "우리는 내일 공원에 갈 거예요!",
    "Hello World 2024년 3월",
    "친구들과 함께 영화를 봤어요.",
]


def _make_bleurt(folder, *, emb: int | None, max_pos: int = 64):
    """A random checkpoint in the BLEURT-20 PyTorch port layout; returns its weights."""
    spm = pytest.importorskip("sentencepiece")
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    folder.mkdir()
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(_SPM_TEXTS * 10), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spm"),
        vocab_size=90,
        model_type="unigram",
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        pad_piece="[PAD]",
        unk_piece="[UNK]",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    vocab = spm.SentencePieceProcessor(model_file=str(folder / "spm.model")).get_piece_size()
    h, e, inter = 8, emb or 8, 16
    shapes = {
        "bleurt.embeddings.word_embeddings.weight": (vocab, e),
        "bleurt.embeddings.position_embeddings.weight": (max_pos, e),
        "bleurt.embeddings.token_type_embeddings.weight": (2, e),
        "bleurt.embeddings.LayerNorm.weight": (e,),
        "bleurt.embeddings.LayerNorm.bias": (e,),
        "bleurt.pooler.dense.weight": (h, h),
        "bleurt.pooler.dense.bias": (h,),
        "classifier.weight": (1, h),
        "classifier.bias": (1,),
    }
    if emb is not None:
        shapes["bleurt.encoder.embedding_projection.weight"] = (h, e)
        shapes["bleurt.encoder.embedding_projection.bias"] = (h,)
    for i in range(2):
        pre = f"bleurt.encoder.layer.{i}."
        for name in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            shapes[pre + name + ".weight"], shapes[pre + name + ".bias"] = (h, h), (h,)
        shapes[pre + "intermediate.dense.weight"] = (inter, h)
        shapes[pre + "intermediate.dense.bias"] = (inter,)
        shapes[pre + "output.dense.weight"] = (h, inter)
        shapes[pre + "output.dense.bias"] = (h,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[pre + ln + ".weight"], shapes[pre + ln + ".bias"] = (h,), (h,)
    gen = torch.Generator().manual_seed(1)
    weights = {k: torch.randn(s, generator=gen) * 0.5 for k, s in shapes.items()}
    weights["bleurt.embeddings.position_ids"] = torch.arange(max_pos).unsqueeze(0)  # a buffer
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bleurt",
                "architectures": ["BleurtForSequenceClassification"],
                "vocab_size": vocab,
                "embedding_size": emb,
                "hidden_size": h,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": inter,
                "hidden_act": "gelu",
                "hidden_dropout_prob": 0,
                "attention_probs_dropout_prob": 0,
                "max_position_embeddings": max_pos,
                "type_vocab_size": 2,
                "layer_norm_eps": 1e-12,
                "pad_token_id": 0,
            }
        ),
        encoding="utf-8",
    )
    return weights


def _hand_bleurt(w, ids: list[int], segments: list[int], heads: int = 2) -> float:
    """BERT post-LN forward written out by hand from the port's weight names, one pair."""
    import torch

    def lin(x, name):
        return x @ w[name + ".weight"].double().T + w[name + ".bias"].double()

    def ln(x, name):
        return torch.nn.functional.layer_norm(
            x, x.shape[-1:], w[name + ".weight"].double(), w[name + ".bias"].double(), eps=1e-12
        )

    p = "bleurt.embeddings."
    x = (
        w[p + "word_embeddings.weight"][ids]
        + w[p + "position_embeddings.weight"][: len(ids)]
        + w[p + "token_type_embeddings.weight"][segments]
    ).double()
    x = ln(x, p + "LayerNorm")
    if "bleurt.encoder.embedding_projection.weight" in w:
        x = lin(x, "bleurt.encoder.embedding_projection")
    for i in range(2):
        pre = f"bleurt.encoder.layer.{i}."
        q, k, v = (
            lin(x, pre + "attention.self." + n).view(len(ids), heads, -1).transpose(0, 1)
            for n in ("query", "key", "value")
        )
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        ctx = (att @ v).transpose(0, 1).reshape(len(ids), -1)
        a = ln(lin(ctx, pre + "attention.output.dense") + x, pre + "attention.output.LayerNorm")
        inner = torch.nn.functional.gelu(lin(a, pre + "intermediate.dense"))
        x = ln(lin(inner, pre + "output.dense") + a, pre + "output.LayerNorm")
    pooled = torch.tanh(lin(x[0], "bleurt.pooler.dense"))
    return float(lin(pooled, "classifier")[0])


@pytest.mark.parametrize("emb", [6, None])
def test_bleurt_port_checkpoint_matches_hand_forward(tmp_path, emb):
    import sentencepiece

    weights = _make_bleurt(tmp_path / "ckpt", emb=emb)
    refs = ["오늘 날씨가 정말 좋네요.", "Hello World 2024년", "우리는 내일 공원에 갈 거예요!", "x"]
    preds = ["오늘은 날씨가 좋아요", "hello world", "친구들과 함께 영화를 봤어요. 공원에 갔어요", ""]
    res = bleurt(refs, preds, tmp_path / "ckpt", device="cpu", batch_size=3)
    assert res.notice is None

    sp = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "ckpt" / "spm.model"))
    cls, sep = sp.piece_to_id("[CLS]"), sp.piece_to_id("[SEP]")
    hand = []
    for ref, pred in zip(refs, preds, strict=True):
        r_ids, p_ids = sp.encode(ref), sp.encode(pred)
        ids = [cls, *r_ids, sep, *p_ids, sep]
        hand.append(_hand_bleurt(weights, ids, [0] * (len(r_ids) + 2) + [1] * (len(p_ids) + 1)))
    assert res.per_item == pytest.approx(hand, abs=1e-5)
    assert res.value == pytest.approx(sum(hand) / len(hand), abs=1e-5)
    assert len({round(v, 4) for v in hand}) == 4


def test_bleurt_truncates_longer_side_first(tmp_path):
    _make_bleurt(tmp_path / "ckpt", emb=6, max_pos=24)
    scorer = metrics.BleurtScorer(tmp_path / "ckpt", device="cpu")
    long_ref = " ".join(_SPM_TEXTS)
    ids, segments = scorer.encode(long_ref, "x")
    n_cand = len(scorer.sp.encode("x"))
    assert len(ids) == 24 and segments.count(1) == n_cand + 1
    assert ids[0] == scorer.cls_id and ids[-1] == scorer.sep_id
    assert ids[1 : 22 - n_cand] == scorer.sp.encode(long_ref)[: 21 - n_cand]


def test_bleurt_absent_checkpoint_returns_none_with_notice(tmp_path):
    res = bleurt(["가"], ["가"], None)
    assert res.value is None and "no checkpoint given" in res.notice
    # a checkpoint the user named but that does not load is an error, not a silent gap
    with pytest.raises(UserError, match="cannot load the BLEURT checkpoint") as err:
        bleurt(["가"], ["가"], tmp_path / "missing")
    assert err.value.field == "bleurt_checkpoint" and "missing" in err.value.line()


# ------------------------------------------------------------------------------------------ DCS


def test_dcs_scores_with_all_metrics(tmp_path, tiny_bert):
    _make_bleurt(tmp_path / "ckpt", emb=6)
    refs = [g[0] for g in GOLDEN]
    preds = [g[1] for g in GOLDEN]
    out = dcs_scores(
        refs, preds, bertscore_model=str(tiny_bert), bleurt_checkpoint=tmp_path / "ckpt", device="cpu"
    )
    assert out["complete"] and out["aggregate_of"] == ["rouge1", "bertscore", "bleurt"]
    assert out["notices"] == []
    assert out["rouge1"] == pytest.approx(rouge1(refs, preds), abs=1e-12)
    expected = (out["rouge1"] + out["bertscore"] + out["bleurt"]) * 100 / 3
    assert out["aggregate"] == pytest.approx(expected, abs=1e-9)
    assert len(out["per_item"]["bleurt"]) == len(refs)


def test_dcs_scores_reports_missing_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refs = [g[0] for g in GOLDEN]
    preds = [g[1] for g in GOLDEN]
    # a metric model the user named that does not load: an error (exit 2), not a silent gap
    with pytest.raises(UserError, match="field .bertscore_model.: folder not found"):
        dcs_scores(refs, preds, bertscore_model=str(tmp_path / "nothing_here"))
    # the default BERTScore model, absent from the offline cache, and no BLEURT: notices
    monkeypatch.setattr(official, "BERTSCORE_MODEL", str(tmp_path / "not_cached"))
    out = dcs_scores(refs, preds)
    assert out["bertscore"] is None and out["bleurt"] is None
    assert out["aggregate_of"] == ["rouge1"] and not out["complete"]
    assert out["aggregate"] == pytest.approx(100 * rouge1(refs, preds), abs=1e-9)
    assert len(out["notices"]) == 2
    skipped = dcs_scores(refs, preds, skip=("bertscore", "bleurt"))
    assert skipped["aggregate_of"] == ["rouge1"]
    assert all("skipped on request" in n for n in skipped["notices"])
    with pytest.raises(ValueError):
        dcs_scores(refs, preds, skip=("bleu",))
