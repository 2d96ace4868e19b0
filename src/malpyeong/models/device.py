"""Where a model runs: the device its inputs go to."""

from __future__ import annotations

from typing import Any


def model_device(model: Any) -> Any:
    """Where the inputs go: the device of the model's first parameter."""
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def cuda_bf16() -> bool:
    """Whether the CUDA device computes bf16 natively (Ampere and later).

    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated (V100, T4):
    there it is slow, and fp16 is the precision to use instead, so emulation does not count.
    False without a usable CUDA device.
    """
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    except Exception:  # noqa: BLE001 - no usable CUDA (driver missing, broken install)
        return False
