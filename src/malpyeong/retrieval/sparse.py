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

Building is bound by Mecab, so it reads the analyser's own text output (one ``surface<tab>features``
line per morpheme) with one regular expression instead of python-mecab-ko's ``pos``, which makes
Python objects per morpheme (the terms of 5,400 texts: 8.3 s instead of 22.4 s), and hands
bm25s term ids (one ``array`` of int32 per passage, the vocabulary built on the way) instead of
lists of strings, which kept every term of the corpus alive as its own string. 100,000 chunks:
441 s and 1,501 MiB peak before, 98 s and 555 MiB after (``benchmarks/bench_retrieval.py``);
about half of what remains is Mecab's own parsing. The terms, and so every score, are exactly
those of ``MeCab.pos`` (``tests/test_retrieval.py`` checks them and pins the rankings).
"""

from __future__ import annotations

import logging
import re
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from malpyeong.metrics.official import _mecab
from malpyeong.retrieval.chunks import CONTENT_TAGS

INDEX_TAGS = CONTENT_TAGS | {"MAG", "XSN"}


# a line of Mecab's output whose first tag is one we index: the surface is group 1
_TERM_LINE = re.compile(r"^([^\t\n]*)\t(?:" + "|".join(sorted(INDEX_TAGS)) + r")(?=[,+\n])", re.MULTILINE)
_HANGUL_WORD = re.compile("[가-힣]{2,}")


def _mecab_output(text: str) -> str:
    """Mecab's analysis of ``text`` as its text output (``surface<tab>TAG,...`` lines, then EOS)."""
    tagger = _mecab()
    raw = getattr(tagger, "_tagger", None)  # python-mecab-ko's binding of MeCab::Tagger
    if raw is None:  # another binding: the slow path, same lines
        return "".join(f"{s}\t{t},\n" for s, t in tagger.pos(text)) + "EOS\n"
    from mecab.utils import create_lattice

    lattice = create_lattice(text)
    if not raw.parse(lattice):
        raise RuntimeError(f"Mecab failed: {raw.what()}")
    return lattice.to_string()


def index_terms(text: str) -> list[str]:
    """The terms BM25 counts for ``text``: content morphemes and adverbs, lowercased, each
    Hangul one followed by its syllable bigrams (``#`` + two syllables)."""
    out = []
    for surface in _TERM_LINE.findall(_mecab_output(text.lower())):
        out.append(surface)
        if _HANGUL_WORD.fullmatch(surface):
            out += ["#" + surface[i : i + 2] for i in range(len(surface) - 1)]
    return out


def term_ids(texts: Iterable[str]) -> tuple[list[array], dict[str, int]]:
    """Each text's terms as ids (int32, in order) and the vocabulary, ids by first appearance."""
    vocab: dict[str, int] = {}
    ids = []
    for text in texts:  # setdefault's default is the size before a new term goes in: its id
        ids.append(array("i", [vocab.setdefault(term, len(vocab)) for term in index_terms(text)]))
    return ids, vocab


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
        ids, vocab = term_ids(tqdm(texts, desc="index terms", disable=not progress))
        index = bm25s.BM25()
        index.index((ids, vocab), show_progress=False)
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


__all__ = ["INDEX_TAGS", "SparseIndex", "index_terms", "term_ids"]
