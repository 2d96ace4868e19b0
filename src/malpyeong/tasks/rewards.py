"""Rewards a task offers reinforcement learning (GRPO): each scores one completion for one item,
the way the task is scored, in [0, 1], higher is better.

Every task names its rewards through :meth:`malpyeong.tasks.base.Task.rewards`; the trainer
knows them only by name (``format``, ``correct``, ``quality``, ...) and weight. Three kinds
recur:

* ``format``: the completion has the official shape the scorer reads (an option letter, a
  schema-valid JSON state, an answer line);
* ``correct``: it is the right answer (accuracy, exact match);
* ``quality``: its text is close to the gold text (the task's own text metric, e.g. ROUGE-1 over
  Mecab morphemes as the official scorer counts it); ``bertscore`` adds BERTScore F1 of the
  same two texts when a local BERTScore model is given.

A reward may not apply to an item (culture's ``correct`` to a 서술형 question, whose score is
its text): it returns None there, which trl leaves out of that reward's mean and sum.

A reward scores a batch at once (:meth:`Reward.__call__`), so a model-based one (BERTScore)
encodes the batch together; the others are plain per-item functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from malpyeong.metrics.official import BertScorer, rouge1_pair

TextPair = Callable[[Any, str], "tuple[str, str] | None"]  # (item, completion) -> (gold, predicted)


@dataclass(frozen=True)
class Reward:
    """One named reward: ``score(item, completion)`` per item, or ``batch(items, completions)``."""

    name: str
    weight: float  # the default weight in the weighted sum (recipes and flags may change it)
    help: str
    score: Callable[[Any, str], float | None] | None = None
    batch: Callable[[Sequence[Any], Sequence[str]], list[float | None]] | None = None

    def __call__(self, items: Sequence[Any], completions: Sequence[str]) -> list[float | None]:
        if self.batch is not None:
            values = self.batch(items, completions)
        else:
            assert self.score is not None, f"reward {self.name} has no score"
            values = [self.score(item, text) for item, text in zip(items, completions, strict=True)]
        return [None if v is None else float(v) for v in values]


def format_reward(ok: Callable[[Any, str], float | bool], help: str, weight: float = 0.2) -> Reward:
    """``format``: 1 when the completion has the task's official shape (``ok``), else 0 (or
    the fraction ``ok`` returns)."""
    return Reward("format", weight, help, score=lambda item, text: float(ok(item, text)))


def rouge1_reward(pair: TextPair, weight: float = 0.5, name: str = "quality") -> Reward:
    """ROUGE-1 F over Mecab morphemes (the official scorer's) of the texts ``pair`` picks;
    0 when nothing could be read from the completion."""

    def score(item: Any, text: str) -> float:
        texts = pair(item, text)
        return 0.0 if texts is None else rouge1_pair(*texts)["f"]

    return Reward(name, weight, "ROUGE-1 F (Mecab morphemes, as the official scorer) against the gold", score)


def bertscore_reward(pair: TextPair, model: str, device: str | None = None, weight: float = 0.5) -> Reward:
    """BERTScore F1 (the official scorer's settings) of the texts ``pair`` picks, with the
    encoder at ``model`` (a local folder; loaded on first use); 0 where nothing was read."""
    scorer: list[BertScorer] = []

    def batch(items: Sequence[Any], completions: Sequence[str]) -> list[float]:
        pairs = [pair(item, text) for item, text in zip(items, completions, strict=True)]
        scored = [i for i, p in enumerate(pairs) if p is not None]
        out = [0.0] * len(pairs)
        if scored:
            if not scorer:
                scorer.append(BertScorer(model, device=device))
            values = scorer[0].score([pairs[i][0] for i in scored], [pairs[i][1] for i in scored])
            for i, v in zip(scored, values, strict=True):
                out[i] = v["f"]
        return out

    return Reward("bertscore", weight, f"BERTScore F1 against the gold ({model})", batch=batch)


def text_rewards(
    pair: TextPair, bertscore_model: str | None, device: str | None = None, weight: float = 0.5
) -> list[Reward]:
    """``quality`` (ROUGE-1), and ``bertscore`` when a model is given, both of ``weight``."""
    rewards = [rouge1_reward(pair, weight)]
    if bertscore_model:
        rewards.append(bertscore_reward(pair, bertscore_model, device, weight))
    return rewards


__all__ = ["Reward", "TextPair", "bertscore_reward", "format_reward", "rouge1_reward", "text_rewards"]
