"""The OpenAI-compatible server on tiny models: the unmodified ``openai`` client, two trained
adapters on one base, batching, sessions with memory across a restart, safe defaults."""

from __future__ import annotations

import json
import threading

import pytest
from serve_helpers import PROMPTS, build_base, run_folder, train_adapter

pytestmark = pytest.mark.slow  # trains two adapters, then generates

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import openai  # noqa: E402 - the unmodified client (dev extra)

from malpyeong.serving import ServeConfig, SessionDefaults  # noqa: E402
from malpyeong.serving.server import Running  # noqa: E402

KEY = "test-key-0123456789"
APPLE, BANANA = "사과가 좋아요.", "바나나는 싫어요."


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny base, and two adapters trained on it to answer differently: one in a run folder
    (as run/train.py leaves it), one a bare adapter folder."""
    root = tmp_path_factory.mktemp("serve")
    base = build_base(root / "base")
    apple = run_folder(train_adapter(base, root / "apple-adapter", APPLE), root / "runs" / "apple", base)
    banana = train_adapter(base, root / "banana", BANANA)
    return {"base": base, "apple": apple, "banana": banana}


def config(models, tmp_path, **kwargs) -> ServeConfig:
    values = {
        "models": {
            "base": str(models["base"]),
            "apple": str(models["apple"]),
            "banana": str(models["banana"]),
        },
        "port": 0,
        "api_key": KEY,
        "sessions": tmp_path / "sessions",
        "session_defaults": SessionDefaults(memory_tokens=24, summary_tokens=64, summarizer="extractive"),
    }
    return ServeConfig(**{**values, **kwargs})


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    running = Running(config(models, tmp_path_factory.mktemp("sessions")))
    with running as url:
        yield running, url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300)


def ask(c: openai.OpenAI, model: str, text: str = "처음 보는 질문이에요", **kwargs) -> str:
    reply = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=16, **kwargs
    )
    return reply.choices[0].message.content


def test_openai_client_lists_chats_and_streams(server):
    running, url = server
    c = client(url)
    listed = {m.id: m for m in c.models.list().data}
    assert list(listed) == ["base", "apple", "banana"]
    assert listed["apple"].model_extra["shares_base_with"] == "base, banana"
    # one base in memory: both adapters sit on the same peft model, chosen per request
    engines = running.state.registry.models
    assert engines["apple"].engine.model is engines["banana"].engine.model is engines["base"].engine.model
    assert set(engines["apple"].engine.model.peft_config) == {"adapter0", "adapter1"}

    reply = c.chat.completions.create(
        model="apple",
        messages=[{"role": "user", "content": "처음 보는 질문이에요"}],
        temperature=0,
        max_tokens=16,
    )
    assert reply.choices[0].message.content == APPLE
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    banana = c.chat.completions.create(
        model="banana",
        messages=[{"role": "user", "content": "처음 보는 질문이에요"}],
        temperature=0,
        max_tokens=16,
    )
    assert banana.choices[0].message.content == BANANA
    assert ask(c, "base") not in (APPLE, BANANA)

    stream = c.chat.completions.create(
        model="banana",
        messages=[{"role": "user", "content": "처음 보는 질문이에요"}],
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert "".join(pieces) == BANANA and len(pieces) > 1  # streamed, piece by piece
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == banana.usage.completion_tokens


def test_concurrent_requests_are_batched_per_adapter(server):
    running, url = server
    c = client(url)
    names = ["apple", "banana"] * 6
    replies: dict[int, str] = {}

    def one(i: int) -> None:
        replies[i] = ask(c, names[i], PROMPTS[i % len(PROMPTS)])

    before = len(running.state.scheduler.batches)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert [replies[i] for i in range(len(names))] == [APPLE if n == "apple" else BANANA for n in names]
    sizes = list(running.state.scheduler.batches)[before:]
    assert sum(sizes) == len(names) and max(sizes) > 1  # requests that came together shared a batch


def test_stop_strings_and_json_response_format(server):
    _, url = server
    c = client(url)
    assert ask(c, "apple", stop=["좋"]) == "사과가 "
    reply = c.chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": "JSON please"}],
        max_tokens=40,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "schema": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "required": ["n"],
                    "additionalProperties": False,
                },
            },
        },
    )
    assert isinstance(json.loads(reply.choices[0].message.content)["n"], int)


def turn(url: str, sid: str, line: str, **extra) -> dict:
    body = {"model": "apple", "session": sid, "messages": [{"role": "user", "content": line}], **extra}
    response = httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=300
    )
    assert response.status_code == 200, response.text
    return response.json()


def memory(url: str, sid: str) -> dict:
    response = httpx.get(f"{url}/v1/sessions/{sid}", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_sessions_remember_apart_and_survive_a_restart(models, tmp_path):
    cfg = config(models, tmp_path)
    with Running(cfg) as url:
        assert (
            turn(url, "mina", "My name is Mina and I work as a baker.")["choices"][0]["message"]["content"]
            == APPLE
        )
        turn(url, "joon", "I am Joon, a pilot.")
        for line in ("I like jazz music.", "My sister lives in Busan."):
            turn(url, "mina", line)
        mina, joon = memory(url, "mina"), memory(url, "joon")
        # the buffer keeps the turns that fit in 24 tokens; older ones are folded into the
        # summary (extractive: the user's informative lines), never over its budget
        assert mina["turns"] == 6 and mina["folded"] > 0 and "baker" in mina["summary"]
        assert mina["buffer_tokens"] <= 24 or len(mina["buffer"]) == 1
        assert joon["turns"] == 2 and "Mina" not in json.dumps(joon) and "pilot" in json.dumps(joon)
        # a session keeps its settings: another character is refused in one line
        bad = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "apple",
                "session": "mina",
                "character": "Bob",
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        assert bad.status_code == 409 and "character" in bad.json()["error"]["message"]
    assert (cfg.sessions / "mina.json").is_file()
    with Running(cfg) as url:  # a new server process state: the sessions come back from disk
        again = memory(url, "mina")
        assert (again["summary"], again["buffer"], again["turns"]) == (mina["summary"], mina["buffer"], 6)
        turn(url, "mina", "What is my job?")
        after = memory(url, "mina")
        assert after["turns"] == 8 and after["last_prompt"]["turn"] == 6
        reset = httpx.post(
            f"{url}/v1/sessions/mina/reset", headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        )
        assert reset.json()["turns"] == 0 and reset.json()["summary"] == ""


def test_streamed_session_turn_shows_the_stored_reply(server):
    _, url = server
    body = {
        "model": "banana",
        "session": "streamed",
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    pieces = []
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=300,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"] if json.loads(line[6:])["choices"] else {}
                pieces.append(delta.get("content") or "")
    stored = memory(url, "streamed")["buffer"][-1]
    # what the client saw is what the session stored (the chat task's cleaned reply)
    assert stored["speaker"] == "Assistant" and "".join(pieces) == stored["utterance"]
    assert stored["utterance"].startswith("바나나") and len([p for p in pieces if p]) > 1
