"""Staged training (init_from): QLoRA, then full fine-tuning from its merged result, then a new
LoRA on top; each run folder names the runs before it."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT, load_script
from test_training import make_synthetic_cci, sft_argv, write_json

from malpyeong.errors import UserError
from malpyeong.inference.loading import load_for_inference, resolve_source
from malpyeong.models.backbones import get_backbone
from malpyeong.training import INIT_DIR, sft_parser, train_sft


def _weights(folder):
    from safetensors.torch import load_file

    return {k: v.float() for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_qlora_then_full_then_lora(tiny_llama, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train = write_json(tmp_path / "train.json", make_synthetic_cci(16, 3, "s"))
    steps = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2"]
    first = tmp_path / "qlora"
    train_sft(*sft_parser().parse(sft_argv(tiny_llama, train, None, first, "--method", "qlora", *steps)))
    # stage 2: full fine-tuning from stage 1 (learning rate 0: the weights it saves are the
    # weights it started from, so they show exactly where it started)
    cli = load_script(ROOT / "run" / "train.py")
    from malpyeong.cli import run_cli

    second = tmp_path / "full"
    assert (
        run_cli(
            cli.main,
            sft_argv(
                tiny_llama,
                train,
                None,
                second,
                "--method",
                "full",
                "--init_from",
                str(first),
                "--max_steps",
                "1",
                "--per_device_train_batch_size",
                "4",
                "--learning_rate",
                "0",
            ),
        )
        == 0
    )
    info = json.loads((second / "malpyeong_run.json").read_text())
    assert info["init_from"] == str(first) and info["base_model"] == str(tiny_llama)
    assert info["stages"] == [
        {"run": str(first), "stage": "sft", "method": "qlora", "model": str(tiny_llama)}
    ]
    assert (info["model"], info["method"], info["merged_dir"]) == (str(tiny_llama), "full", ".")
    assert not (second / INIT_DIR).exists()  # the full model at the root replaced the start
    saved = yaml.safe_load((second / "config.yaml").read_text(encoding="utf-8"))
    assert (saved["init_from"], saved["model"]) == (str(first), str(tiny_llama))
    # it started from the stage-1 adapter merged into a bf16 copy of the base
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, first / "adapter").merge_and_unload()
    expected = {k: v.float() for k, v in merged.state_dict().items()}
    got = _weights(second)
    plain = _weights(tiny_llama)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(got[key], expected[key])
    assert not torch.equal(got[key], plain[key])

    # stage 3: a new LoRA on the full stage; the chain grows, and the run loads for prediction
    third = tmp_path / "lora"
    train_sft(
        *sft_parser().parse(
            sft_argv(tiny_llama, train, None, third, "--method", "lora", "--init_from", str(second), *steps)
        )
    )
    info = json.loads((third / "malpyeong_run.json").read_text())
    assert [s["run"] for s in info["stages"]] == [str(first), str(second)]
    assert info["model"] == str(second) and info["base_model"] == str(tiny_llama)
    source = resolve_source(third)
    assert (source.weights, source.adapter) == (str(second), str(third / "adapter"))
    loaded = load_for_inference(source)
    assert loaded.backbone.chat_format == get_backbone(str(tiny_llama)).chat_format


def test_init_from_checks(tiny_llama, tmp_path, tiny_models):
    train = write_json(tmp_path / "train.json", make_synthetic_cci(4, 3, "s"))
    with pytest.raises(UserError, match="run folder not found"):
        sft_parser().parse(
            sft_argv(tiny_llama, train, None, tmp_path / "o", "--init_from", str(tmp_path / "none"))
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a finished run folder"):
        sft_parser().parse(
            sft_argv(tiny_llama, train, None, tmp_path / "o", "--init_from", str(tmp_path / "empty"))
        )
    first = tmp_path / "first"
    train_sft(*sft_parser().parse(sft_argv(tiny_llama, train, None, first, "--max_steps", "1")))
    other = tiny_models["qwen2"]
    with pytest.raises(UserError, match="init_from run was trained on"):
        train_sft(
            *sft_parser().parse(
                sft_argv(other, train, None, tmp_path / "o2", "--init_from", str(first), "--max_steps", "1")
            )
        )
