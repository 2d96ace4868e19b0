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
