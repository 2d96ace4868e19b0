"""Work the main process does alone in a multi-process run (DDP, DeepSpeed), without leaving the
other processes on a timed barrier, and merges that run in a process of their own.

Why: merging a LoRA adapter into an 11-14B base takes minutes, longer than the collective
timeout (NCCL's 10 minutes; ``ddp_timeout``) the other processes would spend in
``wait_for_everyone``. And under DeepSpeed ZeRO-3 a model loaded in a training process is
built through ``deepspeed.zero.Init``, which talks to every process: a merge on the main
process alone waits for processes that sit at the barrier, forever. So a merge runs in a fresh
Python process with no distributed setting (no ZeRO-3, on the CPU as before), and the waiting
processes look for a marker file instead of waiting in a collective.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from malpyeong.cli import run_cli
from malpyeong.device import alone_on_cpu_env
from malpyeong.errors import UserError, one_line
from malpyeong.io import atomic_write_json
from malpyeong.models.backbones import Backbone, load_tokenizer
from malpyeong.training.models import merge_adapter

POLL_SECONDS = 1.0


def several_processes() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main_process() -> bool:
    """True in the process that writes the run folder (rank 0 under accelerate/torchrun)."""
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # noqa: BLE001 - accelerate not initialised: a single process
        return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """A barrier of every process of the launch (a single process has nobody to wait for). A
    barrier that times out is an error, never passed over."""
    if several_processes():
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def on_main_alone(work: Callable[[], None], marker: Path) -> None:
    """``work()`` on the main process only, the others waiting for ``marker`` (a file the main
    process writes when done, ``ok`` or why it failed): every process leaves together, in step,
    with no collective timeout on the wait. One process: just ``work()``."""
    if not several_processes():
        work()
        return
    main = main_process()
    if main:
        marker.unlink(missing_ok=True)  # a marker left by a run killed at the wrong moment
    wait_for_everyone()  # quick: everyone is here; the stale marker is gone
    if main:
        try:
            work()
        except BaseException as err:
            _write(marker, f"failed: {one_line(err, 300)}")
            raise
        _write(marker, "ok")
    else:
        while not marker.is_file():  # no timeout: the launcher stops us if the main process dies
            time.sleep(POLL_SECONDS)
        state = marker.read_text(encoding="utf-8")
        if state != "ok":
            raise UserError(f"the main process {state}", file=str(marker.parent))
    wait_for_everyone()  # quick: the others have seen the marker
    if main:
        marker.unlink(missing_ok=True)


def _write(marker: Path, text: str) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(marker)


def clean_env() -> dict[str, str]:
    """This process's environment without the distributed launch settings, the GPUs hidden (the
    merge runs on the CPU, as it did in the training process), and this package importable."""
    env = alone_on_cpu_env()
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env


def merge_in_own_process(
    base: str,
    adapter: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backbone: Backbone,
    dtype: str,
    tokenizer: str | os.PathLike,
    chat_format: str | None = None,
) -> Path:
    """:func:`malpyeong.training.models.merge_adapter` of ``adapter`` into ``base`` (whose
    quirks are ``backbone``'s) in a fresh Python process (see the module docstring);
    ``tokenizer`` is where the merged folder's tokenizer is read from, and ``chat_format`` is
    recorded in its config.json when given (a staged run's base)."""
    spec = {
        "base": base,
        "backbone": dataclasses.asdict(backbone),
        "adapter": str(adapter),
        "out": str(out),
        "dtype": dtype,
        "tokenizer": str(tokenizer),
        "chat_format": chat_format,
    }
    done = subprocess.run(
        [sys.executable, "-m", "malpyeong.training.alone", json.dumps(spec)],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = next(
            (line for line in reversed(lines) if line.startswith("error: ")), lines[-1] if lines else ""
        )
        raise UserError(
            f"merging the adapter into {base} failed: {one_line(why.removeprefix('error: '), 300)}",
            file=str(adapter),
        )
    return Path(out)


def _merge(spec: dict) -> None:
    backbone = Backbone(**spec["backbone"])
    out = merge_adapter(
        spec["base"],
        spec["adapter"],
        spec["out"],
        backbone=backbone,
        dtype=spec["dtype"],
        tokenizer=load_tokenizer(spec["tokenizer"], backbone),
    )
    if spec.get("chat_format"):  # a merged copy's backbone entry is found by name: it has none
        path = out / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config["malpyeong_chat_format"] = spec["chat_format"]
        atomic_write_json(path, config, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="merge a LoRA adapter (run by merge_in_own_process)")
    parser.add_argument("spec", help="JSON: base, adapter, out, dtype, tokenizer, chat_format")
    _merge(json.loads(parser.parse_args(argv).spec))
    return 0


__all__ = [
    "clean_env",
    "main_process",
    "merge_in_own_process",
    "on_main_alone",
    "several_processes",
    "wait_for_everyone",
]

if __name__ == "__main__":
    sys.exit(run_cli(main))
