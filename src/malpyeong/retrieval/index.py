"""A retrieval index as a folder: built once from the corpus, loaded by every later command.

Three kinds: ``sparse`` (BM25 over Mecab morphemes, :mod:`.sparse`), ``dense``
(sentence-transformers embeddings, :mod:`.dense`) and ``hybrid`` (both, fused by reciprocal
rank: a passage scores the sum of ``1 / (rrf_k + rank)`` over the two rankings, rank counted
from 1, ``rrf_k`` 60 as Cormack et al. proposed; only each ranking's top ``depth`` take
part). A hybrid index also answers in either of its two parts alone (``mode``), which is how
the three are compared on one relevance file.

The folder::

    index.json       kind, chunking, the corpus files and their SHA-256, the embedder, counts
    passages.jsonl   every passage with its id, title, source file and text
    sparse/          bm25s's files (hybrid, sparse)
    dense/           embeddings.npy (hybrid, dense)

It is written in a temporary folder and renamed into place, so a reader never sees half an
index; an existing one is replaced only with ``overwrite``. Ties in a ranking are broken by
corpus order, so the same index gives the same passages at training and at prediction time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from malpyeong import __version__
from malpyeong.errors import UserError
from malpyeong.io import atomic_open, atomic_write_json, check_folder_writable, make_temp_dir, read_jsonl
from malpyeong.retrieval.corpus import Passage, read_corpus, write_passages
from malpyeong.retrieval.dense import DenseIndex
from malpyeong.retrieval.sparse import SparseIndex

KINDS = ("sparse", "dense", "hybrid")
FORMAT = "malpyeong-retrieval-index"
META = "index.json"
RRF_K = 60


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float
    rank: int  # 1 = best


def top_k(scores: np.ndarray, k: int, *, positive: bool = False) -> list[int]:
    """Indices of the ``k`` highest scores, best first, ties by index (deterministic);
    ``positive``: only scores above 0."""
    n = len(scores)
    if n == 0 or k <= 0:
        return []
    k = min(k, n)
    threshold = np.partition(scores, n - k)[n - k]
    candidates = np.flatnonzero(scores >= threshold)
    if positive:
        candidates = candidates[scores[candidates] > 0]
    order = sorted(candidates.tolist(), key=lambda i: (-float(scores[i]), i))
    return order[:k]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int, rrf_k: int = RRF_K
) -> list[tuple[int, float]]:
    """``(index, fused score)`` of the ``k`` best, best first (ties: the earlier passage)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking, 1):
            fused[i] = fused.get(i, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Index:
    """Passages and the structures that rank them for a query."""

    def __init__(
        self,
        kind: str,
        passages: list[Passage],
        meta: dict,
        sparse: SparseIndex | None = None,
        dense: DenseIndex | None = None,
    ) -> None:
        self.kind, self.passages, self.meta = kind, passages, meta
        self.sparse, self.dense = sparse, dense
        self.path: Path | None = None

    # ----- building -----
    @classmethod
    def build(
        cls,
        corpus: Sequence[str | os.PathLike],
        kind: str = "sparse",
        *,
        by: str = "section",
        chunk_chars: int | None = None,
        embedder: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        device: str | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> Index:
        check_kind(kind, embedder)
        passages = read_corpus(corpus, by=by, size=chunk_chars)
        texts = [p.shown for p in passages]
        sparse = SparseIndex.build(texts, progress=progress) if kind in ("sparse", "hybrid") else None
        dense = None
        if kind in ("dense", "hybrid"):
            dense = DenseIndex.build(
                texts,
                embedder,
                query_prefix=query_prefix,
                passage_prefix=passage_prefix,
                batch_size=batch_size,
                device=device,
                progress=progress,
            )
        meta = {
            "format": FORMAT,
            "version": 1,
            "kind": kind,
            "chunking": {"by": by, "chunk_chars": chunk_chars},
            "sources": [{"file": str(p), "sha256": sha256_of(p)} for p in corpus],
            "passages": len(passages),
            "rrf_k": RRF_K,
            "malpyeong_version": __version__,
        }
        return cls(kind, passages, meta, sparse, dense)

    @classmethod
    def from_passages(cls, passages: list[Passage], kind: str = "sparse", **dense_args: object) -> Index:
        """An index of passages already in memory (benchmarks, tests)."""
        check_kind(kind, dense_args.get("embedder"))  # type: ignore[arg-type]
        texts = [p.shown for p in passages]
        sparse = SparseIndex.build(texts) if kind in ("sparse", "hybrid") else None
        dense = None
        if kind in ("dense", "hybrid"):
            model = str(dense_args.pop("embedder"))
            dense = DenseIndex.build(texts, model, **dense_args)  # type: ignore[arg-type]
        meta = {"format": FORMAT, "version": 1, "kind": kind, "passages": len(passages), "rrf_k": RRF_K}
        return cls(kind, passages, meta, sparse, dense)

    # ----- saving and loading -----
    def save(self, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
        folder = Path(folder)
        check_index_output(folder, overwrite)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(folder.parent, f".{folder.name}.")
        try:
            meta = dict(self.meta)
            if self.sparse is not None:
                (tmp / "sparse").mkdir()
                self.sparse.save(tmp / "sparse")
            if self.dense is not None:
                (tmp / "dense").mkdir()
                meta["dense"] = self.dense.save(tmp / "dense")
            with atomic_open(tmp / "passages.jsonl") as fh:
                write_passages(self.passages, fh)
            atomic_write_json(tmp / META, meta)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.meta, self.path = meta, folder
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, device: str | None = None) -> Index:
        folder = Path(folder)
        meta_path = folder / META
        if not folder.is_dir() or not meta_path.is_file():
            raise UserError(
                "not a retrieval index (no index.json)",
                file=str(folder),
                field="retrieve",
                hint="build one with run/retrieve.py build --corpus FILES --out FOLDER",
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise UserError("index.json is not a malpyeong retrieval index", file=str(meta_path))
        passages = [
            Passage(r["id"], r["text"], r.get("source", ""), r.get("title", ""))
            for r in read_jsonl(folder / "passages.jsonl")
        ]
        if len(passages) != meta.get("passages"):
            raise UserError(
                f"passages.jsonl holds {len(passages)} passages, index.json says {meta.get('passages')}",
                file=str(folder),
                hint="the folder is damaged; build the index again",
            )
        kind = meta["kind"]
        sparse = SparseIndex.load(folder / "sparse", len(passages)) if kind in ("sparse", "hybrid") else None
        dense = (
            DenseIndex.load(folder / "dense", meta["dense"], device) if kind in ("dense", "hybrid") else None
        )
        index = cls(kind, passages, meta, sparse, dense)
        index.path = folder
        return index

    # ----- searching -----
    @property
    def modes(self) -> tuple[str, ...]:
        """The rankings this index can give (a hybrid one: each part alone too)."""
        return KINDS if self.kind == "hybrid" else (self.kind,)

    def check_mode(self, mode: str | None) -> str:
        mode = mode or self.kind
        if mode not in self.modes:
            raise UserError(
                f"a {self.kind} index cannot rank by '{mode}'",
                field="mode",
                hint="one of " + ", ".join(self.modes),
            )
        return mode

    def search(self, query: str, k: int = 5, *, mode: str | None = None) -> list[Hit]:
        return self.search_many([query], k, mode=mode)[0]

    def search_many(
        self, queries: Sequence[str], k: int = 5, *, mode: str | None = None, depth: int | None = None
    ) -> list[list[Hit]]:
        """The top ``k`` passages of each query (sparse: only passages sharing a term)."""
        mode = self.check_mode(mode)
        if k < 1:
            raise UserError(f"must be at least 1, got {k}", field="k")
        depth = max(depth or 0, k, 100)
        out: list[list[Hit]] = []
        dense_scores = None
        if mode in ("dense", "hybrid"):
            dense_scores = self.dense.scores_of(self.dense.encode_queries(list(queries)))
        for q, query in enumerate(queries):
            if mode == "sparse":
                scores = self.sparse.scores(query)
                ranked = [(i, float(scores[i])) for i in top_k(scores, k, positive=True)]
            elif mode == "dense":
                scores = dense_scores[q]
                ranked = [(i, float(scores[i])) for i in top_k(scores, k)]
            else:
                lexical = top_k(self.sparse.scores(query), depth, positive=True)
                semantic = top_k(dense_scores[q], depth)
                ranked = reciprocal_rank_fusion([lexical, semantic], k, int(self.meta.get("rrf_k", RRF_K)))
            out.append([Hit(self.passages[i], s, r) for r, (i, s) in enumerate(ranked, 1)])
        return out

    def describe(self) -> str:
        """One line: what the index holds."""
        dense = self.meta.get("dense") or {}
        chunking = self.meta.get("chunking") or {}
        parts = [f"{self.kind} index, {len(self.passages)} passages"]
        if chunking:
            parts.append(f"chunked by {chunking.get('by')}")
        if dense:
            parts.append(f"embedder {dense.get('model')}")
        return "; ".join(parts)


def check_kind(kind: str, embedder: str | None) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown index kind '{kind}'", field="kind", hint=", ".join(KINDS))
    if kind in ("dense", "hybrid") and not embedder:
        raise UserError(
            f"a {kind} index needs an embedding model",
            field="embedder",
            hint="--embedder nlpai-lab/KURE-v1 (or BAAI/bge-m3, or a local sentence-transformers folder)",
        )


def check_index_output(folder: Path, overwrite: bool) -> None:
    """Before building: the folder is new, empty, or (with ``overwrite``) an index."""
    if folder.exists():
        if not folder.is_dir():
            raise UserError("is a file, not a folder", file=str(folder), field="out")
        if any(folder.iterdir()):
            if not (folder / META).is_file():
                raise UserError(
                    "the folder exists and is not a retrieval index",
                    file=str(folder),
                    field="out",
                    hint="choose a new folder (only an index folder is ever replaced)",
                )
            if not overwrite:
                raise UserError(
                    "the index exists", file=str(folder), field="out", hint="pass --overwrite to rebuild it"
                )
    check_folder_writable(folder.parent if not folder.exists() else folder, what="index folder")


__all__ = ["KINDS", "RRF_K", "Hit", "Index", "check_index_output", "reciprocal_rank_fusion", "top_k"]
