"""The memory task: parsing and validation (one line per problem, exit 2), the exact turn
count, prompts, targets in the constrained layout, output parsing with repair, fallbacks and
field-wise combining."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
from conftest import SAMPLES, load_script

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.tasks import get_task
from malpyeong.tasks.base import BASELINE, chat_messages
from malpyeong.tasks.memory import count_turns, state_problems
from malpyeong.tasks.memory_combine import combine_states

RECORD = {
    "id": "m-1",
    "input": {
        "conversation": [
            {"speaker": "A", "utterance": "I moved to Busan last month."},
            {"speaker": "A", "utterance": "The office is near the beach."},
            {"speaker": "B", "utterance": "Nice! Is it far from the station?"},
            {"speaker": "A", "utterance": "Ten minutes by bus."},
        ]
    },
    "output": {
        "memory_state": {
            "key_facts": ["A moved to Busan last month."],
            "unresolved_refs": [],
            "topic": "moving to Busan",
            "turn_count": 4,
        },
        "memory_summary": "A tells B about moving to Busan.",
    },
}


def state(facts, refs, topic, turns, summary):
    return {
        "memory_state": {"key_facts": facts, "unresolved_refs": refs, "topic": topic, "turn_count": turns},
        "memory_summary": summary,
    }


@pytest.fixture
def task():
    return get_task("memory")


@pytest.fixture
def record():
    return copy.deepcopy(RECORD)


def parse(task, record):
    problems = []
    return task.parse_item(record, problems), problems


def test_turn_count_is_the_number_of_utterances_or_speaker_turns(task, record):
    item, problems = parse(task, record)
    assert problems == [] and item.turn_count == 4 and item.turn_reading == "utterances"
    record["input"]["turn_count_by"] = "speaker_turns"
    item, problems = parse(task, record)  # the gold count must follow the reading
    assert item is None and problems == [
        ("output.memory_state.turn_count", "4, but the conversation has 3 speaker turns")
    ]
    record["output"]["memory_state"]["turn_count"] = 3
    item, _ = parse(task, record)
    assert item.turn_count == 3  # A A | B | A
    assert count_turns(item.conversation, "speaker_turns") == 3
    assert count_turns(item.conversation) == 4


def test_a_previous_state_adds_its_count(task, record):
    record["input"]["previous_state"] = state(["x"], [], "t", 7, "s")
    record["output"]["memory_state"]["turn_count"] = 11
    item, problems = parse(task, record)
    assert problems == [] and item.turn_count == 11


def test_every_problem_is_named_with_its_field(task, record):
    record["output"] = {
        "memory_state": {
            "key_facts": "one fact",
            "unresolved_refs": ["", 3],
            "topic": " ",
            "turn_count": 0,
            "mood": "happy",
        },
        "memory_summary": "",
        "extra": 1,
    }
    record["input"]["turn_count_by"] = "turns"
    _, problems = parse(task, record)
    assert problems == [
        ("input.turn_count_by", "'turns' is not one of utterances, speaker_turns"),
        ("output.extra", "unknown field"),
        ("output.memory_state.mood", "unknown field"),
        ("output.memory_state.key_facts", "missing or not a list of strings"),
        ("output.memory_state.unresolved_refs[0]", "not a non-empty string"),
        ("output.memory_state.unresolved_refs[1]", "not a non-empty string"),
        ("output.memory_state.topic", "missing or not a non-empty string"),
        ("output.memory_state.turn_count", "0 is not an integer >= 1"),
        ("output.memory_summary", "missing or not a non-empty string"),
    ]
    assert state_problems(True) == [
        ("output", "is a bool, not a memory object {memory_state, memory_summary}")
    ]


def test_validate_reports_one_line_per_problem_and_exits_2(tmp_path, record, capsys):
    bad = copy.deepcopy(record)
    bad["id"] = "m-2"
    bad["output"]["memory_state"]["turn_count"] = True  # a bool is not an integer
    del bad["output"]["memory_summary"]
    path = tmp_path / "memory.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (record, bad)) + "\n", encoding="utf-8")
    code = run_cli(load_script("run/validate.py").main, ["--task", "memory", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        f"error: {path}: item m-2: field 'output.memory_state.turn_count': True is not an integer >= 1",
        f"error: {path}: item m-2: field 'output.memory_summary': missing or not a non-empty string",
    ]


def test_shipped_samples_validate(task):
    train = load_items(SAMPLES / "memory_train.jsonl", task, require_output=True)
    dev = load_items(SAMPLES / "memory_dev.jsonl", task, require_output=True)
    test = load_items(SAMPLES / "memory_test.jsonl", task)
    assert (len(train), len(dev), len(test)) == (8, 5, 3)
    assert {it.turn_reading for it in train} == {"utterances", "speaker_turns"}
    assert any(it.previous is not None for it in dev)
    assert all(it.state["memory_state"]["turn_count"] == it.turn_count for it in [*train, *dev])


def test_target_is_compact_json_in_schema_order_with_the_exact_count(task, record):
    record["output"]["memory_state"]["turn_count"] = 9  # a wrong gold count is refused, never trained on
    assert parse(task, record)[1] == [
        ("output.memory_state.turn_count", "9, but the conversation has 4 utterances")
    ]
    record["output"]["memory_state"]["turn_count"] = 4
    item, _ = parse(task, record)
    assert task.target(item) == (
        '{"memory_state":{"key_facts":["A moved to Busan last month."],"unresolved_refs":[],'
        '"topic":"moving to Busan","turn_count":4},"memory_summary":"A tells B about moving to '
        'Busan."}'
    )
    assert list(task.output_schema()["properties"]) == ["memory_state", "memory_summary"]
    assert list(task.output_schema()["properties"]["memory_state"]["properties"]) == [
        "key_facts",
        "unresolved_refs",
        "topic",
        "turn_count",
    ]


def test_prompts(task, record):
    item, _ = parse(task, record)
    system, user = task.messages(item)
    assert "memory-state generator of a multi-turn dialogue system" in system["content"]
    assert "JSON only" in system["content"] and '"turn_count":N' in system["content"]
    assert "number of utterances" in system["content"]
    assert user["content"] == (
        "Conversation:\nA: I moved to Busan last month.\nA: The office "
        "is near the beach.\nB: Nice! Is it far from the station?\n"
        "A: Ten minutes by bus."
    )
    ko_system, ko_user = task.messages(item, task.prompt_spec("ko"))
    assert "메모리 상태 생성기" in ko_system["content"] and ko_user["content"].startswith("대화:\n")
    record["input"]["previous_state"] = state(["A moved."], [], "moving", 2, "A moved.")
    record["input"]["turn_count_by"] = "speaker_turns"
    record["output"]["memory_state"]["turn_count"] = 5  # 2 before, 3 speaker turns now
    item, _ = parse(task, record)
    system, user = task.messages(item)
    assert "speaker turns" in system["content"]
    assert user["content"].startswith(
        'Previous memory state:\n{"memory_state":{"key_facts":["A moved."],"unresolved_refs":[],'
        '"topic":"moving","turn_count":2},"memory_summary":"A moved."}\n\nConversation:\nA: '
    )


def test_an_exact_system_prompt_replaces_the_tasks(task, record):
    item, _ = parse(task, record)
    spec = replace(BASELINE, system="You are MemoryBot. Output JSON.")
    messages = chat_messages(task, item, spec)
    assert messages[0] == {"role": "system", "content": "You are MemoryBot. Output JSON."}
    assert messages[1] == task.messages(item)[1]
    assert chat_messages(task, item, BASELINE) == task.messages(item)


def test_parse_output_sets_the_exact_count_and_repairs(task, record):
    item, _ = parse(task, record)
    raw = (
        'Here you go:\n```json\n{"memory_state": {"key_facts": ["A lives in Busan.",], '
        '"unresolved_refs": [], "topic": " Busan ", "turn_count": "five"}, '
        '"memory_summary": "A moved."}\n```'
    )
    assert task.parse_output(item, raw) == state(["A lives in Busan."], [], "Busan", 4, "A moved.")
    assert task.parse_output(item, '{"memory_state": {"key_facts": []}, "memory_summary": "x"}') is None
    assert (
        task.parse_output(
            item, '{"memory_state": {"key_facts": [], "unresolved_refs": [], "topic": "t", "turn_count": 1'
        )
        is None
    )  # cut off


def test_fallback_is_valid_and_carries_a_previous_state(task, record):
    item, _ = parse(task, record)
    assert task.fallback_output(item) == state([], [], "unknown", 4, "unknown")
    assert task.check_output(task.fallback_output(item)) is None
    record["input"]["previous_state"] = state(["A moved."], ["it"], "moving", 2, "A moved.")
    record["output"]["memory_state"]["turn_count"] = 6
    item, _ = parse(task, record)
    assert task.fallback_output(item) == state(["A moved."], ["it"], "moving", 6, "A moved.")


def test_oldest_utterances_are_cut_first(task, record):
    item, _ = parse(task, record)
    assert task.drop_order(item) == [0, 1, 2]


def test_combining_fields_by_weighted_majority():
    outputs = [
        state(
            ["A moved to Busan.", "A works near the beach."],
            ["it"],
            "Moving to Busan",
            9,
            "A tells B about the move to Busan.",
        ),
        state(
            ["A moved to Busan last month.", "B likes trains."],
            [],
            "moving to busan!",
            2,
            "A moved to Busan and works near the beach.",
        ),
        state(
            ["A works near the beach now.", "The bus takes ten minutes."],
            ["it"],
            "beach",
            4,
            "A talks about the beach.",
        ),
    ]
    combined = combine_states(outputs, [1.0, 1.0, 1.0], turn_count=4)
    assert combined == state(
        ["A moved to Busan.", "A works near the beach."],
        ["it"],
        "Moving to Busan",
        4,
        "A tells B about the move to Busan.",
    )
    # the third model alone outweighs the other two: its topic and its facts only
    heavy = combine_states(outputs, [1.0, 1.0, 3.0], turn_count=4)
    assert heavy["memory_state"]["topic"] == "beach"
    assert heavy["memory_state"]["key_facts"] == ["A works near the beach.", "The bus takes ten minutes."]
