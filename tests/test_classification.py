"""The classification head (``--objective classification``): rows, the run folder, prediction
through the head into the usual results files, voting with letter-scored results, and the CPU
learning checks on the learnable synthetic CCI set (LoRA and 4-bit QLoRA)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from test_training import build_synthetic_model, make_synthetic_cci, write_json

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.classifier import ClassifierEngine
from malpyeong.inference.results import read_results, sidecar_path
from malpyeong.models.backbones import get_backbone, load_model, load_tokenizer
from malpyeong.models.budget import fit_prompt
from malpyeong.tasks import get_task
from malpyeong.training import build_classification_rows, sft_parser, train_run


def head_argv(model: Path, train: Path, dev: Path | None, out: Path, *extra: str) -> list[str]:
    argv = [
        "--model",
        str(model),
        "--task",
        "cci",
        "--train_file",
        str(train),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--activation_checkpointing",
        "false",
        "--disable_tqdm",
        "true",
        "--max_length",
        "512",
        "--objective",
        "classification",
        "--seed",
        "0",
    ]
    return argv + (["--dev_file", str(dev)] if dev else []) + list(extra)


@pytest.fixture(scope="module")
def head_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("head")
    return {
        "train": write_json(root / "train.json", make_synthetic_cci(24, 3, "s")),
        "dev": write_json(root / "dev.json", make_synthetic_cci(9, 4, "v")),
        "root": root,
    }


@pytest.fixture(scope="module")
def head_run(head_files, tiny_llama) -> Path:
    """A LoRA classification run on the tiny Llama (a few steps: the files, not the accuracy)."""
    out = head_files["root"] / "run"
    train_run(
        *sft_parser().parse(
            head_argv(
                tiny_llama,
                head_files["train"],
                head_files["dev"],
                out,
                "--max_steps",
                "2",
                "--eval_strategy",
                "steps",
                "--eval_steps",
                "2",
                "--save_strategy",
                "steps",
                "--save_steps",
                "2",
                "--per_device_train_batch_size",
                "4",
                "--gradient_accumulation_steps",
                "1",
                "--shuffle_options",
                "true",
            )
        )
    )
    return out


def test_objective_is_for_choice_tasks_only(head_files, tiny_llama, tmp_path, dcs_record):
    dcs = write_json(tmp_path / "dcs.json", [dcs_record])
    argv = [
        "--model",
        str(tiny_llama),
        "--task",
        "dcs",
        "--train_file",
        str(dcs),
        "--objective",
        "classification",
    ]
    with pytest.raises(UserError, match="task dcs cannot be trained with objective 'classification'"):
        sft_parser().parse(argv)
    argv = head_argv(tiny_llama, head_files["train"], None, tmp_path / "r", "--merge", "true")
    with pytest.raises(UserError, match="--merge is for language-model adapters"):
        train_run(*sft_parser().parse(argv))


def test_rows_are_the_prediction_prompt_and_the_gold_index(head_files, tiny_llama):
    task = get_task("cci")
    items = load_items(head_files["train"], task)[:4]
    tok = load_tokenizer(str(tiny_llama))
    backbone = get_backbone(str(tiny_llama))
    spec = task.prompt_spec("baseline")
    rows, stats = build_classification_rows(task, items, tok, backbone, spec, 512)
    assert [r["labels"] for r in rows] == [it.label for it in items]
    assert rows[0]["input_ids"] == fit_prompt(task, items[0], tok, backbone, spec, 512).input_ids
    assert stats.examples == 4 and stats.over_budget == 0
    short, stats = build_classification_rows(task, items, tok, backbone, spec, 40)
    assert short == [] and stats.over_budget == 4


def test_run_folder_saves_the_head_with_the_adapter(head_run):
    from safetensors import safe_open

    run = json.loads((head_run / "malpyeong_run.json").read_text())
    assert run["objective"] == "classification" and run["num_labels"] == 3
    config = json.loads((head_run / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    with safe_open(str(head_run / "adapter" / "adapter_model.safetensors"), "pt") as f:
        heads = [k for k in f.keys() if "score" in k]  # noqa: SIM118 - safe_open has no iter
        assert heads and f.get_tensor(heads[0]).shape[0] == 3
    dev = json.loads((head_run / "dev_metrics.json").read_text())
    assert any("eval_accuracy" in h for h in dev["history"])


def _predict(model: Path, data: Path, out: Path, *extra: str) -> Path:
    code = load_script("run/test.py").main(
        [
            "--model",
            str(model),
            "--task",
            "cci",
            "--input",
            str(data),
            "--output",
            str(out),
            "--no_progress",
            "--device",
            "cpu",
            *extra,
        ]
    )
    assert code == 0
    return out


def test_prediction_reads_the_head_and_votes_with_letter_scores(head_run, head_files, tiny_llama, tmp_path):
    dev = head_files["dev"]
    head = _predict(head_run, dev, tmp_path / "head.json", "--batch_size", "8")
    single = _predict(head_run, dev, tmp_path / "head_b1.json", "--batch_size", "1")
    permuted = _predict(head_run, dev, tmp_path / "head_perm.json", "--permute")
    letter = _predict(tiny_llama, dev, tmp_path / "letter.json")
    res = read_results(head)
    assert len(res.ids) == 9 and set(res.outputs.values()) <= {"inference_1", "inference_2", "inference_3"}
    for i in res.ids:
        assert abs(sum(res.probs[i]) - 1) < 1e-9
        assert res.outputs[i] == f"inference_{int(np.argmax(res.probs[i])) + 1}"
    # right padding: a row's probabilities do not depend on what it is batched with
    alone = read_results(single)
    assert all(np.allclose(res.probs[i], alone.probs[i], atol=1e-6) for i in res.ids)
    assert read_results(permuted).probs != res.probs
    vote = load_script("ensemble/vote.py").main
    for method in ("hard", "soft"):
        out = tmp_path / f"vote_{method}.json"
        assert vote([str(head), str(letter), str(permuted), "--method", method, "--output", str(out)]) == 0
        assert len(json.loads(out.read_text())) == 9
    soft = read_results(tmp_path / "vote_soft.json")
    parts = [read_results(p) for p in (head, letter, permuted)]
    for i in soft.ids:  # soft voting averages the head's probabilities with the letter scores
        mean = np.mean([p.probs[i] for p in parts], axis=0)
        assert soft.outputs[i] == f"inference_{int(np.argmax(mean)) + 1}"
    assert sidecar_path(head).is_file()


def test_the_head_answers_by_its_head_only(head_run, head_files, tmp_path, capsys):
    main = load_script("run/test.py").main
    argv = [
        "--model",
        str(head_run),
        "--task",
        "cci",
        "--input",
        str(head_files["dev"]),
        "--output",
        str(tmp_path / "x.json"),
        "--scoring",
        "loglik",
        "--no_progress",
    ]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: field 'scoring': a classification head scores the options itself; "
        "--scoring loglik is for language models"
    ]


# ------------------------------------------------------------------------------ learning


@pytest.fixture(scope="module")
def learnable(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("learn_head")
    train = make_synthetic_cci(4800, 1, "t")
    return {
        "model": build_synthetic_model(root / "model", train),
        "train": write_json(root / "train.json", train),
        "dev": write_json(root / "dev.json", make_synthetic_cci(90, 2, "d")),
        "root": root,
    }


# The head leaves the chance plateau after 150-250 steps (seed 42; with seed 0 it was still there
# at 300), so 400 steps with the best checkpoint kept.
LEARN = [
    "--seed",
    "42",
    "--learning_rate",
    "1e-3",
    "--max_steps",
    "400",
    "--warmup_steps",
    "0.05",
    "--per_device_train_batch_size",
    "16",
    "--gradient_accumulation_steps",
    "1",
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "50",
    "--save_strategy",
    "steps",
    "--save_steps",
    "50",
    "--early_stopping_patience",
    "0",
    "--logging_steps",
    "50",
    "--lora_r",
    "16",
    "--lora_alpha",
    "32",
    "--lora_dropout",
    "0",
    "--lora_target_modules",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "embed_tokens",
]


def head_accuracy(model, tokenizer, path: Path, dev: Path) -> float:
    """Held-out accuracy of a classifier through the answering path."""
    task = get_task("cci")
    items = load_items(dev, task)
    engine = ClassifierEngine(model, tokenizer, get_backbone(str(path)))
    run = answer_items(engine, task, items, AnswerSettings(max_length=512), progress=False)
    return sum(o == task.reference(it) for o, it in zip(run.outputs, items, strict=True)) / len(items)


def learn_head(learnable: dict, method: str, tmp: Path) -> tuple[float, float]:
    """Accuracy of the untrained head (the same seeded start as training) and of the trained
    run as run/test.py serves it (QLoRA: on a 4-bit base)."""
    from transformers import set_seed

    path = learnable["model"]
    tok = load_tokenizer(str(path))
    set_seed(42)
    start = load_model(str(path), method, num_labels=3)
    start.config.pad_token_id = tok.pad_token_id
    before = head_accuracy(start, tok, path, learnable["dev"])
    out = tmp / f"head_{method}"
    train_run(
        *sft_parser().parse(
            head_argv(path, learnable["train"], learnable["dev"], out, "--method", method, *LEARN)
        )
    )
    extra = ["--load_in_4bit"] if method == "qlora" else []
    pred = _predict(out, learnable["dev"], tmp / f"{method}.json", *extra)
    gold = {r["id"]: r["output"] for r in json.loads(learnable["dev"].read_text())}
    got = read_results(pred).outputs
    after = sum(got[i] == gold[i] for i in gold) / len(gold)
    return before, after


@pytest.mark.slow
def test_lora_head_learns_the_rule_on_cpu(learnable, tmp_path):
    before, after = learn_head(learnable, "lora", tmp_path)
    print(f"LoRA head: held-out accuracy {before:.3f} -> {after:.3f}")
    assert 0.15 <= before <= 0.55, before
    assert after >= 0.9, after


@pytest.mark.slow
def test_qlora_head_learns_the_rule_on_cpu(learnable, tmp_path):
    before, after = learn_head(learnable, "qlora", tmp_path)
    print(f"QLoRA head: held-out accuracy {before:.3f} -> {after:.3f}")
    assert 0.15 <= before <= 0.55, before
    assert after >= 0.85, after
