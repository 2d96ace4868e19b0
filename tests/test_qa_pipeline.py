"""The qa task end to end: LoRA on our samples, prediction and every metric; the real QMSum
validation meetings through convert, predict at 2,048 tokens and evaluate; retrieval against
head-and-tail on the real gold spans; run/compare.py generating with two models first."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, SAMPLES, load_script

from malpyeong.cli import run_cli
from malpyeong.data import check_submission, load_items
from malpyeong.inference.results import read_results
from malpyeong.models.backbones import get_backbone, load_tokenizer
from malpyeong.models.budget import fit_prompt
from malpyeong.tasks import get_task

pytestmark = pytest.mark.slow
QMSUM = next(
    (
        p
        for p in (
            ROOT.parent / "shared" / "data" / "qmsum" / "val.jsonl",
            ROOT.parents[1] / "shared" / "data" / "qmsum" / "val.jsonl",
        )
        if p.is_file()
    ),
    ROOT.parent / "shared" / "data" / "qmsum" / "val.jsonl",
)
QA = get_task("qa")
ALL_METRICS = ("similarity", "rouge1", "f1", "em", "bertscore", "rationale_similarity", "rationale_rouge1")


def call(script: str, *args, capsys) -> str:
    code = run_cli(load_script(script).main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def assert_every_metric(shown: str) -> None:
    lines = {line.split()[0]: line for line in shown.splitlines() if line.strip()}
    for name in ALL_METRICS:
        assert name in lines and "not computed" not in lines[name], shown


def test_lora_on_qa_samples_then_predict_and_evaluate(tiny_llama, tiny_embedder, tmp_path, capsys):
    run = tmp_path / "run"
    call(
        "run/train.py",
        "--config",
        ROOT / "resource/configs/qa/tiny_lora.yaml",
        "--model",
        tiny_llama,
        "--output_dir",
        run,
        "--train_file",
        SAMPLES / "qa_train.jsonl",
        "--dev_file",
        SAMPLES / "qa_dev.jsonl",
        "--max_steps",
        "2",
        capsys=capsys,
    )
    stats = json.loads((run / "data_stats.json").read_text(encoding="utf-8"))
    assert stats["train"]["examples"] == 8 and stats["train"]["prompts_cut"] == 8
    metrics = json.loads((run / "dev_metrics.json").read_text(encoding="utf-8"))
    assert metrics["metric"] == "rouge1"
    for split in ("dev", "test"):
        shown = call(
            "run/test.py",
            "--model",
            run,
            "--task",
            "qa",
            "--input",
            SAMPLES / f"qa_{split}.jsonl",
            "--output",
            tmp_path / f"{split}.json",
            "--max_new_tokens",
            "8",
            "--no_progress",
            capsys=capsys,
        )
        assert "4 qa predictions" in shown and "prompt" in shown
        assert check_submission(tmp_path / f"{split}.json", SAMPLES / f"qa_{split}.jsonl", QA) == 4
    assert read_results(tmp_path / "test.json").meta["prompt"] == "retrieve"  # the run's prompt
    shown = call(
        "run/evaluate.py",
        "--task",
        "qa",
        "--gold",
        SAMPLES / "qa_dev.jsonl",
        "--pred",
        tmp_path / "dev.json",
        "--embedder",
        tiny_embedder,
        "--bertscore_model",
        tiny_embedder,
        capsys=capsys,
    )
    assert_every_metric(shown)


@pytest.mark.skipif(not QMSUM.is_file(), reason="the real QMSum file is not present")
def test_real_qmsum_answered_at_2048_with_the_question_whole(tiny_llama, tiny_embedder, tmp_path, capsys):
    data = tmp_path / "qmsum_qa.json"
    call("run/convert.py", "--from", "qmsum", "--to", "qa", "--in", QMSUM, "--out", data, capsys=capsys)
    items = load_items(data, QA, require_output=True)
    shown = call(
        "run/test.py",
        "--model",
        tiny_llama,
        "--task",
        "qa",
        "--input",
        data,
        "--output",
        tmp_path / "pred.json",
        "--max_length",
        "2048",
        "--max_new_tokens",
        "8",
        "--batch_size",
        "16",
        "--no_progress",
        capsys=capsys,
    )
    assert f"{len(items)} qa predictions" in shown
    assert f"length budget: {len(items)} of {len(items)} prompts cut (context chunks)" in shown
    sidecar = read_results(tmp_path / "pred.json")
    assert set(sidecar.outputs) == {it.id for it in items}
    backbone = get_backbone(str(tiny_llama))
    tokenizer = load_tokenizer(str(tiny_llama), backbone)
    for item in items[::10]:  # the prompts prediction fitted: the question whole, the context cut
        fitted = fit_prompt(QA, item, tokenizer, backbone, QA.prompt_spec("baseline"), 2048, reserve=8)
        assert fitted.fits and f"###질문:\n{item.question}" in fitted.text and "…" in fitted.text
    shown = call(
        "run/evaluate.py",
        "--task",
        "qa",
        "--gold",
        data,
        "--pred",
        tmp_path / "pred.json",
        "--embedder",
        tiny_embedder,
        "--bertscore_model",
        tiny_embedder,
        capsys=capsys,
    )
    assert_every_metric(shown)


@pytest.mark.skipif(not QMSUM.is_file(), reason="the real QMSum file is not present")
def test_retrieve_keeps_more_gold_evidence_than_head_tail(tiny_llama, capsys):
    bench = load_script("benchmarks/bench_qa_retrieve.py")
    queries = bench.queries_with_spans(QMSUM)[:60]
    backbone = get_backbone(str(tiny_llama))
    tokenizer = load_tokenizer(str(tiny_llama), backbone)
    result = bench.measure(queries, tokenizer, backbone, 2048, 256)
    print({s: round(r["mean"], 3) for s, r in result.items()})
    assert result["retrieve"]["mean"] > 2 * result["head_tail"]["mean"]
    assert result["retrieve"]["half"] >= result["head_tail"]["half"]


def test_compare_generates_with_two_models_first(tiny_models, tmp_path, capsys):
    shown = call(
        "run/compare.py",
        "--task",
        "qa",
        "--models",
        tiny_models["llama"],
        tiny_models["qwen2"],
        "--data",
        SAMPLES / "qa_dev.jsonl",
        "--metric",
        "f1",
        "--max_length",
        "512",
        "--max_new_tokens",
        "4",
        "--resamples",
        "500",
        "--out",
        tmp_path / "report",
        capsys=capsys,
    )
    assert "llama vs qwen2:" in shown and (tmp_path / "report" / "report.html").is_file()
    for name in ("llama", "qwen2"):
        assert (
            check_submission(
                tmp_path / "report" / "predictions" / f"{name}.json", SAMPLES / "qa_dev.jsonl", QA
            )
            == 4
        )
