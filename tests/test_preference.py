"""DPO, SimPO and KTO beside ORPO: the recipe key that chooses, KTO's unpaired examples (from
CCI pairs and from DCS outputs scored against gold), and each objective raising the held-out
chosen-minus-rejected margin on a tiny model."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT, load_script
from test_orpo import _dcs
from test_training import build_synthetic_model, make_synthetic_cci, write_json

from malpyeong.data import load_items, write_submission
from malpyeong.errors import UserError
from malpyeong.tasks import get_task
from malpyeong.training import algorithm_of, preference_parser, train_orpo
from malpyeong.training.pairs import build_pairs, write_pairs
from malpyeong.training.unpaired import build_unpaired, read_unpaired, unpair, write_unpaired


def test_algorithm_chooses_the_trl_config_and_our_defaults(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("algorithm: kto\n", encoding="utf-8")
    assert algorithm_of(["--config", str(recipe)]) == "kto"
    assert algorithm_of(["--config", str(recipe), "--algorithm", "dpo"]) == "dpo"
    assert algorithm_of(["--algorithm=simpo"]) == "simpo"
    assert algorithm_of([]) == "orpo"
    with pytest.raises(UserError, match="unknown value 'dpp'") as err:
        algorithm_of(["--algorithm", "dpp"])
    assert "dpo" in err.value.hint
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(
        json.dumps(
            {"id": "x#B", "source_id": "x", "task": "cci", "record": {}, "chosen": "A", "rejected": "B"}
        )
        + "\n",
        encoding="utf-8",
    )
    base = ["--model", "m", "--pairs", str(pairs), "--output_dir", str(tmp_path / "o")]
    script, _, config = preference_parser("simpo").parse(base + ["--algorithm", "simpo"])
    assert (
        script.algorithm,
        type(config).__name__,
        config.loss_type,
        config.cpo_alpha,
        config.beta,
        config.simpo_gamma,
    ) == ("simpo", "CPOConfig", "simpo", 0.0, 2.0, 1.0)
    script, _, config = preference_parser("dpo").parse(base + ["--algorithm", "dpo"])
    assert (script.algorithm, type(config).__name__, config.beta) == ("dpo", "DPOConfig", 0.1)
    script, _, config = preference_parser("kto").parse(base + ["--algorithm", "kto"])
    assert (type(config).__name__, config.train_sampling_strategy) == ("KTOConfig", "sequential")
    with pytest.raises(UserError, match="unpaired examples are for kto"):
        preference_parser("dpo").parse(base + ["--algorithm", "dpo", "--unpaired", str(pairs)])


def test_unpaired_from_cci_pairs(cci_record, tmp_path):
    task = get_task("cci")
    items = load_items(write_json(tmp_path / "c.json", [cci_record]), task)
    rows = unpair(build_pairs(task, items))
    assert [(r["id"], r["completion"], r["label"], r["from"]) for r in rows] == [
        ("t-cci-1#gold", "A. 화자2는 맑은 날씨를 즐기고 싶어 한다.", True, "gold"),
        ("t-cci-1#B#rejected", "B. 화자2는 비 오는 날을 좋아한다.", False, "option:B"),
        ("t-cci-1#C#rejected", "C. 화자2는 우산을 사고 싶어 한다.", False, "option:C"),
    ]
    assert build_unpaired(task, items) == rows
    path = write_unpaired(rows, tmp_path / "u.jsonl")
    assert read_unpaired(path) == rows
    with pytest.raises(UserError, match="one kind"):
        read_unpaired(write_unpaired(rows[:1], tmp_path / "one.jsonl"))


def test_unpaired_from_dcs_outputs_scored_against_gold(tmp_path):
    task = get_task("dcs")
    records = [
        _dcs(1, ["요리"], "화자들은 요리와 취미에 대해 이야기했다."),
        _dcs(2, ["여행"], "화자들은 여행 계획을 이야기했다."),
    ]
    items = load_items(write_json(tmp_path / "d.json", records), task)
    results = tmp_path / "sft.json"
    write_submission(
        items,
        {
            "d1": "화자들은 요리와 취미에 대해 이야기했다.",  # as gold
            "d2": "날씨가 맑다.",
        },
        results,
    )
    rows = build_unpaired(task, items, results=results, threshold=0.5)
    got = [(r["id"], r["label"], r["from"], r["score"]) for r in rows]
    assert got[0] == ("d1#gold", True, "gold", None) and got[2] == ("d2#gold", True, "gold", None)
    assert got[1][:3] == ("d1#model", True, "results:sft") and got[1][3] == pytest.approx(1.0)
    assert got[3][:3] == ("d2#model", False, "results:sft") and got[3][3] < 0.5


def test_build_unpaired_cli(tmp_path, capsys):
    from malpyeong.cli import run_cli

    cli = load_script(ROOT / "orpo" / "build_unpaired.py")
    out = tmp_path / "u.jsonl"
    data = ROOT / "resource" / "data" / "cci_train.json"
    assert run_cli(cli.main, ["--task", "cci", "--data", str(data), "--out", str(out)]) == 0
    n = len(json.loads(data.read_text(encoding="utf-8")))
    rows = read_unpaired(out)
    assert (sum(r["label"] for r in rows), len(rows)) == (n, 3 * n)
    assert f"{n} desirable, {2 * n} undesirable" in capsys.readouterr().out
    assert run_cli(cli.main, ["--task", "cci", "--data", str(data), "--out", str(out)]) == 2
    assert "output exists" in capsys.readouterr().err


@pytest.fixture(scope="module")
def preference_data(tmp_path_factory) -> dict:
    """A tiny synthetic-vocabulary Llama, training pairs and held-out pairs (orpo/build_pairs.py's
    library call)."""
    root = tmp_path_factory.mktemp("preference")
    task = get_task("cci")
    train, dev = make_synthetic_cci(400, 11, "t"), make_synthetic_cci(24, 12, "d")
    model = build_synthetic_model(root / "model", train)
    pairs = write_pairs(
        build_pairs(task, load_items(write_json(root / "t.json", train), task)), root / "pairs.jsonl"
    )
    dev_pairs = write_pairs(
        build_pairs(task, load_items(write_json(root / "d.json", dev), task)), root / "dev_pairs.jsonl"
    )
    return {"root": root, "model": model, "pairs": pairs, "dev_pairs": dev_pairs}


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [
        ("dpo", ["--beta", "0.1"]),
        # the reference log-probs computed once before training instead of a reference forward
        pytest.param(
            "dpo",
            ["--beta", "0.1", "--precompute_ref_log_probs", "true"],
            marks=pytest.mark.slow,
            id="dpo-precomputed",
        ),
        # SimPO goes through CPO's trainer, whose row path ORPO's test already covers
        pytest.param("simpo", [], marks=pytest.mark.slow),
        ("kto", ["--beta", "0.1"]),
    ],
)
def test_objective_raises_the_heldout_margin(preference_data, algorithm, extra, capsys):
    """A few steps of each objective from a random model raise held-out
    log p(chosen) - log p(rejected); orpo/train.py prints the margins before and after."""
    from malpyeong.cli import run_cli

    cli = load_script(ROOT / "orpo" / "train.py")
    out = preference_data["root"] / f"{algorithm}{len(extra)}"
    assert (
        run_cli(
            cli.main,
            [
                "--algorithm",
                algorithm,
                "--model",
                str(preference_data["model"]),
                "--pairs",
                str(preference_data["pairs"]),
                "--dev_pairs",
                str(preference_data["dev_pairs"]),
                "--output_dir",
                str(out),
                "--report_to",
                "none",
                "--activation_checkpointing",
                "false",
                "--disable_tqdm",
                "true",
                "--learning_rate",
                "3e-3",
                "--max_steps",
                "10",
                "--per_device_train_batch_size",
                "8",
                "--gradient_accumulation_steps",
                "1",
                "--warmup_steps",
                "0",
                "--eval_strategy",
                "no",
                "--save_strategy",
                "no",
                "--load_best_model_at_end",
                "false",
                "--lora_dropout",
                "0",
                "--max_length",
                "512",
                "--lora_target_modules",
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
                "embed_tokens",
                *extra,
            ],
        )
        == 0
    )
    printed = capsys.readouterr().out
    margin = json.loads((out / "dev_metrics.json").read_text())["heldout_margin"]
    print(f"{algorithm}: held-out margin {margin['before']:.3f} -> {margin['after']:.3f}")
    assert f"{margin['before']:.3f} before, {margin['after']:.3f} after" in printed
    assert margin["pairs"] == 48 and margin["after"] > margin["before"] + 0.5, margin
    info = json.loads((out / "malpyeong_run.json").read_text())
    assert (info["stage"], info["task"]) == (algorithm, "cci")
    assert not (out / "adapter" / "ref").exists()  # trl's frozen reference copy is not kept
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert saved["algorithm"] == algorithm


def test_full_dpo_stage_from_an_earlier_lora_run(preference_data):
    """init_from in a preference run: DPO with full weights from an SFT LoRA run merged into
    the base (the reference is reloaded from that merge); the run file names the SFT run."""
    from malpyeong.training import sft_parser, train_sft

    root, model = preference_data["root"], str(preference_data["model"])
    train = write_json(root / "sft.json", make_synthetic_cci(16, 5, "s"))
    common = [
        "--model",
        model,
        "--report_to",
        "none",
        "--activation_checkpointing",
        "false",
        "--disable_tqdm",
        "true",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--max_length",
        "512",
    ]
    sft = root / "sft_lora"
    train_sft(*sft_parser().parse(common + ["--train_file", str(train), "--output_dir", str(sft)]))
    out = root / "dpo_full"
    train_orpo(
        *preference_parser("dpo").parse(
            common
            + [
                "--algorithm",
                "dpo",
                "--method",
                "full",
                "--init_from",
                str(sft),
                "--pairs",
                str(preference_data["pairs"]),
                "--max_train_items",
                "8",
                "--dev_pairs",
                str(preference_data["dev_pairs"]),
                "--output_dir",
                str(out),
                "--eval_strategy",
                "no",
                "--save_strategy",
                "no",
                "--load_best_model_at_end",
                "false",
            ]
        )
    )
    info = json.loads((out / "malpyeong_run.json").read_text())
    assert (info["stage"], info["method"], info["init_from"], info["model"]) == (
        "dpo",
        "full",
        str(sft),
        model,
    )
    assert [s["run"] for s in info["stages"]] == [str(sft)]
    assert (out / "config.json").is_file() and not (out / "init_model").exists()
