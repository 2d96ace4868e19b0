"""Quiet output (issue "Everyday use", section 2): a normal run shows our progress and results,
not the libraries' warnings; ``--verbose`` shows them again."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import ROOT

from malpyeong.cli import quiet_libraries

NOISE = ("Warning", "warnings.warn", "deprecated", "WARNING ")


@pytest.mark.parametrize(
    "module,verbose,shown",
    [
        ("transformers.modeling_utils", False, False),
        ("peft.tuners.lora", False, False),
        ("transformers.modeling_utils", True, True),
        ("malpyeong.inference.scoring", False, True),
        ("__main__", False, True),
    ],
)
def test_library_warnings_are_hidden_ours_are_not(module, verbose, shown):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_libraries(verbose)
        warnings.warn_explicit(
            "`x` is deprecated",
            FutureWarning,
            lineno=1,
            module=module,
            filename=f"/site-packages/{module.replace('.', '/')}.py",
        )
    assert bool(caught) == shown


def run_script(script: str, *args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    for key in ("TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "PYTHONWARNINGS"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


@pytest.mark.slow
def test_train_and_predict_print_no_library_warnings(tiny_llama, tmp_path):
    """LoRA training with gradient checkpointing, then prediction with the run: on the
    versions measured (transformers 5.24, peft 0.21, trl 1.16, bitsandbytes) ``--verbose``
    shows FutureWarnings (``gradient_checkpointing`` / ``is_gradient_checkpointing`` are
    deprecated), a torch DeprecationWarning and a bitsandbytes WARNING; a normal run none."""
    data = ROOT / "resource" / "data"
    train = [
        "run/train.py",
        "--model",
        tiny_llama,
        "--task",
        "cci",
        "--train_file",
        data / "cci_train.json",
        "--report_to",
        "none",
        "--activation_checkpointing",
        "true",
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--max_length",
        "512",
    ]
    loud = run_script(*train, "--output_dir", tmp_path / "loud", "--verbose")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert noise(loud.stderr), "nothing to hide: this test could not fail"
    quiet = run_script(*train, "--output_dir", tmp_path / "run")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert noise(quiet.stdout + quiet.stderr) == []
    predict = run_script(
        "run/test.py",
        "--model",
        tmp_path / "run",
        "--task",
        "cci",
        "--input",
        data / "cci_dev.json",
        "--output",
        tmp_path / "dev.json",
    )
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert noise(predict.stdout + predict.stderr) == []
    assert "18 cci predictions" in predict.stdout
