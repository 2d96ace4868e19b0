"""Retrieval: a corpus in passages (:mod:`.corpus`), sparse (BM25 over Mecab morphemes,
:mod:`.sparse`), dense (sentence-transformers, :mod:`.dense`) and hybrid (reciprocal rank
fusion) indexes saved as folders (:mod:`.index`), their evaluation (:mod:`.evaluation`), and the
chunk ranking of one long document (:mod:`.chunks`, the qa task's length budget).

Nothing here knows a task: a task says what its query is and where passages go in its prompt.
"""

from __future__ import annotations

from malpyeong.retrieval.chunks import (
    CHUNK_CHARS,
    Chunk,
    bm25_scores,
    chunk_text,
    least_relevant_first,
    middle_out,
)

__all__ = ["CHUNK_CHARS", "Chunk", "bm25_scores", "chunk_text", "least_relevant_first", "middle_out"]
