"""Benchmark: a sparse retrieval index of 100,000 chunks, ours against bm25s as a user would
call it (its default tokenizer: lowercased ``\\w\\w+`` words, so Korean words keep their
particles), on the same chunks and queries.

    python benchmarks/bench_retrieval.py [--chunks 100000] [--queries 200] [--data ../shared/data/nikl]

Chunks: Korean conversation text of the real NIKL 2024 files when present (utterances joined
into pieces of about 200 characters; when they hold fewer than ``--chunks`` pieces, the rest
are made by recombining their sentences), else generated sentences from a small vocabulary of
our own. Queries: an utterance drawn from the text (of a chunk when real data is used).

Printed per implementation: build time (tokenizing and indexing, in a fresh process each),
peak memory of that process (RSS high-water mark, the interpreter and libraries included),
query latency p50 / p95 (top 10; both indexes loaded in one process and queried in turn, so
load on the machine hits both alike), and the ratio ours / bm25s. Also recall@5 and MRR of both
on our labelled norms sample (resource/data/norms_relevance.jsonl), where the tokenizer makes
the difference. The machine may be shared: timings are comparable within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the shared data folder: $MALPYEONG_SHARED_DATA, else shared/data beside the checkout or any
# folder above it (a worktree's too)
SHARED_DATA = (
    Path(os.environ["MALPYEONG_SHARED_DATA"])
    if os.environ.get("MALPYEONG_SHARED_DATA")
    else next(
        (p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
        ROOT.parent / "shared" / "data",
    )
)
DEFAULT_DATA = SHARED_DATA / "nikl"
NORMS = ROOT / "resource" / "data" / "norms"
LABELS = ROOT / "resource" / "data" / "norms_relevance.jsonl"
CHUNK_CHARS = 200

# Our own words for the fallback corpus (no real text needed).
NOUNS = "학교 회사 친구 가족 여행 음식 날씨 영화 운동 시험 도서관 공원 바다 휴가 병원 시장 버스 지하철 커피 책".split()
VERBS = "갔다 먹었다 보았다 만났다 이야기했다 준비했다 기다렸다 좋아한다 공부했다 산책했다".split()
PARTICLES = "에서 에 와 과 을 를 이 가 은 는".split()


def real_sentences(folder: Path) -> list[str]:
    """Utterances of the NIKL conversation files in ``folder`` (empty when absent)."""
    out: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            records = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError):
            continue
        for record in records if isinstance(records, list) else []:
            conversation = (
                (record.get("input") or {}).get("conversation") if isinstance(record, dict) else None
            )
            for u in conversation or []:
                text = u.get("utterance") if isinstance(u, dict) else None
                if isinstance(text, str) and len(text.strip()) > 5:
                    out.append(" ".join(text.split()))
    return out


def generated_sentences(n: int, rng: random.Random) -> list[str]:
    return [
        f"{rng.choice(NOUNS)}{rng.choice(PARTICLES)} {rng.choice(NOUNS)}{rng.choice(PARTICLES)} {rng.choice(VERBS)}."
        for _ in range(n)
    ]


def make_corpus(n_chunks: int, data: Path, seed: int = 0) -> tuple[list[str], list[str], str]:
    """``n_chunks`` chunks, query sentences, and where the text came from."""
    rng = random.Random(seed)
    sentences = real_sentences(data)
    source = f"real NIKL utterances from {data}" if sentences else "generated sentences (no real data found)"
    if not sentences:
        sentences = generated_sentences(200_000, rng)
    chunks, piece = [], []
    for s in sentences:
        piece.append(s)
        if sum(len(p) + 1 for p in piece) >= CHUNK_CHARS:
            chunks.append(" ".join(piece))
            piece = []
    made = 0
    while len(chunks) < n_chunks:  # recombine sentences into further chunks
        picked, size = [], 0
        while size < CHUNK_CHARS:
            picked.append(rng.choice(sentences))
            size += len(picked[-1]) + 1
        chunks.append(" ".join(picked))
        made += 1
    chunks = chunks[:n_chunks]
    if made:
        source += f" ({made:,} of the chunks recombined from their sentences)"
    queries = [rng.choice(sentences) for _ in range(400)]
    return chunks, queries, source


def worker(kind: str, corpus: Path, out: Path) -> None:
    """Build one index from the chunk file and save it; print build seconds and peak RSS."""
    import logging

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    chunks = json.loads(corpus.read_text(encoding="utf-8"))
    start = time.perf_counter()
    if kind == "ours":
        from malpyeong.retrieval.corpus import Passage
        from malpyeong.retrieval.index import Index

        index = Index.from_passages([Passage(f"c:{i}", t, "bench") for i, t in enumerate(chunks)], "sparse")
        seconds = time.perf_counter() - start
        index.save(out)
    else:
        import bm25s

        tokens = bm25s.tokenize(chunks, show_progress=False)
        index = bm25s.BM25()
        index.index(tokens, show_progress=False)
        seconds = time.perf_counter() - start
        index.save(str(out), show_progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak}))


def build(kind: str, corpus: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--corpus_file", str(corpus), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def latencies(folder: Path, queries: list[str]) -> dict[str, list[float]]:
    """Both indexes queried in turn (top 10), seconds per query."""
    import bm25s

    from malpyeong.retrieval.index import Index

    ours = Index.load(folder / "ours")
    peer = bm25s.BM25.load(str(folder / "peer"), show_progress=False)
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for q in queries:
        t = time.perf_counter()
        ours.search(q, 10)
        times["ours"].append(time.perf_counter() - t)
        t = time.perf_counter()
        tokens = bm25s.tokenize([q], show_progress=False)
        if tokens.vocab:  # a query of one-letter words only has no token: nothing to rank
            peer.retrieve(tokens, k=10, show_progress=False)
        times["peer"].append(time.perf_counter() - t)
    return times


def quality() -> dict[str, tuple[float, float]]:
    """recall@5 and MRR on our labelled norms sample, ours and bm25s's default tokenizer."""
    import bm25s
    import numpy as np

    from malpyeong.retrieval.evaluation import evaluate_retrieval, read_relevance
    from malpyeong.retrieval.index import Index, top_k

    index = Index.build(sorted(NORMS.glob("*.md")), "sparse")
    questions = read_relevance(LABELS)
    ours = evaluate_retrieval(index, questions, (5,))
    peer = bm25s.BM25()
    peer.index(bm25s.tokenize([p.shown for p in index.passages], show_progress=False), show_progress=False)
    ids = [p.id for p in index.passages]
    recall = mrr = 0.0
    for q in questions:
        words = bm25s.tokenize([q["query"]], show_progress=False, return_ids=False)[0]
        scores = np.asarray(peer.get_scores(words)) if words else np.zeros(len(ids))
        ranked = [ids[i] for i in top_k(scores, 100, positive=True)]
        ranks = [ranked.index(r) + 1 for r in q["relevant"] if r in ranked]
        recall += sum(r <= 5 for r in ranks) / len(q["relevant"])
        mrr += 1 / min(ranks) if ranks else 0.0
    n = len(questions)
    return {"ours": (ours["recall@5"], ours["mrr"]), "peer": (recall / n, mrr / n)}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--worker", choices=("ours", "peer"), help=argparse.SUPPRESS)
    p.add_argument("--corpus_file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.corpus_file, args.out)
        return 0
    chunks, queries, source = make_corpus(args.chunks, args.data)
    queries = queries[: args.queries]
    print(f"corpus: {len(chunks):,} chunks of about {CHUNK_CHARS} characters; {source}")
    print(f"queries: {len(queries)}, top 10 each; the machine may be shared (2 cores, other jobs)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = folder / "chunks.json"
        corpus.write_text(json.dumps(chunks, ensure_ascii=False), encoding="utf-8")
        built = {kind: build(kind, corpus, folder / kind) for kind in ("ours", "peer")}
        times = latencies(folder, queries)
    names = {"ours": "ours (BM25 over Mecab morphemes)", "peer": "bm25s, default tokenizer"}
    for kind in ("ours", "peer"):
        ms = [t * 1000 for t in times[kind]]
        print(
            f"{names[kind]:<34} build {built[kind]['seconds']:7.1f} s   peak memory "
            f"{built[kind]['peak_mib']:7.0f} MiB   query p50 {pct(ms, 50):6.2f} ms   p95 {pct(ms, 95):6.2f} ms"
        )
    o, b = built["ours"], built["peer"]
    print(
        f"ratio ours / bm25s: build {o['seconds'] / b['seconds']:.2f}x, peak memory "
        f"{o['peak_mib'] / b['peak_mib']:.2f}x, query p50 "
        f"{pct(times['ours'], 50) / pct(times['peer'], 50):.2f}x, p95 "
        f"{pct(times['ours'], 95) / pct(times['peer'], 95):.2f}x"
    )
    q = quality()
    print(
        f"our labelled norms sample (23 questions): recall@5 ours {q['ours'][0]:.4f} vs bm25s default "
        f"{q['peer'][0]:.4f}; MRR {q['ours'][1]:.4f} vs {q['peer'][1]:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
