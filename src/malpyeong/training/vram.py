"""How much accelerator memory a training recipe needs, from the architecture's numbers alone.

Printed by ``run/train.py --rules 2025`` against the rules' VRAM limit before anything is
loaded (no download: the registry's backbones have their numbers in :data:`ARCHITECTURES`, a
local model's come from its config.json). The estimate is a sum of four parts:

- **weights**: every parameter at the load precision; for QLoRA the decoder's linear layers at
  4 bits plus NF4's block constants (double quantisation: 0.516 bytes per parameter), and the
  rest (embeddings, norms, an untied LM head) in fp32, because peft's
  ``prepare_model_for_kbit_training`` upcasts them;
- **trainable state**: LoRA adapters (r x (in + out) per adapted linear layer, fp32) or every
  weight for full fine-tuning, each with its gradient and AdamW's two moments;
- **activations** per token and layer, what autograd keeps for the backward pass: the fp32
  copies the RMSNorms make, the inputs of the attention and MLP blocks and of o_proj / down_proj,
  the queries, keys and values (repeated to every head under eager attention), the eager
  attention probabilities (one row of ``seq`` per head and token; more with Gemma-2's
  soft-capping), the four MLP intermediates, and the inputs LoRA's dropout copies for each
  adapted layer. With gradient checkpointing only each layer's input is kept, plus one layer's
  activations while it is recomputed;
- **logits**: the positions projected onto the vocabulary (every position, or the completion
  only with ``completion_logits``), their fp32 log-probabilities and two gradients of that size
  in the backward pass; a classification head's logits are negligible.

The loss's tensors and the gradients of one layer (about one layer's activations again) are
alive at different moments of the backward pass: the larger of the two is added. QLoRA's
residual stream is fp32 (peft upcasts the norms and embeddings), whatever the compute dtype.

CUDA's context and the allocator's slack are not in the sum; the report adds a fixed 1 GiB for
them before comparing with a limit. How far off the sum is was measured on tiny models on the
CPU (peak RSS of one training step): see benchmarks/memory_estimate.py and the README.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.inference.classifier import OBJECTIVE
from malpyeong.models.backbones import get_backbone
from malpyeong.models.runfolder import MODEL_CONFIG
from malpyeong.rules import get_rules
from malpyeong.tasks import get_task

GIB = 1024**3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights, 8-bit absmax per 64, fp32 per 256 blocks
RUNTIME_OVERHEAD = 1 * GIB  # CUDA context and allocator slack, added before the limit check
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    """The numbers of a decoder-only transformer that decide its memory."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    norms_per_layer: int = 2  # Gemma-2 has four (pre/post attention, pre/post MLP)
    softcap: bool = False  # Gemma-2's attention logit soft-capping

    @classmethod
    def from_config(cls, config: dict) -> Architecture:
        """From a config.json mapping (Llama, Mistral, Qwen2, Gemma-2 style keys)."""
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            gemma2 = config.get("model_type") == "gemma2"
            return cls(
                hidden=hidden,
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                intermediate=int(config["intermediate_size"]),
                vocab=int(config["vocab_size"]),
                tied=bool(config.get("tie_word_embeddings", False)),
                norms_per_layer=4 if gemma2 else 2,
                softcap=bool(gemma2 and config.get("attn_logit_softcapping")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(
                f"config.json lacks what the memory estimate needs: {err}", field="model"
            ) from None

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        q, kv, h, i = (
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.hidden,
            self.intermediate,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linears().values())

    @property
    def other_params(self) -> int:
        """Embeddings, an untied LM head, the norms."""
        head = 0 if self.tied else self.vocab * self.hidden
        return self.vocab * self.hidden + head + (self.layers * self.norms_per_layer + 1) * self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params


# The registry's backbones, from their published config.json files (no download needed).
_GEMMA2_9B = Architecture(
    hidden=3584,
    layers=42,
    heads=16,
    kv_heads=8,
    head_dim=256,
    intermediate=14336,
    vocab=256000,
    tied=True,
    norms_per_layer=4,
    softcap=True,
)
_QWEN2_7B = Architecture(
    hidden=3584, layers=28, heads=28, kv_heads=4, head_dim=128, intermediate=18944, vocab=152064, tied=False
)
ARCHITECTURES: dict[str, Architecture] = {
    "rtzr/ko-gemma-2-9b-it": _GEMMA2_9B,
    "google/gemma-2-9b-it": _GEMMA2_9B,
    "Qwen/Qwen2-7B": _QWEN2_7B,
    "Qwen/Qwen2-7B-Instruct": _QWEN2_7B,
    "Qwen/Qwen2.5-3B-Instruct": Architecture(
        hidden=2048,
        layers=36,
        heads=16,
        kv_heads=2,
        head_dim=128,
        intermediate=11008,
        vocab=151936,
        tied=True,
    ),
    "meta-llama/Llama-3.2-3B-Instruct": Architecture(
        hidden=3072, layers=28, heads=24, kv_heads=8, head_dim=128, intermediate=8192, vocab=128256, tied=True
    ),
}


def architecture_of(model: str) -> Architecture:
    """The registry's numbers for ``model``, else its local config.json's."""
    if model in ARCHITECTURES:
        return ARCHITECTURES[model]
    path = Path(model) / MODEL_CONFIG
    if not path.is_file():
        raise UserError(
            f"no architecture numbers for '{model}' (not in the estimate's table, no local config.json)",
            field="model",
            hint="known: " + ", ".join(ARCHITECTURES),
        )
    return Architecture.from_config(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class Setup:
    """What the recipe decides about memory."""

    method: str  # full, lora, qlora
    compute_bytes: int  # 2 for bf16/fp16, 4 for fp32
    batch: int  # sequences per step on one device
    seq: int  # tokens per sequence (the recipe's max_length: the worst case)
    gradient_checkpointing: bool
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ("all-linear",)
    lora_dropout: float = 0.0
    eager: bool = True  # eager attention keeps the attention probabilities
    logit_positions: int | None = None  # per sequence (None: every position)
    num_labels: int | None = None  # a classification head instead of the LM head


@dataclass(frozen=True)
class Estimate:
    weights: float  # bytes
    trainable: float  # trainable weights' extra state: gradients, AdamW moments (+ fp32 LoRA)
    trainable_params: int
    activations: float  # kept for backward, with the setup's gradient checkpointing
    activations_other: float  # the same without it (or with it, when it is off)
    logits: float  # the loss's logits, log-probabilities and their gradients
    workspace: float  # one layer's activations: the gradients of the layer in backward

    @property
    def transient(self) -> float:
        """The loss's tensors and a layer's gradients are not alive at the same time."""
        return max(self.logits, self.workspace)

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.activations + self.transient


def _adapted(arch: Architecture, targets: tuple[str, ...]) -> list[str]:
    if list(targets) == ["all-linear"]:
        return list(LINEAR_NAMES)
    return [n for n in LINEAR_NAMES if n in targets]


def activation_bytes_per_token_layer(arch: Architecture, setup: Setup) -> float:
    """What one decoder layer keeps per token for the backward pass (no checkpointing)."""
    b, h, i = setup.compute_bytes, arch.hidden, arch.intermediate
    q, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    # QLoRA's prepared model keeps embeddings and norms in fp32, so the residual stream is fp32
    stream = 4 if setup.method == "qlora" else b
    saved = stream * 3 * h  # attention and MLP block inputs, the residual sum
    if stream != 4:  # RMSNorm computes in fp32: a copy of each norm's input, kept
        saved += arch.norms_per_layer * 4 * h
    if setup.eager:
        saved += b * 3 * q  # queries, and keys and values repeated to every head
        # the fp32 softmax, its cast to the compute dtype, the tanh of soft-capping
        probs = 4 + (b if b != 4 else 0) + (b if arch.softcap else 0)
        saved += arch.heads * setup.seq * probs
    else:
        saved += b * (q + 2 * kv + q)  # queries, keys, values; the fused kernel's output
    saved += b * q  # o_proj's input
    saved += b * 4 * i  # gate, up, activation, product
    if setup.method != "full":
        adapted = _adapted(arch, setup.lora_targets)
        inputs = sum(arch.linears()[n][0] for n in adapted)
        if setup.lora_dropout > 0:
            saved += inputs * (4 + 1)  # each adapter's dropped fp32 copy and its mask
        elif b != 4:  # peft casts each adapter's input to fp32 (QLoRA: only the bf16 ones)
            saved += (
                sum(arch.linears()[n][0] for n in adapted if stream != 4 or n in ("o_proj", "down_proj")) * 4
            )
    return float(saved)


def estimate(arch: Architecture, setup: Setup) -> Estimate:
    """The four parts of the memory a training step of ``setup`` needs on one device."""
    b = setup.compute_bytes
    if setup.method == "qlora":
        weights = arch.linear_params * NF4_BYTES + arch.other_params * 4
    else:
        weights = float(arch.params * b)
    if setup.method == "full":
        trainable_params = arch.params
        trainable = arch.params * 3 * b  # gradient and AdamW's two moments, in the weights' dtype
    else:
        adapted = _adapted(arch, setup.lora_targets)
        trainable_params = arch.layers * sum(setup.lora_r * sum(arch.linears()[n]) for n in adapted)
        if setup.num_labels:
            trainable_params += arch.hidden * setup.num_labels
        trainable = trainable_params * 16  # fp32 weight, gradient, two AdamW moments
    tokens = setup.batch * setup.seq
    per_layer = activation_bytes_per_token_layer(arch, setup) * tokens
    stream = 4 if setup.method == "qlora" else b
    # with checkpointing, only each layer's input is kept, and the layer being recomputed
    full = per_layer * arch.layers
    checkpointed = arch.layers * tokens * stream * arch.hidden + per_layer
    act, other = (checkpointed, full) if setup.gradient_checkpointing else (full, checkpointed)
    if setup.num_labels:
        logits = 0.0
    else:
        positions = setup.batch * (setup.logit_positions or setup.seq)
        # the logits, their fp32 log-probabilities, and two gradients of that size in backward
        logits = positions * arch.vocab * (stream + 4 + 4 + 4)
    return Estimate(weights, trainable, trainable_params, act, other, logits, per_layer)


def report(
    model: str,
    arch: Architecture,
    setup: Setup,
    est: Estimate,
    limit_gb: float | None = None,
    rules: str | None = None,
) -> str:
    """The lines run/train.py prints."""

    def gib(x: float) -> str:
        return f"{x / GIB:6.2f} GiB"

    gc = "on" if setup.gradient_checkpointing else "off"
    precision = {2: "bf16/fp16", 4: "fp32"}.get(setup.compute_bytes, f"{setup.compute_bytes} B")
    lines = [
        f"memory estimate: {model}, {setup.method}, {precision} compute, batch "
        f"{setup.batch} x {setup.seq} tokens, gradient checkpointing {gc}",
        f"  weights       {gib(est.weights)}  ({arch.params / 1e9:.2f} B parameters"
        + (", linear layers in 4-bit NF4" if setup.method == "qlora" else "")
        + ")",
        f"  trainable     {gib(est.trainable)}  ({est.trainable_params / 1e6:.1f} M "
        "parameters: gradients and AdamW moments" + (", fp32 adapters)" if setup.method != "full" else ")"),
        f"  activations   {gib(est.activations)}  (checkpointing {gc}; "
        f"{'off' if setup.gradient_checkpointing else 'on'}: "
        f"{est.activations_other / GIB:.2f} GiB)",
        f"  backward      {gib(est.transient)}  (the larger of the loss's logits and "
        f"their gradients, {est.logits / GIB:.2f} GiB, and one layer's gradients, "
        f"{est.workspace / GIB:.2f} GiB)",
        f"  total         {gib(est.total)}  (+ {RUNTIME_OVERHEAD / GIB:.0f} GiB CUDA "
        "context and allocator slack)",
    ]
    if limit_gb is not None:
        need = (est.total + RUNTIME_OVERHEAD) / GIB
        verdict = "fits" if need <= limit_gb else "OVER the limit"
        lines.append(f"  {rules or 'limit'}: {limit_gb:g} GB VRAM -> {need:.1f} GiB needed, {verdict}")
    return "\n".join(lines)


COMPLETION_TOKENS = 64  # logit positions per sequence with completion-only logits (a CCI answer)


def recipe_setup(model_args: Any, script: Any, config: Any, *, eager: bool, num_labels: int | None) -> Setup:
    """The :class:`Setup` of a parsed recipe, for one GPU (``auto`` dtype means bf16 there)."""
    dtype = str(model_args.dtype)
    compute = 4 if dtype in ("fp32", "float32") and model_args.method != "qlora" else 2
    return Setup(
        method=model_args.method,
        compute_bytes=compute,
        batch=int(config.per_device_train_batch_size),
        seq=int(getattr(config, "max_length", None) or 1024),
        gradient_checkpointing=bool(config.gradient_checkpointing),
        lora_r=model_args.lora_r,
        lora_targets=tuple(model_args.lora_target_modules),
        lora_dropout=model_args.lora_dropout,
        eager=eager,
        logit_positions=COMPLETION_TOKENS if getattr(script, "completion_logits", False) else None,
        num_labels=num_labels,
    )


def recipe_report(script: Any, model_args: Any, config: Any) -> str:
    """The estimate of a parsed run/train.py recipe against its ``rules``' VRAM limit."""
    rules = get_rules(script.rules)
    task = get_task(script.task)
    arch = architecture_of(model_args.model)
    attn = model_args.attn_implementation or get_backbone(model_args.model).attn_implementation
    labels = (
        task.n_choices
        if getattr(script, "objective", None) == OBJECTIVE and OBJECTIVE in task.objectives
        else None
    )
    setup = recipe_setup(model_args, script, config, eager=attn == "eager", num_labels=labels)
    return report(model_args.model, arch, setup, estimate(arch, setup), rules.vram_gb, rules.name)


__all__ = [
    "ARCHITECTURES",
    "GIB",
    "NF4_BYTES",
    "RUNTIME_OVERHEAD",
    "Architecture",
    "Estimate",
    "Setup",
    "activation_bytes_per_token_layer",
    "architecture_of",
    "estimate",
    "recipe_report",
    "recipe_setup",
    "report",
]
