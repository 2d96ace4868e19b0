"""The qa task: records, prompts and targets, output parsing, the chunked length budget (head
and tail, or BM25 retrieval), the training completion, and its metrics."""

from __future__ import annotations

import copy
import json
import math

import pytest
from conftest import SAMPLES

from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.metrics.qa import char_f1, exact_match, normalize, qa_scores
from malpyeong.models.backbones import get_backbone, load_tokenizer
from malpyeong.models.budget import fit_prompt
from malpyeong.retrieval.chunks import bm25_scores, chunk_text, least_relevant_first, middle_out
from malpyeong.tasks import get_task
from malpyeong.training.examples import build_sft_examples

QA = get_task("qa")
RECORD = {
    "id": "q1",
    "input": {"context": "가게는 아홉 시에 연다.\n점심은 열두 시다.", "question": "가게는 몇 시에 여나요?"},
    "output": {"answer": "아홉 시", "rationale": "첫 문장에 아홉 시에 연다고 쓰여 있다."},
}


def parse(record: dict):
    problems: list = []
    return QA.parse_item(record, problems), problems


def test_records_parse_and_every_problem_is_named():
    item, problems = parse(RECORD)
    assert problems == [] and item.answer == "아홉 시" and item.rationale.startswith("첫 문장")
    answer_only = copy.deepcopy(RECORD)
    del answer_only["output"]["rationale"]
    item, _ = parse(answer_only)
    assert item.rationale is None and QA.reference(item) == {"answer": "아홉 시"}
    test = dict(RECORD, output="")
    assert not QA.has_output(parse(test)[0])
    bad = {"id": "q2", "input": {"context": " ", "question": 3}, "output": {"answer": "x", "why": "y"}}
    assert [f for f, _ in parse(bad)[1]] == ["input.context", "input.question", "output"]
    assert parse({"id": "q3", "input": {"context": "c", "question": "q"}})[1] == [
        ("output", 'missing (use "" in test files)')
    ]
    assert QA.check_output({"answer": " "}) is not None
    assert QA.check_output({"answer": "a", "rationale": "r"}) is None


def test_prompt_has_the_content_and_question_sections():
    item, _ = parse(RECORD)
    system, user = QA.messages(item)
    assert system["role"] == "system" and "답한 뒤" in system["content"]
    assert user["content"] == (
        "###내용:\n가게는 아홉 시에 연다.\n점심은 열두 시다.\n\n###질문:\n가게는 몇 시에 여나요?"
    )
    en = QA.messages(item, QA.prompt_spec("en"))
    assert en[1]["content"].startswith("###Content:\n") and "###Question:\n" in en[1]["content"]
    assert (
        "answer" in QA.messages(item, QA.prompt_spec("answer_only"))[0]["content"].lower()
        or "답하세요" in QA.messages(item, QA.prompt_spec("answer_only"))[0]["content"]
    )
    for bad in ("head_tail+retrieve", "answer_only+rationale_first"):
        with pytest.raises(UserError, match="choose one of"):
            QA.prompt_spec(bad)
    with pytest.raises(UserError, match="unknown prompt variant 'retrive'"):
        QA.prompt_spec("retrive")


def test_targets_follow_the_variant():
    item, _ = parse(RECORD)
    spec = QA.prompt_spec
    assert QA.target(item) == "###답: 아홉 시\n\n###추론: 첫 문장에 아홉 시에 연다고 쓰여 있다."
    assert QA.target_for(item, spec("answer_only")) == "###답: 아홉 시"
    assert (
        QA.target_for(item, spec("rationale_first"))
        == "###추론: 첫 문장에 아홉 시에 연다고 쓰여 있다.\n\n###답: 아홉 시"
    )
    assert (
        QA.target_for(item, spec("en+retrieve"))
        == "###Answer: 아홉 시\n\n###Reasoning: 첫 문장에 아홉 시에 연다고 쓰여 있다."
    )
    no_reason = copy.deepcopy(RECORD)
    del no_reason["output"]["rationale"]
    assert QA.target_for(parse(no_reason)[0], spec("rationale_first")) == "###답: 아홉 시"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("###답: 아홉 시\n\n###추론: 쓰여 있다.<|eot_id|>", {"answer": "아홉 시", "rationale": "쓰여 있다."}),
        ("###추론: 근거\n###답:  아홉  시", {"answer": "아홉 시", "rationale": "근거"}),
        ("###Answer: nine\n###Reasoning: line one", {"answer": "nine", "rationale": "line one"}),
        ("###답: 아홉 시", {"answer": "아홉 시"}),  # a missing reasoning is not an error
        ("그냥 아홉 시", {"answer": "그냥 아홉 시"}),
        ("생각해 보면\n###추론: 근거", {"answer": "생각해 보면", "rationale": "근거"}),
        ("<|eot_id|>  ", None),
        ("###답: \n###추론: 근거만", None),
    ],
)
def test_output_parsing_separates_answer_and_reasoning(text, expected):
    assert QA.parse_output(None, text) == expected


def test_chunks_cover_the_text_and_end_at_boundaries():
    text = "\n".join(f"화자{i % 2}: 이번 줄은 {i}번째 발화입니다. 조금 더 길게 씁니다." for i in range(40))
    chunks = chunk_text(text, 120)
    assert "".join(text[c.start : c.end] for c in chunks) == text
    assert all(c.end - c.start <= 120 for c in chunks)
    assert all(text[c.end - 1] == "\n" for c in chunks[:-1])  # every cut at a line end
    long_line = "가나다 " * 100
    pieces = chunk_text(long_line, 50)
    assert "".join(long_line[c.start : c.end] for c in pieces) == long_line
    assert all(long_line[c.end - 1] == " " for c in pieces[:-1])  # no word split
    assert middle_out(5) == [2, 1, 3, 0, 4]
    assert least_relevant_first([0.5, 0.0, 2.0, 0.0]) == [3, 1, 0, 2]


def test_bm25_ranks_the_passage_that_shares_the_question_terms():
    passages = [
        "오늘 회의에서는 예산을 논의했다.",
        "점심 메뉴는 김치찌개로 정했다.",
        "The budget was cut by ten percent.",
    ]
    scores = bm25_scores("점심 메뉴는 무엇인가요?", passages)
    assert scores.argmax() == 1 and scores[0] == 0.0
    assert bm25_scores("What about the budget?", passages).argmax() == 2
    assert list(bm25_scores("은는이가", passages)) == [0.0, 0.0, 0.0]  # particles only


def long_record() -> dict:
    lines = [f"화자{i % 2}: 회의에서 {i}번 안건인 주차장 공사 일정을 다시 검토했습니다." for i in range(80)]
    lines[30] = "화자1: 점심 메뉴는 김치찌개로 정했습니다."
    return {
        "id": "long",
        "input": {"context": "\n".join(lines), "question": "점심 메뉴는 무엇으로 정했나요?"},
        "output": {"answer": "김치찌개", "rationale": "점심 메뉴는 김치찌개로 정했다고 했다."},
    }


def test_budget_cuts_the_context_only_by_the_chosen_strategy(tiny_llama):
    item, _ = parse(long_record())
    backbone = get_backbone(str(tiny_llama))
    tok = load_tokenizer(str(tiny_llama), backbone)
    full = fit_prompt(QA, item, tok, backbone, QA.prompt_spec("baseline"))
    kept = {}
    for strategy in ("head_tail", "retrieve"):
        fitted = fit_prompt(QA, item, tok, backbone, QA.prompt_spec(strategy), 700)
        assert fitted.fits and fitted.dropped > 0 and len(fitted.input_ids) <= 700
        assert fitted.full_tokens == len(full.input_ids)
        assert "###질문:\n점심 메뉴는 무엇으로 정했나요?" in fitted.text  # the question is whole
        assert "…" in fitted.text
        kept[strategy] = fitted.text
    first, last = item.context.splitlines()[0], item.context.splitlines()[-1]
    assert first in kept["head_tail"] and last in kept["head_tail"]
    assert "김치찌개" not in kept["head_tail"] and "김치찌개" in kept["retrieve"]
    # what retrieval keeps stays in document order
    text = kept["retrieve"]
    numbers = [int(line.split("번")[0].split()[-1]) for line in text.splitlines() if "번 안건" in line]
    assert numbers == sorted(numbers)
    tight = fit_prompt(QA, item, tok, backbone, QA.prompt_spec("baseline"), 60)
    assert not tight.fits and "###질문:\n점심 메뉴는 무엇으로 정했나요?" in tight.text


def test_completion_covers_answer_reasoning_and_one_end_of_turn(tiny_llama):
    task = QA
    items = load_items(SAMPLES / "qa_train.jsonl", task, require_output=True)
    backbone = get_backbone(str(tiny_llama))
    tok = load_tokenizer(str(tiny_llama), backbone)
    spec = task.prompt_spec("retrieve")
    rows, stats = build_sft_examples(task, items, tok, backbone, spec, 768)
    assert stats.examples == 8 and stats.prompts_cut == 8 and stats.over_budget == 0
    eot, end_text = tok.convert_tokens_to_ids("<|eot_id|>"), tok.convert_tokens_to_ids("<|end_of_text|>")
    for row, item in zip(rows, items, strict=True):
        trained = [t for t in row["labels"] if t != -100]
        assert tok.decode(trained) == task.target_for(item, spec) + "<|eot_id|>"
        assert trained.count(eot) == 1 and trained[-1] == eot and end_text not in row["input_ids"]
        assert row["input_ids"][-len(trained) :] == trained and len(row["input_ids"]) <= 768
    with pytest.raises(UserError, match="does not fit max_length 64") as err:
        build_sft_examples(task, items, tok, backbone, spec, 64)
    assert err.value.item == items[0].id and err.value.field == "max_length"


def test_answer_metrics_exact_values():
    assert normalize("  Hello,   World! ") == "hello world"
    assert exact_match("아홉 시.", "아홉  시") == 1.0 and exact_match("아홉 시", "열 시") == 0.0
    assert char_f1("아홉 시", "아홉 시") == 1.0
    assert char_f1("아홉 시", "아홉") == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))
    assert char_f1("", "") == 1.0 and char_f1("가", "") == 0.0
    report = qa_scores(
        ["아홉 시", "열 시"],
        ["아홉 시", "두 시"],
        ["근거", None],
        [None, "x"],
        only=("em", "f1", "rouge1", "rationale_rouge1"),
    )
    assert report["em"] == 0.5 and report["rationale_rouge1"] == 0.0
    assert report["per_item"]["rationale_rouge1"][0] == 0.0
    assert math.isnan(report["per_item"]["rationale_rouge1"][1])
    assert report["rationale_n"] == 1 and report["rationale_missing"] == 1
    assert report["similarity"] is None and report["bertscore"] is None


def test_similarity_and_bertscore_with_a_tiny_local_model(tiny_embedder):
    refs, preds = ["회의는 내일 열린다", "예산이 줄었다"], ["회의는 내일 열린다", "점심은 김밥"]
    report = qa_scores(
        refs,
        preds,
        ["근거 문장", "다른 근거"],
        ["근거 문장", ""],
        embedder=str(tiny_embedder),
        bertscore_model=str(tiny_embedder),
    )
    sims = report["per_item"]["similarity"]
    assert sims[0] == pytest.approx(1.0, abs=1e-5) and sims[1] < sims[0]
    assert report["per_item"]["rationale_similarity"] == [pytest.approx(1.0, abs=1e-5), 0.0]
    assert report["bertscore"] is not None and report["notices"] == []
    with pytest.raises(UserError, match="field 'embedder': folder not found"):  # named: loads or stops
        qa_scores(refs, preds, [None, None], [None, None], embedder="/no/such/model")


def test_sample_files_are_valid_and_written_by_us():
    for split, gold in (("train", 8), ("dev", 4), ("test", 0)):
        items = load_items(SAMPLES / f"qa_{split}.jsonl", QA)
        assert sum(QA.has_output(it) for it in items) == gold
    rows = [
        json.loads(line) for line in (SAMPLES / "qa_train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert any("rationale" not in r["output"] for r in rows)  # answer-only examples too
