"""One conversation turn by turn: a user line in, the character's reply out, the session saved.

Lines from the keyboard and from ``--input FILE`` go through the same :meth:`Chat.say`, so a
scripted run is exactly an interactive one. Commands: ``/memory`` (the summary and the
verbatim buffer), ``/reset`` (forget everything, keep the settings), ``/save FILE`` (a copy of
the session), ``/exit``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from malpyeong.cli import os_error_line
from malpyeong.dialogue.history import Memory
from malpyeong.dialogue.reply import generate_reply
from malpyeong.dialogue.session import MEMORY, Session
from malpyeong.errors import UserError
from malpyeong.inference.engines import HFEngine
from malpyeong.io import JsonlAppender, read_text
from malpyeong.tasks.base import GenerateTask

COMMANDS = "/memory, /reset, /save FILE, /exit"


@dataclass
class Chat:
    session: Session
    path: Path  # where the session is saved after every turn
    engine: HFEngine
    task: GenerateTask
    memory: Memory
    out: IO[str]
    echo: bool = False  # print the user's lines (scripted input: the transcript has both sides)
    prompts: Path | None = None  # append every prompt here (JSONL), for inspection

    def say(self, line: str) -> bool:
        """Handle one line; False when the chat should end."""
        line = line.strip()
        if not line:
            return True
        if self.echo:
            self.out.write(f"{self.session.settings.user}: {line}\n")
        if line.startswith("/"):
            return self.command(line)
        self.turn(line)
        return True

    def turn(self, line: str) -> None:
        s = self.session.settings
        self.session.turns.append({"speaker": s.user, "utterance": line})
        prompt = self.memory.prompt(self.session)
        index = len(self.session.turns) - 1
        memory = self.session.memory
        self.out.write(f"{s.character}: ")
        self.out.flush()
        reply, _ = generate_reply(self.engine, self.task, prompt, s, index, self.out)
        if self.prompts is not None:  # written with the turn, so a failed turn leaves no trace
            with JsonlAppender(self.prompts) as log:
                log.write({"turn": index, "prompt": prompt.text, **prompt.info, MEMORY: memory})
        self.session.turns.append({"speaker": s.character, "utterance": reply})
        self.session.log.append({"turn": index, **prompt.info})
        self.memory.update(self.session)  # the buffer within budget between turns too
        self.session.save(self.path)

    def command(self, line: str) -> bool:
        name, _, arg = line.partition(" ")
        if name == "/exit":
            return False
        if name == "/memory":
            self.show_memory()
        elif name == "/reset":
            self.session.reset()
            if self.path.exists():  # a session not yet saved stays unwritten
                self.session.save(self.path)
            self.note("session reset: no turns, no memory")
        elif name == "/save":
            self.save_copy(arg.strip())
        else:
            self.note(f"unknown command {name}; commands: {COMMANDS}")
        return True

    def show_memory(self) -> None:
        s = self.session
        count = self.memory.count
        self.note(
            f"memory ({s.settings.memory}): summary {count(s.memory)} tokens, buffer "
            f"{len(s.buffer)} turns / {sum(map(self.memory.turn_tokens, s.buffer))} "
            f"tokens (budget {s.settings.memory_tokens})"
        )
        for text in s.memory.split("\n") if s.memory else ["(empty)"]:
            self.note(f"  summary | {text}")
        for t in s.buffer:
            self.note(f"  buffer  | {t['speaker']}: {t['utterance']}")

    def save_copy(self, target: str) -> None:
        if not target:
            self.note("usage: /save FILE")
            return
        if Path(target).exists():
            self.note(f"not saved: {target} exists")
            return
        try:
            self.session.save(target)
        except (UserError, OSError) as err:  # a chat goes on when a copy cannot be written
            self.note(f"not saved: {err.line() if isinstance(err, UserError) else os_error_line(err)}")
            return
        self.note(f"saved to {target}")

    def note(self, text: str) -> None:
        self.out.write(f"# {text}\n")
        self.out.flush()


def read_lines(path: str | os.PathLike) -> list[str]:
    """User lines of a scripted conversation (one per line; blank lines skipped), read by the
    one plain-text reader (any encoding it knows, a NUL byte refused)."""
    return [ln for ln in read_text(path, field="input").splitlines() if ln.strip()]
