"""Task layer: golden baseline prompts, every variant through every family's template."""

from __future__ import annotations

import itertools

import pytest

from malpyeong.errors import UserError
from malpyeong.models.backbones import encode, get_backbone, load_tokenizer, render_chat
from malpyeong.tasks import get_task
from malpyeong.tasks.base import OFFICIAL_SYSTEM
from malpyeong.tasks.cci import CATEGORIES, josa_euro


def parse(task, record):
    problems = []
    item = get_task(task).parse_item(record, problems)
    assert not problems, problems
    return item


GOLDEN_CCI = """[Conversation]
화자1: 어제 비가 많이 와서 우산을 샀어.
화자2: 나도 신발이 다 젖었어.
화자1: 오늘은 날씨가 맑대.
화자2: 그럼 공원에 산책 가자.

[Question]
위 대화의 동기로 올바른 지문은?

[Option]
A. 화자2는 맑은 날씨를 즐기고 싶어 한다.
B. 화자2는 비 오는 날을 좋아한다.
C. 화자2는 우산을 사고 싶어 한다."""

GOLDEN_DCS = """[Conversation]
화자SD9000001: 요즘 요리를 배우고 있어요.
화자SD9000002: 어떤 요리를 배우세요?
화자SD9000001: 주로 한식이요. 된장찌개를 제일 자주 만들어요.
화자SD9000002: 저는 빵 굽는 걸 좋아해요.

[Question]
위 요리, 취미 주제에 대한 대화를 요약해주세요."""


def test_golden_cci_baseline(cci_record):
    messages = get_task("cci").messages(parse("cci", cci_record))
    assert messages == [
        {"role": "system", "content": OFFICIAL_SYSTEM},
        {"role": "user", "content": GOLDEN_CCI},
    ]


def test_golden_dcs_baseline(dcs_record):
    messages = get_task("dcs").messages(parse("dcs", dcs_record))
    assert messages[1]["content"] == GOLDEN_DCS
    assert messages[0]["content"] == OFFICIAL_SYSTEM


@pytest.mark.parametrize(
    "category,expected",
    [
        ("원인", "원인으로"),
        ("후행사건", "후행사건으로"),
        ("전제", "전제로"),
        ("동기", "동기로"),
        ("반응", "반응으로"),
    ],
)
def test_question_particle_per_category(cci_record, category, expected):
    # The official baseline code loses the whole question for 전제 and 동기; we do not.
    cci_record["input"]["category"] = category
    text = get_task("cci").messages(parse("cci", cci_record))[1]["content"]
    assert f"[Question]\n위 대화의 {expected} 올바른 지문은?\n" in text


def test_josa_rule():
    assert josa_euro("서울") == "로"  # final ㄹ takes 로
    assert josa_euro("집") == "으로" and josa_euro("학교") == "로" and josa_euro("AI") == "로"


def test_highlight_definitions_cot_persona(cci_record):
    task = get_task("cci")
    item = parse("cci", cci_record)
    sys_msg, user = task.messages(item, task.prompt_spec("highlight+definitions+cot+persona"))
    assert "언어학자" in sys_msg["content"]
    assert "★ 화자2: 그럼 공원에 산책 가자." in user["content"]
    assert "[Target]\n화자2: 그럼 공원에 산책 가자.\n" in user["content"]
    assert "[Definition]\n내적 동기:" in user["content"]
    assert "위 대화에서 [Target] 발화의 동기로 올바른 지문은?" in user["content"]
    assert user["content"].endswith("'정답: A'처럼 답을 쓰세요.")
    en = task.messages(item, task.prompt_spec("en+definitions"))[1]["content"]
    assert "Which option is the correct motivation of the conversation above?" in en
    assert "motivation: the speaker's inner" in en and "동기로" not in en
    bi = task.messages(item, task.prompt_spec("bilingual"))[1]["content"]
    assert "위 대화의 동기로 올바른 지문은?\nWhich option" in bi


def test_unknown_prompt_suggests(cci_record):
    with pytest.raises(UserError, match="did you mean 'highlight'"):
        get_task("cci").prompt_spec("higlight")
    with pytest.raises(UserError, match="did you mean 'dcs'"):
        get_task("dsc")


def test_targets_and_answers(cci_record):
    task = get_task("cci")
    item = parse("cci", cci_record)
    assert task.target(item) == "A. 화자2는 맑은 날씨를 즐기고 싶어 한다."
    assert task.target(item, style="letter") == "A"
    assert (
        task.target(item, rationale="맑은 날씨를 즐기려는 것이다.") == "맑은 날씨를 즐기려는 것이다.\n정답: A"
    )
    assert task.parse_answer("근거...\n정답: C") == 2
    assert task.parse_answer("B. 어쩌고") == 1 and task.parse_answer("모르겠다") is None


def test_permutation_moves_label(cci_record):
    task = get_task("cci")
    item = parse("cci", cci_record)
    p = task.permuted(item, (2, 0, 1))
    assert p.options[p.label] == item.options[item.label]
    assert p.label == 1 and p.options[0] == item.options[2]


def test_cci_drop_order_keeps_references(cci_record):
    cci_record["input"]["reference_id"] = ["T1.1.2"]
    item = parse("cci", cci_record)
    assert get_task("cci").drop_order(item) == [3, 0, 2]  # farthest first, ties earlier first


def test_dcs_drop_order_from_middle(dcs_record):
    conv = dcs_record["input"]["conversation"]
    dcs_record["input"]["conversation"] = conv + conv[:3]  # 7 utterances, middle index 3
    item = parse("dcs", dcs_record)
    assert get_task("dcs").drop_order(item) == [3, 2, 4, 1, 5]


def test_dcs_clean_output():
    task = get_task("dcs")
    assert (
        task.clean_output("요약: 두 화자는 여행을 말했다. 좋았다. 좋았다. 좋았다.<end_of_turn>")
        == "두 화자는 여행을 말했다. 좋았다."
    )
    assert task.clean_output("model\n두 화자는 <|eot_id|>") == "두 화자는"


VARIANTS = {
    "cci": [
        "baseline",
        "highlight",
        "definitions",
        "cot",
        "persona",
        "en",
        "bilingual",
        "highlight+definitions+persona+bilingual",
        "en+cot+highlight",
    ],
    "dcs": ["baseline", "persona", "style", "en", "bilingual", "persona+style+bilingual"],
}


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen2", "mistral"])
def test_every_variant_renders_through_every_family(tiny_models, cci_record, dcs_record, family):
    path = str(tiny_models[family])
    backbone = get_backbone(path)
    tok = load_tokenizer(path, backbone)
    for task_name, record in (("cci", cci_record), ("dcs", dcs_record)):
        task = get_task(task_name)
        item = parse(task_name, record)
        for variant in VARIANTS[task_name]:
            messages = task.messages(item, task.prompt_spec(variant))
            text = render_chat(tok, messages, backbone)
            ids = encode(tok, text)
            # the system prompt survives (folded into the user turn where the family has no system role)
            assert messages[0]["content"].split()[0] in text
            assert messages[1]["content"].splitlines()[-1].strip() in text
            if tok.bos_token:
                assert ids.count(tok.bos_token_id) == 1  # no double BOS
            assert tok.decode(ids, skip_special_tokens=False).replace(" ", "") == text.replace(" ", "")


def test_family_formats(tiny_models, cci_record):
    item = parse("cci", cci_record)
    messages = get_task("cci").messages(item)
    starts = {
        "llama": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are",
        "gemma2": "<bos><start_of_turn>user\nYou are a helpful",
        "qwen2": "<|im_start|>system\nYou are a helpful AI",
        "mistral": "<s>[INST] You are a helpful",
        "exaone": "[|system|]You are a helpful AI",
    }
    ends = {
        "llama": "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "gemma2": "<end_of_turn>\n<start_of_turn>model\n",
        "qwen2": "<|im_end|>\n<|im_start|>assistant\n",
        "mistral": " [/INST]",
        "exaone": "\n[|assistant|]",
    }
    for family, path in tiny_models.items():
        backbone = get_backbone(str(path))
        text = render_chat(load_tokenizer(str(path), backbone), messages, backbone)
        assert text.startswith(starts[family]) and text.endswith(ends[family]), family


def test_all_categories_and_permutations_render(cci_record):
    task = get_task("cci")
    for category, order in zip(
        CATEGORIES, itertools.permutations(range(3)), strict=False
    ):  # 5 categories, 6 orders
        cci_record["input"]["category"] = category
        item = task.permuted(parse("cci", cci_record), order)
        assert f"A. {item.options[0]}" in task.messages(item)[1]["content"]
