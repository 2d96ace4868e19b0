"""Backbone registry, loading errors, length budget, tiny models."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from malpyeong.errors import UserError
from malpyeong.models.backbones import (
    REGISTRY,
    fold_system,
    get_backbone,
    load_model,
    load_tokenizer,
    registry_table,
)
from malpyeong.models.budget import fit_prompt
from malpyeong.tasks import get_task
from malpyeong.tasks.base import BASELINE


def test_registry_has_the_competition_backbones():
    for name in [
        "MLP-KTLim/llama-3-Korean-Bllossom-8B",
        "x2bee/POLAR-14B-v0.2",
        "rtzr/ko-gemma-2-9b-it",
        "google/gemma-2-9b-it",
        "beomi/Solar-Ko-Recovery-11B",
        "yanolja/EEVE-Korean-Instruct-10.8B-v1.0",
        "Qwen/Qwen2-7B",
        "Qwen/Qwen2-7B-Instruct",
        "THUDM/glm-4-9b-chat",
        "cpm-ai/Ocelot-Ko-self-instruction-10.8B-v1.0",
        "Qwen/Qwen2.5-3B-Instruct",
        "meta-llama/Llama-3.2-3B-Instruct",
    ]:
        assert name in REGISTRY and name in registry_table()
    gemma = REGISTRY["rtzr/ko-gemma-2-9b-it"]
    assert not gemma.system_role and gemma.attn_implementation == "eager"
    assert REGISTRY["THUDM/glm-4-9b-chat"].trust_remote_code


def test_inferred_backbone_for_local_paths(tiny_models):
    assert get_backbone(str(tiny_models["gemma2"])).chat_format == "gemma2"
    assert not get_backbone(str(tiny_models["gemma2"])).system_role
    assert get_backbone(str(tiny_models["qwen2"])).chat_format == "chatml"
    assert get_backbone("someone/unknown-model").family == "llama"


def test_fold_system():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert fold_system(msgs) == [{"role": "user", "content": "S\n\nU"}]
    assert fold_system(msgs[1:]) == msgs[1:]


def test_unknown_model_offline_is_one_clear_error():
    with pytest.raises(UserError, match="not in the local hub cache"):
        load_tokenizer("nobody/no-such-model-xyz")
    with pytest.raises(UserError, match="not in the local hub cache"):
        load_model("nobody/no-such-model-xyz")
    with pytest.raises(UserError, match="unknown method"):
        load_model("x", method="qlora4")


def test_tiny_models_load_and_run(tiny_models):
    import torch

    classes = {
        "llama": "LlamaForCausalLM",
        "gemma2": "Gemma2ForCausalLM",
        "qwen2": "Qwen2ForCausalLM",
        "mistral": "MistralForCausalLM",
        "exaone": "LlamaForCausalLM",
    }  # transformers runs EXAONE 3.x on its Llama layers
    for family, path in tiny_models.items():
        model = load_model(str(path), "full")
        assert type(model).__name__ == classes[family]
        tok = load_tokenizer(str(path))
        ids = tok("안녕하세요", return_tensors="pt")["input_ids"]
        logits = model(ids).logits
        assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_tiny_models_are_deterministic(tmp_path):
    from malpyeong.models.tiny import build_tiny_model

    a = build_tiny_model("qwen2", tmp_path / "a", seed=3)
    b = build_tiny_model("qwen2", tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_our_bpe_trains_on_the_shipped_samples():
    """The tokenizer's training text holds every sample file's strings (a path one level off,
    after the move into models/, left only the seed text and changed every tiny tokenizer)."""
    import json

    from malpyeong.models.tiny import SEED_TEXT, corpus_texts

    texts = corpus_texts()
    sample = json.loads((ROOT / "resource" / "data" / "cci_dev.json").read_text(encoding="utf-8"))
    assert sample[0]["input"]["inference_3"] in texts
    assert len(texts) > len(SEED_TEXT.splitlines()) + 1000


def test_length_budget_cuts_conversation_not_question(tiny_models, cci_record, dcs_record):
    path = str(tiny_models["llama"])
    backbone, tok = get_backbone(path), load_tokenizer(path)
    task = get_task("cci")
    problems = []
    item = task.parse_item(cci_record, problems)
    full = fit_prompt(task, item, tok, backbone, BASELINE)
    assert full.dropped == 0 and full.fits
    budget = len(full.input_ids) - 5
    cut = fit_prompt(task, item, tok, backbone, BASELINE, max_length=budget)
    assert cut.fits and cut.dropped >= 1 and len(cut.input_ids) <= budget
    assert "그럼 공원에 산책 가자." in cut.text and "C. 화자2는 우산을 사고 싶어 한다." in cut.text
    assert "어제 비가 많이 와서" not in cut.text  # farthest from the reference goes first
    assert "화자: …" in cut.text
    tight = fit_prompt(task, item, tok, backbone, BASELINE, max_length=10)
    assert not tight.fits and tight.dropped == 3


def test_tiny_model_cli(tmp_path):
    out = tmp_path / "m"
    cmd = [sys.executable, str(ROOT / "run" / "tiny_model.py"), "--family", "mistral", "--out", str(out)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert (
        again.returncode == 2 and "output folder exists" in again.stderr and "Traceback" not in again.stderr
    )
