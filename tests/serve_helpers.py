"""Models for the serving tests: a tiny base, LoRA adapters trained to answer differently,
random adapters (three different voters), and run folders around them."""

from __future__ import annotations

import shutil
from pathlib import Path

PROMPTS = ("안녕하세요", "오늘 뭐 해?", "날씨 어때?", "주말 계획은?")


def build_base(path: Path) -> Path:
    """A tiny Llama whose LM head is scaled up, so a few LoRA steps make it answer as trained."""
    from malpyeong.models.tiny import build_tiny_model

    return build_tiny_model("llama", path, output_scale=16.0)


def train_adapter(base: Path, out: Path, answer: str, *, steps: int = 80, lr: float = 1e-2) -> Path:
    """A LoRA adapter (all linear layers, r 8) trained to answer ``answer`` to any of
    :data:`PROMPTS`, each prompt rendered as the server renders a chat; a few seconds."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from malpyeong.inference.loading import loaded_tokenizer, resolve_source
    from malpyeong.models.backbones import encode, end_of_turn_ids, get_backbone, render_chat

    torch.manual_seed(0)
    source = resolve_source(base)
    tokenizer = loaded_tokenizer(source)
    backbone = get_backbone(str(base))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    end = end_of_turn_ids(tokenizer, backbone)[-1:]
    rows = []
    for prompt in PROMPTS:
        ids = encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": prompt}], backbone))
        target = tokenizer(answer, add_special_tokens=False)["input_ids"] + end
        rows.append((ids + target, [-100] * len(ids) + target))
    width = max(len(r[0]) for r in rows)
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([r[0] + [pad] * (width - len(r[0])) for r in rows])
    labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows])
    mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out


def random_adapter(base: Path, out: Path, seed: int) -> Path:
    """An untrained LoRA adapter with random weights on both sides (peft's
    ``init_lora_weights=False``): a model that answers differently from the base and from
    other seeds, with no training."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


def run_folder(adapter: Path, out: Path, base: Path, task: str | None = None) -> Path:
    """A training run folder around ``adapter`` (``adapter/`` and ``malpyeong_run.json``), as
    ``run/train.py --method lora`` leaves one."""
    from malpyeong.models.runfolder import ADAPTER_DIR, run_info, write_run

    out.mkdir(parents=True)
    shutil.copytree(adapter, out / ADAPTER_DIR)
    info = run_info(
        str(base),
        "lora",
        adapter_dir=ADAPTER_DIR,
        merged_dir=None,
        task=task,
        prompt=None,
        max_length=None,
        target_style=None,
        stage="sft",
    )
    write_run(out, info)
    return out
