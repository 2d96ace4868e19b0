"""Magpie: instruction data from an aligned chat model, prompted with nothing but its template.

The method (Xu et al., 2024): give an aligned model only the *pre-query* part of its chat
template — the text that opens a user turn, e.g. ``<|im_start|>user\\n`` — and let it sample
(temperature 1, top-p 1). Having been trained on user turns there, it writes a plausible user
instruction. We cut that at its first newline (or end of turn), then ask the model again, with
the full chat template, for a greedy response. Filters (:mod:`malpyeong.prep.filters`) then drop
non-Korean, too short or long, looping and refusing pairs, and near-duplicate instructions.

A system prompt (``system``) steers the instructions, e.g. toward Korean everyday dialogue: for
families with a system role it is rendered as a system turn before the user header, for the
others (Gemma, Mistral) it is folded into the start of the user text, as ``fold_system`` does
for ordinary prompts. It is used for both stages but not written to the output records.

Output records (JSONL), the SFT chat format the trainer reads::

    {"id": "magpie-000042", "messages": [{"role": "user", "content": ...},
                                          {"role": "assistant", "content": ...}],
     "source": "magpie"}

:func:`mix` adds such records to a gold training set at a ratio.

Determinism and resume: samples are drawn in chunks of ``chunk_size`` indices, chunk ``c``
seeded with ``seed + c.start``, so a resumed run (the raw file ``OUT.raw.jsonl`` keeps every
finished index) produces exactly what one uninterrupted run would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from malpyeong.cli import progress_bar
from malpyeong.errors import UserError
from malpyeong.models.backbones import PRE_QUERY, Backbone, render_chat

SOURCE = "magpie"
SENTINEL = "@@MAGPIE_SENTINEL@@"  # user text no template changes (no spaces to trim)

# (count, seed) -> raw instruction samples; instructions -> responses
SampleInstructions = Callable[[int, int], list[str]]
Respond = Callable[[list[str]], list[str]]


# ---------------------------------------------------------------------------------------------
# the pre-query template


def template_pre_query(tokenizer: Any, backbone: Backbone, system: str | None = None) -> str:
    """What the tokenizer's own chat template writes before a user message's text.

    For a check against :data:`~malpyeong.models.backbones.PRE_QUERY` and for system turns. ChatML
    templates (Qwen) add their default system turn here when none is given.
    """
    messages = [{"role": "user", "content": SENTINEL}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    text = render_chat(tokenizer, messages, backbone, add_generation_prompt=False)
    at = text.find(SENTINEL)
    if at < 0:
        raise UserError(
            f"the chat template of {backbone.name} drops the user text",
            hint="use a model with a standard chat template",
        )
    return text[:at]


def pre_query(backbone: Backbone, tokenizer: Any = None, system: str | None = None) -> str:
    """The text Magpie feeds: the family's pre-query string, with ``system`` before it (a system
    turn rendered by the model's template) or, without a system role, at the start of the user
    text (``fold_system``'s ``"{system}\\n\\n"``)."""
    fmt = backbone.chat_format
    if fmt not in PRE_QUERY:
        raise UserError(
            f"no Magpie pre-query template for chat format '{fmt}'",
            hint=f"known: {', '.join(sorted(PRE_QUERY))}",
        )
    base = PRE_QUERY[fmt]
    if not system or not system.strip():
        return base
    system = system.strip()
    if not backbone.system_role:
        return f"{base}{system}\n\n"
    if tokenizer is None:
        raise ValueError("a tokenizer is needed to render a system turn")
    return template_pre_query(tokenizer, backbone, system)


def first_line(text: str) -> str:
    """The sampled instruction: its first non-empty line (leading blank lines skipped)."""
    return text.lstrip().split("\n", 1)[0].strip()


_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>|<(?:start|end)_of_turn>|</?s>|<eos>|<bos>|<pad>|\[/?INST\]")


def strip_specials(text: str, specials: Sequence[str] = ()) -> str:
    """Remove chat special tokens the model may have written as text."""
    for s in specials:
        if s:
            text = text.replace(s, " ")
    return _SPECIAL.sub(" ", text).strip()


# ---------------------------------------------------------------------------------------------
# generation loop


def chunks(n: int, size: int) -> list[range]:
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    return [range(lo, min(lo + size, n)) for lo in range(0, n, size)]


def generate_pairs(
    n: int,
    sample_instructions: SampleInstructions,
    respond: Respond,
    *,
    seed: int = 0,
    chunk_size: int = 8,
    done: dict[int, dict] | None = None,
    on_row: Callable[[dict], None] | None = None,
    show_progress: bool = True,
) -> list[dict]:
    """``n`` raw samples ``{"index", "instruction", "response"}`` (index order), generating only
    the chunks that are not all in ``done``; new rows go to ``on_row`` as each chunk ends."""
    rows: dict[int, dict] = dict(done or {})
    todo = [c for c in chunks(n, chunk_size) if any(i not in rows for i in c)]
    bar = progress_bar(n, show_progress, "magpie", initial=n - sum(len(c) for c in todo))
    try:
        for c in todo:
            raw = sample_instructions(len(c), seed + c.start)
            if len(raw) != len(c):
                raise RuntimeError(f"sampler returned {len(raw)} texts for {len(c)}")
            instructions = [first_line(t) for t in raw]
            asked = [j for j, t in enumerate(instructions) if t]
            answers = respond([instructions[j] for j in asked]) if asked else []
            responses = [""] * len(c)
            for j, a in zip(asked, answers, strict=True):
                responses[j] = a
            for j, i in enumerate(c):
                if i in rows:
                    continue  # a torn chunk from an earlier run: identical by seeding
                row = {"index": i, "instruction": instructions[j], "response": responses[j]}
                rows[i] = row
                if on_row is not None:
                    on_row(row)
            bar.update(len(c))
    finally:
        bar.close()
    return [rows[i] for i in range(n)]


def to_record(row: dict) -> dict:
    """A kept raw sample as an SFT chat record."""
    return {
        "id": f"{SOURCE}-{row['index']:06d}",
        "messages": [
            {"role": "user", "content": row["instruction"].strip()},
            {"role": "assistant", "content": row["response"].strip()},
        ],
        "source": SOURCE,
    }


# ---------------------------------------------------------------------------------------------
# the real model


def engine_functions(
    model: Any,
    tokenizer: Any,
    backbone: Backbone,
    *,
    system: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    max_instruction_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> tuple[SampleInstructions, Respond]:
    """The two stages bound to a loaded chat model and the batched engine."""
    from malpyeong.inference.generation import generate_texts
    from malpyeong.models.backbones import encode, end_of_turn_ids

    tokenizer.padding_side = "left"
    stops = end_of_turn_ids(tokenizer, backbone)
    query_ids = encode(tokenizer, pre_query(backbone, tokenizer, system))
    specials = list(getattr(tokenizer, "all_special_tokens", []) or [])

    def sample_instructions(count: int, seed: int) -> list[str]:
        texts = generate_texts(
            model,
            tokenizer,
            [query_ids] * count,
            max_new_tokens=max_instruction_tokens,
            batch_size=batch_size,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            stop_token_ids=stops,
            seed=seed,
            progress=False,
        )
        return [strip_specials(first_line(t), specials) for t in texts]

    def respond(instructions: list[str]) -> list[str]:
        prompts = []
        for text in instructions:
            messages = [{"role": "user", "content": text}]
            if system and system.strip():
                messages.insert(0, {"role": "system", "content": system.strip()})
            prompts.append(encode(tokenizer, render_chat(tokenizer, messages, backbone)))
        texts = generate_texts(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            stop_token_ids=stops,
            progress=False,
        )
        return [strip_specials(t, specials) for t in texts]

    return sample_instructions, respond
