"""The 2025 tasks (rag, culture): parsing with every problem reported, prompts per question type,
passages in the prompt and cut first by the budget, generations read back into the official
form (with repairs counted), the per-item submission check, the synthetic sets, the rules, the
generation preset and Qwen3's template with thinking off."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import ROOT, SAMPLES, load_script

from malpyeong.data import check_submission, load_items
from malpyeong.errors import UserError, UserErrors
from malpyeong.models.backbones import (
    assistant_affixes,
    get_backbone,
    load_tokenizer,
    render_chat,
)
from malpyeong.models.budget import fit_prompt
from malpyeong.retrieval.index import Index
from malpyeong.tasks import get_task
from malpyeong.tasks.culture import options_of
from malpyeong.training import sft_parser
from malpyeong.training.examples import training_items

RAG, CULTURE = get_task("rag"), get_task("culture")
NORMS = sorted((SAMPLES / "norms").glob("*.md"))


def parse(task, record):
    problems: list = []
    return task.parse_item(record, problems), problems


def rag_item(
    question_type="선택형",
    question='"방을 {깨끗이/깨끗히} 청소했다." 가운데 올바른 것을 선택하고, 그 이유를 설명하세요.',
):
    item, problems = parse(RAG, {"id": "r1", "input": {"question_type": question_type, "question": question}})
    assert problems == []
    return item


def test_samples_load_and_validate_with_every_type():
    for task in (RAG, CULTURE):
        for split in ("train", "dev", "test"):
            items = load_items(SAMPLES / f"{task.name}_{split}.jsonl", task, require_output=split != "test")
            assert items
    types = {
        it.question_type
        for s in ("train", "dev", "test")
        for it in load_items(SAMPLES / f"culture_{s}.jsonl", CULTURE)
    }
    assert types == {"선다형", "단답형", "서술형"}
    rag_types = {
        it.question_type for s in ("train", "test") for it in load_items(SAMPLES / f"rag_{s}.jsonl", RAG)
    }
    assert rag_types == {"선택형", "교정형", "서술형"}  # 선택형형 in the test file read as 선택형


def test_misspelled_type_is_a_warning_once(caplog):
    record = {"id": "typo-1", "input": {"question_type": "선택형형", "question": '"{가/나}" 가운데'}}
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            item, problems = parse(RAG, record)
    assert problems == [] and item.question_type == "선택형"
    assert [r.getMessage() for r in caplog.records].count(
        "item typo-1: question_type '선택형형' read as '선택형' (a misspelling the official files hold)"
    ) == 1


def test_every_problem_of_a_record_is_reported():
    _, problems = parse(
        RAG, {"id": "", "input": {"question_type": "객관식", "question": " "}, "output": {"answer": 3}}
    )
    assert problems == [
        ("id", "missing or not a non-empty string"),
        ("input.question", "missing or not a non-empty string"),
        ("input.question_type", "'객관식' is not one of 선택형, 교정형, 선다형, 서술형, 단답형"),
        ("output", "output.answer must be a non-empty string"),
    ]
    _, problems = parse(
        CULTURE,
        {
            "id": "c",
            "input": {"question_type": "선다형", "question": "무엇? \\n 1\t 가   2\t 나"},
            "output": {"answer": "3"},
        },
    )
    assert problems == [("output", "option 3 does not exist: the question has 2 options")]
    _, problems = parse(
        CULTURE,
        {"id": "c", "input": {"question_type": "선다형", "question": "q"}, "output": {"answer": "3번"}},
    )
    assert problems == [
        ("output", "a 선다형 answer is the option number, digits only (e.g. \"3\"), not '3번'")
    ]
    _, problems = parse(
        RAG, {"id": "x", "input": {"question_type": "교정형", "question": "q"}, "output": None}
    )
    assert problems == [("output", 'null; leave it out or use "" in test files')]


def test_options_read_with_literal_or_real_line_breaks():
    assert options_of("무엇인가요? \\n 1\t 설날   2\t 어린이날   3\t 정월대보름   4\t 단오") == [
        "설날",
        "어린이날",
        "정월대보름",
        "단오",
    ]
    assert options_of("무엇인가요? \n1\t 부산   2\t 경주") == ["부산", "경주"]
    assert options_of("보기가 없는 질문") == []


def test_prompts_per_type_and_variants():
    item = rag_item()
    baseline = RAG.messages(item)[1]["content"]
    assert baseline.startswith("[지침]\n문장의 중괄호") and "[예시]" in baseline
    assert baseline.endswith("[질문]\n" + item.question)
    assert "[예시]" not in RAG.messages(item, RAG.prompt_spec("zeroshot"))[1]["content"]
    assert RAG.messages(item, RAG.prompt_spec("persona"))[0]["content"].startswith(
        "당신은 국어 규범을 가르치는"
    )
    assert RAG.messages(item, RAG.prompt_spec("en"))[1]["content"].startswith("[Instruction]")
    culture = load_items(SAMPLES / "culture_dev.jsonl", CULTURE)[0]
    content = CULTURE.messages(culture)[1]["content"]
    assert "- topic_keyword: 정월 대보름" in content and "번호만 숫자로" in content
    with pytest.raises(UserError, match="unknown prompt variant 'cot'"):
        RAG.prompt_spec("cot")


def test_passages_are_listed_then_cut_first_and_the_question_never(tiny_models):
    index = Index.build(NORMS, "sparse")
    [alone] = RAG.add_passages([rag_item()], index, 3)
    assert [p.id for p in alone.passages] == ["hangeul:13"]  # sparse: only passages sharing a term
    [item] = RAG.add_passages([rag_item(question='"카메라 {플래시/플래쉬}가 터지는 소리" 가운데')], index, 3)
    assert [p.id for p in item.passages] == ["oeraeeo:8", "oeraeeo:6", "hangeul:2"]
    content = RAG.messages(item)[1]["content"]
    assert "[참고 규범]\n1. [외래어 표기법 > 제3장 영어의 표기 > 어말의 [ʃ]] 어말의" in content
    assert content.index("[참고 규범]") < content.index("[질문]")
    cuts = RAG.cuts(item, RAG.prompt_spec(None))
    assert cuts.count == 3 and [p.id for p in cuts.apply(1).passages] == ["oeraeeo:8", "oeraeeo:6"]
    path = tiny_models["qwen2"]
    tok, backbone = load_tokenizer(str(path)), get_backbone(str(path))
    full = fit_prompt(RAG, item, tok, backbone, RAG.prompt_spec(None))
    fitted = fit_prompt(RAG, item, tok, backbone, RAG.prompt_spec(None), full.full_tokens - 10)
    assert fitted.fits and fitted.dropped == 1 and item.question in fitted.text
    with pytest.raises(UserError, match="does not take retrieved passages"):
        get_task("cci").add_passages([], index, 3)


def test_retrieval_query_is_the_quoted_sentence():
    assert RAG.retrieval_query(rag_item()) == "방을 {깨끗이/깨끗히} 청소했다."
    plain = load_items(SAMPLES / "culture_dev.jsonl", CULTURE)[2]
    assert CULTURE.retrieval_query(plain) == plain.question


@pytest.mark.parametrize(
    ("text", "answer", "flags"),
    [
        (
            '답변: "방을 깨끗이 청소했다."가 옳다. 제51항이다.<|im_end|>',
            '"방을 깨끗이 청소했다."가 옳다. 제51항이다.',
            [],
        ),
        (
            "<think>\n\n</think>\n\n깨끗이. 'ㅅ' 받침 뒤에서는 -이",
            "\"방을 깨끗이 청소했다.\"가 옳다. 'ㅅ' 받침 뒤에서는 -이",
            ["repaired"],
        ),
        (
            '"방을 깨끗이 청소했다." 부사는 -이로 적는다.',
            '"방을 깨끗이 청소했다."가 옳다. 부사는 -이로 적는다.',
            ["repaired"],
        ),
        (
            "방을 깨끗이 청소했다. 이유는 이렇다.",
            '"방을 깨끗이 청소했다."가 옳다. 이유는 이렇다.',
            ["repaired"],
        ),
        ("\n\n", None, []),
    ],
)
def test_rag_generations_read_into_the_official_form(text, answer, flags):
    item = rag_item()
    output = RAG.parse_output(item, text)
    assert (output["answer"] if output else None) == answer
    assert RAG.output_flags(item, text, output) == flags


@pytest.mark.parametrize(
    ("text", "answer", "flags"),
    [("3", "3", []), ("정답은 3번입니다.", "3", ["repaired"]), ("단오", "4", ["repaired"]), ("9", "", [])],
)
def test_choice_answers_become_digits(text, answer, flags):
    item = load_items(SAMPLES / "culture_test.jsonl", CULTURE)[1]  # 4 options, 단오 is 3
    item = CULTURE.parse_item(
        {
            **item.raw,
            "input": {
                **item.raw["input"],
                "question": "명절은? \\n 1\t 설날   2\t 한식   3\t 추석   4\t 단오",
            },
        },
        [],
    )
    output = CULTURE.parse_output(item, text)
    assert (output["answer"] if output else "") == answer
    if output:
        assert CULTURE.output_flags(item, text, output) == flags
    assert CULTURE.fallback_output(item) == {"answer": "1"}


def test_short_answer_targets_and_reads():
    short = next(it for it in load_items(SAMPLES / "culture_train.jsonl", CULTURE) if "#" in it.answer)
    assert CULTURE.target(short) == short.answer.split("#")[0].strip()
    assert CULTURE.parse_output(short, "정약용\n다산이라고도 한다.") == {"answer": "정약용"}


def test_submission_check_asks_the_task_per_item(tmp_path):
    test = SAMPLES / "culture_test.jsonl"
    rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()]
    good = [
        {**r, "output": {"answer": "2" if r["input"]["question_type"] == "선다형" else "답"}} for r in rows
    ]
    (tmp_path / "good.json").write_text(json.dumps(good, ensure_ascii=False), encoding="utf-8")
    assert check_submission(tmp_path / "good.json", test, CULTURE) == 6
    bad = [{**r, "output": {"answer": "2번"}} if r["input"]["question_type"] == "선다형" else r for r in good]
    (tmp_path / "bad.json").write_text(json.dumps(bad, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(UserErrors) as err:
        check_submission(tmp_path / "bad.json", test, CULTURE)
    assert [e.line() for e in err.value.errors][0].endswith(
        "item culture-test-1: field 'output': a 선다형 answer is the option number, digits only (e.g. \"3\"), not '2번'"
    )


def test_synthetic_sets_are_deterministic_and_valid():
    for task in (RAG, CULTURE):
        a, b = task.synthetic_records(40, 3, "train"), task.synthetic_records(40, 3, "train")
        assert a == b and all(r["id"].startswith("synthetic-train-") for r in a)
        items = [task.parse_item(r, []) for r in a]
        assert all(it is not None and task.has_output(it) for it in items)
        assert all("output" not in r for r in task.synthetic_records(5, 1, "test"))
    labels = [
        r["output"]["answer"]
        for r in CULTURE.synthetic_records(400, 0, "train")
        if r["input"]["question_type"] == "선다형"
    ]
    assert set(labels) == {"1", "2", "3", "4"} and max(labels.count(x) for x in "1234") < 0.35 * len(labels)


def test_rules_refuse_what_2025_ga_forbids(tmp_path):
    index = Index.build(NORMS, "sparse").save(tmp_path / "index")
    base = ["--model", "m", "--train_file", str(SAMPLES / "culture_train.jsonl")]
    culture = [*base, "--task", "culture", "--retrieve", str(index)]
    with pytest.raises(
        UserError, match="the 2025-가 rules allow no external data: this task's competition ships no corpus"
    ):
        sft_parser().parse([*culture, "--rules", "2025"])
    assert sft_parser().parse([*culture, "--rules", "2025-나"])[0].retrieve == str(index)
    rag = [
        "--model",
        "m",
        "--task",
        "rag",
        "--train_file",
        str(SAMPLES / "rag_train.jsonl"),
        "--retrieve",
        str(index),
    ]
    script, _, _ = sft_parser().parse([*rag, "--rules", "2025"])  # the norms document is the task's own
    items, n, dev = training_items(RAG, script, 0)
    assert n == 12 and all(1 <= len(it.passages) <= 5 for it in items) and dev == []
    synthetic = tmp_path / "synthetic.json"
    synthetic.write_text(
        json.dumps(CULTURE.synthetic_records(4, 0, "train"), ensure_ascii=False), encoding="utf-8"
    )
    script, _, _ = sft_parser().parse(
        ["--model", "m", "--task", "culture", "--train_file", str(synthetic), "--rules", "2025"]
    )
    with pytest.raises(UserError, match="allow no data augmentation: 4 synthetic item"):
        training_items(CULTURE, script, 0)
    with pytest.raises(UserError, match="does not take retrieved passages"):
        sft_parser().parse(
            ["--model", "m", "--task", "dcs", "--train_file", str(synthetic), "--retrieve", str(index)]
        )
    with pytest.raises(UserError, match="not a retrieval index"):
        sft_parser().parse([*base, "--task", "culture", "--retrieve", str(tmp_path)])


def test_baseline_preset_and_overrides():
    test = load_script(ROOT / "run" / "test.py")
    base = ["--model", "m", "--task", "rag", "--input", "x", "--output", "y"]
    g = test.generation_settings(test.parse_args([*base, "--preset", "baseline2025"]))
    assert (g.max_new_tokens, g.do_sample, g.temperature, g.top_p, g.repetition_penalty) == (
        1024,
        True,
        0.7,
        0.8,
        1.05,
    )
    g = test.generation_settings(
        test.parse_args([*base, "--preset", "baseline2025", "--max_new_tokens", "64"])
    )
    assert g.max_new_tokens == 64 and g.do_sample
    g = test.generation_settings(test.parse_args(base))
    assert (g.max_new_tokens, g.do_sample, g.repetition_penalty) == (
        256,
        False,
        1.0,
    )  # greedy stays the default


def test_qwen3_real_tokenizer_template_with_thinking_off(tiny_qwen3):
    path = tiny_qwen3
    backbone = get_backbone(str(path))
    assert backbone.chat_format == "qwen3" and backbone.thinking is False
    assert get_backbone("Qwen/Qwen3-8B").thinking is False
    tok = load_tokenizer(str(path), backbone)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "질문"}]
    assert render_chat(tok, messages, backbone).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=True
    ).endswith("<|im_start|>assistant\n")
    assert assistant_affixes(tok, backbone) == ("", "<|im_end|>")
    assert tok.convert_tokens_to_ids(["<think>", "</think>", "<|im_end|>"]) == [151667, 151668, 151645]
