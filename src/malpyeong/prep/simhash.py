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
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import combinations
from math import comb

import numpy as np

FEATURES = ("char5", "morph3")

_U64 = np.uint64
_P = _U64(0x100000001B3)            # odd multiplier (FNV-64 prime) for the polynomial n-gram hash
_C1 = _U64(0xFF51AFD7ED558CCD)       # MurmurHash3 fmix64 constants
_C2 = _U64(0xC4CEB9FE1A85EC53)
_LANES = _U64(0x0101010101010101)    # one bit per byte: eight 8-bit counters in a uint64
_SEG = 255                           # features per reduceat segment: byte counters never overflow
_SALT = {"char5": 0x9E3779B97F4A7C15, "morph3": 0xD6E8FEB86659FD93, "short": 0x2545F4914F6CDD1D}
_CHUNK_CHARS = 2_000_000             # code points per processing chunk (bounds memory)


# ---------------------------------------------------------------------------------------------
# normalisation and reference (slow, readable) features
# ---------------------------------------------------------------------------------------------

_DROP = re.compile(r"[\W_]+")  # everything but letters and digits (str.isalnum)
_RUNS = re.compile(r"(.)\1{2,}")  # a character repeated 3+ times (ㅋㅋㅋㅋ, ㅠㅠㅠ, 하하하)


@lru_cache(maxsize=1)
def _keep_table() -> np.ndarray:
    """Keep-mask for every code point; BMP filled now (~10 ms), astral ones on first sight."""
    table = np.zeros(0x110000, dtype=bool)
    table[:0x10000] = [chr(i).isalnum() for i in range(0x10000)]
    return table


_ASTRAL_DONE: set[int] = set()


def _keep_mask(cps: np.ndarray) -> np.ndarray:
    table = _keep_table()
    astral = cps >= 0x10000
    if astral.any():
        for cp in np.unique(cps[astral]).tolist():
            if cp not in _ASTRAL_DONE:
                table[cp] = chr(cp).isalnum()
                _ASTRAL_DONE.add(cp)
    return table[cps]


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
    return [s[i:i + 5] for i in range(len(s) - 4)]


@lru_cache(maxsize=1)
def _mecab():  # noqa: ANN202 - optional dependency, imported lazily
    try:
        from mecab import MeCab
    except ImportError as err:  # pragma: no cover - depends on the environment
        from malpyeong.errors import UserError
        raise UserError("features 'morph3' need Mecab",
                        hint="pip install python-mecab-ko") from err
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
    return [" ".join(ms[i:i + 3]) for i in range(len(ms) - 2)]


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


def _ngram_hashes(sym: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int,
                  salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of all n-grams inside each text of a concatenated symbol stream.

    Returns (hashes, per-text feature counts); n-grams never cross text boundaries.
    """
    nf = np.maximum(lengths - (n - 1), 0)
    total = int(nf.sum())
    m = len(sym) - (n - 1)
    if total == 0 or m <= 0:
        return np.zeros(0, dtype=_U64), nf
    h = np.full(m, salt, dtype=_U64)
    for j in range(n):
        h *= _P
        h += sym[j:j + m]
    _fmix64(h)
    fstart = np.cumsum(nf) - nf
    pos = np.arange(total, dtype=np.int64) + np.repeat(starts - fstart, nf)
    return h[pos], nf


def _bit_counts(h: np.ndarray, nf: np.ndarray) -> np.ndarray:
    """Per text, how many of its feature hashes have each of the 64 bits set: (T, 64) int64."""
    t = len(nf)
    counts = np.zeros((t, 64), dtype=np.int64)
    has = np.flatnonzero(nf > 0)
    if len(has) == 0:
        return counts
    nfh = nf[has]
    fstart = (np.cumsum(nf) - nf)[has]
    nseg = (nfh + _SEG - 1) // _SEG
    seg_text = np.repeat(np.arange(len(has)), nseg)
    seg_first = np.cumsum(nseg) - nseg
    seg_start = np.repeat(fstart, nseg) + _SEG * (np.arange(len(seg_text)) - seg_first[seg_text])
    sub = np.empty((len(seg_text), 64), dtype=np.int64)
    v = np.empty_like(h)
    for b in range(8):
        np.right_shift(h, _U64(b), out=v)
        v &= _LANES
        packed = np.add.reduceat(v, seg_start)              # 8 byte counters, each <= 255
        lanes = packed.astype("<u8").view(np.uint8).reshape(-1, 8)
        sub[:, b::8] = lanes                                # byte j holds bit 8*j + b
    if len(seg_text) == len(has):
        counts[has] = sub
    else:
        counts[has] = np.add.reduceat(sub, seg_first, axis=0)
    return counts


def _pack(counts: np.ndarray, nf: np.ndarray) -> np.ndarray:
    """Bit i of the fingerprint is 1 when more than half of the features have bit i set."""
    bits = (2 * counts) > nf[:, None]
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").reshape(-1).astype(_U64)


def _fingerprints_from_stream(sym: np.ndarray, lengths: np.ndarray, n: int,
                              salt: int) -> np.ndarray:
    """Fingerprints of texts given as a concatenated uint64 symbol stream and their lengths."""
    starts = np.cumsum(lengths) - lengths
    h, nf = _ngram_hashes(sym, starts, lengths, n, salt)
    fps = _pack(_bit_counts(h, nf), nf)
    shorts = np.flatnonzero((lengths > 0) & (lengths < n))
    for i in shorts.tolist():  # one feature: the fingerprint is that feature's hash
        seq = sym[starts[i]:starts[i] + lengths[i]].tolist()
        fps[i] = _short_hash(seq, _SALT["short"] ^ salt)
    return fps


def _chunks_by_chars(lengths: list[int], budget: int) -> Iterator[tuple[int, int]]:
    start, acc = 0, 0
    for i, n in enumerate(lengths):
        acc += n
        if acc >= budget:
            yield start, i + 1
            start, acc = i + 1, 0
    if start < len(lengths):
        yield start, len(lengths)


def _cut_runs(sym: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop every character equal to the two before it in the same text (as ``normalize``)."""
    if len(sym) < 3:
        return sym, lengths
    run = np.zeros(len(sym), dtype=bool)
    run[2:] = (sym[2:] == sym[1:-1]) & (sym[2:] == sym[:-2])
    starts = (np.cumsum(lengths) - lengths)[lengths > 0]
    run[starts] = False                        # the first two characters of a text never go
    run[starts[starts + 1 < len(sym)] + 1] = False
    if not run.any():
        return sym, lengths
    text_of = np.repeat(np.arange(len(lengths)), lengths)
    return sym[~run], lengths - np.bincount(text_of[run], minlength=len(lengths))


def _char5(texts: Sequence[str]) -> np.ndarray:
    out = np.zeros(len(texts), dtype=_U64)
    raw_len = [len(t) for t in texts]
    for a, b in _chunks_by_chars(raw_len, _CHUNK_CHARS):
        joined = "".join(texts[a:b])
        low = joined.lower()
        if len(low) != len(joined) or "Σ" in joined:  # İ grows; Σ depends on what follows
            lowered = [t.lower() for t in texts[a:b]]
            raw_len[a:b] = [len(t) for t in lowered]
            low = "".join(lowered)
        cps = np.frombuffer(low.encode("utf-32-le"), dtype="<u4")
        keep = _keep_mask(cps)
        kept = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
        ends = np.cumsum(raw_len[a:b], dtype=np.int64)
        lengths = kept[ends] - kept[ends - np.asarray(raw_len[a:b], dtype=np.int64)]
        sym = cps[keep].astype(_U64)
        sym, lengths = _cut_runs(sym, lengths)
        out[a:b] = _fingerprints_from_stream(sym, lengths, 5, _SALT["char5"])
    return out


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
    return _fingerprints_from_stream(sym, lengths, 3, _SALT["morph3"])


def fingerprints(texts: Sequence[str], features: str = "char5") -> np.ndarray:
    """64-bit Simhash fingerprints (``uint64``) of ``texts``.

    ``char5``: character 5-grams of :func:`normalize` (text without spaces/punctuation);
    ``morph3``: Mecab morpheme 3-grams (slower: Mecab runs per text). A text with no feature
    gets fingerprint 0.
    """
    if features == "char5":
        return _char5(texts)
    if features == "morph3":
        return _morph3(texts)
    from malpyeong.errors import UserError
    raise UserError(f"unknown features {features!r}", field="features",
                    hint=f"choose one of {', '.join(FEATURES)}")


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
    small ``k``; for larger ``k`` its buckets get crowded, so by default ``b`` is chosen by a
    cost estimate: tables x (sort + expected bucket comparisons).
    """
    if not 0 <= k < 64:
        from malpyeong.errors import UserError
        raise UserError(f"k must be between 0 and 63, got {k}", field="k")

    def cost(nb: int) -> float:
        m = nb - k
        return comb(nb, m) * (10.0 * n + n * n / 2.0 ** (64.0 * m / nb))

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


def _expand(lo: np.ndarray, hi: np.ndarray, budget: int) -> Iterator[tuple[np.ndarray,
                                                                            np.ndarray]]:
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


def _unique_near_pairs(u: np.ndarray, k: int, budget: int,
                       blocks: int | None = None) -> np.ndarray:
    """Pairs (i < j) of distinct fingerprints ``u`` within ``k`` bits, each pair once."""
    tables = [_U64(t) for t in _tables(k, len(u), blocks)]
    found = []
    for ti, mask in enumerate(tables):
        key = u & mask
        order = np.argsort(key, kind="stable")
        sk = key[order]
        n = len(sk)
        # end of the equal-key run each sorted position belongs to
        boundary = np.flatnonzero(np.diff(sk)) + 1
        run_end = np.repeat(np.append(boundary, n), np.diff(np.concatenate(([0], boundary,
                                                                            [n]))))
        for p, q in _expand(np.arange(1, n + 1), run_end, budget):
            a, b = order[p], order[q]
            x = u[a] ^ u[b]
            ok = popcount(x) <= k
            for earlier in tables[:ti]:  # agreeing on an earlier table: found there already
                ok &= (x & earlier) != 0
            a, b = a[ok], b[ok]
            found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(found).astype(np.int64)


def _sort_pairs(p: np.ndarray) -> np.ndarray:
    if len(p) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return p[np.lexsort((p[:, 1], p[:, 0]))]


def near_duplicate_pairs(fps: np.ndarray, k: int = 3, *, spanning: bool = False,
                         budget: int = 4_000_000, blocks: int | None = None) -> np.ndarray:
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
    uniq, first, inv, cnt = np.unique(fps, return_index=True, return_inverse=True,
                                      return_counts=True)
    up = _unique_near_pairs(uniq, k, budget, blocks)
    order = np.argsort(inv, kind="stable")        # members grouped by unique fp, index order
    gstart = np.cumsum(cnt) - cnt
    if spanning:
        reps = first[inv]
        copies = np.flatnonzero(reps != np.arange(n))
        out = [np.stack([reps[copies], copies], axis=1)]
        a, b = first[up[:, 0]], first[up[:, 1]]
        out.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
        return _sort_pairs(np.concatenate(out).astype(np.int64))
    out = []
    # all pairs inside each group of identical fingerprints
    gend = np.repeat(gstart + cnt, cnt)
    for p, q in _expand(np.arange(1, n + 1), gend, budget):
        out.append(np.stack([order[p], order[q]], axis=1))
    # every member of u times every member of v, for each near pair (u, v)
    if len(up):
        cu = cnt[up[:, 0]]
        pair_rows = np.repeat(np.arange(len(up)), cu)              # one row per member of u
        mem_u = order[np.repeat(gstart[up[:, 0]], cu) + (np.arange(len(pair_rows))
                                                       - np.repeat(np.cumsum(cu) - cu, cu))]
        v_of_row = up[pair_rows, 1]
        lo = gstart[v_of_row]
        for r, q in _expand(lo, lo + cnt[v_of_row], budget):
            a, b = mem_u[r], order[q]
            out.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return _sort_pairs(np.concatenate(out).astype(np.int64))


def cross_pairs(query: np.ndarray, ref: np.ndarray, k: int = 3, *,
                budget: int = 4_000_000, blocks: int | None = None) -> np.ndarray:
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
        d = popcount(fps[s:e, None] ^ fps[None, s:])       # (rows, n - s)
        d[np.arange(e - s), np.arange(e - s)] = 255           # not a pair with itself
        tri = np.arange(e - s)[:, None] > np.arange(n - s)[None, :]
        d[tri] = 255                                          # below the diagonal: seen
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
