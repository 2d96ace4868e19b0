"""What every task provides: the one interface trainer, predictor, evaluator, ensembler,
merger, distiller, dedup and EDA talk to.

A new task (dialogue memory state, context QA, ...) plugs in by subclassing :class:`ChoiceTask`
or :class:`GenerateTask` and registering with :func:`malpyeong.tasks.register`; nothing outside
``tasks/`` changes. A *choice* task is answered by scoring its options and combined by voting; a
*generate* task is answered by decoding, its text turned into the official output by
:meth:`Task.parse_output`, and combined by MBR (or field by field, see :attr:`Task.combiner`).
Outputs need not be strings: whatever :meth:`Task.check_output` accepts (a label, a summary, a
JSON object) is what results files, submissions and combiners carry.

Code outside ``tasks/`` never asks which kind a task is (no ``isinstance(task, ChoiceTask)``, no
``task.kind ==``; ``tests/test_architecture.py`` checks): it asks the question it means, each
answered here -- :attr:`Task.has_options` (are there options to score, shuffle, vote on or
reject?), :attr:`Task.combiner` (how do several models' outputs combine?),
:meth:`Task.parse_output` and :meth:`Task.fallback_output` (what does a generation give?),
:attr:`Task.reference_loglik` (is the gold output scored too?), :attr:`Task.objectives` (which
training objectives apply?).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Protocol

from malpyeong.errors import UserError

Problems = list[tuple[str, str]]  # (field, problem) pairs collected while parsing one record

OFFICIAL_SYSTEM = (
    "You are a helpful AI assistant. Please answer the user's questions kindly. "
    "당신은 유능한 AI 어시스턴트 입니다. 사용자의 질문에 대해 친절하게 답변해주세요."
)


@dataclass(frozen=True)
class Utterance:
    speaker: str
    utterance: str
    utterance_id: str | None = None


@dataclass(frozen=True)
class PromptSpec:
    """A prompt variant: ``baseline`` or flags joined by ``+`` (e.g. ``highlight+definitions``).

    Parsed once at the edge (:meth:`Task.prompt_spec`) and carried inward as it is. ``system``:
    an exact system prompt that replaces the task's own (``--system_prompt_file``: a published
    model run with the prompt it was trained on); see :func:`chat_messages`.
    """

    flags: frozenset[str]
    system: str | None = None

    @property
    def language(self) -> str:
        return "en" if "en" in self.flags else "bilingual" if "bilingual" in self.flags else "ko"

    def __contains__(self, flag: str) -> bool:
        return flag in self.flags

    def __str__(self) -> str:
        return "+".join(sorted(self.flags)) or "baseline"


BASELINE = PromptSpec(frozenset())


@dataclass(frozen=True)
class Metric:
    """One metric a task reports: its name in reports and which way is better."""

    name: str
    higher_is_better: bool = True
    help: str = ""


@dataclass(frozen=True)
class Option:
    """A keyword option of :meth:`Task.evaluate`, offered by ``run/evaluate.py`` as ``--NAME``."""

    help: str
    many: bool = False  # takes several values (a list)


@dataclass(frozen=True)
class Cuts:
    """How the length budget may shorten one item: ``count`` units may go, and ``apply(k)`` is
    the item with the first ``k`` of them gone (the budget bisects on ``k``)."""

    count: int
    apply: Callable[[int], Any]


OMITTED = Utterance("", "…")  # stands where utterances were cut, so the model sees a gap


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
    return f"did you mean '{close[0]}'? known: {', '.join(known)}" if close else f"known: {', '.join(known)}"


class TaskItem(Protocol):
    """What every task's item has: its id and the record it was parsed from (the official
    layout, as in the data file). Each task's own item type (``CCIItem``, ``DCSItem``, ...)
    adds its fields; code outside ``tasks/`` needs only these two and hands the item back to
    its task for the rest."""

    @property
    def id(self) -> str: ...

    @property
    def raw(self) -> Any: ...


class Task:
    """Base class: parsing, prompts, targets, outputs and metrics for one task."""

    name: ClassVar[str]
    # "choice" or "generate": for people (listings, docs). Code outside tasks/ asks the named
    # questions below (has_options, combiner, ...), never this.
    kind: ClassVar[Literal["choice", "generate"]]
    # Whether each item offers options to pick from (a choice task): it is answered by scoring
    # them (unless asked to generate), its results carry one probability per option, its
    # options can be shuffled for training, and each wrong one is a rejected answer.
    has_options: ClassVar[bool] = False
    n_choices: ClassVar[int] = 0  # options per item (0: the task has none)
    output_labels: ClassVar[tuple[str, ...]] = ()  # official output per option position
    # How several models' outputs combine (ensemble/vote.py): "vote" over option labels;
    # "mbr" picks, per item, the candidate the others agree with most (similarity of
    # output_text); "fields" asks the task (combine_fields).
    combiner: ClassVar[Literal["vote", "mbr", "fields"]] = "mbr"
    # Whether prediction also scores each gold output under the model (its log-likelihood as
    # the training completion, kept in the sidecar as ref_logprob / ref_tokens): perplexity.
    reference_loglik: ClassVar[bool] = False
    description: ClassVar[str] = ""  # one line, shown where tasks are listed (--help)
    prompt_flags: ClassVar[dict[str, str]] = {}  # flag -> what it does (shown by --help / errors)
    metrics: ClassVar[tuple[Metric, ...]]  # what evaluate() reports, the headline first
    dev_metric: ClassVar[str]  # the quick metric of dev evaluation during training / merge search
    dev_eval_items: ClassVar[int | None] = None  # dev items scored during training (None: all)
    target_styles: ClassVar[tuple[str, ...]] = ("plain",)  # training completion styles; [0] default
    evaluate_options: ClassVar[dict[str, Option]] = {}  # keyword options of evaluate()
    cut_unit: ClassVar[str] = "utterances"  # what the length budget cuts, as reports name it
    # A training example that does not fit max_length even with everything cuttable cut:
    # "drop" it with a warning, or stop with an "error" naming the item (a task whose cut can
    # remove nearly the whole input, so an overflow means max_length is too small).
    over_budget: ClassVar[Literal["drop", "error"]] = "drop"
    # Per-item fields of a results sidecar that evaluate() reads (e.g. the gold output's
    # log-likelihood for perplexity); run/evaluate.py passes them as ``sidecar={id: {field: v}}``.
    evaluate_sidecar: ClassVar[tuple[str, ...]] = ()
    live_reply: ClassVar[bool] = False  # answers a live conversation as a character (run/chat.py)
    # Training objectives the task allows: "sft" (the completion as text) for every task,
    # "classification" (a head over the options) for choice tasks.
    objectives: ClassVar[tuple[str, ...]] = ("sft",)
    # Item fields by which items can be split among expert models (per-category experts).
    route_keys: ClassVar[tuple[str, ...]] = ()

    def route_value(self, item: Any, key: str) -> str:
        """The value of routing field ``key`` (one of :attr:`route_keys`) for ``item``."""
        raise NotImplementedError

    # ----- data -----
    def parse_item(self, record: Any, problems: Problems) -> Any | None:
        """A typed item from one raw record, or None; every problem is appended to ``problems``."""
        raise NotImplementedError

    def has_output(self, item: Any) -> bool:
        raise NotImplementedError

    def reference(self, item: Any) -> Any:
        """The item's gold output in the official form (what :meth:`check_output` accepts)."""
        raise NotImplementedError

    def check_output(self, value: Any) -> str | None:
        """None when ``value`` is a valid submission output, else what is wrong with it."""
        raise NotImplementedError

    def parse_output(self, item: Any, text: str) -> Any | None:
        """The official output from a raw generation for ``item``, or None when nothing usable
        is in it (a choice task: the option its answer names, e.g. ``정답: B``)."""
        raise NotImplementedError

    def fallback_output(self, item: Any) -> Any | None:
        """What is submitted when a generation held nothing usable: a valid output, so the file
        still passes the official checks (the count is reported); None where the task has no
        fallback (a choice task guesses no option)."""
        return None

    # ----- prompts -----
    def prompt_spec(self, name: str | PromptSpec | None) -> PromptSpec:
        """Parse a prompt variant name (``baseline``, ``highlight+definitions``); raises on an
        unknown flag."""
        if isinstance(name, PromptSpec):
            return name
        if not name or name == "baseline":
            return BASELINE
        flags = [f.strip() for f in name.split("+") if f.strip() and f.strip() != "baseline"]
        for flag in flags:
            if flag not in self.prompt_flags:
                raise UserError(
                    f"unknown prompt variant '{flag}' for task {self.name}",
                    field="prompt",
                    hint=suggest(flag, sorted(self.prompt_flags)),
                )
        if "en" in flags and "bilingual" in flags:
            raise UserError("choose one of 'en' and 'bilingual'", field="prompt")
        return PromptSpec(frozenset(flags))

    def messages(self, item: Any, spec: PromptSpec = BASELINE) -> list[dict]:
        """Chat messages (system + user) for ``item``; the backbone renders them."""
        raise NotImplementedError

    def target(self, item: Any, *, style: str | None = None) -> str:
        """The training completion for ``item``: its gold answer as the model should write it,
        in one of :attr:`target_styles` (None: the first)."""
        raise NotImplementedError

    def target_for(self, item: Any, spec: PromptSpec, *, style: str | None = None) -> str:
        """The training completion under prompt variant ``spec``: the same as :meth:`target`
        unless a task's variants change what the answer looks like (e.g. reasoning first)."""
        return self.target(item, style=style)

    def check_target_style(self, style: str | None) -> str:
        """``style`` or the default; one error naming the valid styles otherwise."""
        if style is None:
            return self.target_styles[0]
        if style not in self.target_styles:
            raise UserError(
                f"unknown target style '{style}' for task {self.name}",
                field="target_style",
                hint=suggest(style, list(self.target_styles)),
            )
        return style

    # ----- length budget -----
    def drop_order(self, item: Any) -> list[int]:
        """Utterance indices in the order they may be cut when the prompt is too long."""
        raise NotImplementedError

    def with_conversation(self, item: Any, conversation: tuple[Utterance, ...]) -> Any:
        return replace(item, conversation=conversation)

    def cuts(self, item: Any, spec: PromptSpec) -> Cuts:
        """What the length budget may cut from ``item`` under ``spec``: by default its
        utterances in :meth:`drop_order`, each run of cut ones shown as one "…"; a task whose
        unit is not an utterance (a document's chunks) overrides this."""
        order = self.drop_order(item)
        return Cuts(len(order), lambda k: cut_conversation(self, item, order, k))

    # ----- text views (dedup, contamination guard, similarity) -----
    def dedup_parts(self, item: Any) -> list[str]:
        """The texts that must *all* be near-duplicates for two items to count as duplicates."""
        raise NotImplementedError

    def dialogue_lines(self, item: Any) -> list[str]:
        """The item's dialogue, one string per utterance (windows of the contamination guard)."""
        return [u.utterance for u in item.conversation]

    def key_terms(self, item: Any) -> tuple[str, ...]:
        """Words that say what the item is about (DCS: its subject keywords); used to find a
        related item (preference pairs) and counted by EDA."""
        return ()

    def output_schema(self) -> dict | None:
        """The JSON schema a generation must follow (constrained decoding, on by default when
        a task has one; :mod:`malpyeong.inference.constrain`), or None for free text."""
        return None

    def output_text(self, output: Any) -> str:
        """An output as one text, for similarity (MBR) and length statistics."""
        if isinstance(output, str):
            return output
        return json.dumps(output, ensure_ascii=False, sort_keys=True)

    # ----- metrics -----
    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise UserError(
            f"task {self.name} has no metric '{name}'",
            field="metric",
            hint=suggest(name, [m.name for m in self.metrics]),
        )

    def evaluate(self, gold: list[Any], outputs: dict[str, Any], **options: Any) -> dict:
        """The full report: every metric of :attr:`metrics` (None where it could not be
        computed), plus whatever breakdown the task offers."""
        raise NotImplementedError

    def item_scores(
        self, gold: list[Any], outputs: dict[str, Any], metric: str, **options: Any
    ) -> list[float]:
        """Per-item values of ``metric`` (one of :attr:`metrics`), in ``gold`` order: what a
        paired comparison of two models needs (``run/compare.py``). Default: the
        ``per_item`` lists a task's :meth:`evaluate` report carries."""
        self.metric(metric)
        report = self.evaluate(gold, outputs, **options)
        values = (report.get("per_item") or {}).get(metric)
        if values is None:
            why = "; ".join(n for n in report.get("notices", []) if metric in n)
            raise UserError(
                f"task {self.name} gives no per-item values of '{metric}'" + (f": {why}" if why else ""),
                field="metric",
            )
        return [float(v) for v in values]

    def dev_evaluate(self, gold: list[Any], outputs: dict[str, Any]) -> dict:
        """The quick report used during training and merge search; holds :attr:`dev_metric`.
        Needs no external model (default: the full report)."""
        return self.evaluate(gold, outputs)

    def format_report(self, report: dict) -> str:
        """The report as ``run/evaluate.py`` prints it (default: one metric per line)."""
        lines = []
        for m in self.metrics:
            value = report.get(m.name)
            shown = (
                "not computed"
                if value is None
                else f"{value:.4f}"
                if isinstance(value, float)
                else str(value)
            )
            lines.append(f"{m.name:<12}{shown}")
        return "\n".join(lines)

    # ----- distillation -----
    distill_flags: ClassVar[frozenset[str]] = frozenset()  # prompt flags a teacher always gets
    distill_needs_gold: ClassVar[bool] = False  # whether teacher answers are checked against gold

    def distill_completion(self, item: Any, text: str) -> tuple[str | None, str]:
        """A teacher's raw text as a training completion for ``item``, or None and why not
        (a short reason code counted in the distillation report)."""
        raise NotImplementedError

    # ----- live conversation (run/chat.py) -----
    def live_item(
        self,
        conversation: tuple[Utterance, ...],
        *,
        speaker: str | None = None,
        memory: str | None = None,
        persona: str | None = None,
        item_id: str = "live",
    ) -> Any:
        """An item built from a live conversation: the next reply of ``speaker`` (a task with
        :attr:`live_reply`), or the conversation to condense (a summariser folding a chat's
        older turns). Default: the task's own parser on a record holding only the
        conversation; a task that needs more says what is missing."""
        record = {
            "id": item_id,
            "output": "",
            "input": {
                "conversation": [{"speaker": u.speaker, "utterance": u.utterance} for u in conversation]
            },
        }
        problems: Problems = []
        item = self.parse_item(record, problems)
        if item is None or problems:
            raise UserError(
                f"task {self.name} cannot take a bare conversation ("
                + "; ".join(f"{f}: {p}" for f, p in problems)
                + ")",
                field="task",
            )
        return item

    def synthetic_records(self, n: int, seed: int, split: str) -> list[dict]:
        """``n`` SYNTHETIC records in the official layout, made so that a tiny model can learn
        them (the demo, learning tests); ``split`` "test" leaves the outputs empty. Ids start
        with ``synthetic-``. Tasks without a generator say so."""
        raise UserError(f"task {self.name} has no synthetic data generator", field="task")

    # ----- EDA -----
    eda_labels: ClassVar[dict[str, str]] = {}  # English names of category values (plot labels)

    def eda_columns(self, item: Any) -> dict[str, Any]:
        """Task-specific per-item columns of the EDA table (numbers and labels, never text).
        Known columns get their plots and figures: ``category``; ``gold`` with option lengths
        (``gold_longest``, ``chance_longest``, ...); ``ref_rel`` / ``ref_from_end`` /
        ``references``; ``terms`` (a list of key terms); ``output_chars``."""
        return {}


class ChoiceTask(Task):
    """A task answered by picking one of ``n_choices`` options (letters A, B, C, ...)."""

    kind = "choice"
    has_options = True
    combiner = "vote"
    objectives = ("sft", "classification")

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

    def reference(self, item: Any) -> str:
        label = self.label_index(item)
        if label is None:
            raise ValueError(f"item {item.id} has no gold output")
        return self.output_for(label)

    def permuted(self, item: Any, order: tuple[int, ...]) -> Any:
        """``item`` with its options reordered: new position j shows old option ``order[j]``."""
        raise NotImplementedError

    def parse_answer(self, text: str) -> int | None:
        """The option a generated answer names, or None (for generated, e.g. CoT, answers)."""
        raise NotImplementedError

    def parse_output(self, item: Any, text: str) -> str | None:
        """The label of the option a generated answer names, or None."""
        index = self.parse_answer(text)
        return None if index is None else self.output_for(index)

    def rationale_of(self, text: str) -> str:
        """The reasoning of a generated answer (the text before its answer line)."""
        raise NotImplementedError

    def answer_text(self, item: Any, index: int, *, style: str | None = None) -> str:
        """How option ``index`` is written as an answer, in a target style (``A. <option>``)."""
        raise NotImplementedError

    def target(self, item: Any, *, style: str | None = None, rationale: str | None = None) -> str:
        """The gold option as the model should write it (:meth:`answer_text`); with
        ``rationale`` the reasoning comes first and the answer line last."""
        raise NotImplementedError

    distill_needs_gold = True

    def distill_completion(self, item: Any, text: str) -> tuple[str | None, str]:
        """Kept only when the teacher names the gold option and reasons before it: the
        completion is the task's own target with that rationale."""
        answer = self.parse_answer(text)
        if answer is None:
            return None, "no_answer"
        if answer != self.label_index(item):
            return None, "wrong_answer"
        rationale = self.rationale_of(text)
        if not rationale:
            return None, "no_rationale"
        return self.target(item, rationale=rationale), "kept"

    def check_output(self, value: Any) -> str | None:
        if value not in self.output_labels:
            return f"output {value!r} is not one of {', '.join(self.output_labels)}"
        return None


class GenerateTask(Task):
    """A task answered by generating text, turned into the official output by the task."""

    kind = "generate"
    dev_eval_items = 50  # generation is slow: the first 50 dev items during training

    def render_output(self, output: Any) -> str:
        """An output as the model writes it (the training completion of a gold output)."""
        return self.output_text(output).strip()

    def target(self, item: Any, *, style: str | None = None) -> str:
        self.check_target_style(style)
        if not self.has_output(item):
            raise ValueError(f"item {item.id} has no gold output")
        return self.render_output(self.reference(item))

    def distill_completion(self, item: Any, text: str) -> tuple[str | None, str]:
        output = self.parse_output(item, text)
        if output is None:
            return None, "unusable"
        return self.render_output(output), "kept"

    def fallback_output(self, item: Any) -> Any:
        return "."

    def combine_fields(self, item: Any, outputs: list[Any], weights: list[float]) -> Any:
        """One output from several models' outputs for ``item`` (``combiner == "fields"``)."""
        raise NotImplementedError

    def check_output(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return "output must be a non-empty string"
        return None


def utterance_text(value: Any) -> str | None:
    """Utterances may be JSON numbers in the real files (e.g. ``40``); read them as text.

    Non-finite numbers (``NaN``, ``Infinity``, which Python's JSON reader accepts) are not
    utterances."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(value) if value == value and value not in (float("inf"), float("-inf")) else None
    return value if isinstance(value, str) else None


def parse_envelope(
    record: Any, problems: Problems, *, utterance_ids: bool
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


def cut_conversation(task: Task, item: Any, order: list[int], k: int) -> Any:
    """``item`` without the utterances ``order[:k]``; each run of cut ones becomes one
    :data:`OMITTED`."""
    if k == 0:
        return item
    gone = set(order[:k])
    conv: list[Utterance] = []
    for i, u in enumerate(item.conversation):
        if i in gone:
            if not conv or conv[-1] is not OMITTED:
                conv.append(OMITTED)
        else:
            conv.append(u)
    return task.with_conversation(item, tuple(conv))


def chat_messages(task: Task, item: Any, spec: PromptSpec) -> list[dict]:
    """``task.messages(item, spec)``, with the system turn replaced by ``spec.system`` when the
    spec carries an exact system prompt (added first when the task wrote none)."""
    messages = task.messages(item, spec)
    if spec.system is None:
        return messages
    rest = [m for m in messages if m.get("role") != "system"]
    return [{"role": "system", "content": spec.system}, *rest]


def conversation_lines(
    conversation: tuple[Utterance, ...], marked: set[int] = frozenset(), mark: str = ""
) -> list[str]:
    """``화자{speaker}: {utterance}`` per utterance, as the official baseline writes them."""
    return [
        f"{mark if i in marked else ''}화자{u.speaker}: {u.utterance}" for i, u in enumerate(conversation)
    ]
