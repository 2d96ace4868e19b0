"""Shared entry-point plumbing for the scripts in run/, orpo/, ensemble/ and eda/."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from malpyeong.errors import UserError, UserErrors
from malpyeong.tasks import task_names, tasks_help

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
