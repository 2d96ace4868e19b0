"""Reading and checking the results files to combine, and naming their models.

The inputs are results files (:mod:`malpyeong.inference.results`): ``NAME.json`` in submission layout
plus, when present, ``NAME.sidecar.jsonl`` with per-option probabilities (choice) or the raw
generation (generate). A model's *name* is its results file's stem. Every check runs before
anything is combined, and every problem is reported at once: nothing is voted on a subset.

The inputs may be what a shell glob gives for a folder written by ``run/test.py``
(``results/test/*``): sidecars among them are recognised and attached to their results file
(they are read with it anyway), never read as inputs of their own. A folder among the inputs is
refused with a one-line hint rather than expanded: ``results/*`` over a tree of dev and test
folders would otherwise mix splits silently.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from malpyeong.errors import UserError, UserErrors
from malpyeong.inference.results import Results, is_partial, is_sidecar, read_results, results_of
from malpyeong.tasks import Task, get_task, task_names

MAX_ERRORS_PER_FILE = 10


def results_inputs(paths: Sequence[str | os.PathLike], option: str = "inputs") -> list[str]:
    """The results files among ``paths``, in their order: sidecars dropped after checking that
    their results file is there too; folders, unfinished predictions and a file given twice
    refused (one line each)."""
    given = [str(p) for p in paths]
    results = [p for p in given if not is_sidecar(p) and not is_partial(p)]
    errors: list[UserError] = []
    for p in given:
        path = Path(p)
        if path.is_dir():
            errors.append(
                UserError(
                    "is a folder, not a results file",
                    file=p,
                    field=option,
                    hint=f"give the files in it, e.g. {path / '*'} (sidecars "
                    "are recognised); folders are not expanded",
                )
            )
        elif is_partial(path):
            errors.append(
                UserError(
                    "an unfinished prediction (the partial sidecar of a run/test.py that stopped)",
                    file=p,
                    field=option,
                    hint="rerun its run/test.py command to finish it, or leave it out",
                )
            )
        elif is_sidecar(path) and not any(Path(r) == results_of(path) for r in results):
            errors.append(
                UserError(
                    f"a sidecar without its results file {results_of(path)} among the inputs",
                    file=p,
                    field=option,
                    hint="give the results file (NAME.json); its sidecar is read with it",
                )
            )
    seen: set[Path] = set()
    for p in results:
        key = Path(p).resolve()
        if key in seen:
            errors.append(UserError("given twice", file=p, field=option))
        seen.add(key)
    if errors:
        raise UserErrors(errors)
    return [p for p in results if not Path(p).is_dir()]


def read_all_results(paths: Sequence[str | os.PathLike]) -> list[Results]:
    """Read every results file, reporting all unreadable ones at once."""
    errors: list[UserError] = []
    out = []
    for p in paths:
        try:
            out.append(read_results(p))
        except UserErrors as errs:
            errors.extend(errs.errors)
        except UserError as err:
            errors.append(err)
    if errors:
        raise UserErrors(errors)
    return out


def results_by_name(
    names: Sequence[str], results: Sequence[Results], wanted: Sequence[str], what: str
) -> list[Results]:
    """The results of the ``wanted`` models, in that order (``what``: the option, for errors)."""
    index = {n: r for n, r in zip(names, results, strict=False)}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise UserError(
            f"no {what} for model(s) {', '.join(missing)}",
            field=what,
            hint=f"{what} are matched by file name; have: {', '.join(names)}",
        )
    return [index[w] for w in wanted]


def _examples(ids: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(list(ids)[:n])
    return shown + (f", ... ({len(ids) - n} more)" if len(ids) > n else "")


def member_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Each input's name: its file stem, or its path when two stems collide."""
    stems = [Path(p).stem for p in paths]
    counts = Counter(stems)
    return [s if counts[s] == 1 else str(p) for s, p in zip(stems, paths, strict=False)]


def infer_task(results: Sequence[Results]) -> Task:
    """The task named in the sidecar headers, else the one registered task whose outputs these
    are (at least half valid, so a file with a few bad outputs is still checked as its task;
    a choice task's labels are more specific than free text, so it wins over a generate task
    that would also accept them)."""
    named = {r.meta.get("task") for r in results if r.meta.get("task")}
    if len(named) > 1:
        raise UserError(
            f"the inputs come from different tasks: {', '.join(sorted(named))}",
            field="task",
            hint="vote files of one task at a time",
        )
    if named:
        return get_task(named.pop())
    values = [v for r in results for v in r.outputs.values()]
    fits = [
        t
        for t in (get_task(n) for n in task_names())
        if values and sum(t.check_output(v) is None for v in values) * 2 >= len(values)
    ]
    choice = [t for t in fits if t.has_options]
    if len(choice) == 1:
        return choice[0]
    if len(fits) == 1:
        return fits[0]
    raise UserError(
        "cannot tell the task from the outputs (no sidecar names it)"
        + (f": they fit {', '.join(t.name for t in fits)}" if fits else ""),
        field="task",
        hint=f"pass --task ({', '.join(task_names())})",
    )


def check_results(
    results: Sequence[Results], task: Task, expected: tuple[str, Sequence[str]] | None = None
) -> None:
    """Every check that must pass before voting; raise ``UserErrors`` listing every problem.

    Per file: no duplicate ids, every output valid for ``task``, a sidecar (when present) with
    valid probabilities for every id. Across files: the same id set as ``expected`` (a
    ``(file name, ids)`` pair: the test or gold file) or else as the first input. A mismatch
    names the file and the ids that differ; nothing is ever voted on a subset.
    """
    errors: list[UserError] = []
    for r in results:
        name = str(r.path)
        problems: list[UserError] = []
        for dup, n in Counter(r.ids).items():
            if n > 1:
                problems.append(
                    UserError(f"duplicate id ({n} items share it)", file=name, item=dup, field="id")
                )
        for i in r.ids:
            problem = task.check_output(r.outputs.get(i))
            if problem:
                problems.append(UserError(problem, file=name, item=i, field="output"))
        if r.probs is not None and task.has_options:
            side = str(r.path.with_name(r.path.stem + ".sidecar.jsonl"))
            missing = [i for i in r.ids if i not in r.probs]
            if missing:
                problems.append(
                    UserError(
                        f"sidecar has no probabilities for {len(missing)} id(s): {_examples(missing)}",
                        file=side,
                        field="probs",
                        hint="the sidecar is from another run; predict again or delete it",
                    )
                )
            for i in r.ids:
                p = r.probs.get(i)
                if p is None:
                    continue
                if len(p) != task.n_choices or not all(math.isfinite(x) and x >= 0 for x in p) or sum(p) <= 0:
                    problems.append(
                        UserError(
                            f"probs must be {task.n_choices} non-negative numbers, got {p}",
                            file=side,
                            item=i,
                            field="probs",
                        )
                    )
        if len(problems) > MAX_ERRORS_PER_FILE:
            more = len(problems) - MAX_ERRORS_PER_FILE
            problems = problems[:MAX_ERRORS_PER_FILE] + [
                UserError(f"... and {more} more problem(s)", file=name)
            ]
        errors.extend(problems)
    ref_name, ref_ids = expected if expected else (str(results[0].path), results[0].ids)
    ref = set(ref_ids)
    for r in results:
        ids = set(r.ids)
        if ids == ref:
            continue
        missing = sorted(ref - ids)
        extra = sorted(ids - ref)
        parts = []
        if missing:
            parts.append(f"{len(missing)} id(s) of {ref_name} missing: {_examples(missing)}")
        if extra:
            parts.append(f"{len(extra)} id(s) not in {ref_name}: {_examples(extra)}")
        errors.append(
            UserError(
                "; ".join(parts),
                file=str(r.path),
                field="id",
                hint="every input must predict exactly the same items",
            )
        )
    if errors:
        raise UserErrors(errors)


def vote_matrix(results: Sequence[Results], ids: Sequence[str], task: Task) -> np.ndarray:
    """``(models, items)`` array of each model's chosen option index."""
    return np.array(
        [[task.index_of_output(r.outputs[i]) for i in ids] for r in results], dtype=np.int64
    ).reshape(len(results), len(ids))


def prob_tensor(results: Sequence[Results], ids: Sequence[str], k: int) -> np.ndarray | None:
    """``(models, items, options)`` probabilities (renormalised), or None unless all have them."""
    if any(r.probs is None for r in results):
        return None
    p = np.array([[r.probs[i] for i in ids] for r in results], dtype=np.float64)
    p = p.reshape(len(results), len(ids), k)
    return p / p.sum(axis=2, keepdims=True)


def resolve_priority(names: Sequence[str], given: Sequence[str] | None) -> list[int] | None:
    """``--priority`` (names or paths of the inputs, most trusted first) as member indices."""
    if not given:
        return None
    index = {n: i for i, n in enumerate(names)}
    order, unknown = [], []
    for g in given:
        key = g if g in index else Path(g).stem
        if key not in index:
            unknown.append(g)
        elif index[key] not in order:
            order.append(index[key])
    if unknown:
        raise UserError(
            f"--priority names unknown model(s): {', '.join(unknown)}",
            field="priority",
            hint=f"the inputs are: {', '.join(names)}",
        )
    missing = [names[i] for i in range(len(names)) if i not in order]
    if missing:
        raise UserError(f"--priority must rank every input; missing: {', '.join(missing)}", field="priority")
    return order
