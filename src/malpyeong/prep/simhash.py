"""Vectorised 64-bit Simhash for Korean text: fingerprints, near-duplicate pairs, clusters.

Why it is fast: no Python loop touches a feature. All texts of a chunk are joined into one
code-point array; character 5-grams are hashed there with a polynomial hash and a 64-bit
finaliser (``fmix64``), and per-text bit sums are taken 8 bits at a time by adding
``(h >> b) & 0x0101010101010101`` (eight byte-wide counters in one ``uint64``) with
``np.add.reduceat``. Candidates are found by permuted-block tables: with ``k + 1`` blocks,
two fingerprints within ``k`` bits agree exactly on at least one block (pigeonhole), so sorting
by each block and comparing only inside equal-key runs finds every pair (for larger ``k``,
more blocks and one table per combination of ``blocks - k`` of them: same guarantee, smaller
buckets).

Hashes are stable across runs, machines and Python versions (no ``hash()``; the morpheme
vocabulary is hashed with ``blake2b``).

Why this module is long: it is one algorithm, from text to clusters (normalise, hash, count
bits, search the block tables, join), each step a few vectorised numpy lines whose layout the
next step relies on; the readable reference definitions (:func:`normalize`,
:func:`char5_features`) sit beside them so the tests can hold the fast path to them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import combinations
from math import comb

import numpy as np

from malpyeong.errors import UserError

FEATURES = ("char5", "morph3")

_U64 = np.uint64
_P = _U64(0x100000001B3)  # odd multiplier (FNV-64 prime) for the polynomial n-gram hash
_C1 = _U64(0xFF51AFD7ED558CCD)  # MurmurHash3 fmix64 constants
_C2 = _U64(0xC4CEB9FE1A85EC53)
_LANES = _U64(0x0101010101010101)  # one bit per byte: eight 8-bit counters in a uint64
_SEG = 255  # features per reduceat segment: byte counters never overflow
_SALT = {"char5": 0x9E3779B97F4A7C15, "morph3": 0xD6E8FEB86659FD93, "short": 0x2545F4914F6CDD1D}
_CHUNK_CHARS = 500_000  # code points per processing chunk (cache-sized; bounds memory)


# ---------------------------------------------------------------------------------------------
# normalisation and reference (slow, readable) features
# ---------------------------------------------------------------------------------------------

_DROP = re.compile(r"[\W_]+")  # everything but letters and digits (str.isalnum)
_RUNS = re.compile(r"(.)\1{2,}")  # a character repeated 3+ times (ㅋㅋㅋㅋ, ㅠㅠㅠ, 하하하)


@lru_cache(maxsize=1)
def _norm_table() -> np.ndarray:
    """What every code point becomes in :func:`normalize`: its lower case, or 0 (dropped).

    BMP filled now (~30 ms), astral code points on first sight. Only U+0130 (İ) lowers to two
    characters, ``i`` and a combining dot that is dropped, so a per-code-point table is exact
    except for Σ, whose lower case depends on its neighbours (see :func:`_normalized`).
    """
    table = np.zeros(0x110000, dtype=np.uint32)
    table[:0x10000] = [_norm_code(low) for low in map(str.lower, map(chr, range(0x10000)))]
    return table


@lru_cache(maxsize=1)
def _bmp_table() -> np.ndarray:
    """The BMP part as uint16 (a BMP character's lower case is a BMP character)."""
    return _norm_table()[:0x10000].astype(np.uint16)


def _norm_code(low: str) -> int:
    if len(low) == 1:
        return ord(low) if low.isalnum() else 0
    # only U+0130 (İ) lowers to two characters: i and a combining dot, which is dropped
    kept = [c for c in low if c.isalnum()]
    return ord(kept[0]) if len(kept) == 1 else 0


_ASTRAL_DONE: set[int] = set()


def _norm_codes(joined: str) -> np.ndarray:
    """The table applied to every code point of ``joined`` (0: dropped), as uint16 when the
    text is all BMP (half the memory traffic) and uint32 otherwise."""
    table = _norm_table()
    b16 = joined.encode("utf-16-le", "surrogatepass")
    if len(b16) == 2 * len(joined):  # no astral character: one 16-bit unit each
        return np.take(_bmp_table(), np.frombuffer(b16, dtype="<u2"))  # take: faster than []
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    for cp in np.unique(cps[cps >= 0x10000]).tolist():
        if cp not in _ASTRAL_DONE:
            table[cp] = _norm_code(chr(cp).lower())
            _ASTRAL_DONE.add(cp)
    return np.take(table, cps)


def normalize(text: str) -> str:
    """Lower-case, keep only letters and digits, cut runs of one character to two.

    The string the char5 features come from. Runs are cut because laughter and crying
    (``ㅋㅋㅋㅋㅋㅋ``, ``ㅠㅠㅠ``) would otherwise fill a short text with one repeated 5-gram
    and make unrelated chatty texts look alike. Texts equal after this are exact duplicates.
    """
    return _RUNS.sub(r"\1\1", _DROP.sub("", text.lower()))


def char5_features(text: str) -> list[str]:
    """Character 5-grams of the normalised text (a shorter non-empty text is one feature).

    The readable definition of what :func:`fingerprints` hashes; used to feed baselines.
    """
    s = normalize(text)
    if len(s) < 5:
        return [s] if s else []
    return [s[i : i + 5] for i in range(len(s) - 4)]


@lru_cache(maxsize=1)
def _mecab():  # noqa: ANN202 - optional dependency, imported lazily
    try:
        from mecab import MeCab
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UserError("features 'morph3' need Mecab", hint="pip install python-mecab-ko") from err
    return MeCab()


def morphemes(text: str) -> list[str]:
    """Mecab morpheme surfaces, lower-cased, without punctuation/symbol/space-only tokens."""
    out = []
    for m in _mecab().morphs(text):
        m = normalize(m)
        if m:
            out.append(m)
    return out


def morph3_features(text: str) -> list[str]:
    """Morpheme 3-grams joined by a space (fewer than 3 morphemes: all of them as one)."""
    ms = morphemes(text)
    if len(ms) < 3:
        return [" ".join(ms)] if ms else []
    return [" ".join(ms[i : i + 3]) for i in range(len(ms) - 2)]


# ---------------------------------------------------------------------------------------------
# hashing and bit counting
# ---------------------------------------------------------------------------------------------


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 finaliser, in place: a bijection that spreads every input bit to all 64."""
    h ^= h >> _U64(33)
    h *= _C1
    h ^= h >> _U64(33)
    h *= _C2
    h ^= h >> _U64(33)
    return h


def _short_hash(symbols: Sequence[int], salt: int) -> int:
    """Hash of a whole short symbol sequence (the single feature of a short text)."""
    mask = (1 << 64) - 1
    h = (salt ^ len(symbols)) & mask
    for s in symbols:
        h = (h * int(_P) + int(s)) & mask
    arr = np.array([h], dtype=_U64)
    return int(_fmix64(arr)[0])


def _ngram_hashes(sym: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int, salt: int) -> np.ndarray:
    """Hash of the n-gram starting at every position of a concatenated symbol stream.

    Positions whose n-gram would cross the end of its text (the last ``n - 1`` of every text,
    all of a shorter one) get 0, which adds nothing to any bit count; this keeps every text's
    features in place, so no gather is needed.
    """
    total = len(sym)
    m = total - (n - 1)
    h = np.zeros(total, dtype=_U64)
    if m <= 0:
        return h
    hv = h[:m]
    hv += _U64(salt)
    sym = sym.astype(_U64, copy=False)  # adding uint64 to uint64 is faster than mixed types
    for j in range(n):
        hv *= _P
        hv += sym[j : j + m]
    _fmix64(hv)
    tail = np.minimum(lengths, n - 1)  # crossing positions per text
    first = np.cumsum(tail) - tail
    pos = np.repeat(starts + lengths - tail, tail) + (np.arange(int(tail.sum())) - np.repeat(first, tail))
    h[pos] = 0
    return h


def _bit_counts(h: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per text, how many of its feature hashes have each of the 64 bits set: (T, 64) int64.

    ``h`` holds each text's hashes at its positions (0 where there is no feature).
    """
    t = len(lengths)
    counts = np.zeros((t, 64), dtype=np.int64)
    has = np.flatnonzero(lengths > 0)
    if len(has) == 0 or len(h) == 0:
        return counts
    nseg = (lengths[has] + _SEG - 1) // _SEG
    seg_text = np.repeat(np.arange(len(has)), nseg)
    seg_first = np.cumsum(nseg) - nseg
    seg_start = np.repeat(starts[has], nseg) + _SEG * (np.arange(len(seg_text)) - seg_first[seg_text])
    sub = np.empty((len(seg_text), 64), dtype=np.int64)
    v = np.empty_like(h)
    for b in range(8):
        np.right_shift(h, _U64(b), out=v)
        v &= _LANES
        packed = np.add.reduceat(v, seg_start)  # 8 byte counters, each <= 255
        lanes = packed.astype("<u8").view(np.uint8).reshape(-1, 8)
        sub[:, b::8] = lanes  # byte j holds bit 8*j + b
    if len(seg_text) == len(has):
        counts[has] = sub
    else:
        counts[has] = np.add.reduceat(sub, seg_first, axis=0)
    return counts


def _pack(counts: np.ndarray, nf: np.ndarray) -> np.ndarray:
    """Bit i of the fingerprint is 1 when more than half of the features have bit i set."""
    bits = (2 * counts) > nf[:, None]
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").reshape(-1).astype(_U64)


def _stream_hashes(sym: np.ndarray, lengths: np.ndarray, n: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Fingerprints and exact keys of texts given as a concatenated symbol stream + lengths.

    The exact key of a text is a hash of its whole symbol sequence: for ``n`` or more symbols,
    ``sum((2p + 1) * h_p)`` over its n-gram hashes ``h_p`` (mod 2**64; the n-grams at their
    positions fix the sequence), mixed with the length; shorter texts use their single
    feature's hash, like their fingerprint.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    h = _ngram_hashes(sym, starts, lengths, n, salt)
    nf = np.maximum(lengths - (n - 1), 0)
    fps = _pack(_bit_counts(h, starts, lengths), nf)
    keys = np.zeros(len(lengths), dtype=_U64)
    has = np.flatnonzero(nf > 0)
    if len(has):
        plain = np.add.reduceat(h, starts[has])
        h *= np.arange(1, 2 * len(h), 2, dtype=_U64)  # weight 2i + 1 at stream index i
        weighted = np.add.reduceat(h, starts[has])
        # (2(i - s) + 1) h = (2i + 1) h - 2s h: the weights restart at every text
        key = weighted - _U64(2) * starts[has].astype(_U64) * plain
        key += lengths[has].astype(_U64) * _C1
        keys[has] = _fmix64(key)
    shorts = np.flatnonzero((lengths > 0) & (lengths < n))
    for i in shorts.tolist():  # one feature: the fingerprint is that feature's hash
        seq = sym[starts[i] : starts[i] + lengths[i]].tolist()
        fps[i] = keys[i] = _short_hash(seq, _SALT["short"] ^ salt)
    return fps, keys


def _chunks_by_chars(lengths: np.ndarray, budget: int) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of texts of about ``budget`` code points (at least one text each)."""
    ends = np.cumsum(lengths)
    start, n = 0, len(lengths)
    while start < n:
        base = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, base + budget, side="left")) + 1, start + 1)
        yield start, min(stop, n)
        start = stop


def _cut_runs(sym: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop every character equal to the two before it in the same text (as ``normalize``)."""
    if len(sym) < 3:
        return sym, lengths
    same = sym[1:] == sym[:-1]  # same[i]: character i + 1 repeats character i
    run = np.zeros(len(sym), dtype=bool)
    np.logical_and(same[1:], same[:-1], out=run[2:])
    starts = (np.cumsum(lengths) - lengths)[lengths > 0]
    run[starts] = False  # the first two characters of a text never go
    run[starts[starts + 1 < len(sym)] + 1] = False
    if not run.any():
        return sym, lengths
    return np.compress(~run, sym), lengths - _segment_sums(run, lengths)


def _segment_sums(mask: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """How many ``True`` each consecutive segment of ``mask`` (of the given lengths) holds."""
    out = np.zeros(len(lengths), dtype=np.int64)
    has = np.flatnonzero(lengths > 0)
    if len(has):
        out[has] = np.add.reduceat(mask, (np.cumsum(lengths) - lengths)[has], dtype=np.int64)
    return out


def _normalized(texts: Sequence[str]) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(a, b, symbols, lengths)`` per chunk: :func:`normalize` of ``texts[a:b]`` as one
    code-point stream, and the length of each text in it. No Python loop per text."""
    raw_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    for a, b in _chunks_by_chars(raw_len, _CHUNK_CHARS):
        joined = "".join(texts[a:b])
        lens = raw_len[a:b]
        if "Σ" in joined:  # its lower case depends on the letters around it: lower per text
            part = [t.lower() for t in texts[a:b]]
            joined = "".join(part)
            lens = np.fromiter(map(len, part), dtype=np.int64, count=len(part))
        sym = _norm_codes(joined)
        keep = sym != 0
        lengths = _segment_sums(keep, lens)
        sym, lengths = _cut_runs(np.compress(keep, sym), lengths)  # compress: faster than []
        yield a, b, sym, lengths


def _char5(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    fps = np.zeros(len(texts), dtype=_U64)
    keys = np.zeros(len(texts), dtype=_U64)
    for a, b, sym, lengths in _normalized(texts):
        fps[a:b], keys[a:b] = _stream_hashes(sym, lengths, 5, _SALT["char5"])
    return fps, keys


def _blake64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def _morph3(texts: Sequence[str]) -> np.ndarray:
    vocab: dict[str, int] = {}
    ids: list[int] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        ms = morphemes(t)
        lengths[i] = len(ms)
        ids.extend(vocab.setdefault(m, len(vocab)) for m in ms)
    table = np.array([_blake64(m) for m in vocab], dtype=_U64)
    sym = table[np.asarray(ids, dtype=np.int64)] if ids else np.zeros(0, dtype=_U64)
    return _stream_hashes(sym, lengths, 3, _SALT["morph3"])[0]


def _check_features(features: str) -> None:
    if features not in FEATURES:
        raise UserError(
            f"unknown features {features!r}", field="features", hint=f"choose one of {', '.join(FEATURES)}"
        )


def fingerprints(texts: Sequence[str], features: str = "char5") -> np.ndarray:
    """64-bit Simhash fingerprints (``uint64``) of ``texts``.

    ``char5``: character 5-grams of :func:`normalize` (text without spaces/punctuation);
    ``morph3``: Mecab morpheme 3-grams (slower: Mecab runs per text). A text with no feature
    gets fingerprint 0.
    """
    _check_features(features)
    return _char5(texts)[0] if features == "char5" else _morph3(texts)


def exact_keys(texts: Sequence[str]) -> np.ndarray:
    """64-bit keys (``uint64``) of the normalised texts: texts equal after :func:`normalize`
    get the same key, different ones collide with probability about 2**-64 (exact dedup
    without holding the normalised strings)."""
    return _char5(texts)[1]


def fingerprints_and_keys(texts: Sequence[str], features: str = "char5") -> tuple[np.ndarray, np.ndarray]:
    """:func:`fingerprints` and :func:`exact_keys` together (char5: one pass over the text)."""
    _check_features(features)
    fps, keys = _char5(texts)
    if features == "morph3":
        fps = _morph3(texts)
    return fps, keys


# ---------------------------------------------------------------------------------------------
# Hamming distance, candidate search, clusters
# ---------------------------------------------------------------------------------------------

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (``np.bitwise_count`` on numpy >= 2, byte table otherwise)."""
    x = np.asarray(x, dtype=_U64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POP8[x.reshape(-1, 1).view(np.uint8)].sum(axis=1).reshape(x.shape)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Element-wise Hamming distance between fingerprints."""
    return popcount(np.asarray(a, dtype=_U64) ^ np.asarray(b, dtype=_U64))


def _tables(k: int, n: int, blocks: int | None = None) -> list[int]:
    """Bit masks of the lookup tables for Hamming radius ``k`` over ``n`` fingerprints.

    The 64 bits are cut into ``b`` blocks; two fingerprints within ``k`` bits agree exactly on
    at least ``b - k`` of them, so one table per choice of ``b - k`` blocks finds every pair
    (pigeonhole). ``b = k + 1`` (one block per table) is the classic layout and the best for
    small ``k`` and ``n``; with more fingerprints (or a larger ``k``) its buckets get crowded,
    so by default ``b`` is chosen by a cost estimate: tables x (sort + expected bucket
    comparisons), a table's sort costing about 5 comparisons per fingerprint (measured with
    the radix sorts of :func:`_table_order`; from about 500,000 fingerprints on, k=3 uses 5
    blocks).
    """
    if not 0 <= k < 64:
        raise UserError(f"k must be between 0 and 63, got {k}", field="k")

    def cost(nb: int) -> float:
        m = nb - k
        return comb(nb, m) * (5.0 * n + n * n / 2.0 ** (64.0 * m / nb))

    if blocks is None:
        options = [nb for nb in range(k + 1, min(64, k + 8) + 1) if comb(nb, nb - k) <= 500]
        blocks = min(options, key=cost)
    if not k + 1 <= blocks <= 64:
        raise ValueError(f"blocks must be between k + 1 = {k + 1} and 64, got {blocks}")
    widths = [64 // blocks + (1 if i < 64 % blocks else 0) for i in range(blocks)]
    masks, shift = [], 0
    for w in widths:
        masks.append(((1 << w) - 1) << shift)
        shift += w
    return [sum(masks[i] for i in c) for c in combinations(range(blocks), blocks - k)]


def _expand(lo: np.ndarray, hi: np.ndarray, budget: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each row r the candidates lo[r]..hi[r]-1, as (row, candidate) arrays of bounded size.

    A row with more candidates than ``budget`` still comes whole (alone), so memory stays
    O(budget + largest bucket).
    """
    cnt = np.maximum(hi - lo, 0)
    rows = np.flatnonzero(cnt)
    if len(rows) == 0:
        return
    cum = np.cumsum(cnt[rows])
    start = 0
    while start < len(rows):
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + budget, side="right"))
        stop = max(stop, start + 1)
        r = rows[start:stop]
        c = cnt[r]
        rep = np.repeat(r, c)
        first = np.cumsum(c) - c
        cand = np.repeat(lo[r], c) + (np.arange(len(rep)) - np.repeat(first, c))
        yield rep, cand
        start = stop


def _table_order(u: np.ndarray, mask: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``u`` sorted by the bits under ``mask``, and those keys in that order.

    The order among equal keys is free (every pair inside a run is compared). Keys of up to
    32 bits are packed and sorted by 16-bit radix passes (numpy's stable sort of uint16), several
    times faster than sorting uint64.
    """
    width = bin(mask).count("1")
    if width > 32:
        key = u & _U64(mask)
        order = np.argsort(key)
        return order, key[order]
    key = np.zeros(len(u), dtype=np.uint32)
    shift, bit = 0, 0
    while mask >> bit:  # pack each run of set bits under the previous ones
        if not (mask >> bit) & 1:
            bit += 1
            continue
        run = 0
        while (mask >> (bit + run)) & 1:
            run += 1
        key |= ((u >> _U64(bit)) & _U64((1 << run) - 1)).astype(np.uint32) << np.uint32(shift)
        shift, bit = shift + run, bit + run
    order = np.argsort(key.astype(np.uint16), kind="stable")
    if width > 16:
        order = order[np.argsort((key[order] >> np.uint32(16)).astype(np.uint16), kind="stable")]
    return order, key[order]


def _unique_near_pairs(u: np.ndarray, k: int, budget: int, blocks: int | None = None) -> np.ndarray:
    """Pairs (i < j) of distinct fingerprints ``u`` within ``k`` bits, each pair once."""
    masks = _tables(k, len(u), blocks)
    tables = [_U64(t) for t in masks]
    found = []
    for ti, mask in enumerate(masks):
        order, sk = _table_order(u, mask)
        # each sorted position with an equal key after it, against the rest of its run
        rows = np.flatnonzero(sk[1:] == sk[:-1])
        run_end = np.searchsorted(sk, sk[rows], side="right")
        for r, q in _expand(rows + 1, run_end, budget):
            a, b = order[rows[r]], order[q]
            x = u[a] ^ u[b]
            near = np.flatnonzero(popcount(x) <= k)
            a, b, x = a[near], b[near], x[near]
            ok = np.ones(len(x), dtype=bool)
            for earlier in tables[:ti]:  # agreeing on an earlier table: found there already
                ok &= (x & earlier) != 0
            a, b = a[ok], b[ok]
            found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(found).astype(np.int64)


def groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal values as groups numbered in order of first appearance: ``(group of each value,
    index of the first value of each group)``; ``first`` is ascending. One sort, no more."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(values)  # equal values in any order
    sv = values[order]
    start = np.flatnonzero(np.concatenate(([True], sv[1:] != sv[:-1])))
    first_of_run = np.minimum.reduceat(order, start)
    is_first = np.zeros(n, dtype=bool)
    is_first[first_of_run] = True
    rank = np.cumsum(is_first) - 1  # a first value's group number
    gid = np.empty(n, dtype=np.int64)
    gid[order] = np.repeat(rank[first_of_run], np.diff(np.append(start, n)))
    return gid, np.flatnonzero(is_first)


def _sort_pairs(p: np.ndarray) -> np.ndarray:
    if len(p) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return p[np.lexsort((p[:, 1], p[:, 0]))]


def near_duplicate_pairs(
    fps: np.ndarray, k: int = 3, *, spanning: bool = False, budget: int = 4_000_000, blocks: int | None = None
) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, whose fingerprints differ in at most ``k`` bits.

    Identical fingerprints are collapsed first, so a huge group of copies never makes a
    quadratic bucket. ``spanning=False`` returns every such pair (this can be quadratic in the
    size of a group of copies); ``spanning=True`` returns fewer pairs with the same connected
    components (copies linked to their first index, groups linked through their first indices),
    which is what clustering needs. ``budget`` bounds the candidates compared at once;
    ``blocks`` overrides the table layout (see :func:`_tables`; default: ``k + 1`` blocks for
    small ``k``). Sorted lexicographically.
    """
    fps = np.asarray(fps, dtype=_U64)
    n = len(fps)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    inv, first = groups(fps)
    up = _unique_near_pairs(fps[first], k, budget, blocks)
    if spanning:
        reps = first[inv]
        copies = np.flatnonzero(reps != np.arange(n))
        out = [np.stack([reps[copies], copies], axis=1)]
        a, b = first[up[:, 0]], first[up[:, 1]]
        out.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
        return _sort_pairs(np.concatenate(out).astype(np.int64))
    cnt = np.bincount(inv, minlength=len(first))
    order = np.argsort(inv, kind="stable")  # members grouped by unique fp, index order
    gstart = np.cumsum(cnt) - cnt
    out = []
    # all pairs inside each group of identical fingerprints
    gend = np.repeat(gstart + cnt, cnt)
    for p, q in _expand(np.arange(1, n + 1), gend, budget):
        out.append(np.stack([order[p], order[q]], axis=1))
    # every member of u times every member of v, for each near pair (u, v)
    if len(up):
        cu = cnt[up[:, 0]]
        pair_rows = np.repeat(np.arange(len(up)), cu)  # one row per member of u
        mem_u = order[
            np.repeat(gstart[up[:, 0]], cu) + (np.arange(len(pair_rows)) - np.repeat(np.cumsum(cu) - cu, cu))
        ]
        v_of_row = up[pair_rows, 1]
        lo = gstart[v_of_row]
        for r, q in _expand(lo, lo + cnt[v_of_row], budget):
            a, b = mem_u[r], order[q]
            out.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return _sort_pairs(np.concatenate(out).astype(np.int64))


def cross_pairs(
    query: np.ndarray, ref: np.ndarray, k: int = 3, *, budget: int = 4_000_000, blocks: int | None = None
) -> np.ndarray:
    """Pairs ``(q, r)``: ``query[q]`` within ``k`` bits of ``ref[r]`` (contamination check).

    Same tables, but only query-against-reference candidates; sorted, each pair once.
    """
    query = np.asarray(query, dtype=_U64)
    ref = np.asarray(ref, dtype=_U64)
    if len(query) == 0 or len(ref) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    tables = [_U64(t) for t in _tables(k, max(len(query), len(ref)), blocks)]
    found = []
    for ti, mask in enumerate(tables):
        rkey = ref & mask
        order = np.argsort(rkey, kind="stable")
        sk = rkey[order]
        qkey = query & mask
        lo = np.searchsorted(sk, qkey, side="left")
        hi = np.searchsorted(sk, qkey, side="right")
        for q, pos in _expand(lo, hi, budget):
            r = order[pos]
            x = query[q] ^ ref[r]
            ok = popcount(x) <= k
            for earlier in tables[:ti]:
                ok &= (x & earlier) != 0
            found.append(np.stack([q[ok], r[ok]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return _sort_pairs(np.concatenate(found).astype(np.int64))


def all_pairs_bruteforce(fps: np.ndarray, k: int = 3, chunk: int = 512) -> np.ndarray:
    """Every pair within ``k`` bits by comparing all n²/2 pairs (for recall checks only)."""
    fps = np.asarray(fps, dtype=_U64)
    n = len(fps)
    out = []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d = popcount(fps[s:e, None] ^ fps[None, s:])  # (rows, n - s)
        d[np.arange(e - s), np.arange(e - s)] = 255  # not a pair with itself
        tri = np.arange(e - s)[:, None] > np.arange(n - s)[None, :]
        d[tri] = 255  # below the diagonal: seen
        i, j = np.nonzero(d <= k)
        out.append(np.stack([i + s, j + s], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return _sort_pairs(np.concatenate(out).astype(np.int64))


def clusters(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of ``pairs`` over ``n`` items; label = smallest index in it.

    Vectorised union-find: hook every root onto the smallest root it is paired with, then
    compress paths by pointer jumping; repeats until no pair spans two roots (few rounds).
    """
    labels = np.arange(n, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return labels
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        la, lb = labels[a], labels[b]
        diff = la != lb
        if not diff.any():
            return labels
        la, lb = la[diff], lb[diff]
        np.minimum.at(labels, np.maximum(la, lb), np.minimum(la, lb))
        while True:
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt
