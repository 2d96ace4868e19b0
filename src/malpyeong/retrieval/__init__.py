"""Retrieval: finding the parts of a long document a question is about.

chunks      a document cut into chunks that cover it exactly, and each chunk's BM25
            relevance to a question (what the qa task's length budget cuts by)
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
