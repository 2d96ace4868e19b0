"""Peak memory of the preference runs' held-out margin report (``pair_margins``), ours against the
implementation it replaced, on a tiny model with Gemma-2's 256k vocabulary.

    python benchmarks/pair_margins_memory.py            # ~1 minute on 2 CPU cores

Both run in a fresh process each on the same rows (8 pairs, prompts of ~70 tokens) and must
give the same margins. Measured: the peak resident memory of the process during the call above
what it held just before (VmHWM after resetting it through /proc/self/clear_refs; every block
over 128 KiB is its own mapping, so freed tensors leave the resident set). The replaced code
ran batches of 8 sequences and kept every position's full-vocabulary logits and their float
log-softmax: memory grows with batch x length x vocabulary. Ours projects only the response
positions of one pair and reads the chosen tokens' log-probabilities 32 positions at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 256_000  # Gemma-2's


def replaced(model: Any, tokenizer: Any, rows: list[dict], batch_size: int = 8) -> list[float]:
    """The implementation before issue 25: batches of 8 sequences, every position's logits and
    their float log-softmax."""
    import torch

    from malpyeong.models.backbones import encode

    seqs = []
    for row in rows:
        prompt = encode(tokenizer, row["prompt"])
        for side in ("chosen", "rejected"):
            done = tokenizer(row[side], add_special_tokens=False)["input_ids"]
            seqs.append((prompt + done, len(prompt)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    totals = []
    for lo in range(0, len(seqs), batch_size):
        batch = seqs[lo : lo + batch_size]
        width = max(len(s) for s, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (s, _) in enumerate(batch):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        got = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for r, (s, start) in enumerate(batch):
            totals.append(float(got[r, start - 1 : len(s) - 1].sum()))
    return [totals[i] - totals[i + 1] for i in range(0, len(totals), 2)]


def margin_rows() -> list[dict]:
    """8 pairs (written for this benchmark) after a prompt of ~70 tokens."""
    prompt = " ".join(["오늘 회의에서 다음 분기 계획과 예산을 함께 검토했습니다."] * 2)
    return [
        {"prompt": f"{prompt} {k}", "chosen": f"좋은 답변 {k} 입니다.", "rejected": f"나쁜 답 {k}"}
        for k in range(8)
    ]


CHILD = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[3])
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig
from malpyeong.models.backbones import encode
from malpyeong.training.orpo import pair_margins
sys.path.insert(0, sys.argv[5])
from pair_margins_memory import margin_rows, replaced

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

impl, tok_dir = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(tok_dir)
config = LlamaConfig(
    vocab_size=int(sys.argv[4]), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
)
model = AutoModelForCausalLM.from_config(config).eval()
rows = margin_rows()
run = pair_margins if impl == "ours" else replaced
run(model, tok, rows[:1])  # warm-up: kernels and allocator caches
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := the current resident set
before = rss()
margins = run(model, tok, rows)
tokens = max(len(encode(tok, r["prompt"])) + len(tok(r["chosen"], add_special_tokens=False)["input_ids"]) for r in rows)
print(json.dumps({"peak": peak() - before, "margins": margins, "tokens": tokens}))
"""


def measure(impl: str, tokenizer_dir: Path, vocab: int = VOCAB) -> dict:
    """Peak bytes above the resident set before the call, the margins, the longest sequence."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "MALLOC_MMAP_THRESHOLD_": "131072",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            impl,
            str(tokenizer_dir),
            str(ROOT / "src"),
            str(vocab),
            str(Path(__file__).parent),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from malpyeong.models.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_model("llama", Path(tmp) / "llama")  # its tokenizer
        ours = measure("ours", tiny)
        old = measure("replaced", tiny)
    same = max(abs(a - b) for a, b in zip(ours["margins"], old["margins"], strict=True))
    mib = 1024**2
    print(f"8 pairs, longest sequence {ours['tokens']} tokens, vocabulary {VOCAB:,} (shared machine)")
    print(f"replaced implementation: peak {old['peak'] / mib:8.1f} MiB above the resident set")
    print(f"ours (chunked):          peak {ours['peak'] / mib:8.1f} MiB above the resident set")
    print(f"ratio replaced / ours: {old['peak'] / ours['peak']:.1f}x; largest margin difference {same:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
