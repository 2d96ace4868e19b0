"""An ensemble entry end to end: train every member's recipe, predict dev and test, score each
member on dev, vote, check the submission. What ``run/ensemble_entry.py`` runs.

A published entry is a folder of recipes (one per member, e.g. ``resource/configs/cci/malbbungchi/``).
Its output folder::

    runs/<member>/          each member's run folder (the recipe's output_dir is replaced)
    dev/<member>.json       its dev predictions (+ sidecar); test/<member>.json its test predictions
    submission.json         the vote over the test predictions, checked as the official scorer does
    dev_ensemble.json       the same vote over the dev predictions (the table's last row)
    vote_report.json        ties, weights and dev diagnostics of the vote
    members.json            the printed table

Every step resumes: a member whose run folder is finished is not trained again, one with
checkpoints continues from the last, and predictions continue item by item; the vote and its
files are derived from the predictions and recomputed on every run. The steps are the library's
own (``train_sft``, ``run_prediction``, ``run_vote``, ``check_submission``), called in one
process, so a member is trained and answered exactly as ``run/train.py`` and ``run/test.py`` do.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from malpyeong.data import check_submission, load_items
from malpyeong.device import cuda_available
from malpyeong.ensemble import VoteJob, run_vote
from malpyeong.errors import UserError
from malpyeong.inference.predict import PredictionJob
from malpyeong.inference.results import partial_paths, read_results, sidecar_path
from malpyeong.io import atomic_write_json, check_distinct, read_yaml
from malpyeong.models.backbones import REGISTRY, get_backbone, non_commercial
from malpyeong.models.runfolder import complete_checkpoints, is_finished_run, is_model
from malpyeong.models.tiny import FAMILIES, build_tiny_model
from malpyeong.tasks import DEFAULT_TASK, Task, TaskItem, get_task
from malpyeong.training import sft_parser, train_sft

log = logging.getLogger(__name__)

TINY = "tiny"  # --model_override tiny=DIR: every member on a tiny model of its family


@dataclass
class EntryJob:
    """What ``run/ensemble_entry.py`` was asked to do (see its --help)."""

    recipes: str
    test: str
    out: str
    dev: str | None = None
    method: str | None = None  # voting method; None: the task's default (hard voting for CCI)
    model_override: Sequence[str] = ()  # "tiny=DIR" or "MODEL=PATH"
    set: Sequence[str] = ()  # "KEY=VALUE" recipe overrides for every member
    batch_size: int | None = None
    progress: bool = True


@dataclass
class Member:
    """One recipe of the entry."""

    name: str  # the recipe file's stem
    recipe: Path
    model: str  # the recipe's model: its licence is the member's
    method: str
    weights: str  # what is trained: the model, or its stand-in from --model_override
    run_dir: Path
    state: str = "new"  # new, restart (killed before a checkpoint), resume, trained
    parsed: tuple = field(default=(), repr=False)  # (script, model, trainer) arguments
    dev_score: float | None = None

    @property
    def licence(self) -> str:
        entry = REGISTRY.get(self.model)
        return entry.licence if entry else "unknown (not in the registry)"


def check_entry_paths(job: EntryJob) -> None:
    """Before any work: the output folder neither is nor sits inside the recipes folder (the
    entry's own configs stay as the user wrote them, and a rerun reads them again), and holds
    none of the inputs (its predictions would replace them)."""
    out, recipes = Path(job.out).resolve(), Path(job.recipes).resolve()
    if out == recipes or recipes in out.parents:
        raise UserError(
            "--out is inside the --recipes folder",
            file=str(job.out),
            field="out",
            hint="write the entry elsewhere",
        )
    check_distinct(
        [("--out", job.out)],
        [("--recipes", job.recipes), ("--test", job.test), ("--dev", job.dev)],
        folders=("--out",),
    )


def find_recipes(folder: str | os.PathLike) -> list[Path]:
    """The entry's recipes: every ``*.yaml`` in ``folder``, in name order."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError("not a folder of recipes", file=str(folder), field="recipes")
    found = sorted(root.glob("*.yaml"))
    if not found:
        raise UserError("no *.yaml recipe in this folder", file=str(folder), field="recipes")
    return found


def read_recipe(path: Path) -> dict:
    data = read_yaml(path, field="recipes")
    if not isinstance(data, dict) or not data.get("model"):
        raise UserError("a recipe must be a mapping with a 'model'", file=str(path))
    return data


def parse_overrides(values: Sequence[str]) -> tuple[Path | None, dict[str, str]]:
    """``tiny=DIR`` (a tiny stand-in of each member's family, built in DIR when missing) and
    ``MODEL=PATH`` (that model replaced by PATH)."""
    tiny: Path | None = None
    exact: dict[str, str] = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep or not key or not path:
            raise UserError(
                f"'{value}' is not NAME=PATH",
                field="model_override",
                hint="tiny=DIR, or a recipe's model id =PATH",
            )
        if key == TINY:
            tiny = Path(path)
        else:
            exact[key] = path
    return tiny, exact


def stand_in(model: str, tiny: Path) -> str:
    """A tiny random model of ``model``'s architecture family (built once in ``tiny``)."""
    family = get_backbone(model).family
    if family not in FAMILIES:
        raise UserError(
            f"no tiny model of family '{family}' (for {model})",
            field="model_override",
            hint=f"tiny families: {', '.join(FAMILIES)}; give {model}=PATH instead",
        )
    folder = tiny / family
    if not is_model(folder):
        build_tiny_model(family, folder)
    return str(folder)


def set_flags(values: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` overrides as the recipe parser's ``--KEY VALUE`` flags (a list value is
    given space-separated: ``lora_target_modules=q_proj v_proj``)."""
    flags: list[str] = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise UserError(f"'{value}' is not KEY=VALUE", field="set")
        flags += [f"--{key}", *rest.split()]
    return flags


def run_state(run_dir: Path) -> str:
    """trained (finished), resume (has a complete checkpoint), restart (stopped before its first
    one) or new."""
    if is_finished_run(run_dir):
        return "trained"
    if complete_checkpoints(run_dir)[0]:
        return "resume"
    if run_dir.is_dir() and any(run_dir.iterdir()):
        return "restart"
    return "new"


def drop_partial_checkpoints(run_dir: Path) -> list[str]:
    """Remove the checkpoints a kill left half-written (:func:`~malpyeong.models.runfolder.
    complete_checkpoints`: the trainer writes its state last), so none is resumed from."""
    dropped = []
    for c in complete_checkpoints(run_dir)[1]:
        shutil.rmtree(c)
        dropped.append(c.name)
    return sorted(dropped)


def plan_members(job: EntryJob) -> list[Member]:
    """Every member, its state and its parsed recipe: every recipe problem is reported before
    anything is trained."""
    tiny, exact = parse_overrides(job.model_override)
    flags = set_flags(job.set)
    members = []
    for path in find_recipes(job.recipes):
        data = read_recipe(path)
        model = str(data["model"])
        weights = exact.get(model) or (stand_in(model, tiny) if tiny else model)
        run_dir = Path(job.out) / "runs" / path.stem
        member = Member(
            path.stem,
            path,
            model,
            str(data.get("method", "lora")),
            weights,
            run_dir,
            state=run_state(run_dir),
        )
        extra = {"resume": ["--resume"], "restart": ["--overwrite"]}.get(member.state, [])
        # a fresh parser per recipe: a parser keeps the values of a recipe it parsed as defaults
        member.parsed = sft_parser().parse(
            ["--config", str(path), "--model", weights, "--output_dir", str(run_dir), *flags, *extra]
        )
        members.append(member)
    tasks = {m.parsed[0].task for m in members}
    if len(tasks) > 1:
        raise UserError(
            f"the recipes are for different tasks: {', '.join(sorted(tasks))}",
            file=str(job.recipes),
            field="task",
        )
    return members


def train_member(member: Member) -> None:
    """Train (or resume) one member unless its run folder is finished."""
    if member.state == "trained":
        return
    if member.state == "resume":
        for name in drop_partial_checkpoints(member.run_dir):
            log.info("%s: removed %s, written only in part when the run stopped", member.name, name)
    script, model_args, config = member.parsed
    train_sft(script, model_args, config)
    _release_memory()


def predict_member(
    member: Member, task: Task, items: list[TaskItem], output: Path, *, batch_size: int | None, progress: bool
) -> str:
    """The member's predictions of ``items`` into ``output`` (resumed item by item)."""
    side = sidecar_path(output)
    if output.is_file() and side.is_file():
        return "done"
    if side.is_file() and partial_paths(output):
        side.unlink()  # killed between the two final files: the partial rows rebuild both
    job = PredictionJob(  # the run's prompt and max_length, as run/test.py
        task,
        str(member.run_dir),
        output=output,
        batch_size=batch_size,
        model_name=member.name,
        progress=progress,
    )
    summary = job.run(items)
    _release_memory()
    return f"{summary.n} items ({summary.resumed} resumed)"


def dev_score(task: Task, gold: list, path: Path) -> float:
    """The task's quick dev metric of a results file against the gold items."""
    outputs = read_results(path).outputs
    return float(task.dev_evaluate(gold, outputs)[task.dev_metric])


def licence_warnings(members: Sequence[Member]) -> list[str]:
    lines = []
    for m in members:
        entry = REGISTRY.get(m.model)
        if entry is not None and non_commercial(entry):
            lines.append(
                f"warning: member {m.name} ({m.model}) is licensed {entry.licence}: "
                "non-commercial use only, and so is a submission voted from it"
            )
    return lines


def format_table(
    members: Sequence[Member], task: Task, method: str, ensemble: float, runs: dict[str, str]
) -> str:
    metric = f"dev {task.dev_metric}"
    head = ("member", "model", "method", "licence", "this run", metric)
    rows = [head] + [
        (m.name, m.model, m.method, m.licence, runs.get(m.name, ""), f"{m.dev_score:.4f}") for m in members
    ]
    rows.append((f"ensemble ({method} vote)", f"{len(members)} members", "", "", "", f"{ensemble:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def run_entry(job: EntryJob, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, predict, score, vote and check (see the module docstring); the table's data."""
    check_entry_paths(job)
    members = plan_members(job)
    task = get_task(members[0].parsed[0].task or DEFAULT_TASK)
    dev_files = {m.parsed[0].dev_file for m in members}
    dev = job.dev or (dev_files.pop() if len(dev_files) == 1 else None)
    if not dev:
        raise UserError(
            "the members name no single dev file",
            field="dev",
            hint="pass --dev DEV.json (the file every member is scored on)",
        )
    test_items = load_items(job.test, task)
    dev_items = load_items(dev, task, require_output=True)
    for line in licence_warnings(members):
        echo(line)
    out = Path(job.out)
    runs: dict[str, str] = {}
    for i, m in enumerate(members, 1):
        shown = m.model if m.weights == m.model else f"{m.model} -> {m.weights}"
        verb = {
            "trained": "already trained",
            "resume": "resuming from its last checkpoint",
            "restart": "restarting (stopped before its first checkpoint)",
        }.get(m.state, "training")
        echo(f"== member {i}/{len(members)} {m.name} ({shown}): {verb}")
        train_member(m)
        runs[m.name] = {"trained": "skipped", "resume": "resumed"}.get(m.state, "trained")
        for split, items in (("dev", dev_items), ("test", test_items)):
            path = out / split / f"{m.name}.json"
            done = predict_member(m, task, items, path, batch_size=job.batch_size, progress=job.progress)
            echo(f"   {split} predictions: {path} ({done})")
        m.dev_score = dev_score(task, dev_items, out / "dev" / f"{m.name}.json")
        echo(f"   dev {task.dev_metric} {m.dev_score:.4f}")
    names = [m.name for m in members]
    test_files = [str(out / "test" / f"{n}.json") for n in names]
    dev_files_out = [str(out / "dev" / f"{n}.json") for n in names]
    submission = out / "submission.json"
    echo("== vote")
    report = run_vote(
        VoteJob(
            inputs=test_files,
            output=str(submission),
            task=task.name,
            method=job.method,
            gold=dev,
            dev_results=dev_files_out,
            test=job.test,
            report=str(out / "vote_report.json"),
            overwrite=True,
        ),
        echo=echo,
    )
    method = report.get("method") or job.method or "default"
    run_vote(
        VoteJob(
            inputs=dev_files_out,
            output=str(out / "dev_ensemble.json"),
            task=task.name,
            method=job.method,
            gold=dev,
            overwrite=True,
        ),
        echo=lambda _line: None,
    )
    ensemble = dev_score(task, dev_items, out / "dev_ensemble.json")
    n = check_submission(submission, job.test, task)
    table = format_table(members, task, method, ensemble, runs)
    echo(table)
    echo(f"{submission}: valid {task.name} submission, {n} items")
    for line in licence_warnings(members):
        echo(line)
    data = {
        "task": task.name,
        "dev": dev,
        "test": job.test,
        "method": method,
        "submission": str(submission),
        "ensemble_dev": ensemble,
        "members": [
            {
                "name": m.name,
                "model": m.model,
                "weights": m.weights,
                "method": m.method,
                "licence": m.licence,
                "this_run": runs[m.name],
                f"dev_{task.dev_metric}": m.dev_score,
            }
            for m in members
        ],
    }
    atomic_write_json(out / "members.json", data)
    return data


def _release_memory() -> None:
    gc.collect()
    if cuda_available():
        import torch

        torch.cuda.empty_cache()


__all__ = [
    "EntryJob",
    "Member",
    "find_recipes",
    "format_table",
    "licence_warnings",
    "drop_partial_checkpoints",
    "parse_overrides",
    "plan_members",
    "predict_member",
    "run_entry",
    "run_state",
    "set_flags",
    "stand_in",
    "train_member",
]
