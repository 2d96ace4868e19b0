"""The memory estimate (malpyeong.training.vram) against the measured peak of a training step.

    python benchmarks/memory_estimate.py                 # a few minutes on 2 CPU cores
    python benchmarks/memory_estimate.py --quick         # two setups

For each setup a fresh process builds a small random model of the real architecture class (big
enough that its memory dwarfs the measuring noise), loads it as training does (full, LoRA, or
4-bit QLoRA through malpyeong's loaders), then runs two training steps (forward, backward,
AdamW; the second holds the optimiser's moments with the activations) on a batch of random
tokens. Measured: the peak resident memory of the process above what it held before the model
was loaded (VmHWM, the process's own high-water mark; the CPU has no allocator counter; large blocks are mapped one by one,
so freed tensors leave the resident set). The
baseline it is compared with is the estimate computed from the model's config.json numbers
alone, as run/train.py --rules prints it; the ratio estimate / measured is printed per setup.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from malpyeong.training.vram import (  # noqa: E402
    GIB,
    Architecture,
    Setup,
    estimate,
)

SIZES = {
    "llama": dict(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=8000,
    ),
    "gemma2": dict(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
        vocab_size=8000,
    ),
}
# (family, method, batch, seq, gradient checkpointing, lora dropout, 8-bit AdamW)
SETUPS = [
    ("llama", "lora", 4, 512, False, 0.0, False),
    ("llama", "lora", 4, 512, True, 0.0, False),
    ("llama", "lora", 4, 512, False, 0.05, False),
    ("llama", "full", 4, 512, False, 0.0, False),
    ("llama", "qlora", 4, 512, False, 0.0, False),
    ("llama", "qlora", 4, 512, True, 0.05, True),
    ("gemma2", "lora", 4, 512, False, 0.0, False),
    ("gemma2", "qlora", 4, 512, True, 0.05, False),
    ("gemma2", "lora", 2, 1536, True, 0.0, False),  # eager masks: 2 x 2 x 1536^2 fp32 = 36 MiB
]
QUICK = [SETUPS[0], SETUPS[4]]

CHILD = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[2])
from malpyeong.models.backbones import load_model
from malpyeong.training.models import lora_config
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
import peft, transformers  # noqa: F401 - imported before the baseline is taken
def peak_rss():
    # VmHWM is this process's own high-water mark; ru_maxrss would also count the parent's
    # resident set that a forked child inherits (a large pytest process inflates it)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
before = rss()
model = load_model(spec["path"], spec["method"], attn_implementation="eager", dtype="fp32")
if spec["method"] == "qlora":
    from peft import prepare_model_for_kbit_training
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec["gc"])
if spec["method"] != "full":
    from peft import get_peft_model
    model = get_peft_model(model, lora_config(16, 32, spec["dropout"]))
if spec["method"] == "qlora":  # as trl's SFTTrainer does (QLoRA's paper: bf16 adapters)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
if spec["gc"]:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
model.train()
params = [p for p in model.parameters() if p.requires_grad]
if spec["adam8"]:
    import bitsandbytes as bnb
    opt = bnb.optim.AdamW8bit(params, lr=1e-4)
else:
    opt = torch.optim.AdamW(params, lr=1e-4)
g = torch.Generator().manual_seed(0)
ids = torch.randint(5, spec["vocab"], (spec["batch"], spec["seq"]), generator=g)
for _ in range(2):  # the second step holds AdamW's moments while the activations live
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    del out
peak = peak_rss()
print(json.dumps({"peak": peak - before}))
"""


def build(family: str, folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig

    cls = {"llama": LlamaConfig, "gemma2": Gemma2Config}[family]
    extra = (
        {
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": None,
            "query_pre_attn_scalar": 64,
            "sliding_window": 4096,
        }
        if family == "gemma2"
        else {}
    )
    config = cls(**SIZES[family], tie_word_embeddings=family == "gemma2", **extra)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder / family)
    return folder / family


def measure(
    path: Path, family: str, method: str, batch: int, seq: int, gc: bool, dropout: float, adam8: bool
) -> dict:
    spec = {
        "adam8": adam8,
        "path": str(path),
        "method": method,
        "batch": batch,
        "seq": seq,
        "gc": gc,
        "dropout": dropout,
        "vocab": SIZES[family]["vocab_size"],
    }
    # every block over 128 KiB is its own mapping, returned when freed: resident memory then
    # follows the live tensors instead of the allocator's high-water mark
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "MALLOC_MMAP_THRESHOLD_": "131072",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec), str(ROOT / "src")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimated(path: Path, method: str, batch: int, seq: int, gc: bool, dropout: float, adam8: bool):
    arch = Architecture.from_config(json.loads((path / "config.json").read_text()))
    # on the CPU the model computes in fp32; QLoRA computes in bf16 there
    setup = Setup(
        method=method,
        compute_bytes=2 if method == "qlora" else 4,
        batch=batch,
        seq=seq,
        gradient_checkpointing=gc,
        lora_dropout=dropout,
        eager=True,
        adapter_bytes=2 if method == "qlora" else 4,
        optimizer_8bit=adam8,
    )
    # the estimate before issue 25: fp32 adapters, full AdamW state, no eager masks
    before = estimate(
        dataclasses.replace(arch, mask_kinds=0),
        dataclasses.replace(setup, adapter_bytes=4, optimizer_8bit=False),
    )
    return estimate(arch, setup), before


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two setups only")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {f: build(f, Path(tmp)) for f in SIZES}
        print(f"{'setup':46} {'estimate MiB':>12} {'measured MiB':>12} {'ratio':>6} {'before':>6}")
        for family, method, batch, seq, gc, dropout, adam8 in QUICK if args.quick else SETUPS:
            got = measure(models[family], family, method, batch, seq, gc, dropout, adam8)
            est, before = estimated(models[family], method, batch, seq, gc, dropout, adam8)
            name = f"{family} {method} {batch}x{seq} gc={'on' if gc else 'off'} p={dropout}"
            name += " adamw8bit" if adam8 else ""
            mib = 1024**2
            row = {
                "setup": name,
                "estimate": est.total / mib,
                "measured": got["peak"] / mib,
                "ratio": est.total / got["peak"],
                "ratio_before": before.total / got["peak"],
            }
            rows.append(row)
            print(
                f"{name:46} {row['estimate']:12.0f} {row['measured']:12.0f} {row['ratio']:6.2f} "
                f"{row['ratio_before']:6.2f}",
                flush=True,
            )
    ratios = [r["ratio"] for r in rows]
    print(
        f"estimate / measured peak: {min(ratios):.2f} to {max(ratios):.2f} "
        f"(1.00 = exact; above 1 = the estimate is on the safe side); "
        f"{sum(ratios) / len(ratios):.2f} on average over {len(rows)} setups; "
        f"1 GiB = {GIB} bytes"
    )
    before = [r["ratio_before"] for r in rows]
    print(
        f"before issue 25 (fp32 QLoRA adapters, full AdamW state, no eager masks): "
        f"{min(before):.2f} to {max(before):.2f}, {sum(before) / len(before):.2f} on average "
        "(the machine was shared: the measurements are resident memory, not time)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
