"""run/serve.py as a user runs it: a process that refuses an unsafe address, serves, and on
Ctrl-C finishes the requests in flight, saves the sessions and exits cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import ROOT

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from malpyeong.errors import UserError  # noqa: E402
from malpyeong.serving import ServeConfig  # noqa: E402
from malpyeong.serving.config import parse_ensemble, parse_model  # noqa: E402

KEY = "test-key-0123456789"


def env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def test_names_specs_and_binding_are_checked():
    assert parse_model("runs/cci/gemma") == ("gemma", "runs/cci/gemma")
    assert parse_model("g=rtzr/ko-gemma-2-9b-it") == ("g", "rtzr/ko-gemma-2-9b-it")
    spec = parse_ensemble("v=a,b:2,c")
    assert spec.members == ("a", "b", "c") and spec.weights == (1.0, 2.0, 1.0)
    assert parse_ensemble("v=a,b").weights is None
    for bad in ("../x=y", "a/b=c"):
        with pytest.raises(UserError):
            parse_model(bad)
    with pytest.raises(UserError, match="without --api_key"):
        ServeConfig(models={"a": "x"}, host="0.0.0.0")
    with pytest.raises(UserError, match="unknown model"):
        ServeConfig(models={"a": "x"}, ensembles=(parse_ensemble("v=a,b"),))
    assert ServeConfig(models={"a": "x"}, host="0.0.0.0", api_key=KEY).host == "0.0.0.0"
    assert ServeConfig(models={"a": "x"}, host="::1").host == "::1"


def test_another_address_needs_an_api_key(tmp_path):
    done = subprocess.run(
        [sys.executable, "run/serve.py", "--model", f"x={tmp_path}", "--host", "0.0.0.0"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: field 'host': refusing to listen on 0.0.0.0 without --api_key: anyone who can reach it "
        "could use the models (give --api_key KEY (clients send Authorization: Bearer KEY), or keep "
        "--host 127.0.0.1)"
    ]


@pytest.mark.slow
def test_ctrl_c_drains_requests_in_flight_and_saves_sessions(tiny_llama, tmp_path):
    sessions = tmp_path / "sessions"
    proc = subprocess.Popen(
        [
            sys.executable,
            "run/serve.py",
            "--model",
            f"tiny={tiny_llama}",
            "--port",
            "0",
            "--sessions",
            sessions,
        ],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        lines = []
        deadline = time.monotonic() + 300
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"serving on (http://127\.0\.0\.1:\d+)/v1", line)
            url = found.group(1) if found else None
        assert url, "".join(lines) + proc.stderr.read()
        results: dict[str, httpx.Response] = {}

        def post(name: str, body: dict) -> None:
            results[name] = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)

        long = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
        turn = {**long, "session": "drained", "max_tokens": 200}
        threads = [
            threading.Thread(target=post, args=("long", long)),
            threading.Thread(target=post, args=("turn", turn)),
        ]
        for t in threads:
            t.start()
        until = time.monotonic() + 120
        while not httpx.get(f"{url}/health", timeout=60).json()["queued"] and time.monotonic() < until:
            time.sleep(0.05)  # until the model thread is answering them
        proc.send_signal(signal.SIGINT)  # Ctrl-C while both are being answered
        for t in threads:
            t.join(300)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    long_reply, turn_reply = results["long"].json(), results["turn"].json()
    assert results["long"].status_code == 200 and long_reply["usage"]["completion_tokens"] > 0
    assert results["turn"].status_code == 200 and turn_reply["session"] == "drained"
    assert "stopped: requests in flight finished, 1 session(s) saved" in out
    saved = json.loads((sessions / "drained.json").read_text(encoding="utf-8"))
    assert [t["speaker"] for t in saved["turns"]] == ["User", "Assistant"]
    assert saved["turns"][1]["utterance"] == turn_reply["choices"][0]["message"]["content"]


def test_a_model_that_cannot_write_text_is_refused_before_any_loads(tiny_llama, tiny_embedder, monkeypatch):
    """run/test.py's check (check_generates) on every --model before the first loads: an
    encoder named second stops the server with one line, nothing loaded."""
    from malpyeong.serving import registry

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before every --model was checked")

    monkeypatch.setattr(registry, "load_adapters", loaded)
    monkeypatch.setattr(registry, "load_engine", loaded)
    cfg = ServeConfig(models={"ok": str(tiny_llama), "enc": str(tiny_embedder)}, port=0)
    with pytest.raises(UserError) as refused:
        registry.load_registry(cfg)
    assert refused.value.file == str(tiny_embedder) and "causal language model" in refused.value.line()
