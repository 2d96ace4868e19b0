"""Peak memory of merging three ~300M-parameter models: ensemble/merge.py vs load-all-and-average.

    python benchmarks/bench_merge_memory.py            # builds the models in a temp folder (~2 GB)
    python benchmarks/bench_merge_memory.py --workdir /tmp/bm --keep

Three Qwen2-architecture models (hidden 1024, 24 layers, GQA 16/4 heads, vocab 32000, tied
embeddings: 336M parameters, 642 MB each in bfloat16) with random weights are saved as
safetensors. Each merge then runs in its own subprocess and its peak resident set size is read
with os.wait4 (ru_maxrss of that child), while /proc is polled for the split into anonymous
memory and file-backed pages:

- ours: ``ensemble/merge.py`` linear (engine auto = malpyeong's streaming merger);
- mergekit: the same config with ``--engine mergekit`` (lazy loader, memory-mapped inputs);
- baseline: ``from_pretrained`` all three, average the parameters in memory, ``save_pretrained``;
- floor: a Python that only imports torch and transformers (what any merger pays up front).

Printed: each peak, its ratio to one model's size on disk (target for ours: <= 1.5x), and the
baseline's peak over ours.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_MODELS = 3

BUILD = r"""
import sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
cfg = Qwen2Config(vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                  num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=4,
                  tie_word_embeddings=True, max_position_embeddings=2048)
out, seed = sys.argv[1], int(sys.argv[2])
torch.manual_seed(seed)
with torch.device("meta"):
    model = Qwen2ForCausalLM(cfg)
model = model.to_empty(device="cpu").to(torch.bfloat16)
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0.0, 0.02)
model.save_pretrained(out)
print(sum(p.numel() for p in model.parameters()))
"""

BASELINE = r"""
import sys, torch
from transformers import AutoModelForCausalLM
paths, out = sys.argv[1:-1], sys.argv[-1]
models = [AutoModelForCausalLM.from_pretrained(p, dtype=torch.bfloat16) for p in paths]
with torch.no_grad():
    params = [dict(m.named_parameters()) for m in models]
    for name, p in params[0].items():
        mean = sum(ps[name].float() for ps in params) / len(params)
        p.copy_(mean.to(p.dtype))
models[0].save_pretrained(out)
"""

FLOOR = "import torch, transformers, safetensors.torch"


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd``; its peak RSS (wait4) and the peak anon/file split (polling /proc), in MB."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    for line in fh:
                        key = line.split(":")[0]
                        if key in peaks:
                            peaks[key] = max(peaks[key], int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            done.wait(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    thread.join()
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {
        "peak": usage.ru_maxrss / 1024,
        "anon": peaks["RssAnon"] / 1024,
        "file": peaks["RssFile"] / 1024,
        "seconds": time.perf_counter() - start,
        "stdout": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", help="where the models are built (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--skip-mergekit", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_merge_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT / "src"),
    }
    try:
        models = []
        for i in range(N_MODELS):
            path = work / f"model{i}"
            if not (path / "model.safetensors").is_file():
                r = subprocess.run(
                    [sys.executable, "-c", BUILD, str(path), str(i)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                print(f"built {path}: {int(r.stdout.split()[-1]):,} parameters")
            models.append(path)
        size_mb = (models[0] / "model.safetensors").stat().st_size / 2**20
        config = work / "merge.yaml"
        config.write_text(
            "merge_method: linear\ndtype: bfloat16\nmodels:\n"
            + "".join(f"  - model: {p}\n    parameters: {{weight: 1.0}}\n" for p in models)
        )
        runs: dict[str, dict[str, float]] = {}
        runs["floor (import torch)"] = measure([sys.executable, "-c", FLOOR], env)
        out = work / "ours"
        shutil.rmtree(out, ignore_errors=True)
        runs["ours: merge.py (stream)"] = measure(
            [
                sys.executable,
                str(ROOT / "ensemble/merge.py"),
                "--config",
                str(config),
                "--output",
                str(out),
                "--quiet",
            ],
            env,
        )
        if not args.skip_mergekit:
            mk = work / "mergekit"
            shutil.rmtree(mk, ignore_errors=True)
            runs["merge.py --engine mergekit"] = measure(
                [
                    sys.executable,
                    str(ROOT / "ensemble/merge.py"),
                    "--config",
                    str(config),
                    "--output",
                    str(mk),
                    "--engine",
                    "mergekit",
                    "--quiet",
                ],
                env,
            )
        base_out = work / "baseline"
        shutil.rmtree(base_out, ignore_errors=True)
        runs["baseline: load all, average"] = measure(
            [sys.executable, "-c", BASELINE, *map(str, models), str(base_out)], env
        )
        _check_same(out, base_out)  # the merged model sits at the output folder's root
        print(
            f"\none model: {size_mb:.0f} MB on disk (bfloat16); {N_MODELS} models merged "
            "(linear, equal weights)"
        )
        print(f"{'run':<30} {'peak RSS':>9} {'x model':>8} {'anon':>8} {'file':>8} {'time':>7}")
        for name, r in runs.items():
            print(
                f"{name:<30} {r['peak']:>6.0f} MB {r['peak'] / size_mb:>7.2f}x "
                f"{r['anon']:>5.0f} MB {r['file']:>5.0f} MB {r['seconds']:>6.1f}s"
            )
        ours = runs["ours: merge.py (stream)"]["peak"]
        base = runs["baseline: load all, average"]["peak"]
        print(
            f"\nours / one model = {ours / size_mb:.2f}x (target <= 1.5x); "
            f"baseline / ours = {base / ours:.2f}x"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _check_same(ours: Path, baseline: Path) -> None:
    """Both merges must agree (up to bfloat16 rounding), or the comparison means nothing."""
    import torch
    from safetensors import safe_open

    with (
        safe_open(str(ours / "model.safetensors"), "pt") as a,
        safe_open(str(baseline / "model.safetensors"), "pt") as b,
    ):
        for name in list(a.keys())[:8]:
            x, y = a.get_tensor(name).float(), b.get_tensor(name).float()
            if not torch.allclose(x, y, atol=1e-2, rtol=1e-2):
                raise SystemExit(f"merges differ at {name}")


if __name__ == "__main__":
    main()
