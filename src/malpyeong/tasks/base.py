"""What every task provides, and the registry that finds tasks by name.

The trainer, predictor and ensembler only talk to this interface, so a new task (dialogue
memory-state JSON, context QA, ...) plugs in by registering a class here; none of them changes.
A task is either a *choice* task (scored by option likelihood, voted by majority) or a
*generate* task (decoded, combined by MBR).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from malpyeong.data import Utterance
from malpyeong.errors import UserError

Problems = list[tuple[str, str]]  # (field, problem) pairs collected while parsing one record

OFFICIAL_SYSTEM = (
    "You are a helpful AI assistant. Please answer the user's questions kindly. "
    "당신은 유능한 AI 어시스턴트 입니다. 사용자의 질문에 대해 친절하게 답변해주세요."
)


@dataclass(frozen=True)
class PromptSpec:
    """A prompt variant: ``baseline`` or flags joined by ``+`` (e.g. ``highlight+definitions``)."""

    flags: frozenset[str]

    @property
    def language(self) -> str:
        return "en" if "en" in self.flags else "bilingual" if "bilingual" in self.flags else "ko"

    def __contains__(self, flag: str) -> bool:
        return flag in self.flags

    def __str__(self) -> str:
        return "+".join(sorted(self.flags)) or "baseline"


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
    return f"did you mean '{close[0]}'? known: {', '.join(known)}" if close else \
        f"known: {', '.join(known)}"


class Task:
    """Base class: parsing, prompts, targets, outputs and metrics for one task."""

    name: ClassVar[str]
    kind: ClassVar[Literal["choice", "generate"]]
    prompt_flags: ClassVar[dict[str, str]]  # flag -> what it does (shown by --help / errors)
    metric_names: ClassVar[tuple[str, ...]]

    # ----- data -----
    def parse_item(self, record: Any, problems: Problems) -> Any | None:
        raise NotImplementedError

    def has_output(self, item: Any) -> bool:
        raise NotImplementedError

    def check_output(self, value: Any) -> str | None:
        """None when ``value`` is a valid submission output, else what is wrong with it."""
        raise NotImplementedError

    # ----- prompts -----
    def prompt_spec(self, name: str | PromptSpec | None) -> PromptSpec:
        if isinstance(name, PromptSpec):
            return name
        if not name or name == "baseline":
            return PromptSpec(frozenset())
        flags = [f.strip() for f in name.split("+") if f.strip() and f.strip() != "baseline"]
        for flag in flags:
            if flag not in self.prompt_flags:
                raise UserError(f"unknown prompt variant '{flag}' for task {self.name}",
                                field="prompt", hint=suggest(flag, sorted(self.prompt_flags)))
        if "en" in flags and "bilingual" in flags:
            raise UserError("choose one of 'en' and 'bilingual'", field="prompt")
        return PromptSpec(frozenset(flags))

    def messages(self, item: Any, prompt: str | PromptSpec | None = None) -> list[dict]:
        """Chat messages (system + user) for ``item``; the backbone renders them."""
        raise NotImplementedError

    def target(self, item: Any, prompt: str | PromptSpec | None = None, **options: Any) -> str:
        """The training completion for ``item`` (its gold answer as the model should write it)."""
        raise NotImplementedError

    # ----- length budget -----
    def drop_order(self, item: Any) -> list[int]:
        """Utterance indices in the order they may be cut when the prompt is too long."""
        raise NotImplementedError

    def with_conversation(self, item: Any, conversation: tuple[Utterance, ...]) -> Any:
        return replace(item, conversation=conversation)

    # ----- text views (dedup, contamination guard) -----
    def dedup_parts(self, item: Any) -> list[str]:
        """The texts that must *all* be near-duplicates for two items to count as duplicates."""
        raise NotImplementedError

    def dialogue_lines(self, item: Any) -> list[str]:
        """The item's dialogue, one string per utterance (windows of the contamination guard)."""
        return [u.utterance for u in item.conversation]

    # ----- outputs and metrics -----
    def evaluate(self, gold: list[Any], outputs: dict[str, str], **options: Any) -> dict:
        raise NotImplementedError


class ChoiceTask(Task):
    """A task answered by picking one of ``n_choices`` options (letters A, B, C, ...)."""

    kind = "choice"
    n_choices: ClassVar[int]
    output_labels: ClassVar[tuple[str, ...]]  # official output per option position

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(chr(ord("A") + i) for i in range(self.n_choices))

    def choices(self, item: Any) -> list[str]:
        raise NotImplementedError

    def label_index(self, item: Any) -> int | None:
        raise NotImplementedError

    def output_for(self, index: int) -> str:
        return self.output_labels[index]

    def index_of_output(self, output: str) -> int:
        return self.output_labels.index(output)

    def permuted(self, item: Any, order: tuple[int, ...]) -> Any:
        """``item`` with its options reordered: new position j shows old option ``order[j]``."""
        raise NotImplementedError

    def check_output(self, value: Any) -> str | None:
        if value not in self.output_labels:
            return f"output {value!r} is not one of {', '.join(self.output_labels)}"
        return None


class GenerateTask(Task):
    kind = "generate"

    def clean_output(self, text: str) -> str:
        raise NotImplementedError

    def check_output(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return "output must be a non-empty string"
        return None


def utterance_text(value: Any) -> str | None:
    """Utterances may be JSON numbers in the real files (e.g. ``40``); read them as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else None


def parse_envelope(record: Any, problems: Problems, *, utterance_ids: bool
                   ) -> tuple[str | None, dict | None, list[Utterance]]:
    """The parts every dialogue task shares: ``id``, ``input`` and ``input.conversation``.

    Returns ``(id, input, utterances)``; ``input`` is None when the record cannot be read
    further. ``utterance_ids``: whether each utterance must carry an ``utterance_id`` (CCI).
    """
    if not isinstance(record, dict):
        problems.append(("item", f"is a {type(record).__name__}, not an object"))
        return None, None, []
    rid = record.get("id")
    if not isinstance(rid, str) or not rid:
        problems.append(("id", "missing or not a non-empty string"))
    inp = record.get("input")
    if not isinstance(inp, dict):
        problems.append(("input", "missing or not an object"))
        return rid, None, []
    conv = inp.get("conversation")
    utterances: list[Utterance] = []
    if not isinstance(conv, list):
        problems.append(("input.conversation", "missing or not a list"))
    elif not conv:
        problems.append(("input.conversation", "empty"))
    for i, u in enumerate(conv if isinstance(conv, list) else []):
        where = f"input.conversation[{i}]"
        if not isinstance(u, dict):
            problems.append((where, "not an object"))
            continue
        speaker, text, uid = u.get("speaker"), utterance_text(u.get("utterance")), u.get("utterance_id")
        if isinstance(speaker, bool) or not isinstance(speaker, (int, str)) or speaker == "":
            problems.append((f"{where}.speaker", "missing or not an integer or string"))
        if text is None:
            problems.append((f"{where}.utterance", "missing or not a string"))
        if utterance_ids and (not isinstance(uid, str) or not uid):
            problems.append((f"{where}.utterance_id", "missing or not a string"))
        utterances.append(Utterance(str(speaker), text or "", uid if isinstance(uid, str) else None))
    return rid, inp, utterances


def conversation_lines(conversation: tuple[Utterance, ...], marked: set[int] = frozenset(),
                       mark: str = "") -> list[str]:
    """``화자{speaker}: {utterance}`` per utterance, as the official baseline writes them."""
    return [f"{mark if i in marked else ''}화자{u.speaker}: {u.utterance}"
            for i, u in enumerate(conversation)]
