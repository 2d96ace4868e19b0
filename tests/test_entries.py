"""The published entries' recipes (말뿡치 CCI ensemble, CPM DCS), every value checked against the
entries' own figures; the registry's backbones added for them; the tiny EXAONE model end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SAMPLES, load_script

from malpyeong.models.backbones import REGISTRY, non_commercial, registry_table
from malpyeong.training import sft_parser

CONFIGS = ROOT / "resource" / "configs"
MALBBUNGCHI = CONFIGS / "cci" / "malbbungchi"
CPM = CONFIGS / "dcs" / "cpm" / "gemma-2-9b-it_qlora.yaml"

# The 말뿡치 README's table (issue 17): backbone, method, learning rate, batch, epochs.
ENTRY_TABLE = [
    ("MLP-KTLim/llama-3-Korean-Bllossom-8B", "full", 2e-5, 1, 15),
    ("x2bee/POLAR-14B-v0.2", "qlora", 2e-5, 1, 18),
    ("rtzr/ko-gemma-2-9b-it", "qlora", 2e-5, 2, 23),
    ("beomi/Solar-Ko-Recovery-11B", "qlora", 2e-5, 1, 11),
    ("yanolja/EEVE-Korean-Instruct-10.8B-v1.0", "qlora", 2e-5, 1, 14),
    ("Qwen/Qwen2-7B", "full", 2e-5, 1, 6),
    ("Qwen/Qwen2-7B-Instruct", "full", 2e-5, 1, 8),
    ("spow12/Qwen2-7B-ko-Instruct-orpo-ver_2.0_wo_chat", "qlora", 2e-5, 1, 5),
]

# The CPM entry (issue 17): recipe key -> value.
CPM_VALUES = {
    "model": "google/gemma-2-9b-it",
    "method": "qlora",
    "lora_r": 64,
    "lora_alpha": 64,
    "lora_dropout": 0.05,
    "lora_target_modules": ["all-linear"],
    "dtype": "bf16",
    "bf16": True,
    "seed": 42,
    "num_train_epochs": 5,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 20,
    "learning_rate": 2e-5,
    "optim": "adamw_bnb_8bit",
    "activation_checkpointing": True,
    "max_length": 8192,
}


def _parse(path: Path, tmp_path: Path):
    """The recipe through the real parser (a fresh one: a parser keeps a parsed recipe's values as
    its defaults), with the data paths made absolute so the test runs from any folder."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    local = dict(
        data,
        train_file=str(ROOT / data["train_file"]),
        dev_file=str(ROOT / data["dev_file"]),
        output_dir=str(tmp_path / "out"),
    )
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(local, allow_unicode=True), encoding="utf-8")
    parser = sft_parser()
    parser.check_recipe(str(copy))
    return data, parser.parse(["--config", str(copy)])


def test_malbbungchi_folder_holds_the_eight_members():
    names = sorted(p.name for p in MALBBUNGCHI.glob("*.yaml"))
    expected = sorted(f"{m.split('/')[-1]}_{method}.yaml" for m, method, *_ in ENTRY_TABLE)
    assert names == expected


@pytest.mark.parametrize("row", ENTRY_TABLE, ids=lambda r: r[0].split("/")[-1])
def test_malbbungchi_recipe_has_the_entrys_values(row, tmp_path):
    model, method, lr, batch, epochs = row
    path = MALBBUNGCHI / f"{model.split('/')[-1]}_{method}.yaml"
    text = path.read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert "Source:" in header[1] and "말뿡치" in header[1]
    assert any("github.com/seodaegal/Ko_Conversational_Context_Inference" in h for h in header)
    assert any("Our defaults" in h for h in header)
    assert f"python run/train.py --config {path.relative_to(ROOT)}" in text
    data, (script, model_args, config) = _parse(path, tmp_path)
    assert (
        data["model"],
        data["method"],
        data["learning_rate"],
        data["per_device_train_batch_size"],
        data["num_train_epochs"],
    ) == (model, method, lr, batch, epochs)
    assert (model_args.model, model_args.method) == (model, method)
    assert config.learning_rate == lr and config.per_device_train_batch_size == batch
    assert config.num_train_epochs == epochs and data["task"] == "cci"
    # 가 유형 forbids augmentation; early stopping off so the entry's epochs run
    assert script.shuffle_options is False and script.early_stopping_patience == 0
    assert ("lora_r" in data) == (method != "full")
    if non_commercial(REGISTRY[model]):
        assert any("non-commercial" in h for h in header)


def test_cpm_recipe_has_every_value_of_the_entry(tmp_path):
    text = CPM.read_text(encoding="utf-8")
    assert "Source:" in text.splitlines()[1] and "CPM" in text.splitlines()[1]
    assert "python run/train.py --config resource/configs/dcs/cpm/gemma-2-9b-it_qlora.yaml" in text
    data, (script, model_args, config) = _parse(CPM, tmp_path)
    assert {k: data[k] for k in CPM_VALUES} == CPM_VALUES
    assert data["task"] == "dcs"
    assert (
        model_args.model,
        model_args.method,
        model_args.lora_r,
        model_args.lora_alpha,
        model_args.lora_dropout,
        model_args.lora_target_modules,
        model_args.dtype,
    ) == ("google/gemma-2-9b-it", "qlora", 64, 64, 0.05, ["all-linear"], "bf16")
    assert config.optim.value == "adamw_bnb_8bit" and config.bf16 is True
    assert (
        config.seed,
        config.num_train_epochs,
        config.per_device_train_batch_size,
        config.gradient_accumulation_steps,
        config.weight_decay,
        config.warmup_steps,
        config.learning_rate,
        config.max_length,
        config.activation_checkpointing,
    ) == (42, 5, 4, 4, 0.05, 20, 2e-5, 8192, True)
    assert config.lr_scheduler_type.value == "cosine"


NEW_BACKBONES = {
    "spow12/Qwen2-7B-ko-Instruct-orpo-ver_2.0_wo_chat": ("qwen2", "chatml", "cc-by-nc-4.0", True),
    "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct": ("exaone", "exaone", "exaone-1.1-nc", True),
    "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct": ("exaone", "exaone", "exaone-1.1-nc", True),
    "kakaocorp/kanana-1.5-8b-instruct-2505": ("llama", "llama3", "apache-2.0", False),
    "K-intelligence/Midm-2.0-Base-Instruct": ("llama", "llama3", "mit", False),
}


def test_new_backbones_in_the_registry_and_list_models(capsys):
    for name, (family, fmt, licence, nc) in NEW_BACKBONES.items():
        b = REGISTRY[name]
        assert (b.family, b.chat_format, b.licence, non_commercial(b)) == (family, fmt, licence, nc)
        assert b.system_role and not b.trust_remote_code
    assert non_commercial(REGISTRY["cpm-ai/Ocelot-Ko-self-instruction-10.8B-v1.0"])
    assert not non_commercial(REGISTRY["rtzr/ko-gemma-2-9b-it"])
    assert load_script("run/train.py").main(["--list-models"]) == 0
    shown = capsys.readouterr().out
    assert shown == registry_table() + "\n"
    for name, (_, _, licence, _) in NEW_BACKBONES.items():
        row = next(line for line in shown.splitlines() if line.startswith(name + " "))
        assert row.rstrip().endswith(licence)
    exaone = next(line for line in shown.splitlines() if line.startswith("LGAI-EXAONE/EXAONE-3.5-2.4B"))
    assert "no (card: yes;" in exaone


def test_exaone_chat_format_as_the_model_renders_it(tmp_path):
    from malpyeong.models.backbones import get_backbone, load_tokenizer, render_chat
    from malpyeong.models.tiny import build_tiny_model

    path = build_tiny_model("exaone", tmp_path / "exaone")
    backbone = get_backbone(str(path))
    assert backbone.family == "exaone" and backbone.chat_format == "exaone"
    tok = load_tokenizer(str(path), backbone)
    user = [{"role": "user", "content": "안녕"}]
    assert render_chat(tok, user, backbone) == "[|system|][|endofturn|]\n[|user|]안녕\n[|assistant|]"
    with_system = [{"role": "system", "content": "S"}, *user, {"role": "assistant", "content": "A"}]
    assert (
        render_chat(tok, with_system, backbone, add_generation_prompt=False)
        == "[|system|]S[|endofturn|]\n[|user|]안녕\n[|assistant|]A[|endofturn|]\n"
    )


def test_tiny_exaone_trains_and_predicts(tmp_path):
    """The EXAONE family through training (LoRA) and prediction, on the CCI samples."""
    from malpyeong.models.tiny import build_tiny_model

    path = build_tiny_model("exaone", tmp_path / "exaone")
    out = tmp_path / "run"
    train = load_script("run/train.py")
    assert (
        train.main(
            [
                "--model",
                str(path),
                "--task",
                "cci",
                "--method",
                "lora",
                "--train_file",
                str(SAMPLES / "cci_train.json"),
                "--dev_file",
                str(SAMPLES / "cci_dev.json"),
                "--output_dir",
                str(out),
                "--max_train_items",
                "8",
                "--num_train_epochs",
                "1",
                "--per_device_train_batch_size",
                "4",
                "--gradient_accumulation_steps",
                "1",
                "--report_to",
                "none",
                "--disable_tqdm",
                "true",
            ]
        )
        == 0
    )
    assert (out / "adapter" / "adapter_config.json").is_file()
    pred = tmp_path / "dev.json"
    assert (
        load_script("run/test.py").main(
            [
                "--model",
                str(out),
                "--task",
                "cci",
                "--input",
                str(SAMPLES / "cci_dev.json"),
                "--output",
                str(pred),
                "--no_progress",
            ]
        )
        == 0
    )
    rows = yaml.safe_load(pred.read_text(encoding="utf-8"))
    assert len(rows) == 18 and {r["output"] for r in rows} <= {"inference_1", "inference_2", "inference_3"}
