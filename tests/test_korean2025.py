"""The 2025 scorers on hand-made cases where the official rules bite (values to 1e-12)."""

from __future__ import annotations

import math

import pytest

from malpyeong.metrics.korean2025 import (
    TEXT_METRICS,
    answer_match,
    choice_match,
    exact_match,
    norms_scores,
    official_text_scorer,
    split_answer_reason,
    typed_scores,
)

TOL = 1e-12


def fake_scorer(calls: list):
    """Text metrics fixed by the strings: rouge1 = len(pred) / (len(pred) + len(ref)), bertscore
    0.5 + 0.01 * len(ref), bleurt 0.25; records which pairs it was given."""

    def score(refs, preds):
        calls.append((list(refs), list(preds)))
        return {
            "per_item": {
                "rouge1": [len(p) / (len(p) + len(r)) for r, p in zip(refs, preds, strict=True)],
                "bertscore": [0.5 + 0.01 * len(r) for r in refs],
                "bleurt": [0.25 for _ in refs],
            },
            "notices": [],
        }

    return score


def test_split_both_phrases_with_i_first_splits_at_ga():
    text = '"철수이 옳다"고 한 사람도 있지만 "철수가 옳다."가 옳다. 주격 조사는 받침이 없으면 \'가\'를 쓴다.'
    answer, reason = split_answer_reason(text)
    assert answer == "철수이 옳다고 한 사람도 있지만 철수가 옳다"  # the first 가 옳다, inside the quote
    assert reason == ".\"가 옳다. 주격 조사는 받침이 없으면 '가'를 쓴다.".lstrip(".")


def test_split_i_phrase_only_when_ga_absent():
    answer, reason = split_answer_reason('"책상 위에 연필이 있다."이 옳다. , 이유는 이렇다.')
    assert (answer, reason) == ("책상 위에 연필이 있다.이 옳다", "이유는 이렇다.")


def test_split_no_phrase_is_all_answer():
    assert split_answer_reason('  "그냥 문장이다."  ') == ("그냥 문장이다.", "")
    assert split_answer_reason("") == ("", "")


def test_split_quotes_inside_and_around_are_all_removed():
    answer, reason = split_answer_reason(
        "\"그는 '안 돼'라고 말했다.\"가 옳다,  따옴표 안의 말은 '라고'로 잇는다."
    )
    assert answer == "그는 안 돼라고 말했다.가 옳다"
    assert reason == "따옴표 안의 말은 '라고'로 잇는다."  # quotes stay in the reason


def test_reason_keeps_other_leading_whitespace():
    assert split_answer_reason('"가"가 옳다.\n이유')[1] == "\n이유"


def test_exact_match_alternatives_with_spaces():
    assert exact_match("정약용 # 다산", "  다산 ")
    assert exact_match("정약용 # 다산", "정약용")
    assert not exact_match("정약용#다산", "정약용 다산")
    assert not exact_match("정약용", "정약용.")
    assert exact_match(" 3 ", "3")


def test_answer_match_alternatives_split_after_the_phrase():
    gold = '"값이 싸다."#"값이 저렴하다."가 옳다. 이유'
    assert answer_match(gold, '"값이 저렴하다."가 옳다. 다른 이유')
    assert not answer_match(gold, '"값이 싸다."가 옳다. 이유')  # the first alternative has no phrase
    assert answer_match(gold, "값이 싸다.")


def test_choice_match_is_raw():
    assert choice_match("3", "3")
    assert not choice_match("3", "3번")
    assert not choice_match("3", " 3")


def test_norms_scores_reason_on_one_side_only():
    golds = [
        '"우동이 불을 것 같다."가 옳다. 받침 ㄷ이 ㄹ로 바뀐다.',  # both reasons: a pair
        '"맞추기"가 옳다. 맞다의 뜻이다.',  # prediction without reason: no pair
        '"기억해 냈다."가 옳다',  # gold without reason: no pair
        '"철수가 왔다."이 옳다. 조사',  # wrong answer, both reasons: a pair
    ]
    preds = [
        '"우동이 불을 것 같다."가 옳다. 어간 받침이 바뀐다.',
        '"맞추기"가 옳다.',
        '"기억해 냈다."가 옳다. 보조 용언은 띄어 쓴다.',
        '"철수이 왔다."가 옳다. 조사 규칙',
    ]
    types = ["선택형", "교정형", "선택형", "교정형"]
    calls: list = []
    report = norms_scores(golds, preds, types, fake_scorer(calls))
    assert calls == [(["받침 ㄷ이 ㄹ로 바뀐다.", "조사"], ["어간 받침이 바뀐다.", "조사 규칙"])]
    assert abs(report["exact_match"] - 3 / 4) < TOL
    r1 = (
        len("어간 받침이 바뀐다.") / (len("어간 받침이 바뀐다.") + len("받침 ㄷ이 ㄹ로 바뀐다.")) + 5 / 7
    ) / 2
    bs = (0.5 + 0.01 * len("받침 ㄷ이 ㄹ로 바뀐다.") + 0.5 + 0.01 * 2) / 2
    descriptive = (r1 + bs + 0.25) / 3
    assert abs(report["rouge1"] - r1) < TOL and abs(report["bertscore"] - bs) < TOL
    assert abs(report["descriptive"] - descriptive) < TOL
    assert abs(report["final"] - (0.75 + descriptive) / 2) < TOL
    assert report["counts"] == {
        "items": 4,
        "by_type": {"선택형": 2, "교정형": 2},
        "reason_pairs": 2,
        "gold_reasons": 3,
        "pred_reasons": 3,
        "pred_answer_phrase": 4,
    }
    assert report["complete"] is True
    assert report["per_item"]["exact_match"] == [1.0, 1.0, 1.0, 0.0]
    assert report["per_item"]["bleurt"] == [0.25, None, None, 0.25]


def test_norms_scores_no_pair_gives_descriptive_zero():
    calls: list = []
    report = norms_scores(['"가"가 옳다. 이유'], ["가가 옳다"], ["선택형"], fake_scorer(calls))
    assert calls == []
    assert report["exact_match"] == 1.0 and report["descriptive"] == 0.0 and report["final"] == 0.5
    assert report["rouge1"] is None and report["counts"]["reason_pairs"] == 0


def test_typed_scores_with_one_type_missing():
    golds = ["3", "2", "서울의 궁궐은 다섯 곳이다.", "조선 시대의 궁궐이다."]
    preds = ["3", "2번", "서울에는 궁궐이 다섯 곳 있다.", "조선의 궁궐"]
    types = ["선다형", "선다형", "서술형", "서술형"]
    calls: list = []
    report = typed_scores(golds, preds, types, fake_scorer(calls))
    assert calls == [(golds[2:], preds[2:])]
    r1 = (
        len(preds[2]) / (len(preds[2]) + len(golds[2])) + len(preds[3]) / (len(preds[3]) + len(golds[3]))
    ) / 2
    bs = (0.5 + 0.01 * len(golds[2]) + 0.5 + 0.01 * len(golds[3])) / 2
    descriptive = (r1 + bs + 0.25) / 3
    assert report["accuracy"] == 0.5 and report["exact_match"] is None
    assert abs(report["descriptive"] - descriptive) < TOL
    assert abs(report["final"] - (0.5 + descriptive) / 2) < TOL  # the mean over the two present
    assert report["final_of"] == ["선다형", "서술형"]
    assert report["counts"] == {"items": 4, "by_type": {"선다형": 2, "서술형": 2}}


def test_typed_scores_all_three_types():
    golds = ["1", "정약용 # 다산", "김치는 발효 음식이다."]
    preds = ["1", "다산", "김치는 발효 음식이다."]
    calls: list = []
    report = typed_scores(golds, preds, ["선다형", "단답형", "서술형"], fake_scorer(calls))
    descriptive = (0.5 + 0.5 + 0.01 * len(golds[2]) + 0.25) / 3
    assert report["accuracy"] == 1.0 and report["exact_match"] == 1.0
    assert abs(report["final"] - (1.0 + 1.0 + descriptive) / 3) < TOL
    with pytest.raises(ValueError, match="question types"):
        typed_scores(["1"], ["1"], ["객관식"], fake_scorer([]))


def test_official_scorer_rouge_only_is_incomplete():
    scorer = official_text_scorer(skip=("bertscore", "bleurt"))
    report = norms_scores(
        ['"가방을 멨다."가 옳다. 메다가 맞다.'], ['"가방을 멨다."가 옳다. 메다가 맞다.'], ["선택형"], scorer
    )
    assert report["rouge1"] == 1.0 and report["bertscore"] is None and report["complete"] is False
    assert report["descriptive"] == 1.0 and report["final"] == 1.0
    assert any("skipped" in n for n in report["notices"])
    assert math.isclose(report["exact_match"], 1.0)


def constant_scorer(values: dict[str, float]):
    """Text metrics fixed per item (each metric its constant)."""

    def score(refs, preds):
        return {"per_item": {k: [v] * len(refs) for k, v in values.items()}, "notices": []}

    return score


def test_published_baseline_components_give_the_published_finals():
    """The 2025 baselines' published figures: rag Qwen3-8B EM 0.3454, ROUGE-1 0.2603, BERTScore
    0.7036, BLEURT 0.5313 -> final 0.4219; culture Qwen3-8B accuracy 0.4715, EM 0.4118,
    descriptive 0.5586 -> final 0.4806. Files built to hit the components exactly give those finals."""
    n = 5000  # EM 0.3454 = 1727 / 5000
    golds = ['"가"가 옳다. 이유'] * n
    preds = ['"가"가 옳다. 다른 이유'] * 1727 + ['"나"가 옳다. 다른 이유'] * (n - 1727)
    scorer = constant_scorer({"rouge1": 0.2603, "bertscore": 0.7036, "bleurt": 0.5313})
    report = norms_scores(golds, preds, ["선택형"] * n, scorer)
    assert abs(report["exact_match"] - 0.3454) < TOL and report["counts"]["reason_pairs"] == n
    assert round(report["final"], 4) == 0.4219
    choice = ["1"] * 943 + ["2"] * (2000 - 943)  # accuracy 0.4715 = 943 / 2000
    short = ["정약용"] * 2059 + ["이순신"] * (5000 - 2059)  # EM 0.4118 = 2059 / 5000
    golds = ["1"] * 2000 + ["정약용 # 다산"] * 5000 + ["설명"] * 10
    preds = choice + short + ["다른 설명"] * 10
    types = ["선다형"] * 2000 + ["단답형"] * 5000 + ["서술형"] * 10
    report = typed_scores(golds, preds, types, constant_scorer(dict.fromkeys(TEXT_METRICS, 0.5586)))
    assert abs(report["accuracy"] - 0.4715) < TOL and abs(report["exact_match"] - 0.4118) < TOL
    assert abs(report["descriptive"] - 0.5586) < TOL
    assert round(report["final"], 4) == 0.4806
