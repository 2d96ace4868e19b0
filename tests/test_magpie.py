"""Magpie: pre-query strings per chat family, quality filters, the sampling loop and its resume,
mixing, and run/magpie.py end to end on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import ROOT, load_script

from malpyeong.cli import run_cli
from malpyeong.errors import UserError
from malpyeong.models.backbones import PRE_QUERY, get_backbone, load_tokenizer
from malpyeong.prep.filters import (
    FilterConfig,
    check_pair,
    filter_pairs,
    hangul_ratio,
    is_refusal,
    repeated_chars_ratio,
    repeated_ngram_ratio,
)
from malpyeong.prep.magpie import (
    first_line,
    generate_pairs,
    pre_query,
    strip_specials,
    template_pre_query,
    to_record,
)
from malpyeong.training.examples import mix

GOLDEN = {
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
    "gemma2": "<bos><start_of_turn>user\n",
    "chatml": "<|im_start|>user\n",
    "qwen3": "<|im_start|>user\n",  # ChatML without Qwen2's default system turn
    "mistral": "<s>[INST] ",
    "mistral_v3": "<s>[INST]",
    "solar": "<s>### User:\n",
    "glm4": "[gMASK]<sop><|user|>\n",
    "exaone": "[|system|][|endofturn|]\n[|user|]",  # EXAONE 3.x: an empty system turn comes first
}
QWEN_DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


# ---------------------------------------------------------------------------------------------
# pre-query templates


def test_pre_query_strings_are_the_families_published_ones():
    assert PRE_QUERY == GOLDEN
    assert pre_query(get_backbone("meta-llama/Llama-3.2-3B-Instruct")) == GOLDEN["llama3"]
    assert pre_query(get_backbone("rtzr/ko-gemma-2-9b-it")) == GOLDEN["gemma2"]
    assert pre_query(get_backbone("Qwen/Qwen2-7B-Instruct")) == GOLDEN["chatml"]
    assert pre_query(get_backbone("yanolja/EEVE-Korean-Instruct-10.8B-v1.0")) == GOLDEN["solar"]
    assert pre_query(get_backbone("THUDM/glm-4-9b-chat")) == GOLDEN["glm4"]


def test_tiny_tokenizers_render_exactly_the_pre_query(tiny_models):
    """What each family's chat template writes before a user text is PRE_QUERY (ChatML adds
    its default system turn first, which Magpie leaves out)."""
    for family, path in tiny_models.items():
        backbone = get_backbone(str(path))
        tok = load_tokenizer(str(path), backbone)
        prefix = template_pre_query(tok, backbone)
        expected = PRE_QUERY[backbone.chat_format]
        if family == "qwen2":
            assert prefix == QWEN_DEFAULT_SYSTEM + expected
        else:
            assert prefix == expected, family
        assert pre_query(backbone, tok) == expected


def test_system_prompt_is_a_system_turn_or_folded_into_the_user_text(tiny_models):
    system = "한국어로만 대화합니다."
    expected = {
        "llama": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "한국어로만 대화합니다.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
        "gemma2": "<bos><start_of_turn>user\n한국어로만 대화합니다.\n\n",
        "qwen2": "<|im_start|>system\n한국어로만 대화합니다.<|im_end|>\n<|im_start|>user\n",
        "mistral": "<s>[INST] 한국어로만 대화합니다.\n\n",
        "exaone": "[|system|]한국어로만 대화합니다.[|endofturn|]\n[|user|]",
    }
    for family, path in tiny_models.items():
        backbone = get_backbone(str(path))
        tok = load_tokenizer(str(path), backbone)
        assert pre_query(backbone, tok, system) == expected[family], family
        # the folded form is what render_chat produces for a system + user conversation
        assert template_pre_query(tok, backbone, system) == expected[family], family


def test_unknown_chat_format_is_a_user_error():
    backbone = get_backbone("rtzr/ko-gemma-2-9b-it")
    from dataclasses import replace

    with pytest.raises(UserError, match="no Magpie pre-query template"):
        pre_query(replace(backbone, chat_format="vicuna"))


def test_first_line_and_special_tokens():
    assert first_line("\n\n  김치찌개 끓이는 법 알려줘\n둘째 줄") == "김치찌개 끓이는 법 알려줘"
    assert first_line("") == ""
    assert strip_specials("<|im_end|>안녕<end_of_turn>") == "안녕"
    assert strip_specials("안녕 [/INST] 하세요", ["하세요"]) == "안녕"


# ---------------------------------------------------------------------------------------------
# filters on constructed examples

GOOD_Q = "주말에 친구와 함께 할 만한 실내 활동을 추천해 주세요."
GOOD_A = "보드게임 카페에 가거나 집에서 함께 요리를 해 보는 것을 추천합니다. 전시회도 좋습니다."


def test_filter_measures():
    assert hangul_ratio("안녕 hello") == pytest.approx(2 / 7)
    assert hangul_ratio("123 !!") == 0.0
    assert hangul_ratio("ㅋㅋ 좋아") == 1.0
    assert repeated_ngram_ratio("a b c a b c a b c") == pytest.approx(1 - 3 / 7)
    assert repeated_ngram_ratio("하나 둘 셋 넷 다섯") == 0.0
    assert repeated_ngram_ratio("짧은 문장") == 0.0
    assert repeated_chars_ratio("하" * 30) == pytest.approx(20 / 21)
    assert repeated_chars_ratio(GOOD_A) == 0.0


def test_refusal_patterns_korean_and_english():
    for text in (
        "죄송하지만 그 요청은 도와드릴 수 없습니다.",
        "저는 AI 언어 모델로서 개인적인 의견이 없습니다.",
        "해당 정보는 제공할 수 없습니다.",
        "I'm sorry, but I cannot help with that.",
        "As an AI, I don't have feelings.",
    ):
        assert is_refusal(text), text
    for text in (
        GOOD_A,
        "사과를 할 때는 진심으로 미안하다고 말하세요.",
        "I can help you cook rice.",
    ):
        assert not is_refusal(text), text


def test_check_pair_reasons():
    assert check_pair(GOOD_Q, GOOD_A) is None
    assert check_pair("", GOOD_A) == "empty"
    assert check_pair(GOOD_Q, "   ") == "empty"
    assert check_pair("Recommend indoor activities for a weekend.", GOOD_A) == "hangul"
    assert check_pair(GOOD_Q, "좋아요") == "length"
    assert check_pair("뭐?", GOOD_A) == "length"
    assert check_pair(GOOD_Q, "좋은 생각이에요 " * 20) == "repetition"
    assert check_pair(GOOD_Q, "하하하하하하하하하하하하하하하하하하하하하하하하하하하하") == "repetition"
    assert (
        check_pair(GOOD_Q, "죄송하지만 그런 추천은 해 드릴 수 없습니다. 다른 질문을 해 주세요.") == "refusal"
    )
    assert check_pair(GOOD_Q, GOOD_A, FilterConfig(max_response_chars=20)) == "length"


def test_filter_pairs_drops_near_duplicate_instructions_and_reports_reasons():
    rows = [
        {"instruction": GOOD_Q, "response": GOOD_A},
        {"instruction": GOOD_Q.replace(" ", "  ").replace(".", "!"), "response": GOOD_A},  # dup
        {"instruction": "Tell me a joke please.", "response": GOOD_A},
        {
            "instruction": "김치찌개를 맛있게 끓이는 방법을 단계별로 알려 주세요.",
            "response": "먼저 김치와 돼지고기를 볶은 뒤 물을 붓고 두부와 파를 넣어 끓입니다.",
        },
        {
            "instruction": "요즘 잠이 잘 안 오는데 도움이 되는 습관이 있을까요?",
            "response": "죄송하지만 의료 조언은 드릴 수 없습니다. 전문가와 상담해 보세요.",
        },
    ]
    kept, report = filter_pairs(rows)
    assert kept == [rows[0], rows[3]]
    assert report["n_in"] == 5 and report["n_out"] == 2
    assert report["dropped"] == {
        "empty": 0,
        "hangul": 1,
        "length": 0,
        "repetition": 0,
        "refusal": 1,
        "duplicate": 1,
    }
    assert report["dropped_indices"] == {"1": "duplicate", "2": "hangul", "4": "refusal"}
    kept, report = filter_pairs(rows, FilterConfig(dedup_k=None))
    assert len(kept) == 3 and report["dropped"]["duplicate"] == 0


# ---------------------------------------------------------------------------------------------
# the sampling loop with a stub model


class StubModel:
    """Deterministic stand-in: instruction j of a chunk seeded s is '질문 s-j'."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sample_calls: list[tuple[int, int]] = []
        self.fail_after = fail_after

    def sample(self, count: int, seed: int) -> list[str]:
        if self.fail_after is not None and len(self.sample_calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.sample_calls.append((count, seed))
        return [("" if (seed + j) % 5 == 4 else f"\n질문 {seed}-{j}\n무시되는 둘째 줄") for j in range(count)]

    def respond(self, instructions: list[str]) -> list[str]:
        return [f"{text}에 대한 답" for text in instructions]


def test_generate_pairs_chunks_seeds_and_skips_empty_instructions():
    stub = StubModel()
    rows = generate_pairs(7, stub.sample, stub.respond, seed=10, chunk_size=3, show_progress=False)
    assert stub.sample_calls == [(3, 10), (3, 13), (1, 16)]
    assert [r["index"] for r in rows] == list(range(7))
    assert rows[0] == {"index": 0, "instruction": "질문 10-0", "response": "질문 10-0에 대한 답"}
    assert rows[3] == {"index": 3, "instruction": "질문 13-0", "response": "질문 13-0에 대한 답"}
    assert rows[4] == {"index": 4, "instruction": "", "response": ""}  # nothing sampled, not asked
    assert rows[6]["instruction"] == "질문 16-0"
    assert to_record(rows[0]) == {
        "id": "magpie-000000",
        "messages": [
            {"role": "user", "content": "질문 10-0"},
            {"role": "assistant", "content": "질문 10-0에 대한 답"},
        ],
        "source": "magpie",
    }


def test_generate_pairs_resumes_to_the_same_result():
    full = generate_pairs(
        8, StubModel().sample, StubModel().respond, seed=0, chunk_size=3, show_progress=False
    )
    written: list[dict] = []
    broken = StubModel(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(
            8,
            broken.sample,
            broken.respond,
            seed=0,
            chunk_size=3,
            on_row=written.append,
            show_progress=False,
        )
    assert [r["index"] for r in written] == [0, 1, 2, 3, 4, 5]
    # a torn chunk: the last row of chunk 2 never reached the file
    done = {r["index"]: r for r in written[:5]}
    again = StubModel()
    new: list[dict] = []
    rows = generate_pairs(
        8,
        again.sample,
        again.respond,
        seed=0,
        chunk_size=3,
        done=done,
        on_row=new.append,
        show_progress=False,
    )
    assert again.sample_calls == [(3, 3), (2, 6)]  # only chunks with missing indices
    assert [r["index"] for r in new] == [5, 6, 7]
    assert rows == full


def test_mix_by_ratio():
    gold = [{"id": f"g{i}"} for i in range(10)]
    synth = [{"id": f"s{i}"} for i in range(8)]
    mixed = mix(gold, synth, 0.5, seed=1)
    assert len(mixed) == 15
    assert sum(r["id"].startswith("g") for r in mixed) == 10
    assert mixed == mix(gold, synth, 0.5, seed=1)
    assert mixed != mix(gold, synth, 0.5, seed=2)
    assert len(mix(gold, synth, 2.0)) == 18  # not more synthetic records than there are
    assert sorted(r["id"] for r in mix(gold, synth, 0.0)) == sorted(r["id"] for r in gold)
    with pytest.raises(UserError):
        mix(gold, synth, -0.1)


# ---------------------------------------------------------------------------------------------
# run/magpie.py end to end


def _call(capsys, *args: str) -> SimpleNamespace:
    """run/magpie.py's main in this process (the model loads without a new interpreter)."""
    module = load_script(ROOT / "run" / "magpie.py")
    capsys.readouterr()
    code = run_cli(module.main, list(args))
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MALPYEONG_LOG": "WARNING"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run" / "magpie.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_magpie_cli_end_to_end_and_resume(tiny_llama, tmp_path, capsys):
    out = tmp_path / "magpie.jsonl"
    raw = tmp_path / "magpie.jsonl.raw.jsonl"
    common = [
        "--model",
        str(tiny_llama),
        "--n",
        "6",
        "--out",
        str(out),
        "--batch_size",
        "3",
        "--max_new_tokens",
        "12",
        "--max_instruction_tokens",
        "12",
        "--system",
        "한국어로 대화하세요.",
        "--no_progress",
        "--seed",
    ]
    r = _run(*common, "3", "--no_filter")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    report = json.loads((tmp_path / "magpie.jsonl.report.json").read_text(encoding="utf-8"))
    assert report["n_in"] == 6 and report["n_out"] == len(records) >= 1
    for rec in records:
        assert set(rec) == {"id", "messages", "source"} and rec["source"] == "magpie"
        assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
        assert all(
            m["content"].strip() and "\n" not in rec["messages"][0]["content"] for m in rec["messages"]
        )
    raw_rows = raw.read_text(encoding="utf-8").splitlines()
    assert len(raw_rows) == 7 and json.loads(raw_rows[0])["_meta"]["seed"] == 3
    first_output = out.read_bytes()

    # never overwritten without --overwrite: one line, exit 2
    r = _run(*common, "3", "--no_filter")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--overwrite" in r.stderr

    # interrupted after the first chunk (and a torn line): the rerun redoes only what is missing
    raw.write_text("\n".join(raw_rows[:4]) + "\n" + raw_rows[4][:10], encoding="utf-8")
    out.unlink()
    r = _call(capsys, *common, "3", "--no_filter")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == first_output
    assert raw.read_text(encoding="utf-8").splitlines() == raw_rows

    # complete raw file: re-filtering with --overwrite appends nothing
    r = _call(capsys, *common, "3", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert raw.read_text(encoding="utf-8").splitlines() == raw_rows
    report = json.loads((tmp_path / "magpie.jsonl.report.json").read_text(encoding="utf-8"))
    assert report["resumed"] == 6
    assert report["n_out"] + sum(report["dropped"].values()) == 6

    # other settings do not mix into the same raw file
    r = _call(capsys, *common, "4", "--overwrite")
    assert r.returncode == 2 and "other settings: seed was 3, now 4" in r.stderr


def test_magpie_cli_bad_arguments(tmp_path):
    r = _run("--model", "x", "--n", "0", "--out", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "--n must be at least 1" in r.stderr
    assert r.stderr.count("\n") == 1
