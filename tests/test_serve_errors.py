"""Bad requests: every kind gets a 4xx whose body is one line of JSON, never a 500. The table
of docs/serving.md is what this test gets (MALPYEONG_BAD_REQUESTS_TABLE=FILE writes it)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import CCI_ITEM
from serve_helpers import random_adapter, run_folder

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from malpyeong.dialogue.session import ChatSettings, Session  # noqa: E402
from malpyeong.serving import Limits, ServeConfig  # noqa: E402
from malpyeong.serving.config import parse_ensemble  # noqa: E402
from malpyeong.serving.server import Running  # noqa: E402

KEY = "test-key-0123456789"

LONG = "가나다라마바사 " * 600  # over the test server's prompt limit of 1024 tokens
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = "/v1/chat/completions"
PREDICT = "/v1/tasks/cci/predict"


def chat_body(**fields) -> dict:
    return {"model": "apple", "messages": [{"role": "user", "content": "hi"}], **fields}


def chunked(size: int):
    for _ in range(size // 65536 + 1):
        yield b" " * 65536


# (kind of mistake, method, path, body (dict: JSON; bytes/str: raw; generator: chunked), headers,
# expected status)
BAD_REQUESTS = [
    ("malformed JSON", "POST", CHAT, b'{"model": "apple", "messages": [', AUTH, 400),
    ("NaN in JSON", "POST", CHAT, b'{"model": "apple", "temperature": NaN, "messages": []}', AUTH, 400),
    ("body is a JSON list, not an object", "POST", CHAT, b"[1, 2]", AUTH, 400),
    ("unknown model", "POST", CHAT, chat_body(model="gpt-5"), AUTH, 404),
    ("path as model name", "POST", CHAT, chat_body(model="../../etc/passwd"), AUTH, 404),
    ("missing messages", "POST", CHAT, {"model": "apple"}, AUTH, 400),
    ("empty messages", "POST", CHAT, chat_body(messages=[]), AUTH, 400),
    ("messages of the wrong type", "POST", CHAT, chat_body(messages="hi"), AUTH, 400),
    ("unknown role", "POST", CHAT, chat_body(messages=[{"role": "robot", "content": "hi"}]), AUTH, 400),
    ("max_tokens of the wrong type", "POST", CHAT, chat_body(max_tokens="ten"), AUTH, 400),
    ("temperature out of range", "POST", CHAT, chat_body(temperature=5), AUTH, 400),
    ("top_p of 0", "POST", CHAT, chat_body(top_p=0), AUTH, 400),
    ("max_tokens over the server's limit", "POST", CHAT, chat_body(max_tokens=100_000), AUTH, 400),
    ("n > 1", "POST", CHAT, chat_body(n=2), AUTH, 400),
    ("tools", "POST", CHAT, chat_body(tools=[{"type": "function", "function": {"name": "f"}}]), AUTH, 400),
    ("misspelt field", "POST", CHAT, chat_body(temprature=0.5), AUTH, 400),
    ("five stop strings", "POST", CHAT, chat_body(stop=["a", "b", "c", "d", "e"]), AUTH, 400),
    ("unknown response_format", "POST", CHAT, chat_body(response_format={"type": "xml"}), AUTH, 400),
    (
        "response_format schema that does not compile",
        "POST",
        CHAT,
        chat_body(
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}
        ),
        AUTH,
        400,
    ),
    (
        "prompt over the token budget",
        "POST",
        CHAT,
        chat_body(messages=[{"role": "user", "content": LONG}]),
        AUTH,
        400,
    ),
    ("body over the size limit (Content-Length)", "POST", CHAT, b"{" + b" " * 400_000 + b"}", AUTH, 413),
    ("body over the size limit (chunked, no length)", "POST", CHAT, "chunked", AUTH, 413),
    ("path as session id", "POST", CHAT, chat_body(session="../../tmp/x"), AUTH, 400),
    (
        "empty line in a session",
        "POST",
        CHAT,
        chat_body(session="s", messages=[{"role": "user", "content": " "}]),
        AUTH,
        400,
    ),
    ("ensemble asked to chat", "POST", CHAT, chat_body(model="duo"), AUTH, 400),
    ("no API key", "POST", CHAT, chat_body(), {}, 401),
    ("wrong API key", "GET", "/v1/models", None, {"Authorization": "Bearer nope-nope-nope"}, 401),
    ("unknown task", "POST", "/v1/tasks/nope/predict", {"model": "apple", "items": [{}]}, AUTH, 404),
    ("path as task", "POST", "/v1/tasks/..%2F..%2Fetc/predict", {"model": "apple", "items": [{}]}, AUTH, 404),
    (
        "items that are not the task's format",
        "POST",
        PREDICT,
        {"model": "apple", "items": [{"id": "x"}]},
        AUTH,
        400,
    ),
    ("items and conversation both missing", "POST", PREDICT, {"model": "apple"}, AUTH, 400),
    ("more items than the server takes", "POST", PREDICT, {"model": "apple", "items": [{}] * 51}, AUTH, 400),
    (
        "unknown scoring",
        "POST",
        PREDICT,
        {"model": "apple", "items": [CCI_ITEM], "scoring": "vibes"},
        AUTH,
        400,
    ),
    (
        "a run trained for another task",
        "POST",
        PREDICT,
        {"model": "dcs-run", "items": [CCI_ITEM]},
        AUTH,
        400,
    ),
    ("session file that is not JSON", "GET", "/v1/sessions/broken", None, AUTH, 409),
    ("session file with a wrong field", "POST", CHAT, chat_body(session="wrong"), AUTH, 409),
    ("session that does not exist", "GET", "/v1/sessions/nobody", None, AUTH, 404),
    ("unknown route", "GET", "/v1/embeddings", None, AUTH, 404),
    ("wrong method", "GET", CHAT, None, AUTH, 405),
]


def send(url: str, method: str, path: str, body, headers: dict) -> httpx.Response:
    kwargs: dict = {"headers": dict(headers), "timeout": 120}
    if body == "chunked":
        kwargs["content"] = chunked(400_000)
    elif isinstance(body, dict):
        kwargs["json"] = body
    elif body is not None:
        kwargs["content"] = body
    return httpx.request(method, url + path, **kwargs)


@pytest.fixture(scope="module")
def strict_server(tiny_llama, tmp_path_factory):
    """A server with an API key, small limits, an ensemble and a run of another task (untrained
    models: every request here is refused before a model would answer it)."""
    folder = tmp_path_factory.mktemp("strict-runs")
    dcs = run_folder(random_adapter(tiny_llama, folder / "adapter", 1), folder / "dcs", tiny_llama, "dcs")
    sessions = tmp_path_factory.mktemp("strict")
    (sessions / "broken.json").write_text('{"malpyeong_chat": 1, "settings": ', encoding="utf-8")
    wrong = Session(ChatSettings(model="apple", task="chat", character="A")).as_dict()
    (sessions / "wrong.json").write_text(json.dumps({**wrong, "turns": "hi"}), encoding="utf-8")
    cfg = ServeConfig(
        models={
            "base": str(tiny_llama),
            "apple": str(tiny_llama),
            "banana": str(tiny_llama),
            "dcs-run": str(dcs),
        },
        port=0,
        api_key=KEY,
        sessions=sessions,
        limits=Limits(max_body_bytes=300_000, max_prompt_tokens=1024, max_new_tokens=256, max_items=50),
        ensembles=(parse_ensemble("duo=apple,banana"),),
    )
    with Running(cfg) as url:
        yield url


def test_bad_requests_get_a_4xx_and_one_line(strict_server, tmp_path):
    rows = []
    for kind, method, path, body, headers, expected in BAD_REQUESTS:
        response = send(strict_server, method, path, body, headers)
        text = response.text
        assert response.status_code == expected, (kind, response.status_code, text)
        assert "\n" not in text.strip() and "Traceback" not in text, (kind, text)
        message = response.json()["error"]["message"]
        assert message and "\n" not in message, kind
        rows.append(f"| {kind} | `{method} {path}` | {response.status_code} | {message.replace('|', '/')} |")
    assert len(BAD_REQUESTS) >= 15
    table = "| request | route | status | the one line it gets (`error.message`) |\n|---|---|---|---|\n"
    (tmp_path / "bad_requests.md").write_text(table + "\n".join(rows) + "\n", encoding="utf-8")
    if os.environ.get("MALPYEONG_BAD_REQUESTS_TABLE"):  # docs/serving.md's table, from a real run
        with open(os.environ["MALPYEONG_BAD_REQUESTS_TABLE"], "w", encoding="utf-8") as out:
            out.write(table + "\n".join(rows) + "\n")
