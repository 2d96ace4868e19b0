"""The model a run trains: full weights, or the base with LoRA adapters (4-bit base for QLoRA),
and the adapter merged back into a full-precision copy of the base."""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.models.backbones import Backbone, get_backbone, load_model
from malpyeong.training.checkpointing import reentrant_under_zero3
from malpyeong.training.recipe import ModelArguments


def is_zero3(config: Any) -> bool:
    """Whether the trainer shards parameters with DeepSpeed ZeRO stage 3."""
    plugin = getattr(config, "deepspeed_plugin", None)
    return plugin is not None and getattr(plugin, "zero_stage", None) == 3


def lora_config(
    r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules: Sequence[str] = ("all-linear",)
) -> Any:
    """LoRA on every linear layer but the LM head by default (what QLoRA's authors found best)."""
    from peft import LoraConfig

    modules = list(target_modules)
    target = "all-linear" if modules == ["all-linear"] else modules
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target, bias="none", task_type="CAUSAL_LM"
    )


# peft refuses LoRA on these modules of state-space models: their fused kernels read the
# weights directly, so an adapter there would never be used (peft issue #2556).
SSM_MODEL_TYPES = frozenset({"mamba", "mamba2", "falcon_mamba", "falcon_h1", "nemotron_h"})
SSM_NO_LORA = frozenset({"out_proj", "conv1d"})
# Linear layers whose weight a family's forward reads directly (``self.dt_proj.weight @ x``, or
# the weight handed to a fused CUDA kernel) instead of calling the layer: peft accepts an adapter
# there, but it gets no gradient and never changes the output (transformers 5.25: Mamba's
# mixer reads dt_proj.weight on every path and x_proj.weight in the fused training kernel;
# Falcon-Mamba and Jamba read dt_proj.weight). ``all-linear`` leaves them out.
WEIGHT_READ_DIRECTLY: dict[str, frozenset[str]] = {
    "mamba": frozenset({"x_proj", "dt_proj"}),
    "falcon_mamba": frozenset({"dt_proj"}),
    "jamba": frozenset({"dt_proj"}),
}


def lora_targets(model: Any, modules: Sequence[str]) -> list[str]:
    """``modules`` as given; ``all-linear`` on a state-space model (Mamba) or a hybrid with a
    Mamba mixer means every linear layer whose adapter would train there (not ``out_proj``,
    which peft refuses, nor the layers the forward reads by weight, see
    :data:`WEIGHT_READ_DIRECTLY`), since peft would refuse the whole set or add dead adapters."""
    import torch

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if list(modules) != ["all-linear"] or (
        model_type not in SSM_MODEL_TYPES and model_type not in WEIGHT_READ_DIRECTLY
    ):
        return list(modules)
    output = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    }
    excluded = WEIGHT_READ_DIRECTLY.get(model_type, frozenset())
    if model_type in SSM_MODEL_TYPES:
        excluded = excluded | SSM_NO_LORA
    return sorted(names - excluded)


def load_training_model(
    model_args: ModelArguments, config: Any, backbone: Backbone, *, sft_adapter: str | None = None
) -> Any:
    """The model to train: full weights, or the base with LoRA adapters (4-bit base for qlora).

    With ``sft_adapter`` (ORPO) the SFT adapter is loaded trainable and training continues on it
    (merged into the weights for full fine-tuning).
    """
    from transformers import set_seed

    # The trainer seeds itself only after the model exists: seed here too, so the LoRA start
    # weights (and so the whole run) are the same for the same recipe.
    set_seed(config.seed)
    remote = True if getattr(config, "trust_remote_code", False) else None
    model = load_model(
        model_args.model,
        model_args.method,
        backbone=backbone,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=remote,
    )
    if model_args.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.activation_checkpointing,
            gradient_checkpointing_kwargs=config.activation_checkpointing_kwargs,
        )
    if model_args.method == "full":
        if sft_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, sft_adapter).merge_and_unload()
        return model
    from peft import PeftModel, get_peft_model

    if sft_adapter:
        model = PeftModel.from_pretrained(model, sft_adapter, is_trainable=True)
    else:
        # ZeRO-3 gathers parameters of one dtype: keep bf16 adapters on a bf16 base (trl does too)
        zero3 = is_zero3(config) and model_args.method == "lora"
        kwargs = {"autocast_adapter_dtype": False} if zero3 else {}
        lora = lora_config(
            model_args.lora_r,
            model_args.lora_alpha,
            model_args.lora_dropout,
            lora_targets(model, model_args.lora_target_modules),
        )
        try:
            model = get_peft_model(model, lora, **kwargs)
        except ValueError as err:  # e.g. a module peft refuses for this architecture
            raise UserError(
                f"cannot put LoRA adapters there: {str(err).splitlines()[0]}", field="lora_target_modules"
            ) from None
    if config.activation_checkpointing:
        model.enable_input_require_grads()
    reentrant_under_zero3(config, model, is_zero3(config))
    return model


def merge_adapter(
    base: str,
    adapter_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    backbone: Backbone | None = None,
    dtype: str = "auto",
    tokenizer: Any = None,
    trust_remote_code: bool | None = None,
) -> Path:
    """Merge a LoRA adapter into a full-precision copy of ``base`` (never into 4-bit weights)."""
    from peft import PeftModel

    backbone = backbone or get_backbone(base)
    model = load_model(base, "full", backbone=backbone, dtype=dtype, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    del merged, model
    gc.collect()
    return out
