"""Vectorised Simhash: features, fingerprints (against a slow reference), pair search, clusters."""

from __future__ import annotations

import numpy as np
import pytest

from malpyeong.errors import UserError
from malpyeong.prep import simhash as S

# Our own texts (three short diary paragraphs).
A = (
    "지난 주말에 친구들과 함께 강원도 바닷가로 여행을 다녀왔다. 아침 "
    "일찍 출발해서 점심 무렵에 도착했는데, 바람이 생각보다 차가워서 "
    "두꺼운 외투를 꺼내 입었다. 해변을 따라 한참 걷다가 작은 식당에 "
    "들어가 따뜻한 해물칼국수를 먹었고, 오후에는 등대까지 올라가서 사진을 "
    "잔뜩 찍었다. 저녁에는 숙소 근처 시장에서 회를 사다가 다 같이 나눠 "
    "먹으면서 밤늦게까지 이야기를 나눴다. 다음 날 아침에는 일출을 보려고 "
    "다섯 시에 일어났지만 구름이 잔뜩 끼어서 해는 끝내 보지 못했다. "
    "그래도 오랜만에 바다 냄새를 맡으니 마음이 한결 가벼워졌다."
)
B = (
    "요즘 회사 근처에 새로 생긴 도서관에 자주 간다. 건물이 넓고 "
    "조용해서 퇴근 후에 책을 읽기에 딱 좋다. 지난달에는 역사 소설 세 "
    "권과 요리책 한 권을 빌렸는데, 요리책에 나온 된장찌개 만드는 법을 "
    "따라 해 봤더니 가족들이 맛있다고 칭찬해 주었다. 도서관 이층에는 "
    "작은 카페도 있어서 따뜻한 유자차를 마시며 창밖을 내다보곤 한다. "
    "주말에는 아이들을 위한 동화 읽기 모임이 열리는데, 조카를 데리고 "
    "한번 가 볼 생각이다. 책을 가까이하게 되니 휴대전화를 들여다보는 "
    "시간이 눈에 띄게 줄어들어서 스스로도 놀라고 있다."
)
C = (
    "올해 봄부터 베란다에서 작은 텃밭을 가꾸기 시작했다. 처음에는 상추와 "
    "깻잎만 심었는데 생각보다 잘 자라서 방울토마토와 고추도 몇 포기 더 "
    "들여놓았다. 매일 아침 물을 주고 잎을 살펴보는 일이 하루의 즐거움이 "
    "되었다. 한여름에는 벌레가 꼬여서 고생을 했지만, 이웃 할머니께서 "
    "알려 주신 대로 식초 섞은 물을 뿌렸더니 금방 사라졌다. 직접 키운 "
    "채소로 비빔밥을 해 먹으면 어느 식당에서 먹는 것보다 맛있게 "
    "느껴진다. 내년에는 주말농장을 하나 빌려서 감자와 옥수수까지 길러 "
    "보고 싶다는 욕심이 생겼다."
)

_M = (1 << 64) - 1


def _fmix(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M
    return h ^ (h >> 33)


def reference_fingerprint(text: str) -> int:
    """The definition, one feature and one bit at a time (slow, obviously right)."""
    feats = S.char5_features(text)
    if not feats:
        return 0
    salt = S._SALT["char5"]
    if len(feats[0]) < 5:
        return S._short_hash([ord(c) for c in feats[0]], S._SALT["short"] ^ salt)
    hashes = []
    for f in feats:
        h = salt
        for c in f:
            h = (h * 0x100000001B3 + ord(c)) & _M
        hashes.append(_fmix(h))
    fp = 0
    for b in range(64):
        if 2 * sum((h >> b) & 1 for h in hashes) > len(hashes):
            fp |= 1 << b
    return fp


def test_normalize_and_char5_features() -> None:
    assert S.normalize("Hello, 세상!!  ㅋㅋㅋㅋㅋ ㅠㅠ_ok 😀") == "hello세상ㅋㅋㅠㅠok"
    assert S.char5_features("가나다, 라마바!") == ["가나다라마", "나다라마바"]
    assert S.char5_features("가 나?") == ["가나"]
    assert S.char5_features(" ... ") == []


def _stream_text(texts: list[str]) -> list[str]:
    """The vectorised normalisation, turned back into strings."""
    out = [""] * len(texts)
    for a, _, sym, lengths in S._normalized(texts):
        ends = np.cumsum(lengths)
        for i, (e, n) in enumerate(zip(ends.tolist(), lengths.tolist(), strict=True)):
            out[a + i] = "".join(map(chr, sym[e - n : e].tolist()))
    return out


def test_vectorised_normalisation_equals_regex_normalize() -> None:
    rng = np.random.default_rng(3)
    # every BMP code point (surrogates included) in random texts, plus astral letters/emoji
    cps = rng.permutation(0x10000)
    texts = ["".join(map(chr, cps[i : i + 97].tolist())) for i in range(0, 0x10000, 97)]
    texts += [
        "İstanbul ΟΔΟΣ σοφός ΣΑΣ",
        "𐐀𐐨 𝐀𝐁 😀 ㅋㅋㅋㅋ 하하하하 aaAA",
        "",
        "  ",
        "_a_b_",
        "Σ",
        "x" * 600 + "y",
        "ǅ ẞ ß Ꭰ",
    ]
    assert _stream_text(texts) == [S.normalize(t) for t in texts]


def test_exact_keys_equal_exactly_for_equal_normalised_texts() -> None:
    texts = [
        A,
        A.replace(" ", "  ").replace(".", "!"),
        A.upper(),
        A[:-1],
        A[1:],
        "가나다",
        "가 나 다!",
        "가나다라",
        "",
        "!!",
        "abcde",
        "ABCDE.",
        "edcba",
        "ab" * 40,
        "ba" * 40,
        "ㅋㅋㅋㅋㅋ 와",
        "ㅋㅋ와",
    ]
    keys = S.exact_keys(texts).tolist()
    norms = [S.normalize(t) for t in texts]
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert (keys[i] == keys[j]) == (norms[i] == norms[j]), (texts[i], texts[j])
    # a text's key does not depend on its neighbours or on chunking
    assert S.exact_keys([C, A])[1] == keys[0] and S.exact_keys(["x", A, "y"])[1] == keys[0]
    fps, keys2 = S.fingerprints_and_keys(texts)
    assert keys2.tolist() == keys and fps.tolist() == S.fingerprints(texts).tolist()


TEXTS = [
    A,
    B,
    C,
    "",
    "가나",
    "ab 12",
    "ㅋㅋㅋㅋㅋㅋㅋ",
    "우리 내일 ㅋㅋㅋ ㅋㅋ 같이 밥 먹을까? 좋지 😀 어디서?ㅠㅠㅠㅠ",
    "가" * 700 + "나다라" * 5,
    "ABCDEF abcdef",
]


def test_fingerprints_equal_reference() -> None:
    fps = S.fingerprints(TEXTS)
    assert fps.dtype == np.uint64
    assert [int(x) for x in fps] == [reference_fingerprint(t) for t in TEXTS]
    assert int(fps[3]) == 0  # no feature
    assert fps[9] == S.fingerprints(["abcdef ABCDEF"])[0]  # case and order of equal halves


@pytest.mark.parametrize("texts", [["ΟΔΟΣ", "ΑΒΓΔΕΖ"], ["İİİ abc def", "x"], ["A" * 300, "BBB"]])
def test_lower_casing_is_per_text(texts: list[str]) -> None:
    assert [int(x) for x in S.fingerprints(texts)] == [reference_fingerprint(t) for t in texts]


def test_fingerprints_are_stable_across_versions() -> None:
    # golden values: change only on purpose (every stored fingerprint would change)
    assert [hex(int(x)) for x in S.fingerprints([A, "가나"])] == ["0x63793cc0b6f3a1ea", "0x7065df1e9b46dc06"]


def test_chunking_does_not_change_fingerprints(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = S.fingerprints(TEXTS * 3)
    keys = S.exact_keys(TEXTS * 3)
    monkeypatch.setattr(S, "_CHUNK_CHARS", 50)
    assert np.array_equal(S.fingerprints(TEXTS * 3), whole)
    assert np.array_equal(S.exact_keys(TEXTS * 3), keys)


def test_known_near_duplicates_found_and_others_kept() -> None:
    docs = [
        A,
        B,
        C,
        A.replace(".", "!", 1) + " 끝.",  # punctuation edit + one added word
        C[:200] + "정말 " + C[200:],  # one inserted word
        B.replace(" ", "  "),  # spacing only: identical features
        "전혀 다른 이야기: 오늘은 비가 와서 집에서 영화를 두 편이나 봤다.",
    ]
    fps = S.fingerprints(docs)
    pairs = S.near_duplicate_pairs(fps, k=3)
    assert pairs.tolist() == [[0, 3], [1, 5], [2, 4]]
    assert S.hamming(fps[0], fps[3]) <= 3 and S.hamming(fps[1], fps[2]) > 10
    assert S.clusters(len(docs), pairs).tolist() == [0, 1, 2, 0, 2, 1, 6]


def _planted(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fps = rng.integers(0, np.iinfo(np.int64).max, size=n, dtype=np.int64).astype(np.uint64)
    fps ^= rng.integers(0, 2, size=n, dtype=np.int64).astype(np.uint64) << np.uint64(63)
    idx = rng.choice(n, n // 5, replace=False)
    for a, b in zip(idx[: n // 10], idx[n // 10 :], strict=True):
        x = int(fps[a])
        for bit in rng.choice(64, int(rng.integers(0, 7)), replace=False):
            x ^= 1 << int(bit)
        fps[b] = x
    fps[:20] = fps[20]  # a group of 21 identical fingerprints
    return fps


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_block_tables_agree_with_brute_force(k: int) -> None:
    fps = _planted(3000, seed=k)
    table = S.near_duplicate_pairs(fps, k, budget=997)  # small budget: many chunks
    brute = S.all_pairs_bruteforce(fps, k, chunk=256)
    assert len(brute) > 210  # the identical group alone: 210
    assert np.array_equal(table, brute)
    span = S.near_duplicate_pairs(fps, k, spanning=True)
    assert len(span) < len(table)
    assert np.array_equal(S.clusters(len(fps), span), S.clusters(len(fps), table))


def test_cross_pairs_agree_with_brute_force() -> None:
    fps = _planted(2000, seed=7)
    q, r = fps[:700], fps[700:]
    brute = S.all_pairs_bruteforce(fps, 3)
    want = brute[(brute[:, 0] < 700) & (brute[:, 1] >= 700)] - np.array([0, 700])
    got = S.cross_pairs(q, r, 3, budget=101)
    assert len(want) > 20
    assert np.array_equal(got, want[np.lexsort((want[:, 1], want[:, 0]))])


def test_clusters_union_find() -> None:
    pairs = np.array([[5, 6], [1, 3], [3, 7], [6, 8], [0, 9], [8, 2]])
    assert S.clusters(10, pairs).tolist() == [0, 1, 2, 1, 4, 2, 2, 1, 2, 0]
    assert S.clusters(3, np.zeros((0, 2), dtype=np.int64)).tolist() == [0, 1, 2]
    chain = np.stack([np.arange(999, 0, -1), np.arange(998, -1, -1)], axis=1)
    assert (S.clusters(1000, chain) == 0).all()


def test_popcount_and_hamming() -> None:
    x = np.array([0, 1, 0xFF, 0xFFFFFFFFFFFFFFFF, 0x8000000000000001], dtype=np.uint64)
    assert S.popcount(x).tolist() == [0, 1, 8, 64, 2]
    assert S._POP8[x.view(np.uint8)].reshape(-1, 8).sum(axis=1).tolist() == [0, 1, 8, 64, 2]
    assert int(S.hamming(np.uint64(0b1011), np.uint64(0b0110))) == 3


def test_tables_cover_all_bits() -> None:
    for k in (0, 3, 6, 10):
        masks = S._tables(k, 200_000, blocks=k + 1)
        assert len(masks) == k + 1 and sum(masks) == (1 << 64) - 1  # disjoint blocks
    assert len(S._tables(3, 200_000)) == 4  # classic layout for k=3
    masks = S._tables(6, 200_000)  # 8 blocks, pairs of them
    assert len(masks) == 28 and all(bin(m).count("1") == 16 for m in masks)
    with pytest.raises(UserError):
        S._tables(64, 10)


@pytest.mark.parametrize("k, blocks", [(3, 5), (5, 8), (6, None)])
def test_multi_block_tables_agree_with_brute_force(k: int, blocks: int | None) -> None:
    fps = _planted(2000, seed=11)
    assert np.array_equal(S.near_duplicate_pairs(fps, k, blocks=blocks), S.all_pairs_bruteforce(fps, k))


def test_unknown_features_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown features"):
        S.fingerprints(["x"], features="char7")


def test_morph3_features() -> None:
    pytest.importorskip("mecab")
    feats = S.morph3_features("오늘 공원에 산책하러 갈까요?")
    assert feats[0] == "오늘 공원 에"
    assert len(feats) == len(S.morphemes("오늘 공원에 산책하러 갈까요?")) - 2
    fps = S.fingerprints([A, A + " ", B, "가요"], features="morph3")
    assert fps[0] == fps[1] and S.hamming(fps[0], fps[2]) > 10
    assert S.fingerprints([A], "morph3")[0] != S.fingerprints([A], "char5")[0]
