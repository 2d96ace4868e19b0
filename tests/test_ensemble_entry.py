"""run/ensemble_entry.py: train every member of an entry, predict, score, vote, check; rerun and
resume after kill -9, on tiny models of each member's family and the shipped samples."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SAMPLES, load_script

from malpyeong.cli import run_cli
from malpyeong.data import check_submission, load_items
from malpyeong.ensemble.entry import EntryJob, run_entry
from malpyeong.inference.results import read_results
from malpyeong.models.runfolder import is_finished_run
from malpyeong.tasks import get_task

MALBBUNGCHI = ROOT / "resource" / "configs" / "cci" / "malbbungchi"
# small and quick: 4 training items, 2 epochs of one step (so a checkpoint exists mid-member)
QUICK = [
    "num_train_epochs=2",
    "max_train_items=4",
    "per_device_train_batch_size=4",
    "gradient_accumulation_steps=1",
    "activation_checkpointing=false",
    "dev_eval_items=6",
    "report_to=none",
    "disable_tqdm=true",
]
TEST = str(SAMPLES / "cci_test.json")


@pytest.fixture
def tiny(tmp_path, tiny_models) -> Path:
    """A tiny=DIR folder holding the session's tiny models (so none is built again)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    for family, path in tiny_models.items():
        (folder / family).symlink_to(path, target_is_directory=True)
    return folder


def _copy_recipes(names: list[str], folder: Path) -> Path:
    """Some of the entry's recipes, their data paths made absolute (tests run from anywhere)."""
    folder.mkdir(parents=True)
    for name in names:
        data = yaml.safe_load((MALBBUNGCHI / name).read_text(encoding="utf-8"))
        data.update(train_file=str(ROOT / data["train_file"]), dev_file=str(ROOT / data["dev_file"]))
        (folder / name).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return folder


def test_entry_trains_predicts_votes_and_skips_on_rerun(tmp_path, tiny):
    recipes = _copy_recipes(
        ["Qwen2-7B-ko-Instruct-orpo-ver_2.0_wo_chat_qlora.yaml", "llama-3-Korean-Bllossom-8B_full.yaml"],
        tmp_path / "recipes",
    )
    out = tmp_path / "out"
    job = EntryJob(
        recipes=str(recipes),
        test=TEST,
        out=str(out),
        model_override=[f"tiny={tiny}"],
        set=QUICK,
        progress=False,
    )
    lines: list[str] = []
    data = run_entry(job, echo=lines.append)
    task = get_task("cci")
    members = ["Qwen2-7B-ko-Instruct-orpo-ver_2.0_wo_chat_qlora", "llama-3-Korean-Bllossom-8B_full"]
    assert [m["name"] for m in data["members"]] == members
    assert [m["this_run"] for m in data["members"]] == ["trained", "trained"]
    assert [m["weights"] for m in data["members"]] == [str(tiny / "qwen2"), str(tiny / "llama")]
    gold = load_items(SAMPLES / "cci_dev.json", task, require_output=True)
    for m in data["members"]:
        assert (out / "runs" / m["name"] / "malpyeong_run.json").is_file()
        dev = read_results(out / "dev" / f"{m['name']}.json")
        assert m["dev_accuracy"] == task.dev_evaluate(gold, dev.outputs)["accuracy"]
        assert len(read_results(out / "test" / f"{m['name']}.json").ids) == 18
    # the run folders are the kinds the recipes ask for: a full model (at the run folder's root,
    # as mergekit writes one), a (Q)LoRA adapter
    assert (out / "runs" / members[1] / "config.json").is_file()
    assert (out / "runs" / members[0] / "adapter" / "adapter_config.json").is_file()
    assert check_submission(out / "submission.json", TEST, task) == 18
    ensemble = read_results(out / "dev_ensemble.json").outputs
    assert data["ensemble_dev"] == task.dev_evaluate(gold, ensemble)["accuracy"]
    assert data["method"] == "hard"
    lines = "\n".join(lines).splitlines()
    warning = [line for line in lines if line.startswith("warning: member Qwen2-7B-ko")]
    assert len(warning) == 2 and "cc-by-nc-4.0" in warning[0]  # before and after the table
    table = lines[lines.index(next(line for line in lines if line.startswith("member "))) :]
    assert table[1].startswith(members[0]) and "cc-by-nc-4.0" in table[1]
    assert table[3].startswith("ensemble (hard vote)") and table[3].endswith(f"{data['ensemble_dev']:.4f}")
    assert json.loads((out / "members.json").read_text(encoding="utf-8")) == data
    first = (out / "submission.json").read_bytes()
    again = run_entry(job, echo=lambda _line: None)
    assert [m["this_run"] for m in again["members"]] == ["skipped", "skipped"]
    assert (out / "submission.json").read_bytes() == first


def test_entry_mistakes_are_one_line(tmp_path, tiny, capsys):
    main = load_script("run/ensemble_entry.py").main
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (
            ["--recipes", str(empty), "--test", TEST, "--out", str(tmp_path / "o")],
            "no *.yaml recipe in this folder",
        ),
        (
            [
                "--recipes",
                str(MALBBUNGCHI),
                "--test",
                TEST,
                "--out",
                str(tmp_path / "o"),
                "--model_override",
                "tiny",
            ],
            "is not NAME=PATH",
        ),
        (
            [
                "--recipes",
                str(MALBBUNGCHI),
                "--test",
                TEST,
                "--out",
                str(tmp_path / "o"),
                "--set",
                "num_train_epochs",
            ],
            "is not KEY=VALUE",
        ),
        (
            [
                "--recipes",
                str(MALBBUNGCHI),
                "--test",
                TEST,
                "--out",
                str(tmp_path / "o"),
                "--model_override",
                f"tiny={tiny}",
                "--set",
                "lora_rank=8",
            ],
            "unknown option(s) --lora_rank (did you mean --lora_r?)",
        ),
    ]
    for argv, message in cases:
        assert run_cli(main, argv) == 2
        shown = capsys.readouterr().err
        err = [line for line in shown.splitlines() if line.startswith("error")]
        assert len(err) == 1 and message in err[0] and "Traceback" not in shown, shown
    mixed = _copy_recipes(["Qwen2-7B_full.yaml"], tmp_path / "mixed")
    dcs = yaml.safe_load((ROOT / "resource/configs/dcs/Qwen2-7B_qlora.yaml").read_text("utf-8"))
    dcs.update(train_file=str(SAMPLES / "dcs_train.json"), dev_file=str(SAMPLES / "dcs_dev.json"))
    (mixed / "dcs.yaml").write_text(yaml.safe_dump(dcs), encoding="utf-8")
    assert (
        run_cli(
            main,
            [
                "--recipes",
                str(mixed),
                "--test",
                TEST,
                "--out",
                str(tmp_path / "o"),
                "--model_override",
                f"tiny={tiny}",
            ],
        )
        == 2
    )
    assert "the recipes are for different tasks: cci, dcs" in capsys.readouterr().err
    assert not (tmp_path / "o" / "runs").exists()  # nothing trained before every recipe parsed


def _command(out: Path, tiny: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "run" / "ensemble_entry.py"),
        "--recipes",
        str(MALBBUNGCHI),
        "--test",
        TEST,
        "--out",
        str(out),
        "--model_override",
        f"tiny={tiny}",
        "--set",
        *QUICK,
        "--no_progress",
    ]


@pytest.mark.slow
def test_the_eight_member_entry_end_to_end_and_resumed_after_kill(tmp_path):
    """All eight 말뿡치 members on tiny stand-ins: trained, predicted, voted, checked. Then the
    state of a run killed during the last member is rebuilt (the seven others done), the command
    is killed with SIGKILL in the middle of that member's training, and run again: it resumes
    from the member's last complete checkpoint, and the submission is byte-identical."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    ref, tiny = tmp_path / "ref", tmp_path / "tiny"
    done = subprocess.run(_command(ref, tiny), capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = done.stdout.splitlines()
    head = next(i for i, line in enumerate(rows) if line.startswith("member "))
    table = rows[head : head + 10]
    names = sorted(p.stem for p in MALBBUNGCHI.glob("*.yaml"))
    assert [line.split()[0] for line in table[1:9]] == names
    assert table[9].split()[:5] == ["ensemble", "(hard", "vote)", "8", "members"]
    assert f"{ref / 'submission.json'}: valid cci submission, 18 items" in done.stdout
    assert "warning: member Qwen2-7B-ko-Instruct-orpo-ver_2.0_wo_chat_qlora" in done.stdout
    assert check_submission(ref / "submission.json", TEST, get_task("cci")) == 18

    last = names[-1]  # llama-3-Korean-Bllossom-8B_full
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shutil.rmtree(run / "runs" / last)
    for split in ("dev", "test"):
        for f in (run / split).glob(f"{last}.*"):
            f.unlink()
    for f in ("submission.json", "dev_ensemble.json", "vote_report.json", "members.json"):
        (run / f).unlink()
    proc = subprocess.Popen(
        _command(run, tiny), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT
    )
    member = run / "runs" / last
    killed_mid_member = False
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        complete = [c for c in member.glob("checkpoint-*") if (c / "trainer_state.json").is_file()]
        if complete and not is_finished_run(member):
            proc.send_signal(signal.SIGKILL)
            killed_mid_member = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed_mid_member and proc.returncode == -signal.SIGKILL
    assert not is_finished_run(member) and not (run / "submission.json").exists()
    again = subprocess.run(_command(run, tiny), capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"== member 8/8 {last}" in again.stdout and "resuming from its last checkpoint" in again.stdout
    assert again.stdout.count("already trained") == 7
    for split in ("dev", "test"):
        assert (run / split / f"{last}.json").read_bytes() == (ref / split / f"{last}.json").read_bytes()
    assert (run / "submission.json").read_bytes() == (ref / "submission.json").read_bytes()
