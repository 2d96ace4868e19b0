"""run/chat.py: a scripted 30-turn conversation with a 64-token memory keeps the first turn's
fact in the summary, never sends a prompt over budget, and a resumed session continues
identically; the chat commands; the memory modes; settings fixed for a resumed session."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, load_script

from malpyeong.cli import run_cli

FACT = "안녕하세요, 제 이름은 하윤이고 서울대병원 간호사로 일해요."
LINES = (
    [FACT]
    + """오늘 날씨 정말 좋네요.
점심은 드셨어요?
저는 김밥 먹었어요.
주말에 뭐 하세요?
그렇군요.
하하 재미있네요.
네 맞아요.
요즘 바쁘세요?
저도 그래요.
커피 좋아하세요?
저는 라테를 좋아해요.
음 그렇구나.
오늘 회의가 길었어요.
피곤하네요.
그래도 괜찮아요.
내일은 비가 온대요.
우산 챙겨야겠어요.
네네.
좋아요.
그럼요.
알겠어요.
하하.
정말요?
신기하네요.
그렇죠.
맞아요.
음.
그럼 이만.
제 이름과 직업 기억하세요?""".splitlines()
)
OPTIONS = [
    "--character",
    "민지",
    "--memory",
    "summary_buffer",
    "--memory_tokens",
    "64",
    "--summary_tokens",
    "48",
    "--summarizer",
    "extractive",
    "--max_new_tokens",
    "6",
    "--max_length",
    "170",
    "--prompt",
    "ko",
]


def chat(args, capsys) -> tuple[int, str, str]:
    code = run_cli(load_script(ROOT / "run" / "chat.py").main, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def full_run(tiny_models, tmp_path_factory):
    """All 30 lines in one run (module scope: the other tests compare with it)."""
    root = tmp_path_factory.mktemp("chat30")
    session, prompts = root / "s.json", root / "p.jsonl"
    args = [
        "--model",
        tiny_models["mistral"],
        *OPTIONS,
        "--session",
        session,
        "--input",
        write_lines(root / "lines.txt", LINES),
        "--prompts",
        prompts,
    ]
    code = run_cli(load_script(ROOT / "run" / "chat.py").main, [str(a) for a in args])
    assert code == 0
    return session, prompts


def test_turn_one_fact_is_in_the_summary_at_turn_30(full_run):
    session_path, prompts_path = full_run
    session = json.loads(session_path.read_text(encoding="utf-8"))
    prompts = [json.loads(line) for line in prompts_path.read_text(encoding="utf-8").splitlines()]
    assert len(session["turns"]) == 60 and len(session["log"]) == len(prompts) == 30
    last = prompts[-1]
    buffer = session["turns"][session["folded"] :]
    assert FACT not in [t["utterance"] for t in buffer]  # the buffer let it go long ago
    assert f"User: {FACT}" in session["memory"].split("\n")  # ... into the summary
    summary_at = last["prompt"].index("앞선 대화의 내용:")
    fact_at = last["prompt"].index(FACT)
    first_buffer_line = last["prompt"].index(f"{buffer[0]['speaker']}: {buffer[0]['utterance']}")
    assert summary_at < fact_at < first_buffer_line  # inside the summary part of the prompt
    # never over budget; the buffer within --memory_tokens; the budget did bind sometimes
    assert all(r["prompt_tokens"] <= r["budget"] == 164 for r in session["log"])
    assert all(r["buffer_tokens"] <= 64 or r["buffer_turns"] == 1 for r in session["log"])
    assert all(r["memory_tokens"] <= 48 for r in session["log"])
    assert any(r["fitted"] for r in session["log"]) and not all(r["fitted"] for r in session["log"])


def test_resumed_session_continues_identically(full_run, tiny_models, tmp_path, capsys):
    session = tmp_path / "s.json"
    first = write_lines(tmp_path / "a.txt", LINES[:15])
    second = write_lines(tmp_path / "b.txt", LINES[15:])
    code, out1, _ = chat(
        ["--model", tiny_models["mistral"], *OPTIONS, "--session", session, "--input", first], capsys
    )
    assert code == 0 and out1.count("User: ") == 15
    code, out2, err = chat(["--session", session, "--input", second], capsys)
    assert code == 0 and "resumed at turn 30" in err
    resumed, whole = (json.loads(p.read_text(encoding="utf-8")) for p in (session, full_run[0]))
    assert resumed.pop("input")["file"] == str(second) and whole.pop("input")["lines"] == 30  # how far
    assert resumed == whole
    code, _, err = chat(["--session", session, "--memory", "window", "--input", second], capsys)
    assert code == 2 and "a resumed session keeps its settings: --memory 'window'" in err


def test_commands(tiny_models, tmp_path, capsys):
    session, copy = tmp_path / "s.json", tmp_path / "copy.json"
    lines = write_lines(
        tmp_path / "l.txt",
        [
            "내 이름은 하윤이야.",
            "/memory",
            f"/save {copy}",
            f"/save {copy}",
            "/reset",
            "/memory",
            "/nope",
            "/exit",
            "never read",
        ],
    )
    code, out, _ = chat(
        [
            "--model",
            tiny_models["mistral"],
            *OPTIONS,
            "--memory_tokens",
            "512",
            "--session",
            session,
            "--input",
            lines,
        ],
        capsys,
    )
    assert code == 0
    assert "# memory (summary_buffer): summary 0 tokens, buffer 2 turns" in out
    assert "#   buffer  | User: 내 이름은 하윤이야." in out
    assert f"# saved to {copy}" in out and f"# not saved: {copy} exists" in out
    assert "# session reset: no turns, no memory" in out and "# unknown command /nope" in out
    assert "never read" not in out
    assert len(json.loads(copy.read_text(encoding="utf-8"))["turns"]) == 2
    assert json.loads(session.read_text(encoding="utf-8"))["turns"] == []


@pytest.mark.parametrize("memory", ["none", "window", "summary_buffer"])
def test_memory_modes(tiny_models, tmp_path, capsys, memory):
    session = tmp_path / "s.json"
    lines = write_lines(tmp_path / "l.txt", LINES[:4])
    args = [
        "--model",
        tiny_models["mistral"],
        "--character",
        "민지",
        "--memory",
        memory,
        "--memory_tokens",
        "24",
        "--summary_tokens",
        "16",
        "--max_new_tokens",
        "4",
        "--max_length",
        "512",
        "--session",
        session,
        "--input",
        lines,
    ]
    code, out, _ = chat(args, capsys)  # summary_buffer: the chat model writes the summary
    assert code == 0 and out.count("민지: ") == 4
    s = json.loads(session.read_text(encoding="utf-8"))
    if memory == "none":
        assert [r["buffer_turns"] for r in s["log"]] == [1, 1, 1, 1] and s["memory"] == ""
    elif memory == "window":
        assert s["folded"] > 0 and s["memory"] == ""
    else:
        assert s["folded"] > 0 and s["memory"] and max(r["memory_tokens"] for r in s["log"]) <= 16


def test_user_mistakes(tiny_models, tmp_path, capsys):
    code, _, err = chat(["--input", str(tmp_path / "x.txt"), "--session", str(tmp_path / "new.json")], capsys)
    assert code == 2 and "no model given" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    code, _, err = chat(["--session", bad], capsys)
    assert code == 2 and "not a chat session file" in err
    code, _, err = chat(
        [
            "--model",
            tiny_models["mistral"],
            "--max_length",
            "8",
            "--max_new_tokens",
            "8",
            "--session",
            tmp_path / "n.json",
        ],
        capsys,
    )
    assert code == 2 and "leaves no room for a prompt" in err


def test_keyboard_and_file_give_the_same_replies(tiny_models, tmp_path, capsys, monkeypatch):
    import io

    lines = ["안녕하세요, 저는 하윤이에요.", "오늘 날씨 좋네요."]
    base = ["--model", tiny_models["mistral"], *OPTIONS]
    code, scripted, _ = chat(
        [*base, "--session", tmp_path / "a.json", "--input", write_lines(tmp_path / "l.txt", lines)], capsys
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    code2, typed, _ = chat([*base, "--session", tmp_path / "b.json"], capsys)
    assert code == code2 == 0
    replies = [ln for ln in scripted.splitlines() if ln.startswith("민지: ")]
    assert len(replies) == 2 and all(r in typed for r in replies)
    a = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    b = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert a["turns"] == b["turns"] and a["memory"] == b["memory"]


def test_reply_is_streamed_as_it_is_written(tiny_models):
    import io

    import torch

    from malpyeong.dialogue import ReplyStreamer
    from malpyeong.models.backbones import load_tokenizer
    from malpyeong.tasks import get_task
    from malpyeong.tasks.base import Utterance

    class Recorder(io.StringIO):
        writes: list[str] = []

        def write(self, text):
            self.writes.append(text)
            return super().write(text)

    tok = load_tokenizer(str(tiny_models["mistral"]))
    task = get_task("chat")
    item = task.live_item((Utterance("User", "hi"),), speaker="Mina")
    out = Recorder()
    streamer = ReplyStreamer(
        tok, lambda t: task.parse_output(item, t) or "", out, ("mina:", "assistant:", "model:")
    )
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: ignored
    for token in tok.encode("Mina: 오늘 날씨가 정말 좋네요\n다음 줄", add_special_tokens=False):
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert out.getvalue() == "오늘 날씨가 정말 좋네요"  # the name held back, the next line never shown
    assert len(out.writes) > 3  # piece by piece


def test_other_summarisers(tiny_models, tmp_path, capsys):
    """Another plain model writes the summary; a model of another task answers through that
    task (a DCS summariser here)."""
    from malpyeong.dialogue import TaskSummarizer
    from malpyeong.inference.answer import AnswerSettings
    from malpyeong.inference.engines import GenerationSettings, HFEngine
    from malpyeong.inference.loading import load_for_inference
    from malpyeong.tasks import get_task
    from malpyeong.tasks.base import Utterance

    session = tmp_path / "s.json"
    args = [
        "--model",
        tiny_models["mistral"],
        "--character",
        "민지",
        "--memory_tokens",
        "24",
        "--summary_tokens",
        "16",
        "--max_new_tokens",
        "4",
        "--max_length",
        "512",
        "--summarizer",
        tiny_models["llama"],
        "--session",
        session,
        "--input",
        write_lines(tmp_path / "l.txt", LINES[:3]),
    ]
    code, out, _ = chat(args, capsys)
    assert code == 0 and json.loads(session.read_text(encoding="utf-8"))["memory"]
    loaded = load_for_inference(tiny_models["llama"])
    summarise = TaskSummarizer(
        HFEngine(loaded.model, loaded.tokenizer, loaded.backbone),
        get_task("dcs"),
        AnswerSettings(generation=GenerationSettings(max_new_tokens=8)),
    )
    text = summarise("User: 제 이름은 하윤이에요.", [Utterance("User", "오늘 날씨 좋네요.")])
    assert isinstance(text, str) and text
