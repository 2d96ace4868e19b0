"""benchmarks/gpu_check.py on a machine without CUDA: the CUDA steps skip with their reason, the
CPU steps run, steps of other modules are collected (taking the context or nothing), and a
broken step or module is a failed row with exit status 1, never a crash."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import ROOT

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU behaviour of the check")


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def rows_of(out: str) -> dict[str, list[str]]:
    """step -> [status, seconds, detail...] from the printed table."""
    lines = out.splitlines()
    body = lines[2 : lines.index(next(x for x in lines if x.startswith("total ")))]
    return {line.split()[0]: line.split()[1:] for line in body}


def test_cuda_steps_skip_with_their_reason_and_cpu_steps_run(check, capsys):
    code = check.main(["--only", "env,qlora_llama,qlora_gemma2,ddp,vllm_generate,vllm_structured"])
    out = capsys.readouterr().out
    assert code == 0
    rows = rows_of(out)
    assert [r[0] for r in rows.values()] == ["ok", "skip", "skip", "skip", "skip", "skip"]
    assert "no CUDA device" in " ".join(rows["env"])
    assert " ".join(rows["qlora_llama"][2:]) == "no CUDA device"
    assert " ".join(rows["ddp"][2:]) == "0 CUDA device(s); DDP needs two"
    assert " ".join(rows["vllm_generate"][2:]).startswith("no CUDA device")
    assert out.splitlines()[-1].endswith("6 of 6 steps passed or skipped")


def test_a_failing_step_is_a_row_and_exit_status_1(check, tmp_path, capsys, monkeypatch):
    (tmp_path / "gpu_check_a.py").write_text(
        "def with_ctx(ctx):\n    return {'status': 'ok', 'detail': f'cuda={ctx.cuda}', 'n': 3}\n"
        "def without_ctx():\n    return {'status': 'skip', 'detail': 'needs 2 CUDA GPU(s)'}\n"
        "def raises(ctx):\n    raise RuntimeError('out of memory')\n"
        "def bad_row():\n    return {'status': 'fine'}\n"
        "STEPS = [('with_ctx', with_ctx), ('without_ctx', without_ctx), ('raises', raises),"
        " ('bad_row', bad_row)]\n",
        encoding="utf-8",
    )
    (tmp_path / "gpu_check_b.py").write_text("import no_such_module_here\n", encoding="utf-8")
    collect = check.all_steps
    assert [n for n, _ in collect(tmp_path)][-5:] == [
        "with_ctx",
        "without_ctx",
        "raises",
        "bad_row",
        "gpu_check_b",
    ]
    monkeypatch.setattr(check, "all_steps", lambda: collect(tmp_path))
    code = check.main(["--only", "with_ctx,without_ctx,raises,bad_row,gpu_check_b"])
    out = capsys.readouterr().out
    assert code == 1
    rows = rows_of(out)
    assert rows["with_ctx"][0] == "ok" and rows["with_ctx"][2:] == ["cuda=False", "[n=3]"]
    assert rows["without_ctx"][0] == "skip"
    assert rows["raises"][0] == "fail" and " ".join(rows["raises"][2:]) == "RuntimeError: out of memory"
    assert rows["bad_row"][0] == "fail"
    assert rows["gpu_check_b"][0] == "fail"
    assert "gpu_check_b.py does not import: ModuleNotFoundError" in " ".join(rows["gpu_check_b"])
    assert out.splitlines()[-1].endswith(
        "2 of 5 steps passed or skipped; FAILED: raises, bad_row, gpu_check_b"
    )


@pytest.mark.slow
def test_shapes_parameter_counts_match_the_memory_estimate(check, capsys):
    assert check.main(["--only", "shapes"]) == 0
    row = rows_of(capsys.readouterr().out)["shapes"]
    assert " ".join(row[2:]) == "parameters (model = memory estimate): llama 1.236 B, gemma2 1.057 B"
