"""Shared entry-point plumbing for the scripts in run/, orpo/, ensemble/ and eda/.

Every script's ``main`` runs through :func:`run_cli`, which owns what a user sees beyond the
script's own output:

- a user mistake (``UserError``) and an operating-system error (permission denied, a read-only
  folder, a full disk, a path that is a folder) are one line on stderr and exit code 2;
- third-party libraries' warnings and chatter are silenced here, in one place
  (:func:`quiet_libraries`); ``--verbose``, which every script accepts, shows them again.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from malpyeong.errors import Interrupted, UserError, UserErrors, one_line, printable
from malpyeong.io import read_text
from malpyeong.tasks import TASKS, Task, task_names, tasks_help

EXIT_USER_ERROR = 2
MAX_ERROR_LINES = 20  # a command never prints more problems than this (then how many more)
RESUME_HINT = "interrupted; rerun the same command to resume where it stopped"
VERBOSE_HELP = "also show the libraries' warnings and log messages (hidden by default)"
# Loggers of libraries that log notices a user cannot act on (kernel hub, bitsandbytes CPU
# kernels, HTTP requests); shown again with --verbose.
NOISY_LOGGERS = (
    "bitsandbytes",
    "kernels",
    "httpx",
    "httpcore",
    "accelerate",
    "peft",
    "trl",
    "datasets",
    "torch",
    "transformers",
    "huggingface_hub",
    "mergekit",
    "urllib3",
    "sentence_transformers",  # "Load pretrained SentenceTransformer", "Saving model to ..."
    "matplotlib",  # "Matplotlib is building the font cache; this may take a moment."
)


def wants_verbose(argv: Sequence[str] | None) -> bool:
    return "--verbose" in (sys.argv[1:] if argv is None else argv)


def quiet_libraries(verbose: bool = False) -> None:
    """Keep third-party warnings and notices off the console (all of them, in one place).

    A warning is hidden when a library module raised it; one attributed to malpyeong's own code
    (a deprecated call of ours) stays visible, so it gets fixed rather than hidden. With
    ``verbose`` nothing is hidden.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if verbose:
        warnings.simplefilter("default")
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO lives in trl.experimental
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # every warning whose module is not ours (nor a script run as __main__)
    warnings.filterwarnings("ignore", module=r"(?!malpyeong(\.|$)|__main__$|script_)")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # the datasets map bars over our pre-tokenised rows are noise; training keeps its own bar
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # Offline there is nothing to download, so the hub's bars can only be transformers' per-file
    # "Loading weights" / "Writing model shards" bars: off. Online they stay (downloads of
    # several GB need their bar).
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if offline:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already: its settings were read at import
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if offline:
            hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


def run_cli(
    main: Callable[[list[str] | None], int | None],
    argv: list[str] | None = None,
    *,
    interrupted: str = RESUME_HINT,
) -> int:
    """Call ``main(argv)``; a ``UserError`` or an ``OSError`` becomes one line per problem on
    stderr and exit 2. ``interrupted`` is what Ctrl-C prints (how to continue)."""
    verbose = wants_verbose(argv)
    logging.basicConfig(
        level=os.environ.get("MALPYEONG_LOG", "DEBUG" if verbose else "INFO"),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
        and os.environ.get("MASTER_ADDR")
        and not os.environ.get("WORLD_SIZE")
    ):
        print(
            "note: `accelerate launch --cpu --num_processes N` starts one process here (its CPU "
            "launcher needs mpirun); for N processes use --config_file "
            "resource/configs/accelerate/cpu_ddp.yaml",
            file=sys.stderr,
        )
    quiet_libraries(verbose)
    try:
        code = main(argv)
    except UserErrors as errs:
        lines = errs.lines()
        # 21 lines are a file's own 20 and its "... and N more": print those as they are
        shown = len(lines) if len(lines) <= MAX_ERROR_LINES + 1 else MAX_ERROR_LINES
        for line in lines[:shown]:
            print(f"error: {line}", file=sys.stderr)
        if len(lines) > shown:
            print(
                f"error: ... and {len(lines) - shown} more problem(s) (the first ones are usually the cause)",
                file=sys.stderr,
            )
        return EXIT_USER_ERROR
    except UserError as err:
        print(f"error: {err.line()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # the reader went away (`... | head`): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt as err:
        print(str(err) if isinstance(err, Interrupted) else interrupted, file=sys.stderr)
        return 130
    except OSError as err:  # the machine said no: permissions, read-only, disk full, ...
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:  # noqa: BLE001 - CUDA OOM is a user-fixable condition
        if type(err).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(err):
            print(
                "error: CUDA out of memory: lower --per_device_train_batch_size / --batch_size "
                "or --max_length, or use --method qlora",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
        raise
    return int(code or 0)


def os_error_line(err: OSError) -> str:
    """``path: reason`` of an operating-system error, on one line."""
    reason = err.strerror or one_line(err)
    where = err.filename if err.filename is not None else None
    return printable(f"{where}: {reason}" if where else reason)


def task_argument(
    parser: argparse.ArgumentParser,
    *,
    required: bool = True,
    extra: tuple[str, ...] = (),
    help: str | None = None,
) -> None:
    """``--task`` with the registered tasks as choices (plus ``extra``, e.g. ``text``)."""
    parser.add_argument(
        "--task", required=required, choices=[*task_names(), *extra], help=help or tasks_help()
    )


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
            g.add_argument(
                f"--{opt}", nargs="*" if many else None, default=None, help=f"{', '.join(owners)}: {help_}"
            )


def given_metric_options(args: argparse.Namespace, task: Task) -> dict:
    """The metric options given on the command line; one that ``task`` does not take is an
    error naming the ones it does."""
    given = {opt: getattr(args, opt) for opt in metric_options() if getattr(args, opt, None) is not None}
    foreign = [f"--{opt}" for opt in given if opt not in task.evaluate_options]
    if foreign:
        raise UserError(
            f"{', '.join(foreign)} do not apply to task {task.name}",
            field="task",
            hint="options: " + (", ".join(f"--{o}" for o in task.evaluate_options) or "none"),
        )
    return given


def read_system_prompt(path: str | None) -> str | None:
    """The exact system prompt in ``path`` (``--system_prompt_file``), or None without one."""
    if path is None:
        return None
    text = read_text(path, field="system_prompt_file").strip()
    if not text:
        raise UserError("empty file", file=path, field="system_prompt_file")
    return text


def verbose_argument(parser: argparse.ArgumentParser) -> None:
    """``--verbose``, which every script takes (:func:`run_cli` acts on it)."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def progress_bar(total: int, enabled: bool, desc: str, initial: int = 0) -> Any:
    """A tqdm bar (items/s and ETA), or a no-op object when disabled or tqdm is absent."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(
                total=total, initial=initial, desc=desc, unit="item", dynamic_ncols=True, smoothing=0.1
            )
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    return _NoBar()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
