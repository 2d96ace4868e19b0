"""What a model folder can do, read from its files without loading it.

Loading a model takes seconds to minutes; these checks take milliseconds and say, before any of
that, why a folder will not do: an encoder given where a text generator is needed, a folder with
no tokenizer (transformers would only say "Couldn't instantiate the backend tokenizer").
"""

from __future__ import annotations

import json
from pathlib import Path

from malpyeong.errors import UserError, one_line


def local_config(name: str) -> dict | None:
    """A model's config.json as a dict (a local folder, or a hub id already in the local cache),
    None when there is none here; one line when it is damaged."""
    path = Path(name) / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"not valid JSON ({one_line(err, 120)})", file=str(path)) from None
        if not isinstance(config, dict):
            raise UserError("not a model config (a JSON object)", file=str(path))
        return config
    try:  # a hub id that is already in the local cache
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - a malformed id is reported when loading
        pass
    return None


GENERATION_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def generation_problem(name: str) -> str | None:
    """Why the model ``name`` cannot write text, read from its config.json without loading it,
    or None when it can (or when there is no local config to tell: loading then says).

    transformers' ``AutoModelForCausalLM`` loads an encoder such as BERT with a fresh, random
    LM head (``BertLMHeadModel``), which then generates noise or crashes on its position
    table; its config's ``architectures`` say what the weights really are."""
    config = local_config(name)
    if config is None:
        return None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and "AutoModelForCausalLM" in auto_map:
        return None  # remote code that names its own causal LM class (GLM-4's ChatGLMModel config)
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        not archs or any(a.endswith(GENERATION_HEADS) for a in archs)
    ):
        return None
    what = archs[0] if archs else f"a '{model_type}' model"
    if archs and archs[0].endswith(("Classification", "ForMultipleChoice", "ForQuestionAnswering")):
        kind = "a classifier"
    elif archs and archs[0].endswith(("ForMaskedLM", "ForPreTraining", "Model")):
        kind = (
            "an encoder (embeddings, BERTScore)"
            if not config.get("is_decoder")
            else "a model without an LM head"
        )
    elif model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        kind = "a kind transformers cannot load as a text generator"
    else:
        kind = "a model without an LM head"
    return f"is {what}, {kind}: it has no text-generation head"


# A tokenizer's vocabulary is in one of these (fast, SentencePiece, BPE, WordPiece, tiktoken).
VOCABULARY_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.tiktoken",
    "qwen.tiktoken",
)


def tokenizer_problem(name: str) -> str | None:
    """Why the local folder ``name`` holds no tokenizer, or None (a hub id, or one that has)."""
    folder = Path(name)
    if not folder.is_dir() or any((folder / f).is_file() for f in VOCABULARY_FILES):
        return None
    if (folder / "config.json").is_file():
        return "has no tokenizer (no tokenizer.json, tokenizer.model, vocab.json or vocab.txt)"
    return "is not a model folder (no config.json, no tokenizer files)"


__all__ = ["GENERATION_HEADS", "VOCABULARY_FILES", "generation_problem", "local_config", "tokenizer_problem"]
