"""Sparse retrieval: Okapi BM25 (the ``bm25s`` library) over Mecab content morphemes.

Korean words carry particles and endings (``규정에서``, ``규정은``), so whitespace tokens make
the same word many terms; the content morphemes (nouns, verb and adjective stems, roots,
foreign words, numbers; :func:`malpyeong.retrieval.chunks.morpheme_terms`) make it one. The
index is saved with bm25s's own format (a CSC score matrix and the vocabulary) and loaded
memory-mapped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from malpyeong.retrieval.chunks import content_terms, morpheme_terms


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
        corpus = [morpheme_terms(t) for t in texts]
        index = bm25s.BM25()
        index.index(corpus, show_progress=progress)
        return cls(index, len(texts))

    def scores(self, query: str) -> np.ndarray:
        """One score per passage (0 where no content term is shared)."""
        terms = list(dict.fromkeys(content_terms(query)))
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


__all__ = ["SparseIndex"]
