"""Batched generation: same text as one prompt at a time, stops, resume, cleaning."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES

from malpyeong.data import check_submission, load_items
from malpyeong.inference.answer import AnswerSettings, generation_prompts
from malpyeong.inference.engines import GenerationSettings, HFEngine
from malpyeong.inference.generation import (
    cut_at_stop,
    cut_at_strings,
    generate_texts,
    left_pad,
    length_sorted_batches,
)
from malpyeong.inference.predict import run_prediction
from malpyeong.inference.results import read_results, sidecar_path
from malpyeong.models.backbones import end_of_turn_ids, get_backbone, load_model, load_tokenizer
from malpyeong.tasks import get_task
from malpyeong.tasks.base import BASELINE

DCS = get_task("dcs")


@pytest.fixture(scope="module")
def setup(tiny_llama):
    backbone = get_backbone(str(tiny_llama))
    tok = load_tokenizer(str(tiny_llama), backbone)
    model = load_model(str(tiny_llama), backbone=backbone)
    model.eval()
    items = load_items(SAMPLES / "dcs_dev.json", DCS)
    # prompts of different lengths, so batches need padding
    fitted = [
        generation_prompts(DCS, [it], tok, backbone, BASELINE, max_length=m, max_new_tokens=12)[0]
        for it, m in zip(items[:6], (200, 320, 150, 260, 180, 300), strict=True)
    ]
    prompts = [f.input_ids for f in fitted]
    assert len({len(p) for p in prompts}) > 3
    return model, tok, backbone, prompts


def test_length_sorted_batches_longest_first_and_stable():
    assert length_sorted_batches([3, 9, 5, 9, 1], 2) == [[1, 3], [2, 0], [4]]
    assert length_sorted_batches([], 4) == []
    with pytest.raises(ValueError):
        length_sorted_batches([1], 0)


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_cut_at_stop_and_strings():
    assert cut_at_stop([4, 5, 2, 6, 2], {2}) == [4, 5]
    assert cut_at_stop([4, 5], {2}) == [4, 5]
    assert cut_at_strings("요약입니다.<end>나머지", ["<end>", "나머"]) == "요약입니다."
    assert cut_at_strings("그대로", None) == "그대로"


def test_batched_greedy_equals_one_prompt_at_a_time(setup):
    model, tok, backbone, prompts = setup
    stops = end_of_turn_ids(tok, backbone)
    batched = generate_texts(
        model, tok, prompts, max_new_tokens=12, batch_size=4, stop_token_ids=stops, progress=False
    )
    single = [
        generate_texts(
            model, tok, [p], max_new_tokens=12, batch_size=1, stop_token_ids=stops, progress=False
        )[0]
        for p in prompts
    ]
    assert batched == single
    assert all(isinstance(t, str) for t in batched) and any(batched)


def test_on_result_and_done_resume(setup):
    model, tok, _, prompts = setup
    full = generate_texts(model, tok, prompts, max_new_tokens=6, progress=False)
    seen: dict[int, str] = {}
    again = generate_texts(
        model,
        tok,
        prompts,
        max_new_tokens=6,
        batch_size=2,
        progress=False,
        done={0, 1, 2},
        on_result=lambda i, t: seen.setdefault(i, t),
    )
    assert sorted(seen) == [3, 4, 5]
    assert all(again[i] == "" for i in (0, 1, 2))
    assert all(seen[i] == full[i] for i in seen)


def test_sampling_is_reproducible_with_a_seed_and_beam_search_runs(setup):
    model, tok, _, prompts = setup
    kw = dict(max_new_tokens=6, batch_size=3, do_sample=True, temperature=1.5, top_p=0.9, progress=False)
    assert generate_texts(model, tok, prompts[:3], seed=7, **kw) == generate_texts(
        model, tok, prompts[:3], seed=7, **kw
    )
    beams = generate_texts(model, tok, prompts[:2], max_new_tokens=4, num_beams=2, progress=False)
    assert len(beams) == 2


def test_generation_stops_at_a_stop_token(setup):
    model, tok, _, prompts = setup
    free = generate_texts(model, tok, prompts[:1], max_new_tokens=8, progress=False)[0]
    first = tok.encode(free, add_special_tokens=False)[0]  # stop at the first token it writes
    stopped = generate_texts(
        model, tok, prompts[:1], max_new_tokens=8, progress=False, stop_token_ids=[first]
    )[0]
    assert stopped == ""


def test_dcs_results_are_cleaned_and_valid(setup, tmp_path):
    model, tok, backbone, _ = setup
    items = load_items(SAMPLES / "dcs_test.json", DCS)[:4]
    out = tmp_path / "dcs.json"
    opts = AnswerSettings(max_length=300, generation=GenerationSettings(max_new_tokens=10), batch_size=2)
    summary = run_prediction(
        HFEngine(model, tok, backbone), DCS, items, out, settings=opts, model_name="tiny", progress=False
    )
    assert summary.cut == 4  # every conversation was cut to fit 300 - 10 tokens
    rows = [json.loads(x) for x in sidecar_path(out).read_text(encoding="utf-8").splitlines()]
    assert rows[0]["_meta"]["max_new_tokens"] == 10
    res = read_results(out)
    for row in rows[1:]:
        assert row["output"] == (DCS.clean_output(row["text"]) or ".")
        assert res.outputs[row["id"]] == row["output"]
        assert res.texts[row["id"]] == row["text"]
    template = tmp_path / "test.json"
    template.write_text(json.dumps([it.raw for it in items], ensure_ascii=False), encoding="utf-8")
    assert check_submission(out, template, DCS) == 4


def test_clean_output_strips_chat_artefacts_in_results(setup, tmp_path, monkeypatch):
    model, tok, backbone, _ = setup
    items = load_items(SAMPLES / "dcs_test.json", DCS)[:2]
    raw = "<start_of_turn>model\n요약: 두 화자는 운동에 대해 이야기했다. 두 화자는 운동에 대해 이야기했다. <|eot_id|>"

    def fake_generate(model, tokenizer, prompts, on_result=None, done=(), **_):
        for i in range(len(prompts)):
            if i not in done:
                on_result(i, raw)
        return [raw] * len(prompts)

    import malpyeong.inference.engines as engines

    monkeypatch.setattr(engines, "generate_texts", fake_generate)
    out = tmp_path / "clean.json"
    run_prediction(
        HFEngine(model, tok, backbone),
        DCS,
        items,
        out,
        settings=AnswerSettings(),
        model_name="tiny",
        progress=False,
    )
    res = read_results(out)
    assert set(res.outputs.values()) == {"두 화자는 운동에 대해 이야기했다."}
    assert set(res.texts.values()) == {raw}
