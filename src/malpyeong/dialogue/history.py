"""What a chat remembers, and the prompt built from it, never over the model's budget.

Memory modes:

- ``none``: the prompt holds only the new line;
- ``window``: the most recent turns that fit in ``memory_tokens`` (the older ones are gone);
- ``summary_buffer``: the same verbatim buffer, and the turns that leave it are folded into a
  running summary by the summariser; the summary goes into the system turn.

Token counts are the chat model's: a turn costs the tokens of ``Name: utterance``. The prompt
is system/persona + summary + buffer + the new line; when it is over the budget
(``max_length - max_new_tokens``) the buffer gives up its oldest turns (folded into the
summary, or dropped for ``window``), then the summary is shortened, then the new line itself,
so no prompt the model sees is ever over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from malpyeong.dialogue.session import Session
from malpyeong.dialogue.summarize import truncate_tokens
from malpyeong.errors import UserError
from malpyeong.models.backbones import Backbone, encode, render_chat
from malpyeong.tasks.base import PromptSpec, Task, Utterance

Summarise = Callable[[str, Sequence[Utterance]], str]


@dataclass
class Prompt:
    item: Any
    text: str
    input_ids: list[int]
    info: dict  # what the prompt holds (logged per reply)


@dataclass
class Memory:
    task: Task
    spec: PromptSpec
    tokenizer: Any
    backbone: Backbone
    summarise: Summarise | None  # summary_buffer only

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def cut(self, text: str, tokens: int) -> str:
        return truncate_tokens(self.tokenizer, text, tokens)

    def turn_tokens(self, turn: dict) -> int:
        return len(self.tokenizer.encode(f"{turn['speaker']}: {turn['utterance']}", add_special_tokens=False))

    def _fold(self, session: Session, upto: int) -> None:
        """Move ``turns[folded:upto]`` out of the buffer: into the summary, or forgotten."""
        if upto <= session.folded:
            return
        gone = session.turns[session.folded : upto]
        session.folded = upto
        if session.settings.memory == "summary_buffer" and self.summarise is not None:
            memory = self.summarise(session.memory, session.utterances(gone))
            session.memory = self.cut(memory, session.settings.summary_tokens)

    def update(self, session: Session) -> None:
        """After a new line (the user's or the reply): the buffer back within
        ``memory_tokens``, the newest turn always kept."""
        s = session.settings
        last = len(session.turns) - 1
        if s.memory == "none":
            self._fold(session, last)
            return
        costs = [self.turn_tokens(t) for t in session.turns]
        upto = session.folded
        while upto < last and sum(costs[upto:]) > s.memory_tokens:
            upto += 1
        self._fold(session, upto)

    def render(self, session: Session, memory: str, new_line: str | None = None) -> Prompt:
        s = session.settings
        turns = session.utterances()
        if new_line is not None:
            turns = turns[:-1] + (Utterance(turns[-1].speaker, new_line),)
        item = self.task.live_item(turns, speaker=s.character, memory=memory or None, persona=s.persona)
        text = render_chat(self.tokenizer, self.task.messages(item, self.spec), self.backbone)
        return Prompt(item, text, encode(self.tokenizer, text), {})

    def prompt(self, session: Session) -> Prompt:
        """The reply's prompt within the budget, folding, shortening the summary and, last,
        the new line if it has to."""
        s = session.settings
        self.update(session)
        steps: list[str] = []
        prompt = self.render(session, session.memory)
        while len(prompt.input_ids) > s.budget and session.folded < len(session.turns) - 1:
            self._fold(session, session.folded + 1)
            steps.append("folded")
            prompt = self.render(session, session.memory)
        memory = session.memory
        if len(prompt.input_ids) > s.budget and memory:
            keep = self._shrink(
                lambda n: self.render(session, self.cut(session.memory, n)), self.count(memory), s.budget
            )
            memory = self.cut(session.memory, keep)
            prompt = self.render(session, memory)
            steps.append("summary shortened")
        if len(prompt.input_ids) > s.budget:
            line = session.turns[-1]["utterance"]
            keep = self._shrink(
                lambda n: self.render(session, memory, self.cut(line, n)), self.count(line), s.budget
            )
            prompt = self.render(session, memory, self.cut(line, keep))
            steps.append("new line cut")
        if len(prompt.input_ids) > s.budget:
            raise UserError(
                f"the instructions and persona alone take {len(prompt.input_ids)} "
                f"tokens, over the budget of {s.budget}",
                field="max_length",
                hint="raise --max_length or shorten the persona",
            )
        buffer = session.buffer
        prompt.info = {
            "prompt_tokens": len(prompt.input_ids),
            "budget": s.budget,
            "buffer_turns": len(buffer),
            "buffer_tokens": sum(self.turn_tokens(t) for t in buffer),
            "memory_tokens": self.count(memory),
            "folded": session.folded,
            "fitted": steps,
        }
        return prompt

    @staticmethod
    def _shrink(render: Callable[[int], Prompt], size: int, budget: int) -> int:
        """The largest token count ``n <= size`` whose render fits (0 when none does)."""
        lo, hi = 0, size
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(render(mid).input_ids) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo
