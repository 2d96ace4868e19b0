"""The GPU and multi-GPU paths (issue 25), proved on the CPU where they can be: each test stands
in for the piece of hardware or library it cannot have here (a CUDA card that only emulates
bf16, a vLLM ``LLM``, a ZeRO-3 trainer config) and checks what our code asks of it.
The two-process runs are in tests/test_multiprocess.py; docs/gpu_paths.md lists the findings."""

from __future__ import annotations

import pytest

# -- 8. bf16 on cards that only emulate it ------------------------------------------------------


class EmulatingCard:
    """A V100 / T4 as torch sees it: bf16 "supported" only when emulation counts."""

    def __init__(self) -> None:
        self.asked: list[dict] = []

    def is_available(self) -> bool:
        return True

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        self.asked.append({"including_emulation": including_emulation})
        return including_emulation


def test_bf16_is_asked_without_emulation(monkeypatch):
    import torch

    from malpyeong.models.backbones import quantization_config, resolve_dtype
    from malpyeong.training.recipe import _bf16_default

    card = EmulatingCard()
    monkeypatch.setattr(torch.cuda, "is_available", card.is_available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", card.is_bf16_supported)
    assert resolve_dtype("auto") == torch.float16  # the fp16 fallback runs on an emulating card
    assert _bf16_default() is False  # no emulated bf16 mixed precision by default
    assert quantization_config().bnb_4bit_compute_dtype == torch.float16
    assert card.asked == [{"including_emulation": False}] * 3


# -- 6. load errors keep the library's reason ---------------------------------------------------


@pytest.mark.parametrize(
    "raised, expected",
    [
        (  # QLoRA's device map under ZeRO-3 (transformers/integrations/accelerate.py)
            ValueError("DeepSpeed Zero-3 is not compatible with passing a `device_map`."),
            "field 'model': cannot load model 'org/model': ValueError: DeepSpeed Zero-3 is not "
            "compatible with passing a `device_map`.",
        ),
        (  # a missing model still says where we looked, with the library's words after it
            OSError("org/model is not a local folder and is not a valid model identifier"),
            "field 'model': cannot load model 'org/model': not in the local hub cache and "
            "HF_HUB_OFFLINE=1 (OSError: org/model is not a local folder and is not a valid model "
            "identifier) (give a local path, or download it first with `hf download`)",
        ),
    ],
)
def test_a_hub_load_failure_keeps_the_library_reason(monkeypatch, raised, expected):
    """A hub id whose from_pretrained raises: the one line carries the library's reason (a
    ValueError is no download problem and is not called one)."""
    from transformers import AutoModelForCausalLM

    from malpyeong.errors import UserError
    from malpyeong.models.backbones import get_backbone, load_model

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fail)
    with pytest.raises(UserError) as caught:
        load_model("org/model", "full", backbone=get_backbone("org/model"))
    assert caught.value.line() == expected
