"""Option scoring: letter ids, batch-size independence, prefix sharing, loglik, permute, results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import NIKL, SAMPLES, load_script

from malpyeong.data import check_submission, load_items
from malpyeong.inference.answer import AnswerSettings
from malpyeong.inference.engines import HFEngine
from malpyeong.inference.predict import run_prediction
from malpyeong.inference.results import partial_path, read_results, sidecar_path
from malpyeong.inference.scoring import (
    ChoicePrompts,
    TokenSequence,
    can_share_prefix,
    cyclic_orders,
    fit_choice_prompts,
    letter_token_ids,
    plan_units,
    score_choices,
    score_items,
    softmax,
    unpermute,
)
from malpyeong.models.backbones import encode, get_backbone, load_model, load_tokenizer
from malpyeong.tasks import get_task
from malpyeong.tasks.base import BASELINE

CCI = get_task("cci")


def _load(path: Path):
    backbone = get_backbone(str(path))
    tokenizer = load_tokenizer(str(path), backbone)
    model = load_model(str(path), backbone=backbone)
    model.eval()
    return model, tokenizer, backbone


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return _load(tiny_llama)


@pytest.fixture(scope="module")
def cci_items():
    return load_items(SAMPLES / "cci_dev.json", CCI)


# ----------------------------------------------------------------------------- letter ids


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen2", "mistral"])
def test_letter_ids_are_distinct_and_are_the_letters(family, tiny_models, cci_record):
    path = tiny_models[family]
    backbone = get_backbone(str(path))
    tok = load_tokenizer(str(path), backbone)
    item = CCI.parse_item(cci_record, [])
    prompts = fit_choice_prompts(CCI, [item], tok, backbone, BASELINE)
    text = prompts.fitted[0][0].text
    ids = letter_token_ids(tok, text, CCI.letters)
    assert len(set(ids)) == 3
    assert [tok.decode([i]).strip() for i in ids] == ["A", "B", "C"]
    # the id is what the prompt followed by the letter encodes to, right after the prompt
    for letter, i in zip(CCI.letters, ids, strict=True):
        assert encode(tok, text + letter)[-1] == i


def _metaspace_tokenizer():
    """A SentencePiece-like tokenizer: text after a special token gets a '▁' (leading space)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        "<unk>": 0,
        "[/INST]": 1,
        "▁": 2,
        "A": 3,
        "B": 4,
        "C": 5,
        "▁A": 6,
        "▁B": 7,
        "▁C": 8,
        "x": 9,
        "▁x": 10,
    }
    merges = [("▁", "A"), ("▁", "B"), ("▁", "C"), ("▁", "x")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", additional_special_tokens=["[/INST]"]
    )
    return fast


def test_letter_ids_take_the_leading_space_variant_in_context():
    tok = _metaspace_tokenizer()
    assert tok.convert_tokens_to_ids(["A", "▁A"]) == [3, 6]
    # After "[/INST]" this tokenizer writes "▁A", not "A": that is the id to read.
    assert letter_token_ids(tok, "x[/INST]", ["A", "B", "C"]) == [6, 7, 8]


def test_letter_ids_must_be_distinct():
    class SameToken:
        bos_token = None

        def __call__(self, text, add_special_tokens=True, verbose=False):
            return {
                "input_ids": [1] * len(text)
                if not text.endswith(("A", "B", "C"))
                else [1] * (len(text) - 1) + [7]
            }

        def convert_ids_to_tokens(self, i):
            return "?"

    from malpyeong.errors import UserError

    with pytest.raises(UserError, match="share a token"):
        letter_token_ids(SameToken(), "prompt", ["A", "B", "C"])


# ----------------------------------------------------------------------------- batching


def test_plan_covers_every_sequence_once_and_respects_batch_size():
    seqs = [TokenSequence([1, 2, 3, 4, 5, 6] * 5 + [k, k + 1], [31]) for k in range(7)]
    seqs += [TokenSequence([9] * (3 + k), [2 + k]) for k in range(5)]
    for bs in (1, 2, 3, 32):
        units = plan_units(seqs, bs).units
        members = sorted(m for u in units for m in u.members)
        assert members == list(range(len(seqs)))
        assert all(len(u.members) <= bs for u in units)
    plan = plan_units(seqs, 32)
    assert plan.root == 0  # nothing common to all
    shared = [u for u in plan.units if len(u.groups) < len(u.members)]
    assert shared and shared[0].groups[0][1] == 30  # the 30 common tokens are run once
    plan = plan_units(seqs[:7], 2)
    assert plan.root == 30 and sorted(m for u in plan.units for m in u.members) == list(range(7))
    assert plan_units(seqs, 4) == plan_units(seqs, 4)  # deterministic (resume relies on it)


def test_prefix_never_covers_a_needed_position():
    seqs = [TokenSequence([1] * 20 + [2, 3], [10, 21]), TokenSequence([1] * 20 + [4, 5], [21])]
    plan = plan_units(seqs, 8, min_prefix=1)
    assert plan.root <= 10
    for unit in plan.units:
        for g in unit.groups:
            assert g[1] <= 10


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_same_probabilities_with_batch_size_1_and_32(family, tiny_models, cci_items):
    model, tok, backbone = _load(tiny_models[family])
    one = score_choices(model, tok, backbone, CCI, cci_items, progress=False)
    many = score_choices(model, tok, backbone, CCI, cci_items, progress=False)
    assert one.shape == (len(cci_items), 3)
    np.testing.assert_allclose(one.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(one, many, atol=1e-5)
    assert (one.argmax(axis=1) == many.argmax(axis=1)).all()


def test_prefix_sharing_gives_the_plain_result(llama, cci_items):
    model, tok, backbone = llama
    prompts = fit_choice_prompts(CCI, cci_items, tok, backbone, BASELINE, permute=True)
    seqs = [TokenSequence(f.input_ids, [len(f.input_ids) - 1]) for per in prompts.fitted for f in per]
    plan = plan_units(seqs, 8)
    assert plan.root > 0  # the system prompt
    assert any(len(u.groups) < len(u.members) for u in plan.units)  # orders share the dialogue
    assert can_share_prefix(model, 4000)
    plain = score_items(model, tok, CCI, cci_items, prompts, batch_size=8, share_prefix=False, progress=False)
    shared = score_items(model, tok, CCI, cci_items, prompts, batch_size=8, share_prefix=True, progress=False)
    np.testing.assert_allclose(
        np.stack([r.probs for r in plain]), np.stack([r.probs for r in shared]), atol=1e-5
    )


def test_on_result_reports_each_item_once(llama, cci_items):
    model, tok, backbone = llama
    seen: dict[int, np.ndarray] = {}

    def on_result(i, probs):
        assert i not in seen
        seen[i] = probs

    probs = score_choices(
        model, tok, backbone, CCI, cci_items[:5], batch_size=2, progress=False, on_result=on_result
    )
    assert sorted(seen) == list(range(5))
    for i, p in seen.items():
        np.testing.assert_array_equal(p, probs[i])


@pytest.mark.skipif(not (NIKL / "cci_dev.json").exists(), reason="real NIKL files not present")
def test_real_dev_file_same_predictions_with_batch_size_1_and_32(llama):
    model, tok, backbone = llama
    items = load_items(NIKL / "cci_dev.json", CCI)
    # A budget keeps this quick on a CPU; it also puts the real files through the length budget.
    prompts = fit_choice_prompts(CCI, items, tok, backbone, BASELINE, max_length=320)
    assert sum(d > 0 for d in prompts.dropped) > 0  # the budget cut some conversations
    one = score_items(model, tok, CCI, items, prompts, progress=False)
    many = score_items(model, tok, CCI, items, prompts, progress=False)
    a = np.stack([r.probs for r in one])
    b = np.stack([r.probs for r in many])
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    np.testing.assert_allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------- permute


def test_cyclic_orders_and_unpermute():
    assert cyclic_orders(3) == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    # position j showed original option order[j]
    np.testing.assert_array_equal(unpermute([0.5, 0.3, 0.2], (1, 2, 0)), [0.2, 0.5, 0.3])
    np.testing.assert_allclose(softmax([0.0, math.log(3.0)]), [0.25, 0.75])


class PositionBiasedModel:
    """Always prefers the letter at position A by ``bias`` nats; knows nothing else."""

    def __init__(self, letter_ids, vocab, bias=2.0):
        self.letter_ids, self.vocab, self.bias = letter_ids, vocab, bias
        self.config = None
        self.training = False

    def parameters(self):
        return iter(())

    def __call__(self, input_ids, logits_to_keep=None, **_):
        import torch

        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)
        logits[..., self.letter_ids[0]] = self.bias
        if logits_to_keep is not None:
            logits = logits[logits_to_keep]

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_permute_cancels_a_pure_position_bias(llama, cci_items):
    _, tok, backbone = llama
    prompts = fit_choice_prompts(CCI, cci_items[:3], tok, backbone, BASELINE)
    ids = letter_token_ids(tok, prompts.fitted[0][0].text, CCI.letters)
    fake = PositionBiasedModel(ids, len(tok))
    plain = score_choices(fake, tok, backbone, CCI, cci_items[:3], progress=False)
    e = math.exp(2.0)
    np.testing.assert_allclose(plain, [[e / (e + 2), 1 / (e + 2), 1 / (e + 2)]] * 3, atol=1e-12)
    permuted = score_choices(fake, tok, backbone, CCI, cci_items[:3], permute=True, progress=False)
    np.testing.assert_allclose(permuted, np.full((3, 3), 1 / 3), atol=1e-12)


def test_permute_is_the_mean_of_the_three_orders_mapped_back(llama, cci_items):
    model, tok, backbone = llama
    items = cci_items[:4]
    averaged = score_choices(model, tok, backbone, CCI, items, permute=True, progress=False)
    expected = np.zeros((len(items), 3))
    for order in cyclic_orders(3):
        shown = score_choices(
            model, tok, backbone, CCI, [CCI.permuted(it, order) for it in items], progress=False
        )
        expected += np.stack([unpermute(p, order) for p in shown])
    np.testing.assert_allclose(averaged, expected / 3, atol=1e-6)


# ----------------------------------------------------------------------------- loglik


def _naive_loglik(model, tok, text, option):
    """One full forward pass per option: the reference for the shared-cache implementation."""
    import torch

    base = encode(tok, text)
    full = encode(tok, text + option)
    assert full[: len(base)] == base
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[t - 1, full[t]] for t in range(len(base), len(full))))


def test_loglik_equals_a_naive_full_forward_per_option(llama, cci_items):
    model, tok, backbone = llama
    items = cci_items[:3]
    prompts = fit_choice_prompts(CCI, items, tok, backbone, BASELINE)
    results = score_items(
        model, tok, CCI, items, prompts, scoring="loglik", batch_size=4, share_prefix=True, progress=False
    )
    for item, per, res in zip(items, prompts.fitted, results, strict=True):
        naive = [_naive_loglik(model, tok, per[0].text, o) for o in CCI.choices(item)]
        np.testing.assert_allclose(res.extra["loglik"], naive, atol=1e-4)
        lengths = [len(o) for o in CCI.choices(item)]
        np.testing.assert_allclose(res.extra["loglik_norm"], np.array(naive) / lengths, atol=1e-5)
        np.testing.assert_allclose(res.probs, softmax(naive), atol=1e-4)
    norm = score_items(model, tok, CCI, items, prompts, scoring="loglik_norm", progress=False)
    for res in norm:
        np.testing.assert_allclose(res.probs, softmax(res.extra["loglik_norm"]), atol=1e-9)


def test_loglik_batch_size_independent(llama, cci_items):
    model, tok, backbone = llama
    a = score_choices(
        model, tok, backbone, CCI, cci_items[:6], scoring="loglik", batch_size=1, progress=False
    )
    b = score_choices(
        model, tok, backbone, CCI, cci_items[:6], scoring="loglik", batch_size=32, progress=False
    )
    np.testing.assert_allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------- results files


def test_run_prediction_writes_valid_results_and_refuses_to_overwrite(llama, tmp_path):
    model, tok, backbone = llama
    items = load_items(SAMPLES / "cci_test.json", CCI)
    out = tmp_path / "results" / "cci.json"
    opts = AnswerSettings(max_length=256, batch_size=4)
    summary = run_prediction(
        HFEngine(model, tok, backbone), CCI, items, out, settings=opts, model_name="tiny", progress=False
    )
    assert check_submission(out, SAMPLES / "cci_test.json", CCI) == len(items)
    assert summary.cut > 0 and summary.resumed == 0
    assert not partial_path(out).exists()
    lines = sidecar_path(out).read_text(encoding="utf-8").splitlines()
    head = json.loads(lines[0])["_meta"]
    assert head["task"] == "cci" and head["scoring"] == "letter" and head["max_length"] == 256
    res = read_results(out)
    assert res.ids == [it.id for it in items]
    for rid in res.ids:
        p = res.probs[rid]
        assert abs(sum(p) - 1) < 1e-9
        assert res.outputs[rid] == CCI.output_for(int(np.argmax(p)))
    rows = [json.loads(x) for x in lines[1:]]
    assert sum(r["dropped"] > 0 for r in rows) == summary.cut
    from malpyeong.errors import UserError

    with pytest.raises(UserError, match="exists"):
        run_prediction(
            HFEngine(model, tok, backbone), CCI, items, out, settings=opts, model_name="tiny", progress=False
        )


def test_resume_from_a_partial_file_is_byte_identical(llama, tmp_path):
    model, tok, backbone = llama
    items = load_items(SAMPLES / "cci_test.json", CCI)[:8]
    opts = AnswerSettings(scoring="loglik", permute=True, max_length=320, batch_size=3)
    ref = tmp_path / "ref.json"
    run_prediction(
        HFEngine(model, tok, backbone), CCI, items, ref, settings=opts, model_name="m", progress=False
    )
    # An interrupted run: the header, some rows in completion order, and a torn last line.
    rows = sidecar_path(ref).read_text(encoding="utf-8").splitlines()
    out = tmp_path / "again.json"
    torn = "\n".join([rows[0], rows[5], rows[2], rows[7]]) + "\n" + rows[3][:17]
    partial_path(out).write_text(torn, encoding="utf-8")
    summary = run_prediction(
        HFEngine(model, tok, backbone), CCI, items, out, settings=opts, model_name="m", progress=False
    )
    assert summary.resumed == 3
    assert out.read_bytes() == ref.read_bytes()
    assert sidecar_path(out).read_bytes() == sidecar_path(ref).read_bytes()


def test_a_partial_file_from_other_options_is_refused(llama, tmp_path):
    model, tok, backbone = llama
    items = load_items(SAMPLES / "cci_test.json", CCI)[:2]
    out = tmp_path / "x.json"
    partial_path(out).write_text(json.dumps({"_meta": {"model": "other"}}) + "\n", encoding="utf-8")
    from malpyeong.errors import UserError

    with pytest.raises(UserError, match="different run"):
        run_prediction(HFEngine(model, tok, backbone), CCI, items, out, model_name="m", progress=False)


def test_choice_prompts_are_fitted_to_the_budget(llama, cci_items):
    _, tok, backbone = llama
    prompts: ChoicePrompts = fit_choice_prompts(
        CCI, cci_items, tok, backbone, BASELINE, max_length=200, permute=True
    )
    assert len(prompts.orders) == 3
    assert all(len(f.input_ids) <= 200 for per in prompts.fitted for f in per if f.fits)
    assert max(prompts.dropped) > 0


# ----------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama, tmp_path_factory):
    """A LoRA adapter on the tiny Llama whose B matrices are not zero (so it changes outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = load_model(str(tiny_llama))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft.save_pretrained(out)
    return out


def test_resolve_source_kinds(tiny_llama, adapter_dir, tmp_path):
    from malpyeong.errors import UserError
    from malpyeong.inference.loading import resolve_source

    assert resolve_source("org/model").kind == "hub"
    local = resolve_source(str(tiny_llama))
    assert (local.kind, local.weights) == ("local", str(tiny_llama))
    ad = resolve_source(str(adapter_dir))
    assert (ad.kind, ad.base, ad.adapter) == ("adapter", str(tiny_llama), str(adapter_dir))
    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    (run / "merged" / "config.json").write_text("{}", encoding="utf-8")
    info = {
        "model": "org/base",
        "method": "lora",
        "adapter_dir": "adapter",
        "merged_dir": "merged",
        "task": "cci",
        "prompt": "highlight",
        "max_length": 512,
    }
    (run / "malpyeong_run.json").write_text(json.dumps(info), encoding="utf-8")
    src = resolve_source(str(run))
    assert (src.kind, src.weights, src.adapter) == ("run", str(run / "merged"), None)
    assert src.defaults == {"prompt": "highlight", "max_length": 512}
    (run / "merged" / "config.json").unlink()  # no merged model: the adapter it is
    import shutil

    shutil.copytree(adapter_dir, run / "adapter")
    src = resolve_source(str(run))
    assert (src.weights, src.adapter) == ("org/base", str(run / "adapter"))
    shutil.rmtree(run / "adapter")
    with pytest.raises(UserError, match="neither a merged model nor an adapter"):
        resolve_source(str(run))
    # the run file training writes when it starts: a run still training (or killed) is not loaded
    (run / "malpyeong_run.json").write_text(json.dumps({**info, "finished": False}), encoding="utf-8")
    shutil.copytree(adapter_dir, run / "adapter")
    with pytest.raises(UserError, match="training has not finished"):
        resolve_source(str(run))
    with pytest.raises(UserError, match="folder not found"):
        resolve_source("./no/such/model")
    with pytest.raises(UserError, match="not a model folder"):
        resolve_source(str(tmp_path))


def test_adapter_is_loaded_merged_and_scores_like_the_peft_model(tiny_llama, adapter_dir, cci_items):
    from peft import PeftModel

    from malpyeong.inference.loading import load_for_inference

    loaded = load_for_inference(str(adapter_dir))
    assert loaded.source.kind == "adapter" and not hasattr(loaded.model, "peft_config")
    items = cci_items[:4]
    merged = score_choices(loaded.model, loaded.tokenizer, loaded.backbone, CCI, items, progress=False)
    base, tok, backbone = _load(tiny_llama)
    plain = score_choices(base, tok, backbone, CCI, items, progress=False)
    attached = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    with_adapter = score_choices(attached, tok, backbone, CCI, items, progress=False)
    np.testing.assert_allclose(merged, with_adapter, atol=1e-5)
    assert np.abs(merged - plain).max() > 1e-3  # the adapter does change the scores


def _script(name: str):
    return load_script(f"run/{name}.py")


def test_test_py_takes_the_run_folder_defaults(tiny_llama, adapter_dir, tmp_path, capsys):
    import shutil

    from malpyeong.cli import run_cli

    run = tmp_path / "run"
    shutil.copytree(adapter_dir, run / "adapter")
    info = {
        "model": str(tiny_llama),
        "method": "lora",
        "adapter_dir": "adapter",
        "merged_dir": None,
        "task": "cci",
        "prompt": "highlight",
        "max_length": 300,
    }
    (run / "malpyeong_run.json").write_text(json.dumps(info), encoding="utf-8")
    test = _script("test")
    out = tmp_path / "res" / "x.json"
    argv = [
        "--model",
        str(run),
        "--task",
        "cci",
        "--input",
        str(SAMPLES / "cci_dev.json"),
        "--output",
        str(out),
        "--no_progress",
    ]
    assert run_cli(test.main, argv) == 0
    meta = read_results(out).meta
    assert (meta["prompt"], meta["max_length"], meta["model"]) == ("highlight", 300, str(run))
    printed = capsys.readouterr().out
    assert "cci predictions" in printed and "prompts cut to fit max_length 300" in printed
    # the wrong task, an existing output, a bad value: one line each, exit 2, before loading
    for bad, says in [
        (["--task", "dcs"], "trained for task cci"),
        ([], "output exists"),
        (["--batch_size", "0"], "at least 1"),
    ]:
        code = run_cli(test.main, argv + bad)
        err = capsys.readouterr().err
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1
