"""Constrained decoding for the memory task on a tiny random-weight Qwen2: schema-valid output
and exact turn counts from an untrained model, the training layout accepted by the constraint,
run/memory.py (incremental updates keep turn_count exact), and the vLLM parameters."""

from __future__ import annotations

import json
import sys
import types

import pytest
from conftest import SAMPLES, load_script

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.inference.answer import AnswerSettings, answer_items
from malpyeong.inference.constrain import (
    Completer,
    Unsupported,
    json_constraint,
    vllm_engine_kwargs,
    vllm_sampling_kwargs,
)
from malpyeong.inference.engines import GenerationSettings
from malpyeong.inference.generation import generate_texts, generate_texts_vllm
from malpyeong.inference.loading import load_engine, resolve_source
from malpyeong.models.budget import fit_prompt
from malpyeong.tasks import memory as memory_module
from malpyeong.tasks.memory import MemoryTask


@pytest.fixture(scope="module")
def qwen2(tiny_models):
    return tiny_models["qwen2"]


@pytest.fixture(scope="module")
def engine(qwen2):
    return load_engine(resolve_source(str(qwen2)), device="cpu")


@pytest.fixture
def small_bounds(monkeypatch):
    """Tighter decoding bounds, so a random model's strings (which run to the bound) are short
    and the test fast; the constraint itself is the same code."""
    for name, value in (
        ("MAX_TOPIC_CHARS", 12),
        ("MAX_SUMMARY_CHARS", 24),
        ("MAX_FACTS", 2),
        ("MAX_FACT_CHARS", 16),
        ("MAX_REFS", 1),
        ("MAX_REF_CHARS", 8),
    ):
        monkeypatch.setattr(memory_module, name, value)
    return MemoryTask()


def sample_items(task):
    return [
        *load_items(SAMPLES / "memory_train.jsonl", task),
        *load_items(SAMPLES / "memory_dev.jsonl", task),
    ]


def test_the_training_layout_is_what_the_constraint_accepts(engine):
    import llguidance

    task = MemoryTask()
    tok = engine.tokenizer
    constraint = json_constraint(task.output_schema(), tok, len(tok), engine.stop_token_ids())
    for item in sample_items(task):
        matcher = llguidance.LLMatcher(constraint.tokenizer, constraint.grammar, log_level=0)
        assert matcher.consume_tokens(tok(task.target(item), add_special_tokens=False)["input_ids"])
        assert matcher.is_accepting(), item.id
    # a space after a colon, or keys out of order, are not the layout
    matcher = llguidance.LLMatcher(constraint.tokenizer, constraint.grammar, log_level=0)
    assert not matcher.consume_tokens(tok('{"memory_state": {', add_special_tokens=False)["input_ids"])


def test_an_untrained_model_writes_schema_valid_states_with_exact_counts(engine, small_bounds):
    task = small_bounds
    items = sample_items(task)
    settings = AnswerSettings(generation=GenerationSettings(max_new_tokens=200), batch_size=4)
    run = answer_items(engine, task, items, settings, progress=False)
    assert run.unusable == 0
    for item, answer in zip(items, run.answers, strict=True):
        raw = json.loads(answer.sidecar["text"])  # the raw text parses as it is
        assert task.check_output(raw) is None
        assert answer.output["memory_state"]["turn_count"] == item.turn_count
        assert answer.sidecar["text"].startswith('{"memory_state":{"key_facts":[')
    free = answer_items(
        engine,
        task,
        items[:2],
        AnswerSettings(generation=GenerationSettings(max_new_tokens=8), constrain=False),
        progress=False,
    )
    assert free.unusable == 2  # nothing readable: the fallback, with the exact count
    assert [a.output["memory_state"]["turn_count"] for a in free.answers] == [
        it.turn_count for it in items[:2]
    ]


DOCS = [
    '{"memory_state":{"key_facts":["A moved.","B \\"said\\" \\u00e9 hi"],"unresolved_refs":'
    '["그 렌즈"],"topic":"t x","turn_count":123},"memory_summary":"s"}',
    '{"memory_state":{"key_facts":[],"unresolved_refs":[],"topic":" y","turn_count":5},'
    '"memory_summary":"  z "}',
]


def test_every_prefix_of_a_valid_state_has_a_shortest_completion():
    task = MemoryTask()
    completer = Completer(task.output_schema())
    assert completer.complete("") == (
        '{"memory_state":{"key_facts":[],"unresolved_refs":[],'
        '"topic":"x","turn_count":1},"memory_summary":"x"}'
    )
    assert (
        completer.complete('{"memory_state":{"key_facts":["a"')
        == '],"unresolved_refs":[],"topic":"x","turn_count":1},"memory_summary":"x"}'
    )
    assert (
        completer.complete('{"memory_state":{"key_facts":["  ')
        == 'x"],"unresolved_refs":[],"topic":"x","turn_count":1},"memory_summary":"x"}'
    )
    assert (
        completer.complete('{"memory_state":{"key_facts":[],"unresolved_refs":[],"topic":"x","turn_count":42')
        == '},"memory_summary":"x"}'
    )
    for doc in DOCS:
        assert completer.complete(doc) == ""
        for k in range(len(doc)):
            rest = completer.complete(doc[:k])
            if rest is None:  # only inside an escape sequence
                assert "\\" in doc[max(k - 6, 0) : k]
                continue
            assert task.check_output(json.loads(doc[:k] + rest)) is None, doc[:k]
    assert completer.complete('{"memory_state": {') is None  # not the layout
    with pytest.raises(Unsupported):
        Completer({"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]})


def test_a_degenerate_generation_is_closed_within_its_budget(engine):
    """The real bounds allow far more than 160 tokens; the random model runs its strings to
    the bound, and is steered to close in time."""
    task = MemoryTask()
    items = sample_items(task)[:4]
    run = answer_items(
        engine,
        task,
        items,
        AnswerSettings(generation=GenerationSettings(max_new_tokens=160), batch_size=4),
        progress=False,
    )
    assert run.unusable == 0
    for item, answer in zip(items, run.answers, strict=True):
        assert task.check_output(json.loads(answer.sidecar["text"])) is None
        assert answer.output["memory_state"]["turn_count"] == item.turn_count


def test_beam_search_does_not_combine_with_a_constraint(engine):
    with pytest.raises(UserError, match="beam search"):
        generate_texts(
            engine.model,
            engine.tokenizer,
            [[1, 2, 3]],
            num_beams=2,
            schema=MemoryTask().output_schema(),
            progress=False,
        )


def test_no_constrain_is_refused_for_free_text_tasks():
    from malpyeong.tasks import get_task

    with pytest.raises(UserError, match="no_constrain"):
        AnswerSettings(constrain=False).check_for(get_task("dcs"), "hf")


def call_memory(args, capsys) -> tuple[int, str, str]:
    code = run_cli(load_script("run/memory.py").main, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_memory_updates_a_previous_state_with_an_exact_count(qwen2, tmp_path, capsys, small_bounds):
    first = tmp_path / "chat.txt"
    first.write_text(
        "A: 나 다음 달에 부산으로 이사 가.\nB: 진짜? 회사 때문에?\n\nA: 응, 해운대 근처로 발령 났어.\n",
        encoding="utf-8",
    )
    state = tmp_path / "state.json"
    code, out, err = call_memory(
        ["--model", qwen2, "--dialogue", first, "--device", "cpu", "--max_new_tokens", "200", "--out", state],
        capsys,
    )
    assert code == 0, err
    one = json.loads(state.read_text(encoding="utf-8"))
    assert MemoryTask().check_output(one) is None and one["memory_state"]["turn_count"] == 3
    more = tmp_path / "more.txt"
    more.write_text("B: 그럼 집은 구했어?\nA: 아직. 이번 주말에 보러 가.\n", encoding="utf-8")
    code, out, err = call_memory(
        [
            "--model",
            qwen2,
            "--dialogue",
            more,
            "--state",
            state,
            "--device",
            "cpu",
            "--max_new_tokens",
            "200",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["memory_state"]["turn_count"] == 5
    # without the constraint the random model writes nothing readable: the previous state is
    # carried forward, still with the exact count
    code, out, err = call_memory(
        [
            "--model",
            qwen2,
            "--dialogue",
            more,
            "--state",
            state,
            "--device",
            "cpu",
            "--max_new_tokens",
            "4",
            "--no_constrain",
            "--turn_count",
            "speaker_turns",
        ],
        capsys,
    )
    assert code == 0 and "delivered the previous state" in err
    assert json.loads(out) == {**one, "memory_state": {**one["memory_state"], "turn_count": 5}}


def test_run_memory_reports_bad_input_in_one_line(qwen2, tmp_path, capsys):
    bad = tmp_path / "chat.txt"
    bad.write_text("A: hello\nno speaker on this line\n", encoding="utf-8")
    code, _, err = call_memory(["--model", qwen2, "--dialogue", bad], capsys)
    assert code == 2
    assert err.strip() == f"error: {bad}: item line 2: field 'dialogue': not a 'Speaker: utterance' line"
    good = tmp_path / "good.txt"
    good.write_text("A: hello\n", encoding="utf-8")
    state = tmp_path / "state.json"
    state.write_text(
        '{"memory_state": {"key_facts": [], "unresolved_refs": [], "topic": "t", '
        '"turn_count": 0}, "memory_summary": "s"}',
        encoding="utf-8",
    )
    code, _, err = call_memory(["--model", qwen2, "--dialogue", good, "--state", state], capsys)
    assert code == 2
    assert err.strip() == f"error: {state}: field 'state.memory_state.turn_count': 0 is not an integer >= 1"


def fake_vllm(monkeypatch, *, structured: bool) -> dict:
    """A stand-in ``vllm`` package recording what it is given."""
    seen: dict = {}

    class Params:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class SamplingParams(Params):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            seen["sampling"] = kwargs

    class TokensPrompt(dict):
        def __init__(self, prompt_token_ids):
            super().__init__(prompt_token_ids=prompt_token_ids)

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = SamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    if structured:
        sampling.StructuredOutputsParams = type("StructuredOutputsParams", (Params,), {})
    else:
        sampling.GuidedDecodingParams = type("GuidedDecodingParams", (Params,), {})
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    for name, module in (("vllm", vllm), ("vllm.sampling_params", sampling), ("vllm.inputs", inputs)):
        monkeypatch.setitem(sys.modules, name, module)
    return seen


def test_vllm_gets_the_schema_through_structured_outputs(monkeypatch, engine):
    schema = MemoryTask().output_schema()
    seen = fake_vllm(monkeypatch, structured=True)
    params = vllm_sampling_kwargs(schema)["structured_outputs"]
    assert type(params).__name__ == "StructuredOutputsParams" and params.kwargs == {"json": schema}

    class LLM:
        def __init__(self, model, structured_outputs_config=None, **kwargs):
            pass

        def generate(self, prompts, params, use_tqdm=False):
            out = types.SimpleNamespace(text='{"x":1}')
            return [types.SimpleNamespace(outputs=[out]) for _ in prompts]

    assert vllm_engine_kwargs(LLM) == {"structured_outputs_config": {"backend": "guidance"}}
    texts = generate_texts_vllm(LLM("m"), engine.tokenizer, [[1, 2], [3]], schema=schema, progress=False)
    assert texts == ['{"x":1}', '{"x":1}']
    assert seen["sampling"]["structured_outputs"].kwargs == {"json": schema}
    # an older vLLM: guided decoding, the backend named per request
    fake_vllm(monkeypatch, structured=False)
    params = vllm_sampling_kwargs(schema)["guided_decoding"]
    assert params.kwargs == {"json": schema, "backend": "guidance"}
    assert vllm_engine_kwargs(type("OldLLM", (), {"__init__": lambda self, model: None})) == {}


# ----------------------------------------------------------------------------- the fast paths


def full_expansion(scores, bitmask):
    """The plain way: every bit to a boolean, refused logits to -inf (a new tensor)."""
    import torch

    bits = (
        ((bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1).bool().reshape(len(bitmask), -1)
    )
    allowed = torch.zeros(scores.shape, dtype=torch.bool)
    n = min(bits.shape[1], scores.shape[1])
    allowed[:, :n] = bits[:, :n]
    return scores.masked_fill(~allowed, float("-inf"))


@pytest.mark.parametrize("width", [70, 96, 130])  # inside, at and beyond the mask's 96 bits
def test_the_in_place_mask_is_the_full_expansion(width):
    import torch

    from malpyeong.inference.constrain import apply_bitmask, apply_bitmask_dense

    g = torch.Generator().manual_seed(0)
    words = torch.randint(-(2**31), 2**31 - 1, (6, 3), dtype=torch.int32, generator=g)
    words[1] = 0  # nothing allowed
    words[2] = -1  # everything allowed
    words[3] = torch.tensor([0, 1 << 5, 0], dtype=torch.int32)  # one token (sparse path)
    words[4] = torch.tensor([-1, -1 ^ (1 << 7), -1], dtype=torch.int32)  # all but one (dense path)
    scores = torch.randn(6, width, generator=g)
    expected = full_expansion(scores, words)
    rows = [0, 1, 2, 3, 4]  # row 5 is not masked
    expected[5] = scores[5]
    dense = scores.clone()
    apply_bitmask(scores, words, rows)  # the CPU path
    assert torch.equal(scores, expected)
    apply_bitmask_dense(dense, words, rows)  # the GPU path, run here on the CPU
    assert torch.equal(dense, expected)


def test_greedy_shortcuts_choose_what_exact_masks_choose(engine, small_bounds, monkeypatch):
    """Top-token checks and the masks of the schema without maxLength give, step by step, the
    tokens that masking every row by the exact schema (the processor's sampling mode) gives;
    every path is taken: top token allowed, relaxed mask, exact mask, closing."""
    from malpyeong.inference import constrain

    task = small_bounds
    items = sample_items(task)[:4]
    spec = task.prompt_spec(None)
    prompts = [fit_prompt(task, it, engine.tokenizer, engine.backbone, spec).input_ids for it in items]
    made = []
    original = constrain.JsonConstraint.logits_processor

    def recorded(self, rows, width, max_new_tokens=None, *, greedy=False, force=None):
        made.append(original(self, rows, width, max_new_tokens, greedy=greedy if force is None else force))
        return made[-1]

    def run(force):
        monkeypatch.setattr(
            constrain.JsonConstraint,
            "logits_processor",
            lambda self, *a, greedy=False: recorded(self, *a, greedy=greedy, force=force),
        )
        made.clear()
        texts = generate_texts(
            engine.model,
            engine.tokenizer,
            prompts,
            max_new_tokens=126,
            batch_size=4,
            stop_token_ids=engine.stop_token_ids(),
            schema=task.output_schema(),
            progress=False,
        )
        stats = constrain.ConstraintStats()
        for p in made:
            stats.add(p.stats)
        return texts, stats

    fast, stats = run(None)
    exact, exact_stats = run(False)
    assert fast == exact
    assert exact_stats.top_allowed == exact_stats.relaxed_masks == 0
    assert min(stats.top_allowed, stats.relaxed_masks, stats.exact_masks, stats.closing) > 0, stats
    for text in fast:
        assert task.check_output(json.loads(text)) is None


def test_a_top_token_check_is_the_mask_bit_where_no_bytes_are_forced(engine):
    """Over the whole (tiny) vocabulary, at every state of a schema-valid document: where
    the schema forces no bytes, the processor's check of one token is that token's mask bit
    (the stop tokens: allowed once the document is complete). Where bytes are forced the mask
    allows only their canonical first token, which is why such rows are always masked."""
    import llguidance
    import llguidance.torch as lt
    import numpy as np

    task = MemoryTask()
    tok = engine.tokenizer
    constraint = json_constraint(task.output_schema(), tok, len(tok), engine.stop_token_ids())
    proc = constraint.logits_processor(1, 0, greedy=True)
    narrowed = 0
    for item in sample_items(task)[:1]:
        proc.matchers[0] = matcher = llguidance.LLMatcher(
            constraint.tokenizer, constraint.grammar, log_level=0
        )
        ids = tok(task.target(item), add_special_tokens=False)["input_ids"]
        for token in [*ids, None]:
            mask = lt.allocate_token_bitmask(1, constraint.vocab_size)
            lt.fill_next_token_bitmask(matcher, mask, 0)
            bits = np.unpackbits(mask[0].numpy().view(np.uint8), bitorder="little")[: constraint.vocab_size]
            checked = np.array([proc._allows(0, t) for t in range(constraint.vocab_size)])
            if matcher.compute_ff_bytes():
                narrowed += int((checked & ~bits.astype(bool)).any())
            else:
                assert (checked == bits.astype(bool)).all(), tok.decode(
                    ids[: ids.index(token)] if token else ids
                )
            if token is not None:
                assert matcher.consume_token(token)
        assert matcher.is_accepting() and all(proc._allows(0, s) for s in engine.stop_token_ids())
    assert narrowed > 0  # forced bytes do narrow the mask: the reason for the rule above
