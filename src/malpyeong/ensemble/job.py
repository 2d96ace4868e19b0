"""The vote job: what ``ensemble/vote.py`` runs -- check the inputs, combine, report, write."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from malpyeong.data import check_submission, load_items, write_submission
from malpyeong.ensemble.calibration import apply_temperature, fit_temperature, nll
from malpyeong.ensemble.diagnostics import (
    choice_diagnostics,
    format_choice_diagnostics,
    format_generate_diagnostics,
    generate_diagnostics,
)
from malpyeong.ensemble.inputs import (
    check_results,
    infer_task,
    member_names,
    prob_tensor,
    read_all_results,
    resolve_priority,
    results_by_name,
    results_inputs,
    vote_matrix,
)
from malpyeong.ensemble.mbr import (
    bertscore_similarity,
    describe_mbr_ties,
    mbr_choose,
    rouge1_similarity,
)
from malpyeong.ensemble.selection import (
    caruana_select,
    cross_validate_selection,
    read_members,
    write_members,
)
from malpyeong.ensemble.stacking import (
    check_stack_dev,
    cross_validate_stack,
    fit_stack,
    format_stack,
    stack_predict,
    stack_report,
)
from malpyeong.ensemble.voting import (
    METHODS,
    VoteOutcome,
    describe_ties,
    fmt_score,
    raise_if_unresolved,
    vote_choices,
)
from malpyeong.errors import UserError
from malpyeong.inference.results import Results, sidecar_path
from malpyeong.io import atomic_write_json, check_distinct, ensure_writable
from malpyeong.tasks import Task, get_task

# What ``--method`` accepts: the voting methods, and the stack fitted on dev (:mod:`.stacking`).
VOTE_METHODS = (*METHODS, "stack")


@dataclass
class VoteJob:
    """Everything ``ensemble/vote.py`` was asked to do (see its --help)."""

    inputs: list[str]
    output: str | None = None
    task: str | None = None
    method: str | None = None
    weights: list[float] | None = None
    priority: list[str] | None = None
    gold: str | None = None
    dev_results: list[str] | None = None
    calibrate: bool = False
    select: str | None = None
    members: str | None = None
    rounds: int = 25
    init: int = 0
    folds: int = 5
    seed: int = 0
    test: str | None = None
    bertscore_model: str | None = None
    report: str | None = None
    overwrite: bool = False


@dataclass
class VoteInputs:
    """What ``run_vote`` read and checked, handed to the choice or the generate combiner."""

    job: VoteJob
    task: Task
    results: list[Results]  # one per member, in member order
    names: list[str]  # the members' names, in the same order
    items: list  # the items to combine, in the order of the output
    dev: list[Results] | None  # the members' dev predictions (``results`` itself when they are)
    dev_ids: list[str]  # the gold file's ids, in its order
    gold_items: list | None  # the gold dev items (--gold)
    plan: dict | None  # the members file (--members)
    file_weights: list[float] | None  # its weights, one per member
    report: dict[str, Any]  # what --report writes; each combiner adds its part
    echo: Callable[[str], None]  # where progress lines go
    weights: list[float] | None = None  # --weights, in member order

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    @property
    def given_weights(self) -> list[float] | None:
        """``--weights``, else the members file's weights."""
        return self.weights if self.weights is not None else self.file_weights

    @property
    def given_priority(self) -> list[str] | None:
        """``--priority``, else the members file's priority restricted to the models voted."""
        if self.job.priority:
            return self.job.priority
        if not self.plan or not self.plan.get("priority"):
            return None
        return [n for n in self.plan["priority"] if n in self.names]


def _priority_by_accuracy(names: Sequence[str], votes: np.ndarray, gold: np.ndarray) -> list[str]:
    acc = [float((votes[j] == gold).mean()) for j in range(len(names))]
    return [names[j] for j in sorted(range(len(names)), key=lambda j: (-acc[j], j))]


def run_vote(job: VoteJob, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Check the inputs, combine them, report, and write the submission (see ``VoteJob``)."""
    if not (job.output or job.gold or job.select):
        raise UserError("nothing to do", hint="give --output FILE, --gold DEV.json or --select FILE")
    if (job.select or job.calibrate or job.dev_results) and not job.gold:
        raise UserError("--select, --calibrate and --dev-results need --gold DEV.json", field="gold")
    if job.method is not None and job.method not in VOTE_METHODS:
        raise UserError(f"unknown method '{job.method}'", field="method", hint=", ".join(VOTE_METHODS))
    if job.method == "stack":
        if not job.gold:
            raise UserError(
                "--method stack fits its meta-learner on dev: it needs --gold DEV.json",
                field="gold",
                hint="and --dev-results DEV/*.json when the inputs are test predictions",
            )
        if job.weights is not None or job.select or job.members or job.calibrate:
            raise UserError(
                "--method stack learns each member's weight itself; --weights, --select, "
                "--members and --calibrate go with the other methods",
                field="method",
            )
    paths = results_inputs(job.inputs, "inputs")
    dev_paths = results_inputs(job.dev_results, "dev-results") if job.dev_results else None
    check_distinct(
        [("--output", job.output), ("--select", job.select), ("--report", job.report)],
        [
            *(("a results file to vote", p) for p in job.inputs),
            *(("--dev-results", p) for p in dev_paths or ()),
            *((f"the sidecar of input {p}", sidecar_path(p)) for p in paths),
            ("--gold", job.gold),
            ("--test", job.test),
            ("--members", job.members),
        ],
    )
    for path in (job.output, job.select, job.report):
        if path:
            ensure_writable(path, job.overwrite)
    if job.weights is not None:
        if len(job.weights) != len(paths):
            raise UserError(
                f"{len(job.weights)} weight(s) for {len(paths)} input(s)",
                field="weights",
                hint="one weight per input, in the order of the inputs",
            )
        if not all(math.isfinite(w) for w in job.weights):
            raise UserError("weights must be finite numbers", field="weights")
    if job.method == "dawid_skene" and (job.weights or job.select or job.calibrate):
        raise UserError(
            "dawid_skene estimates each model's weight itself; --weights, --select "
            "and --calibrate go with the other methods",
            field="method",
        )
    results = read_all_results(paths)
    names = member_names(paths)
    weights_given = list(job.weights) if job.weights is not None else None
    # One canonical order (by model name) from here on: the file order changes nothing.
    order = sorted(range(len(names)), key=lambda j: names[j])
    results, names = [results[j] for j in order], [names[j] for j in order]
    if weights_given is not None:
        weights_given = [weights_given[j] for j in order]
    plan = read_members(job.members) if job.members else None
    file_weights = None
    if plan:
        wanted = [m["name"] for m in plan["members"]]
        dropped = [n for n in names if n not in wanted]
        results, names = results_by_name(names, results, wanted, "inputs"), wanted
        file_weights = [float(m["weight"]) for m in plan["members"]]
        echo(
            f"members from {job.members}: "
            + ", ".join(f"{n} x{fmt_score(w)}" for n, w in zip(names, file_weights, strict=False))
            + (f" (not used: {', '.join(dropped)})" if dropped else "")
        )
    task = get_task(job.task) if job.task else infer_task(results)
    check_results(
        results, task, (job.test, [it.id for it in load_items(job.test, task)]) if job.test else None
    )
    template = load_items(job.test or results[0].path, task)  # the items, in output order
    ids = [it.id for it in template]
    gold_items = load_items(job.gold, task, require_output=True) if job.gold else None
    dev: list[Results] | None = None
    dev_ids: list[str] = []
    if gold_items is not None:
        dev_ids = [it.id for it in gold_items]
        if dev_paths:
            dev = results_by_name(member_names(dev_paths), read_all_results(dev_paths), names, "dev-results")
            check_results(dev, task, (job.gold, dev_ids))
        elif set(ids) == set(dev_ids):
            dev = results
        else:
            raise UserError(
                f"the inputs do not predict the items of {job.gold}",
                field="gold",
                hint="pass --dev-results with the same models' dev predictions",
            )
    report: dict[str, Any] = {"task": task.name, "inputs": sorted(paths), "models": names, "n": len(ids)}
    attached = len(set(job.inputs) - set(paths))
    echo(
        f"{len(results)} {task.name} results files, {len(ids)} items each: {', '.join(names)}"
        + (f" ({attached} sidecar(s) given with them, read with their results files)" if attached else "")
    )
    inputs = VoteInputs(
        job=job,
        task=task,
        results=results,
        names=names,
        items=template,
        dev=dev,
        dev_ids=dev_ids,
        gold_items=gold_items,
        plan=plan,
        file_weights=file_weights,
        report=report,
        echo=echo,
        weights=weights_given,
    )
    if task.combiner == "vote":
        outputs = _vote_choice(inputs)
    elif task.combiner == "fields":
        outputs = _combine_fields(inputs)
    else:
        outputs = _vote_generate(inputs)
    if job.output:
        write_submission(template, outputs, job.output, overwrite=job.overwrite)
        echo(f"wrote {job.output} ({len(ids)} items)")
        report["output"] = job.output
        if job.test:
            n = check_submission(job.output, job.test, task)
            echo(f"{job.output}: passes the official submission checks against {job.test} ({n} items)")
    if job.report:
        atomic_write_json(job.report, report)
        echo(f"wrote the full report to {job.report}")
    return report


def _vote_choice(inputs: VoteInputs) -> dict[str, str]:
    """Vote a choice task (optionally calibrated and selected on dev); the label per id."""
    job, task, echo, report = inputs.job, inputs.task, inputs.echo, inputs.report
    results, names, ids, dev = inputs.results, inputs.names, inputs.ids, inputs.dev
    k, labels = task.n_choices, task.output_labels
    method = job.method or (inputs.plan or {}).get("method") or "hard"
    if method in ("soft", "stack") or job.calibrate:
        lacking = [str(r.path) for r in [*results, *(dev or [])] if r.probs is None]
        if lacking:
            raise UserError(
                f"soft voting, stacking and --calibrate need probabilities; no sidecar with "
                f"probs for: {', '.join(dict.fromkeys(lacking))}",
                field="method",
                hint="predict with run/test.py (it writes NAME.sidecar.jsonl), "
                "or use --method hard / weighted",
            )
    votes, probs = vote_matrix(results, ids, task), prob_tensor(results, ids, k)
    dvotes = dprobs = dgold = None
    if dev is not None:
        dvotes = vote_matrix(dev, inputs.dev_ids, task)
        dprobs = prob_tensor(dev, inputs.dev_ids, k)
        dgold = np.array([task.label_index(it) for it in inputs.gold_items], dtype=np.int64)
        report["dev_models"] = choice_diagnostics(names, dvotes, dgold)
    if method == "stack":
        return _stack_choice(inputs, votes, probs, dvotes, dprobs, dgold)
    temperatures: dict[str, float] | None = None
    if job.calibrate:
        if dprobs is None or probs is None:
            raise UserError(
                "--calibrate needs probabilities in every sidecar (dev and inputs)", field="calibrate"
            )
        temperatures = {}
        echo("temperature calibration on dev (NLL before -> after)")
        for j, n in enumerate(names):
            t = fit_temperature(dprobs[j], dgold)
            temperatures[n] = t
            echo(
                f"  {n}: T={t:.3f}  {nll(dprobs[j], dgold):.4f} -> "
                f"{nll(apply_temperature(dprobs[j], t), dgold):.4f}"
            )
    elif inputs.plan and inputs.plan.get("temperatures"):
        temperatures = {n: float(inputs.plan["temperatures"].get(n, 1.0)) for n in names}
    if temperatures:
        if probs is None:
            raise UserError("temperatures need probabilities in every sidecar", field="calibrate")
        probs = np.stack([apply_temperature(probs[j], temperatures[n]) for j, n in enumerate(names)])
        if dprobs is not None:
            dprobs = np.stack([apply_temperature(dprobs[j], temperatures[n]) for j, n in enumerate(names)])
        report["temperatures"] = temperatures
    weights = inputs.given_weights
    if weights is not None and len(weights) != len(names):
        raise UserError(
            f"{len(weights)} weight(s) for {len(names)} input(s)",
            field="weights",
            hint="one weight per input, in the order of the inputs",
        )
    priority_names = inputs.given_priority
    all_names, all_dvotes = list(names), dvotes
    if job.select:
        sel_method = "soft" if method == "soft" else "weighted"
        sel = caruana_select(
            dvotes, dgold, k, probs=dprobs, method=sel_method, rounds=job.rounds, init=job.init
        )
        cv = cross_validate_selection(
            dvotes,
            dgold,
            k,
            probs=dprobs,
            method=sel_method,
            rounds=job.rounds,
            init=job.init,
            folds=job.folds,
            seed=job.seed,
        )
        by_acc = _priority_by_accuracy(names, dvotes, dgold)
        write_members(
            job.select,
            names,
            sel,
            sel_method,
            priority=by_acc,
            cv=cv,
            temperatures=temperatures,
            gold=job.gold,
            overwrite=job.overwrite,
        )
        chosen = ", ".join(f"{names[j]} x{int(c)}" for j, c in enumerate(sel.counts) if c)
        echo(f"ensemble selection ({sel_method}, {job.rounds} rounds): {chosen}")
        if sel.pruned:
            echo(
                f"  pruned (removing them did not lower dev accuracy): "
                f"{', '.join(names[j] for j in sel.pruned)}"
            )
        echo(
            f"  dev accuracy in-sample {sel.score:.4f}; {cv['folds']}-fold cross-validated "
            f"{cv['selection']:.4f} (best single model picked the same way: "
            f"{cv['best_single']:.4f})"
        )
        echo(f"  wrote {job.select}")
        report["selection"] = {
            "counts": {names[j]: int(c) for j, c in enumerate(sel.counts)},
            "in_sample": sel.score,
            "cross_validation": cv,
        }
        keep = [j for j, c in enumerate(sel.counts) if c]
        weights = [float(sel.counts[j]) for j in keep]
        names = [names[j] for j in keep]
        votes = votes[keep]
        probs = None if probs is None else probs[keep]
        dvotes = dvotes[keep]
        dprobs = None if dprobs is None else dprobs[keep]
        method = sel_method
        priority_names = [n for n in (job.priority or by_acc) if n in names]
    elif weights is None and dvotes is not None and method in ("hard", "weighted"):
        weights = [float((dvotes[j] == dgold).mean()) for j in range(len(names))]
        echo(
            "weights = dev accuracy"
            + (" (used to break ties)" if method == "hard" else "")
            + ": "
            + ", ".join(f"{n} {w:.4f}" for n, w in zip(names, weights, strict=False))
        )
    if method == "weighted" and weights is None:
        raise UserError("weighted voting needs --weights or --gold", field="weights")
    priority = resolve_priority(names, priority_names)
    outcome = vote_choices(votes, k, method, weights=weights, probs=probs, priority=priority)
    if outcome.estimate is not None:
        est = outcome.estimate
        acc = est.accuracy
        echo(
            f"Dawid-Skene reliability without gold ({est.iterations} EM iterations from the "
            "majority), estimated accuracy: "
            + ", ".join(f"{n} {a:.4f}" for n, a in zip(names, acc, strict=True))
        )
        report["dawid_skene"] = {n: float(a) for n, a in zip(names, acc, strict=True)}
    counts = outcome.tie_counts()
    echo(
        f"{method} voting: {len(outcome.ties)} of {len(ids)} ids were ties"
        + (" (" + ", ".join(f"{v} by {r}" for r, v in sorted(counts.items())) + ")" if counts else "")
    )
    for line in describe_ties(outcome, ids, labels, names):
        echo(line)
    report["method"], report["weights"] = method, weights
    report["ties"] = [
        {
            "id": ids[t.index],
            "options": [labels[o] for o in t.options],
            "rule": t.rule,
            "winner": None if t.winner is None else labels[t.winner],
            "detail": t.detail if t.rule != "priority" else names[t.member],
        }
        for t in outcome.ties
    ]
    raise_if_unresolved(outcome, ids, labels)
    if dvotes is not None:
        if dev is results:
            dpred = outcome.pred
        else:
            d_out = vote_choices(dvotes, k, method, weights=weights, probs=dprobs, priority=priority)
            dpred = d_out.pred.copy()
            for t in d_out.ties:
                if t.winner is None:
                    dpred[t.index] = -1  # unresolved on dev: counted wrong
        diag = choice_diagnostics(all_names, all_dvotes, dgold, dpred)
        echo(format_choice_diagnostics(diag))
        report["dev"] = diag
    return {ids[i]: labels[int(p)] for i, p in enumerate(outcome.pred)}


def _stack_choice(
    inputs: VoteInputs,
    votes: np.ndarray,
    probs: np.ndarray,
    dvotes: np.ndarray,
    dprobs: np.ndarray,
    dgold: np.ndarray,
) -> dict[str, str]:
    """``--method stack``: fit the meta-learner on dev, report its cross-validated dev accuracy
    beside the plain votes', and answer the inputs with the model fitted on all of dev."""
    job, task, echo, report = inputs.job, inputs.task, inputs.echo, inputs.report
    names, ids, labels, k = inputs.names, inputs.ids, task.output_labels, task.n_choices
    check_stack_dev(dgold, labels, job.folds)
    priority = resolve_priority(names, inputs.given_priority)
    model = fit_stack(dvotes, dprobs, dgold, folds=job.folds, seed=job.seed)
    cv = cross_validate_stack(dvotes, dprobs, dgold, folds=job.folds, seed=job.seed, priority=priority)
    singles = (dvotes == dgold).mean(axis=1)
    best = int(np.argmax(singles))
    # The plain votes as --method hard / soft with --gold would run them: they fit nothing on
    # dev (beyond hard voting's tie-break weights), so their dev accuracy is already held-out.
    plain = {
        "hard": vote_choices(dvotes, k, "hard", weights=singles.tolist(), probs=dprobs, priority=priority),
        "soft": vote_choices(dvotes, k, "soft", probs=dprobs, priority=priority),
    }
    plain_acc = {m: _accuracy(o, dgold) for m, o in plain.items()}
    echo(format_stack(names, labels, model, len(dgold), job.folds))
    width = len("best single")
    echo(
        f"dev accuracy ({len(dgold)} items; the stack's pooled over its {cv.folds} held-out folds, "
        f"seed {cv.seed}):\n"
        f"  {'stack':<{width}}  {cv.accuracy:.4f}\n"
        f"  {'hard vote':<{width}}  {plain_acc['hard']:.4f}\n"
        f"  {'soft vote':<{width}}  {plain_acc['soft']:.4f}\n"
        f"  {'best single':<{width}}  {singles[best]:.4f} ({names[best]}; picked on the training "
        f"folds instead: {cv.best_single:.4f})"
    )
    scores, pred, ties = stack_predict(model, votes, probs, priority)
    outcome = VoteOutcome(pred, scores, ties)
    echo(f"stack: {len(ties)} of {len(ids)} ids were ties")
    for line in describe_ties(outcome, ids, labels, names):
        echo(line)
    raise_if_unresolved(outcome, ids, labels)
    diag = choice_diagnostics(names, dvotes, dgold, cv.pred)
    diag["ensemble_note"] = f"{cv.folds}-fold cross-validated"
    echo(format_choice_diagnostics(diag))
    report["method"], report["weights"] = "stack", None
    report["ties"] = [
        {
            "id": ids[t.index],
            "options": [labels[o] for o in t.options],
            "rule": t.rule,
            "winner": labels[t.winner],
            "detail": t.detail if t.rule != "priority" else names[t.member],
        }
        for t in ties
    ]
    report["stack"] = stack_report(
        names, labels, model, cv, {**plain_acc, "best_single": (names[best], float(singles[best]))}
    )
    report["dev"] = diag
    return {ids[i]: labels[int(p)] for i, p in enumerate(pred)}


def _accuracy(outcome: VoteOutcome, gold: np.ndarray) -> float:
    """The share of items voted right; a tie no rule broke counts wrong."""
    pred = outcome.pred.copy()
    for t in outcome.ties:
        if t.winner is None:
            pred[t.index] = -1
    return float((pred == gold).mean())


def _vote_generate(inputs: VoteInputs) -> dict[str, Any]:
    """Combine a generate task by MBR over its outputs' text; the chosen output per id."""
    job, task, echo, report = inputs.job, inputs.task, inputs.echo, inputs.report
    results, names, ids, dev = inputs.results, inputs.names, inputs.ids, inputs.dev
    if job.method not in (None, "hard", "weighted") or job.select or job.calibrate:
        raise UserError(
            f"{task.name} is combined by MBR: --method soft, dawid_skene and stack, --select and "
            "--calibrate apply to choice tasks",
            field="method",
        )
    weights = inputs.given_weights
    if weights is not None and len(weights) != len(names):
        raise UserError(f"{len(weights)} weight(s) for {len(names)} input(s)", field="weights")
    if len(names) < 3 and not job.priority:
        echo("note: with two candidates MBR is always a tie; --priority decides")
    priority = resolve_priority(names, inputs.given_priority)
    sim_name = "bertscore" if job.bertscore_model else "rouge1"
    sim = bertscore_similarity(job.bertscore_model) if job.bertscore_model else rouge1_similarity
    candidates = [[r.outputs[i] for r in results] for i in ids]
    texts = [[task.output_text(o) for o in row] for row in candidates]
    outcome = mbr_choose(texts, sim, weights=weights, priority=priority)
    echo(f"MBR by {sim_name}: {len(outcome.ties)} of {len(ids)} ids were ties")
    for line in describe_mbr_ties(outcome, ids, names):
        echo(line)
    bad = [t for t in outcome.ties if t.winner is None]
    if bad:
        raise UserError(
            f"{len(bad)} MBR tie(s) between different outputs, e.g. {ids[bad[0].index]}",
            field="priority",
            hint="pass --priority NAME ... (every model, most trusted first) or --weights",
        )
    wins = Counter(j for w in outcome.winners for j in w)
    sole = Counter(w[0] for w in outcome.winners if len(w) == 1)
    width = max(len(n) for n in names)
    echo(f"{'model':<{width}}  ids won  (alone)  mean similarity to the others")
    for j, n in enumerate(names):
        echo(f"{n:<{width}}  {wins[j]:7d}  {sole[j]:7d}  {outcome.scores[:, j].mean():.4f}")
    shown = min(len(ids), 10)
    echo(f"winner per id (first {shown}; all in --report):")
    for i in range(shown):
        echo(f"  {ids[i]}: {', '.join(names[j] for j in outcome.winners[i])}")
    report["similarity"] = sim_name
    report["winners"] = {ids[i]: [names[j] for j in w] for i, w in enumerate(outcome.winners)}
    report["ties"] = [
        {"id": ids[t.index], "rule": t.rule, "winner": None if t.winner is None else names[t.winner]}
        for t in outcome.ties
    ]
    chosen = [candidates[i][outcome.choice[i]] for i in range(len(ids))]
    if dev is not None:
        dcands = [[task.output_text(r.outputs[i]) for r in dev] for i in inputs.dev_ids]
        if dev is results:
            dchosen = [task.output_text(chosen[ids.index(i)]) for i in inputs.dev_ids]
        else:
            d_out = mbr_choose(dcands, sim, weights=weights, priority=priority)
            dchosen = [c[j] if j >= 0 else c[0] for c, j in zip(dcands, d_out.choice, strict=False)]
        refs = [task.output_text(task.reference(it)) for it in inputs.gold_items]
        diag = generate_diagnostics(names, dcands, refs, dchosen, bertscore_model=job.bertscore_model)
        echo(format_generate_diagnostics(diag))
        report["dev"] = diag
    return {ids[i]: chosen[i] for i in range(len(ids))}


def _combine_fields(inputs: VoteInputs) -> dict[str, Any]:
    """Combine a task whose outputs merge field by field (``combiner == "fields"``): the task
    builds one output per item from all the members' outputs and weights."""
    job, task, echo = inputs.job, inputs.task, inputs.echo
    if job.method not in (None, "hard", "weighted") or job.select or job.calibrate:
        raise UserError(
            f"{task.name} is combined field by field: --method soft, dawid_skene and stack, "
            "--select and --calibrate apply to choice tasks",
            field="method",
        )
    weights = inputs.given_weights or [1.0] * len(inputs.names)
    if len(weights) != len(inputs.names):
        raise UserError(f"{len(weights)} weight(s) for {len(inputs.names)} input(s)", field="weights")
    combined = {
        it.id: task.combine_fields(it, [r.outputs[it.id] for r in inputs.results], list(weights))
        for it in inputs.items
    }
    echo(f"{task.name}: {len(combined)} outputs combined field by field from {len(inputs.names)} models")
    inputs.report["combined"] = "fields"
    if inputs.gold_items is not None:
        dev_out = (
            combined
            if inputs.dev is inputs.results
            else {
                it.id: task.combine_fields(it, [r.outputs[it.id] for r in inputs.dev], list(weights))
                for it in inputs.gold_items
            }
        )
        scores = {
            n: task.dev_evaluate(inputs.gold_items, r.outputs)[task.dev_metric]
            for n, r in zip(inputs.names, inputs.dev, strict=True)
        }
        scores["combined"] = task.dev_evaluate(inputs.gold_items, dev_out)[task.dev_metric]
        echo(f"dev {task.dev_metric}: " + ", ".join(f"{n} {v:.4f}" for n, v in scores.items()))
        inputs.report["dev"] = {task.dev_metric: scores}
    return combined
