"""Axolotl configs read as they are: every key mapped to ours or listed as ignored, the converter,
and run/train.py training a tiny model from an Axolotl config. The configs below are written
from the key names of Axolotl's config reference (docs/config-reference.qmd)."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import SAMPLES, load_script

from malpyeong.cli import run_cli
from malpyeong.errors import UserError
from malpyeong.training import sft_parser
from malpyeong.training.axolotl import infer_task, is_axolotl, recipe_argv, to_recipe


def axolotl_config(model: str, **changes) -> dict:
    """A LoRA config as Axolotl's examples write one (empty keys included)."""
    config = {
        "base_model": model,
        "model_type": "AutoModelForCausalLM",
        "tokenizer_type": "AutoTokenizer",
        "strict": False,
        "load_in_8bit": False,
        "load_in_4bit": False,
        "adapter": "lora",
        "lora_model_dir": None,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "lora_target_linear": True,
        "lora_fan_in_fan_out": None,
        "datasets": [{"path": str(SAMPLES / "cci_train.json"), "type": "alpaca"}],
        "dataset_prepared_path": "last_run_prepared",
        "val_set_size": 0.0,
        "test_datasets": [{"path": str(SAMPLES / "cci_dev.json"), "type": "alpaca"}],
        "output_dir": "./outputs/lora-out",
        "sequence_len": 1024,
        "sample_packing": False,
        "pad_to_sequence_len": True,
        "wandb_project": None,
        "wandb_entity": None,
        "gradient_accumulation_steps": 1,
        "micro_batch_size": 4,
        "eval_batch_size": 8,
        "num_epochs": 1,
        "optimizer": "adamw_bnb_8bit",
        "lr_scheduler": "cosine",
        "learning_rate": 0.0002,
        "warmup_steps": 1,
        "weight_decay": 0.0,
        "train_on_inputs": False,
        "group_by_length": False,
        "bf16": "auto",
        "fp16": False,
        "tf32": False,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "flash_attention": False,
        "seed": 42,
        "saves_per_epoch": 1,
        "special_tokens": {"pad_token": "<|end_of_text|>"},
    }
    config.update(changes)
    return config


def test_every_key_is_mapped_or_listed():
    config = axolotl_config("org/model", some_future_key=3)
    m = to_recipe(config)
    assert m.recipe == {
        "model": "org/model",
        "task": "cci",
        "method": "lora",
        "train_file": str(SAMPLES / "cci_train.json"),
        "dev_file": str(SAMPLES / "cci_dev.json"),
        "output_dir": "./outputs/lora-out",
        "max_length": 1024,
        "learning_rate": 0.0002,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 1,
        "optim": "adamw_bnb_8bit",
        "lora_target_modules": ["all-linear"],
        "fp16": False,
        "activation_checkpointing": False,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "gradient_accumulation_steps": 1,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "num_train_epochs": 1,
        "weight_decay": 0.0,
        "tf32": False,
        "logging_steps": 1,
        "seed": 42,
        "load_best_model_at_end": False,
        "early_stopping_patience": 0,
    }
    mapped = {k for k, _ in m.mapped}
    ignored = dict(m.ignored)
    assert m.unset == ["lora_model_dir", "lora_fan_in_fan_out", "wandb_project", "wandb_entity"]
    # nothing dropped silently: every key of the config is mapped, ignored or unset
    assert set(config) == (mapped | set(ignored) | set(m.unset)) - {"(the training data)", "datasets[0].type"}
    assert ignored["some_future_key"] == "not an Axolotl key we know"
    assert ignored["special_tokens"].startswith("the backbone registry sets the pad token")
    assert "give save_steps" in ignored["saves_per_epoch"]
    assert ignored["datasets[0].type"].startswith("'alpaca': the task builds the prompts")
    assert ignored["val_set_size"] == "0: no split, as ours"
    assert ignored["bf16"].startswith("auto: our default")
    assert dict(m.mapped)["(the training data)"] == "task: cci"
    report = m.report()
    assert report[0].startswith("mapped 26 Axolotl key(s): adapter -> method: lora")
    assert report[1].startswith("ignored 16 key(s): ") and "some_future_key" in report[1]
    assert report[2] == (
        "4 key(s) without a value: lora_model_dir, lora_fan_in_fan_out, wandb_project, wandb_entity"
    )
    assert report[3] == (
        "Axolotl's defaults for keys not given: load_best_model_at_end False, early_stopping_patience 0"
    )


def test_keys_left_out_take_axolotls_defaults():
    minimal = {
        "base_model": "org/model",
        "learning_rate": 1e-5,
        "datasets": [{"path": str(SAMPLES / "dcs_train.json"), "type": "completion"}],
    }
    m = to_recipe(minimal)
    assert m.recipe == {
        "model": "org/model",
        "task": "dcs",
        "method": "full",
        "train_file": str(SAMPLES / "dcs_train.json"),
        "learning_rate": 1e-5,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "max_length": 512,
        "load_best_model_at_end": False,
        "early_stopping_patience": 0,
    }
    assert [k for k, _ in m.defaults] == [
        "num_epochs",
        "micro_batch_size",
        "gradient_accumulation_steps",
        "sequence_len",
        "load_best_model_at_end",
        "early_stopping_patience",
    ]
    with pytest.raises(UserError, match="no learning_rate"):
        to_recipe({"base_model": "org/model"})


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"adapter": "qlora", "load_in_4bit": True}, {"method": "qlora"}),
        ({"adapter": "lora", "load_in_4bit": True}, {"method": "qlora"}),
        ({"adapter": None}, {"method": "full"}),
        ({"bf16": True}, {"bf16": True, "dtype": "bf16"}),
        ({"bf16": "full", "fp16": None}, {"bf16": True, "dtype": "bf16"}),
        ({"fp16": True, "bf16": False}, {"fp16": True, "bf16": False, "dtype": "fp16"}),
        ({"warmup_steps": None, "warmup_ratio": 0.1}, {"warmup_steps": 0.1}),
        ({"learning_rate": "2e-5"}, {"learning_rate": 2e-5}),
        (
            {"lora_target_linear": None, "lora_target_modules": ["q_proj", "v_proj"]},
            {"lora_target_modules": ["q_proj", "v_proj"]},
        ),
        ({"flash_attention": True}, {"attn_implementation": "flash_attention_2"}),
        ({"sample_packing": True}, {"batching": "packing"}),
        ({"group_by_length": True}, {"batching": "length"}),
        (
            {"eval_steps": 50},
            {"eval_strategy": "steps", "eval_steps": 50, "save_strategy": "steps", "save_steps": 50},
        ),
        (
            {"eval_steps": 50, "save_steps": 100},
            {"eval_strategy": "steps", "eval_steps": 50, "save_strategy": "steps", "save_steps": 100},
        ),
        (
            {"max_steps": 7, "max_grad_norm": 0.3, "early_stopping_patience": 2},
            {"max_steps": 7, "max_grad_norm": 0.3, "early_stopping_patience": 2},
        ),
        ({"gradient_checkpointing": True}, {"activation_checkpointing": True}),
    ],
)
def test_keys_that_need_more_than_a_rename(changes, expected):
    recipe = to_recipe(axolotl_config("org/model", **changes)).recipe
    assert {k: recipe.get(k) for k in expected} == expected


def test_understood_but_not_offered_is_listed():
    ignored = dict(
        to_recipe(
            axolotl_config(
                "org/model",
                load_in_8bit=True,
                optimizer="came_pytorch",
                lr_scheduler="one_cycle",
                gradient_checkpointing="offload",
                val_set_size=0.05,
                deepspeed="zero3.json",
                chat_template="chatml",
                train_on_inputs=True,
            )
        ).ignored
    )
    assert ignored["load_in_8bit"] == ("8-bit bases are not offered: the base loads in bf16/fp32")
    assert ignored["optimizer"].startswith("'came_pytorch' is not a transformers optimizer")
    assert ignored["lr_scheduler"].startswith("'one_cycle' is an Axolotl schedule")
    assert ignored["gradient_checkpointing"].startswith("'offload' (offloading) is not offered")
    assert ignored["val_set_size"].startswith("a split of the training file is not offered")
    assert "deepspeed_zero3.yaml" in ignored["deepspeed"]
    assert ignored["chat_template"].startswith("'chatml': the model's tokenizer")
    assert ignored["train_on_inputs"].startswith("true is not offered")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"adapter": "ia3"}, "field 'adapter': adapter 'ia3' is not offered"),
        ({"adapter": None, "load_in_4bit": True}, "load_in_4bit without an adapter"),
        ({"warmup_ratio": 0.1}, "warmup_steps and warmup_ratio exclude each other"),
        ({"rl": "dpo"}, "rl: dpo is preference training"),
        ({"learning_rate": "fast"}, "not a number: 'fast'"),
        (
            {"datasets": [{"path": "mhenrichsen/alpaca_2k_test", "type": "alpaca"}]},
            "'mhenrichsen/alpaca_2k_test' is not a local file",
        ),
    ],
)
def test_mappings_that_would_change_the_meaning_are_errors(changes, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        to_recipe(axolotl_config("org/model", **changes), source="cfg.yaml")
    assert err.value.file == "cfg.yaml"


def test_the_task_is_told_from_the_training_file(tmp_path):
    assert infer_task(str(SAMPLES / "cci_train.json")) == "cci"
    assert infer_task(str(SAMPLES / "dcs_train.json")) == "dcs"
    other = tmp_path / "alpaca.json"
    other.write_text(json.dumps([{"instruction": "a", "output": "b"}]), encoding="utf-8")
    with pytest.raises(UserError, match="cannot tell the task of the training data: no task reads it"):
        infer_task(str(other))
    explicit = to_recipe(axolotl_config("org/model"), task="cci", train_file=str(other))
    assert explicit.recipe["task"] == "cci" and "train_file" not in explicit.recipe
    assert dict(explicit.ignored)["datasets"] == f"--train_file {other} given"


def test_recipe_argv_leaves_our_recipes_alone(tmp_path, capsys):
    ours = tmp_path / "ours.yaml"
    ours.write_text("model: org/model\ntask: cci\n", encoding="utf-8")
    with recipe_argv(["--config", str(ours), "--lora_r", "4"]) as argv:
        assert argv == ["--config", str(ours), "--lora_r", "4"]
    axo = tmp_path / "axolotl.yml"
    axo.write_text(yaml.safe_dump(axolotl_config("org/model")), encoding="utf-8")
    with recipe_argv(["--lora_r", "4", "--config", str(axo)]) as argv:
        assert argv[:3] == ["--lora_r", "4", "--config"] and argv[3] != str(axo)
        assert (
            yaml.safe_load(open(argv[3], encoding="utf-8")) == to_recipe(axolotl_config("org/model")).recipe
        )
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == f"{axo}: an Axolotl config, read as our recipe"
    assert shown[1].startswith("  mapped 26") and shown[2].startswith("  ignored 15")
    assert is_axolotl({"base_model": "x"}) and not is_axolotl({"model": "x", "base_model": "y"})


def test_convert_writes_a_recipe_the_parser_accepts(tmp_path):
    config = tmp_path / "qlora.yml"
    config.write_text(
        yaml.safe_dump(
            axolotl_config(
                "org/model",
                adapter="qlora",
                load_in_4bit=True,
                bf16=True,
                lora_r=64,
                lora_alpha=64,
                output_dir=str(tmp_path / "run"),
            )
        ),
        encoding="utf-8",
    )
    out = tmp_path / "recipe.yaml"
    convert = load_script("run/convert.py").main
    assert convert(["--from", "axolotl", "--to", "recipe", "--in", str(config), "--out", str(out)]) == 0
    recipe = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert list(recipe)[:5] == ["model", "task", "method", "train_file", "dev_file"]
    assert (recipe["method"], recipe["lora_r"], recipe["dtype"], recipe["bf16"]) == (
        "qlora",
        64,
        "bf16",
        True,
    )
    details = json.loads((tmp_path / "recipe.yaml.report.json").read_text(encoding="utf-8"))
    assert {
        "axolotl": "special_tokens",
        "why": "the backbone registry sets the pad token; no tokens are added",
    } in details["ignored"]
    script, model_args, trainer = sft_parser().parse(["--config", str(out)])
    assert (model_args.method, model_args.lora_r, trainer.optim.value) == ("qlora", 64, "adamw_bnb_8bit")
    again = run_cli(
        convert,
        ["--from", "axolotl", "--to", "recipe", "--in", str(out), "--out", str(tmp_path / "again.yaml")],
    )
    assert again == 2  # our own recipe is not an Axolotl config


def test_train_reads_an_axolotl_config_and_trains_a_tiny_model(tmp_path, tiny_llama, capsys):
    run = tmp_path / "run"
    config = tmp_path / "axolotl.yml"
    config.write_text(
        yaml.safe_dump(
            axolotl_config(
                str(tiny_llama), optimizer="adamw_torch", output_dir=str(run), unknown_plugin_key=1
            )
        ),
        encoding="utf-8",
    )
    train = load_script("run/train.py").main
    assert (
        train(
            [
                "--config",
                str(config),
                "--max_train_items",
                "8",
                "--report_to",
                "none",
                "--disable_tqdm",
                "true",
            ]
        )
        == 0
    )
    shown = capsys.readouterr().out
    assert f"{config}: an Axolotl config, read as our recipe" in shown
    assert "unknown_plugin_key (not an Axolotl key we know)" in shown
    assert f"run folder: {run}" in shown
    assert (run / "adapter" / "adapter_config.json").is_file()
    resolved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert (
        resolved["model"],
        resolved["method"],
        resolved["lora_r"],
        resolved["lora_alpha"],
        resolved["max_length"],
        resolved["per_device_train_batch_size"],
        resolved["task"],
        resolved["optim"],
        resolved["load_best_model_at_end"],
    ) == (str(tiny_llama), "lora", 8, 16, 1024, 4, "cci", "adamw_torch", False)
    dev = json.loads((run / "dev_metrics.json").read_text(encoding="utf-8"))
    assert dev["metric"] == "accuracy" and len(dev["history"]) == 1  # test_datasets is the dev set
