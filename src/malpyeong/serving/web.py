"""The web page (Gradio): chat with memory, a memory state from a pasted dialogue, task items.

The page is a client of the HTTP API like any other (it sends the same requests the
``openai`` client or ``curl`` would), so it works the same mounted on the server
(``run/serve.py --web``, at ``/web``) or on its own in front of a server elsewhere
(``run/web.py --server URL``). Three tabs:

- **Chat**: a served model, a character name, streamed replies in a session of the server,
  and the memory panel: the running summary and the verbatim buffer after every turn, as
  ``run/chat.py``'s ``/memory`` shows them; Reset forgets the session's turns.
- **Memory state**: a dialogue pasted as ``speaker: utterance`` lines, answered by a task with
  a JSON output (any registered one), as JSON.
- **Task**: an item in a task's official input format (a made-up example to start from), the
  answer with what the model's sidecar holds (a choice task's option probabilities).

Nothing here knows a task by name: the lists come from ``GET /v1/tasks``.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from malpyeong.serving.config import ServeConfig

TIMEOUT = httpx.Timeout(600.0, connect=10.0)


class ApiClient:
    """The few calls the page makes, over HTTP."""

    def __init__(self, base: str, api_key: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _get(self, path: str) -> Any:
        with httpx.Client(timeout=TIMEOUT, headers=self.headers) as client:
            response = client.get(self.base + path)
        return _json(response)

    def _post(self, path: str, body: dict) -> Any:
        with httpx.Client(timeout=TIMEOUT, headers=self.headers) as client:
            response = client.post(self.base + path, json=body)
        return _json(response)

    def models(self) -> list[dict]:
        return self._get("/v1/models")["data"]

    def tasks(self) -> list[dict]:
        return self._get("/v1/tasks")["data"]

    def example(self, task: str) -> dict | None:
        try:
            return self._get(f"/v1/tasks/{task}/example")["item"]
        except PageError:
            return None

    def session(self, sid: str) -> dict | None:
        try:
            return self._get(f"/v1/sessions/{sid}")
        except PageError:
            return None

    def reset(self, sid: str) -> dict | None:
        try:
            return self._post(f"/v1/sessions/{sid}/reset", {})
        except PageError:
            return None

    def predict(self, task: str, body: dict) -> dict:
        return self._post(f"/v1/tasks/{task}/predict", body)

    def chat(self, body: dict) -> Iterator[str]:
        """The reply's text as it streams in."""
        with (
            httpx.Client(timeout=TIMEOUT, headers=self.headers) as client,
            client.stream(
                "POST", self.base + "/v1/chat/completions", json={**body, "stream": True}
            ) as response,
        ):
            if response.status_code != 200:
                response.read()
                _json(response)
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise PageError(event["error"].get("message", "error"))
                for choice in event.get("choices", []):
                    text = choice.get("delta", {}).get("content")
                    if text:
                        yield text


class PageError(Exception):
    """A refusal of the server, shown on the page as its one line."""


def _json(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise PageError(f"{response.status_code}: {error.get('message', response.text[:200])}")
    return body


def memory_markdown(view: dict | None) -> str:
    """The memory panel: what the session keeps verbatim and what it has summarised."""
    if not view:
        return "_No turns yet: the memory is empty._"
    s = view["settings"]
    lines = [
        # not a task name: the session's memory strategy
        f"**Session** `{view['id']}` · {view['turns']} turn(s) · memory `{s['memory']}` "
        f"(buffer {s['memory_tokens']} tokens, summary {s['summary_tokens']})",
        "",
        f"**Summary** ({view.get('summary_tokens', '?')} tokens, {view['folded']} turn(s) folded in):",
        "",
        "> " + (view["summary"].replace("\n", "\n> ") if view["summary"] else "_(empty)_"),
        "",
        f"**Buffer** ({len(view['buffer'])} turn(s), {view.get('buffer_tokens', '?')} tokens):",
        "",
    ]
    lines += [f"- **{t['speaker']}**: {t['utterance']}" for t in view["buffer"]] or ["_(empty)_"]
    return "\n".join(lines)


def parse_dialogue(text: str) -> list[dict]:
    """``speaker: utterance`` lines (a line without a colon continues the speaker before)."""
    turns: list[dict] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        speaker, colon, utterance = line.partition(":")
        if colon and speaker.strip() and len(speaker) <= 40:
            turns.append({"speaker": speaker.strip(), "utterance": utterance.strip()})
        elif turns:
            turns[-1]["utterance"] += " " + line
        else:
            raise PageError("write each line as 'speaker: utterance'")
    if not turns:
        raise PageError("paste a dialogue, one 'speaker: utterance' line per turn")
    return turns


def build_page(api: ApiClient) -> Any:
    """The Gradio page over ``api``; its lists are read when a browser opens it."""
    import gradio as gr

    def names(kind: str | None = None) -> list[str]:
        try:
            return [m["id"] for m in api.models() if kind is None or m.get("kind") == kind]
        except (PageError, httpx.HTTPError):
            return []

    def tasks(json_only: bool = False) -> list[str]:
        try:
            return [t["name"] for t in api.tasks() if t["json_output"] or not json_only]
        except (PageError, httpx.HTTPError):
            return []

    with gr.Blocks(title="malpyeong") as page:
        gr.Markdown("## malpyeong · serving what we train")
        with gr.Tab("Chat"):  # not a task name: the tab's label
            with gr.Row():
                chat_model = gr.Dropdown(label="Model", choices=[], elem_id="chat-model", scale=2)
                character = gr.Textbox(
                    label="Character", value="Assistant", elem_id="chat-character", scale=2
                )
                session = gr.Textbox(label="Session", elem_id="chat-session", scale=2)
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", height=360)
                    with gr.Row():
                        message = gr.Textbox(
                            label="Your line", placeholder="Say something…", elem_id="chat-input", scale=4
                        )
                        send = gr.Button("Send", variant="primary", elem_id="chat-send", scale=1)
                    reset = gr.Button("Reset the session", elem_id="chat-reset")
                with gr.Column(scale=2), gr.Group():
                    gr.Markdown("#### Memory: what the next prompt remembers")
                    memory = gr.Markdown(memory_markdown(None), elem_id="memory-panel", padding=True)

        with gr.Tab("Memory state"):
            with gr.Row():
                state_model = gr.Dropdown(label="Model", choices=[], elem_id="state-model")
                state_task = gr.Dropdown(label="Task (JSON output)", choices=[], elem_id="state-task")
            dialogue = gr.Textbox(
                label="Dialogue",
                lines=8,
                placeholder="A: 내일 부산에 가요.\nB: 몇 시 기차예요?",
                elem_id="state-dialogue",
            )
            make_state = gr.Button("Get the memory state", variant="primary", elem_id="state-run")
            state_out = gr.JSON(label="Memory state", elem_id="state-output")

        with gr.Tab("Task"):
            with gr.Row():
                task_model = gr.Dropdown(label="Model or ensemble", choices=[], elem_id="task-model")
                task_name = gr.Dropdown(label="Task", choices=[], elem_id="task-name")
            item = gr.Code(
                label="Item (the task's official input format)", language="json", elem_id="task-item"
            )
            answer = gr.Button("Answer", variant="primary", elem_id="task-run")
            task_out = gr.JSON(label="Answer", elem_id="task-output")

        def opened() -> tuple:
            models, everything = names("model"), names()
            json_tasks, all_tasks = tasks(json_only=True), tasks()
            first = all_tasks[0] if all_tasks else None
            example = api.example(first) if first else None
            return (
                gr.update(choices=models, value=models[0] if models else None),
                uuid.uuid4().hex[:12],
                gr.update(choices=models, value=models[0] if models else None),
                gr.update(choices=json_tasks, value=json_tasks[0] if json_tasks else None),
                gr.update(choices=everything, value=everything[0] if everything else None),
                gr.update(choices=all_tasks, value=first),
                json.dumps(example, ensure_ascii=False, indent=1) if example else "",
            )

        page.load(opened, outputs=[chat_model, session, state_model, state_task, task_model, task_name, item])

        def say(line: str, history: list, model: str, who: str, sid: str) -> Iterator[tuple]:
            history = list(history or [])
            if not line.strip():
                yield history, line, gr.update()
                return
            history += [{"role": "user", "content": line}, {"role": "assistant", "content": ""}]
            yield history, "", gr.update()
            body = {
                "model": model,
                "session": sid,
                "character": who or "Assistant",
                "messages": [{"role": "user", "content": line}],
            }
            try:
                for text in api.chat(body):
                    history[-1] = {"role": "assistant", "content": history[-1]["content"] + text}
                    yield history, "", gr.update()
            except (PageError, httpx.HTTPError) as err:
                history[-1] = {"role": "assistant", "content": f"⚠ {err}"}
            yield history, "", memory_markdown(api.session(sid))

        send.click(say, [message, chatbot, chat_model, character, session], [chatbot, message, memory])
        message.submit(say, [message, chatbot, chat_model, character, session], [chatbot, message, memory])
        reset.click(lambda sid: ([], memory_markdown(api.reset(sid))), [session], [chatbot, memory])

        def state(model: str, task: str, text: str) -> Any:
            try:
                result = api.predict(task, {"model": model, "conversation": parse_dialogue(text)})
            except (PageError, httpx.HTTPError) as err:
                return {"error": str(err)}
            return result["outputs"][0]["output"]

        make_state.click(state, [state_model, state_task, dialogue], [state_out])

        def pick(task: str) -> str:
            example = api.example(task) if task else None
            return json.dumps(example, ensure_ascii=False, indent=1) if example else ""

        task_name.change(pick, [task_name], [item])

        def run_task(model: str, task: str, text: str) -> Any:
            try:
                record = json.loads(text)
                records = record if isinstance(record, list) else [record]
                return api.predict(task, {"model": model, "items": records})["outputs"]
            except ValueError as err:
                return {"error": f"the item is not JSON: {err}"}
            except (PageError, httpx.HTTPError) as err:
                return {"error": str(err)}

        answer.click(run_task, [task_model, task_name, item], [task_out])
    return page


def mount_web(app: Any, config: ServeConfig) -> ApiClient:
    """The page at ``/web`` of the server's own application; it calls the server's API (whose
    address the caller corrects once the port is known, for port 0)."""
    import gradio as gr

    api = ApiClient(config.self_url, config.api_key)
    page = build_page(api)
    auth = None
    if config.api_key:  # the page is as closed as the API: the key is its password
        key = config.api_key

        def auth(user: str, password: str) -> bool:
            return hmac.compare_digest(password.encode(), key.encode())

    gr.mount_gradio_app(app, page, path="/web", auth=auth, ssr_mode=False, footer_links=[])
    return api


__all__ = ["ApiClient", "build_page", "memory_markdown", "mount_web", "parse_dialogue"]
