"""Several processes on one machine, really run: two processes on the CPU (PyTorch's gloo
backend) started by `accelerate launch --config_file resource/configs/accelerate/cpu_ddp.yaml`,
for prediction and training.

Prediction: the two processes share the batches and write the same bytes as one process, and a
kill -9 of one of them followed by a rerun still gives those bytes. Training: each process sees
its shard of the data, only the first writes the run folder, dev evaluation answers every item
once, --resume continues, and the losses and adapter weights match a one-process run with the
same global batch (tolerance stated in the test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES

from malpyeong.inference.results import partial_paths, sidecar_path

pytestmark = pytest.mark.slow

# One thread per process in every run: the BLAS kernels then add in the same order in the
# one-process and the two-process runs, so their floating-point results are equal to the bit.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "MALPYEONG_LOG": "WARNING",
    "PYTHONPATH": str(ROOT / "src"),
}
LAUNCH = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--config_file",
    ROOT / "resource" / "configs" / "accelerate" / "cpu_ddp.yaml",
]


def run(cmd: list, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def predict(
    model: Path, task: str, data: Path, out: Path, *extra: str, launch: bool = False, background: bool = False
):
    cmd = [
        *(LAUNCH if launch else [sys.executable]),
        ROOT / "run" / "test.py",
        "--model",
        model,
        "--task",
        task,
        "--input",
        data,
        "--output",
        out,
        "--no_progress",
        *extra,
    ]
    if background:
        return subprocess.Popen(
            [str(c) for c in cmd], env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    return run(cmd)


def same_files(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes() and sidecar_path(a).read_bytes() == sidecar_path(b).read_bytes()


def worker_pids(marker: str, rank: int) -> list[int]:
    """The run/test.py processes of one launch (their command line names ``marker``) with
    the given RANK."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if "run/test.py" in cmd and marker in cmd and f"RANK={rank}".encode() in env:
            found.append(int(proc.name))
    return found


def test_two_processes_predict_the_same_bytes_and_resume_after_kill(tiny_llama, tmp_path):
    one = tmp_path / "one" / "cci.json"
    two = tmp_path / "two" / "cci.json"
    # loglik with --permute at batch size 1: many batches, items spread over several of them
    args = ("--scoring", "loglik", "--permute", "--batch_size", "1")
    predict(tiny_llama, "cci", SAMPLES / "cci_test.json", one, *args)
    predict(tiny_llama, "cci", SAMPLES / "cci_test.json", two, *args, launch=True)
    assert same_files(one, two)
    assert partial_paths(two) == []

    dcs_one, dcs_two = tmp_path / "one" / "dcs.json", tmp_path / "two" / "dcs.json"
    gen = ("--max_new_tokens", "8", "--batch_size", "2", "--max_length", "512")
    predict(tiny_llama, "dcs", SAMPLES / "dcs_dev.json", dcs_one, *gen)
    predict(tiny_llama, "dcs", SAMPLES / "dcs_dev.json", dcs_two, *gen, launch=True)
    assert same_files(dcs_one, dcs_two)

    # kill -9 one process once both have written rows, then run the same command again (on a
    # larger file, so that the processes are still at work when the kill comes)
    big = tmp_path / "big.json"
    rows = json.loads((SAMPLES / "cci_test.json").read_text(encoding="utf-8"))
    big.write_text(
        json.dumps([{**r, "id": f"{r['id']}-{k}"} for k in range(6) for r in rows], ensure_ascii=False),
        encoding="utf-8",
    )
    ref = tmp_path / "ref" / "cci.json"
    predict(tiny_llama, "cci", big, ref, *args)
    killed = tmp_path / "killed" / "cci.json"
    launch = predict(tiny_llama, "cci", big, killed, *args, launch=True, background=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = [len(p.read_text(encoding="utf-8").splitlines()) for p in partial_paths(killed)]
        if len(rows) == 2 and min(rows) >= 3:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the two processes never both wrote rows")
    victims = worker_pids(str(killed), 1)
    assert victims, "no rank-1 worker found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert launch.wait(timeout=300) != 0  # the launcher stops the run when a worker dies
    assert not killed.exists() and partial_paths(killed)  # nothing final, the rows kept
    predict(tiny_llama, "cci", big, killed, *args, launch=True)
    assert same_files(ref, killed)
    assert partial_paths(killed) == []


def train(model: Path, out: Path, *extra: str, launch: bool = False) -> subprocess.CompletedProcess:
    cmd = [
        *(LAUNCH if launch else [sys.executable]),
        ROOT / "run" / "train.py",
        "--config",
        ROOT / "resource" / "configs" / "cci" / "tiny_lora.yaml",
        "--model",
        model,
        "--output_dir",
        out,
        "--report_to",
        "none",
        "--train_sampling_strategy",
        "sequential",
        "--shuffle_options",
        "false",
        "--logging_steps",
        "1",
        "--eval_strategy",
        "steps",
        "--save_strategy",
        "steps",
        "--early_stopping_patience",
        "0",
        "--load_best_model_at_end",
        "false",
        "--warmup_steps",
        "0",
        "--lr_scheduler_type",
        "constant",
        *extra,
    ]
    return run(cmd)


def train_losses(out: Path) -> list[float]:
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_two_processes_train_like_one_with_the_same_global_batch(tiny_llama, tmp_path):
    steps = ("--max_steps", "4", "--eval_steps", "4", "--save_steps", "4", "--save_total_limit", "1")
    one, two = tmp_path / "one", tmp_path / "two"
    # global batch 8: one process x 8, or two processes x 4
    train(tiny_llama, one, *steps, "--per_device_train_batch_size", "8")
    train(tiny_llama, two, *steps, "--per_device_train_batch_size", "4", launch=True)

    a, b = train_losses(one), train_losses(two)
    assert len(a) == len(b) == 4
    # Tolerance: the same examples form each global batch (sequential order, each process takes
    # every other one), and the gradient is the token-weighted mean over both processes, so the
    # runs differ only by floating-point summation order: 1e-4 relative on every logged loss
    # and 1e-5 absolute on every adapter weight.
    assert a == pytest.approx(b, rel=1e-4)
    wa, wb = adapter(one), adapter(two)
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    assert max(float(wa[k].abs().max()) for k in wa if "lora_B" in k) > 1e-4  # B starts at 0

    # each process saw half of every global batch (4 of 8 examples), and dev evaluation
    # answered each of the 18 dev items once, split 9 + 9
    dev = json.loads((two / "dev_metrics.json").read_text())
    assert dev["best_report"]["n"] == 18
    assert dev["best_report"]["answered_per_process"] == [9, 9]
    one_dev = json.loads((one / "dev_metrics.json").read_text())
    assert one_dev["best_report"]["answered_per_process"] == [18]
    assert dev["best"] == one_dev["best"]
    written = sorted(p.name for p in two.iterdir())
    assert written == sorted(p.name for p in one.iterdir())  # the same run folder, written once

    # --resume under two processes: a recipe run stopped after 2 steps continues to 4
    resumed = tmp_path / "resumed"
    base = [
        *LAUNCH,
        ROOT / "run" / "train.py",
        "--config",
        ROOT / "resource" / "configs" / "cci" / "tiny_lora.yaml",
        "--model",
        tiny_llama,
        "--output_dir",
        resumed,
        "--report_to",
        "none",
        "--eval_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
    ]
    run([*base, "--max_steps", "2"])
    run([*base, "--max_steps", "4", "--resume"])
    state = json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and not (resumed / "checkpoint-2").exists()
