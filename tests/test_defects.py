"""The defect classes a new user hit (issue "Everyday use", section 3), one section per class.

Each refusal is checked the same way: exit code 2, exactly one line on stderr (``error: ...``),
and nothing changed on disk (every file under the test's folder byte-identical, no file added or
removed). Every test here failed on the code before the fixes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLES, load_script
from test_training import make_synthetic_cci, sft_argv, write_json

from malpyeong.cli import run_cli

TRAIN = load_script("run/train.py")
ORPO = load_script("orpo/train.py")
TEST = load_script("run/test.py")
VOTE = load_script("ensemble/vote.py")
MERGE = load_script("ensemble/merge.py")
PAIRS = load_script("orpo/build_pairs.py")
DEDUP = load_script("run/dedup.py")
MAGPIE = load_script("run/magpie.py")
VALIDATE = load_script("run/validate.py")
EVALUATE = load_script("run/evaluate.py")
RENDER = load_script("run/render.py")
COMPARE = load_script("run/compare.py")


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: content hash and permissions."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_dir():
            out[rel + "/"] = oct(p.stat().st_mode & 0o777)
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode & 0o777)
    return out


def refused(script, argv, capsys, root: Path, says: str | tuple[str, ...]) -> str:
    """Run ``script`` with ``argv``: exit 2, one line on stderr saying ``says``, nothing changed
    under ``root``. Returns the line."""
    before = snapshot(root)
    code = run_cli(script.main, [str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for words in (says,) if isinstance(says, str) else says:
        assert words in err[0], err
    assert snapshot(root) == before
    return err[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "train": write_json(root / "train.json", make_synthetic_cci(12, 3, "s")),
        "dev": write_json(root / "dev.json", make_synthetic_cci(4, 4, "v")),
    }


STEPS = [
    "--max_steps",
    "2",
    "--save_strategy",
    "steps",
    "--save_steps",
    "1",
    "--eval_strategy",
    "no",
    "--load_best_model_at_end",
    "false",
    "--per_device_train_batch_size",
    "4",
    "--gradient_accumulation_steps",
    "1",
    "--prompt",
    "highlight",
]


@pytest.fixture(scope="module")
def trained(tiny_llama, data, tmp_path_factory) -> Path:
    """A finished two-step LoRA run with checkpoint-1 and checkpoint-2 (highlight prompt)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert run_cli(TRAIN.main, sft_argv(tiny_llama, data["train"], None, out, *STEPS)) == 0
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    return out


def fake_run(folder: Path) -> Path:
    """A run folder as training leaves one (what --overwrite must not delete too early)."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"trained weights")
    (folder / "config.yaml").write_text("lora_r: 16\n")
    (folder / "malpyeong_run.json").write_text('{"model": "m"}')
    return folder


# ------------------------------------------------------------------ 1. --overwrite too early


def test_overwrite_keeps_the_old_run_until_everything_is_checked(tiny_llama, data, tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    record = make_synthetic_cci(1, 5, "b")[0]
    bad = write_json(tmp_path / "bad.json", [dict(record, id="b1", output="inference_9")])
    cases = [
        (["--model", "nobody/no-such-model"], "cannot load model 'nobody/no-such-model'"),
        (["--train_file", str(bad)], "item b1"),
        (["--prompt", "highlite"], "unknown prompt variant"),
        (["--max_length", "8"], "no training example fits max_length"),
    ]
    for extra, says in cases:
        argv = sft_argv(tiny_llama, data["train"], None, run, "--overwrite", *extra)
        refused(TRAIN, argv, capsys, tmp_path, says)
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == b"trained weights"


# ------------------------------------------------------------------ 2. recipe values, --resume


def test_recipe_values_are_type_checked_before_any_work(tiny_llama, data, tmp_path, capsys):
    out = tmp_path / "run"
    base = {
        "model": str(tiny_llama),
        "train_file": str(data["train"]),
        "output_dir": str(out),
        "report_to": "none",
    }
    cases = [
        ({"lora_r": 8.5}, ("field 'lora_r'", "whole number, got 8.5")),
        ({"per_device_train_batch_size": 0}, ("field 'per_device_train_batch_size'", "at least 1")),
        ({"learning_rate": "fast"}, "invalid float value"),
        ({"gradient_checkpointing": 3}, ("field 'gradient_checkpointing'", "true or false")),
        ({"num_train_epochs": 0}, ("field 'num_train_epochs'", "trains nothing")),
        ({"max_steps": 0}, ("field 'max_steps'", "trains nothing")),
    ]
    for i, (values, says) in enumerate(cases):
        recipe = tmp_path / f"r{i}.yaml"
        recipe.write_text(yaml.safe_dump({**base, **values}), encoding="utf-8")
        refused(TRAIN, ["--config", recipe], capsys, tmp_path, says)
    assert not out.exists()
    for flag, value in (("--num_train_epochs", "0"), ("--max_steps", "0"), ("--learning_rate", "nan")):
        refused(
            TRAIN,
            sft_argv(tiny_llama, data["train"], None, out, flag, value),
            capsys,
            tmp_path,
            f"field '{flag[2:]}'",
        )


def test_resume_with_a_changed_hyperparameter_is_refused_naming_it(
    tiny_llama, data, trained, tmp_path, capsys
):
    run = shutil.copytree(trained, tmp_path / "run")
    argv = sft_argv(tiny_llama, data["train"], None, run, *STEPS, "--resume")
    line = refused(
        TRAIN,
        argv + ["--lora_r", "8"],
        capsys,
        tmp_path,
        ("field 'lora_r'", "changed hyperparameter: lora_r was 16, now 8"),
    )
    assert "config.yaml" in line
    refused(TRAIN, argv + ["--learning_rate", "1e-3"], capsys, tmp_path, "learning_rate")


# ------------------------------------------------------------------ 3. kill -9 while saving


def test_resume_falls_back_to_the_last_complete_checkpoint(tiny_llama, data, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    # kill -9 while checkpoint-2 was written: weights half there, no trainer state yet
    (run / "checkpoint-2" / "trainer_state.json").unlink()
    weights = run / "checkpoint-2" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    steps = [a if a != "2" else "3" for a in STEPS]  # --max_steps 3
    argv = sft_argv(tiny_llama, data["train"], None, run, *steps, "--resume")
    assert run_cli(TRAIN.main, argv) == 0
    state = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert (
        json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    )  # saved again, complete


def test_ctrl_c_during_training_says_to_resume(tiny_llama, data, tmp_path, capsys, monkeypatch):
    from trl import SFTTrainer

    calls = {"n": 0}
    original = SFTTrainer.training_step

    def interrupt_on_the_second_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", interrupt_on_the_second_step)
    code = run_cli(TRAIN.main, sft_argv(tiny_llama, data["train"], None, tmp_path / "run", *STEPS))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert err[-1] == (
        "interrupted; to continue from checkpoint-1, rerun the same command with "
        "--resume (without --overwrite)"
    )


# ------------------------------------------------------------------ 4. outputs over inputs


def _cci_results(folder: Path, n_models: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    items = json.loads((SAMPLES / "cci_test.json").read_text(encoding="utf-8"))
    paths = []
    for j in range(n_models):
        # m0 and m1 agree on every item, m2 differs: a clear majority, no ties
        rows = [dict(it, output=f"inference_{(i + (j == 2)) % 3 + 1}") for i, it in enumerate(items)]
        path = folder / f"m{j}.json"
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        paths.append(path)
    return paths


def test_no_output_is_an_input_or_another_output(tiny_llama, data, tmp_path, capsys):
    results = _cci_results(tmp_path / "results")
    out = tmp_path / "vote.json"
    refused(
        VOTE,
        [*results, "--output", out, "--report", out],
        capsys,
        tmp_path,
        "--report and --output are the same path",
    )
    refused(
        VOTE,
        [*results, "--output", results[0], "--overwrite"],
        capsys,
        tmp_path,
        "--output is also an input (a results file to vote)",
    )
    refused(
        TEST,
        [
            "--model",
            tiny_llama,
            "--task",
            "cci",
            "--input",
            data["dev"],
            "--output",
            data["dev"],
            "--overwrite",
        ],
        capsys,
        data["dev"].parent,
        "--output is also an input (--input)",
    )
    refused(
        PAIRS,
        ["--task", "cci", "--data", data["train"], "--out", data["train"], "--overwrite"],
        capsys,
        data["train"].parent,
        "--out is also an input (--data)",
    )
    refused(
        DEDUP,
        ["--task", "cci", "--in", data["train"], "--out", data["train"], "--overwrite"],
        capsys,
        data["train"].parent,
        "--out is also an input (--in)",
    )
    raw = tmp_path / "magpie.jsonl.raw.jsonl"
    raw.write_text('{"_meta": {}}\n')
    refused(
        MAGPIE,
        ["--model", tiny_llama, "--n", "1", "--out", tmp_path / "magpie.jsonl", "--report", raw],
        capsys,
        tmp_path,
        "the raw file and --report are the same path",
    )
    # a run folder replaced by --overwrite must not hold the training data
    run = fake_run(tmp_path / "run")
    inside = shutil.copy(data["train"], run / "train.json")
    refused(
        TRAIN,
        sft_argv(tiny_llama, inside, None, run, "--overwrite"),
        capsys,
        tmp_path,
        "is inside the --output_dir folder",
    )


# ------------------------------------------------------------------ 5. OS errors


def test_os_problems_are_one_line_before_the_work(tiny_llama, data, tmp_path, capsys):
    parent_file = tmp_path / "afile"
    parent_file.write_text("x")
    refused(
        PAIRS,
        ["--task", "cci", "--data", data["train"], "--out", parent_file / "p.jsonl"],
        capsys,
        tmp_path,
        "is a file, not a folder",
    )
    folder = tmp_path / "results" / "x.json"
    folder.mkdir(parents=True)
    refused(
        TEST,
        ["--model", tiny_llama, "--task", "cci", "--input", data["dev"], "--output", folder, "--overwrite"],
        capsys,
        tmp_path,
        "is a folder",
    )
    refused(
        TEST,
        [
            "--model",
            tiny_llama,
            "--task",
            "cci",
            "--input",
            data["dev"],
            "--output",
            tmp_path / "r.json",
            "--device",
            "cuda",
        ],
        capsys,
        tmp_path,
        "no usable CUDA device",
    )


def test_compare_checks_its_report_folder_before_predicting(tiny_models, tmp_path, capsys):
    """run/compare.py --models predicts first: a report it may not write is said before that."""
    dev = SAMPLES / "cci_dev.json"
    models = [
        "--task",
        "cci",
        "--models",
        tiny_models["llama"],
        tiny_models["qwen2"],
        "--data",
        dev,
        "--max_length",
        "256",
    ]
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("an earlier comparison", encoding="utf-8")
    refused(COMPARE, [*models, "--out", out], capsys, tmp_path, ("report.md", "output exists"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(COMPARE, [*models, "--out", afile], capsys, tmp_path, "--out is the report folder")
    refused(
        COMPARE,
        ["--task", "cci", "--gold", dev, "--pred", out / "report.json", dev, "--out", out, "--overwrite"],
        capsys,
        tmp_path,
        "--out report.json is also an input (--pred)",
    )


def test_damaged_partial_and_sidecar_lines_are_one_line(tiny_llama, data, tmp_path, capsys):
    out = tmp_path / "res" / "dev.json"
    out.parent.mkdir()
    partial = out.with_name("dev.sidecar.jsonl.partial")
    partial.write_text('{"_meta": {}}\n{"id": "v-0", "out\n{"id": "v-1"}\n', encoding="utf-8")
    refused(
        TEST,
        ["--model", tiny_llama, "--task", "cci", "--input", data["dev"], "--output", out],
        capsys,
        tmp_path,
        ("line 2 is not valid JSON", str(partial)),
    )
    results = _cci_results(tmp_path / "results")
    side = results[0].with_name("m0.sidecar.jsonl")
    side.write_text('{"_meta": {"task": "cci"}}\n{"id": "x", "probs": [0.2,\n', encoding="utf-8")
    refused(
        VOTE,
        [*results, "--output", tmp_path / "v.json"],
        capsys,
        tmp_path,
        ("line 2 is not valid JSON", str(side)),
    )


def test_two_runs_writing_one_output_at_once_are_stopped(tiny_llama, data, tmp_path, capsys):
    from malpyeong.io import JsonlAppender

    out = tmp_path / "res" / "dev.json"
    partial = out.parent / "dev.sidecar.jsonl.partial"
    out.parent.mkdir()
    with JsonlAppender(partial) as other:  # another run, still writing
        other.write({"_meta": {"model": "other"}})
        refused(
            TEST,
            ["--model", tiny_llama, "--task", "cci", "--input", data["dev"], "--output", out, "--overwrite"],
            capsys,
            tmp_path,
            "another run is writing this file now",
        )


def test_a_read_only_folder_is_one_line(data, tmp_path, capsys):
    """A folder nobody may write to (immutable: even root cannot; else read-only by mode)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.getuid() == 0:
        if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here (no chattr)")
    else:
        os.chmod(ro, 0o555)
    try:
        line = refused(
            PAIRS,
            ["--task", "cci", "--data", data["train"], "--out", ro / "pairs.jsonl"],
            capsys,
            tmp_path,
            f"cannot write in {ro}",
        )
        assert line.startswith(f"error: {ro / 'pairs.jsonl'}: ")
    finally:
        if os.getuid() == 0:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
        else:
            os.chmod(ro, 0o755)


# ------------------------------------------------------------------ 6. extra training records


def test_extra_records_that_cannot_contribute_are_refused(tiny_llama, data, tmp_path, capsys):
    long = tmp_path / "long.jsonl"
    long.write_text(
        json.dumps(
            {
                "id": "x1",
                "messages": [
                    {"role": "user", "content": "질문 " * 600},
                    {"role": "assistant", "content": "답"},
                ],
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    other = tmp_path / "other_task.jsonl"
    other.write_text(
        json.dumps(
            {
                "id": "d1",
                "task": "dcs",
                "prompt_messages": [{"role": "user", "content": "요약해 주세요."}],
                "completion": "두 화자는 이야기했다.",
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    refused(
        TRAIN,
        sft_argv(tiny_llama, data["train"], None, out, "--extra_train_files", long),
        capsys,
        tmp_path,
        ("long.jsonl", "none of its 1 record(s) fits max_length 512"),
    )
    refused(
        TRAIN,
        sft_argv(tiny_llama, data["train"], None, out, "--extra_train_files", other),
        capsys,
        tmp_path,
        ("item d1", "field 'task'", "a record of task 'dcs'"),
    )


def test_extra_records_dropped_for_length_are_counted_per_file(tiny_llama, data, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "\n".join(
            json.dumps(r, ensure_ascii=False)
            for r in [
                {
                    "id": "ok",
                    "messages": [{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "네"}],
                },
                {
                    "id": "long",
                    "messages": [
                        {"role": "user", "content": "질문 " * 600},
                        {"role": "assistant", "content": "답"},
                    ],
                },
            ]
        )
        + "\n"
    )
    out = tmp_path / "run"
    assert (
        run_cli(
            TRAIN.main,
            sft_argv(
                tiny_llama, data["train"], None, out, "--max_steps", "1", "--extra_train_files", str(mixed)
            ),
        )
        == 0
    )
    extra = json.loads((out / "data_stats.json").read_text())["extra"]
    assert extra["per_file"] == [{"file": str(mixed), "records": 2, "fit": 1, "over_max_length": 1}]
    assert extra["mixed_in"] == 1


# ------------------------------------------------------------------ 7. bases, non-finite numbers


def _adapter(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"])).save_pretrained(out)
    return out


def test_adapters_of_another_base_are_refused(tiny_llama, data, tmp_path, capsys):
    from malpyeong.models.tiny import build_tiny_model

    other = build_tiny_model("llama", tmp_path / "other_base", seed=1)
    a, b = _adapter(tiny_llama, tmp_path / "a"), _adapter(other, tmp_path / "b")
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(
        yaml.safe_dump({"merge_method": "linear", "base_model": str(tiny_llama), "models": [str(a), str(b)]}),
        encoding="utf-8",
    )
    refused(
        MERGE,
        ["--config", cfg, "--output", tmp_path / "merged"],
        capsys,
        tmp_path,
        "trained on different bases",
    )
    pairs = tmp_path / "pairs.jsonl"
    assert run_cli(PAIRS.main, ["--task", "cci", "--data", str(data["train"]), "--out", str(pairs)]) == 0
    refused(
        ORPO,
        [
            "--model",
            tiny_llama,
            "--pairs",
            pairs,
            "--sft_adapter",
            b,
            "--output_dir",
            tmp_path / "orpo",
            "--report_to",
            "none",
        ],
        capsys,
        tmp_path,
        ("field 'sft_adapter'", f"trained on {other}"),
    )


def test_non_finite_numbers_are_refused(tiny_llama, tmp_path, capsys):
    results = _cci_results(tmp_path / "results")
    refused(
        VOTE,
        [*results, "--weights", "1", "nan", "1", "--output", tmp_path / "v.json"],
        capsys,
        tmp_path,
        "finite",
    )
    a = _adapter(tiny_llama, tmp_path / "a")
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(
        "merge_method: linear\nmodels:\n"
        f"  - model: {tiny_llama}\n    parameters: {{weight: .nan}}\n"
        f"  - model: {tiny_llama}\n    parameters: {{weight: 1.0}}\n",
        encoding="utf-8",
    )
    refused(
        MERGE,
        ["--config", cfg, "--output", tmp_path / "m"],
        capsys,
        tmp_path,
        ("field 'models[0].parameters.weight'", "finite"),
    )
    assert a.is_dir()


# ------------------------------------------------------------------ 8. wrong settings, silently


def test_a_checkpoint_predicts_with_its_runs_prompt_and_budget(trained, tmp_path):
    from malpyeong.inference.loading import resolve_source

    run = json.loads((trained / "malpyeong_run.json").read_text())
    source = resolve_source(trained / "checkpoint-1")
    assert source.defaults == {"prompt": "highlight", "max_length": run["max_length"]}
    assert source.run["task"] == "cci"


def test_a_bare_model_is_held_to_its_context_size(tiny_llama, tmp_path, capsys):
    record = json.loads((SAMPLES / "cci_dev.json").read_text(encoding="utf-8"))[0]
    ref = record["input"]["reference_id"][0]
    for u in record["input"]["conversation"]:
        if u["utterance_id"] == ref:
            u["utterance"] = "아주 긴 발화 " * 3000  # the target utterance: never cut
    big = write_json(tmp_path / "big.json", [record])
    refused(
        TEST,
        ["--model", tiny_llama, "--task", "cci", "--input", big, "--output", tmp_path / "r.json"],
        capsys,
        tmp_path,
        ("item malpyeong-sample-cci-dev-0001", "more than the model's context of 4096"),
    )


# ------------------------------------------------------------------ 9. unclear messages


def test_messages_say_what_is_wrong(tiny_llama, data, tmp_path, capsys):
    broken = tmp_path / "broken_tokenizer"
    broken.mkdir()
    shutil.copy(tiny_llama / "config.json", broken / "config.json")
    (broken / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    refused(
        RENDER,
        ["--task", "cci", "--data", data["dev"], "--model", broken],
        capsys,
        tmp_path,
        ("field 'model'", "has no tokenizer (no tokenizer.json, tokenizer.model, vocab.json or vocab.txt)"),
    )
    a = _adapter(tiny_llama, tmp_path / "a")
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(yaml.safe_dump({"merge_method": "linear", "models": [str(a), "runs/no/such/adapter"]}))
    refused(
        MERGE,
        ["--config", cfg, "--output", tmp_path / "m"],
        capsys,
        tmp_path,
        ("model not found", "runs/no/such/adapter"),
    )
    refused(VALIDATE, ["--task", "cci", tmp_path], capsys, tmp_path, "is a folder, not a file")
    refused(
        EVALUATE,
        [
            "--task",
            "dcs",
            "--gold",
            SAMPLES / "dcs_dev.json",
            "--pred",
            SAMPLES / "dcs_dev.json",
            "--bleurt_checkpoint",
            tmp_path / "no-bleurt",
        ],
        capsys,
        tmp_path,
        ("field 'bleurt_checkpoint'", "cannot load the BLEURT checkpoint"),
    )


def test_an_id_cannot_forge_error_lines(tmp_path, capsys):
    record = json.loads((SAMPLES / "cci_dev.json").read_text(encoding="utf-8"))[0]
    record["id"] = "x\nerror: everything is fine"
    record["output"] = "inference_9"
    bad = write_json(tmp_path / "bad.json", [record])
    line = refused(VALIDATE, ["--task", "cci", bad], capsys, tmp_path, "item x\\nerror:")
    assert "\n" not in line


def test_problems_are_capped_at_twenty_lines(tmp_path, capsys):
    items = json.loads((SAMPLES / "cci_test.json").read_text(encoding="utf-8"))
    files = []
    for j in range(4):
        path = tmp_path / f"s{j}.json"
        path.write_text(json.dumps([dict(it, output="bad") for it in items], ensure_ascii=False))
        files.append(path)
    assert run_cli(VALIDATE.main, ["--task", "cci", *map(str, files)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 21 and err[-1].startswith("error: ... and ")


def test_load_in_4bit_on_a_cpu_is_said_clearly(tiny_llama, data, tmp_path, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "r.json"
    assert (
        run_cli(
            TEST.main,
            [
                "--model",
                str(tiny_llama),
                "--task",
                "cci",
                "--input",
                str(data["dev"]),
                "--output",
                str(out),
                "--load_in_4bit",
                "--no_progress",
            ],
        )
        == 0
    )
    assert "--load_in_4bit on a CPU" in caplog.text


# ------------------------------------------------------------------ 10. umask


def test_written_files_honour_the_umask(tmp_path):
    results = _cci_results(tmp_path / "results")
    old = os.umask(0o022)
    try:
        assert run_cli(VOTE.main, [*map(str, results), "--output", str(tmp_path / "v.json")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "v.json").stat().st_mode & 0o777 == 0o644


def test_merge_folders_honour_the_umask(tiny_llama, tmp_path):
    a = _adapter(tiny_llama, tmp_path / "a")
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(yaml.safe_dump({"merge_method": "linear", "models": [str(a), str(a)]}))
    old = os.umask(0o022)
    try:
        assert run_cli(MERGE.main, ["--config", str(cfg), "--output", str(tmp_path / "m"), "--quiet"]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "m" / "malpyeong_run.json").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ 11. --help


@pytest.mark.parametrize(
    "script,example",
    [
        (TRAIN, "    python run/train.py --config resource/configs/cci/tiny_lora.yaml"),
        (ORPO, "    python orpo/train.py --config resource/configs/cci/tiny_orpo.yaml"),
    ],
)
def test_train_help_shows_our_options_first(script, example, capsys):
    with pytest.raises(SystemExit) as done:
        run_cli(script.main, ["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert any(line.startswith(example) for line in lines)  # the examples as written
    assert len(lines) < 165, len(lines)  # one screenful and a half, the retrieval flags included
    for option in ("--config", "--list-models", "--help-all", "--model", "--lora_r", "--prompt"):
        assert option in text, option
    assert "--per_device_train_batch_size" not in text and "--help-all lists them" in text
    with pytest.raises(SystemExit):
        run_cli(script.main, ["--help-all"])
    assert "--per_device_train_batch_size" in capsys.readouterr().out
