"""Task endpoints of the server: the answering path of run/test.py, an ensemble voted as
ensemble/vote.py votes, the memory state of every converted DialogSum item, and the vLLM
engine (a stand-in that records what vLLM is asked)."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import replace

import httpx
import pytest
from conftest import ROOT, SAMPLES, SHARED_DATA, load_script
from serve_helpers import build_base, random_adapter, run_folder

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from malpyeong.cli import run_cli  # noqa: E402
from malpyeong.data import load_items  # noqa: E402
from malpyeong.serving import Limits, ServeConfig, parse_ensemble  # noqa: E402
from malpyeong.serving.registry import vllm_commands  # noqa: E402
from malpyeong.serving.server import Running  # noqa: E402
from malpyeong.tasks import get_task  # noqa: E402

DIALOGSUM = SHARED_DATA / "dialogsum" / "dialogsum.dev.jsonl"
CCI_TEST = SAMPLES / "cci_test.json"


def call(script: str, args: list, capsys) -> str:
    code = run_cli(load_script(ROOT / script).main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.mark.slow
def test_an_ensemble_of_three_adapters_answers_as_vote_py(tmp_path, capsys):
    """Three different adapters of one base (random LoRA weights: three voters that disagree),
    served with the base loaded once and voted as one name; the same three predicted by
    run/test.py into results files and voted by ensemble/vote.py give the same label for
    every item."""
    base = build_base(tmp_path / "base")
    names = ("m1", "m2", "m3")
    runs = {
        n: run_folder(random_adapter(base, tmp_path / f"{n}-adapter", seed=s), tmp_path / n, base, "cci")
        for s, n in enumerate(names, 1)
    }
    results = tmp_path / "results"
    for n in names:
        call(
            "run/test.py",
            [
                "--model",
                runs[n],
                "--task",
                "cci",
                "--input",
                CCI_TEST,
                "--output",
                results / f"{n}.json",
                "--no_progress",
            ],
            capsys,
        )
    out = call(
        "ensemble/vote.py",
        [*(results / f"{n}.json" for n in names), "--output", tmp_path / "vote.json", "--test", CCI_TEST],
        capsys,
    )
    voted = {r["id"]: r["output"] for r in json.loads((tmp_path / "vote.json").read_text(encoding="utf-8"))}
    items = json.loads(CCI_TEST.read_text(encoding="utf-8"))
    cfg = ServeConfig(
        models={n: str(runs[n]) for n in names},
        ensembles=(parse_ensemble("vote3=m1,m2,m3"),),
        port=0,
        sessions=tmp_path / "sessions",
    )
    with Running(cfg) as url:
        response = httpx.post(
            f"{url}/v1/tasks/cci/predict", json={"model": "vote3", "items": items}, timeout=600
        )
        assert response.status_code == 200, response.text
        body = response.json()
        single = httpx.post(
            f"{url}/v1/tasks/cci/predict", json={"model": "m1", "items": items[:2]}, timeout=600
        )
    served = {o["id"]: o["output"] for o in body["outputs"]}
    assert served == voted
    # the members disagree (the vote decides something), and the response says how each voted
    first = body["outputs"][0]["members"]
    assert set(first) == set(names) and all(len(v["probs"]) == 3 for v in first.values())
    assert any(len({v["output"] for v in o["members"].values()}) > 1 for o in body["outputs"])
    for n in names:
        members_votes = {o["id"]: o["members"][n]["output"] for o in body["outputs"]}
        predicted = {r["id"]: r["output"] for r in json.loads((results / f"{n}.json").read_text("utf-8"))}
        assert members_votes == predicted
    ties = [o for o in body["outputs"] if o["tie"]]
    assert f"{len(ties)} of {len(items)} ids were ties" in out
    # a single model: the official label and its option probabilities (the sidecar's)
    row = single.json()["outputs"][0]
    assert row["output"] in get_task("cci").output_labels and abs(sum(row["probs"]) - 1) < 1e-6


def made_up_dialogsum(path, n: int):
    """DialogSum-shaped records in our own words, of 2 to 7 turns (a machine without the real
    data, CI's, still sends the converted items through the endpoint)."""
    lines = [
        "Did you bring the tickets for tonight?",
        "Yes, two seats in row F.",
        "Great. When does the show start?",
        "At eight, right after dinner.",
        "Can you also grab that blanket?",
        "Sure, the blue one from the car.",
        "Thanks, see you at the door.",
    ]
    rows = [
        {
            "fname": f"made_{i}",
            "topic": ("theater", "travel", "food")[i % 3],
            "dialogue": "\n".join(f"#Person{1 + j % 2}#: {lines[j]}" for j in range(2 + i % 6)),
            "summary": f"#Person1# and #Person2# talk about seat {i}.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_memory_state_of_every_dialogsum_item_from_an_untrained_model(tmp_path, capsys):
    """The memory endpoint, under the task's JSON-schema constraint, gives a schema-valid state
    with the exact turn_count for every item of the converted DialogSum dev split (500 items;
    12 made-up DialogSum records where the real data is absent), from an untrained tiny model
    (its tokenizer trained on the converted prompts, as run/tiny_model.py --corpus does, so the
    English prompts are short)."""
    import jsonschema

    real = DIALOGSUM.is_file()
    source = DIALOGSUM if real else made_up_dialogsum(tmp_path / "dialogsum.jsonl", 12)
    converted = tmp_path / "memory.json"
    call(
        "run/convert.py",
        ["--from", "dialogsum", "--to", "memory", "--in", source, "--out", converted],
        capsys,
    )
    call(
        "run/tiny_model.py",
        ["--family", "llama", "--out", tmp_path / "tiny", "--corpus", converted, "--task", "memory"],
        capsys,
    )
    task = get_task("memory")
    items = load_items(converted, task)
    records = json.loads(converted.read_text(encoding="utf-8"))
    for r in records:
        r["output"] = ""  # what a client sends: the input only
    cfg = ServeConfig(
        models={"tiny": str(tmp_path / "tiny")},
        port=0,
        sessions=tmp_path / "s",
        limits=Limits(max_items=1000),
    )
    with Running(cfg) as url:
        response = httpx.post(
            f"{url}/v1/tasks/memory/predict",
            json={"model": "tiny", "items": records, "max_new_tokens": 64},
            timeout=1800,
        )
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        pasted = httpx.post(
            f"{url}/v1/tasks/memory/predict",
            timeout=600,
            json={
                "model": "tiny",
                "max_new_tokens": 40,
                "conversation": [
                    {"speaker": "A", "utterance": "See you at six."},
                    {"speaker": "B", "utterance": "OK."},
                ],
            },
        )
    schema = task.output_schema()
    outputs = body["outputs"]
    assert len(outputs) == len(items) == (500 if real else 12) and body["usage"]["unusable"] == 0
    assert real or sorted({it.turn_count for it in items}) == [2, 3, 4, 5, 6, 7]
    for item, out in zip(items, outputs, strict=True):
        assert out["id"] == item.id
        jsonschema.validate(out["output"], schema)
        assert task.check_output(out["output"]) is None
        assert out["output"]["memory_state"]["turn_count"] == item.turn_count
        assert json.loads(out["text"])["memory_summary"]  # the generation itself was JSON
    assert pasted.json()["outputs"][0]["output"]["memory_state"]["turn_count"] == 2


class FakeVLLM:
    """Records what the server asks of vLLM (``LLM(...)``, ``generate(..., lora_request=)``)."""

    def __init__(self) -> None:
        self.llms: list[dict] = []
        self.calls: list[dict] = []

    def module(self) -> types.ModuleType:
        fake = self

        class LLM:
            def __init__(self, **kwargs):
                fake.llms.append(kwargs)
                self.llm_engine = types.SimpleNamespace(
                    model_config=types.SimpleNamespace(max_model_len=4096)
                )

            def generate(self, prompts, params, use_tqdm=False, lora_request=None):
                fake.calls.append({"n": len(prompts), "lora": lora_request, "params": params})
                name = lora_request.lora_name if lora_request is not None else "base"
                return [
                    types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"from {name}")])
                    for _ in prompts
                ]

        class LoRARequest:
            def __init__(self, lora_name, lora_int_id, lora_path):
                self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path

        vllm = types.ModuleType("vllm")
        vllm.LLM = LLM
        vllm.SamplingParams = lambda **kw: kw
        inputs = types.ModuleType("vllm.inputs")
        inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
        lora = types.ModuleType("vllm.lora")
        request = types.ModuleType("vllm.lora.request")
        request.LoRARequest = LoRARequest
        return {"vllm": vllm, "vllm.inputs": inputs, "vllm.lora": lora, "vllm.lora.request": request}


def test_vllm_engine_serves_adapters_through_its_lora_support(tmp_path, monkeypatch):
    """--engine vllm: one LLM for the base with enable_lora, max_loras = the adapters and
    max_lora_rank covering theirs; each name answers with its own LoRARequest (the base with
    none). vLLM is not installed here: a stand-in records the arguments."""
    base = build_base(tmp_path / "base")
    a = random_adapter(base, tmp_path / "a", seed=1)
    b = run_folder(random_adapter(base, tmp_path / "b-adapter", seed=2), tmp_path / "b", base)
    fake = FakeVLLM()
    for name, module in fake.module().items():
        monkeypatch.setitem(sys.modules, name, module)
    cfg = ServeConfig(
        models={"base": str(base), "a": str(a), "b": str(b)}, engine="vllm", port=0, sessions=tmp_path / "s"
    )
    with Running(cfg) as url:
        replies = {}
        for name in ("a", "b", "base"):
            r = httpx.post(
                f"{url}/v1/chat/completions",
                timeout=120,
                json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            )
            assert r.status_code == 200, r.text
            replies[name] = r.json()["choices"][0]["message"]["content"]
        scored = httpx.post(
            f"{url}/v1/tasks/cci/predict",
            json={"model": "a", "items": [json.loads(CCI_TEST.read_text(encoding="utf-8"))[0]]},
            timeout=120,
        )
    assert len(fake.llms) == 1  # one base, loaded once
    llm = fake.llms[0]
    assert llm["model"] == str(base) and llm["enable_lora"] is True
    assert llm["max_loras"] == 2 and llm["max_lora_rank"] == 8
    assert replies == {"a": "from a", "b": "from b", "base": "from base"}
    used = [
        (c["lora"].lora_name, c["lora"].lora_int_id, c["lora"].lora_path) if c["lora"] else None
        for c in fake.calls
    ]
    assert used == [("a", 1, str(a)), ("b", 2, str(b / "adapter")), None]
    assert fake.calls[0]["params"]["max_tokens"] == 5 and fake.calls[0]["params"]["temperature"] == 0.0
    # vLLM does not score options: a choice task on the vllm engine is refused in one line
    assert scored.status_code == 400 and "does not score options" in scored.json()["error"]["message"]
    # the same models through vLLM's own OpenAI server: the command run/serve.py prints
    (command,) = vllm_commands(replace(cfg, port=8000))
    assert [w for w in command.split() if w != "\\"] == (
        f"vllm serve {base} --host 127.0.0.1 --port 8000 --served-model-name base --enable-lora "
        f"--max-loras 2 --max-lora-rank 8 --lora-modules a={a} b={b / 'adapter'}"
    ).split()
