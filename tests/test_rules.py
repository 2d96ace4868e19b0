"""Rules mode (--rules 2025): one-line refusals with exit 2, and the memory estimate printed for
a recipe before anything is loaded (numbers from the registry, no download)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, load_script
from test_training import make_synthetic_cci, write_json

from malpyeong.cli import run_cli
from malpyeong.errors import UserError
from malpyeong.models.backbones import REGISTRY
from malpyeong.rules import check_ensemble, get_rules
from malpyeong.training import sft_parser
from malpyeong.training.vram import (
    ARCHITECTURES,
    GIB,
    NF4_BYTES,
    Architecture,
    Setup,
    architecture_of,
    estimate,
    recipe_report,
)

GEMMA = ROOT / "resource" / "configs" / "cci" / "ko-gemma-2-9b-it_qlora.yaml"


def test_rules_table_and_names():
    assert get_rules("2025").name == "2025-가"
    r = get_rules("2025-나")
    assert not r.ensembles and r.external_data and r.vram_gb == 24
    assert get_rules("2024").ensembles
    with pytest.raises(UserError, match="unknown rules '2026'"):
        get_rules("2026")
    check_ensemble(get_rules("2025"), 1)  # one model is not an ensemble


def test_train_refuses_external_data_in_ga_with_one_line(tmp_path, tiny_llama, capsys):
    train = write_json(tmp_path / "train.json", make_synthetic_cci(4, 1, "t"))
    extra = tmp_path / "magpie.jsonl"
    extra.write_text("{}\n", encoding="utf-8")
    argv = [
        "--model",
        str(tiny_llama),
        "--train_file",
        str(train),
        "--extra_train_files",
        str(extra),
        "--rules",
        "2025",
    ]
    assert run_cli(load_script("run/train.py").main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {extra}: field 'extra_train_files': the 2025-가 rules allow no "
        "external data: 1 extra training file(s) given (train on the official files "
        "only, or use a 나 setting's rules)"
    ]
    script, _, _ = sft_parser().parse(argv[:-1] + ["2025-나"])  # the 나 setting allows it
    assert script.extra_train_files == [str(extra)]


def test_vote_refuses_ensembles_under_2025(tmp_path, capsys):
    vote = load_script("ensemble/vote.py").main
    records = make_synthetic_cci(3, 5, "x")
    files = []
    for name, out in (("a", "inference_1"), ("b", "inference_2")):
        rows = [{**r, "output": out} for r in records]
        files.append(str(write_json(tmp_path / f"{name}.json", rows)))
    argv = [*files, "--output", str(tmp_path / "v.json"), "--task", "cci", "--rules", "2025"]
    assert run_cli(vote, argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: field 'rules': the 2025-가 rules allow no ensembles: 2 models' results would be "
        "combined (submit one model's results (run/test.py), or drop --rules)"
    ]
    assert not (tmp_path / "v.json").exists()
    assert run_cli(vote, argv[:-2] + ["--rules", "2024", "--priority", "a", "b"]) == 0  # allowed


def test_gemma_qlora_recipe_estimate_is_printed_before_loading(tmp_path):
    arch = ARCHITECTURES["rtzr/ko-gemma-2-9b-it"]
    assert set(ARCHITECTURES) <= set(REGISTRY)
    assert arch.params == 9_241_705_984  # gemma-2-9b's published parameter count
    # the recipe's option-order copies are augmentation, which the 가 setting forbids
    with pytest.raises(UserError, match="allow no data augmentation: option-order copies"):
        sft_parser().parse(["--config", str(GEMMA), "--rules", "2025", "--train_file", str(GEMMA)])
    script, model_args, config = sft_parser().parse(
        ["--config", str(GEMMA), "--rules", "2025", "--train_file", str(GEMMA), "--shuffle_options", "false"]
    )
    text = recipe_report(script, model_args, config)
    assert "rtzr/ko-gemma-2-9b-it, qlora, bf16/fp16 compute, batch 4 x 1024 tokens" in text
    assert "(54.0 M parameters" in text and "2025-가: 24 GB VRAM" in text and "fits" in text
    # the CLI prints it, then fails to load the (absent) weights with one line
    env = {
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "src"),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run" / "train.py"),
            "--config",
            str(GEMMA),
            "--rules",
            "2025",
            "--train_file",
            str(GEMMA),
            "--shuffle_options",
            "false",
            "--output_dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.stdout.startswith("memory estimate: rtzr/ko-gemma-2-9b-it"), done.stdout
    assert done.returncode == 2


def test_estimate_parts_follow_the_setup():
    arch = architecture_of("rtzr/ko-gemma-2-9b-it")
    base = Setup(
        method="qlora",
        compute_bytes=2,
        batch=4,
        seq=1024,
        gradient_checkpointing=True,
        lora_r=16,
        lora_dropout=0.05,
    )
    est = estimate(arch, base)
    assert est.weights == pytest.approx(arch.linear_params * NF4_BYTES + arch.other_params * 4)
    assert est.trainable_params == 54_018_048 and est.trainable == 54_018_048 * 16
    off = estimate(arch, Setup(**{**base.__dict__, "gradient_checkpointing": False}))
    assert off.activations == est.activations_other > 10 * est.activations
    full = estimate(arch, Setup(**{**base.__dict__, "method": "full"}))
    assert full.trainable == arch.params * 6 and full.total > est.total + 50 * GIB
    head = estimate(arch, Setup(**{**base.__dict__, "num_labels": 3}))
    assert head.logits == 0 and head.trainable_params == est.trainable_params + 3 * 3584
    assert est.transient == max(est.logits, est.workspace)
    with pytest.raises(UserError, match="no architecture numbers"):
        architecture_of("no/such-model")


CHILD = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[2])
from malpyeong.models.backbones import load_model
from malpyeong.training.models import lora_config
from peft import get_peft_model
torch.set_num_threads(1)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def peak_rss():
    # VmHWM is this process's own high-water mark; ru_maxrss would also count the parent's
    # resident set that a forked child inherits (a large pytest process inflates it)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
before = rss()
model = get_peft_model(load_model(sys.argv[1], "lora", attn_implementation="eager",
                                  dtype="fp32"), lora_config(16, 32, 0.0))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(5, 4000, (4, 512), generator=torch.Generator().manual_seed(0))
for _ in range(2):
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    opt.step(); opt.zero_grad(set_to_none=True)
print(peak_rss() - before)
"""


@pytest.mark.slow
def test_estimate_is_near_the_measured_peak_of_a_small_llama(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=4000,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "m")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "m"), str(ROOT / "src")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env={
            "HF_HUB_OFFLINE": "1",
            "PATH": "/usr/bin:/bin",
            "MALLOC_MMAP_THRESHOLD_": "131072",
            "HOME": str(tmp_path),
        },
    )
    measured = int(done.stdout.strip().splitlines()[-1])
    arch = Architecture.from_config(json.loads((tmp_path / "m" / "config.json").read_text()))
    est = estimate(
        arch, Setup(method="lora", compute_bytes=4, batch=4, seq=512, gradient_checkpointing=False)
    )
    print(f"estimate {est.total / GIB:.3f} GiB, measured peak {measured / GIB:.3f} GiB")
    assert 0.7 <= est.total / measured <= 1.5
