"""The 2025 tasks end to end with a tiny Qwen3 (real tokenizer): LoRA on our samples (rag with
retrieved passages), prediction (the run's passages by default), the submission check, and every
metric of the official 2025 scoring printed; 선다형 predictions are digits."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, SAMPLES, load_script
from test_metrics import _make_bleurt

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.inference.results import read_results
from malpyeong.models.runfolder import read_run
from malpyeong.tasks import get_task

pytestmark = pytest.mark.slow
NAMES = {
    "rag": ("final", "exact_match", "rouge1", "bertscore", "bleurt", "descriptive"),
    "culture": ("final", "accuracy", "exact_match", "rouge1", "bertscore", "bleurt", "descriptive"),
}


def call(script: str, *args, capsys) -> str:
    code = run_cli(load_script(script).main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_train_predict_validate_evaluate_both_tasks(tiny_qwen3, tiny_embedder, tmp_path, capsys):
    bleurt = tmp_path / "bleurt"
    _make_bleurt(bleurt, emb=None)
    index = tmp_path / "norms"
    call(
        "run/retrieve.py",
        "build",
        "--corpus",
        *sorted((SAMPLES / "norms").glob("*.md")),
        "--out",
        index,
        capsys=capsys,
    )
    metric_options = ["--bertscore_model", tiny_embedder, "--bleurt_checkpoint", bleurt]
    for task in ("rag", "culture"):
        run = tmp_path / f"run-{task}"
        extra = ["--retrieve", index, "--retrieve_k", "2"] if task == "rag" else []
        shown = call(
            "run/train.py",
            "--config",
            ROOT / f"resource/configs/{task}/tiny_lora.yaml",
            "--model",
            tiny_qwen3,
            "--output_dir",
            run,
            "--train_file",
            SAMPLES / f"{task}_train.jsonl",
            "--dev_file",
            SAMPLES / f"{task}_dev.jsonl",
            "--max_steps",
            "2",
            "--report_to",
            "none",
            *extra,
            capsys=capsys,
        )
        assert f"run folder: {run}" in shown
        trained = read_run(run).get("retrieve")
        assert (
            (trained["index"], trained["k"]) == (str(index.resolve()), 2)
            if task == "rag"
            else trained is None
        )
        for split in ("dev", "test"):
            source, out = SAMPLES / f"{task}_{split}.jsonl", tmp_path / f"{task}_{split}.json"
            shown = call(
                "run/test.py", "--model", run, "--task", task, "--input", source, "--output", out,
                "--max_new_tokens", "12", capsys=capsys,
            )  # fmt: skip
            assert f"{out}: " in shown and "predictions" in shown
            results = read_results(out)
            if task == "rag":  # the run's index and k by default
                assert results.meta["retrieve"] == {"index": str(index.resolve()), "k": 2, "mode": None}
            assert "valid" in call(
                "run/validate.py", "--task", task, "--submission", out, "--test", source, capsys=capsys
            )
            task_ = get_task(task)
            for item in load_items(source, task_):  # a fallback is counted as unusable, never as repaired
                row = results.rows[item.id]
                if task_.parse_output(item, row["text"]) is None:
                    assert row["output"] == task_.fallback_output(item) and "flags" not in row, row
            rows = json.loads(out.read_text(encoding="utf-8"))
            for row in rows:
                assert isinstance(row["output"]["answer"], str) and row["output"]["answer"].strip()
                if row["input"]["question_type"] == "선다형":
                    assert row["output"]["answer"].isdigit(), row
        gold = SAMPLES / f"{task}_dev.jsonl"
        for pred in (tmp_path / f"{task}_dev.json", tmp_path / f"{task}_gold.json"):
            if pred.name.endswith("gold.json"):  # the gold as predictions: every text metric computed
                records = [json.loads(line) for line in gold.read_text(encoding="utf-8").splitlines()]
                pred.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
            text = call(
                "run/evaluate.py",
                "--task",
                task,
                "--gold",
                gold,
                "--pred",
                pred,
                *metric_options,
                capsys=capsys,
            )
            for name in NAMES[task]:
                assert any(line.startswith(name) for line in text.splitlines()), (name, text)
            report = json.loads(
                call("run/evaluate.py", "--task", task, "--gold", gold, "--pred", pred, *metric_options, "--json",
                     capsys=capsys)
            )  # fmt: skip
            assert set(NAMES[task]) <= set(report) and report["counts"]["items"] == 6
            with capsys.disabled():
                print(f"\n{task} {pred.name}: " + ", ".join(f"{n} {report[n]}" for n in NAMES[task]))
            if pred.name.endswith("gold.json"):
                assert report["complete"] and all(report[n] is not None for n in NAMES[task])
                if task == "rag":
                    assert report["exact_match"] == 1.0 and report["counts"]["reason_pairs"] == 6
                    assert report["rouge1"] == 1.0 and report["bertscore"] == pytest.approx(1.0, abs=1e-5)
                    assert report["final"] == pytest.approx((1 + report["descriptive"]) / 2, abs=1e-12)
                else:
                    assert report["counts"]["by_type"] == {"선다형": 2, "단답형": 2, "서술형": 2}
                    # a gold written with '#' alternatives equals none of them: 1 of the 2 단답형
                    assert report["accuracy"] == 1.0 and report["exact_match"] == 0.5
                    expected = (1.0 + 0.5 + report["descriptive"]) / 3
                    assert report["final"] == pytest.approx(expected, abs=1e-12)


def test_tiny_model_learns_the_synthetic_choice_rule(tmp_path, capsys):
    """Held-out 선다형 accuracy from chance (1/4) to >= 0.9: full fine-tuning of a tiny Llama
    (our BPE, LM head x16) for 500 steps on the learnable synthetic culture set."""
    data, model, run = tmp_path / "data", tmp_path / "model", tmp_path / "run"
    call("run/synthetic.py", "--task", "culture", "--out", data, "--train", "3000", "--dev", "120", "--test", "5",
         capsys=capsys)  # fmt: skip
    call("run/tiny_model.py", "--family", "llama", "--out", model, "--corpus", data / "culture_train.json",
         "--task", "culture", "--output_scale", "16", capsys=capsys)  # fmt: skip
    dev = data / "culture_dev.json"

    def choice_accuracy(source, name: str) -> float:
        out = tmp_path / f"{name}.json"
        call("run/test.py", "--model", source, "--task", "culture", "--input", dev, "--output", out,
             "--prompt", "zeroshot", "--max_new_tokens", "3", "--no_progress", capsys=capsys)  # fmt: skip
        report = json.loads(
            call("run/evaluate.py", "--task", "culture", "--gold", dev, "--pred", out, "--skip", "bertscore", "bleurt",
                 "--json", capsys=capsys)
        )  # fmt: skip
        assert all(row["output"]["answer"].isdigit() for row in json.loads(out.read_text(encoding="utf-8"))
                   if row["input"]["question_type"] == "선다형")  # fmt: skip
        return report["accuracy"]

    before = choice_accuracy(model, "before")
    call(
        "run/train.py", "--model", model, "--task", "culture", "--method", "full",
        "--train_file", data / "culture_train.json", "--prompt", "zeroshot", "--max_length", "512",
        "--learning_rate", "3e-3", "--lr_scheduler_type", "constant_with_warmup", "--warmup_steps", "0.05",
        "--max_steps", "500", "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "1",
        "--batching", "none", "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "100",
        "--disable_tqdm", "true", "--report_to", "none", "--activation_checkpointing", "false", "--output_dir", run,
        capsys=capsys,
    )  # fmt: skip
    after = choice_accuracy(run, "after")
    with capsys.disabled():
        print(
            f"\nheld-out 선다형 accuracy on the synthetic culture set: before {before:.4f}, after {after:.4f}"
        )
    assert 0.1 <= before <= 0.45 and after >= 0.9, (before, after)
