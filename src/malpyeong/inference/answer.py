"""The one path that answers items with a model, for every caller.

Prediction (:mod:`malpyeong.inference.predict`, results files), dev evaluation during training, merge
search and distillation all call :func:`answer_items`, so they cannot drift apart:

1. fit each prompt into the length budget (:mod:`malpyeong.models.budget`: the conversation is cut,
   never the question or the options), keeping room for what follows the prompt;
2. score the options (a choice task) or generate (a generate task, or any task asked to
   generate, such as CCI with a CoT prompt) through the engine (:mod:`malpyeong.inference.engines`),
   under the task's JSON schema when it has one (unless ``constrain`` is off);
   a generate task that reports perplexity (``reference_loglik``) also has each gold output
   scored after its prompt, as the training completion (kept as ``ref_logprob`` /
   ``ref_tokens`` in the sidecar, which ``run/evaluate.py`` reads);
3. turn the model's answer into the task's official output: the option label, or
   :meth:`~malpyeong.tasks.base.Task.parse_output` of the generation, with the task's
   fallback output (counted) when a generation holds nothing usable.

Whether an item is scored or generated is decided here, once (:meth:`AnswerSettings.scores`:
the task has options and was not asked to generate); callers never branch on it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from malpyeong.device import model_device
from malpyeong.errors import UserError
from malpyeong.inference.engines import Engine, GenerationSettings
from malpyeong.inference.scoring import SCORINGS, ItemScore, fit_choice_prompts, option_reserve
from malpyeong.inference.shard import ALONE, Shard
from malpyeong.models.backbones import assistant_affixes, completion_ids
from malpyeong.models.budget import FittedPrompt, fit_prompt
from malpyeong.tasks.base import BASELINE, PromptSpec, Task, TaskItem


@dataclass(frozen=True)
class AnswerSettings:
    """Everything that decides the answers (saved in a results sidecar, checked on resume)."""

    prompt: PromptSpec = BASELINE
    max_length: int | None = None
    scoring: str = "letter"  # choice tasks: letter, loglik, loglik_norm
    permute: bool = False  # choice tasks: average the cyclic option orders
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    generate: bool = False  # generate even for a choice task (its answer parsed from the text)
    batch_size: int = 8  # how the work is batched; does not change the answers
    constrain: bool = True  # follow the task's JSON schema when it has one (malpyeong.inference.constrain)

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise UserError(f"unknown scoring '{self.scoring}'", field="scoring", hint=", ".join(SCORINGS))
        if self.batch_size < 1:
            raise UserError(f"must be at least 1, got {self.batch_size}", field="batch_size")

    def check_for(self, task: Task, engine: str) -> None:
        """Settings that do not apply to ``task`` (or to the engine) are an error, not ignored."""
        if self.scores(task):
            if engine != "hf":
                raise UserError(
                    f"the {engine} engine does not score options; {task.name} is answered by option scoring",
                    field="engine",
                    hint="--engine hf",
                )
        elif self.permute or self.scoring != "letter":
            raise UserError(f"--scoring/--permute are for option scoring, not {task.name}", field="scoring")
        if not self.constrain and task.output_schema() is None:
            raise UserError(
                f"--no_constrain is for tasks with a JSON output; {task.name} generates free text",
                field="no_constrain",
            )

    def scores(self, task: Task) -> bool:
        """Whether ``task`` is answered by option scoring (else by generation)."""
        return task.has_options and not self.generate

    def meta(self, task: Task, engine: str) -> dict:
        """The settings that decide ``task``'s answers, as a results sidecar header records them."""
        head = {"prompt": str(self.prompt), "max_length": self.max_length}
        if self.prompt.system is not None:
            head["system_prompt"] = self.prompt.system
        if self.scores(task):
            return {**head, "scoring": self.scoring, "permute": self.permute}
        g = self.generation
        extra = {"constrain": self.constrain} if task.output_schema() is not None else {}
        return {
            **head,
            "max_new_tokens": g.max_new_tokens,
            "num_beams": g.num_beams,
            "do_sample": g.do_sample,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "seed": g.seed,
            "engine": engine,
            **extra,
        }


@dataclass
class Answer:
    """One item's answer: the official output and the details a results sidecar keeps (option
    probabilities, or the raw generation; utterances cut by the length budget)."""

    output: Any
    sidecar: dict


@dataclass
class AnswerRun:
    answers: list[Answer | None]  # None for the ``done`` items, which were not answered again
    cut: int  # prompts that lost utterances to the length budget
    over_budget: int  # prompts still over budget after cutting every utterance allowed
    unusable: int  # generations with nothing usable in them (the task's fallback was used)
    # prompt tokens of the cut prompts before and after cutting (how much the budget removed)
    cut_tokens: tuple[int, int] = (0, 0)

    @property
    def outputs(self) -> list[Any]:
        return [a.output if a is not None else None for a in self.answers]


def generation_prompts(
    task: Task,
    items: Sequence[TaskItem],
    tokenizer: Any,
    backbone: Any,
    spec: PromptSpec,
    *,
    max_length: int | None = None,
    max_new_tokens: int = 256,
) -> list[FittedPrompt]:
    """Fitted prompts for generation; ``max_length`` counts prompt plus generated tokens."""
    reserve = max_new_tokens if max_length is not None and max_new_tokens < max_length else 0
    return [fit_prompt(task, it, tokenizer, backbone, spec, max_length, reserve=reserve) for it in items]


def answer_items(
    engine: Engine,
    task: Task,
    items: Sequence[TaskItem],
    settings: AnswerSettings,
    *,
    done: Collection[int] = (),
    on_answer: Callable[[int, Answer], None] | None = None,
    progress: bool = True,
    shard: Shard = ALONE,
) -> AnswerRun:
    """Answer every item not in ``done`` (indices); ``on_answer(index, answer)`` is called as
    each is finished, in completion order (what a resumable results writer needs). Under
    ``shard`` this process answers only its share (:mod:`malpyeong.inference.shard`)."""
    answers: list[Answer | None] = [None] * len(items)

    def report(i: int, answer: Answer) -> None:
        answers[i] = answer
        if on_answer is not None:
            on_answer(i, answer)

    if settings.scores(task):
        cut, over, removed = _score(engine, task, items, settings, done, report, progress, shard)
        return AnswerRun(answers, cut, over, 0, removed)
    cut, over, unusable, removed = _generate(engine, task, items, settings, done, report, progress, shard)
    return AnswerRun(answers, cut, over, unusable, removed)


def cut_tokens(fitted: Sequence[FittedPrompt]) -> tuple[int, int]:
    """Tokens of the cut prompts before and after cutting, summed."""
    cut = [f for f in fitted if f.dropped > 0]
    return sum(f.full_tokens for f in cut), sum(len(f.input_ids) for f in cut)


def _score(
    engine: Engine,
    task: Task,
    items: Sequence[TaskItem],
    settings: AnswerSettings,
    done: Collection[int],
    report: Callable[[int, Answer], None],
    progress: bool,
    shard: Shard,
) -> tuple[int, int, tuple[int, int]]:
    reserve = option_reserve(engine.tokenizer, task, items, settings.scoring)
    prompts = fit_choice_prompts(
        task,
        items,
        engine.tokenizer,
        engine.backbone,
        settings.prompt,
        max_length=settings.max_length,
        permute=settings.permute,
        reserve=reserve,
    )
    check_context(
        engine, items, [max(len(f.input_ids) for f in per) + reserve for per in prompts.fitted], done
    )
    dropped = prompts.dropped

    def on_item(i: int, score: ItemScore) -> None:
        probs = [float(p) for p in score.probs]
        output = task.output_for(int(np.argmax(score.probs)))
        report(i, Answer(output, {"probs": probs, **score.extra, "dropped": dropped[i]}))

    engine.score(
        task,
        items,
        prompts,
        scoring=settings.scoring,
        batch_size=settings.batch_size,
        done=done,
        on_item=on_item,
        progress=progress,
        shard=shard,
    )
    return sum(d > 0 for d in dropped), prompts.over_budget, cut_tokens([per[0] for per in prompts.fitted])


def _generate(
    engine: Engine,
    task: Task,
    items: Sequence[TaskItem],
    settings: AnswerSettings,
    done: Collection[int],
    report: Callable[[int, Answer], None],
    progress: bool,
    shard: Shard,
) -> tuple[int, int, int, tuple[int, int]]:
    g = settings.generation
    fitted = generation_prompts(
        task,
        items,
        engine.tokenizer,
        engine.backbone,
        settings.prompt,
        max_length=settings.max_length,
        max_new_tokens=g.max_new_tokens,
    )
    check_context(engine, items, [len(f.input_ids) + 1 for f in fitted], done)
    # a task that reports perplexity also has its gold outputs scored
    affixes = assistant_affixes(engine.tokenizer, engine.backbone) if task.reference_loglik else None
    unusable = 0

    def on_text(i: int, text: str) -> None:
        nonlocal unusable
        output = task.parse_output(items[i], text)
        if output is None:
            fallback = task.fallback_output(items[i])
            if fallback is not None:  # a choice task guesses no option: its output stays empty
                output = fallback
                unusable += 1
        sidecar = {"text": text, "dropped": fitted[i].dropped}
        ref = reference_logprob(engine, task, items[i], fitted[i], affixes) if affixes else None
        if ref is not None:
            sidecar["ref_logprob"], sidecar["ref_tokens"] = ref
        report(i, Answer(output, sidecar))

    schema = task.output_schema() if settings.constrain else None
    engine.generate(
        [f.input_ids for f in fitted],
        g,
        batch_size=settings.batch_size,
        done=done,
        on_result=on_text,
        progress=progress,
        shard=shard,
        schema=schema,
    )
    return sum(f.dropped > 0 for f in fitted), sum(not f.fits for f in fitted), unusable, cut_tokens(fitted)


def reference_logprob(
    engine: Engine, task: Task, item: TaskItem, prompt: FittedPrompt, affixes: tuple[str, str]
) -> tuple[float, int] | None:
    """``(log-likelihood, tokens)`` of ``item``'s gold output after its prompt, written as the
    training completion (end-of-turn included); None without gold output or when the engine
    cannot score. One item at a time, as its generation finishes: the value depends on the
    item alone, so a resumed or multi-process run writes the same one."""
    if not task.has_output(item):
        return None
    completion = completion_ids(engine.tokenizer, affixes, task.target(item))
    values = engine.completion_logprobs([prompt.input_ids], [completion], batch_size=1)
    if values is None or values[0] is None:
        return None
    return values[0], len(completion)


def check_context(
    engine: Engine, items: Sequence[TaskItem], lengths: Sequence[int], done: Collection[int] = ()
) -> None:
    """Refuse, before any work, a prompt longer than the model's context even after the length
    budget cut its conversation (what is left: the question, options, target utterances): the
    model cannot read it, and trying can ask for terabytes of memory."""
    limit = engine.context_size()
    if not limit:
        return
    over = [i for i, n in enumerate(lengths) if n > limit and i not in done]
    if over:
        first = over[0]
        more = f" (and {len(over) - 1} more item(s))" if len(over) > 1 else ""
        raise UserError(
            f"the prompt needs {lengths[first]} tokens, more than the model's context of {limit}{more}",
            item=items[first].id,
            field="max_length",
            hint="the length budget cuts only the conversation; the rest of this item does not fit the model",
        )


def default_batch_size(task: Task, model: Any = None) -> int:
    """Choice scoring: 16 on a GPU, 8 on a CPU (where wider batches only add padding); 8 for
    generation."""
    if not task.has_options:
        return 8
    device = model_device(model) if model is not None else None
    return 16 if device is not None and device.type == "cuda" else 8


__all__ = [
    "Answer",
    "AnswerRun",
    "AnswerSettings",
    "answer_items",
    "check_context",
    "default_batch_size",
    "generation_prompts",
    "reference_logprob",
]
