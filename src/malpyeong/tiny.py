"""Tiny random-weight models of the real architectures, for tests and the demo.

Each is saved with ``save_pretrained`` (safetensors) next to a small byte-level BPE tokenizer
trained on Korean text and carrying its family's special tokens and chat format, so every
code path loads it with the same ``from_pretrained`` a real backbone takes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from malpyeong.backbones import TEMPLATES
from malpyeong.errors import UserError

FAMILIES = ("llama", "gemma2", "qwen2", "mistral")

# family -> (chat format, bos, eos, pad, extra special tokens, end-of-turn token)
SPECIALS = {
    "llama": ("llama3", "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>",
              ["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"], "<|eot_id|>"),
    "gemma2": ("gemma2", "<bos>", "<eos>", "<pad>", ["<start_of_turn>", "<end_of_turn>"],
               "<end_of_turn>"),
    "qwen2": ("chatml", None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"], "<|im_end|>"),
    "mistral": ("mistral", "<s>", "</s>", "<unk>", ["[INST]", "[/INST]"], None),
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
    roots = extra_dirs if extra_dirs is not None else [Path(__file__).resolve().parents[2] / "resource" / "data"]
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
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = texts if texts is not None else corpus_texts() + SEED_TEXT_EN.splitlines()
    tok.train_from_iterator(texts, trainer=trainer)
    if bos:  # like the real Llama/Gemma/Mistral tokenizers: BOS on plain encode
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token=None, additional_special_tokens=extra,
                                   chat_template=TEMPLATES[fmt], model_max_length=4096,
                                   clean_up_tokenization_spaces=False)
    return fast


def build_config(family: str, tokenizer: Any, hidden_size: int = 64, layers: int = 2,
                 heads: int = 4, kv_heads: int = 2, max_positions: int = 4096) -> Any:
    """A config of the real architecture class, tiny in every dimension."""
    from transformers import Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config

    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id}
    common = {"hidden_size": hidden_size, "intermediate_size": hidden_size * 3,
              "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "max_position_embeddings": max_positions, **ids}
    if family == "llama":
        return LlamaConfig(rope_theta=500000.0, tie_word_embeddings=False, **common)
    if family == "gemma2":
        head_dim = hidden_size // heads
        return Gemma2Config(head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=512,
                            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **common)
    if family == "qwen2":
        return Qwen2Config(tie_word_embeddings=True, **common)
    if family == "mistral":
        return MistralConfig(sliding_window=None, tie_word_embeddings=False, **common)
    raise UserError(f"unknown family '{family}'", field="family", hint=", ".join(FAMILIES))


def build_tiny_model(family: str, out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64,
                     layers: int = 2, vocab_size: int = 2000, texts: list[str] | None = None) -> Path:
    """Build, initialise with ``seed`` and save a tiny model + tokenizer to ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if family not in FAMILIES:
        raise UserError(f"unknown family '{family}'", field="family", hint=", ".join(FAMILIES))
    out = Path(out_dir)
    tokenizer = build_tokenizer(family, vocab_size, texts)
    config = build_config(family, tokenizer, hidden_size, layers)
    config.malpyeong_chat_format = SPECIALS[family][0]  # lets get_backbone() pick the format
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                             attn_implementation="eager" if family == "gemma2" else "sdpa")
    eot = SPECIALS[family][5]
    stop = [tokenizer.eos_token_id] + ([tokenizer.convert_tokens_to_ids(eot)] if eot else [])
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=sorted(set(stop)),
        pad_token_id=tokenizer.pad_token_id, do_sample=False)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_embedder(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 32,
                        layers: int = 9, vocab_size: int = 2000,
                        texts: list[str] | None = None) -> Path:
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
    tok.normalizer = normalizers.Sequence([
        normalizers.BertNormalizer(lowercase=False, strip_accents=False), normalizers.NFD()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    alphabet = [chr(c) for c in [*range(0x1100, 0x1200), *range(0x21, 0x7F)]]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                        initial_alphabet=alphabet, show_progress=False)
    texts = texts if texts is not None else corpus_texts() + SEED_TEXT_EN.splitlines()
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                  model_max_length=512)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                        num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=hidden_size * 2, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    bert = out / "bert"
    BertModel(config).save_pretrained(bert, safe_serialization=True)
    tokenizer.save_pretrained(bert)
    encoder = models.Transformer(str(bert), max_seq_length=512)
    pooling = models.Pooling(encoder.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[encoder, pooling], device="cpu").save(str(out))
    shutil.rmtree(bert)
    return out
