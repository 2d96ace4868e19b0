"""SFT training: rows built by the task, recipes, run folder, CLI errors, and CPU learning tests.

The learning tests train a tiny random-weight Llama on a synthetic CCI-format set whose answer
follows a rule visible in the text: the target utterance talks about one thing, the correct
option names that thing, and the two wrong options name things that never occur in any
dialogue. Before training the model is at chance (~33%); LoRA must reach >= 90% dev accuracy
by option scoring, QLoRA (4-bit base, on the CPU) >= 80%.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, load_script

from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.models.backbones import get_backbone, load_model, load_tokenizer
from malpyeong.models.budget import fit_prompt
from malpyeong.tasks import get_task
from malpyeong.tasks.cci_synthetic import synthetic_cci
from malpyeong.training import (
    assistant_affixes,
    augment_options,
    build_sft_examples,
    load_training_model,
    prepare_output_dir,
    sft_parser,
    train_sft,
)

# ------------------------------------------------------------------------------ synthetic data


def make_synthetic_cci(n: int, seed: int, prefix: str) -> list[dict]:
    """Official-layout CCI records: the correct option names the target utterance's topic (the
    library's synthetic generator, as run/synthetic.py and the demo use it)."""
    return synthetic_cci(n, seed, prefix)


def build_synthetic_model(out: Path, records: list[dict], seed: int = 0) -> Path:
    """A tiny Llama whose tokenizer knows the synthetic words, with a usable output scale.

    A random model's LM head (init std 0.02, frozen under LoRA) bounds every logit near zero, so
    no adapter could make a confident prediction; scaling the head gives the logits room.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from malpyeong.models.tiny import SEED_TEXT, build_tiny_model

    task = get_task("cci")
    problems: list = []
    items = [task.parse_item(r, problems) for r in records[:60]]
    texts = SEED_TEXT.splitlines() + [m["content"] for it in items for m in task.messages(it)]
    path = build_tiny_model("llama", out, seed=seed, hidden_size=64, layers=2, texts=texts)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(16.0)
    model.save_pretrained(path, safe_serialization=True)
    return path


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("synthetic")
    train = make_synthetic_cci(4800, 1, "t")
    dev = make_synthetic_cci(90, 2, "d")
    return {
        "model": build_synthetic_model(root / "model", train),
        "train": write_json(root / "train.json", train),
        "dev": write_json(root / "dev.json", dev),
        "root": root,
    }


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("small")
    return {
        "train": write_json(root / "train.json", make_synthetic_cci(16, 3, "s")),
        "dev": write_json(root / "dev.json", make_synthetic_cci(6, 4, "v")),
    }


def dev_accuracy(model, tokenizer, path: Path, dev: Path, prompt: str = "baseline") -> float:
    from malpyeong.inference.scoring import score_choices

    task = get_task("cci")
    items = load_items(dev, task)
    probs = score_choices(
        model, tokenizer, get_backbone(str(path)), task, items, spec=task.prompt_spec(prompt), progress=False
    )
    return sum(int(p.argmax()) == it.label for p, it in zip(probs, items, strict=True)) / len(items)


def sft_argv(model: Path, train: Path, dev: Path | None, out: Path, *extra: str) -> list[str]:
    argv = [
        "--model",
        str(model),
        "--task",
        "cci",
        "--train_file",
        str(train),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--activation_checkpointing",
        "false",
        "--disable_tqdm",
        "true",
        "--logging_steps",
        "50",
        "--max_length",
        "512",
    ]
    if dev is not None:
        argv += ["--dev_file", str(dev)]
    return argv + list(extra)


# ------------------------------------------------------------------------------ rows


@pytest.mark.parametrize(
    "family,after",
    [("gemma2", "<end_of_turn>"), ("llama", "<|eot_id|>"), ("qwen2", "<|im_end|>"), ("mistral", "</s>")],
)
def test_assistant_affixes_end_the_turn_once(tiny_models, family, after):
    path = str(tiny_models[family])
    assert assistant_affixes(load_tokenizer(path), get_backbone(path)) == ("", after)


def _rows(tiny_models, family, records, tmp_path, **kwargs):
    path = str(tiny_models[family])
    tok, bb, task = load_tokenizer(path), get_backbone(path), get_task(kwargs.pop("task", "cci"))
    items = load_items(write_json(tmp_path / "data.json", records), task)
    rows, stats = build_sft_examples(
        task,
        items,
        tok,
        bb,
        task.prompt_spec(kwargs.pop("prompt", "baseline")),
        kwargs.pop("max_length", 1024),
        **kwargs,
    )
    return tok, bb, task, items, rows, stats


def test_gemma_rows_match_prediction_prompt_and_end_once(tiny_models, cci_record, tmp_path):
    tok, bb, task, items, rows, stats = _rows(
        tiny_models, "gemma2", [cci_record], tmp_path, prompt="highlight"
    )
    row = rows[0]
    n_prompt = row["labels"].count(-100)
    fitted = fit_prompt(task, items[0], tok, bb, task.prompt_spec("highlight"), 1024)
    assert row["input_ids"][:n_prompt] == fitted.input_ids  # exactly what prediction feeds
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
    text = tok.decode(row["input_ids"])
    assert row["input_ids"].count(tok.bos_token_id) == 1 and row["input_ids"][0] == tok.bos_token_id
    assert "<start_of_turn>system" not in text
    assert "You are a helpful" in text  # the system turn is folded into the user turn, not dropped
    completion = tok.decode(row["input_ids"][n_prompt:])
    assert completion == "A. 화자2는 맑은 날씨를 즐기고 싶어 한다.<end_of_turn>"
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert row["input_ids"][n_prompt:].count(eot) == 1 and tok.eos_token_id not in row["input_ids"]
    assert (stats.items, stats.examples, stats.prompts_cut, stats.over_budget) == (1, 1, 0, 0)


def test_llama_letter_style_and_dcs_summary(tiny_models, cci_record, dcs_record, tmp_path):
    tok, _, _, _, rows, _ = _rows(tiny_models, "llama", [cci_record], tmp_path, target_style="letter")
    n_prompt = rows[0]["labels"].count(-100)
    assert tok.decode(rows[0]["input_ids"][n_prompt:]) == "A<|eot_id|>"
    assert rows[0]["input_ids"].count(tok.bos_token_id) == 1
    tok, _, _, _, rows, _ = _rows(tiny_models, "qwen2", [dcs_record], tmp_path, task="dcs")
    n_prompt = rows[0]["labels"].count(-100)
    assert tok.decode(rows[0]["input_ids"][n_prompt:]) == dcs_record["output"] + "<|im_end|>"


def test_length_budget_cuts_prompts_and_drops_what_cannot_fit(tiny_models, cci_record, tmp_path):
    long = json.loads(json.dumps(cci_record))
    conv = long["input"]["conversation"]
    long["input"]["conversation"] = [dict(u, utterance_id=f"L{i}") for i, u in enumerate(conv * 8)]
    long["input"]["reference_id"] = [f"L{len(conv) * 8 - 1}"]
    _, _, _, _, rows, stats = _rows(tiny_models, "llama", [long], tmp_path, max_length=300)
    assert stats.prompts_cut == 1 and stats.over_budget == 0 and len(rows[0]["input_ids"]) <= 300
    _, _, _, _, rows, stats = _rows(tiny_models, "llama", [long], tmp_path, max_length=40)
    assert rows == [] and stats.over_budget == 1


def test_option_shuffle_moves_the_label_with_the_gold_text(tmp_path):
    task = get_task("cci")
    items = load_items(write_json(tmp_path / "d.json", make_synthetic_cci(20, 5, "x")), task)
    out = augment_options(task, items, copies=2, seed=7)
    assert len(out) == 60 and out == augment_options(task, items, copies=2, seed=7)
    for k, item in enumerate(items):
        gold = item.options[item.label]
        copies = out[3 * k : 3 * k + 3]
        assert copies[0] is item
        assert all(c.options[c.label] == gold for c in copies)
        assert len({c.options for c in copies}) == 3  # two distinct non-identity orders
    positions = [c.label for c in out]
    assert len(set(positions)) == 3
    assert len(augment_options(task, items[:1], copies=5)) == 6  # every non-identity order


# ------------------------------------------------------------------------------ recipes and errors


def test_recipe_keys_values_and_overrides(small_files, tiny_llama, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {tiny_llama}\ntrain_file: {small_files['train']}\nlora_r: 8\nlearning_rate: 1.0e-4\n",
        encoding="utf-8",
    )
    script, model_args, config = sft_parser().parse(["--config", str(recipe), "--lora_r", "32"])
    assert (model_args.lora_r, config.learning_rate, model_args.method) == (32, 1e-4, "lora")
    assert config.lr_scheduler_type == "cosine" and config.report_to == ["tensorboard"]

    recipe.write_text("model: m\nlora_rank: 8\nlearnig_rate: 1\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        sft_parser().parse(["--config", str(recipe)])
    line = err.value.line()
    assert "'lora_rank' (did you mean 'lora_r'?)" in line and "'learnig_rate'" in line
    assert "valid keys: model, method" in line and "\n" not in line

    base = ["--model", str(tiny_llama), "--train_file", str(small_files["train"])]
    cases = [
        (["--method", "qlra"], "method", "did you mean 'qlora'?"),
        (["--lora_rank", "8"], None, "unknown option(s) --lora_rank (did you mean --lora_r?)"),
        (["--learning_rate", "fast"], None, "invalid float value"),
        (["--task", "cc"], "task", "unknown task"),
        (["--prompt", "highlite"], "prompt", "unknown prompt variant"),
        (["--target_style", "text"], "target_style", "unknown target style 'text'"),
        (["--dev_file", "nope.json"], "dev_file", "file not found"),
        (["--eval_strategy", "steps", "--save_strategy", "epoch"], None, "invalid recipe value"),
    ]
    if not liger_usable():
        cases.append((["--use_liger_kernel", "true"], "use_liger_kernel", "use_liger_kernel needs"))
    for extra, field, words in cases:
        with pytest.raises(UserError) as err:
            sft_parser().parse(base + extra)
        assert words in err.value.line() and (field is None or err.value.field == field), extra
    with pytest.raises(UserError, match="no model"):
        sft_parser().parse(["--train_file", str(small_files["train"])])
    with pytest.raises(UserError, match="no training data"):
        sft_parser().parse(["--model", "m"])


def liger_usable() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("liger_kernel") is not None and torch.cuda.is_available()


def test_output_dir_rules(tmp_path):
    run = tmp_path / "run"
    assert prepare_output_dir(run, overwrite=False, resume=False).is_dir()
    (run / "malpyeong_run.json").write_text("{}")
    with pytest.raises(UserError, match="run folder exists"):
        prepare_output_dir(run, overwrite=False, resume=False)
    with pytest.raises(UserError, match="nothing to resume"):
        prepare_output_dir(run, overwrite=False, resume=True)
    prepare_output_dir(run, overwrite=True, resume=False)
    assert run.is_dir() and not any(run.iterdir())
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.txt").write_text("x")
    with pytest.raises(UserError, match="not a malpyeong run folder"):
        prepare_output_dir(other, overwrite=True, resume=False)
    assert (other / "thesis.txt").exists()


def _train_cli():
    module = load_script(ROOT / "run" / "train.py")
    return module


def test_cli_one_line_errors_and_list_models(small_files, tiny_llama, tmp_path, capsys):
    from malpyeong.cli import run_cli

    cli = _train_cli()
    assert run_cli(cli.main, ["--list-models"]) == 0
    assert "rtzr/ko-gemma-2-9b-it" in capsys.readouterr().out
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.yaml").write_text("x")
    bad = write_json(tmp_path / "bad.json", [{"id": "b1", "input": {}, "output": "inference_1"}])
    base = ["--model", str(tiny_llama), "--train_file", str(small_files["train"])]
    cases = [
        (base + ["--output_dir", str(taken)], "run folder exists"),
        (
            [
                "--model",
                "nobody/no-such-model",
                "--train_file",
                str(small_files["train"]),
                "--output_dir",
                str(tmp_path / "a"),
            ],
            "cannot load model 'nobody/no-such-model'",
        ),
        (
            ["--model", str(tiny_llama), "--train_file", str(bad), "--output_dir", str(tmp_path / "b")],
            "item b1",
        ),
        (base + ["--task", "summary"], "unknown task"),
        (base + ["--config", str(tmp_path / "none.yaml")], "recipe not found"),
    ]
    for argv, words in cases:
        assert run_cli(cli.main, argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert words in err[0] and err[0].startswith("error: "), err
        assert "Traceback" not in "\n".join(err)


# ------------------------------------------------------------------------------ trainer pieces


def test_completion_logits_loss_equals_trl_loss(small_files, tiny_llama, tmp_path):
    """Our completion-only logits give trl's loss to float precision, and its gradient."""
    import torch

    from malpyeong.training import sft_trainer_class

    _, model_args, config = sft_parser().parse(
        sft_argv(
            tiny_llama,
            small_files["train"],
            None,
            tmp_path / "o",
            "--eval_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        )
    )
    task, bb = get_task("cci"), get_backbone(str(tiny_llama))
    tok = load_tokenizer(str(tiny_llama), bb)
    rows, _ = build_sft_examples(
        task, load_items(small_files["train"], task), tok, bb, task.prompt_spec(None), 512
    )
    from datasets import Dataset

    model = load_training_model(model_args, config, bb)
    trainer = sft_trainer_class()(
        model=model, args=config, processing_class=tok, train_dataset=Dataset.from_list(rows)
    )
    batch = trainer.data_collator([{k: r[k] for k in ("input_ids", "labels")} for r in rows[:4]])
    ours = trainer.compute_loss(trainer.model, dict(batch))
    assert trainer._completion_logits is True
    ours.backward()
    grad = next(p.grad.clone() for n, p in model.named_parameters() if "lora_A" in n)
    model.zero_grad()
    trainer._completion_logits = False
    theirs = trainer.compute_loss(trainer.model, dict(batch))
    theirs.backward()
    grad_trl = next(p.grad.clone() for n, p in model.named_parameters() if "lora_A" in n)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(grad, grad_trl, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gemma2"])  # SDPA; Gemma-2's eager attention
def test_packed_batches_train_as_the_examples_alone(family, small_files, tiny_models, tmp_path):
    """--batching packing (trl's bfd packing, padding-free rows whose position ids restart per
    example): without flash attention, transformers builds a block-diagonal mask from the
    position ids, so no token sees another example. The logits of a packed row are each
    example's alone, and so are the loss (ours and trl's) and its gradient."""
    import dataclasses

    import torch
    from datasets import Dataset
    from trl import pack_dataset

    from malpyeong.training import batching_changes, sft_trainer_class

    path = tiny_models[family]
    argv = sft_argv(path, small_files["train"], None, tmp_path / "o", "--batching", "packing")
    argv += ["--eval_strategy", "no", "--load_best_model_at_end", "false"]
    script, model_args, config = sft_parser().parse(argv)
    task, bb = get_task("cci"), get_backbone(str(path))
    config = dataclasses.replace(config, **batching_changes(script.batching, bb.attn_implementation, config))
    assert config.packing and config.packing_strategy == "bfd"
    tok = load_tokenizer(str(path), bb)
    rows, _ = build_sft_examples(
        task, load_items(small_files["train"], task), tok, bb, task.prompt_spec(None), 512
    )
    rows = [{k: r[k] for k in ("input_ids", "labels")} for r in rows[:3]]
    model = load_training_model(model_args, config, bb)
    model.eval()  # no dropout: the same numbers twice
    trainer = sft_trainer_class()(
        model=model, args=config, processing_class=tok, train_dataset=Dataset.from_list(rows)
    )
    assert trainer.padding_free
    packed = pack_dataset(Dataset.from_list(rows), 4096, "bfd")
    assert len(packed) == 1  # the three examples in one row
    batch = trainer.data_collator([packed[0]])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    alone = [trainer.data_collator([r]) for r in sorted(rows, key=lambda r: -len(r["input_ids"]))]

    def logits(inputs):
        with torch.no_grad():
            keys = (
                "input_ids",
                "position_ids",
                "cu_seq_lens_q",
                "cu_seq_lens_k",
                "max_length_q",
                "max_length_k",
            )
            return model(**{k: inputs[k] for k in keys if k in inputs}, use_cache=False).logits[0]

    assert torch.allclose(logits(batch), torch.cat([logits(a) for a in alone]), atol=1e-5)
    for completion_logits in (True, False):  # ours, then trl's own loss
        trainer._completion_logits = completion_logits
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grad = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad()
        counts = [int((a["labels"][:, 1:] != -100).sum()) for a in alone]
        total = sum(
            c * trainer.compute_loss(model, dict(a)) for c, a in zip(counts, alone, strict=True)
        ) / sum(counts)
        total.backward()
        assert torch.allclose(loss, total, atol=1e-5), (completion_logits, float(loss), float(total))
        for g, h in zip(grad, (p.grad for p in model.parameters() if p.requires_grad), strict=True):
            assert torch.allclose(g, h, atol=1e-5)


def test_qlora_model_is_4bit_with_trainable_adapters_only(small_files, tiny_llama, tmp_path):
    import bitsandbytes as bnb

    _, model_args, config = sft_parser().parse(
        sft_argv(tiny_llama, small_files["train"], None, tmp_path / "o", "--method", "qlora")
    )
    model = load_training_model(model_args, config, get_backbone(str(tiny_llama)))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


# ------------------------------------------------------------------------------ runs


def test_run_folder_resume_and_merge(small_files, tiny_llama, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    argv = sft_argv(
        tiny_llama,
        small_files["train"],
        small_files["dev"],
        out,
        "--max_steps",
        "2",
        "--eval_strategy",
        "steps",
        "--save_strategy",
        "steps",
        "--eval_steps",
        "1",
        "--save_steps",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--report_to",
        "tensorboard",
        "--shuffle_options",
        "--merge",
    )
    train_sft(*sft_parser().parse(argv))
    info = json.loads((out / "malpyeong_run.json").read_text())
    assert info == {
        "model": str(tiny_llama),
        "method": "lora",
        "adapter_dir": "adapter",
        "merged_dir": ".",
        "task": "cci",
        "prompt": "baseline",
        "max_length": 512,
        "target_style": "letter_text",
        "stage": "sft",
    }
    # the merged model at the run folder's root, as mergekit writes one; our files beside it
    for name in (
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/tokenizer.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "malpyeong_run.json",
        "config.yaml",
        "data_stats.json",
        "dev_metrics.json",
    ):
        assert (out / name).is_file(), name
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    stats = json.loads((out / "data_stats.json").read_text())
    assert stats["train"]["items"] == 16 and stats["train"]["examples"] == 32
    dev = json.loads((out / "dev_metrics.json").read_text())
    assert dev["metric"] == "accuracy" and [h["step"] for h in dev["history"]] == [1, 2]
    assert dev["best"] == max(h["eval_accuracy"] for h in dev["history"])
    assert dev["best_report"]["n"] == 6 and "by_category" in dev["best_report"]
    script, model_args, config = sft_parser().parse(["--config", str(out / "config.yaml")])
    assert (model_args.model, config.learning_rate, script.shuffle_options) == (str(tiny_llama), 2e-4, True)

    # the merged model is the base with the adapter folded in
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    merged = AutoModelForCausalLM.from_pretrained(out)  # the run folder as it is
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    adapted = PeftModel.from_pretrained(base, out / "adapter")
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)

    # --resume continues from the last checkpoint
    resume = [a for a in argv if a != "--merge"]
    resume[resume.index("--max_steps") + 1] = "3"
    train_sft(*sft_parser().parse(resume + ["--resume"]))
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and [
        h["step"] for h in state["log_history"] if "eval_accuracy" in h
    ] == [1, 2, 3]


def test_early_stopping_ends_a_stalled_run(small_files, tiny_llama, tmp_path):
    out = tmp_path / "stall"
    train_sft(
        *sft_parser().parse(
            sft_argv(
                tiny_llama,
                small_files["train"],
                small_files["dev"],
                out,
                "--learning_rate",
                "0",
                "--max_steps",
                "20",
                "--eval_strategy",
                "steps",
                "--eval_steps",
                "1",
                "--save_strategy",
                "steps",
                "--save_steps",
                "1",
                "--early_stopping_patience",
                "2",
                "--per_device_train_batch_size",
                "2",
            )
        )
    )
    dev = json.loads((out / "dev_metrics.json").read_text())
    # best at step 1, then two evaluations without a gain
    assert [h["step"] for h in dev["history"]] == [1, 2, 3]
    assert dev["best_step"] == 1


def test_full_finetuning_and_dcs_rouge(tiny_models, tmp_path):
    sample = ROOT / "resource" / "data"
    out = tmp_path / "full"
    train_sft(
        *sft_parser().parse(
            sft_argv(
                tiny_models["gemma2"],
                sample / "cci_train.json",
                None,
                out,
                "--method",
                "full",
                "--max_steps",
                "1",
                "--max_train_items",
                "4",
            )
        )
    )
    info = json.loads((out / "malpyeong_run.json").read_text())
    assert (info["adapter_dir"], info["merged_dir"]) == (None, ".")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "gemma2"
    assert AutoTokenizer.from_pretrained(out).eos_token == "<eos>"
    out = tmp_path / "dcs"
    train_sft(
        *sft_parser().parse(
            [
                "--model",
                str(tiny_models["qwen2"]),
                "--task",
                "dcs",
                "--train_file",
                str(sample / "dcs_train.json"),
                "--dev_file",
                str(sample / "dcs_dev.json"),
                "--output_dir",
                str(out),
                "--max_steps",
                "1",
                "--max_train_items",
                "2",
                "--dev_eval_items",
                "1",
                "--eval_max_new_tokens",
                "4",
                "--report_to",
                "none",
                "--activation_checkpointing",
                "false",
                "--max_length",
                "1024",
                "--eval_strategy",
                "steps",
                "--eval_steps",
                "1",
                "--save_strategy",
                "steps",
                "--save_steps",
                "1",
            ]
        )
    )
    dev = json.loads((out / "dev_metrics.json").read_text())
    assert dev["metric"] == "rouge1" and 0.0 <= dev["best"] <= 1.0
    assert json.loads((out / "malpyeong_run.json").read_text())["target_style"] == "plain"


# ------------------------------------------------------------------------------ learning


LEARN = [
    "--target_style",
    "letter",
    "--learning_rate",
    "3e-3",
    "--max_steps",
    "300",
    "--warmup_steps",
    "0.05",
    "--per_device_train_batch_size",
    "16",
    "--gradient_accumulation_steps",
    "1",
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "50",
    "--save_strategy",
    "steps",
    "--save_steps",
    "50",
    "--early_stopping_patience",
    "2",
    "--lora_r",
    "16",
    "--lora_alpha",
    "32",
    "--lora_dropout",
    "0",
    "--lora_target_modules",
    # a random model's token embeddings carry nothing: adapt them too
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "embed_tokens",
]


def _learn(synthetic, method: str) -> tuple[float, float, Path]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = synthetic["model"]
    tok = load_tokenizer(str(path))
    before = dev_accuracy(AutoModelForCausalLM.from_pretrained(path), tok, path, synthetic["dev"])
    out = synthetic["root"] / f"run_{method}"
    train_sft(
        *sft_parser().parse(
            sft_argv(path, synthetic["train"], synthetic["dev"], out, "--method", method, *LEARN)
        )
    )
    base = load_model(str(path), method)  # as a loader serves it: 4-bit base for qlora
    tuned = PeftModel.from_pretrained(base, out / "adapter")
    after = dev_accuracy(tuned, tok, path, synthetic["dev"])
    return before, after, out


def test_lora_learns_the_rule_on_cpu(synthetic):
    before, after, out = _learn(synthetic, "lora")
    best = json.loads((out / "dev_metrics.json").read_text())["best"]
    assert 0.15 <= before <= 0.55, before
    assert best >= 0.9 and after >= 0.9, (best, after)


def test_qlora_learns_the_rule_on_cpu(synthetic):
    before, after, out = _learn(synthetic, "qlora")
    assert 0.15 <= before <= 0.55, before
    assert after >= 0.8, after
    assert json.loads((out / "dev_metrics.json").read_text())["best"] >= 0.8


# ------------------------------------------------------------------------------ extra SFT data


def _extra_files(tmp_path: Path) -> tuple[Path, Path]:
    magpie = tmp_path / "magpie.jsonl"
    magpie.write_text(
        "\n".join(
            json.dumps(r, ensure_ascii=False)
            for r in [
                {
                    "id": "magpie-000001",
                    "source": "magpie",
                    "messages": [
                        {"role": "user", "content": "주말에 할 만한 취미를 추천해 줘."},
                        {"role": "assistant", "content": "가까운 공원에서 산책을 해 보세요."},
                    ],
                },
                {
                    "id": "magpie-000002",
                    "source": "magpie",
                    "messages": [
                        {"role": "user", "content": "김치찌개 끓이는 법을 알려 줘."},
                        {"role": "assistant", "content": "김치와 돼지고기를 먼저 볶으세요."},
                    ],
                },
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    distill = tmp_path / "distill.jsonl"
    distill.write_text(
        json.dumps(
            {
                "id": "d-1",
                "source": "distill",
                "task": "cci",
                "prompt_messages": [
                    {"role": "system", "content": "당신은 도우미입니다."},
                    {"role": "user", "content": "위 대화의 원인으로 올바른 지문은?"},
                ],
                "completion": "비가 와서 그렇다.\n정답: B",
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    return magpie, distill


def test_extra_records_are_read_and_trained_on_the_answer_only(tiny_models, tmp_path):
    from malpyeong.training import build_record_examples, load_sft_records

    magpie, distill = _extra_files(tmp_path)
    records = load_sft_records(magpie) + load_sft_records(distill)
    assert [r[0] for r in records] == ["magpie-000001", "magpie-000002", "d-1"]
    assert records[2][2] == "비가 와서 그렇다.\n정답: B"
    path = str(tiny_models["gemma2"])
    tok, backbone = load_tokenizer(path), get_backbone(path)
    rows, stats = build_record_examples(records, tok, backbone, max_length=None)
    assert stats.examples == 3
    for row, (_, prompt, completion) in zip(rows, records, strict=True):
        answer = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
        assert tok.decode(answer) == completion + "<end_of_turn>"
        prompt_text = tok.decode(row["input_ids"][: len(row["input_ids"]) - len(answer)])
        assert prompt_text.endswith("<start_of_turn>model\n") and prompt[-1]["content"] in prompt_text
    # the system turn of the distillation record is folded for Gemma, one BOS
    assert rows[2]["input_ids"].count(tok.bos_token_id) == 1
    _, short = build_record_examples(records, tok, backbone, max_length=10)
    assert short.examples == 0 and short.over_budget == 3


def test_bad_extra_record_is_one_clear_error(tmp_path):
    from malpyeong.training import load_sft_records

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x1", "messages": [{"role": "user", "content": "질문"}]}\n', encoding="utf-8")
    with pytest.raises(UserError, match="x1.*final assistant answer"):
        load_sft_records(bad)


def test_sft_run_mixes_extra_records_by_ratio(small_files, tiny_llama, tmp_path):
    magpie, distill = _extra_files(tmp_path)
    out = tmp_path / "mixed"
    train_sft(
        *sft_parser().parse(
            sft_argv(
                tiny_llama,
                small_files["train"],
                None,
                out,
                "--max_steps",
                "1",
                "--extra_train_files",
                str(magpie),
                str(distill),
                "--extra_train_ratio",
                "0.125",
            )
        )
    )
    extra = json.loads((out / "data_stats.json").read_text())["extra"]
    # 16 gold items -> round(0.125 * 16) = 2 of the 3 extra records mixed in
    assert extra["examples"] == 3 and extra["mixed_in"] == 2
    with pytest.raises(UserError, match="extra_train_files"):
        sft_parser().parse(
            sft_argv(
                tiny_llama,
                small_files["train"],
                None,
                tmp_path / "x",
                "--extra_train_files",
                str(tmp_path / "missing.jsonl"),
            )
        )
