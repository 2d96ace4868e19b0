"""Sparse retrieval: Okapi BM25 (the ``bm25s`` library) over Mecab content morphemes.

Korean words carry particles and endings (``규정에서``, ``규정은``), so whitespace tokens make
the same word many terms; the content morphemes make it one. The terms of a text
(:func:`index_terms`) are its morphemes of the content tags the qa task ranks chunks by (nouns,
verb and adjective stems, roots, foreign words, numbers), plus adverbs (``깨끗이``, ``꼼꼼히``:
what the norms are about) and noun suffixes (``률`` / ``율``), plus every syllable bigram of a
Hangul term, marked ``#`` (so a misspelling still shares pieces with the right form: ``백분률``
and ``백분율`` share ``#백분``). On our labelled norms sample the adverbs lift recall@5 from 0.63
to 0.80 and the bigrams to 0.85. The index is saved in bm25s's own format (a CSC score
matrix and the vocabulary) and loaded memory-mapped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from malpyeong.metrics.official import _mecab
from malpyeong.retrieval.chunks import CONTENT_TAGS

INDEX_TAGS = CONTENT_TAGS | {"MAG", "XSN"}


def index_terms(text: str) -> list[str]:
    """The terms BM25 counts for ``text``: content morphemes and adverbs, lowercased, each
    Hangul one followed by its syllable bigrams (``#`` + two syllables)."""
    out = []
    for surface, tag in _mecab().pos(text.lower()):
        if tag.split("+", 1)[0] in INDEX_TAGS:
            out.append(surface)
            if len(surface) >= 2 and all("가" <= c <= "힣" for c in surface):
                out += ["#" + surface[i : i + 2] for i in range(len(surface) - 1)]
    return out


def _quiet() -> None:
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index it builds


class SparseIndex:
    """BM25 scores of every passage for a query."""

    def __init__(self, bm25: object, size: int) -> None:
        self.bm25 = bm25
        self.size = size

    @classmethod
    def build(cls, texts: Sequence[str], *, progress: bool = False) -> SparseIndex:
        import bm25s

        _quiet()
        corpus = [index_terms(t) for t in tqdm(texts, desc="index terms", disable=not progress)]
        index = bm25s.BM25()
        index.index(corpus, show_progress=False)
        return cls(index, len(texts))

    def scores(self, query: str) -> np.ndarray:
        """One score per passage (0 where no content term is shared)."""
        terms = list(dict.fromkeys(index_terms(query)))
        if not terms:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.bm25.get_scores(terms), dtype=np.float32)

    def save(self, folder: Path) -> None:
        self.bm25.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, size: int) -> SparseIndex:
        import bm25s

        _quiet()
        return cls(bm25s.BM25.load(str(folder), mmap=True, show_progress=False), size)


__all__ = ["INDEX_TAGS", "SparseIndex", "index_terms"]
