"""Batched text generation: length-sorted, left-padded batches through ``model.generate``.

Why sorted: a batch costs as much as its longest prompt, so prompts of similar length go
together (the longest first, so an out-of-memory shows up at once, not after an hour). Why left
padding: every row's next token is then read at the same last column, and ``generate`` derives
position ids from the attention mask, so a row decodes the same as it would alone.

``on_result(index, text)`` is called as soon as a prompt's text is known, in completion order,
which is what the resumable results writer needs. An optional vLLM engine
(:func:`generate_texts_vllm`) takes the same arguments; it is used only when vLLM is installed.
``schema``: a JSON schema every text must follow (constrained decoding, :mod:`malpyeong.inference.constrain`).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from malpyeong.cli import progress_bar
from malpyeong.device import model_device
from malpyeong.errors import UserError
from malpyeong.inference.constrain import json_constraint, vllm_sampling_kwargs
from malpyeong.inference.shard import ALONE, Shard

log = logging.getLogger(__name__)

OnResult = Callable[[int, str], None]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, longest first.

    Ties keep the input order (a stable sort), so the batching is deterministic.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """``input_ids`` and ``attention_mask`` tensors with the padding on the left."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def cache_keyword(model: Any) -> str:
    """The forward argument that takes a key-value cache: ``cache`` in current transformers,
    ``past_key_values`` (deprecated there, with a warning per call) in older ones."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (AttributeError, TypeError, ValueError):  # no forward to read: nothing is cached
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def pad_id_of(tokenizer: Any, model: Any = None) -> int:
    for cand in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "pad_token_id", None),
    ):
        if isinstance(cand, int):
            return cand
    return 0


def cut_at_stop(tokens: Sequence[int], stop_ids: set[int]) -> list[int]:
    """The generated tokens before the first stop token (EOS, end of turn)."""
    out = []
    for t in tokens:
        if t in stop_ids:
            break
        out.append(int(t))
    return out


def cut_at_strings(text: str, stop_strings: Sequence[str] | None) -> str:
    """``text`` up to the first occurrence of any stop string."""
    if not stop_strings:
        return text
    cut = len(text)
    for s in stop_strings:
        if s:
            at = text.find(s)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def stop_token_ids_for(model: Any, tokenizer: Any, extra: Sequence[int] | None = None) -> list[int]:
    """EOS of the tokenizer and of the model's generation config, plus ``extra``."""
    ids: set[int] = set(int(i) for i in (extra or []))
    if isinstance(getattr(tokenizer, "eos_token_id", None), int):
        ids.add(tokenizer.eos_token_id)
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, (list, tuple)):
        ids.update(int(i) for i in cfg_eos)
    return sorted(ids)


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_beams: int = 1,
    stop_token_ids: Sequence[int] | None = None,
    stop_strings: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    on_result: OnResult | None = None,
    done: Collection[int] = (),
    shard: Shard = ALONE,
    streamer: Any = None,
    schema: dict | None = None,
) -> list[str]:
    """Decoded new text per prompt (token ids), in the order given.

    Greedy by default; ``num_beams`` > 1 for beam search, ``do_sample`` with ``temperature`` /
    ``top_p`` for sampling (seeded per batch from ``seed``). Generation stops at EOS, at any of
    ``stop_token_ids`` (pass the end-of-turn ids), and the text is cut at the first of
    ``stop_strings``. The text keeps other special tokens; the task's ``clean_output`` strips them.

    ``done``: indices already generated by an interrupted run. The batches are planned over all
    prompts as before and a batch is skipped only when all of it is done, so every text this
    run produces comes from the same batch (same padding, same seed) as in an uninterrupted run;
    done indices are not reported and come back as "". Under ``shard`` only this process's
    batches are run (see :mod:`malpyeong.inference.shard`); the others come back as "" too.

    ``streamer``: a transformers streamer that sees the tokens as they are made (a live chat
    shows its reply as it is written); for one prompt at a time.

    ``schema``: constrain every row to this JSON schema (greedy or sampling; not beam search,
    whose rows are reordered between steps).
    """
    import torch

    if streamer is not None and len(prompts) > 1:
        raise ValueError("a streamer follows one prompt; got several")
    if schema is not None and num_beams > 1:
        raise UserError(
            "constrained decoding does not combine with beam search",
            field="num_beams",
            hint="use --num_beams 1, or --no_constrain",
        )

    texts: list[str | None] = [None] * len(prompts)
    if not prompts:
        return []
    stops = stop_token_ids_for(model, tokenizer, stop_token_ids)
    stop_set = set(stops)
    pad = pad_id_of(tokenizer, model)
    device = model_device(model)
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "num_beams": num_beams,
        "do_sample": do_sample,
        "eos_token_id": stops or None,
        "pad_token_id": pad,
    }
    if streamer is not None:
        gen_kwargs["streamer"] = streamer
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p)
    else:  # silence "temperature is set but do_sample is False" from a model's own config
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if getattr(model, "training", False):
        model.eval()
    if num_beams == 1 and getattr(model, "_can_compile_fullgraph", False):
        # A preallocated cache: the default one grows by concatenation, copying every layer's
        # keys and values at each step (a third of the decoding time of a batch on a CPU).
        gen_kwargs["cache_implementation"] = "static"
    constraint = None
    if schema is not None:
        constraint = json_constraint(schema, tokenizer, _logits_width(model, tokenizer), stops)
    batches = length_sorted_batches([len(p) for p in prompts], batch_size)
    mine = shard.batches(batches)
    done_set = set(done)
    total = sum(len(batches[b]) for b in mine)
    bar = progress_bar(
        total, progress, "generate", initial=sum(i in done_set for b in mine for i in batches[b])
    )
    closed = 0  # constrained rows steered to close their JSON within max_new_tokens
    start = time.perf_counter()
    try:
        for b, batch in enumerate(batches):
            if b not in mine or all(i in done_set for i in batch):
                continue
            ids, mask = left_pad([prompts[i] for i in batch], pad)
            if do_sample:
                torch.manual_seed(seed + b)
            with torch.inference_mode():
                extra = _constrained(constraint, ids, max_new_tokens)
                try:
                    out = model.generate(
                        input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs, **extra
                    )
                except (ValueError, TypeError, NotImplementedError) as err:
                    if gen_kwargs.pop("cache_implementation", None) is None:
                        raise
                    log.info("static cache not usable here (%s); using the default cache", err)
                    extra = _constrained(constraint, ids, max_new_tokens)
                    out = model.generate(
                        input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs, **extra
                    )
            closed += sum(len(p.closed) for p in extra.get("logits_processor", []))
            new = out[:, ids.shape[1] :].tolist()
            for row, i in enumerate(batch):
                text = tokenizer.decode(cut_at_stop(new[row], stop_set), skip_special_tokens=False)
                text = cut_at_strings(text, stop_strings)
                if i in done_set:
                    continue
                texts[i] = text
                if on_result is not None:
                    on_result(i, text)
            bar.update(sum(i not in done_set for i in batch))
    finally:
        bar.close()
    log.debug("generated %d texts in %.1fs", len(prompts), time.perf_counter() - start)
    if closed:
        log.info(
            "%d constrained generation(s) ran short of max_new_tokens %d and were steered "
            "to close their JSON",
            closed,
            max_new_tokens,
        )
    return [t if t is not None else "" for t in texts]


def _logits_width(model: Any, tokenizer: Any) -> int:
    """How many logits the model writes per step (its output embedding rows; may exceed the
    tokenizer's vocabulary, which the constraint then masks)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    return int(getattr(getattr(model, "config", None), "vocab_size", None) or len(tokenizer))


def _constrained(constraint: Any, ids: Any, max_new_tokens: int) -> dict:
    """``generate`` keyword arguments for one batch: a fresh logits processor (one matcher per
    row, closing every document within ``max_new_tokens``) when there is a constraint."""
    if constraint is None:
        return {}
    from transformers import LogitsProcessorList

    return {
        "logits_processor": LogitsProcessorList(
            [constraint.logits_processor(ids.shape[0], ids.shape[1], max_new_tokens)]
        )
    }


def generate_texts_vllm(
    llm: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_beams: int = 1,
    stop_token_ids: Sequence[int] | None = None,
    stop_strings: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    on_result: OnResult | None = None,
    done: Collection[int] = (),
    schema: dict | None = None,
) -> list[str]:
    """The same contract on a ``vllm.LLM`` (which does its own continuous batching).

    ``batch_size`` is the number of prompts handed to vLLM at a time (results are reported after
    each chunk, for resume). Beam search is not offered here; use the HF engine for it.
    ``schema`` goes to vLLM's structured outputs (llguidance, as on the HF engine).
    """
    try:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
    except ImportError as err:  # pragma: no cover - depends on the environment
        from malpyeong.errors import UserError

        raise UserError(
            "--engine vllm needs vLLM, which is not installed", hint="pip install vllm, or use --engine hf"
        ) from err
    if num_beams > 1:
        from malpyeong.errors import UserError

        raise UserError(
            "beam search is not supported with --engine vllm", field="num_beams", hint="use --engine hf"
        )
    stops = sorted(
        set(int(i) for i in (stop_token_ids or []))
        | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
    )
    params = SamplingParams(
        max_tokens=max_new_tokens,
        temperature=temperature if do_sample else 0.0,
        top_p=top_p if do_sample else 1.0,
        seed=seed,
        stop_token_ids=stops,
        stop=list(stop_strings or []),
        skip_special_tokens=False,
        **(vllm_sampling_kwargs(schema) if schema is not None else {}),
    )
    texts: list[str] = [""] * len(prompts)
    chunk = max(batch_size, 1) * 8
    todo = [i for i in range(len(prompts)) if i not in set(done)]
    bar = progress_bar(len(prompts), progress, "generate (vllm)", initial=len(prompts) - len(todo))
    try:
        for lo in range(0, len(todo), chunk):
            part = todo[lo : lo + chunk]
            outs = llm.generate(
                [TokensPrompt(prompt_token_ids=list(prompts[i])) for i in part], params, use_tqdm=False
            )
            for i, out in zip(part, outs, strict=True):
                texts[i] = out.outputs[0].text
                if on_result is not None:
                    on_result(i, texts[i])
            bar.update(len(part))
    finally:
        bar.close()
    return texts


__all__ = [
    "cut_at_stop",
    "cut_at_strings",
    "generate_texts",
    "generate_texts_vllm",
    "left_pad",
    "length_sorted_batches",
    "stop_token_ids_for",
]
