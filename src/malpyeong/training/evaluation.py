"""The task's own dev metric during training: accuracy from option scoring (choice tasks) or
ROUGE-1 of greedy generations (generation tasks), through the same code prediction uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from malpyeong import metrics
from malpyeong.backbones import Backbone, end_of_turn_ids
from malpyeong.data import load_items
from malpyeong.generation import generate_texts
from malpyeong.predict import generation_prompts, score_choices
from malpyeong.training.recipe import CommonArguments


@dataclass
class TaskEvaluator:
    """The task's own dev metric, computed on the model being trained.

    Choice tasks: accuracy from option scoring (:func:`malpyeong.predict.score_choices`, the
    letter probabilities, as prediction scores them). Generation tasks: ROUGE-1 of greedy
    generations (:func:`malpyeong.generation.generate_texts`) against the gold outputs.
    """

    task: Any
    items: list
    tokenizer: Any
    backbone: Backbone
    prompt: str
    max_length: int | None
    batch_size: int = 8
    max_new_tokens: int = 256
    history: list[dict] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.task.metric_names[0]

    def __call__(self, model: Any) -> dict[str, float]:
        import torch

        was_training = model.training
        side = self.tokenizer.padding_side
        use_cache = getattr(model.config, "use_cache", None)
        model.eval()
        try:
            with torch.no_grad():
                if self.task.kind == "choice":
                    value, report = self._choice(model)
                else:
                    model.config.use_cache = True
                    value, report = self._generate(model)
        finally:
            self.tokenizer.padding_side = side
            if use_cache is not None:
                model.config.use_cache = use_cache
            model.train(was_training)
        self.reports.append(report)
        return {self.metric: value}

    def _choice(self, model: Any) -> tuple[float, dict]:
        probs = score_choices(model, self.tokenizer, self.backbone, self.task, self.items,
                              prompt=self.prompt, batch_size=self.batch_size,
                              max_length=self.max_length, scoring="letter", progress=False)
        outputs = {it.id: self.task.output_for(int(p.argmax()))
                   for it, p in zip(self.items, probs, strict=True)}
        report = self.task.evaluate(self.items, outputs)
        return float(report["accuracy"]), report

    def _generate(self, model: Any) -> tuple[float, dict]:
        fitted = generation_prompts(self.task, self.items, self.tokenizer, self.backbone,
                                    prompt=self.prompt, max_length=self.max_length,
                                    max_new_tokens=self.max_new_tokens)
        texts = generate_texts(model, self.tokenizer, [f.input_ids for f in fitted],
                               max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                               stop_token_ids=end_of_turn_ids(self.tokenizer, self.backbone),
                               progress=False)
        preds = [self.task.clean_output(t) for t in texts]
        refs = [self.task.target(it, self.prompt) for it in self.items]
        value = float(metrics.rouge1(refs, preds))
        return value, {"rouge1": value, "n": len(preds), "examples": [
            {"id": it.id, "prediction": p}
            for it, p in list(zip(self.items, preds, strict=True))[:5]]}


def load_dev_items(task: Any, script: CommonArguments) -> list:
    """The dev items the task metric is computed on (``dev_eval_items`` of them, if set)."""
    if not script.dev_file:
        return []
    items = load_items(script.dev_file, task, require_output=True)
    limit = script.dev_eval_items or (None if task.kind == "choice" else 50)
    return items[:limit] if limit else items
