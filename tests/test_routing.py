"""Per-category experts: training on one category (--category), every category in turn
(--experts), and prediction routed to each item's expert (run/test.py --route) with a fallback,
checked with experts that answer differently by construction."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import load_script
from test_training import make_synthetic_cci, write_json
from test_trip import LIMIT, Trip

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.inference.results import read_results, sidecar_path
from malpyeong.inference.routing import FALLBACK, route_dir, select_items
from malpyeong.inference.scoring import letter_token_ids
from malpyeong.models.backbones import get_backbone, load_tokenizer
from malpyeong.models.budget import fit_prompt
from malpyeong.models.runfolder import EXPERTS_FILE, run_info, write_run
from malpyeong.tasks import get_task
from malpyeong.training import sft_parser


def always(base: Path, out: Path, letter: str, items: list) -> Path:
    """A copy of ``base`` that answers ``letter`` to every CCI prompt, by construction.

    With every attention and MLP output projection zeroed, the last hidden state is the
    normalised embedding of the prompt's last token, the same for every prompt (the generation
    prompt); the LM head's row of ``letter`` is set to that vector, the other letters' to zero.
    """
    import torch
    from transformers import AutoModelForCausalLM

    task = get_task("cci")
    tok = load_tokenizer(str(base))
    backbone = get_backbone(str(base))
    fitted = [fit_prompt(task, it, tok, backbone, task.prompt_spec("baseline")) for it in items]
    last = {f.input_ids[-1] for f in fitted}
    assert len(last) == 1  # every prompt ends with the same generation prompt
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        h = model.model.norm(model.model.embed_tokens.weight[last.pop()])
        ids = letter_token_ids(tok, fitted[0].text, task.letters)
        head = model.get_output_embeddings().weight
        for letter_id in ids:
            head[letter_id] = 0.0
        head[ids[task.letters.index(letter)]] = 10.0 * h / h.norm()
    model.save_pretrained(out / "model", safe_serialization=True)
    tok.save_pretrained(out / "model")
    write_run(
        out,
        run_info(
            str(base),
            "full",
            adapter_dir=None,
            merged_dir="model",
            task="cci",
            prompt="baseline",
            max_length=None,
            target_style=None,
            stage="sft",
        ),
    )
    return out


@pytest.fixture(scope="module")
def experts(tiny_llama, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("experts")
    records = make_synthetic_cci(30, 7, "r")
    data = write_json(root / "test.json", records)
    items = load_items(data, get_task("cci"))
    folder = root / "experts"
    always(tiny_llama, folder / "원인", "A", items)
    always(tiny_llama, folder / "전제", "B", items)
    general = always(tiny_llama, root / "general", "C", items)
    return {"data": data, "items": items, "folder": folder, "general": general, "root": root}


def test_each_item_is_answered_by_its_category_expert(experts, tmp_path):
    """(Measured on the way: the longest trip of a routed prediction, see tests/test_trip.py.)"""
    out = tmp_path / "routed.json"
    main = load_script("run/test.py").main
    with Trip() as trip:
        code = main(
            [
                "--model",
                str(experts["folder"]),
                "--task",
                "cci",
                "--input",
                str(experts["data"]),
                "--output",
                str(out),
                "--route",
                "category",
                "--fallback",
                str(experts["general"]),
                "--no_progress",
                "--device",
                "cpu",
            ]
        )
    assert code == 0
    print(
        f"routed: longest trip ({len(trip.longest)} library files): {' > '.join(trip.longest)}",
        file=sys.stderr,
    )
    assert "inference/predict.py" in trip.longest and len(trip.longest) <= LIMIT, trip.longest
    expected = {"원인": ("inference_1", "원인"), "전제": ("inference_2", "전제")}
    res = read_results(out)
    rows = {r["id"]: r for r in map(json.loads, sidecar_path(out).read_text().splitlines()[1:])}
    cats = Counter(it.category for it in experts["items"])
    assert cats["원인"] and cats["전제"] and len(cats) > 2  # experts and the fallback all answer
    for item in experts["items"]:
        output, expert = expected.get(item.category, ("inference_3", FALLBACK))
        assert res.outputs[item.id] == output, item.category
        assert rows[item.id]["expert"] == expert
        assert res.probs[item.id][int(output[-1]) - 1] > 0.9
    head = res.meta
    assert head["route"] == "category" and set(head["experts"]) == {"원인", "전제", FALLBACK}
    assert [r["id"] for r in json.loads(out.read_text())] == [it.id for it in experts["items"]]
    assert not route_dir(out).exists()


def test_missing_expert_without_fallback_is_one_line(experts, tmp_path, capsys):
    main = load_script("run/test.py").main
    argv = [
        "--model",
        str(experts["folder"]),
        "--task",
        "cci",
        "--input",
        str(experts["data"]),
        "--output",
        str(tmp_path / "x.json"),
        "--route",
        "category",
        "--no_progress",
    ]
    assert run_cli(main, argv) == 2
    missing = sorted({it.category for it in experts["items"]} - {"원인", "전제"})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no expert for category {', '.join(missing)}" in err[0]
    assert run_cli(main, argv[:-3] + ["--route", "speaker", "--no_progress"]) == 2
    assert "cannot route by 'speaker'" in capsys.readouterr().err


def test_category_filter_and_its_errors(experts):
    task = get_task("cci")
    items = experts["items"]
    assert all(it.category == "원인" for it in select_items(task, items, "원인"))
    with pytest.raises(UserError, match="no item has category '없음'"):
        select_items(task, items, "없음")
    assert select_items(task, items, "없음", required=False) == items  # dev: evaluate on all
    with pytest.raises(UserError, match="--experts trains every category"):
        sft_parser().parse(
            [
                "--model",
                "m",
                "--train_file",
                str(experts["data"]),
                "--category",
                "원인",
                "--experts",
                "category",
            ]
        )


def test_experts_train_in_turn_and_route(experts, tiny_llama, tmp_path):
    train = experts["data"]
    out = tmp_path / "runs"
    argv = [
        "--model",
        str(tiny_llama),
        "--task",
        "cci",
        "--train_file",
        str(train),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--gradient_checkpointing",
        "false",
        "--disable_tqdm",
        "true",
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--experts",
        "category",
        "--objective",
        "classification",
    ]
    train_main = load_script("run/train.py").main
    assert train_main(argv) == 0
    counts = Counter(it.category for it in experts["items"])
    listed = json.loads((out / EXPERTS_FILE).read_text())
    assert listed["key"] == "category" and sorted(listed["experts"]) == sorted(counts)
    for cat, n in counts.items():
        stats = json.loads((out / cat / "data_stats.json").read_text())
        assert stats["train"]["items"] == n  # each expert saw its category only
        assert json.loads((out / cat / "malpyeong_run.json").read_text())["category"] == cat
    assert run_cli(train_main, argv) == 2  # the folder exists: --overwrite or --resume
    assert train_main(argv + ["--resume", "true"]) == 0  # every expert done: nothing to train
    pred = tmp_path / "routed.json"
    assert (
        load_script("run/test.py").main(
            [
                "--model",
                str(out),
                "--task",
                "cci",
                "--input",
                str(train),
                "--output",
                str(pred),
                "--route",
                "category",
                "--no_progress",
            ]
        )
        == 0
    )
    rows = sidecar_path(pred).read_text().splitlines()[1:]
    assert Counter(json.loads(r)["expert"] for r in rows) == counts


def test_routed_prediction_resumes_expert_by_expert(experts, tmp_path):
    from malpyeong.inference.predict import PredictionJob
    from malpyeong.inference.routing import plan_routes

    task = get_task("cci")
    items = experts["items"]
    routes = plan_routes(experts["folder"], task, items, "category", str(experts["general"]))
    loaded: list[str] = []

    class Job(PredictionJob):
        stop_at: int | None = None

        def load(self, source, settings):
            loaded.append(source.weights)
            if self.stop_at is not None and len(loaded) == self.stop_at:
                raise KeyboardInterrupt
            return super().load(source, settings)

    def run(out, stop_at=None):
        job = Job(
            task,
            str(experts["folder"]),
            output=out,
            route="category",
            fallback=str(experts["general"]),
            model_name="m",
            device="cpu",
            progress=False,
        )
        job.stop_at = stop_at
        return job.run(items)

    out = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        run(out, stop_at=2)
    assert sorted(p.name for p in route_dir(out).glob("*.json")) == [f"{routes[0].name}.json"]
    loaded.clear()
    run(out)
    assert len(loaded) == len(routes) - 1  # the finished expert was not run again
    again = tmp_path / "again.json"
    run(again)
    assert out.read_text() == again.read_text()
    assert sidecar_path(out).read_text() == sidecar_path(again).read_text()
