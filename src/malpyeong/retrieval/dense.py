"""Dense retrieval: passages and queries embedded by a sentence-transformers model, ranked by
cosine similarity (unit vectors, so a dot product).

Models the 2025 teams used for Korean retrieval: ``nlpai-lab/KURE-v1``
(a Korean fine-tune of bge-m3, 1,024 dimensions, 8,192 tokens) and ``BAAI/bge-m3`` (multilingual,
its dense output here); neither needs a query prefix. Models that do (e5: ``query: `` /
``passage: ``) take ``query_prefix`` / ``passage_prefix``. The embeddings are saved as a
float32 ``.npy`` beside the model's name, so a saved index answers with the same model it was
built with; the model is loaded on the first query.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from malpyeong.errors import UserError, one_line

log = logging.getLogger(__name__)

EMBEDDERS = {
    "nlpai-lab/KURE-v1": "Korean retrieval model (bge-m3 fine-tuned on Korean pairs), 1,024-d",
    "BAAI/bge-m3": "multilingual dense retriever, 1,024-d, up to 8,192 tokens",
}


def load_embedder(name: str, device: str | None = None) -> Any:
    """A ``SentenceTransformer``; one error line when it cannot be loaded (offline, wrong path)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError(
            "dense retrieval needs sentence-transformers", hint="pip install sentence-transformers"
        ) from None
    try:
        return SentenceTransformer(name, device=device or "cpu")
    except Exception as err:  # noqa: BLE001 - any load failure is the user's path or network
        raise UserError(
            f"cannot load the embedding model: {type(err).__name__}: {one_line(err, 200)}",
            file=name,
            field="embedder",
            hint="a local sentence-transformers folder, or a hub id in the local cache "
            "(e.g. nlpai-lab/KURE-v1, BAAI/bge-m3)",
        ) from None


@dataclass
class DenseIndex:
    model: str
    embeddings: np.ndarray  # (passages, dim), unit rows
    query_prefix: str = ""
    passage_prefix: str = ""
    device: str | None = None
    _encoder: Any = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        model: str,
        *,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 32,
        device: str | None = None,
        progress: bool = False,
    ) -> DenseIndex:
        encoder = load_embedder(model, device)
        emb = encoder.encode(
            [passage_prefix + t for t in texts],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        ).astype(np.float32)
        return cls(model, emb, query_prefix, passage_prefix, device, encoder)

    def encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = load_embedder(self.model, self.device)
        return self._encoder

    def encode_queries(self, queries: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return (
            self.encoder()
            .encode(
                [self.query_prefix + q for q in queries],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            .astype(np.float32)
        )

    def scores_of(self, query_vectors: np.ndarray) -> np.ndarray:
        """(queries, passages) cosine similarities."""
        return query_vectors @ self.embeddings.T

    def save(self, folder: Path) -> dict:
        np.save(folder / "embeddings.npy", self.embeddings)
        return {
            "model": self.model,
            "dim": int(self.embeddings.shape[1]),
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
        }

    @classmethod
    def load(cls, folder: Path, meta: dict, device: str | None = None) -> DenseIndex:
        emb = np.load(folder / "embeddings.npy", mmap_mode="r")
        return cls(meta["model"], emb, meta.get("query_prefix", ""), meta.get("passage_prefix", ""), device)


__all__ = ["EMBEDDERS", "DenseIndex", "load_embedder"]
