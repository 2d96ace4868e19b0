"""Character chat: the next line of a character, given the turns before it.

Items come from scripts (``run/script_pairs.py``) or from a live conversation
(``run/chat.py``)::

    {"id": "...", "input": {"conversation": [{"speaker", "utterance"}, ...],
                            "speaker": "Joey",          # whose reply
                            "persona": "...",           # optional: who the character is
                            "memory": "..."},           # optional: what came earlier
     "output": "Joey's line"}

The prompt is a chat in which the model *is* the character: the character's earlier turns are
the assistant's, everyone else's are the user's, with their names in the text (``Monica: ...``;
several people in a row share one user turn). A system turn names the character, adds the
persona with ``--prompt persona`` and the memory of a long conversation when there is one.
Roles always alternate and the prompt ends with a user turn: a character who speaks first or
last in the context is shown in the user's text with their name (chat templates such as
Mistral's reject anything else). Messages carry the character's ``name`` so a backbone without
a chat template writes a plain transcript (``Monica: ...`` / ``Joey:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from malpyeong.errors import UserError
from malpyeong.metrics.chat import CHAT_METRICS, SKIPPABLE, chat_scores, rouge_l_pair
from malpyeong.tasks.base import (
    BASELINE,
    GenerateTask,
    Metric,
    Option,
    Problems,
    PromptSpec,
    Utterance,
    parse_envelope,
)
from malpyeong.tasks.registry import register
from malpyeong.tasks.rewards import Reward, bertscore_reward, format_reward

INSTRUCTION = {
    "en": "You are {name}. Continue the conversation in character: reply with {name}'s next line only.",
    "ko": "당신은 {name}입니다. {name}의 말투와 성격 그대로, {name}의 다음 대사 한 줄만 말하세요.",
}
MEMORY = {"en": "Earlier in this conversation:", "ko": "앞선 대화의 내용:"}
ARTEFACTS = re.compile(r"<\|[^|>]*\|>|<(?:start|end)_of_turn>|</?s>|<eos>|<bos>|\[/?INST\]")


@dataclass(frozen=True)
class ChatItem:
    id: str
    conversation: tuple[Utterance, ...]
    speaker: str  # the character who replies
    reply: str  # the gold reply ("" when unknown)
    persona: str | None
    memory: str | None
    raw: dict


def same_speaker(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


@register
class ChatTask(GenerateTask):
    name = "chat"
    description = "character chat: a character's next line after the turns before it"
    metrics = (
        Metric("rougeL", help="ROUGE-L F1 against the gold reply (Mecab morphemes / words)"),
        Metric("bertscore", help="BERTScore F1 against the gold reply, local encoder"),
        Metric(
            "perplexity",
            higher_is_better=False,
            help="of the gold replies under the model (from run/test.py's sidecar)",
        ),
        Metric("distinct1", help="distinct unigrams / unigrams over all replies"),
        Metric("distinct2", help="distinct bigrams / bigrams over all replies"),
        Metric("avg_words", help="mean reply length in words"),
    )
    dev_metric = "rougeL"
    reference_loglik = True
    evaluate_sidecar = ("ref_logprob", "ref_tokens")
    live_reply = True
    evaluate_options = {
        "bertscore_model": Option(
            "BERTScore encoder: a local folder or cached hub id (default bert-base-multilingual-cased)"
        ),
        "bertscore_layer": Option("chat: BERTScore layer (default 9, or the encoder's last)"),
        "skip": Option("metrics to leave out on purpose", many=True),
        "device": Option("device for the metric models"),
    }
    prompt_flags = {
        "persona": "the character's description (input.persona) in the system turn",
        "ko": "Korean instructions (default English)",
    }

    # ----- data -----
    def parse_item(self, record: Any, problems: Problems) -> ChatItem | None:
        rid, inp, utterances = parse_envelope(record, problems, utterance_ids=False)
        if inp is None:
            return None
        speaker = inp.get("speaker")
        if not isinstance(speaker, str) or not speaker.strip():
            problems.append(("input.speaker", "missing or not a non-empty string"))
        extra = {}
        for key in ("persona", "memory"):
            value = inp.get(key)
            if value is not None and not isinstance(value, str):
                problems.append((f"input.{key}", f"is a {type(value).__name__}, not a string"))
            extra[key] = value.strip() or None if isinstance(value, str) else None
        if "output" not in record:
            problems.append(("output", 'missing (use "" in test files)'))
        output = record.get("output")
        if "output" in record and not isinstance(output, str):
            problems.append(("output", f"is a {type(output).__name__}, not a string"))
        if problems:
            return None
        return ChatItem(
            rid, tuple(utterances), speaker.strip(), output or "", extra["persona"], extra["memory"], record
        )

    def has_output(self, item: ChatItem) -> bool:
        return bool(item.reply.strip())

    def reference(self, item: ChatItem) -> str:
        return item.reply

    def live_item(
        self,
        conversation: tuple[Utterance, ...],
        *,
        speaker: str | None = None,
        memory: str | None = None,
        persona: str | None = None,
        item_id: str = "live",
    ) -> ChatItem:
        if not speaker:
            raise UserError("a live chat needs the character who replies", field="character")
        if not conversation:
            raise UserError("nothing to reply to", field="conversation")
        return ChatItem(item_id, tuple(conversation), speaker, "", persona or None, memory or None, {})

    # ----- prompts -----
    def messages(self, item: ChatItem, spec: PromptSpec = BASELINE) -> list[dict]:
        lang = "ko" if "ko" in spec else "en"
        name = item.speaker
        system = INSTRUCTION[lang].format(name=name)
        if "persona" in spec and item.persona:
            system = f"{item.persona}\n\n{system}"
        if item.memory:
            system = f"{system}\n\n{MEMORY[lang]}\n{item.memory}"
        msgs: list[dict] = [{"role": "system", "content": system, "name": name}]
        for u in item.conversation:
            text = u.utterance.strip()
            if same_speaker(u.speaker, name) and msgs[-1]["role"] != "system":
                if msgs[-1]["role"] == "assistant":
                    msgs[-1]["content"] += "\n" + text
                else:
                    msgs.append({"role": "assistant", "content": text, "name": name})
                continue
            line = f"{u.speaker}: {text}" if u.speaker else text
            if msgs[-1]["role"] == "user":
                msgs[-1]["content"] += "\n" + line
            else:
                msgs.append({"role": "user", "content": line})
        if msgs[-1]["role"] == "assistant":  # the character spoke last: context, not a turn
            last = msgs.pop()
            msgs[-1]["content"] += "".join(f"\n{name}: {t}" for t in last["content"].split("\n"))
        return msgs

    def parse_output(self, item: ChatItem, text: str) -> str | None:
        return clean_reply(text, item.speaker) or None

    def fallback_output(self, item: ChatItem) -> str:
        return "..."

    # ----- rewards -----
    def rewards(self, bertscore_model: str | None = None, device: str | None = None) -> list[Reward]:
        """``format``: one non-empty line (a reply, not a scene); ``quality``: its ROUGE-L F
        against the gold reply, the task's dev metric (``bertscore`` too with a model)."""

        def quality(item: ChatItem, text: str) -> float:
            texts = self.reward_texts(item, text)
            return 0.0 if texts is None else rouge_l_pair(*texts)

        def one_line(item: ChatItem, text: str) -> bool:
            lines = [s for s in ARTEFACTS.sub(" ", text).splitlines() if s.strip()]
            return len(lines) == 1 and bool(clean_reply(text, item.speaker))

        rewards = [
            format_reward(one_line, "one non-empty line"),
            Reward("quality", 1.0, "ROUGE-L F against the gold reply", score=quality),
        ]
        if bertscore_model:
            rewards.append(bertscore_reward(self.reward_texts, bertscore_model, device))
        return rewards

    # ----- length budget and text views -----
    def drop_order(self, item: ChatItem) -> list[int]:
        """The oldest turns first; the last one (what the reply answers) stays."""
        return list(range(len(item.conversation) - 1))

    def dedup_parts(self, item: ChatItem) -> list[str]:
        """The context and the reply: the same line after another context is another item."""
        return ["\n".join(self.dialogue_lines(item)), f"{item.speaker}: {item.reply}"]

    def key_terms(self, item: ChatItem) -> tuple[str, ...]:
        return (item.speaker,)

    # ----- metrics -----
    def evaluate(self, gold: list[ChatItem], outputs: dict[str, Any], **options: Any) -> dict:
        skip = set(options.get("skip") or ())
        unknown = sorted(skip - set(SKIPPABLE))
        if unknown:
            raise UserError(
                f"cannot skip {', '.join(unknown)}", field="skip", hint=f"skippable: {', '.join(SKIPPABLE)}"
            )
        sidecar = options.get("sidecar") or {}
        logprobs = []
        for it in gold:
            row = sidecar.get(it.id) or {}
            ok = isinstance(row.get("ref_logprob"), (int, float)) and isinstance(row.get("ref_tokens"), int)
            logprobs.append((float(row["ref_logprob"]), row["ref_tokens"]) if ok else None)
        layer = options.get("bertscore_layer")
        if layer is not None:
            try:
                layer = int(layer)
            except ValueError:
                raise UserError(f"not a layer number: {layer!r}", field="bertscore_layer") from None
        return chat_scores(
            [it.reply for it in gold],
            [outputs[it.id] for it in gold],
            ref_logprobs=logprobs,
            bertscore_model=options.get("bertscore_model"),
            bertscore_layer=layer,
            skip=skip,
            device=options.get("device"),
        )

    def dev_evaluate(self, gold: list[ChatItem], outputs: dict[str, Any]) -> dict:
        """ROUGE-L and the diversity figures: nothing that needs another model."""
        report = chat_scores([it.reply for it in gold], [outputs[it.id] for it in gold], skip=SKIPPABLE)
        return {k: report[k] for k in ("rougeL", "distinct1", "distinct2", "avg_words")}

    def format_report(self, report: dict) -> str:
        lines = []
        for name in CHAT_METRICS:
            value = report.get(name)
            lines.append(f"{name:<11}{'not computed' if value is None else f'{value:.4f}'}")
        lines += [f"note: {n}" for n in report.get("notices", [])]
        return "\n".join(lines)

    def eda_columns(self, item: ChatItem) -> dict[str, Any]:
        return {"output_chars": len(item.reply) if item.reply.strip() else None}


def clean_reply(text: str, speaker: str) -> str:
    """The first line of a generation, without chat artefacts or the speaker's own name."""
    text = ARTEFACTS.sub(" ", text)
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    for prefix in (speaker, "assistant", "model"):
        if line.casefold().startswith(prefix.casefold() + ":"):
            line = line[len(prefix) + 1 :].strip()
            break
    return " ".join(line.split())
