"""The GPU and multi-GPU paths (issue 25), proved on the CPU where they can be: each test stands
in for the piece of hardware or library it cannot have here (a CUDA card that only emulates
bf16, a vLLM ``LLM``, a ZeRO-3 trainer config) and checks what our code asks of it.
The two-process run (gloo, findings 1 and 2) is near the end; docs/gpu_paths.md lists the findings."""

from __future__ import annotations

import pytest

# -- 8. bf16 on cards that only emulate it ------------------------------------------------------


class EmulatingCard:
    """A V100 / T4 as torch sees it: bf16 "supported" only when emulation counts."""

    def __init__(self) -> None:
        self.asked: list[dict] = []

    def is_available(self) -> bool:
        return True

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        self.asked.append({"including_emulation": including_emulation})
        return including_emulation


def test_bf16_is_asked_without_emulation(monkeypatch):
    import torch

    from malpyeong.models.backbones import quantization_config, resolve_dtype
    from malpyeong.training.entry import sft_parser

    sft_parser()  # trl and bitsandbytes imported before "CUDA" is there (they would probe it)
    card = EmulatingCard()
    monkeypatch.setattr(torch.cuda, "is_available", card.is_available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", card.is_bf16_supported)
    assert resolve_dtype("auto") == torch.float16  # the fp16 fallback runs on an emulating card
    assert sft_parser().parser.get_default("bf16") is False  # no emulated bf16 mixed precision
    assert quantization_config().bnb_4bit_compute_dtype == torch.float16
    assert card.asked == [{"including_emulation": False}] * 3


# -- 6. load errors keep the library's reason ---------------------------------------------------


@pytest.mark.parametrize(
    "raised, expected",
    [
        (  # QLoRA's device map under ZeRO-3 (transformers/integrations/accelerate.py)
            ValueError("DeepSpeed Zero-3 is not compatible with passing a `device_map`."),
            "field 'model': cannot load model 'org/model': ValueError: DeepSpeed Zero-3 is not "
            "compatible with passing a `device_map`.",
        ),
        (  # a missing model still says where we looked, with the library's words after it
            OSError("org/model is not a local folder and is not a valid model identifier"),
            "field 'model': cannot load model 'org/model': not in the local hub cache and "
            "HF_HUB_OFFLINE=1 (OSError: org/model is not a local folder and is not a valid model "
            "identifier) (give a local path, or download it first with `hf download`)",
        ),
    ],
)
def test_a_hub_load_failure_keeps_the_library_reason(monkeypatch, raised, expected):
    """A hub id whose from_pretrained raises: the one line carries the library's reason (a
    ValueError is no download problem and is not called one)."""
    from transformers import AutoModelForCausalLM

    from malpyeong.errors import UserError
    from malpyeong.models.backbones import get_backbone, load_model

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fail)
    with pytest.raises(UserError) as caught:
        load_model("org/model", "full", backbone=get_backbone("org/model"))
    assert caught.value.line() == expected


# -- 4. vLLM's dtype names and the backbone's trust_remote_code ---------------------------------


class RecordingLLM:
    """Stands in for ``vllm.LLM``: records what it is built with (vLLM's own ``ModelConfig``
    accepts dtype auto, half, float16, bfloat16, float, float32 only)."""

    built: list[dict] = []

    def __init__(self, **kwargs) -> None:
        if kwargs["dtype"] not in ("auto", "half", "float16", "bfloat16", "float", "float32"):
            raise ValueError(f"Unknown dtype: {kwargs['dtype']}")
        RecordingLLM.built.append(kwargs)


@pytest.fixture
def stand_in_vllm(monkeypatch):
    import sys
    import types

    module = types.ModuleType("vllm")
    module.LLM = RecordingLLM
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda *args: args
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    RecordingLLM.built = []
    return RecordingLLM.built


@pytest.mark.parametrize(
    "ours, theirs", [("bf16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32"), ("auto", "auto")]
)
def test_vllm_receives_its_own_dtype_names(stand_in_vllm, tiny_llama, ours, theirs):
    from malpyeong.inference.loading import load_engine, resolve_source

    engine = load_engine(resolve_source(tiny_llama), engine="vllm", dtype=ours)
    assert engine.name == "vllm"
    assert stand_in_vllm[0]["dtype"] == theirs
    assert stand_in_vllm[0]["trust_remote_code"] is False  # a Llama: no custom code


def test_vllm_gets_the_backbones_trust_remote_code(stand_in_vllm, tiny_llama):
    """GLM-4's entry needs its custom tokenizer code: vLLM is told so unless the user says no."""
    from malpyeong.inference.loading import ModelSource, load_engine

    glm = ModelSource("local", str(tiny_llama), "THUDM/glm-4-9b-chat", tokenizer=str(tiny_llama))
    load_engine(glm, engine="vllm", dtype="bf16")
    load_engine(glm, engine="vllm", dtype="bf16", trust_remote_code=False)
    assert [b["trust_remote_code"] for b in stand_in_vllm] == [True, False]


def test_the_servers_vllm_engine_gets_the_same_names(stand_in_vllm, tiny_llama):
    """The server's one vLLM engine for a base and its adapters (load_vllm_adapters) is built
    with vLLM's dtype name and the backbone's trust_remote_code too (before: ``bf16`` as given,
    which vLLM refuses, and ``bool(None)``)."""
    from malpyeong.inference.loading import ModelSource, load_vllm_adapters

    glm = ModelSource("local", str(tiny_llama), "THUDM/glm-4-9b-chat", tokenizer=str(tiny_llama))
    load_vllm_adapters({"glm": glm}, dtype="bf16")
    load_vllm_adapters({"glm": glm}, dtype="fp16", trust_remote_code=False)
    assert [(b["dtype"], b["trust_remote_code"]) for b in stand_in_vllm] == [
        ("bfloat16", True),
        ("float16", False),
    ]


# -- 9. the static cache only where it helps, and any failure of it falls back ------------------


def test_static_cache_only_on_the_cpu(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from malpyeong.inference.generation import static_cache_helps

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert model._can_compile_fullgraph  # what made every CUDA generation compile before
    assert static_cache_helps(model, torch.device("cpu"))
    assert not static_cache_helps(model, torch.device("cuda", 0))  # compiled decoding on a GPU: no


def test_a_compile_failure_of_the_static_cache_falls_back(tiny_llama, monkeypatch):
    """torch.compile errors are RuntimeErrors (torch._dynamo.exc.BackendCompilerFailed): the
    generation falls back to the default cache and gives the same text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from malpyeong.inference.generation import generate_texts

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    prompts = [tok("안녕하세요 반갑습니다")["input_ids"], tok("오늘 날씨")["input_ids"]]
    plain = generate_texts(model, tok, prompts, max_new_tokens=5, progress=False)
    asked = []
    real = model.generate

    def compile_fails(**kwargs):
        asked.append(kwargs.get("cache_implementation"))
        if kwargs.get("cache_implementation") == "static":
            raise torch._dynamo.exc.BackendCompilerFailed(lambda: None, RuntimeError("inductor failed"), None)
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", compile_fails)
    assert generate_texts(model, tok, prompts, max_new_tokens=5, progress=False) == plain
    assert asked == ["static", None]  # tried once, then the default cache for the rest


# -- 7. the ORPO/DPO margin report in chunks ----------------------------------------------------

MARGIN_PEAK_BOUND = 96 * 1024**2  # bytes above the resident set before the call


@pytest.mark.slow
def test_margin_report_memory_stays_bounded_with_a_256k_vocabulary(tiny_llama):
    """8 pairs of ~80 tokens on a tiny model with Gemma-2's 256k vocabulary: the report's peak
    stays under 96 MiB (measured 55 MiB; the replaced code peaked at 2,571 MiB on the same
    rows, benchmarks/pair_margins_memory.py), and it gives the replaced code's margins
    (checked on the ordinary tiny model, where the replaced code is cheap)."""
    from conftest import load_script
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from malpyeong.training.orpo import pair_margins

    bench = load_script("benchmarks/pair_margins_memory.py")
    ours = bench.measure("ours", tiny_llama)
    assert ours["tokens"] >= 50  # the tiny tokenizer (trained on our samples) packs them into ~54
    assert ours["peak"] < MARGIN_PEAK_BOUND, ours["peak"] / 1024**2
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    rows = bench.margin_rows()
    margins = pair_margins(model, tok, rows)
    assert margins == pytest.approx(bench.replaced(model, tok, rows), abs=1e-4)
    assert len(set(margins)) == 8  # eight different pairs, not one value


# -- 5. adapters that never train ---------------------------------------------------------------


def train_tiny(model, out, *extra, capsys=None) -> None:
    """One LoRA step of run/train.py on the CCI samples (no evaluation, no checkpoint)."""
    from conftest import ROOT, SAMPLES, load_script

    from malpyeong.cli import run_cli

    args = [
        "--config",
        ROOT / "resource" / "configs" / "cci" / "tiny_lora.yaml",
        "--model",
        model,
        "--train_file",
        SAMPLES / "cci_train.json",
        "--dev_file",
        SAMPLES / "cci_dev.json",
        "--output_dir",
        out,
        "--report_to",
        "none",
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "384",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--warmup_steps",
        "0",
        *extra,
    ]
    code = run_cli(load_script(ROOT / "run" / "train.py").main, [str(a) for a in args])
    assert code == 0, capsys.readouterr().err if capsys else code


def lora_b(out) -> dict:
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    return {
        k.split(".lora_B")[0].removeprefix("base_model.model."): v
        for k, v in weights.items()
        if "lora_B" in k
    }


@pytest.mark.slow
def test_mamba_lora_trains_every_adapter_and_a_dead_one_is_named(tiny_mamba, tmp_path, caplog, capsys):
    """all-linear on Mamba, one optimiser step: every LoRA B matrix moves from zero (before: the
    dt_proj and x_proj adapters were created too, and dt_proj's stayed at zero). Asked for
    dt_proj by name, the guard names both of its dead adapters after the first optimiser step."""
    import logging

    caplog.set_level(logging.WARNING, logger="malpyeong.training.trainers")
    train_tiny(tiny_mamba, tmp_path / "all", capsys=capsys)
    moved = lora_b(tmp_path / "all")
    assert {m.rsplit(".", 1)[-1] for m in moved} == {"in_proj"}
    assert all(float(b.abs().max()) > 0 for b in moved.values()), moved.keys()
    assert "received no gradient" not in caplog.text

    train_tiny(tiny_mamba, tmp_path / "dead", "--lora_target_modules", "in_proj", "dt_proj", capsys=capsys)
    dead = ["backbone.layers.0.mixer.dt_proj", "backbone.layers.1.mixer.dt_proj"]
    b = lora_b(tmp_path / "dead")
    assert [m for m in sorted(b) if float(b[m].abs().max()) == 0] == dead  # what the guard is for
    warned = [r.getMessage() for r in caplog.records if "received no gradient" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("2 adapter module(s) received no gradient")
    assert f"train: {', '.join(dead)}." in warned[0]


def test_the_adapter_guard_names_a_planted_dead_adapter_in_any_family(tiny_llama):
    """A Llama whose first q_proj is called without its adapter (as a forward that reads the
    weight directly would): after a backward pass only that module is named."""
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from malpyeong.training.models import lora_config
    from malpyeong.training.trainers import untrained_adapters

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), lora_config(4, 8, 0.0))
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    q.forward = lambda x, *a, **k: F.linear(x, q.base_layer.weight, q.base_layer.bias)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    assert untrained_adapters(model) == sorted(  # before any backward: nothing has a gradient
        n.split(".lora_A")[0].removeprefix("base_model.model.")
        for n, _ in model.named_parameters()
        if ".lora_A." in n
    )
    model(input_ids=ids, labels=ids).loss.backward()
    assert untrained_adapters(model) == ["model.layers.0.self_attn.q_proj"]


# -- 3. reentrant activation checkpointing under the current name, for every trainer ------------


def test_the_old_checkpointing_key_loads_with_one_note(tmp_path, caplog):
    import logging

    from conftest import SAMPLES

    from malpyeong.errors import UserError
    from malpyeong.training.entry import sft_parser
    from malpyeong.training.outputs import resolved_config

    data = f"train_file: {SAMPLES / 'cci_train.json'}\n"
    recipe = tmp_path / "old.yaml"
    recipe.write_text(f"model: m\n{data}gradient_checkpointing: false\n", encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="malpyeong.training.checkpointing")
    script, model_args, config = sft_parser().parse(["--config", str(recipe)])
    assert config.activation_checkpointing is False  # trl's default is True: the key was read
    flags = ["--model", "m", "--train_file", str(SAMPLES / "cci_train.json")]
    script, model_args, config = sft_parser().parse([*flags, "--gradient_checkpointing", "false"])
    assert config.activation_checkpointing is False
    notes = [r.getMessage() for r in caplog.records]
    assert (
        notes
        == [
            "note: gradient_checkpointing: transformers' old name of activation_checkpointing (removed in "
            "transformers 6), read as the new; rename it in the recipe"
        ]
        * 2
    )  # one per run
    # the written recipe (config.yaml) has the current name only
    written = resolved_config(script, model_args, config)
    assert written["activation_checkpointing"] is False and "gradient_checkpointing" not in written
    caplog.clear()
    sft_parser().parse([*flags, "--activation_checkpointing", "false"])
    assert caplog.records == []
    both = tmp_path / "both.yaml"
    both.write_text(
        "model: m\ngradient_checkpointing: false\nactivation_checkpointing: true\n", encoding="utf-8"
    )
    with pytest.raises(
        UserError, match="'gradient_checkpointing' \\(False\\) and 'activation_checkpointing'"
    ):
        sft_parser().parse(["--config", str(both)])


class Built(Exception):
    """Raised in place of training, once the trainer is built."""


@pytest.mark.slow
@pytest.mark.parametrize("which", ["sft", "classification", "orpo", "dpo", "simpo", "kto"])
def test_every_trainer_gets_reentrant_checkpointing_under_zero3(which, tiny_llama, tmp_path, monkeypatch):
    """LoRA under ZeRO-3 with activation checkpointing (ZeRO-3 stood in for: DeepSpeed is not
    installed here): every trainer's arguments carry ``use_reentrant: true`` under transformers'
    current name, and the model's checkpointing function is the reentrant one. Before, trl's
    SFT/DPO/KTO trainers wrote the deprecated alias after the arguments were resolved (the
    Trainer never read it) and ORPO, SimPO (CPO) and the classification head set nothing."""
    from conftest import ROOT, SAMPLES, load_script
    from transformers import TrainerCallback

    from malpyeong.data import load_items
    from malpyeong.tasks import get_task
    from malpyeong.training import classification, models, orpo, sft
    from malpyeong.training.pairs import build_pairs, write_pairs

    built = {}

    class StopAtTheStart(TrainerCallback):  # checkpointing is switched on by train(), before this
        def on_train_begin(self, args, state, control, **kwargs):
            raise Built

    def stop(trainer, checkpoint):
        built["trainer"] = trainer
        trainer.add_callback(StopAtTheStart)
        trainer.train()

    monkeypatch.setattr(models, "is_zero3", lambda config: True)
    monkeypatch.setattr(classification, "is_zero3", lambda config: True)
    for module in (sft, classification, orpo):
        monkeypatch.setattr(module, "run_training", stop)
    common = ["--model", tiny_llama, "--output_dir", tmp_path / "run", "--report_to", "none"]
    common += ["--activation_checkpointing", "true", "--max_length", "512", "--eval_strategy", "no"]
    common += ["--load_best_model_at_end", "false", "--max_steps", "1"]
    if which in ("sft", "classification"):
        script = "run/train.py"
        args = [*common, "--task", "cci", "--train_file", SAMPLES / "cci_train.json", "--objective", which]
    else:
        task = get_task("cci")
        pairs = write_pairs(
            build_pairs(task, load_items(SAMPLES / "cci_dev.json", task)[:4]), tmp_path / "p.jsonl"
        )
        script, args = "orpo/train.py", [*common, "--algorithm", which, "--pairs", pairs]
    with pytest.raises(Built):
        load_script(ROOT / script).main([str(a) for a in args])
    trainer = built["trainer"]
    assert trainer.args.activation_checkpointing_kwargs == {"use_reentrant": True}
    funcs = {
        tuple(sorted(m._gradient_checkpointing_func.keywords.items()))
        for m in trainer.model.modules()
        if getattr(m, "gradient_checkpointing", False) and hasattr(m, "_gradient_checkpointing_func")
    }
    assert funcs == {(("use_reentrant", True),)}


# -- 10. the memory estimate's new terms --------------------------------------------------------


def test_memory_estimate_counts_bf16_qlora_adapters_8bit_adamw_and_eager_masks():
    import dataclasses

    from malpyeong.training.vram import ARCHITECTURES, GIB, Setup, estimate, mask_bytes

    gemma = ARCHITECTURES["rtzr/ko-gemma-2-9b-it"]
    qlora = Setup(method="qlora", compute_bytes=2, batch=4, seq=1024, gradient_checkpointing=True)
    n = 54_018_048  # LoRA r=16 on every linear layer of Gemma-2-9B
    fp32 = estimate(gemma, qlora)
    bf16 = estimate(gemma, dataclasses.replace(qlora, adapter_bytes=2))
    adam8 = estimate(gemma, dataclasses.replace(qlora, adapter_bytes=2, optimizer_8bit=True))
    assert fp32.trainable == n * 16  # fp32 weight, gradient and two moments
    assert bf16.trainable == n * 8  # trl's bf16 adapters: AdamW's moments follow the weight
    assert adam8.trainable == pytest.approx(n * (2 + 2 + 2 * (1 + 4 / 256)))  # one byte a moment
    # eager attention's masks: Gemma-2 builds two (sliding and full), batch x seq x seq each
    long = Setup(method="lora", compute_bytes=2, batch=4, seq=8192, gradient_checkpointing=True)
    assert mask_bytes(gemma, long) == 1 * GIB  # the issue's ~1 GiB at 4 x 8,192
    assert mask_bytes(gemma, dataclasses.replace(long, method="qlora")) == 2 * GIB  # fp32 stream
    assert mask_bytes(gemma, dataclasses.replace(long, eager=False)) == 0
    one_kind = estimate(dataclasses.replace(gemma, mask_kinds=1), long)
    assert estimate(gemma, long).activations - one_kind.activations == GIB / 2  # kept through backward
    assert ARCHITECTURES["Qwen/Qwen2.5-3B-Instruct"].mask_kinds == 1


def test_recipe_estimate_reads_the_optimizer_and_the_adapter_dtype():
    from conftest import ROOT

    from malpyeong.training.entry import sft_parser
    from malpyeong.training.vram import recipe_setup

    recipe = ROOT / "resource" / "configs" / "dcs" / "cpm" / "gemma-2-9b-it_qlora.yaml"
    script, model_args, config = sft_parser().parse(["--config", str(recipe), "--train_file", str(recipe)])
    setup = recipe_setup(model_args, script, config, eager=True, num_labels=None)
    assert (setup.method, setup.adapter_bytes, setup.optimizer_8bit) == ("qlora", 2, True)
    head = recipe_setup(model_args, script, config, eager=True, num_labels=4)
    assert head.adapter_bytes == 4  # the classification head's plain Trainer keeps peft's fp32


@pytest.mark.slow
def test_trl_casts_qlora_adapters_to_bf16_on_our_path(tiny_llama, tmp_path, monkeypatch):
    """What the estimate's bf16 QLoRA term stands on: our QLoRA model (4-bit base, fp32
    adapters from peft) handed to trl's SFTTrainer has bf16 adapters when training starts."""
    import torch
    from conftest import ROOT, SAMPLES, load_script

    from malpyeong.training import sft

    seen = {}

    def stop(trainer, checkpoint):
        seen["dtypes"] = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
        raise Built

    monkeypatch.setattr(sft, "run_training", stop)
    args = [
        "--model",
        tiny_llama,
        "--method",
        "qlora",
        "--task",
        "cci",
        "--train_file",
        SAMPLES / "cci_train.json",
    ]
    args += ["--output_dir", tmp_path / "run", "--report_to", "none", "--eval_strategy", "no"]
    args += ["--load_best_model_at_end", "false", "--max_steps", "1", "--max_length", "512"]
    with pytest.raises(Built):
        load_script(ROOT / "run" / "train.py").main([str(a) for a in args])
    assert seen["dtypes"] == {torch.bfloat16}


# -- 1 and 2. two processes (gloo): a staged run's merge, and dev evaluation ---------------------

# Loaded by every Python process the launch starts (PYTHONPATH). SLOW_MERGE_S: merge_adapter takes
# that many seconds longer, wherever it runs, and logs the process it ran in. PG_TIMEOUT_S: the
# default collective timeout of a gloo group (30 minutes) becomes that, as NCCL's 10 minutes
# would be on GPUs (on the CPU, transformers does not pass --ddp_timeout to the group).
PATCHES = """
import datetime, importlib.abc, importlib.util, os, sys, time


class AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def slow_merge(module):
    real = module.merge_adapter

    def slow(*args, **kwargs):
        with open(os.environ["SLOW_MERGE_LOG"], "a") as log:
            log.write(os.environ.get("RANK", "own process") + "\\n")
        time.sleep(float(os.environ["SLOW_MERGE_S"]))
        return real(*args, **kwargs)

    module.merge_adapter = slow


def short_timeout(module):
    module.default_pg_timeout = datetime.timedelta(seconds=float(os.environ["PG_TIMEOUT_S"]))


if os.environ.get("SLOW_MERGE_S"):
    sys.meta_path.insert(0, AfterImport("malpyeong.training.models", slow_merge))
if os.environ.get("PG_TIMEOUT_S"):
    sys.meta_path.insert(0, AfterImport("torch.distributed.distributed_c10d", short_timeout))
"""


@pytest.mark.slow
def test_two_processes_staged_merge_waits_untimed_and_evaluation_calls_match(tiny_llama, tmp_path):
    """A staged run (LoRA on an earlier LoRA run, merged into init_model/) in two processes whose
    collective timeout is 10 s, while the merge takes 20 s longer than it does: the other
    process waits for it without timing out (before: it sat in a barrier and failed). The same
    run evaluates 17 dev items one at a time: 9 and 8 answers, and both processes make the same
    number of model calls (before: 9 and 8 forward passes)."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT, SAMPLES
    from test_multiprocess import LAUNCH

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(PATCHES, encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MALPYEONG_LOG": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT / "src")]),
        "SLOW_MERGE_LOG": str(tmp_path / "merges.log"),
    }
    recipe = ["--config", ROOT / "resource" / "configs" / "cci" / "tiny_lora.yaml", "--model", tiny_llama]
    quick = [
        "--report_to",
        "none",
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "384",
    ]
    quick += ["--save_strategy", "no", "--load_best_model_at_end", "false", "--early_stopping_patience", "0"]

    def train(*args, launch=False, **extra_env):
        cmd = [*(LAUNCH if launch else [sys.executable]), ROOT / "run" / "train.py", *recipe, *quick, *args]
        return subprocess.run(
            [str(c) for c in cmd],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**env, **extra_env},
            timeout=900,
        )

    first = train("--output_dir", tmp_path / "first", "--eval_strategy", "no")
    assert first.returncode == 0, first.stderr[-3000:]
    staged = tmp_path / "staged"
    done = train(
        "--output_dir", staged, "--init_from", tmp_path / "first", "--model", tiny_llama,
        "--eval_strategy", "steps", "--eval_steps", "1",
        "--dev_file", SAMPLES / "cci_dev.json", "--dev_eval_items", "17", "--per_device_eval_batch_size", "1",
        launch=True, SLOW_MERGE_S="20", PG_TIMEOUT_S="10",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "merges.log").read_text().splitlines() == ["own process"]  # merged once, apart
    assert (staged / "init_model" / "config.json").is_file()
    assert not list(staged.glob(".*-done*")) and not list((staged / "init_model").glob(".*-done*"))
    report = json.loads((staged / "dev_metrics.json").read_text())["best_report"]
    assert report["n"] == 17 and report["answered_per_process"] == [9, 8]
    calls = report["model_calls_per_process"]
    assert len(calls) == 2 and calls[0] == calls[1] and calls[0]["forward"] >= 9, calls


# -- 2. dev evaluation: the same number of calls on every process; the logits width -------------


def test_evaluation_shares_are_padded_to_equal_size():
    from malpyeong.inference.shard import Shard
    from malpyeong.training.evaluation import share

    items = list(range(17))
    assert share(items, Shard(0, 2)) == list(range(0, 17, 2))  # 9 items
    assert share(items, Shard(1, 2)) == [*range(1, 17, 2), 1]  # 8 and a repeat, dropped later
    assert share([7, 8], Shard(2, 3)) == [7]  # no item of its own: the first one


def test_evaluation_counts_generate_calls_and_other_forward_passes(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from malpyeong.training.evaluation import counted_calls

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = torch.tensor([[1, 5, 9]])
    with counted_calls(model) as calls, torch.no_grad():
        model(input_ids=ids)
        model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)  # 3 forward passes inside
        model(input_ids=ids)
    assert calls == {"generate": 1, "forward": 2}
    assert "generate" not in model.__dict__  # the model's own generate again


@pytest.mark.parametrize("zero3", [False, True])
def test_under_zero3_every_process_answers_every_dev_item(zero3, tiny_llama, monkeypatch):
    """Process 0 of 2. Under DDP it answers its padded share (3 of 5 items) and learns the
    others' call counts afterwards. Under ZeRO-3 that exchange would meet a process still in its
    forward passes (each an all-gather of the weights) out of order, so every process answers
    all 5 items: the same plan and the same calls everywhere, by construction (before: the
    padded share under ZeRO-3 too, so option scoring's batch plans could differ)."""
    import accelerate.utils
    from conftest import SAMPLES
    from transformers import AutoModelForCausalLM

    from malpyeong.data import load_items
    from malpyeong.inference.answer import AnswerSettings
    from malpyeong.inference.shard import Shard
    from malpyeong.models.backbones import get_backbone, load_tokenizer
    from malpyeong.tasks import get_task
    from malpyeong.training import evaluation

    gathered = []

    def gather(objects):  # process 1: the same calls, and (under DDP) answers to its own share
        gathered.append(objects)
        if objects and isinstance(objects[0], tuple):
            return objects + [(it.id, objects[0][1]) for it in items[1::2]]
        return objects * 2

    monkeypatch.setattr(evaluation, "current_shard", lambda: Shard(0, 2))
    monkeypatch.setattr(evaluation, "zero3_enabled", lambda: zero3)
    monkeypatch.setattr(evaluation, "even_out", lambda *args: None)  # process 1's counts are ours
    monkeypatch.setattr(accelerate.utils, "gather_object", gather)
    task = get_task("cci")
    items = load_items(SAMPLES / "cci_dev.json", task, require_output=True)[:5]
    backbone = get_backbone(tiny_llama)
    evaluator = evaluation.TaskEvaluator(
        task, items, load_tokenizer(tiny_llama, backbone), backbone, AnswerSettings(batch_size=1)
    )
    evaluator(AutoModelForCausalLM.from_pretrained(tiny_llama))
    report = evaluator.reports[-1]
    assert report["answered_per_process"] == ([5, 5] if zero3 else [3, 2])
    answered = [pair for objects in gathered if objects and isinstance(objects[0], tuple) for pair in objects]
    assert len(answered) == (0 if zero3 else 3)  # under ZeRO-3 no answers travel: each has all
    assert report["model_calls_per_process"][0] == report["model_calls_per_process"][1]


def test_logits_width_comes_from_the_config_not_a_zero3_partition(tiny_llama):
    """Under ZeRO-3 a process's share of the LM head has shape [0]: the width of the logits (for
    constrained decoding) is the config's vocab_size."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from malpyeong.inference.generation import _logits_width

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    vocab = model.config.vocab_size
    assert _logits_width(model, AutoTokenizer.from_pretrained(tiny_llama)) == vocab
    model.get_output_embeddings().weight = torch.nn.Parameter(torch.empty(0))  # a ZeRO-3 partition
    assert _logits_width(model, AutoTokenizer.from_pretrained(tiny_llama)) == vocab


# -- the GPU check's steps (benchmarks/gpu_check_distributed.py) -------------------------------


def test_gpu_check_steps_import_and_skip_cleanly_here():
    import torch
    from conftest import load_script

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the steps for real")
    check = load_script("benchmarks/gpu_check_distributed.py")
    names = [name for name, _ in check.STEPS]
    assert names == ["bf16_native", "vllm_dtype_bf16", "zero3_staged_scoring", "zero3_dev_generation"]
    rows = {name: step(object()) for name, step in check.STEPS}  # gpu_check.py passes its Context
    assert {row["status"] for row in rows.values()} == {"skip"}
    assert rows["zero3_staged_scoring"]["detail"] == "needs 2 CUDA GPU(s), this machine has 0"
    assert all(row["detail"] for row in rows.values())
