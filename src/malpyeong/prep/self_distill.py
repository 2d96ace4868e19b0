"""Self-distillation for generate tasks: the fine-tuned model writes the next round's targets.

What the DCS 대상 team did after LoRA SFT and KTO: the model itself writes several candidate
summaries per training dialogue, one is kept, and the next round trains on them. Here:

1. ``num_candidates`` generations per item (the first greedy, the others sampled with their own
   seeds), cleaned by the task (:meth:`~malpyeong.tasks.base.Task.distill_completion`);
2. over-long and repetitive candidates are dropped: longer than ``max_length_ratio`` times the
   reference length (the gold output where there is one, else the median candidate), or with
   too many repeated word 3-grams / character 10-grams (:mod:`malpyeong.prep.filters`) -- the
   degenerate outputs the winners had to fix;
3. of the rest, the candidate with the best agreement is kept: the best metric against gold
   (the task's dev metric) where the item has gold, else minimum Bayes risk over the
   candidates (:func:`malpyeong.ensemble.mbr.mbr_choose`: the one the others agree with most).

The generation is injected (``generate(items, k)`` -> texts), so the logic is tested with a
stub; :func:`candidate_generator` binds the answering path on a loaded model. Records have the
distillation layout (``prompt_messages`` + ``completion``) that ``--extra_train_files`` reads.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from malpyeong.ensemble.mbr import mbr_choose
from malpyeong.errors import UserError
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import Engine
from malpyeong.prep.filters import repeated_chars_ratio, repeated_ngram_ratio
from malpyeong.tasks.base import GenerateTask, PromptSpec, TaskItem

SOURCE = "self_distill"
SELECT = ("auto", "gold", "mbr")

# (items, candidate index k) -> one raw text per item
Generate = Callable[[list[Any], int], list[str]]
Similarity = Callable[[Sequence[tuple[str, str]]], list[float]]


@dataclass(frozen=True)
class SelfDistillSettings:
    num_candidates: int = 4
    max_length_ratio: float = 2.0  # over-long: longer than this x the reference length
    max_word_repeat: float = 0.3  # repeated word 3-gram share
    max_char_repeat: float = 0.4  # repeated character 10-gram share
    select: str = "auto"  # auto: gold metric where gold exists, else MBR; gold; mbr

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise UserError(f"must be at least 1, got {self.num_candidates}", field="num_candidates")
        if self.max_length_ratio <= 0:
            raise UserError("must be positive", field="max_length_ratio")
        if self.select not in SELECT:
            raise UserError(
                f"unknown value '{self.select}'", field="select", hint="one of " + ", ".join(SELECT)
            )


def candidate_problem(text: str, reference_chars: float, settings: SelfDistillSettings) -> str | None:
    """Why a cleaned candidate is unusable (``too_long``, ``repetitive``), or None."""
    if reference_chars > 0 and len(text) > settings.max_length_ratio * reference_chars:
        return "too_long"
    if (
        repeated_ngram_ratio(text) > settings.max_word_repeat
        or repeated_chars_ratio(text) > settings.max_char_repeat
    ):
        return "repetitive"
    return None


def select_candidates(
    task: GenerateTask,
    items: Sequence[TaskItem],
    texts: dict[str, list[str]],
    settings: SelfDistillSettings,
    similarity: Similarity,
    *,
    prompt: PromptSpec,
) -> tuple[list[dict], dict]:
    """One training record per item whose candidates leave a usable one, and a report."""
    use_gold = settings.select in ("auto", "gold")
    if settings.select == "gold":
        missing = [it.id for it in items if not task.has_output(it)]
        if missing:
            raise UserError(
                f"{len(missing)} item(s) have no gold output, e.g. {missing[0]}",
                field="select",
                hint="use --select mbr or auto",
            )
    dropped: Counter = Counter()
    kept: dict[str, list[tuple[str, Any]]] = {}  # id -> [(completion, output)]
    for item in items:
        clean = []
        for text in texts.get(item.id, []):
            completion, reason = task.distill_completion(item, text)
            if completion is None:
                dropped[reason] += 1
                continue
            clean.append((completion, task.parse_output(item, text)))
        if task.has_output(item):
            reference = len(task.target(item))
        else:
            reference = statistics.median(len(c) for c, _ in clean) if clean else 0
        usable = []
        for completion, output in clean:
            problem = candidate_problem(completion, reference, settings)
            if problem:
                dropped[problem] += 1
            else:
                usable.append((completion, output))
        kept[item.id] = usable

    gold_items = [it for it in items if use_gold and task.has_output(it) and kept[it.id]]
    scores = _gold_scores(task, gold_items, kept)
    records: list[dict] = []
    how: Counter = Counter()
    no_candidate = 0
    for item in items:
        usable = kept[item.id]
        if not usable:
            no_candidate += 1
            continue
        if item.id in scores:
            values = scores[item.id]
            pick = max(range(len(usable)), key=lambda k: (values[k], -k))
            rule, score = "gold", values[pick]
        elif len(usable) == 1:
            pick, rule, score = 0, "single", None
        else:
            # a tie goes to the earlier candidate (candidate 0 is the greedy answer)
            outcome = mbr_choose([[c for c, _ in usable]], similarity, priority=list(range(len(usable))))
            pick, rule = outcome.choice[0], "mbr"
            score = float(outcome.scores[0, pick])
        how[rule] += 1
        records.append(
            {
                "id": item.id,
                "prompt_messages": task.messages(item, prompt),
                "completion": usable[pick][0],
                "source": SOURCE,
                "task": task.name,
                "selected_by": rule,
                "score": score,
            }
        )
    report = {
        "task": task.name,
        "prompt": str(prompt),
        "n_items": len(items),
        "n_kept": len(records),
        "candidates": settings.num_candidates,
        "selected_by": dict(how),
        "candidates_dropped": dict(dropped),
        "items_without_candidate": no_candidate,
    }
    return records, report


def _gold_scores(
    task: GenerateTask, items: Sequence[TaskItem], kept: dict[str, list[tuple[str, Any]]]
) -> dict[str, list[float]]:
    """Each kept candidate's dev metric against its item's gold, per item id."""
    scores: dict[str, list[float]] = {it.id: [] for it in items}
    width = max((len(kept[it.id]) for it in items), default=0)
    for k in range(width):  # one metric call per candidate rank, over every item that has one
        group = [it for it in items if len(kept[it.id]) > k]
        values = task.item_scores(group, {it.id: kept[it.id][k][1] for it in group}, task.dev_metric)
        for it, value in zip(group, values, strict=True):
            scores[it.id].append(float(value))
    return scores


def generate_candidates(
    items: Sequence[TaskItem],
    generate: Generate,
    num_candidates: int,
    *,
    done: dict[str, dict] | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> dict[str, list[str]]:
    """``num_candidates`` texts per item, reusing ``done`` rows (keyed ``"<id>#<k>"``) and
    reporting each new row to ``on_row`` (the raw-file writer, for resuming)."""
    rows = dict(done or {})
    for k in range(num_candidates):
        pending = [it for it in items if f"{it.id}#{k}" not in rows]
        if pending:
            texts = generate(pending, k)
            if len(texts) != len(pending):
                raise RuntimeError(f"generate returned {len(texts)} texts for {len(pending)} items")
            for it, text in zip(pending, texts, strict=True):
                row = {"key": f"{it.id}#{k}", "id": it.id, "k": k, "text": text}
                rows[row["key"]] = row
                if on_row is not None:
                    on_row(row)
    return {it.id: [rows[f"{it.id}#{k}"]["text"] for k in range(num_candidates)] for it in items}


def candidate_generator(
    engine: Engine,
    task: GenerateTask,
    settings: AnswerSettings,
    *,
    temperature: float,
    top_p: float,
    seed: int,
) -> Generate:
    """``generate(items, k)`` on a loaded model: candidate 0 greedy (what the model submits),
    the others sampled with seed ``seed + k``, through the one answering path."""
    base = replace(settings, generate=True)

    def generate(items: list[TaskItem], k: int) -> list[str]:
        sampled = replace(
            base.generation, do_sample=True, temperature=temperature, top_p=top_p, seed=seed + k, num_beams=1
        )
        run = answer_items(
            engine, task, items, replace(base, generation=sampled) if k else base, progress=False
        )
        return [a.sidecar["text"] for a in run.answers]

    return generate


__all__ = [
    "SELECT",
    "SOURCE",
    "SelfDistillSettings",
    "candidate_generator",
    "candidate_problem",
    "generate_candidates",
    "select_candidates",
]
