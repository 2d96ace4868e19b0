"""Chat with a character in the terminal: replies streamed, the conversation remembered.

    python run/chat.py --model runs/chat/mina --character Mina
    python run/chat.py --model runs/chat/mina --character Mina --memory summary_buffer \
        --memory_tokens 512 --summarizer runs/dcs/gemma_lora --session sessions/mina.json
    python run/chat.py --session sessions/mina.json                 # continue that chat
    python run/chat.py --model runs/chat/mina --character Mina --input lines.txt   # scripted

--model is a hub id, a model folder or a training run folder (a run of the chat task knows its
prompt and max_length). Memory: none (only the new line), window (the recent turns that fit
in --memory_tokens), summary_buffer (the same, with older turns folded into a running summary
written by the chat model, by --summarizer MODEL, or by --summarizer extractive, which needs
no model). Tokens are counted with the chat model's tokenizer; no prompt exceeds
--max_length minus --max_new_tokens. The session (settings, turns, summary, buffer) is saved
atomically after every turn. In the chat: /memory, /reset, /save FILE, /exit. With --input the
user's lines come from a file (the same code path) and the transcript goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from malpyeong.cli import run_cli
from malpyeong.device import check_device
from malpyeong.dialogue import (
    COMMANDS,
    MEMORIES,
    Chat,
    ChatSettings,
    Memory,
    Session,
    check_resume,
    load_session,
    make_summarizer,
    read_lines,
    script_record,
    script_start,
)
from malpyeong.errors import UserError
from malpyeong.inference.loading import check_generates, load_engine, resolve_source
from malpyeong.io import check_outputs
from malpyeong.prep.screenplays import persona_of, read_personas
from malpyeong.tasks import TASKS, get_task
from malpyeong.tasks.base import PromptSpec, Task

DEFAULTS = {
    "user": "User",
    "memory": "summary_buffer",  # not a task name: the chat's memory strategy
    "memory_tokens": 512,
    "summary_tokens": 128,
    "max_new_tokens": 64,
    "temperature": 1.0,
    "top_p": 1.0,
    "seed": 0,
    "do_sample": False,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="hub id, model folder or run folder (not needed to resume)")
    p.add_argument(
        "--task", help="the task that replies (default: the run's, else the only one that can chat)"
    )
    p.add_argument("--character", help="who the model plays (default: Assistant)")
    p.add_argument("--user_name", dest="user", help="your name in the conversation (User)")
    p.add_argument("--memory", choices=MEMORIES, help="none, window or summary_buffer (default)")
    p.add_argument("--memory_tokens", type=int, help="verbatim buffer budget (default 512)")
    p.add_argument("--summary_tokens", type=int, help="running summary budget (default 128)")
    p.add_argument(
        "--summarizer",
        help="model or run folder that writes the summary, or 'extractive' (default: the chat model itself)",
    )
    p.add_argument("--prompt", help="prompt variant (default: the run's, or baseline)")
    p.add_argument(
        "--persona",
        help="the character's description: a text file, or the JSON/YAML "
        "mapping speaker -> text of run/script_pairs.py "
        "(adds the 'persona' prompt flag)",
    )
    p.add_argument("--max_length", type=int, help="prompt + reply tokens (default: the run's)")
    p.add_argument("--max_new_tokens", type=int, help="reply length limit (default 64)")
    p.add_argument("--do_sample", action="store_true", default=None, help="sample, not greedy")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top_p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--session",
        help="session file: resumed when it exists, else created (default sessions/chat-TIME.json)",
    )
    p.add_argument("--input", help="read the user's lines from this file; transcript to stdout")
    p.add_argument("--prompts", help="append every prompt the model sees to this JSONL file")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default=None)
    p.add_argument("--verbose", action="store_true", help="show library logs and progress bars")
    return p.parse_args(argv)


def quiet() -> None:
    """A chat screen holds the conversation: no loading bars, kernel notices or info logs."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("malpyeong").setLevel(logging.WARNING)


def reply_task(name: str | None, run_task: str | None) -> Task:
    able = sorted(n for n, cls in TASKS.items() if cls.live_reply)
    name = name or (run_task if run_task in able else None) or (able[0] if len(able) == 1 else None)
    if name is None:
        raise UserError("which task replies?", field="task", hint=f"--task {' or '.join(able)}")
    task = get_task(name)
    if not task.live_reply:
        raise UserError(
            f"task {task.name} cannot hold a live chat",
            field="task",
            hint=f"tasks that can: {', '.join(able)}",
        )
    return task


def new_settings(args: argparse.Namespace, given: dict) -> ChatSettings:
    """Settings of a new session: the flags, the run's prompt and max_length, the defaults."""
    if not args.model:
        raise UserError("no model given", field="model", hint="--model, or --session to resume")
    source = resolve_source(args.model)
    task = reply_task(args.task, source.run.get("task"))
    spec = task.prompt_spec(args.prompt or source.defaults.get("prompt"))
    character = args.character or "Assistant"
    persona = None
    if args.persona:
        persona = persona_of(read_personas(args.persona, character), character)
        if persona is None:
            raise UserError(f"no description of {character} in the file", file=args.persona, field="persona")
        spec = PromptSpec(spec.flags | {"persona"})
    values = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    values.update(
        model=args.model,
        task=task.name,
        prompt=str(spec),
        persona=persona,
        character=character,
        max_length=args.max_length or source.defaults.get("max_length") or 2048,
    )
    return ChatSettings(**{k: v for k, v in values.items() if k in ChatSettings.__dataclass_fields__})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        quiet()
    given = {
        k: getattr(args, k)
        for k in (
            "character",
            "user",
            "memory",  # not a task name: the chat's memory strategy
            "memory_tokens",
            "summary_tokens",
            "summarizer",
            "max_new_tokens",
            "do_sample",
            "temperature",
            "top_p",
            "seed",
            "max_length",
            "model",
            "task",
            "prompt",
        )
    }
    path = Path(args.session or f"sessions/chat-{time.strftime('%Y%m%d-%H%M%S')}.json")
    check_outputs(  # before any work: the session and the prompt log never replace an input
        [("--session", path), ("--prompts", args.prompts)],
        [("--input", args.input), ("--persona", args.persona)],
        kept=("--session", "--prompts"),  # a session is resumed, the prompt log appended to
    )
    resumed = path.exists()
    if resumed:
        session = load_session(path)
        check_resume(session, given, str(path))
        if args.persona:
            raise UserError("a resumed session keeps its persona", field="persona", file=str(path))
    else:
        session = Session(new_settings(args, given))
    lines = read_lines(args.input) if args.input else None  # every input read before loading
    if lines == []:
        raise UserError("no lines to say (the file is empty or blank)", file=args.input, field="input")
    start, note = script_start(session, args.input, lines) if lines is not None else (0, None)
    if lines is not None and start == len(lines):  # nothing left to say: no model to load
        print(f"# {note}", file=sys.stderr)
        return 0
    s = session.settings
    task = get_task(s.task)
    spec = task.prompt_spec(s.prompt)
    source = resolve_source(s.model)
    check_generates(source)
    if s.memory == "summary_buffer" and s.summarizer not in (None, "extractive"):
        check_generates(resolve_source(s.summarizer, option="summarizer"))  # before the chat model loads
    check_device(args.device)
    engine = load_engine(source, dtype=args.dtype, device=args.device)
    positions = getattr(engine.model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and s.max_length > positions:
        origin = (
            "--max_length"
            if args.max_length
            else "the session's max_length"
            if resumed
            else "max_length (the run's)"
            if source.defaults.get("max_length")
            else "max_length (the default)"
        )
        raise UserError(
            f"{origin} {s.max_length} is over the model's {positions} positions",
            field="max_length",
            hint=f"pass --max_length {positions} or less" if not resumed else "start a new session",
        )
    summarise = None
    if s.memory == "summary_buffer":
        summarise = make_summarizer(
            s.summarizer,
            engine,
            chat_task=task.name,
            max_tokens=s.summary_tokens,
            user=s.user,
            language="ko" if "ko" in spec else "en",
            dtype=args.dtype,
            device=args.device,
        )
    memory = Memory(task, spec, engine.tokenizer, engine.backbone, summarise)
    chat = Chat(
        session,
        path,
        engine,
        task,
        memory,
        sys.stdout,
        echo=bool(args.input),
        prompts=Path(args.prompts) if args.prompts else None,
    )
    # nothing is written until the first turn has its reply: a failed start leaves no session
    at = f", resumed at turn {len(session.turns)}" if session.turns else ""
    print(
        f"# {s.character} ({s.model}); memory {s.memory}, {s.memory_tokens} tokens; "
        f"session {path}{at}; commands: {COMMANDS}",
        file=sys.stderr,
    )
    if note:
        print(f"# {note}", file=sys.stderr)
    if lines is not None:
        for i, line in enumerate(lines[start:], start + 1):
            session.script = script_record(args.input, lines[:i])  # saved with the turn
            if not chat.say(line):
                break
        return 0
    while True:
        try:
            line = input(f"{s.user}: ")
        except EOFError:
            print()
            break
        if not chat.say(line):
            break
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
