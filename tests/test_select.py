"""Ensemble selection on dev (Caruana), its cross-validation, and the members file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from malpyeong.cli import run_cli
from malpyeong.ensemble import caruana_select, cross_validate_selection, expected_accuracy

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("inference_1", "inference_2", "inference_3")
VOTE = load_script(ROOT / "ensemble/vote.py")


def simulate(seed: int, n: int = 300, accs=(0.72, 0.7, 0.68, 0.66, 0.64)):
    """Independent models at the given accuracies plus a saboteur that is always wrong."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, size=n)
    rows, probs = [], []
    for acc in accs:
        right = rng.random(n) < acc
        v = np.where(right, gold, (gold + rng.integers(1, 3, size=n)) % 3)
        p = rng.dirichlet([1, 1, 1], size=n) * 0.4
        p[np.arange(n), v] += 0.6
        rows.append(v)
        probs.append(p)
    saboteur = (gold + 1) % 3
    p = np.full((n, 3), 0.025)
    p[np.arange(n), saboteur] = 0.95
    rows.append(saboteur)
    probs.append(p)
    return np.array(rows), np.array(probs), gold


@pytest.mark.parametrize("method", ["weighted", "soft"])
def test_selection_never_keeps_a_model_that_only_hurts(method):
    for seed in range(8):
        votes, probs, gold = simulate(seed)
        sel = caruana_select(votes, gold, 3, probs=probs, method=method)
        assert sel.counts[-1] == 0, f"seed {seed}: saboteur chosen {sel.counts}"
        singles = (votes == gold).mean(axis=1)
        assert sel.score >= singles.max() - 1e-12
        onehot = np.eye(3)[votes]
        assert sel.score == pytest.approx(expected_accuracy(sel.counts, onehot, probs, gold, method))
        # Every copy kept earns its place: removing any one lowers dev accuracy.
        for j in np.nonzero(sel.counts)[0]:
            if sel.counts.sum() > 1:
                fewer = sel.counts.copy()
                fewer[j] -= 1
                assert expected_accuracy(fewer, onehot, probs, gold, method) < sel.score


def test_selection_finds_a_complementary_trio():
    gold = np.array([0, 1, 2, 0, 1, 2])
    votes = np.array(
        [[0, 1, 2, 0, 1, 0], [0, 1, 2, 1, 1, 2], [1, 1, 2, 0, 0, 2], [1, 2, 0, 1, 2, 0]]
    )  # always wrong
    sel = caruana_select(votes, gold, 3)
    assert sel.counts.tolist() == [1, 1, 1, 0]
    assert sel.score == 1.0


def test_ties_earn_expected_credit():
    gold = np.array([0, 0])
    votes = np.array([[0, 1], [1, 0]])
    onehot = np.eye(3)[votes]
    # Both items are 1-1 ties containing the gold option: half credit each.
    assert expected_accuracy(np.array([1.0, 1.0]), onehot, None, gold, "weighted") == 0.5


def test_cross_validation_pools_held_out_items():
    votes, probs, gold = simulate(3, n=200)
    cv = cross_validate_selection(votes, gold, 3, probs=probs, method="soft", folds=4, seed=1)
    assert cv["folds"] == 4 and sum(f["n"] for f in cv["per_fold"]) == 200
    pooled = sum(f["selection"] * f["n"] for f in cv["per_fold"]) / 200
    assert cv["selection"] == pytest.approx(pooled)
    assert 0.5 < cv["selection"] <= 1.0 and 0.5 < cv["best_single"] <= 1.0
    again = cross_validate_selection(votes, gold, 3, probs=probs, method="soft", folds=4, seed=1)
    assert again == cv  # seeded: same folds, same figures


def _write(path: Path, items: list[dict], choices, probs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for it, c in zip(items, choices, strict=True):
        row = copy.deepcopy(it)
        row["output"] = LABELS[int(c)]
        rows.append(row)
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    lines = [json.dumps({"_meta": {"task": "cci"}})] + [
        json.dumps({"id": r["id"], "output": r["output"], "probs": [float(x) for x in p]})
        for r, p in zip(rows, probs, strict=True)
    ]
    path.with_name(path.stem + ".sidecar.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_select_writes_members_that_a_later_vote_reuses(tmp_path, cci_record, capsys):
    votes, probs, gold = simulate(5, n=60)
    names = ["a", "b", "c", "d", "e", "saboteur"]
    dev_items, test_items = [], []
    for i in range(60):
        it = copy.deepcopy(cci_record)
        it["id"] = f"d-{i:03d}"
        it["output"] = LABELS[gold[i]]
        dev_items.append(it)
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(dev_items, ensure_ascii=False), encoding="utf-8")
    for j, n in enumerate(names):
        _write(tmp_path / "dev" / f"{n}.json", dev_items, votes[j], probs[j])
    # "Test" predictions: the first 20 dev rows under other ids.
    for i in range(20):
        it = copy.deepcopy(cci_record)
        it["id"] = f"t-{i:03d}"
        it["output"] = ""
        test_items.append(it)
    test = tmp_path / "test.json"
    test.write_text(json.dumps(test_items, ensure_ascii=False), encoding="utf-8")
    for j, n in enumerate(names):
        _write(tmp_path / "test" / f"{n}.json", test_items, votes[j][:20], probs[j][:20])
    dev_paths = [str(tmp_path / "dev" / f"{n}.json") for n in names]
    test_paths = [str(tmp_path / "test" / f"{n}.json") for n in names]
    members = tmp_path / "members.json"
    assert run_cli(VOTE.main, [*dev_paths, "--gold", str(dev), "--select", str(members), "--folds", "3"]) == 0
    text = capsys.readouterr().out
    assert "3-fold cross-validated" in text and "in-sample" in text
    plan = json.loads(members.read_text())
    chosen = {m["name"]: m["weight"] for m in plan["members"]}
    assert "saboteur" not in chosen and plan["method"] == "weighted"
    assert plan["cross_validation"]["folds"] == 3
    sel = caruana_select(votes, gold, 3, probs=probs, method="weighted")
    assert chosen == {names[j]: int(c) for j, c in enumerate(sel.counts) if c}

    out = tmp_path / "sub.json"
    assert (
        run_cli(
            VOTE.main, [*test_paths, "--members", str(members), "--output", str(out), "--test", str(test)]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "not used: " in text and "saboteur" in text
    # The same vote spelled out by hand: the chosen models, their counts as weights.
    keep = [j for j, c in enumerate(sel.counts) if c]
    by_hand = tmp_path / "by_hand.json"
    assert (
        run_cli(
            VOTE.main,
            [
                *[test_paths[j] for j in keep],
                "--method",
                "weighted",
                "--weights",
                *[str(sel.counts[j]) for j in keep],
                "--priority",
                *[p for p in plan["priority"] if p in chosen],
                "--output",
                str(by_hand),
            ],
        )
        == 0
    )
    got = [r["output"] for r in json.loads(out.read_text())]
    assert got == [r["output"] for r in json.loads(by_hand.read_text())]
