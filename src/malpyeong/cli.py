"""Shared entry-point plumbing for the scripts in run/, orpo/, ensemble/ and eda/."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from malpyeong.errors import UserError, UserErrors
from malpyeong.tasks import TASKS, Task, task_names, tasks_help

EXIT_USER_ERROR = 2


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; a ``UserError`` becomes one line per problem on stderr and exit 2."""
    logging.basicConfig(level=os.environ.get("MALPYEONG_LOG", "INFO"),
                        format="%(levelname)s %(name)s: %(message)s")
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and \
            os.environ.get("MASTER_ADDR") and not os.environ.get("WORLD_SIZE"):
        print("note: `accelerate launch --cpu --num_processes N` starts one process here (its CPU "
              "launcher needs mpirun); for N processes use --config_file "
              "resource/configs/accelerate/cpu_ddp.yaml", file=sys.stderr)
    try:
        code = main(argv)
    except UserErrors as errs:
        for line in errs.lines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UserError as err:
        print(f"error: {err.line()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # the reader went away (`... | head`): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - CUDA OOM is a user-fixable condition
        if type(err).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(err):
            print("error: CUDA out of memory: lower --per_device_train_batch_size / --batch_size "
                  "or --max_length, or use --method qlora", file=sys.stderr)
            return EXIT_USER_ERROR
        raise
    return int(code or 0)


def task_argument(parser: argparse.ArgumentParser, *, required: bool = True,
                  extra: tuple[str, ...] = (), help: str | None = None) -> None:
    """``--task`` with the registered tasks as choices (plus ``extra``, e.g. ``text``)."""
    parser.add_argument("--task", required=required, choices=[*task_names(), *extra],
                        help=help or tasks_help())


def metric_options() -> dict[str, tuple[str, bool, list[str]]]:
    """Every registered task's evaluate options: name -> (help, many, the tasks offering it)."""
    out: dict[str, tuple[str, bool, list[str]]] = {}
    for name in sorted(TASKS):
        for opt, spec in TASKS[name].evaluate_options.items():
            help_, many, owners = out.get(opt, (spec.help, spec.many, []))
            out[opt] = (help_, many, [*owners, name])
    return out


def add_metric_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """``--OPTION`` for every task's evaluate options (each says which tasks take it)."""
    g = parser.add_argument_group("metric options (each for the tasks named)")
    for opt, (help_, many, owners) in metric_options().items():
        if opt not in skip:
            g.add_argument(f"--{opt}", nargs="*" if many else None, default=None,
                           help=f"{', '.join(owners)}: {help_}")


def given_metric_options(args: argparse.Namespace, task: Task) -> dict:
    """The metric options given on the command line; one that ``task`` does not take is an
    error naming the ones it does."""
    given = {opt: getattr(args, opt) for opt in metric_options()
             if getattr(args, opt, None) is not None}
    foreign = [f"--{opt}" for opt in given if opt not in task.evaluate_options]
    if foreign:
        raise UserError(f"{', '.join(foreign)} do not apply to task {task.name}", field="task",
                        hint="options: " + (", ".join(f"--{o}" for o in task.evaluate_options)
                                            or "none"))
    return given


def read_system_prompt(path: str | None) -> str | None:
    """The exact system prompt in ``path`` (``--system_prompt_file``), or None without one."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", file=path, field="system_prompt_file")
    try:
        text = p.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", file=path, field="system_prompt_file") from None
    if not text:
        raise UserError("empty file", file=path, field="system_prompt_file")
    return text
