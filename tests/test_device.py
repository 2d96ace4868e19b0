"""The one device default (malpyeong/device.py): this process's GPU when CUDA is usable, else the
CPU; a --device the user gave wins, and one this machine lacks is one line before any load."""

from __future__ import annotations

import pytest

from malpyeong import device
from malpyeong.errors import UserError


def test_the_default_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    assert device.default_device() == "cpu"
    assert device.resolve_device(None) == device.resolve_device("auto") == "cpu"
    assert device.device_map(None) is None and device.device_map("cpu") is None
    assert device.cuda_bf16() is False


def test_the_default_is_this_processes_gpu(monkeypatch):
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert device.default_device() == "cuda:0"
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of accelerate launch
    assert device.default_device() == "cuda:1"
    assert device.device_map(None) == {"": "cuda:1"}
    assert device.resolve_device("cpu") == "cpu"  # what the user says wins


def test_a_device_this_machine_lacks_is_one_line():
    with pytest.raises(UserError, match="unknown device 'gpu'"):
        device.check_device("gpu")
    if not device.cuda_available():
        with pytest.raises(UserError, match="no usable CUDA device"):
            device.resolve_device("cuda:0")
