"""Summarisers: fold a chat's older turns into the running summary.

Every summariser is called as ``summarise(memory, turns) -> new memory``, with the summary so
far and the turns that just left the verbatim buffer, and is deterministic for the same
inputs, so a resumed session folds exactly as the first run did.

- :class:`ModelSummarizer` asks a language model (the chat model itself by default, or any
  model given to ``--summarizer``) to rewrite the summary with the new lines;
- :class:`TaskSummarizer` answers through a trained model's own task (a DCS summariser, or a
  memory-state generator whose JSON state then is the memory), on the conversation
  ``[memory] + turns``, by the same answering path as prediction;
- :class:`ExtractiveSummarizer` needs no model: it keeps the user's most informative lines
  (what the user says about themself is what a character must remember), within the token
  budget. A cheap baseline for CPUs, and what the memory tests use to have a known memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import Engine, GenerationSettings
from malpyeong.inference.loading import load_engine, resolve_source
from malpyeong.models.backbones import encode, render_chat
from malpyeong.tasks import get_task
from malpyeong.tasks.base import Task, Utterance

INSTRUCTIONS = {
    "en": (
        "You keep the memory of a conversation. Rewrite the summary so far so that it also "
        "covers the new lines: who said what about themselves (names, jobs, plans, likes), "
        "in a few short sentences."
    ),
    "ko": (
        "당신은 대화의 기억을 관리합니다. 지금까지의 요약에 새 대화 내용을 더해 다시 쓰세요. "
        "누가 자신에 대해 무엇을 말했는지(이름, 직업, 계획, 좋아하는 것)를 짧은 문장 몇 개로 쓰세요."
    ),
}
HEADINGS = {
    "en": ("Summary so far:", "New lines:", "(nothing yet)"),
    "ko": ("지금까지의 요약:", "새 대화:", "(아직 없음)"),
}
STOPWORDS = frozenset(
    "the and but for are was were you your yours i'm it's that this with have has had what "
    "when where how who why not yes yeah okay ok just really very so too also then than there "
    "they them their our ours his her hers its can could would should will about from into "
    "out over like know think well oh um uh hey hi hello thanks thank".split()
)


def lines_of(turns: Sequence[Utterance]) -> list[str]:
    return [f"{u.speaker}: {u.utterance}" for u in turns]


def truncate_tokens(tokenizer: Any, text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` tokens of ``tokenizer`` (at a token boundary)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= limit:
        return text
    return tokenizer.decode(ids[:limit], skip_special_tokens=True).rstrip("\ufffd").strip()


@dataclass
class ModelSummarizer:
    """A language model rewrites the summary (plain instructions through its chat format)."""

    engine: Engine
    max_new_tokens: int
    language: str = "en"

    def __call__(self, memory: str, turns: Sequence[Utterance]) -> str:
        before, new, empty = HEADINGS[self.language]
        content = f"{before}\n{memory or empty}\n\n{new}\n" + "\n".join(lines_of(turns))
        messages = [
            {"role": "system", "content": INSTRUCTIONS[self.language]},
            {"role": "user", "content": content},
        ]
        prompt = encode(
            self.engine.tokenizer, render_chat(self.engine.tokenizer, messages, self.engine.backbone)
        )
        text = self.engine.generate(
            [prompt], GenerationSettings(max_new_tokens=self.max_new_tokens), batch_size=1, progress=False
        )[0]
        text = re.sub(r"<\|[^|>]*\|>|<(?:start|end)_of_turn>|</?s>|<eos>|<bos>", " ", text)
        return " ".join(text.split())


@dataclass
class TaskSummarizer:
    """A trained model answers its own task on ``[memory] + turns`` (DCS summary, memory state)."""

    engine: Engine
    task: Task
    settings: AnswerSettings

    def __call__(self, memory: str, turns: Sequence[Utterance]) -> str:
        # not a task name: the running memory, as a speaker
        conversation = ((Utterance("memory", memory),) if memory else ()) + tuple(turns)
        item = self.task.live_item(conversation, item_id="memory")  # not a task name: an item id
        run = answer_items(self.engine, self.task, [item], self.settings, progress=False)
        return " ".join(self.task.output_text(run.outputs[0]).split())


@dataclass
class ExtractiveSummarizer:
    """The user's lines that bring new content words, oldest first, within ``max_tokens``.

    A line is kept when it has content words (letters, not stopwords; three letters or more,
    or two Hangul syllables) that no earlier kept line has; over budget, the kept line that
    adds the fewest new words goes first (the newest of equals), so early facts stay unless
    later lines say more.
    """

    tokenizer: Any
    max_tokens: int
    user: str

    @staticmethod
    def words(line: str) -> set[str]:
        body = line.split(":", 1)[-1].casefold()
        return {
            w
            for w in re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", body)
            if w not in STOPWORDS and (len(w) >= 3 or (len(w) >= 2 and not w.isascii()))
        }

    def __call__(self, memory: str, turns: Sequence[Utterance]) -> str:
        lines = [s for s in memory.split("\n") if s.strip()]
        lines += [ln for u, ln in zip(turns, lines_of(turns), strict=True) if u.speaker == self.user]
        kept: list[tuple[str, int]] = []
        seen: set[str] = set()
        for line in lines:
            new = self.words(line) - seen
            if new:
                kept.append((line, len(new)))
                seen |= new
        while (
            kept
            and len(self.tokenizer.encode("\n".join(k for k, _ in kept), add_special_tokens=False))
            > self.max_tokens
        ):
            weakest = min(range(len(kept)), key=lambda i: (kept[i][1], -i))
            kept.pop(weakest)
        return "\n".join(k for k, _ in kept)


def make_summarizer(
    name: str | None,
    engine: Engine,
    *,
    chat_task: str,
    max_tokens: int,
    user: str,
    language: str = "en",
    dtype: str = "auto",
    device: str | None = None,
) -> ModelSummarizer | TaskSummarizer | ExtractiveSummarizer:
    """The summariser ``--summarizer`` names: None for the chat model itself, ``extractive``,
    or a model (hub id, folder, run folder; a run of another task answers through it)."""
    if name is None:
        return ModelSummarizer(engine, max_tokens, language)
    if name == "extractive":
        return ExtractiveSummarizer(engine.tokenizer, max_tokens, user)
    source = resolve_source(name, option="summarizer")
    other = load_engine(source, dtype=dtype, device=device)
    task_name = source.run.get("task")
    if task_name and task_name != chat_task:
        task = get_task(task_name)
        task.live_item((Utterance(user, "hello"),))  # a task that cannot take one says so now
        settings = AnswerSettings(
            prompt=task.prompt_spec(source.defaults.get("prompt")),
            max_length=source.defaults.get("max_length"),
            batch_size=1,
            generation=GenerationSettings(max_new_tokens=max_tokens),
        )
        return TaskSummarizer(other, task, settings)
    return ModelSummarizer(other, max_tokens, language)
