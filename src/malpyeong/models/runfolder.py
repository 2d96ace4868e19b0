"""The run-folder format: every file name a run folder holds, and the functions that find them.

Training, merging and prediction read and write run folders only through this module (as
torchtune keeps checkpoint file names and their finders in one file).

A run folder whose result is a full model (full fine-tuning, ``--merge``, a merge of full models
or ``ensemble/merge.py --fold``) *is* a model folder, as mergekit writes one: ``config.json`` and
the safetensors weights (and the tokenizer) at its root, so ``from_pretrained(folder)``, vLLM
and ``push_to_hub`` read it as it is; our metadata sits beside them::

    config.json  model*.safetensors  generation_config.json  tokenizer*   the full model
    adapter/             a LoRA adapter (lora, qlora) with the tokenizer
    malpyeong_run.json   the loader contract: base model, method, where the weights are
                         (adapter_dir, merged_dir: "." for the root), task, prompt, max_length,
                         target_style, stage
    config.yaml  dev_metrics.json  data_stats.json  runs/  checkpoint-*/     (training)
    init_model/          the previous stage's full model (--init_from of an adapter run)
    experts.json         a folder of experts (run/train.py --experts): the routing field and
                         the sub-folder of each value, each a run folder of its own
    merge_config.yaml  merge_search.json                                     (ensemble/merge.py)

A trainer checkpoint (``checkpoint-N/``) is complete once ``trainer_state.json`` is readable in
it beside its weights: the trainer writes its state last, so one cut short by kill -9 lacks it.

Older run folders kept the full model in ``model/`` (full fine-tuning, merges) or ``merged/``
(``--merge``); their run file names that folder, so they load as before: readers follow
``merged_dir`` whatever it says, writers always write the root.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.io import atomic_write_json

RUN_FILE = "malpyeong_run.json"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
ADAPTER_DIR = "adapter"
WEIGHTS_DIR = "."  # a full model (fine-tuned or merged) sits at the run folder's root
MODEL_DIR = "model"  # where older run folders kept a full model (still read)
MERGED_DIR = "merged"  # where older run folders kept a --merge model (still read)
INIT_DIR = "init_model"  # a stage's starting model, when the previous stage left an adapter
CONFIG_FILE = "config.yaml"  # the resolved recipe
DEV_METRICS = "dev_metrics.json"  # the dev metric at each evaluation, the best, its report
DATA_STATS = "data_stats.json"  # examples built, prompts cut by the length budget
MERGE_CONFIG = "merge_config.yaml"  # what ensemble/merge.py merged
MERGE_SEARCH = "merge_search.json"  # its grid's dev scores (--search)
EXPERTS_FILE = "experts.json"  # a folder of experts: the routing field and its experts
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: the checkpoint is complete
CHECKPOINT = re.compile(r"checkpoint-(\d+)")  # a trainer checkpoint's folder name
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# Files that mark a folder as one we wrote, so --overwrite may replace it.
MARKERS = (
    RUN_FILE,
    CONFIG_FILE,
    DATA_STATS,
    DEV_METRICS,
    MERGE_CONFIG,
    ADAPTER_DIR,
    MODEL_DIR,
)


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder we wrote (a run, a merge, or checkpoints of one)."""
    p = Path(path)
    return p.is_dir() and (any((p / m).exists() for m in MARKERS) or any(p.glob("checkpoint-*")))


def has_run_file(path: str | os.PathLike) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def is_finished_run(path: str | os.PathLike) -> bool:
    """A run whose training finished. Training writes a first run file when it starts (so its
    checkpoints predict with the run's prompt), marked ``"finished": false``; the run file written
    after the weights has no such mark (nor have run files of older versions)."""
    return has_run_file(path) and read_run(path).get("finished", True) is not False


def checkpoint_run(path: str | os.PathLike) -> Path | None:
    """The run folder a trainer checkpoint (``RUN/checkpoint-N``) belongs to, when it has a run
    file: the checkpoint is then used with the run's prompt and max_length."""
    p = Path(path)
    if CHECKPOINT.fullmatch(p.name) and has_run_file(p.parent):
        return p.parent
    return None


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step of a checkpoint folder (``checkpoint-500`` -> 500)."""
    found = CHECKPOINT.fullmatch(Path(path).name)
    if found is None:
        raise ValueError(f"not a checkpoint folder: {path}")
    return int(found.group(1))


def checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The trainer checkpoints in a run folder, by step."""
    found = [p for p in Path(folder).glob("checkpoint-*") if p.is_dir() and CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step)


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """A checkpoint the trainer finished writing: its state (written last) is readable and its
    weights are there."""
    p = Path(path)
    try:
        json.loads((p / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(p.glob("*.safetensors")) or any(p.glob("*.bin"))


def complete_checkpoints(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """``(complete, incomplete)`` checkpoints of a run folder, each sorted by step."""
    found = checkpoints(folder)
    return [c for c in found if is_complete_checkpoint(c)], [
        c for c in found if not is_complete_checkpoint(c)
    ]


def is_adapter(path: str | os.PathLike) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def is_model(path: str | os.PathLike) -> bool:
    return (Path(path) / MODEL_CONFIG).is_file()


def has_tokenizer(path: str | os.PathLike) -> bool:
    return any((Path(path) / f).is_file() for f in TOKENIZER_MARKERS)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; one error line when unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read: {err}", file=str(path)) from None
    if not isinstance(data, dict):
        raise UserError("not a JSON object", file=str(path))
    return data


def read_run(path: str | os.PathLike) -> dict:
    """The run file of a run folder, checked to name its base model."""
    run = read_json(Path(path) / RUN_FILE)
    if not isinstance(run.get("model"), str) or not run["model"]:
        raise UserError("names no base model", file=str(Path(path) / RUN_FILE), field="model")
    return run


def write_run(folder: str | os.PathLike, info: dict) -> None:
    atomic_write_json(Path(folder) / RUN_FILE, info)


def run_info(
    model: str,
    method: str,
    *,
    adapter_dir: str | None,
    merged_dir: str | None,
    task: str | None,
    prompt: str | None,
    max_length: int | None,
    target_style: str | None,
    stage: str,
    **extra: Any,
) -> dict:
    """The run file's content: what a loader needs to use the folder as it was trained."""
    return {
        "model": model,
        "method": method,
        "adapter_dir": adapter_dir,
        "merged_dir": merged_dir,
        "task": task,
        "prompt": prompt,
        "max_length": max_length,
        "target_style": target_style,
        "stage": stage,
        **extra,
    }


def adapter_of(path: str | os.PathLike, run: dict | None = None) -> Path | None:
    """The LoRA adapter folder of a run folder (or ``path`` itself when it is one)."""
    p = Path(path)
    if is_adapter(p):
        return p
    run = run if run is not None else (read_run(p) if has_run_file(p) else None)
    folder = run.get("adapter_dir") if run else None
    return p / folder if folder and is_adapter(p / folder) else None


def weights_of(path: str | os.PathLike, run: dict | None = None) -> Path | None:
    """The full model folder of a run folder: the merged model, or the fully fine-tuned one --
    the run folder itself in today's layout, ``model/`` or ``merged/`` in older ones."""
    p = Path(path)
    run = run if run is not None else (read_run(p) if has_run_file(p) else None)
    folder = run.get("merged_dir") if run else None
    return p / folder if folder and is_model(p / folder) else None


def model_key(name: str | os.PathLike) -> str:
    """How two references to a base model are compared: a local folder by its resolved path
    (``models/x`` and ``./models/x`` are one model), a hub id as written."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else str(name)


def adapter_base(folder: str | os.PathLike) -> str:
    """The base model an adapter folder was trained on (``base_model_name_or_path``)."""
    config = read_json(Path(folder) / ADAPTER_CONFIG)
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise UserError(
            "adapter config names no base model",
            file=str(Path(folder) / ADAPTER_CONFIG),
            field="base_model_name_or_path",
        )
    return base


def find_adapter(path: str | os.PathLike, field: str) -> Path:
    """An adapter folder, given the folder itself or a run folder that holds one."""
    found = adapter_of(path)
    if found is None:
        raise UserError(
            f"no LoRA adapter here ({ADAPTER_CONFIG})",
            file=str(path),
            field=field,
            hint="give a run folder trained with --method lora or qlora",
        )
    return found


def write_experts(folder: str | os.PathLike, key: str, task: str, experts: Sequence[str]) -> None:
    """``experts.json``: the routing field, the task and the trained experts (a sub-folder per
    value, named after it)."""
    atomic_write_json(
        Path(folder) / EXPERTS_FILE, {"key": key, "task": task, "experts": {v: v for v in experts}}
    )


def is_experts_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / EXPERTS_FILE).is_file()


def expert_folders(folder: str | os.PathLike, key: str) -> dict[str, Path]:
    """Routing value -> finished expert run folder, from ``experts.json`` or else the
    sub-folders that are run folders (named after their value)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError("experts folder not found", file=str(folder), field="model")
    if is_experts_folder(root):
        info = read_json(root / EXPERTS_FILE)
        if info.get("key") != key:
            raise UserError(
                f"these experts are split by '{info.get('key')}', not '{key}'",
                file=str(root / EXPERTS_FILE),
                field="route",
            )
        found = {v: root / n for v, n in (info.get("experts") or {}).items() if is_finished_run(root / n)}
    else:
        names = sorted(p.name for p in root.iterdir() if p.is_dir())
        found = {n: root / n for n in names if is_finished_run(root / n)}
    if not found:
        raise UserError(
            f"no expert run folder here (one per {key} value, each with {RUN_FILE})",
            file=str(folder),
            field="model",
            hint="train them with run/train.py --experts " + key,
        )
    return found


def tokenizer_of(folder: Path, run_folder: Path, base: str) -> str:
    """Where a run's tokenizer is read from: the weights folder, the run folder, else the base."""
    for candidate in (folder, run_folder):
        if has_tokenizer(candidate):
            return str(candidate)
    return base


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_DIR",
    "CHECKPOINT",
    "CONFIG_FILE",
    "DATA_STATS",
    "DEV_METRICS",
    "EXPERTS_FILE",
    "INIT_DIR",
    "MARKERS",
    "MERGED_DIR",
    "MERGE_CONFIG",
    "MERGE_SEARCH",
    "MODEL_CONFIG",
    "MODEL_DIR",
    "RUN_FILE",
    "TRAINER_STATE",
    "WEIGHTS_DIR",
    "adapter_base",
    "adapter_of",
    "checkpoint_run",
    "checkpoint_step",
    "checkpoints",
    "complete_checkpoints",
    "expert_folders",
    "find_adapter",
    "is_complete_checkpoint",
    "is_experts_folder",
    "model_key",
    "has_run_file",
    "has_tokenizer",
    "is_adapter",
    "is_finished_run",
    "is_model",
    "is_run_folder",
    "read_json",
    "read_run",
    "run_info",
    "tokenizer_of",
    "weights_of",
    "write_experts",
    "write_run",
]
