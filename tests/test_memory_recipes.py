"""The memory recipes: the published model's settings for Qwen2.5-3B-Instruct, one recipe per
Korean backbone of the registry, and every one parses through the real parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from malpyeong.models.backbones import REGISTRY
from malpyeong.training import sft_parser

CONFIGS = ROOT / "resource" / "configs" / "memory"
KOREAN = [
    "MLP-KTLim/llama-3-Korean-Bllossom-8B",
    "x2bee/POLAR-14B-v0.2",
    "rtzr/ko-gemma-2-9b-it",
    "beomi/Solar-Ko-Recovery-11B",
    "yanolja/EEVE-Korean-Instruct-10.8B-v1.0",
    "cpm-ai/Ocelot-Ko-self-instruction-10.8B-v1.0",
]


def test_the_qwen_recipe_has_the_published_settings():
    data = yaml.safe_load((CONFIGS / "Qwen2.5-3B-Instruct_lora.yaml").read_text(encoding="utf-8"))
    assert {
        k: data[k]
        for k in (
            "model",
            "task",
            "method",
            "lora_r",
            "lora_alpha",
            "lora_dropout",
            "lora_target_modules",
            "num_train_epochs",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "learning_rate",
            "lr_scheduler_type",
            "max_length",
            "bf16",
        )
    } == {
        "model": "Qwen/Qwen2.5-3B-Instruct",
        "task": "memory",
        "method": "lora",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "num_train_epochs": 3,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 16,
        "learning_rate": 2e-4,
        "lr_scheduler_type": "cosine",
        "max_length": 512,
        "bf16": True,
    }


def test_every_korean_backbone_has_a_memory_recipe():
    assert all(m in REGISTRY for m in KOREAN)
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {f"{m.split('/')[-1]}_lora.yaml" for m in KOREAN} | {"tiny_lora.yaml"} <= names


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_parses(path: Path, tmp_path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert f"run/train.py --config {path.relative_to(ROOT)}" in path.read_text(encoding="utf-8")
    parser = sft_parser()
    parser.check_recipe(str(path))
    # bf16 needs a GPU; the rest of the recipe is checked as it is
    script, model, config = parser.parse(
        ["--config", str(path), "--output_dir", str(tmp_path / "out"), "--bf16", "false"]
    )
    assert script.task == "memory" and config.max_length == data["max_length"]
    if not path.stem.startswith("tiny"):
        assert model.model in REGISTRY and path.stem == model.model.split("/")[-1] + "_lora"
