"""Benchmark: the server under 32 concurrent clients, against the same requests one at a time.

    python benchmarks/bench_serve_load.py [--clients 32] [--requests 4] [--max_tokens 32]
        [--model PATH] [--batch_window_ms 10] [--max_batch 32] [--threads 1]

The server is ``run/serve.py`` as a user starts it (a separate process, loopback only, a free
port), on a tiny random-weight Llama built on the spot unless --model names one. Every request
is a chat completion with its own prompt (client i, request j), greedy, --max_tokens new
tokens. Arms, on the same server in the same run:

- one at a time: every request sent alone, the next after the previous answer (batches of 1:
  each prompt answered alone, the reference replies);
- concurrent: --clients clients at once, each sending its --requests requests one after
  another (closed loop), run twice: before and after the one-at-a-time arm, so a change in the
  shared machine's load shows as a difference between the two.

Checks: no request fails, and every concurrent reply is identical to the same prompt answered
alone. Prints requests/s of each arm, the ratio, p50/p95 latency, the batch sizes the server
formed, and the machine's load average (the machine is shared; both arms run in this run).
Bounded: at most --clients x --requests requests per arm, each of at most --max_tokens tokens.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def start_server(model: Path, args: argparse.Namespace, sessions: Path) -> tuple[subprocess.Popen, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        str(ROOT / "run" / "serve.py"),
        "--model",
        f"tiny={model}",
        "--port",
        "0",
        "--sessions",
        str(sessions),
        "--batch_window_ms",
        str(args.batch_window_ms),
        "--max_batch",
        str(args.max_batch),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)/v1", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise SystemExit("the server did not start")


def body(i: int, j: int, max_tokens: int) -> dict:
    return {
        "model": "tiny",
        "messages": [
            {"role": "user", "content": f"{i}번 손님의 {j}번째 질문: 오늘 날씨 어때요? " + "정말 " * (i % 7)}
        ],
        "temperature": 0,
        "max_tokens": max_tokens,
    }


def one(client: httpx.Client, url: str, request: dict) -> tuple[str | None, float]:
    start = time.perf_counter()
    try:
        response = client.post(f"{url}/v1/chat/completions", json=request, timeout=600)
        text = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError):
        text = None
    return text, time.perf_counter() - start


def alone(url: str, args: argparse.Namespace) -> tuple[dict, list[float], float]:
    replies, latencies = {}, []
    start = time.perf_counter()
    with httpx.Client() as client:
        for i in range(args.clients):
            for j in range(args.requests):
                replies[i, j], seconds = one(client, url, body(i, j, args.max_tokens))
                latencies.append(seconds)
    return replies, latencies, time.perf_counter() - start


def concurrent(url: str, args: argparse.Namespace) -> tuple[dict, list[float], float]:
    replies, latencies = {}, []
    lock = threading.Lock()
    gate = threading.Barrier(args.clients + 1)

    def client_loop(i: int) -> None:
        with httpx.Client() as client:
            gate.wait()
            for j in range(args.requests):
                text, seconds = one(client, url, body(i, j, args.max_tokens))
                with lock:
                    replies[i, j] = text
                    latencies.append(seconds)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    gate.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return replies, latencies, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=4, help="per client")
    p.add_argument("--max_tokens", type=int, default=32)
    p.add_argument("--model", type=Path, help="a model folder (default: a tiny random Llama)")
    p.add_argument("--batch_window_ms", type=float, default=10.0)
    p.add_argument("--max_batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = p.parse_args()
    if not 1 <= args.clients <= 256 or not 1 <= args.requests <= 64 or not 1 <= args.max_tokens <= 512:
        raise SystemExit("bounded: --clients 1-256, --requests 1-64, --max_tokens 1-512")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from malpyeong.models.tiny import build_tiny_model

            model = build_tiny_model("llama", Path(tmp) / "tiny")
        proc, url = start_server(model, args, Path(tmp) / "sessions")
        try:
            n = args.clients * args.requests
            print(
                f"server {url} (loopback), model {model if args.model else 'tiny random Llama'}; {n} requests "
                f"per arm, {args.max_tokens} new tokens each, greedy; load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine)",
                flush=True,
            )
            with httpx.Client() as client:  # warm-up: first-call costs out of both arms
                one(client, url, body(999, 0, args.max_tokens))
            first = concurrent(url, args)
            after_first = httpx.get(f"{url}/health", timeout=60).json()
            ref = alone(url, args)
            second = concurrent(url, args)
        finally:
            proc.terminate()
            proc.wait(120)
    reference, ref_lat, ref_time = ref
    errors = sum(v is None for v in reference.values())
    rows = []
    for label, (replies, lat, seconds) in (("concurrent (1st)", first), ("concurrent (2nd)", second)):
        errors += sum(v is None for v in replies.values())
        same = sum(replies[k] == reference[k] for k in reference)
        rows.append((label, n / seconds, statistics.median(lat), pct(lat, 0.95), same))
    print(f"{'arm':<18} {'req/s':>8} {'p50 s':>7} {'p95 s':>7}  identical to alone")
    print(
        f"{'one at a time':<18} {n / ref_time:8.2f} {statistics.median(ref_lat):7.3f} {pct(ref_lat, 0.95):7.3f}  -"
    )
    for label, rate, p50, p95, same in rows:
        print(f"{label:<18} {rate:8.2f} {p50:7.3f} {p95:7.3f}  {same}/{n}")
    worst = min(r[1] for r in rows)
    print(
        f"errors: {errors}; throughput ratio concurrent / one at a time: {worst / (n / ref_time):.1f}x "
        f"(the slower concurrent run; {max(r[1] for r in rows) / (n / ref_time):.1f}x the faster)"
    )
    print(
        f"batches in the first concurrent run: {after_first['batches'] - 1} for {n} requests, "
        f"largest {after_first['largest_batch']}"
    )
    identical = all(r[4] == n for r in rows)
    print(
        "every concurrent reply identical to the same prompt answered alone: "
        + ("yes" if identical else "NO")
    )
    return 0 if errors == 0 and identical else 1


if __name__ == "__main__":
    sys.exit(main())
