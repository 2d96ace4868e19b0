"""A task plugs in by registering: a throwaway generate task with a JSON-object output, defined
here and nowhere else, goes through train, predict, evaluate, MBR voting and merge search with
no change outside this file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import load_script

from malpyeong.cli import run_cli
from malpyeong.data import check_submission, load_items
from malpyeong.inference.results import read_results
from malpyeong.tasks import TASKS, GenerateTask, Metric, register
from malpyeong.tasks.base import BASELINE, Problems, PromptSpec, Utterance, parse_envelope

pytestmark = pytest.mark.slow

TOPICS = ("weather", "food", "travel")


@dataclass(frozen=True)
class TopicItem:
    id: str
    conversation: tuple[Utterance, ...]
    state: dict | None
    raw: dict


class TopicStateTask(GenerateTask):
    """The topic of a dialogue as a JSON object: ``{"topic": str, "turns": int}``."""

    name = "plugin_topic"
    description = "test only: a dialogue's topic as a JSON object"
    metrics = (Metric("topic_match", help="share of items whose topic is the gold one"),)
    dev_metric = "topic_match"

    def parse_item(self, record: Any, problems: Problems) -> TopicItem | None:
        rid, inp, utterances = parse_envelope(record, problems, utterance_ids=False)
        if inp is None:
            return None
        output = record.get("output", "")
        if output != "" and (problem := self.check_output(output)):
            problems.append(("output", problem))
        if problems:
            return None
        return TopicItem(rid, tuple(utterances), output or None, record)

    def has_output(self, item: TopicItem) -> bool:
        return item.state is not None

    def reference(self, item: TopicItem) -> dict:
        return item.state

    def check_output(self, value: Any) -> str | None:
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("topic"), str)
            or not value["topic"]
            or not isinstance(value.get("turns"), int)
        ):
            return 'output must be {"topic": non-empty string, "turns": integer}'
        return None

    def messages(self, item: TopicItem, spec: PromptSpec = BASELINE) -> list[dict]:
        lines = "\n".join(f"{u.speaker}: {u.utterance}" for u in item.conversation)
        return [
            {"role": "system", "content": "Answer with the topic as JSON."},
            {"role": "user", "content": lines},
        ]

    def render_output(self, output: dict) -> str:
        return json.dumps(output, ensure_ascii=False)

    def parse_output(self, item: TopicItem, text: str) -> dict | None:
        try:
            value = json.loads(text.strip())
        except ValueError:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("topic"), str):
            return None
        return {"topic": value["topic"], "turns": len(item.conversation)}

    def fallback_output(self, item: TopicItem) -> dict:
        return {"topic": "unknown", "turns": len(item.conversation)}

    def drop_order(self, item: TopicItem) -> list[int]:
        return list(range(len(item.conversation) - 1))

    def dedup_parts(self, item: TopicItem) -> list[str]:
        return ["\n".join(self.dialogue_lines(item))]

    def evaluate(self, gold: list[TopicItem], outputs: dict[str, Any], **_: Any) -> dict:
        hits = sum(outputs[it.id]["topic"] == it.state["topic"] for it in gold)
        return {"topic_match": hits / len(gold), "n": len(gold)}


@pytest.fixture
def plugin_task():
    register(TopicStateTask)
    yield TASKS["plugin_topic"]()
    TASKS.pop("plugin_topic")


def write(path, n: int, prefix: str, gold: bool = True):
    rows = []
    for i in range(n):
        topic = TOPICS[i % 3]
        conv = [
            {"speaker": "A", "utterance": f"{topic} {prefix}{i} talk"},
            {"speaker": "B", "utterance": f"yes {topic}"},
        ]
        rows.append(
            {
                "id": f"{prefix}{i}",
                "input": {"conversation": conv},
                "output": {"topic": topic, "turns": 2} if gold else "",
            }
        )
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def call(script: str, *args: str, capsys) -> str:
    code = run_cli(load_script(script).main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_a_registered_task_runs_through_every_step(plugin_task, tiny_llama, tmp_path, capsys):
    train = write(tmp_path / "train.json", 6, "t")
    dev = write(tmp_path / "dev.json", 3, "d")
    test = write(tmp_path / "test.json", 3, "x", gold=False)
    assert [it.state["topic"] for it in load_items(dev, plugin_task)] == list(TOPICS)

    runs = []
    for seed in (1, 2):
        out = tmp_path / f"run{seed}"
        call(
            "run/train.py",
            "--model",
            tiny_llama,
            "--task",
            "plugin_topic",
            "--train_file",
            train,
            "--dev_file",
            dev,
            "--output_dir",
            out,
            "--max_steps",
            "2",
            "--seed",
            seed,
            "--report_to",
            "none",
            "--activation_checkpointing",
            "false",
            "--max_length",
            "256",
            "--eval_max_new_tokens",
            "6",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--disable_tqdm",
            "true",
            "--learning_rate",
            "1e-3",
            capsys=capsys,
        )
        metrics = json.loads((out / "dev_metrics.json").read_text(encoding="utf-8"))
        assert metrics["metric"] == "topic_match" and 0.0 <= metrics["best"] <= 1.0
        assert metrics["best_report"]["n"] == 3
        runs.append(out)

    for run in runs:
        for split, data in (("dev", dev), ("test", test)):
            call(
                "run/test.py",
                "--model",
                run,
                "--task",
                "plugin_topic",
                "--input",
                data,
                "--output",
                tmp_path / split / f"{run.name}.json",
                "--max_new_tokens",
                "6",
                "--no_progress",
                capsys=capsys,
            )
    res = read_results(tmp_path / "test" / "run1.json")
    assert all(isinstance(v, dict) and v["turns"] == 2 for v in res.outputs.values())
    assert set(res.texts) == set(res.ids)  # the raw generations are kept beside

    shown = call(
        "run/evaluate.py",
        "--task",
        "plugin_topic",
        "--gold",
        dev,
        "--pred",
        tmp_path / "dev" / "run1.json",
        capsys=capsys,
    )
    assert "valid plugin_topic submission, 3 items" in shown and "topic_match" in shown

    submission = tmp_path / "submission.json"
    shown = call(
        "ensemble/vote.py",
        tmp_path / "test" / "run1.json",
        tmp_path / "test" / "run2.json",
        "--output",
        submission,
        "--test",
        test,
        "--priority",
        "run2",
        "run1",
        capsys=capsys,
    )
    assert "MBR by rouge1" in shown
    assert check_submission(submission, test, plugin_task) == 3
    voted = {r["id"]: r["output"] for r in json.loads(submission.read_text(encoding="utf-8"))}
    firsts = read_results(tmp_path / "test" / "run2.json").outputs
    assert all(isinstance(v, dict) for v in voted.values()) and voted.keys() == firsts.keys()

    config = tmp_path / "merge.yaml"
    config.write_text(
        f"merge_method: linear\nmodels:\n  - model: {runs[0]}\n"
        f"  - model: {runs[1]}\nsearch:\n  weight: [[0.5, 0.5], [0.8, 0.2]]\n",
        encoding="utf-8",
    )
    shown = call(
        "ensemble/merge.py",
        "--config",
        config,
        "--output",
        tmp_path / "merged",
        "--search",
        "--dev",
        dev,
        "--task",
        "plugin_topic",
        "--max-new-tokens",
        "6",
        capsys=capsys,
    )
    assert "scored by dev topic_match on 3 items" in shown and "<- best" in shown
    search = json.loads((tmp_path / "merged" / "merge_search.json").read_text(encoding="utf-8"))
    assert search["metric"] == "topic_match" and len(search["rows"]) == 2
