"""kill -9 in the middle of run/test.py, run it again: the final files are byte-identical to
those of a run that was never interrupted."""

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

from malpyeong.inference.results import partial_path, sidecar_path

TEST = ROOT / "run" / "test.py"


def bigger_file(src: Path, dst: Path, copies: int) -> Path:
    """Our sample items repeated under new ids (more items, so a kill lands mid-run)."""
    rows = json.loads(src.read_text(encoding="utf-8"))
    out = []
    for k in range(copies):
        for r in rows:
            r = json.loads(json.dumps(r))
            r["id"] = f"{r['id']}-copy{k}"
            out.append(r)
    dst.write_text(json.dumps(out, ensure_ascii=False, indent=4), encoding="utf-8")
    return dst


def command(model: Path, task: str, data: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(TEST),
        "--model",
        str(model),
        "--task",
        task,
        "--input",
        str(data),
        "--output",
        str(output),
        "--no_progress",
        *extra,
    ]


# One thread: a tiny model gains nothing from more, and it keeps the runs quick on a busy machine.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MALPYEONG_LOG": "WARNING",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def rows_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n") - 1  # minus the header
    except FileNotFoundError:
        return 0


def kill_midway(cmd: list[str], output: Path, after_rows: int, total: int) -> int:
    """Start ``cmd``, SIGKILL it once ``after_rows`` rows are in the partial file."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part = partial_path(output)
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if rows_in(part) >= after_rows:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done = rows_in(part)
    assert after_rows <= done < total, "the run finished before it could be killed"
    assert not output.exists() and not sidecar_path(output).exists()
    return done


@pytest.mark.parametrize(
    "task,extra,copies",
    [
        ("cci", ["--batch_size", "2", "--permute", "--max_length", "256"], 3),
        ("dcs", ["--batch_size", "2", "--max_length", "300", "--max_new_tokens", "16"], 2),
    ],
)
def test_kill_9_then_rerun_gives_identical_files(task, extra, copies, tiny_llama, tmp_path):
    data = bigger_file(SAMPLES / f"{task}_test.json", tmp_path / f"{task}_in.json", copies)
    total = len(json.loads(data.read_text(encoding="utf-8")))
    ref = tmp_path / "ref" / "r.json"
    proc = subprocess.run(
        command(tiny_llama, task, data, ref, *extra), env=ENV, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-2000:]

    out = tmp_path / "run" / "r.json"
    cmd = command(tiny_llama, task, data, out, *extra)
    done = kill_midway(cmd, out, after_rows=3, total=total)
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"({done} resumed;" in proc.stdout
    assert out.read_bytes() == ref.read_bytes()
    assert sidecar_path(out).read_bytes() == sidecar_path(ref).read_bytes()
    assert not partial_path(out).exists()

    # a third run refuses to overwrite, in one line
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 2 and "output exists" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
