"""Engines: what a loaded model does for the answering path, behind one small interface.

As lm-evaluation-harness keeps its model backends behind one ``LM`` interface, every caller
answers through :func:`malpyeong.inference.answer.answer_items`, which asks an engine for two things only:

- ``score``: probabilities over a choice task's options (:mod:`malpyeong.inference.scoring`);
- ``generate``: text for token prompts, stopped at the end of the turn
  (:mod:`malpyeong.inference.generation`), optionally constrained to a JSON schema
  (:mod:`malpyeong.inference.constrain`).

:class:`HFEngine` runs a transformers model and does both. :class:`VLLMEngine` runs a
``vllm.LLM`` (continuous batching, tensor parallel) and generates only; vLLM is imported only
when it is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from malpyeong.errors import UserError
from malpyeong.inference.generation import generate_texts, generate_texts_vllm
from malpyeong.inference.scoring import ChoicePrompts, ItemScore, score_items, sequence_logprobs
from malpyeong.inference.shard import ALONE, Shard
from malpyeong.models.backbones import Backbone, end_of_turn_ids
from malpyeong.tasks.base import ChoiceTask, TaskItem

ENGINES = ("hf", "vllm")


MAX_SEED = 2**32 - 1  # what numpy, torch and vLLM all take


def check_generation(
    *,
    max_new_tokens: object = 1,
    num_beams: object = 1,
    do_sample: object = False,
    temperature: object = 1.0,
    top_p: object = 1.0,
    seed: object = 0,
) -> None:
    """The one check of decoding settings, for every entry point (prediction, chat, memory,
    compare, the server): a ``UserError`` naming the setting, before any model is loaded.
    NaN and infinities are refused (``--temperature nan`` compares false with everything)."""

    def whole(name: str, value: object, low: int, high: int | None = None) -> None:
        if type(value) is not int:
            raise UserError(f"must be a whole number, got {value!r}", field=name)
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"in [{low}, {high}]"
            raise UserError(f"must be {bound}, got {value}", field=name)

    def number(name: str, value: object) -> float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise UserError(f"must be a finite number, got {value!r}", field=name)
        return float(value)

    whole("max_new_tokens", max_new_tokens, 1)
    whole("num_beams", num_beams, 1)
    whole("seed", seed, 0, MAX_SEED)
    if type(do_sample) is not bool:
        raise UserError(f"must be true or false, got {do_sample!r}", field="do_sample")
    if number("temperature", temperature) <= 0:
        raise UserError(f"must be positive, got {temperature}", field="temperature")
    if not 0 < number("top_p", top_p) <= 1:
        raise UserError(f"must be in (0, 1], got {top_p}", field="top_p")


@dataclass(frozen=True)
class GenerationSettings:
    """How text is decoded: greedy by default, beam search or sampling on request. Checked when
    made (:func:`check_generation`), so no entry point can pass a value the decoder chokes on."""

    max_new_tokens: int = 256
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_generation(
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )


class Engine:
    """A loaded model with its tokenizer and backbone entry."""

    name: str
    tokenizer: Any
    backbone: Backbone

    def score(
        self,
        task: ChoiceTask,
        items: Sequence[TaskItem],
        prompts: ChoicePrompts,
        *,
        scoring: str,
        batch_size: int,
        done: Collection[int] = (),
        on_item: Callable[[int, ItemScore], None] | None = None,
        progress: bool = True,
        shard: Shard = ALONE,
    ) -> list[ItemScore | None]:
        raise UserError(
            f"the {self.name} engine does not score options",
            field="engine",
            hint="use --engine hf for choice tasks",
        )

    def generate(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        *,
        batch_size: int,
        done: Collection[int] = (),
        on_result: Callable[[int, str], None] | None = None,
        progress: bool = True,
        shard: Shard = ALONE,
        schema: dict | None = None,
    ) -> list[str]:
        raise NotImplementedError

    def stop_token_ids(self) -> list[int]:
        """EOS and the chat format's end-of-turn token: where an answer ends."""
        return end_of_turn_ids(self.tokenizer, self.backbone)

    def completion_logprobs(
        self,
        prompts: list[list[int]],
        completions: list[list[int]],
        *,
        batch_size: int,
        done: Collection[int] = (),
    ) -> list[float | None] | None:
        """Summed log-probability of each completion after its prompt, or None when this
        engine cannot score text (then perplexity-like metrics are not computed)."""
        return None

    def context_size(self) -> int | None:
        """The longest sequence the model takes, or None when it does not say."""
        return None


@dataclass
class HFEngine(Engine):
    """A transformers model: batched option scoring and batched generation."""

    model: Any
    tokenizer: Any
    backbone: Backbone
    name: str = "hf"

    def score(
        self,
        task: ChoiceTask,
        items: Sequence[TaskItem],
        prompts: ChoicePrompts,
        *,
        scoring: str,
        batch_size: int,
        done: Collection[int] = (),
        on_item: Callable[[int, ItemScore], None] | None = None,
        progress: bool = True,
        shard: Shard = ALONE,
    ) -> list[ItemScore | None]:
        return score_items(
            self.model,
            self.tokenizer,
            task,
            items,
            prompts,
            scoring=scoring,
            batch_size=batch_size,
            progress=progress,
            done=done,
            on_item=on_item,
            shard=shard,
        )

    def completion_logprobs(
        self,
        prompts: list[list[int]],
        completions: list[list[int]],
        *,
        batch_size: int,
        done: Collection[int] = (),
    ) -> list[float | None] | None:
        return sequence_logprobs(
            self.model, self.tokenizer, prompts, completions, batch_size=batch_size, done=done
        )

    def generate(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        *,
        batch_size: int,
        done: Collection[int] = (),
        on_result: Callable[[int, str], None] | None = None,
        progress: bool = True,
        shard: Shard = ALONE,
        schema: dict | None = None,
    ) -> list[str]:
        return generate_texts(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=settings.max_new_tokens,
            batch_size=batch_size,
            do_sample=settings.do_sample,
            temperature=settings.temperature,
            top_p=settings.top_p,
            num_beams=settings.num_beams,
            stop_token_ids=self.stop_token_ids(),
            seed=settings.seed,
            progress=progress,
            on_result=on_result,
            done=done,
            shard=shard,
            schema=schema,
        )

    def context_size(self) -> int | None:
        config = getattr(self.model, "config", None)
        config = getattr(config, "get_text_config", lambda: config)()
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None


@dataclass
class VLLMEngine(Engine):
    """A ``vllm.LLM``: generation only (continuous batching; no option scoring)."""

    llm: Any
    tokenizer: Any
    backbone: Backbone
    name: str = "vllm"

    def generate(
        self,
        prompts: list[list[int]],
        settings: GenerationSettings,
        *,
        batch_size: int,
        done: Collection[int] = (),
        on_result: Callable[[int, str], None] | None = None,
        progress: bool = True,
        shard: Shard = ALONE,
        schema: dict | None = None,
    ) -> list[str]:
        if not shard.alone:
            raise UserError(
                "run the vLLM engine in one process: it parallelises by itself",
                field="engine",
                hint="drop accelerate launch; use --tensor_parallel_size for several GPUs",
            )
        return generate_texts_vllm(
            self.llm,
            self.tokenizer,
            prompts,
            max_new_tokens=settings.max_new_tokens,
            batch_size=batch_size,
            do_sample=settings.do_sample,
            temperature=settings.temperature,
            top_p=settings.top_p,
            num_beams=settings.num_beams,
            stop_token_ids=self.stop_token_ids(),
            seed=settings.seed,
            progress=progress,
            on_result=on_result,
            done=done,
            schema=schema,
        )

    def context_size(self) -> int | None:
        try:
            return int(self.llm.llm_engine.model_config.max_model_len)
        except AttributeError:
            return None


__all__ = ["ENGINES", "Engine", "GenerationSettings", "HFEngine", "VLLMEngine"]
