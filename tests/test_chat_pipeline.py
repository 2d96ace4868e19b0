"""Script -> pairs -> LoRA -> predict -> evaluate -> merge, end to end on a CPU, with a tiny
Mistral and a tiny Mamba (no attention, no chat template: the transcript format)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT, SAMPLES, load_script

from malpyeong.cli import run_cli
from malpyeong.errors import UserError
from malpyeong.inference.results import read_results
from malpyeong.models.tiny import build_tiny_embedder, build_tiny_model, real_tokenizer_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tiny_models, tiny_mamba, tmp_path_factory):
    """Ours, and Mistral-7B-Instruct-v0.3's real tokenizer and template when installed."""
    out = {**tiny_models, "mamba": tiny_mamba}
    try:
        real_tokenizer_file("mistral")
        out["mistral_v3"] = build_tiny_model("mistral", tmp_path_factory.mktemp("v3") / "m", tokenizer="real")
    except UserError:
        pass
    return out


def call(script: str, args: list, capsys) -> str:
    code = run_cli(load_script(ROOT / script).main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    main = load_script(ROOT / "run" / "script_pairs.py").main
    scripts = SAMPLES / "scripts"
    assert (
        run_cli(
            main,
            ["--in", str(scripts / "ko_office.txt"), "--out", str(root / "train.jsonl"), "--context", "2"],
        )
        == 0
    )
    assert (
        run_cli(
            main,
            ["--in", str(scripts / "ko_camping.html"), "--out", str(root / "dev.jsonl"), "--context", "2"],
        )
        == 0
    )
    return root / "train.jsonl", root / "dev.jsonl"


@pytest.mark.parametrize(
    "family, targets",
    [
        ("mistral", ["all-linear"]),
        ("mistral_v3", ["all-linear"]),  # the real v0.3 tokenizer and template
        ("mamba", ["x_proj", "embeddings", "in_proj"]),  # peft refuses out_proj on Mamba
    ],
)
def test_lora_on_pairs_then_predict_evaluate_and_merge(family, targets, pairs, models, tmp_path, capsys):
    if family not in models:
        pytest.skip("the real Mistral v3 tokenizer is not installed (pip install -e '.[dev]')")
    train, dev = pairs
    run = tmp_path / "run"
    call(
        "run/train.py",
        [
            "--model",
            models[family],
            "--task",
            "chat",
            "--train_file",
            train,
            "--dev_file",
            dev,
            "--dev_eval_items",
            "4",
            "--output_dir",
            run,
            "--max_steps",
            "2",
            "--report_to",
            "none",
            "--activation_checkpointing",
            "false",
            "--max_length",
            "160",
            "--per_device_train_batch_size",
            "4",
            "--gradient_accumulation_steps",
            "1",
            "--eval_max_new_tokens",
            "6",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--disable_tqdm",
            "true",
            "--learning_rate",
            "1e-3",
            "--merge",
            "true",
            "--lora_target_modules",
            *targets,
        ],
        capsys,
    )
    metrics = json.loads((run / "dev_metrics.json").read_text(encoding="utf-8"))
    assert metrics["metric"] == "rougeL" and metrics["best_report"]["n"] == 4
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    modules = {m.rsplit(".", 1)[-1] for m in adapter["target_modules"]}
    assert modules == (
        set(targets)
        if family == "mamba"
        else {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    )
    assert (run / "config.json").is_file()  # the merged model at the run folder's root

    out = tmp_path / "res" / "dev.json"
    shown = call(
        "run/test.py",
        [
            "--model",
            run,
            "--task",
            "chat",
            "--input",
            dev,
            "--output",
            out,
            "--max_new_tokens",
            "6",
            "--no_progress",
        ],
        capsys,
    )
    assert "10 chat predictions" in shown
    results = read_results(out)
    assert all(r["ref_tokens"] > 0 and r["ref_logprob"] < 0 for r in results.rows.values())

    bert = build_tiny_embedder(tmp_path / "bert")
    shown = call(
        "run/evaluate.py", ["--task", "chat", "--gold", dev, "--pred", out, "--bertscore_model", bert], capsys
    )
    print(shown)
    values = dict(re.findall(r"^(\w+)\s+([\d.]+)$", shown, re.M))
    assert set(values) == {"rougeL", "bertscore", "perplexity", "distinct1", "distinct2", "avg_words"}
    assert float(values["perplexity"]) > 1.0

    config = tmp_path / "merge.yaml"  # two copies of one adapter, averaged: the same adapter
    config.write_text(
        f"merge_method: linear\nmodels:\n  - model: {run}\n  - model: {run}\n", encoding="utf-8"
    )
    call("ensemble/merge.py", ["--config", config, "--output", tmp_path / "merged", "--fold"], capsys)
    shown = call(
        "run/test.py",
        [
            "--model",
            tmp_path / "merged",
            "--task",
            "chat",
            "--input",
            dev,
            "--output",
            tmp_path / "res" / "merged.json",
            "--max_new_tokens",
            "6",
            "--no_progress",
        ],
        capsys,
    )
    assert "10 chat predictions" in shown
