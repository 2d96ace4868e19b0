"""Where models run: the one device default, the check of a ``--device`` the user gave, and
the device a loaded model sits on.

Every model we load -- for prediction, training, distillation and data generation, merging, and
the metric models (BERTScore, BLEURT, sentence embedders) -- takes its device from here, so
"the GPU when there is one" is decided once: this process's GPU (``cuda:<LOCAL_RANK>``, so each
process of ``accelerate launch`` takes its own) when CUDA is usable, else the CPU. A ``--device``
given by the user wins, and is refused in one line before any model is loaded when this machine
does not have it.

It stands on nothing of ours (the ground floor): the metric models sit below the model layer and
ask here too. torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from typing import Any

from malpyeong.errors import UserError


def cuda_available() -> bool:
    """Whether a CUDA device is usable here (False when torch cannot tell)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA setup is no CUDA
        return False


def cuda_bf16() -> bool:
    """Whether the CUDA device here computes in bfloat16 (what dtype "auto" picks)."""
    if not cuda_available():
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def local_rank() -> int:
    """This process's index on its machine under a launcher (0 alone)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def default_device() -> str:
    """The device a model goes to when nobody says: this process's GPU, else the CPU."""
    return f"cuda:{local_rank()}" if cuda_available() else "cpu"


def check_device(device: str | None, field: str = "device") -> str | None:
    """``device`` as given (cpu, cuda, cuda:N, mps, auto or None), refused in one line when
    this machine does not have it, before any model is loaded."""
    if device in (None, "auto", "cpu"):
        return device
    import torch

    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--{field} {device}, but this machine has no usable CUDA device",
                field=field,
                hint="use --device cpu, or leave it out",
            )
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(
                f"no CUDA device {index} (this machine has {torch.cuda.device_count()})", field=field
            )
        return device
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps, but MPS is not available here", field=field)
    if device != "mps":
        raise UserError(f"unknown device '{device}'", field=field, hint="cpu, cuda, cuda:N or auto")
    return device


def resolve_device(device: str | None = None, field: str = "device") -> str:
    """The device to use: ``device`` when given (checked), else :func:`default_device`."""
    device = check_device(device, field)
    return default_device() if device in (None, "auto") else device


def device_map(device: str | None = None) -> dict[str, Any] | None:
    """``from_pretrained``'s ``device_map`` for ``device`` (checked; None or auto: the
    default). None for the CPU: transformers then loads there without accelerate's hooks."""
    device = resolve_device(device)
    return None if device == "cpu" else {"": device}


def model_device(model: Any) -> Any:
    """Where a loaded model's inputs go: the device of its first parameter."""
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


__all__ = [
    "check_device",
    "cuda_available",
    "cuda_bf16",
    "default_device",
    "device_map",
    "local_rank",
    "model_device",
    "resolve_device",
]
