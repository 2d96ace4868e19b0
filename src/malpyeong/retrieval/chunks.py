"""A long document in chunks, and each chunk's relevance to a question (BM25).

The length budget of a document task cuts whole chunks: from the middle outwards (keep the
start and the end) or the least relevant first (keep what the question is about). Chunks are
pieces of about :data:`CHUNK_CHARS` characters that cover the document exactly, cut at a line
end where there is one, else at a sentence end, else at a space, so no word is split. Relevance
is Okapi BM25 (the ``bm25s`` library) over content morphemes: Mecab's nouns, verb and adjective
stems, roots, foreign words and numbers, lowercased, English stop words left out; particles and
endings, which every Korean chunk shares, carry no signal.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from malpyeong.metrics.official import _mecab

CHUNK_CHARS = 300  # about 80-200 tokens: fine enough for the budget, long enough for BM25
# Mecab tags whose morphemes say what a text is about
CONTENT_TAGS = frozenset({"NNG", "NNP", "NR", "SL", "SH", "SN", "VV", "VA", "XR"})
SENTENCE_END = re.compile(r"[.!?。](?=\s)")


@dataclass(frozen=True)
class Chunk:
    start: int  # character offsets in the document, end exclusive
    end: int


def chunk_text(text: str, size: int = CHUNK_CHARS) -> tuple[Chunk, ...]:
    """Consecutive chunks of at most ``size`` characters (longer only never: a piece with no
    boundary is cut hard) that together are ``text``."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    chunks = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            window = text[start:end]
            least = size // 4  # a boundary this early would make a tiny chunk
            cut = window.rfind("\n") + 1
            if cut <= least:
                ends = [m.end() for m in SENTENCE_END.finditer(window)]
                cut = ends[-1] if ends else 0
            if cut <= least:
                cut = window.rfind(" ") + 1
            if cut > least:
                end = start + cut
        chunks.append(Chunk(start, end))
        start = end
    return tuple(chunks)


def morpheme_terms(text: str) -> list[str]:
    """The content morphemes of ``text``, lowercased, in order (uncached: what an index of a
    whole corpus tokenizes once)."""
    from bm25s.stopwords import STOPWORDS_EN

    terms = []
    for surface, tag in _mecab().pos(text.lower()):
        if tag.split("+", 1)[0] in CONTENT_TAGS and surface not in STOPWORDS_EN:
            terms.append(surface)
    return terms


@lru_cache(maxsize=100_000)
def content_terms(text: str) -> tuple[str, ...]:
    """:func:`morpheme_terms`, cached: a document's chunks are ranked against each of its
    questions."""
    return tuple(morpheme_terms(text))


def bm25_scores(query: str, passages: Sequence[str]) -> np.ndarray:
    """BM25 score of each passage for ``query`` (0 where no content term is shared)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index it builds
    if not passages:
        return np.zeros(0)
    corpus = [list(content_terms(p)) for p in passages]
    query_terms = list(dict.fromkeys(content_terms(query)))
    if not query_terms or not any(corpus):
        return np.zeros(len(passages))
    index = bm25s.BM25()
    index.index(corpus, show_progress=False)
    return np.asarray(index.get_scores(query_terms), dtype=float)


def middle_out(n: int) -> list[int]:
    """Indices 0..n-1 from the middle outwards, the first and the last kept longest."""
    middle = (n - 1) / 2
    return sorted(range(n), key=lambda i: (abs(i - middle), i))


def least_relevant_first(scores: Sequence[float]) -> list[int]:
    """Indices from the lowest score up; among equal scores the one farther from the start
    goes first (so with no shared term at all the document keeps its beginning)."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], -i))


__all__ = [
    "CHUNK_CHARS",
    "Chunk",
    "bm25_scores",
    "chunk_text",
    "content_terms",
    "least_relevant_first",
    "middle_out",
    "morpheme_terms",
]
