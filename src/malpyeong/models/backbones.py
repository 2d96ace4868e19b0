"""Backbone registry: each model family's quirks, and the one function that loads a model.

Quirks that broke public competition code and are handled here once: Gemma's chat template
rejects a system turn (we fold it into the first user turn), Gemma-2 needs eager attention
(soft-capping), Llama-3 and Qwen2 ship no pad token, chat templates already carry BOS (so
the rendered text is encoded without adding a second one), and base models have no chat
template at all (we give them their family's format).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from malpyeong.device import cuda_available, cuda_bf16, default_device
from malpyeong.errors import UserError, one_line
from malpyeong.models.checks import local_config, tokenizer_problem

log = logging.getLogger(__name__)

# Chat formats, written for the families' published layouts (used for tiny models and for
# models whose tokenizer has no template).
TEMPLATES = {
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    "gemma2": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
        "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
    "chatml": (
        "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% elif m['role'] == 'user' %}"
        "[INST] {{ m['content'] | trim }} [/INST]{% else %}{{ m['content'] | trim }}{{ eos_token }}"
        "{% endif %}{% endfor %}"
    ),
    # Mistral's v3 tokenizer (Mistral-7B-Instruct-v0.3): [INST] and [/INST] are control tokens;
    # "<s>[INST] user[/INST] answer</s>", where each space stands for the SentencePiece prefix
    # "▁" that mistral-common writes before a message's text. No system role (it is folded).
    "mistral_v3": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% elif m['role'] == 'user' %}"
        "[INST] {{ m['content'] | trim }}[/INST]{% else %} {{ m['content'] | trim }}{{ eos_token }}"
        "{% endif %}{% endfor %}"
    ),
    # SOLAR-Instruct style ("### User:" / "### Assistant:") for Llama-architecture Korean bases.
    # As upstage publishes it, the text carries no BOS: the tokenizer adds it, so a SentencePiece
    # tokenizer writes the first "###" with its "▁" prefix whatever its legacy setting. The blank
    # line between turns is a string expression: transformers renders templates with trim_blocks,
    # which eats the first newline written after a block tag.
    # EXAONE 3.x ("[|system|]...[|endofturn|]\n[|user|]...\n[|assistant|]...[|endofturn|]\n"): an
    # empty system turn opens a conversation that has none; no BOS is written.
    "exaone": (
        "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
        "{{ '[|system|][|endofturn|]\\n' }}{% endif %}{{ '[|' + m['role'] + '|]' + m['content'] }}"
        "{% if m['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
    ),
    "solar": (
        "{% for m in messages %}{% if m['role'] == 'system' %}### System:\n"
        "{% elif m['role'] == 'user' %}### User:\n{% else %}### Assistant:\n{% endif %}"
        "{{ m['content'] | trim }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
        "{{ '\\n\\n' }}{% endfor %}{% if add_generation_prompt %}### Assistant:\n{% endif %}"
    ),
    # A plain transcript for models without a chat template or attention (Mamba): the system
    # text, then one line per turn. User turns are written as they are (the chat task puts
    # "Name: line" in them), assistant turns as "Name: line" with the name a message carries
    # (default "Assistant"), and the generation prompt is "Name:"; a turn ends at the newline.
    "transcript": (
        "{% set ns = namespace(name='Assistant') %}{% for m in messages %}"
        "{% if m['role'] in ('system', 'assistant') and m.get('name') %}"
        "{% set ns.name = m['name'] %}{% endif %}{% endfor %}"
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] | trim }}\n\n"
        "{% elif m['role'] == 'user' %}{{ m['content'] | trim }}\n"
        "{% else %}{{ ns.name }}: {{ m['content'] | trim }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ ns.name }}:{% endif %}"
    ),
}

# Text that ends an assistant turn, per chat format (generation stops there too).
END_OF_TURN = {
    "llama3": "<|eot_id|>",
    "gemma2": "<end_of_turn>",
    "chatml": "<|im_end|>",
    "mistral": None,
    "mistral_v3": None,
    "solar": None,
    "glm4": "<|user|>",
    "transcript": "\n",
    "exaone": "[|endofturn|]",
}

# What a chat family's user turn starts with, before any text (Magpie feeds exactly this).
PRE_QUERY = {
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
    "gemma2": "<bos><start_of_turn>user\n",
    "chatml": "<|im_start|>user\n",
    "mistral": "<s>[INST] ",
    "mistral_v3": "<s>[INST]",  # the user text's own "▁" follows the control token
    "solar": "<s>### User:\n",
    "glm4": "[gMASK]<sop><|user|>\n",
    "exaone": "[|system|][|endofturn|]\n[|user|]",
}


@dataclass(frozen=True)
class Backbone:
    """A model family's quirks. ``name`` is a hub id, or a path for inferred entries."""

    name: str
    family: str  # architecture family: llama, gemma2, qwen2, mistral, chatglm
    chat_format: str  # key of TEMPLATES / PRE_QUERY
    system_role: bool  # does the chat template accept a system turn?
    attn_implementation: str  # "sdpa" or "eager"
    pad_token: str | None  # token to use as pad when the tokenizer has none (None: eos)
    trust_remote_code: bool = False
    licence: str = "see model card"
    instruct: bool = True
    notes: str = ""
    padding_side: str = "right"  # for training; generation and scoring pad on the left
    remote_code_note: str = ""  # shown next to the remote-code column (where the card differs)


REGISTRY: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone(
            "MLP-KTLim/llama-3-Korean-Bllossom-8B",
            "llama",
            "llama3",
            True,
            "sdpa",
            "<|end_of_text|>",
            licence="llama3",
            notes="Llama-3 8B with Korean vocabulary expansion",
        ),
        Backbone(
            "x2bee/POLAR-14B-v0.2",
            "llama",
            "chatml",
            True,
            "sdpa",
            None,
            licence="apache-2.0",
            notes="SOLAR-style depth-upscaled Llama architecture",
        ),
        Backbone(
            "rtzr/ko-gemma-2-9b-it",
            "gemma2",
            "gemma2",
            False,
            "eager",
            "<pad>",
            licence="gemma",
            notes="Gemma-2 soft-capping needs eager attention",
        ),
        Backbone(
            "google/gemma-2-9b-it",
            "gemma2",
            "gemma2",
            False,
            "eager",
            "<pad>",
            licence="gemma",
            notes="Gemma-2 soft-capping needs eager attention",
        ),
        Backbone(
            "beomi/Solar-Ko-Recovery-11B",
            "llama",
            "solar",
            True,
            "sdpa",
            None,
            licence="apache-2.0",
            instruct=False,
            notes="base model; no chat template shipped",
        ),
        Backbone(
            "yanolja/EEVE-Korean-Instruct-10.8B-v1.0",
            "llama",
            "solar",
            True,
            "sdpa",
            None,
            licence="apache-2.0",
            notes="SOLAR-based; '### User:/### Assistant:' turns",
        ),
        Backbone(
            "Qwen/Qwen2-7B",
            "qwen2",
            "chatml",
            True,
            "sdpa",
            "<|endoftext|>",
            licence="apache-2.0",
            instruct=False,
            notes="base model",
        ),
        Backbone(
            "Qwen/Qwen2-7B-Instruct", "qwen2", "chatml", True, "sdpa", "<|endoftext|>", licence="apache-2.0"
        ),
        Backbone(
            "THUDM/glm-4-9b-chat",
            "chatglm",
            "glm4",
            True,
            "eager",
            None,
            trust_remote_code=True,
            licence="glm-4",
            notes="custom code: pass --trust_remote_code",
        ),
        Backbone(
            "cpm-ai/Ocelot-Ko-self-instruction-10.8B-v1.0",
            "llama",
            "solar",
            True,
            "sdpa",
            None,
            licence="cc-by-nc-4.0",
            notes="SOLAR-based Korean instruction model",
        ),
        Backbone(
            "Qwen/Qwen2.5-3B-Instruct",
            "qwen2",
            "chatml",
            True,
            "sdpa",
            "<|endoftext|>",
            licence="qwen-research",
        ),
        Backbone(
            "meta-llama/Llama-3.2-3B-Instruct",
            "llama",
            "llama3",
            True,
            "sdpa",
            "<|finetune_right_pad_id|>",
            licence="llama3.2",
            notes="gated on the hub",
        ),
        Backbone(
            "mistralai/Mistral-7B-Instruct-v0.3",
            "mistral",
            "mistral_v3",
            False,
            "sdpa",
            "<unk>",
            licence="apache-2.0",
            notes="GQA (8 KV heads); v0.3 sets no sliding window (v0.1: 4096); "
            "no system role: folded; roles must alternate",
        ),
        Backbone(
            "state-spaces/mamba-2.8b-hf",
            "mamba",
            "transcript",
            True,
            "eager",
            "<|padding|>",
            licence="apache-2.0",
            instruct=False,
            notes="state-space model, no attention and no chat template: a plain 'Name: line' "
            "transcript; LoRA on x_proj, embeddings, in_proj, out_proj",
        ),
        # Added for the published entries (issue 17); the facts are the model cards' (see notes).
        Backbone(
            "spow12/Qwen2-7B-ko-Instruct-orpo-ver_2.0_wo_chat",
            "qwen2",
            "chatml",
            True,
            "sdpa",
            "<|endoftext|>",
            licence="cc-by-nc-4.0",
            notes="Qwen2-7B-Instruct with Korean SFT + ORPO (card: qwen2, cc-by-nc-4.0); the "
            "tokenizer's own template is used; not checked here that it is ChatML",
        ),
        Backbone(
            "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct",
            "exaone",
            "exaone",
            True,
            "sdpa",
            "[PAD]",
            licence="exaone-1.1-nc",
            remote_code_note="card: yes; native in transformers 5.24",
            notes="32K context; tied embeddings. The card loads it with trust_remote_code=True "
            "(its own modeling_exaone.py); transformers 5.24 (installed here) reads "
            "model_type 'exaone' natively (Llama layers, weights renamed on load), which "
            "we use; with an older transformers pass --trust_remote_code. Licence: EXAONE "
            "AI Model License 1.1 - NC (research use)",
        ),
        Backbone(
            "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct",
            "exaone",
            "exaone",
            True,
            "sdpa",
            "[PAD]",
            licence="exaone-1.1-nc",
            remote_code_note="card: yes; native in transformers 5.24",
            notes="32K context; as the 2.4B for remote code and licence",
        ),
        Backbone(
            "kakaocorp/kanana-1.5-8b-instruct-2505",
            "llama",
            "llama3",
            True,
            "sdpa",
            "<|end_of_text|>",
            licence="apache-2.0",
            notes="Llama architecture (card: llama, no custom code); 32K context, 128K with "
            "YaRN; Apache-2.0 as Kakao released Kanana 1.5 (the LICENSE file itself not "
            "read here); the Llama-3 chat format is our reading (tokenizer.json of "
            "Llama-3's size), the tokenizer's own template is what is used",
        ),
        Backbone(
            "K-intelligence/Midm-2.0-Base-Instruct",
            "llama",
            "llama3",
            True,
            "sdpa",
            None,
            licence="mit",
            notes="Mi:dm 2.0 Base, 11.5B, Llama architecture (card: llama, no custom code, "
            "MIT); chat format not checked here: the tokenizer's own template is used",
        ),
    ]
}

# Licences that forbid commercial use: an ensemble containing such a member inherits it.
NON_COMMERCIAL = frozenset({"cc-by-nc-4.0", "exaone-1.1-nc", "qwen-research"})


def non_commercial(backbone: Backbone) -> bool:
    """Whether the backbone's licence forbids commercial use."""
    return backbone.licence in NON_COMMERCIAL


# Defaults inferred from config.json's model_type for any other hub id or local path.
BY_MODEL_TYPE = {
    "gemma2": ("gemma2", "gemma2", False, "eager", "<pad>"),
    "gemma": ("gemma", "gemma2", False, "sdpa", "<pad>"),
    "gemma3_text": ("gemma3", "gemma2", False, "eager", "<pad>"),
    "llama": ("llama", "llama3", True, "sdpa", None),
    "qwen2": ("qwen2", "chatml", True, "sdpa", None),
    "qwen3": ("qwen3", "chatml", True, "sdpa", None),
    "mistral": ("mistral", "mistral", False, "sdpa", None),
    "chatglm": ("chatglm", "glm4", True, "eager", None),
    "mamba": ("mamba", "transcript", True, "eager", None),
    "mamba2": ("mamba2", "transcript", True, "eager", None),
    "exaone": ("exaone", "exaone", True, "sdpa", None),
}


def get_backbone(name: str) -> Backbone:
    """The registry entry for ``name``, or defaults inferred from its config.json."""
    if name in REGISTRY:
        return REGISTRY[name]
    config = local_config(name)
    model_type = (config or {}).get("model_type", "llama")
    family, fmt, system, attn, pad = BY_MODEL_TYPE.get(model_type, BY_MODEL_TYPE["llama"])
    if config and config.get("malpyeong_chat_format"):
        fmt = config["malpyeong_chat_format"]
    if model_type not in BY_MODEL_TYPE and config is not None:
        log.warning("model_type %r is not known; assuming Llama-style defaults", model_type)
    return Backbone(name, family, fmt, system, attn, pad, licence="unknown (not in the registry)")


def registry_table() -> str:
    """The table ``run/train.py --list-models`` prints."""
    # not a task name: the chat-format column
    head = ("model", "family", "chat", "system", "attention", "pad", "remote code", "licence")
    rows = [head] + [
        (
            b.name,
            b.family,
            b.chat_format,
            "yes" if b.system_role else "fold",
            b.attn_implementation,
            b.pad_token or "eos",
            ("yes" if b.trust_remote_code else "no")
            + (f" ({b.remote_code_note})" if b.remote_code_note else ""),
            b.licence,
        )
        for b in REGISTRY.values()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows)


# ---------------------------------------------------------------------------------------------
# chat rendering


def fold_system(messages: list[dict]) -> list[dict]:
    """Merge a leading system turn into the first user turn (for templates without system)."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if rest and rest[0]["role"] == "user":
        rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def render_chat(
    tokenizer: Any, messages: list[dict], backbone: Backbone, *, add_generation_prompt: bool = True
) -> str:
    """The prompt text exactly as the model sees it."""
    if not backbone.system_role:
        messages = fold_system(messages)
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered chat text; no second BOS when the template already wrote one."""
    bos = tokenizer.bos_token
    add = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add, verbose=False)["input_ids"]


PROBE = "\u2063MALPYEONG_ANSWER\u2063"  # an assistant turn's content when probing a template


def answer_prefix(tokenizer: Any) -> str:
    """What the chat template writes between the generation prompt and an answer's text.

    ``""`` for most formats; ``" "`` for Mistral v3 (``[/INST] answer``), whose SentencePiece
    tokenizer then writes the answer's first token with its ``▁`` prefix. A tokenizer without a
    usable chat template has none.
    """
    user = [{"role": "user", "content": "x"}]
    try:
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": PROBE}], tokenize=False, add_generation_prompt=False
        )
    except Exception:  # noqa: BLE001 - no template, or one that rejects the probe
        return ""
    if not (isinstance(full, str) and full.startswith(prompt) and PROBE in full[len(prompt) :]):
        return ""
    return full[len(prompt) :].split(PROBE, 1)[0]


def answer_ids(tokenizer: Any, text: str, prefix: str = "") -> list[int]:
    """Token ids of an answer as training writes it after the prompt: ``prefix + text`` tokenized
    on its own. A SentencePiece tokenizer then starts it with ``▁`` (``▁A``) even where the
    prompt text followed by ``A`` would encode without one (SOLAR's ``### Assistant:\n``)."""
    return tokenizer(prefix + text, add_special_tokens=False, verbose=False)["input_ids"]


def end_of_turn_ids(tokenizer: Any, backbone: Backbone) -> list[int]:
    """Token ids that end a generated answer: EOS plus the family's end-of-turn token."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    eot = END_OF_TURN.get(backbone.chat_format)
    if eot and eot in tokenizer.get_vocab():
        ids.append(tokenizer.convert_tokens_to_ids(eot))
    elif eot:  # plain text that is one token (the transcript format's newline: byte-level "Ċ")
        alone = tokenizer.encode(eot, add_special_tokens=False)
        if len(alone) == 1:
            ids.extend(alone)
    return sorted(set(ids))


SENTINEL = "\u2063MALPYEONG_COMPLETION\u2063"  # an assistant turn's content when probing a template


def assistant_affixes(tokenizer: Any, backbone: Backbone) -> tuple[str, str]:
    """What the chat template writes around an assistant turn's content after the generation prompt.

    Returns ``(before, after)``: ``after`` is cut right after the end-of-turn token (Gemma's
    template writes ``<end_of_turn>\\n``; the newline is not trained), and is the tokenizer's EOS
    when the template ends a turn with nothing a generator could stop on.
    """
    user = [{"role": "user", "content": "x"}]
    prompt = render_chat(tokenizer, user, backbone, add_generation_prompt=True)
    full = render_chat(
        tokenizer, user + [{"role": "assistant", "content": SENTINEL}], backbone, add_generation_prompt=False
    )
    before, after = "", ""
    if full.startswith(prompt) and SENTINEL in full[len(prompt) :]:
        before, after = full[len(prompt) :].split(SENTINEL, 1)
    stops = [s for s in (END_OF_TURN.get(backbone.chat_format), tokenizer.eos_token) if s]
    hits = [(after.find(s), s) for s in stops if s in after]
    if hits:
        at, stop = min(hits)
        after = after[: at + len(stop)]
    else:
        after = tokenizer.eos_token or ""
    return before, after


def completion_ids(tokenizer: Any, affixes: tuple[str, str], target: str) -> list[int]:
    """Token ids of ``target`` as an assistant turn: its text, then the end-of-turn, once."""
    before, after = affixes
    return tokenizer(before + target.strip() + after, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------
# loading


def _load_error(name: str, err: Exception, what: str = "model") -> UserError:
    """One line for a model (or its tokenizer) that does not load; the library's message is
    kept whole (on one line), the useful part is often in its second half."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if Path(name).exists():
        return UserError(f"cannot load the {what}: {type(err).__name__}: {one_line(err)}", file=name)
    where = (
        "not in the local hub cache and HF_HUB_OFFLINE=1"
        if offline
        else "not a local folder, and the hub could not provide it"
    )
    return UserError(
        f"cannot load model '{name}': {where}",
        field="model",
        hint="give a local path, or download it first with `hf download`",
    )


def load_tokenizer(
    name: str, backbone: Backbone | None = None, *, trust_remote_code: bool | None = None
) -> Any:
    """Tokenizer with a pad token and a chat template guaranteed."""
    from transformers import AutoTokenizer

    problem = tokenizer_problem(name)  # instead of "Couldn't instantiate the backend tokenizer"
    if problem:
        raise UserError(
            problem,
            file=name,
            field="model",
            hint="give the model's folder, or the hub id it was downloaded from",
        )
    backbone = backbone or get_backbone(name)
    remote = backbone.trust_remote_code if trust_remote_code is None else trust_remote_code
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=remote)
    except (OSError, ValueError) as err:
        raise _load_error(name, err, "tokenizer") from None
    if tok.pad_token is None:
        pad = backbone.pad_token
        if pad and pad in tok.get_vocab():
            tok.pad_token = pad
        else:
            tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = TEMPLATES.get(backbone.chat_format, TEMPLATES["chatml"])
    tok.padding_side = backbone.padding_side
    return tok


def quantization_config(compute_dtype: Any = None) -> Any:
    """QLoRA's 4-bit NF4 with double quantisation; bf16 compute where the hardware has it."""
    import torch
    from transformers import BitsAndBytesConfig

    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if (not cuda_available() or cuda_bf16()) else torch.float16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype,
    )


def resolve_dtype(dtype: str | None) -> Any:
    import torch

    if dtype in (None, "auto"):
        if cuda_available():
            return torch.bfloat16 if cuda_bf16() else torch.float16
        return torch.float32
    try:
        return {
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp16": torch.float16,
            "float16": torch.float16,
            "fp32": torch.float32,
            "float32": torch.float32,
        }[dtype]
    except KeyError:
        raise UserError(f"unknown dtype '{dtype}'", field="dtype", hint="bf16, fp16, fp32 or auto") from None


def load_model(
    name: str,
    method: str = "full",
    *,
    backbone: Backbone | None = None,
    dtype: str | None = "auto",
    device_map: Any = None,
    trust_remote_code: bool | None = None,
    attn_implementation: str | None = None,
    num_labels: int | None = None,
) -> Any:
    """A causal LM from a hub id or local path; ``method`` is full, lora or qlora.

    For qlora the base is loaded 4-bit (NF4); adapters are attached by the trainer (peft), so
    this function is the same for training and for inference on a base model. With
    ``num_labels`` the model is a sequence classifier instead (the LM head replaced by a
    ``num_labels``-way score head, kept out of 4-bit quantisation).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if method not in ("full", "lora", "qlora"):
        raise UserError(f"unknown method '{method}'", field="method", hint="full, lora or qlora")
    backbone = backbone or get_backbone(name)
    remote = backbone.trust_remote_code if trust_remote_code is None else trust_remote_code
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(dtype),
        "attn_implementation": attn_implementation or backbone.attn_implementation,
        "trust_remote_code": remote,
    }
    if method == "qlora":
        kwargs["quantization_config"] = quantization_config(
            kwargs["dtype"] if kwargs["dtype"] != torch.float32 else None
        )
        kwargs["dtype"] = kwargs["quantization_config"].bnb_4bit_compute_dtype
        if num_labels is not None:  # the new head is trained in full precision
            kwargs["quantization_config"].llm_int8_skip_modules = ["score", "classifier"]
        if device_map is None:
            device_map = {"": default_device()}  # 4-bit weights load onto one device
    if device_map is not None:
        kwargs["device_map"] = device_map
    from transformers.utils import logging as hf_logging

    auto = AutoModelForCausalLM
    verbosity = hf_logging.get_verbosity()
    if num_labels is not None:
        auto = AutoModelForSequenceClassification
        kwargs["num_labels"] = num_labels
        # its load report calls the head missing: it is new by design (trained, or the adapter's)
        hf_logging.set_verbosity(max(verbosity, hf_logging.ERROR))
    try:
        model = auto.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


__all__ = [
    "NON_COMMERCIAL",
    "REGISTRY",
    "SENTINEL",
    "Backbone",
    "answer_ids",
    "answer_prefix",
    "assistant_affixes",
    "completion_ids",
    "end_of_turn_ids",
    "encode",
    "fold_system",
    "get_backbone",
    "load_model",
    "load_tokenizer",
    "non_commercial",
    "registry_table",
    "render_chat",
    "replace",
]
