"""The chat task: items, the prompt in which the model is the character (chat templates and
the plain transcript of a model without one), reply cleaning, metrics; and the shared layer
for a model without attention (Mamba): the registry, prefix sharing, left-padded generation,
gold-reply log-likelihoods, LoRA targets."""

from __future__ import annotations

import math

import pytest
import torch

from malpyeong.errors import UserError
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.engines import GenerationSettings, HFEngine
from malpyeong.inference.generation import generate_texts
from malpyeong.inference.loading import load_for_inference
from malpyeong.inference.scoring import can_share_prefix, sequence_logprobs
from malpyeong.metrics.chat import chat_scores, distinct_n, lcs_length, perplexity, rouge_l_pair
from malpyeong.models.backbones import (
    REGISTRY,
    assistant_affixes,
    end_of_turn_ids,
    get_backbone,
    load_tokenizer,
    registry_table,
    render_chat,
)
from malpyeong.tasks import get_task
from malpyeong.tasks.base import Utterance
from malpyeong.tasks.chat import clean_reply
from malpyeong.training.models import lora_targets

CHAT = get_task("chat")


@pytest.fixture(scope="module")
def models(tiny_models, tiny_mamba):
    return {**tiny_models, "mamba": tiny_mamba}


def record(conv, speaker="Joey", output="How you doin'?", **extra):
    return {
        "id": "c1",
        "input": {
            "conversation": [{"speaker": s, "utterance": u} for s, u in conv],
            "speaker": speaker,
            **extra,
        },
        "output": output,
    }


def item(conv, speaker="Joey", **extra):
    problems: list = []
    parsed = CHAT.parse_item(record(conv, speaker, **extra), problems)
    assert problems == []
    return parsed


SCENE = [("Joey", "Hey."), ("Monica", "Hi Joey."), ("Ross", "Yo."), ("Joey", "What?"), ("Monica", "Nothing.")]


def test_parse_reports_every_problem():
    problems: list = []
    bad = record([("A", "hi")], speaker=" ", output=3, persona=["x"])
    assert CHAT.parse_item(bad, problems) is None
    assert [f for f, _ in problems] == ["input.speaker", "input.persona", "output"]
    it = item([("A", "hi")], persona="  A chef.  ", memory="")
    assert (it.persona, it.memory, it.reply, CHAT.has_output(it)) == ("A chef.", None, "How you doin'?", True)


def test_the_character_is_the_assistant_and_roles_alternate():
    msgs = CHAT.messages(item(SCENE))
    assert [(m["role"], m["content"]) for m in msgs[1:]] == [
        ("user", "Joey: Hey.\nMonica: Hi Joey.\nRoss: Yo."),  # Joey spoke first: context text
        ("assistant", "What?"),
        ("user", "Monica: Nothing."),
    ]
    assert msgs[0]["role"] == "system" and msgs[0]["name"] == "Joey"
    assert msgs[0]["content"] == (
        "You are Joey. Continue the conversation in character: reply with Joey's next line only."
    )
    last = CHAT.messages(item(SCENE[:4]))  # Joey spoke last: shown in the user's text
    assert [(m["role"], m["content"]) for m in last[1:]] == [
        ("user", "Joey: Hey.\nMonica: Hi Joey.\nRoss: Yo.\nJoey: What?")
    ]


def test_persona_memory_and_korean_instructions():
    it = item(SCENE, persona="Joey is an actor.", memory="The user is a nurse.")
    plain = CHAT.messages(it)[0]["content"]
    assert "actor" not in plain and plain.endswith("Earlier in this conversation:\nThe user is a nurse.")
    system = CHAT.messages(it, CHAT.prompt_spec("persona+ko"))[0]["content"]
    assert system.startswith("Joey is an actor.\n\n당신은 Joey입니다.")
    assert "앞선 대화의 내용:\nThe user is a nurse." in system


def test_transcript_format_for_a_model_without_chat_template(models):
    path = str(models["mamba"])
    backbone = get_backbone(path)
    tok = load_tokenizer(path, backbone)
    assert (backbone.family, backbone.chat_format) == ("mamba", "transcript")
    text = render_chat(tok, CHAT.messages(item(SCENE)), backbone)
    assert text == (
        "You are Joey. Continue the conversation in character: reply with Joey's "
        "next line only.\n\nJoey: Hey.\nMonica: Hi Joey.\nRoss: Yo.\nJoey: What?\n"
        "Monica: Nothing.\nJoey:"
    )
    assert assistant_affixes(tok, backbone) == (" ", "\n")
    newline = tok.encode("\n", add_special_tokens=False)
    assert len(newline) == 1 and newline[0] in end_of_turn_ids(tok, backbone)


def test_mistral_template_takes_the_chat(models):
    path = str(models["mistral"])
    tok, backbone = load_tokenizer(path), get_backbone(path)
    text = render_chat(tok, CHAT.messages(item(SCENE)), backbone)
    assert text.startswith("<s>[INST] You are Joey.") and text.endswith(
        "[/INST]What?</s>[INST] Monica: Nothing. [/INST]"
    )


@pytest.mark.parametrize(
    "raw, reply",
    [
        (" I'm fine.\nMonica: Really?", "I'm fine."),
        ("joey: Hey there<|im_end|>", "Hey there"),
        ("\n\n  Okay  then </s>", "Okay then"),
        ("<end_of_turn>", ""),
    ],
)
def test_replies_cleaned(raw, reply):
    assert clean_reply(raw, "Joey") == reply


def test_registry_entries():
    mistral = REGISTRY["mistralai/Mistral-7B-Instruct-v0.3"]
    mamba = REGISTRY["state-spaces/mamba-2.8b-hf"]
    assert (mistral.family, mistral.chat_format, mistral.system_role) == ("mistral", "mistral_v3", False)
    assert (mamba.family, mamba.chat_format, mamba.instruct) == ("mamba", "transcript", False)
    assert "state-spaces/mamba-2.8b-hf" in registry_table()


def test_metric_values():
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    assert rouge_l_pair("the cat sat on the mat", "the cat sat") == pytest.approx(2 / 3)
    assert rouge_l_pair("hello", "") == 0.0
    assert distinct_n(["a b a", "a b"], 1) == pytest.approx(2 / 5)
    assert distinct_n(["a b a", "a b"], 2) == pytest.approx(2 / 3)
    assert perplexity([-2.0, -4.0], [2, 4]) == pytest.approx(math.e)
    report = chat_scores(
        ["the cat sat", "hi there"],
        ["the cat sat", "bye"],
        skip=("bertscore",),
        ref_logprobs=[(-3.0, 3), None],
    )
    assert report["rougeL"] == pytest.approx(0.5) and report["avg_words"] == 2.0
    assert report["perplexity"] == pytest.approx(math.e) and report["perplexity_items"] == 1
    assert report["bertscore"] is None and len(report["notices"]) == 2


def test_evaluate_reads_perplexity_from_the_sidecar_and_bertscore_locally(tmp_path):
    from malpyeong.models.tiny import build_tiny_embedder

    gold = [item([("A", "hi")], output="good morning to you"), item([("A", "hey")], output="see you later")]
    gold[1] = type(gold[1])(**{**gold[1].__dict__, "id": "c2"})
    bert = build_tiny_embedder(tmp_path / "bert")  # a BERT encoder, 9 layers
    report = CHAT.evaluate(
        gold,
        {"c1": "good morning", "c2": "see you"},
        sidecar={"c1": {"ref_logprob": -1.0, "ref_tokens": 1}, "c2": {"ref_logprob": -3.0, "ref_tokens": 2}},
        bertscore_model=str(bert),
    )
    assert report["perplexity"] == pytest.approx(math.exp(4 / 3))
    assert 0.0 < report["bertscore"] <= 1.0 and report["bertscore_model"]["layer"] == 9
    shown = CHAT.format_report(report)
    assert "perplexity 3.7937" in shown and "distinct1" in shown


# ----------------------------------------------------------------- a model without attention


def test_mamba_never_shares_a_prefix_cache(models):
    model = load_for_inference(models["mamba"]).model
    assert not can_share_prefix(model, 10)
    llama = load_for_inference(models["llama"]).model
    assert can_share_prefix(llama, 10)


@pytest.mark.parametrize("family", ["mamba", "llama"])
def test_completion_logprobs_match_one_forward_pass(models, family):
    loaded = load_for_inference(models[family])
    model, tok = loaded.model, loaded.tokenizer
    prompts = [
        tok.encode("오늘 날씨가 정말 좋네요. 주말에 뭐 할 거예요?", add_special_tokens=False),
        tok.encode("회사 일이 너무 많아서", add_special_tokens=False),
    ]
    completions = [
        tok.encode(" 영화 보러 가요", add_special_tokens=False),
        tok.encode(" 쉬고 싶다", add_special_tokens=False),
    ]
    got = sequence_logprobs(model, tok, prompts, completions, batch_size=2)
    for p, c, value in zip(prompts, completions, got, strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        expected = sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(c))
        assert value == pytest.approx(expected, abs=1e-6)
    assert sequence_logprobs(model, tok, prompts, completions, done={0})[0] is None


def test_mamba_left_padded_generation_equals_one_at_a_time(models):
    loaded = load_for_inference(models["mamba"])
    tok = loaded.tokenizer
    prompts = [
        tok.encode("안녕하세요", add_special_tokens=False),
        tok.encode("회사 일이 너무 많아서 요즘 계속 야근하고 있어", add_special_tokens=False),
    ]
    batch = generate_texts(loaded.model, tok, prompts, max_new_tokens=6, progress=False)
    alone = [generate_texts(loaded.model, tok, [p], max_new_tokens=6, progress=False)[0] for p in prompts]
    assert batch == alone


def test_answering_path_keeps_gold_reply_loglik(models):
    loaded = load_for_inference(models["mamba"])
    engine = HFEngine(loaded.model, loaded.tokenizer, loaded.backbone)
    items = [item(SCENE), item(SCENE[:2], output="")]
    run = answer_items(
        engine, CHAT, items, AnswerSettings(generation=GenerationSettings(max_new_tokens=4)), progress=False
    )
    first, second = (a.sidecar for a in run.answers)
    assert first["ref_tokens"] == len(loaded.tokenizer.encode(" How you doin'?\n", add_special_tokens=False))
    assert first["ref_logprob"] < 0 and "ref_logprob" not in second  # no gold, no score


def test_all_linear_lora_on_mamba_leaves_out_what_peft_refuses(models):
    """peft refuses out_proj; the mixer reads dt_proj.weight (and, in the fused CUDA kernel,
    x_proj.weight) directly, so adapters there would never train (issue 25, finding 5)."""
    model = load_for_inference(models["mamba"]).model
    assert lora_targets(model, ["all-linear"]) == ["in_proj"]
    assert lora_targets(model, ["x_proj", "embeddings"]) == ["x_proj", "embeddings"]
    llama = load_for_inference(models["llama"]).model
    assert lora_targets(llama, ["all-linear"]) == ["all-linear"]


def test_a_live_item_for_a_bare_conversation():
    conv = (Utterance("User", "hi"), Utterance("Mina", "hello"))
    assert CHAT.live_item(conv, speaker="Mina", memory="m").memory == "m"
    summary = get_task("dcs").live_item(conv)  # a DCS summariser folds a chat's old turns
    assert summary.conversation == conv and summary.keywords
    with pytest.raises(UserError, match="cannot take a bare conversation"):
        get_task("cci").live_item(conv)
