"""GPU checks of the multi-GPU and engine paths (issue 25) that the CPU cannot show.

    python benchmarks/gpu_check_distributed.py          # each step's row as one JSON line
    python benchmarks/gpu_check.py                      # with every other gpu_check_*.py

``STEPS`` lists ``(name, function)``; each function takes gpu_check.py's ``Context`` (unused
here: None when this file runs alone) and returns a row ``{"status": "ok" | "skip" |
"fail", "detail": str, ...figures}`` and skips, saying why, where its hardware or library is
absent (no CUDA, fewer than two GPUs, no vLLM, no DeepSpeed), so the module imports and runs on
a CPU. The steps, on tiny random-weight models built on the spot:

- ``bf16_native``: the dtype our loaders pick on this card matches what it computes natively
  (``torch.cuda.is_bf16_supported(including_emulation=False)``; V100/T4 must get fp16);
- ``vllm_dtype_bf16``: ``--dtype bf16`` reaches vLLM as ``bfloat16`` and a model generates;
- ``zero3_staged_scoring``: two GPUs, DeepSpeed ZeRO-3 (resource/configs/accelerate/
  deepspeed_zero3.yaml): a LoRA stage on an earlier LoRA run (its merge into init_model/ made
  apart from the group), activation checkpointing on (reentrant under ZeRO-3), dev evaluation
  of 17 CCI items one at a time (under ZeRO-3 each GPU answers all 17, with the same number of
  forward passes), and ``--merge`` at the end;
- ``zero3_dev_generation``: two GPUs, ZeRO-3, the DCS dev metric by generation (5 items, all 5
  answered on each GPU: 5 ``generate`` calls on each).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
Row = dict


def _cuda_devices() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch CUDA
        return 0


def _skip(detail: str) -> Row:
    return {"status": "skip", "detail": detail}


def _needs(gpus: int = 1, modules: tuple[str, ...] = ()) -> Row | None:
    """A skip row when this machine lacks what a step needs, else None."""
    have = _cuda_devices()
    if have < gpus:
        return _skip(f"needs {gpus} CUDA GPU(s), this machine has {have}")
    for name in modules:
        if importlib.util.find_spec(name) is None:
            return _skip(f"{name} is not installed (pip install {name})")
    return None


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "MALPYEONG_LOG": "WARNING",
    }


def _tiny(folder: Path, family: str = "llama") -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from malpyeong.models.tiny import build_tiny_model

    return build_tiny_model(family, folder / family)


def _run(cmd: list, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=timeout,
        check=False,
    )


def bf16_native(ctx: Any = None) -> Row:
    missing = _needs(1)
    if missing:
        return missing
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from malpyeong.models.backbones import resolve_dtype

    native = torch.cuda.is_bf16_supported(including_emulation=False)
    emulated = torch.cuda.is_bf16_supported()
    chosen = resolve_dtype("auto")
    want = torch.bfloat16 if native else torch.float16
    return {
        "status": "ok" if chosen == want else "fail",
        "detail": f"{torch.cuda.get_device_name(0)}: native bf16 {native}, with emulation {emulated}, "
        f"--dtype auto loads {chosen}",
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
    }


def vllm_dtype_bf16(ctx: Any = None) -> Row:
    missing = _needs(1, ("vllm",))
    if missing:
        return missing
    import torch

    if not torch.cuda.is_bf16_supported(including_emulation=False):
        return _skip("this card has no native bf16 (vLLM refuses bfloat16 there)")
    sys.path.insert(0, str(ROOT / "src"))
    from malpyeong.inference.engines import GenerationSettings
    from malpyeong.inference.loading import load_engine, resolve_source

    with tempfile.TemporaryDirectory() as tmp:
        engine = load_engine(resolve_source(_tiny(Path(tmp))), engine="vllm", dtype="bf16")
        dtype = engine.llm.llm_engine.model_config.dtype
        start = time.perf_counter()
        texts = engine.generate([[1, 5, 9, 13]] * 4, GenerationSettings(max_new_tokens=8), batch_size=4)
        seconds = time.perf_counter() - start
    ok = dtype == torch.bfloat16 and len(texts) == 4
    return {
        "status": "ok" if ok else "fail",
        "detail": f"vLLM model dtype {dtype}; {len(texts)} generations",
        "generate_s": round(seconds, 3),
    }


def _zero3_train(task: str, args: list) -> tuple[subprocess.CompletedProcess, float]:
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        ROOT / "resource" / "configs" / "accelerate" / "deepspeed_zero3.yaml",
        "--num_processes",
        "2",
    ]
    start = time.perf_counter()
    done = _run(
        [
            *launch,
            ROOT / "run" / "train.py",
            "--config",
            ROOT / "resource/configs" / task / "tiny_lora.yaml",
            *args,
        ]
    )
    return done, time.perf_counter() - start


def _failed(done: subprocess.CompletedProcess) -> Row:
    return {"status": "fail", "detail": (done.stderr.strip().splitlines() or ["(no output)"])[-1][-500:]}


def zero3_staged_scoring(ctx: Any = None) -> Row:
    missing = _needs(2, ("deepspeed",))
    if missing:
        return missing
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = _tiny(tmp)
        common = ["--model", tiny, "--report_to", "none", "--max_steps", "2", "--save_strategy", "no"]
        common += ["--load_best_model_at_end", "false", "--early_stopping_patience", "0"]
        first = _run([sys.executable, ROOT / "run" / "train.py", "--config", ROOT / "resource/configs/cci/tiny_lora.yaml",
                      *common, "--output_dir", tmp / "first", "--eval_strategy", "no"])  # fmt: skip
        if first.returncode != 0:
            return _failed(first)
        out = tmp / "staged"
        done, seconds = _zero3_train(
            "cci",
            [*common, "--output_dir", out, "--init_from", tmp / "first", "--activation_checkpointing", "true",
             "--eval_strategy", "steps", "--eval_steps", "2", "--dev_eval_items", "17",
             "--per_device_eval_batch_size", "1", "--merge", "true"],
        )  # fmt: skip
        if done.returncode != 0:
            return _failed(done)
        report = json.loads((out / "dev_metrics.json").read_text())["best_report"]
        calls = report["model_calls_per_process"]
        merged = (out / "config.json").is_file() and (out / "init_model" / "config.json").is_file()
        ok = report["answered_per_process"] == [17, 17] and calls[0] == calls[1] and merged
        return {
            "status": "ok" if ok else "fail",
            "detail": f"answered {report['answered_per_process']}, model calls {calls}, merged {merged}",
            "seconds": round(seconds, 1),
        }


def zero3_dev_generation(ctx: Any = None) -> Row:
    missing = _needs(2, ("deepspeed",))
    if missing:
        return missing
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "dcs"
        done, seconds = _zero3_train(
            "dcs",
            ["--model", _tiny(tmp), "--output_dir", out, "--report_to", "none", "--max_steps", "1",
             "--eval_strategy", "steps", "--eval_steps", "1", "--dev_eval_items", "5",
             "--per_device_eval_batch_size", "1", "--eval_max_new_tokens", "8", "--save_strategy", "no",
             "--load_best_model_at_end", "false", "--early_stopping_patience", "0"],
        )  # fmt: skip
        if done.returncode != 0:
            return _failed(done)
        report = json.loads((out / "dev_metrics.json").read_text())["best_report"]
        calls = report["model_calls_per_process"]
        ok = report["answered_per_process"] == [5, 5] and calls[0] == calls[1] and calls[0]["generate"] == 5
        return {
            "status": "ok" if ok else "fail",
            "detail": f"answered {report['answered_per_process']}, model calls {calls}",
            "seconds": round(seconds, 1),
        }


# benchmarks/gpu_check.py (speed issue) calls each step with its Context; the steps here need
# nothing from it (each builds its own tiny model in a folder of its own), so run alone it is None.
STEPS: list[tuple[str, Callable[[Any], Row]]] = [
    ("bf16_native", bf16_native),
    ("vllm_dtype_bf16", vllm_dtype_bf16),
    ("zero3_staged_scoring", zero3_staged_scoring),
    ("zero3_dev_generation", zero3_dev_generation),
]


def main() -> int:
    failed = False
    for name, step in STEPS:
        try:
            row = step(None)
        except Exception as err:  # noqa: BLE001 - a step that crashes is a failed check, not a crash
            row = {"status": "fail", "detail": f"{type(err).__name__}: {err}"[:500]}
        failed |= row["status"] == "fail"
        print(json.dumps({"step": name, **row}, ensure_ascii=False), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
