"""Weight merging: LoRA adapters (peft) and full models (streaming merger and mergekit)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import load_script

from malpyeong.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
MERGE = load_script(ROOT / "ensemble/merge.py")

TARGETS = ["q_proj", "v_proj"]


def merge(*argv) -> int:
    return run_cli(MERGE.main, [str(a) for a in argv] + ["--quiet"])


def write_dev(tmp_path, cci_record: dict, labels: list[str]):
    """A dev file of copies of ``cci_record`` with the given gold labels (ids dev-0, dev-1, ...)."""
    items = []
    for i, label in enumerate(labels):
        it = copy.deepcopy(cci_record)
        it["id"] = f"dev-{i}"
        it["output"] = label
        items.append(it)
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return dev


def write_yaml(path: Path, obj: dict) -> Path:
    path.write_text(yaml.safe_dump(obj), encoding="utf-8")
    return path


def make_adapter(base: Path, out: Path, seed: int, r: int, alpha: int, rslora: bool) -> Path:
    """A LoRA adapter with random (non-zero) A and B, so its delta is not zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(
        model,
        LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=False, use_rslora=rslora),
    )
    peft_model.save_pretrained(out)
    return out


def adapter_deltas(folder: Path) -> dict[str, torch.Tensor]:
    """delta W = scaling * B @ A per module, computed by hand from the saved files."""
    from safetensors.torch import load_file

    conf = json.loads((folder / "adapter_config.json").read_text())
    r, alpha = conf["r"], conf["lora_alpha"]
    scaling = alpha / math.sqrt(r) if conf.get("use_rslora") else alpha / r
    state = load_file(folder / "adapter_model.safetensors")
    out = {}
    for key, a in state.items():
        if key.endswith("lora_A.weight"):
            module = key[: -len(".lora_A.weight")]
            out[module] = scaling * (state[f"{module}.lora_B.weight"] @ a)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    # Different ranks, one with rsLoRA scaling: the merge must still be the exact delta sum.
    a = make_adapter(tiny_llama, root / "a", seed=1, r=4, alpha=8, rslora=False)
    b = make_adapter(tiny_llama, root / "b", seed=2, r=2, alpha=4, rslora=True)
    return a, b


@pytest.mark.parametrize(
    "method,weights,scale",
    [
        ("linear", (0.3, 0.9), (0.25, 0.75)),  # normalised: w / sum(w)
        ("task_arithmetic", (0.3, 0.9), (0.3, 0.9)),  # plain weighted sum
    ],
)
def test_lora_linear_merge_is_the_weighted_sum_of_deltas(
    tiny_llama, adapters, tmp_path, method, weights, scale
):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    a, b = adapters
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": method,
            "base_model": str(tiny_llama),
            "models": [
                {"model": str(a), "parameters": {"weight": weights[0]}},
                {"model": str(b), "parameters": {"weight": weights[1]}},
            ],
        },
    )
    out = tmp_path / "out"
    assert merge("--config", cfg, "--output", out, "--fold") == 0
    da, db = adapter_deltas(a), adapter_deltas(b)
    expected = {k: scale[0] * da[k] + scale[1] * db[k] for k in da}
    got = adapter_deltas(out / "adapter")
    assert set(got) == set(expected) and len(got) == 4  # 2 layers x q_proj, v_proj
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)
    # The merged adapter loads with peft as any adapter does, and applies the same deltas.
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out / "adapter")
    layer = model.base_model.model.model.layers[1].self_attn.v_proj
    key = "base_model.model.model.layers.1.self_attn.v_proj"
    torch.testing.assert_close(layer.get_delta_weight("default"), expected[key], rtol=1e-5, atol=1e-6)
    # Folded: the run folder itself = base + delta, loadable by from_pretrained as it is.
    base_w = load_file(tiny_llama / "model.safetensors")
    folded = load_file(out / "model.safetensors")
    name = "model.layers.1.self_attn.v_proj.weight"
    torch.testing.assert_close(folded[name], base_w[name] + expected[key], rtol=1e-5, atol=1e-6)
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    info = json.loads((out / "malpyeong_run.json").read_text())
    assert info["adapter_dir"] == "adapter" and info["merged_dir"] == "."
    assert info["method"] == "lora" and info["model"] == str(tiny_llama)


def test_merged_run_folders_load_with_malpyeong_loader(tiny_llama, adapters, tmp_path):
    loading = pytest.importorskip("malpyeong.inference.loading")
    from safetensors.torch import load_file

    a, b = adapters
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "linear",
            "base_model": str(tiny_llama),
            "models": [
                {"model": str(a), "parameters": {"weight": 1.0}},
                {"model": str(b), "parameters": {"weight": 1.0}},
            ],
        },
    )
    assert merge("--config", cfg, "--output", tmp_path / "lora") == 0  # adapter only
    loaded = loading.load_for_inference(tmp_path / "lora", dtype="float32")
    assert loaded.source.adapter == str(tmp_path / "lora" / "adapter")
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    delta = 0.5 * adapter_deltas(a)[key] + 0.5 * adapter_deltas(b)[key]
    base_w = load_file(tiny_llama / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    weight = dict(loaded.model.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    torch.testing.assert_close(weight.detach(), base_w + delta, rtol=1e-5, atol=1e-6)


def test_lora_ties_runs_through_peft(tiny_llama, adapters, tmp_path):
    a, b = adapters
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "ties_svd",
            "base_model": str(tiny_llama),
            "parameters": {"svd_rank": 4},
            "models": [
                {"model": str(a), "parameters": {"weight": 1.0, "density": 0.5}},
                {"model": str(b), "parameters": {"weight": 1.0, "density": 0.5}},
            ],
        },
    )
    assert merge("--config", cfg, "--output", tmp_path / "out") == 0
    conf = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert conf["r"] == 4 and not conf.get("use_rslora")


@pytest.fixture(scope="module")
def two_llamas(tiny_llama, tmp_path_factory):
    from malpyeong.models.tiny import build_tiny_model

    other = build_tiny_model("llama", tmp_path_factory.mktemp("llama_b") / "m", seed=1)
    return tiny_llama, other


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_mergekit_linear_is_the_weighted_average(two_llamas, tmp_path):
    pytest.importorskip("mergekit")
    from transformers import AutoModelForCausalLM

    a, b = two_llamas
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "linear",
            "dtype": "float32",
            "models": [
                {"model": str(a), "parameters": {"weight": 1.0}},
                {"model": str(b), "parameters": {"weight": 3.0}},
            ],
        },
    )
    assert merge("--config", cfg, "--output", tmp_path / "mk", "--engine", "mergekit") == 0
    wa, wb, got = _weights(a), _weights(b), _weights(tmp_path / "mk")
    assert set(got) == set(wa)
    for k in wa:
        torch.testing.assert_close(got[k], (1.0 * wa[k] + 3.0 * wb[k]) / 4.0, rtol=1e-6, atol=1e-7)
    # Our streaming merger gives bit-identical tensors for the same config.
    assert merge("--config", cfg, "--output", tmp_path / "st", "--engine", "stream") == 0
    st = _weights(tmp_path / "st")
    assert all(torch.equal(st[k], got[k]) for k in got)
    info = json.loads((tmp_path / "st" / "malpyeong_run.json").read_text())
    assert info["merged_dir"] == "." and info["engine"] == "stream"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "st")
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()
    try:
        from malpyeong.inference.loading import load_for_inference
    except ImportError:
        return
    loaded = load_for_inference(tmp_path / "st", dtype="float32")
    assert loaded.source.weights == str(tmp_path / "st")
    torch.testing.assert_close(loaded.model(torch.tensor([[1, 2, 3]])).logits, logits)


def test_stream_task_arithmetic_matches_mergekit_in_bfloat16(two_llamas, tmp_path):
    pytest.importorskip("mergekit")
    a, b = two_llamas
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "task_arithmetic",
            "base_model": str(a),
            "dtype": "bfloat16",
            "parameters": {"lambda": 0.8},
            "models": [{"model": str(a)}, {"model": str(b), "parameters": {"weight": 0.6}}],
        },
    )
    assert merge("--config", cfg, "--output", tmp_path / "mk", "--engine", "mergekit") == 0
    assert merge("--config", cfg, "--output", tmp_path / "st") == 0  # auto -> stream
    mk, st = _weights(tmp_path / "mk"), _weights(tmp_path / "st")
    assert set(mk) == set(st)
    assert all(st[k].dtype == torch.bfloat16 and torch.equal(st[k], mk[k]) for k in mk)


def test_stream_shards_and_loads(two_llamas, tmp_path):
    from transformers import AutoModelForCausalLM

    a, b = two_llamas
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {"merge_method": "linear", "models": [str(a), str(b)], "parameters": {"weight": 0.5}},
    )
    assert merge("--config", cfg, "--output", tmp_path / "one") == 0
    assert merge("--config", cfg, "--output", tmp_path / "many", "--shard-size", "100KB") == 0
    shards = sorted((tmp_path / "many").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "many" / "model.safetensors.index.json").is_file()
    one, many = _weights(tmp_path / "one"), _weights(tmp_path / "many")
    assert all(torch.equal(one[k], many[k]) for k in one)
    m1 = AutoModelForCausalLM.from_pretrained(tmp_path / "one")
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path / "many")
    x = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(m1(x).logits, m2(x).logits)


def test_config_errors_exit_2(tiny_llama, adapters, tmp_path, capsys):
    a, _ = adapters
    bad = write_yaml(tmp_path / "mixed.yaml", {"merge_method": "linear", "models": [str(a), str(tiny_llama)]})
    assert merge("--config", bad, "--output", tmp_path / "o") == 2
    assert "mixes LoRA adapters and full models" in capsys.readouterr().err
    nomethod = write_yaml(tmp_path / "nm.yaml", {"models": [str(tiny_llama)]})
    assert merge("--config", nomethod, "--output", tmp_path / "o") == 2
    assert "missing merge_method" in capsys.readouterr().err
    slerp = write_yaml(
        tmp_path / "slerp.yaml",
        {
            "merge_method": "slerp",
            "base_model": str(tiny_llama),
            "models": [str(a)],
            "parameters": {"t": 0.5},
        },
    )
    assert merge("--config", slerp, "--output", tmp_path / "o") == 2
    assert "not available for LoRA adapters" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    ok = write_yaml(tmp_path / "ok.yaml", {"merge_method": "linear", "models": [str(a)]})
    assert merge("--config", ok, "--output", tmp_path / "exists") == 2
    assert "output exists" in capsys.readouterr().err
    assert not list(tmp_path.glob(".o.*.tmp")) and not list(tmp_path.glob(".exists.*"))


def test_search_adapters_on_dev(tiny_llama, adapters, tmp_path, cci_record, capsys):
    a, b = adapters
    dev = write_dev(tmp_path, cci_record, ["inference_1", "inference_2", "inference_3", "inference_1"])
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "linear",
            "base_model": str(tiny_llama),
            "models": [
                {"model": str(a), "parameters": {"weight": 0.5}},
                {"model": str(b), "parameters": {"weight": 0.5}},
            ],
            "search": {
                "merge_method": ["linear", "ties"],
                "weight": [[0.5, 0.5], [0.8, 0.2]],
                "density": [0.5],
            },
        },
    )
    out = tmp_path / "best"
    # ties prunes the LoRA factors: the adapters' ranks (4 and 2) differ, refused up front.
    assert merge("--config", cfg, "--output", out, "--search", "--dev", dev, "--task", "cci") == 2
    assert "use ties_svd, linear or cat" in capsys.readouterr().err
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {
            **yaml.safe_load(cfg.read_text()),
            "search": {
                "merge_method": ["linear", "ties_svd"],
                "weight": [[0.5, 0.5], [0.8, 0.2]],
                "density": [0.5],
            },
        },
    )
    assert (
        merge(
            "--config", cfg, "--output", out, "--search", "--dev", dev, "--task", "cci", "--batch-size", "4"
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "search: 4 candidate merges, scored by dev accuracy on 4 items" in text
    assert "<- best" in text
    table = json.loads((out / "merge_search.json").read_text())
    assert len(table["rows"]) == 4
    scores = [r["accuracy"] for r in table["rows"]]
    assert table["best"] == scores.index(max(scores))
    assert all(s in (0.0, 0.25, 0.5, 0.75, 1.0) for s in scores)
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    "path", sorted((ROOT / "resource/configs/merge").glob("*.yaml")), ids=lambda p: p.name
)
def test_example_configs_follow_the_schema(path):
    from malpyeong.merging import adapter_arguments, load_config, mergekit_dict, search_grid

    cfg = load_config(path)
    assert cfg.models and cfg.method
    if path.name.startswith("lora_"):
        args = adapter_arguments(cfg)  # the method and parameters are valid for peft
        assert len(args["weights"]) == len(cfg.models)
        assert search_grid(cfg)
    else:
        mergekit = pytest.importorskip("mergekit.config")
        mergekit.MergeConfiguration.model_validate(mergekit_dict(cfg))


def test_search_full_models_keeps_the_best(two_llamas, tmp_path, cci_record, capsys):
    a, b = two_llamas
    dev = write_dev(tmp_path, cci_record, ["inference_1", "inference_3", "inference_2"])
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "linear",
            "models": [str(a), str(b)],
            "parameters": {"weight": 1.0},
            "search": {"weight": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]},
        },
    )
    out = tmp_path / "best"
    assert merge("--config", cfg, "--output", out, "--search", "--dev", dev, "--task", "cci") == 0
    table = json.loads((out / "merge_search.json").read_text())
    scores = [r["accuracy"] for r in table["rows"]]
    assert len(scores) == 3 and table["best"] == scores.index(max(scores))
    # The kept model is the best candidate's merge: weight [1, 0] is model a itself, etc.
    best_w = table["rows"][table["best"]]["weights"]
    wa, wb, got = _weights(a), _weights(b), _weights(out)
    for k in wa:
        want = (best_w[0] * wa[k] + best_w[1] * wb[k]) / sum(best_w)
        torch.testing.assert_close(got[k], want, rtol=1e-6, atol=1e-7)
    assert not list(out.glob("candidate-*"))
    assert "<- best" in capsys.readouterr().out


def test_overwrite_never_deletes_a_foreign_folder(tiny_llama, adapters, tmp_path, capsys):
    a, b = adapters
    cfg = write_yaml(
        tmp_path / "m.yaml",
        {"merge_method": "linear", "base_model": str(tiny_llama), "models": [str(a), str(b)]},
    )
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    assert merge("--config", cfg, "--output", precious, "--overwrite") == 2
    assert "not a run folder" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep"
    out = tmp_path / "run"
    assert merge("--config", cfg, "--output", out) == 0
    assert merge("--config", cfg, "--output", out, "--overwrite") == 0  # a run folder: replaced
