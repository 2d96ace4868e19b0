"""Every shipped recipe parses through the real parsers, and every registry backbone has recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from malpyeong.models.backbones import REGISTRY
from malpyeong.training import ALGORITHMS, RL_ALGORITHMS, grpo_parser, preference_parser, sft_parser
from malpyeong.training.rewards import parse_reward_weights

CONFIGS = ROOT / "resource" / "configs"
RECIPES = sorted(
    p for task in ("cci", "dcs", "chat", "rag", "culture") for p in (CONFIGS / task).glob("*.yaml")
)
# Backbones registered for character chat only (a base English state-space model): they have
# chat recipes, not competition ones.
CHAT_ONLY = {"state-spaces/mamba-2.8b-hf"}
# Backbones added for the 2025 tasks: they have rag and culture recipes, not 2024 ones.
ONLY_2025 = {m for m in REGISTRY if m.startswith(("Qwen/Qwen3-", "naver-hyperclovax/"))}


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, str]:
    """Files a recipe points at that a fresh checkout does not have yet (pairs, an SFT adapter)."""
    root = tmp_path_factory.mktemp("recipes")
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        json.dumps(
            {"id": "x#B", "source_id": "x", "task": "cci", "record": {}, "chosen": "A", "rejected": "B"}
        )
        + "\n",
        encoding="utf-8",
    )
    adapter = root / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    unpaired = root / "unpaired.jsonl"
    unpaired.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"x#{n}",
                    "source_id": "x",
                    "task": "cci",
                    "record": {},
                    "completion": n,
                    "label": n == "A",
                }
            )
            + "\n"
            for n in "AB"
        ),
        encoding="utf-8",
    )
    run = root / "run"  # an earlier run, for init_from
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    (run / "malpyeong_run.json").write_text(
        json.dumps({"model": "m", "adapter_dir": "adapter"}), encoding="utf-8"
    )
    from malpyeong.retrieval.index import Index

    index = Index.build(sorted((ROOT / "resource" / "data" / "norms").glob("*.md")), "sparse")
    return {
        "retrieve": str(index.save(root / "index")),
        "pairs": str(pairs),
        "sft_adapter": str(adapter),
        "output_dir": str(root / "out"),
        "unpaired": str(unpaired),
        "init_from": str(run),
    }


def test_recipes_exist_for_every_backbone_and_task():
    names = {p.relative_to(CONFIGS).as_posix() for p in RECIPES}
    for model in ("mistralai/Mistral-7B-Instruct-v0.3", *CHAT_ONLY):
        assert f"chat/{model.split('/')[-1]}_lora.yaml" in names, model
    for model in REGISTRY.keys() - CHAT_ONLY - ONLY_2025:
        short = model.split("/")[-1]
        for task in ("cci", "dcs"):
            for method in ("qlora", "lora", *ALGORITHMS):
                assert f"{task}/{short}_{method}.yaml" in names, (task, short, method)
    assert len(ONLY_2025) == 5
    for model in ONLY_2025 | {
        "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct",
        "kakaocorp/kanana-1.5-8b-instruct-2505",
    }:
        for task in ("rag", "culture"):
            for method in ("qlora", "lora"):
                assert f"{task}/{model.split('/')[-1]}_{method}.yaml" in names, (task, model, method)
    for name in (
        "cci/tiny_lora.yaml",
        "cci/tiny_qlora.yaml",
        "cci/tiny_full.yaml",
        "cci/tiny_orpo.yaml",
        "cci/tiny_synthetic_full.yaml",
        "dcs/tiny_lora.yaml",
        "chat/tiny_lora.yaml",
        "cci/tiny_dpo.yaml",
        "cci/tiny_simpo.yaml",
        "cci/tiny_kto.yaml",
        "cci/tiny_staged_full.yaml",
        "cci/gemma-2-9b-it_full.yaml",
        "cci/tiny_grpo.yaml",
        "cci/Qwen2.5-3B-Instruct_grpo.yaml",
        "rag/tiny_lora.yaml",
        "culture/tiny_lora.yaml",
        "rag/Qwen3-8B_grpo.yaml",
        "culture/Qwen3-8B_grpo.yaml",
    ):
        assert name in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_recipe_parses(path: Path, stand_ins, tmp_path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    task, stem = path.parent.name, path.stem
    method = stem.rsplit("_", 1)[1]
    rl = method in RL_ALGORITHMS  # GRPO on the task's rewards
    orpo = method in ALGORITHMS or rl  # orpo/train.py: a preference recipe (orpo, dpo, simpo, kto) or grpo
    if rl:
        parser = grpo_parser()
    else:
        parser = preference_parser(data.get("algorithm", "orpo")) if orpo else sft_parser()
    parser.check_recipe(str(path))  # every key is known
    text = path.read_text(encoding="utf-8")
    command = ("orpo/train.py" if orpo else "run/train.py") + f" --config {path.relative_to(ROOT)}"
    assert command in text, "the header shows the command that runs this recipe"
    if not stem.startswith("tiny"):
        assert data["model"] in REGISTRY and data["model"].split("/")[-1] + f"_{method}" == stem
        assert REGISTRY[data["model"]].trust_remote_code == bool(data.get("trust_remote_code"))
    assert data.get("task", task) == task and data["output_dir"].startswith(f"runs/{task}/")
    if not orpo:
        assert data["method"] == method
    else:
        assert data.get("algorithm", "orpo") == method
        if not stem.startswith("tiny"):
            assert data["method"] == "qlora"  # preference training continues the SFT adapter
    # parse for real, with paths a checkout may lack replaced by stand-ins
    local = {k: (stand_ins[k] if k in stand_ins else v) for k, v in data.items()}
    for key in ("train_file", "dev_file"):
        if key in local:
            local[key] = str(ROOT / local[key])
            if not Path(local[key]).exists():  # generated by the demo (run/synthetic.py)
                local[key] = str(ROOT / "resource" / "data" / f"{task}_{key.split('_')[0]}.json")
    if task in ("rag", "culture") and not (rl and stem.startswith("tiny")):  # 2025 recipes fit 24 GB
        from malpyeong.training.vram import grpo_recipe_report, recipe_report

        script, model_args, config = parser.parse(
            ["--config", str(write(tmp_path, path, local)), "--rules", "2025"]
        )
        report = grpo_recipe_report if rl else recipe_report
        verdict = report(script, model_args, config).splitlines()[-1]
        assert verdict.endswith("fits") or "not available" in verdict or stem.startswith("tiny"), verdict
    script, model_args, config = parser.parse(["--config", str(write(tmp_path, path, local))])
    assert model_args.model == data["model"] and model_args.method == data["method"]
    assert config.learning_rate == pytest.approx(float(data["learning_rate"]))
    assert config.per_device_train_batch_size == data["per_device_train_batch_size"]
    assert config.activation_checkpointing == data["activation_checkpointing"]
    if rl:
        assert script.max_length == data["max_length"] and config.beta == pytest.approx(data["beta"])
        assert config.num_generations == data["num_generations"]
        assert parse_reward_weights(config.reward_weights) == data["reward_weights"]
    elif orpo:
        assert config.beta == pytest.approx(data["beta"])
    else:
        assert config.max_length == data["max_length"]


def write(tmp_path: Path, path: Path, data: dict) -> Path:
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return copy


def test_accelerate_configs_load_in_accelerate():
    from accelerate.commands.config.config_args import ClusterConfig

    ddp = ClusterConfig.from_yaml_file(str(CONFIGS / "accelerate" / "ddp.yaml"))
    assert ddp.distributed_type.value == "MULTI_GPU" and ddp.mixed_precision == "bf16"
    zero3 = ClusterConfig.from_yaml_file(str(CONFIGS / "accelerate" / "deepspeed_zero3.yaml"))
    assert zero3.distributed_type.value == "DEEPSPEED"
    assert zero3.deepspeed_config["zero_stage"] == 3
    assert zero3.deepspeed_config["zero3_save_16bit_model"] is True
