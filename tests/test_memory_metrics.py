"""Memory metrics on constructed pairs, against figures computed by hand."""

from __future__ import annotations

import pytest

from malpyeong.metrics.memory import (
    match_count,
    memory_scores,
    normalise_topic,
    raw_scores,
    rouge1_f,
    rouge_l_f,
    set_scores,
    words,
)
from malpyeong.metrics.official import rouge_tokens
from malpyeong.tasks import get_task


def state(facts, refs, topic, turns, summary):
    return {
        "memory_state": {"key_facts": facts, "unresolved_refs": refs, "topic": topic, "turn_count": turns},
        "memory_summary": summary,
    }


def test_words_are_mecab_morphemes_for_korean_and_lowercased_words_else():
    assert words("Tom's Flight lands at 9!") == ("tom", "s", "flight", "lands", "at", "9")
    assert words("동생 결혼식은 토요일이다.") == rouge_tokens("동생 결혼식은 토요일이다.")


def test_rouge_by_hand():
    # 4 of 5 reference words, 4 of 6 predicted: P 4/6, R 4/5, F = 2PR/(P+R) = 8/11
    assert rouge1_f("A moved to Busan yesterday", "a moved to busan last month") == pytest.approx(8 / 11)
    # LCS of (b a c d) and (a b c d) is 3: P = R = 3/4
    assert rouge_l_f("b a c d", "a b c d") == pytest.approx(0.75)
    assert rouge1_f("", "x") == 0.0 and rouge_l_f("x", "") == 0.0
    assert normalise_topic("  Moving to Busan! ") == normalise_topic("moving TO busan") == "moving to busan"


def test_fact_matching_is_one_to_one_at_the_threshold():
    gold = ["Tom lands at 9 pm on Friday.", "Mia picks Tom up at the airport."]
    pred = [
        "Tom lands Friday at 9 pm.",  # same words as gold[0]: F = 1
        "Tom lands on Friday.",  # 4 of gold[0]'s 7 words, 4 of 4: F = 8/11
        "Mia will pick him up.",  # 2 of 7 with gold[1] (mia, up): F = 4/12
        "The weather is nice.",
    ]  # nothing in common
    assert rouge1_f(gold[0], pred[1]) == pytest.approx(8 / 11)
    assert rouge1_f(gold[1], pred[2]) == pytest.approx(2 * 2 / (5 + 7))
    # gold[0] can match pred 0 or 1, never both; gold[1] matches nothing at 0.5
    assert match_count(gold, pred) == 1
    assert match_count(gold, pred, threshold=0.3) == 2
    # precision 1/4, recall 1/2, F1 = 2 * (1/4 * 1/2) / (3/4) = 1/3
    score = set_scores([gold], [pred])
    assert (score.matched, score.predicted, score.gold) == (1, 4, 2)
    assert (score.precision, score.recall, score.f1) == pytest.approx((0.25, 0.5, 1 / 3))


def test_the_matching_maximises_the_number_of_pairs():
    gold = ["a b c d", "a b c d e f"]
    pred = ["a b c d", "a b x y"]
    # by hand: g0-p0 1.0, g1-p0 2*4/(4+6) = 0.8, g0-p1 2*2/(4+4) = 0.5, g1-p1 2*2/(4+6) = 0.4
    assert [rouge1_f(g, p) for g in gold for p in pred] == pytest.approx([1.0, 0.5, 0.8, 0.4])
    # taking the best pair first (g0-p0) would leave g1 without a match; the assignment pairs
    # g0-p1 and g1-p0
    assert match_count(gold, pred) == 2
    assert match_count(gold, pred[:1]) == 1


def test_empty_sets_are_right_when_nothing_was_to_be_found():
    score = set_scores([[], ["it"]], [[], []])
    assert (score.precision, score.recall, score.f1) == (0.0, 0.0, 0.0)
    score = set_scores([[]], [[]])
    assert (score.precision, score.recall, score.f1) == (1.0, 1.0, 1.0)


def test_raw_rates_before_and_after_repair():
    task = get_task("memory")
    good = (
        '{"memory_state":{"key_facts":[],"unresolved_refs":[],"topic":"t","turn_count":3},'
        '"memory_summary":"s"}'
    )
    texts = [
        good,  # valid, turn count right
        "```json\n" + good.replace('"turn_count":3', '"turn_count":2') + "\n```",  # repaired
        '{"memory_state":{"topic":"t"},"memory_summary":"s"}',  # JSON, not the schema
        "{'memory_state': 1}",
    ]  # unrepairable
    raw = raw_scores(texts, [3, 3, 3, 3], task.check_output)
    assert raw == {
        "json_valid_raw": 0.5,
        "json_valid_repaired": 0.75,
        "schema_valid_raw": 0.25,
        "schema_valid_repaired": 0.5,
        "turn_count_acc_raw": 0.25,
        "unrepairable": 1,
        "repairs": {"code_fence": 1},
    }


def test_full_report():
    task = get_task("memory")
    gold = [
        state(["Tom lands at 9 pm on Friday."], [], "airport pickup", 3, "Mia will pick Tom up."),
        state(["B hiked for five hours."], ["that trail"], "weekend hike", 5, "B hiked."),
    ]
    pred = [
        state(
            ["Tom lands Friday at 9 pm.", "Tom is happy."],
            [],
            "Airport pickup!",
            3,
            "Mia will pick up Tom at the airport.",
        ),
        state([], ["that trail"], "hiking", 5, "B went hiking."),
    ]
    report = memory_scores(gold, [3, 5], pred, None, task.check_output)
    assert report["key_facts_precision"] == pytest.approx(1 / 2)
    assert report["key_facts_recall"] == pytest.approx(1 / 2)
    assert report["unresolved_refs_f1"] == 1.0
    assert report["topic_exact"] == 0.5
    assert report["turn_count_acc_delivered"] == 1.0 and report["gold_turn_count_off"] == 0
    # summary 1: 5 shared words of 5 and 8: F = 10/13; summary 2: 'b' of 2 and 3: F = 2/5
    assert report["summary_rouge1"] == pytest.approx((10 / 13 + 2 / 5) / 2)
    assert report["json_valid_raw"] is None and report["summary_bertscore"] is None
    # per item, for run/compare.py: item 1 matches 1 of 2 predicted facts against 1 gold
    # (P 1/2, R 1): F 2/3; item 2 predicts none of 1: F 0; no references on either side: F 1
    per = report["per_item"]
    assert per["key_facts_f1"] == pytest.approx([2 / 3, 0.0])
    assert per["unresolved_refs_f1"] == [1.0, 1.0]
    assert per["topic_exact"] == [1.0, 0.0]
    assert per["summary_rouge1"] == pytest.approx([10 / 13, 2 / 5])


def test_item_scores_for_compare():
    task = get_task("memory")
    gold_states = [state(["A"], [], "t", 1, "one two"), state(["B"], [], "u", 1, "three")]
    records = [
        {"id": f"x{i}", "input": {"conversation": [{"speaker": "A", "utterance": "hi"}]}, "output": s}
        for i, s in enumerate(gold_states)
    ]
    items = [task.parse_item(r, []) for r in records]
    outputs = {"x0": state(["A"], [], "t", 1, "one"), "x1": state([], [], "u", 1, "four")}
    assert task.item_scores(items, outputs, "summary_rouge1") == pytest.approx([2 / 3, 0.0])
    assert task.item_scores(items, outputs, "key_facts_f1") == [1.0, 0.0]
