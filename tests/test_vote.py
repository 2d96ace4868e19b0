"""Voting: input checks, tie rules, weighted and soft voting, calibration, diagnostics."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from malpyeong.cli import run_cli
from malpyeong.ensemble import (
    apply_temperature,
    choice_diagnostics,
    fit_stack,
    fit_temperature,
    nll,
    vote_choices,
)

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("inference_1", "inference_2", "inference_3")


VOTE = load_script("ensemble/vote.py")


def vote(*argv: str) -> int:
    return run_cli(VOTE.main, [str(a) for a in argv])


def cci_items(record: dict, n: int, gold: list[int] | None = None) -> list[dict]:
    """``n`` copies of our own test item with ids v-000..; ``output`` gold label or ""."""
    items = []
    for i in range(n):
        it = copy.deepcopy(record)
        it["id"] = f"v-{i:03d}"
        it["output"] = LABELS[gold[i]] if gold is not None else ""
        items.append(it)
    return items


def write_results(
    path: Path,
    items: list[dict],
    choices: list[int],
    probs: list[list[float]] | None = None,
    task: str = "cci",
) -> Path:
    """A results file (submission layout) and, with ``probs``, its sidecar (results contract)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for it, c in zip(items, choices, strict=True):
        row = copy.deepcopy(it)
        row["output"] = LABELS[c]
        rows.append(row)
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=4), encoding="utf-8")
    if probs is not None:
        lines = [json.dumps({"_meta": {"model": path.stem, "task": task}})]
        lines += [
            json.dumps({"id": r["id"], "output": r["output"], "probs": p})
            for r, p in zip(rows, probs, strict=True)
        ]
        path.with_name(path.stem + ".sidecar.jsonl").write_text("\n".join(lines) + "\n")
    return path


def read_outputs(path: Path) -> list[str]:
    return [r["output"] for r in json.loads(path.read_text(encoding="utf-8"))]


# ----------------------------------------------------------------------------------- ties


def tie_setup(tmp_path: Path, record: dict, with_probs: bool) -> tuple[list[Path], Path]:
    """Item v-000 is a 2-2-1 tie (A, A, B, B, C); item v-001 is a clear A majority."""
    items = cci_items(record, 2)
    votes = [[0, 0], [0, 0], [1, 0], [1, 1], [2, 2]]
    # Summed over all five models on v-000: A = 1.45, B = 2.05 -> B.
    probs = [
        [[0.5, 0.3, 0.2], [0.8, 0.1, 0.1]],
        [[0.4, 0.35, 0.25], [0.7, 0.2, 0.1]],
        [[0.3, 0.4, 0.3], [0.6, 0.2, 0.2]],
        [[0.05, 0.9, 0.05], [0.3, 0.6, 0.1]],
        [[0.2, 0.1, 0.7], [0.1, 0.1, 0.8]],
    ]
    paths = [
        write_results(tmp_path / f"m{j}.json", items, votes[j], probs[j] if with_probs else None)
        for j in range(5)
    ]
    test = tmp_path / "test.json"
    test.write_text(json.dumps(cci_items(record, 2), ensure_ascii=False), encoding="utf-8")
    return paths, test


def test_tie_without_sidecars_is_broken_by_dawid_skene_unless_priority(tmp_path, cci_record, capsys):
    paths, test = tie_setup(tmp_path, cci_record, with_probs=False)
    out = tmp_path / "vote.json"
    # No probabilities, no weights: the models' reliability estimated from their answers. m0 and
    # m1 agree with the clear majority on v-001, m3 and m4 do not: A (m0, m1) wins v-000.
    assert vote(*paths, "--output", out, "--test", test) == 0
    text = capsys.readouterr().out
    assert "1 of 2 ids were ties (1 by dawid_skene)" in text
    assert "v-000: inference_1=2, inference_2=2 -> inference_1 by dawid_skene (posterior " in text
    assert "Dawid-Skene reliability without gold" in text and "m0 0.98" in text
    assert read_outputs(out) == ["inference_1", "inference_1"]
    # --priority stays the explicit override: m3 (voted B) is trusted most -> B.
    assert (
        vote(
            *paths, "--output", out, "--overwrite", "--test", test, "--priority", "m3", "m0", "m1", "m2", "m4"
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "1 of 2 ids were ties (1 by priority)" in text
    assert "v-000: inference_1=2, inference_2=2 -> inference_2 by priority (m3 chose it)" in text
    assert read_outputs(out) == ["inference_2", "inference_1"]


def test_symmetric_answers_still_need_priority(tmp_path, cci_record, capsys):
    """Two models that disagree everywhere, mirror images of each other: no estimate can
    prefer one, so the tie is an error (never the file order)."""
    items = cci_items(cci_record, 2)
    a = write_results(tmp_path / "a.json", items, [0, 1])
    b = write_results(tmp_path / "b.json", items, [1, 0])
    out = tmp_path / "vote.json"
    assert vote(a, b, "--output", out) == 2
    err = capsys.readouterr().err
    assert "2 tie(s) that no rule can break, e.g. v-000" in err and "--priority" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert vote(a, b, "--output", out, "--priority", "b", "a") == 0
    assert read_outputs(out) == ["inference_2", "inference_1"]


def simulated_models(
    tmp_path: Path,
    record: dict,
    n: int = 300,
    m: int = 7,
    acc: float = 0.7,
    seed: int = 0,
    probs: bool = False,
) -> tuple[list[Path], np.ndarray, Path]:
    """``m`` results files of models right with probability ``acc`` on each of ``n`` items,
    wrong answers split evenly; returns the files, the gold and the test file. With ``probs``
    each file has a sidecar whose probabilities are informative (drawn after the votes, which
    stay the same): a model gives the option it chose 0.6-0.95 when it is right and 0.5-0.7
    when it is wrong, the rest split at random between the other options (so its choice is
    always its most probable option)."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, size=n)
    right = rng.random((m, n)) < acc
    wrong = (gold[None, :] + rng.integers(1, 3, size=(m, n))) % 3
    votes = np.where(right, gold[None, :], wrong)
    p = None
    if probs:
        prng = np.random.default_rng(seed + 1)
        conf = np.where(right, 0.6 + 0.35 * prng.random((m, n)), 0.5 + 0.2 * prng.random((m, n)))
        split = prng.dirichlet([1, 1], size=(m, n)) * (1 - conf)[..., None]
        p = np.zeros((m, n, 3))
        for shift in (1, 2):
            np.put_along_axis(p, ((votes + shift) % 3)[..., None], split[..., shift - 1 : shift], axis=2)
        np.put_along_axis(p, votes[..., None], conf[..., None], axis=2)
        p = p.round(6)
    items = cci_items(record, n)
    paths = [
        write_results(
            tmp_path / "results" / f"model{j}.json",
            items,
            votes[j].tolist(),
            None if p is None else p[j].tolist(),
        )
        for j in range(m)
    ]
    test = tmp_path / "test.json"
    test.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return paths, gold, test


def write_gold(path: Path, record: dict, gold: np.ndarray) -> Path:
    path.write_text(
        json.dumps(cci_items(record, len(gold), gold.tolist()), ensure_ascii=False), encoding="utf-8"
    )
    return path


@pytest.mark.parametrize("method", ["hard", "dawid_skene"])
def test_seven_simulated_models_beat_the_best_and_file_order_changes_no_byte(
    tmp_path, cci_record, capsys, method
):
    paths, gold, test = simulated_models(tmp_path, cci_record)
    singles = [float(np.mean([LABELS.index(o) for o in read_outputs(p)] == gold)) for p in paths]
    assert all(0.63 < s < 0.77 for s in singles), singles
    outputs = []
    for k, order in enumerate([paths, paths[::-1], [paths[i] for i in (3, 0, 6, 2, 5, 1, 4)]]):
        out, report = tmp_path / f"vote{k}.json", tmp_path / f"report{k}.json"
        assert vote(*order, "--method", method, "--output", out, "--report", report, "--test", test) == 0
        text = capsys.readouterr().out
        outputs.append((out.read_bytes(), json.loads(report.read_text())))
    acc = float(np.mean([LABELS.index(o) for o in read_outputs(tmp_path / "vote0.json")] == gold))
    assert acc >= max(singles) + 0.1, (acc, singles)  # measured: 0.92 vs best single 0.75
    if method == "hard":
        assert "ids were ties" in text and "by dawid_skene" in text
    assert outputs[1][0] == outputs[0][0] and outputs[2][0] == outputs[0][0]
    for _, rep in outputs[1:]:
        assert rep["ties"] == outputs[0][1]["ties"]
        assert rep["dawid_skene"] == outputs[0][1]["dawid_skene"]


def test_a_folder_written_by_run_test_votes_from_its_glob(tmp_path, cci_record, capsys):
    """``vote.py DIR/*``: the sidecars among the inputs are attached, not read as inputs; a
    folder, an unfinished prediction or a lone sidecar is one line and exit 2."""
    items = cci_items(cci_record, 2)
    folder = tmp_path / "results" / "test"
    probs = [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]
    for j in range(3):
        write_results(folder / f"m{j}.json", items, [0, 1], probs)
    everything = sorted(folder.iterdir())
    assert len(everything) == 6 and sum(p.name.endswith(".sidecar.jsonl") for p in everything) == 3
    out = tmp_path / "sub.json"
    assert vote(*everything, "--output", out) == 0
    text = capsys.readouterr().out
    assert "3 cci results files, 2 items each: m0, m1, m2 (3 sidecar(s) given with them" in text
    assert read_outputs(out) == ["inference_1", "inference_2"]
    (folder / "m3.sidecar.jsonl.partial").write_text('{"_meta": {}}\n', encoding="utf-8")
    lone = tmp_path / "results" / "x.sidecar.jsonl"
    lone.write_text('{"_meta": {}}\n', encoding="utf-8")
    for bad, says in [
        ([folder], "is a folder, not a results file"),
        ([*everything, folder / "m3.sidecar.jsonl.partial"], "an unfinished prediction"),
        ([*everything, lone], "a sidecar without its results file"),
        ([*everything, everything[0]], "given twice"),
    ]:
        assert vote(*bad, "--output", tmp_path / "o.json") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not (tmp_path / "o.json").exists()


def test_tie_with_sidecars_uses_summed_probabilities(tmp_path, cci_record, capsys):
    paths, test = tie_setup(tmp_path, cci_record, with_probs=True)
    out = tmp_path / "vote.json"
    # The priority would say A; the probabilities come first and say B.
    assert vote(*paths, "--output", out, "--test", test, "--priority", "m0", "m1", "m2", "m3", "m4") == 0
    text = capsys.readouterr().out
    assert "1 of 2 ids were ties (1 by probabilities)" in text
    assert "-> inference_2 by probabilities (probabilities 1.4500 vs 2.0500)" in text
    assert read_outputs(out) == ["inference_2", "inference_1"]
    assert "passes the official submission checks" in text


def test_tie_broken_by_weights(tmp_path, cci_record, capsys):
    paths, _ = tie_setup(tmp_path, cci_record, with_probs=False)
    out = tmp_path / "vote.json"
    # A voters weigh 1 + 1, B voters 1 + 3: B.
    assert vote(*paths, "--output", out, "--weights", "1", "1", "1", "3", "1") == 0
    assert "(1 by weights)" in capsys.readouterr().out
    assert read_outputs(out) == ["inference_2", "inference_1"]


def test_vote_choices_chain_order():
    votes = np.array([[0], [0], [1], [1], [2]])
    # Summed probabilities tie too (A = B = 1.8, up to float rounding): the weights decide.
    probs = np.array(
        [[[0.5, 0.4, 0.1]], [[0.5, 0.4, 0.1]], [[0.3, 0.5, 0.2]], [[0.3, 0.5, 0.2]], [[0.2, 0.0, 0.8]]]
    )
    out = vote_choices(votes, 3, "hard", probs=probs, weights=[1, 2, 1, 1, 1])
    assert out.ties[0].rule == "weights" and out.pred.tolist() == [0]
    out = vote_choices(votes, 3, "hard", probs=probs, priority=[4, 2, 0, 1, 3])
    assert out.ties[0].rule == "priority" and out.pred.tolist() == [1]  # m4 voted C: skip
    out = vote_choices(votes, 3, "hard", probs=probs)
    assert out.ties[0].winner is None


# --------------------------------------------------------------------------- input checks


def test_mismatched_id_sets_name_file_and_ids(tmp_path, cci_record, capsys):
    items = cci_items(cci_record, 4)
    a = write_results(tmp_path / "a.json", items, [0, 1, 2, 0])
    b = write_results(tmp_path / "b.json", items[:3], [0, 1, 2])  # lacks v-003
    other = copy.deepcopy(items[3])
    other["id"] = "v-999"
    c = write_results(tmp_path / "c.json", items[:3] + [other], [0, 1, 2, 0])
    out = tmp_path / "vote.json"
    assert vote(a, b, c, "--output", out) == 2
    err = capsys.readouterr().err
    assert f"{b}: field 'id': 1 id(s) of {a} missing: v-003" in err
    assert f"{c}: field 'id': 1 id(s) of {a} missing: v-003; 1 id(s) not in {a}: v-999" in err
    assert not out.exists()


def test_ids_checked_against_test_file(tmp_path, cci_record, capsys):
    items = cci_items(cci_record, 3)
    paths = [write_results(tmp_path / f"m{j}.json", items[:2], [0, 0]) for j in range(3)]
    test = tmp_path / "test.json"
    test.write_text(json.dumps(cci_items(cci_record, 3), ensure_ascii=False), encoding="utf-8")
    assert vote(*paths, "--output", tmp_path / "o.json", "--test", test) == 2
    err = capsys.readouterr().err
    assert err.count(f"1 id(s) of {test} missing: v-002") == 3


def test_duplicate_ids_and_invalid_outputs(tmp_path, cci_record, capsys):
    items = cci_items(cci_record, 2)
    a = write_results(tmp_path / "a.json", items, [0, 1])
    dup = write_results(tmp_path / "dup.json", [items[0], items[0], items[1]], [0, 0, 1])
    bad = write_results(tmp_path / "bad.json", items, [0, 1])
    rows = json.loads(bad.read_text(encoding="utf-8"))
    rows[1]["output"] = "inference_4"
    bad.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert vote(a, dup, bad, "--output", tmp_path / "o.json") == 2
    err = capsys.readouterr().err
    assert f"{dup}: item v-000: field 'id': duplicate id (2 items share it)" in err
    assert f"{bad}: item v-001: field 'output': output 'inference_4' is not one of" in err


def test_stale_sidecar_is_an_error(tmp_path, cci_record, capsys):
    items = cci_items(cci_record, 2)
    a = write_results(tmp_path / "a.json", items, [0, 1], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    side = a.with_name("a.sidecar.jsonl")
    side.write_text("\n".join(side.read_text().splitlines()[:2]) + "\n")  # lost v-001
    b = write_results(tmp_path / "b.json", items, [0, 1])
    assert vote(a, b, "--output", tmp_path / "o.json", "--method", "soft") == 2
    assert "sidecar has no probabilities for 1 id(s): v-001" in capsys.readouterr().err


def test_existing_output_needs_overwrite(tmp_path, cci_record, capsys):
    items = cci_items(cci_record, 1)
    paths = [write_results(tmp_path / f"m{j}.json", items, [0]) for j in range(3)]
    out = tmp_path / "o.json"
    out.write_text("keep")
    assert vote(*paths, "--output", out) == 2
    assert "output exists" in capsys.readouterr().err and out.read_text() == "keep"


# ----------------------------------------------------------------------------- many files


def test_eleven_files(tmp_path, cci_record, capsys):
    n, m = 6, 11
    gold = [0, 1, 2, 0, 1, 2]
    items = cci_items(cci_record, n)
    # Item i gets 6 + i % 3 votes for its gold option (a majority of 11), the rest split.
    paths = []
    for j in range(m):
        choices = []
        for i in range(n):
            right = 6 + i % 3
            choices.append(gold[i] if j < right else (gold[i] + 1 + j % 2) % 3)
        paths.append(write_results(tmp_path / f"model{j:02d}.json", items, choices))
    test = tmp_path / "test.json"
    test.write_text(json.dumps(cci_items(cci_record, n), ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "vote.json"
    assert vote(*paths, "--output", out, "--test", test) == 0
    text = capsys.readouterr().out
    assert "11 cci results files, 6 items each" in text
    assert "0 of 6 ids were ties" in text
    assert read_outputs(out) == [LABELS[g] for g in gold]


# ------------------------------------------------------------------------- soft vs hard


def test_soft_and_hard_disagree_as_constructed(tmp_path, cci_record, capsys):
    items = cci_items(cci_record, 2)
    # v-000: two models lean weakly to A, one is sure of B. Hard: A (2 votes). Soft: mean
    # A = (0.4 + 0.4 + 0.0) / 3 = 0.267, B = (0.35 + 0.35 + 1.0) / 3 = 0.567 -> B.
    # v-001: all agree on C.
    probs = [
        [[0.4, 0.35, 0.25], [0.1, 0.1, 0.8]],
        [[0.4, 0.35, 0.25], [0.2, 0.1, 0.7]],
        [[0.0, 1.0, 0.0], [0.0, 0.1, 0.9]],
    ]
    choices = [[0, 2], [0, 2], [1, 2]]
    paths = [write_results(tmp_path / f"m{j}.json", items, choices[j], probs[j]) for j in range(3)]
    hard, soft = tmp_path / "hard.json", tmp_path / "soft.json"
    assert vote(*paths, "--output", hard) == 0
    assert vote(*paths, "--output", soft, "--method", "soft") == 0
    assert read_outputs(hard) == ["inference_1", "inference_3"]
    assert read_outputs(soft) == ["inference_2", "inference_3"]
    # Weighted: m2 alone (weight 3) outweighs m0 + m1.
    weighted = tmp_path / "weighted.json"
    assert vote(*paths, "--output", weighted, "--method", "weighted", "--weights", "1", "1", "3") == 0
    assert read_outputs(weighted) == ["inference_2", "inference_3"]


def test_seven_independent_models_at_70_percent_vote_above_85():
    """Condorcet: 7 independent 70% models (wrong answers split evenly) -> about 0.93 plurality
    accuracy (0.87 for a strict majority); the tie-break is a fixed priority."""
    rng = np.random.default_rng(1234)
    n, m, k = 5000, 7, 3
    gold = rng.integers(0, k, size=n)
    right = rng.random((m, n)) < 0.7
    wrong = (gold[None, :] + rng.integers(1, k, size=(m, n))) % k
    votes = np.where(right, gold[None, :], wrong)
    singles = (votes == gold).mean(axis=1)
    assert np.all(np.abs(singles - 0.7) < 0.03)
    out = vote_choices(votes, k, "hard", priority=list(range(m)))
    acc = float((out.pred == gold).mean())
    assert acc > 0.85
    assert all(t.rule == "priority" for t in out.ties)


# ------------------------------------------------------------------- calibration, diagnostics


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(7)
    n = 6000
    logits = rng.normal(0, 1.5, size=(n, 3))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    gold = np.array([rng.choice(3, p=p) for p in true])
    reported = apply_temperature(true, 1 / 3)  # three times too sharp
    t = fit_temperature(reported, gold)
    assert abs(t - 3.0) < 0.3
    assert nll(apply_temperature(reported, t), gold) < nll(reported, gold)
    # Calibrated probabilities already: T stays about 1.
    assert abs(fit_temperature(true, gold) - 1.0) < 0.1


def test_diagnostics_exact_values():
    gold = np.array([0, 1, 2, 0])
    votes = np.array(
        [
            [0, 1, 2, 1],  # 3/4
            [0, 1, 0, 0],  # 3/4
            [1, 1, 2, 2],
        ]
    )  # 2/4
    d = choice_diagnostics(["a", "b", "c"], votes, gold, np.array([0, 1, 2, 0]))
    assert d["accuracy"] == {"a": 0.75, "b": 0.75, "c": 0.5}
    assert d["agreement"][0] == [1.0, 0.5, 0.5]
    assert d["oracle"] == 1.0 and d["ensemble"] == 1.0 and d["all_wrong"] == 0.0
    # a errs on item 3, b on item 2: error indicators (0,0,0,1) and (0,0,1,0): phi = -1/3.
    assert d["error_correlation"][0][1] == pytest.approx(-1 / 3)


def test_gold_report_weights_and_calibration(tmp_path, cci_record, capsys):
    gold = [0, 1, 2, 0, 1, 2]
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(cci_items(cci_record, 6, gold), ensure_ascii=False), encoding="utf-8")
    items = cci_items(cci_record, 6)
    choices = [[0, 1, 2, 0, 1, 0], [0, 1, 2, 1, 1, 2], [1, 1, 2, 0, 0, 2]]
    probs = [[[0.9 if c == o else 0.05 for o in range(3)] for c in ch] for ch in choices]
    paths = [write_results(tmp_path / f"m{j}.json", items, choices[j], probs[j]) for j in range(3)]
    out = tmp_path / "w.json"
    assert vote(*paths, "--gold", dev, "--method", "weighted", "--output", out) == 0
    text = capsys.readouterr().out
    assert "weights = dev accuracy: m0 0.8333, m1 0.8333, m2 0.6667" in text
    assert "ensemble accuracy 1.0000 (best single 0.8333)" in text
    assert "oracle (any model right) 1.0000" in text
    assert "agreement" in text and "error corr." in text
    assert vote(*paths, "--gold", dev, "--method", "soft", "--calibrate") == 0
    text = capsys.readouterr().out
    assert "temperature calibration on dev" in text and "m0: T=" in text


def test_dev_results_matched_by_name(tmp_path, cci_record, capsys):
    gold = [0, 1, 2]
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(cci_items(cci_record, 3, gold), ensure_ascii=False), encoding="utf-8")
    test_items = cci_items(cci_record, 2)
    for it in test_items:
        it["id"] = it["id"].replace("v-", "t-")
    test = tmp_path / "test.json"
    test.write_text(json.dumps(test_items, ensure_ascii=False), encoding="utf-8")
    dev_items = cci_items(cci_record, 3)
    dpaths = [
        write_results(tmp_path / "dev" / f"m{j}.json", dev_items, c)
        for j, c in enumerate([[0, 1, 2], [0, 1, 0], [1, 0, 2]])
    ]
    tpaths = [
        write_results(tmp_path / "test" / f"m{j}.json", test_items, c)
        for j, c in enumerate([[0, 1], [1, 1], [1, 0]])
    ]
    out = tmp_path / "sub.json"
    # Hard vote on test; v-000 ... t-000: votes A, B, B -> B; t-001: B, B, A -> B.
    assert vote(*tpaths, "--dev-results", *dpaths, "--gold", dev, "--output", out, "--test", test) == 0
    assert read_outputs(out) == ["inference_2", "inference_2"]
    text = capsys.readouterr().out
    assert "dev diagnostics (3 items)" in text
    # Without --dev-results the test predictions cannot be scored against dev.
    assert vote(*tpaths, "--gold", dev, "--output", out, "--overwrite") == 2
    assert "--dev-results" in capsys.readouterr().err


def test_soft_without_sidecars_names_the_files(tmp_path, cci_record, capsys):
    items = cci_items(cci_record, 1)
    a = write_results(tmp_path / "a.json", items, [0], [[0.6, 0.2, 0.2]])
    b = write_results(tmp_path / "b.json", items, [1])
    assert vote(a, b, "--method", "soft", "--output", tmp_path / "o.json") == 2
    err = capsys.readouterr().err
    assert f"no sidecar with probs for: {b}" in err and str(a) + "," not in err


def test_vote_on_the_glob_of_a_folder_run_test_wrote(tiny_llama, tmp_path, capsys):
    """The command the card gives: run/test.py into one folder, then vote.py FOLDER/*."""
    test_py = load_script("run/test.py")
    folder = tmp_path / "results" / "test"
    for prompt in ("baseline", "highlight", "definitions"):
        assert (
            run_cli(
                test_py.main,
                [
                    "--model",
                    str(tiny_llama),
                    "--task",
                    "cci",
                    "--input",
                    str(ROOT / "resource/data/cci_test.json"),
                    "--output",
                    str(folder / f"{prompt}.json"),
                    "--prompt",
                    prompt,
                    "--max_length",
                    "512",
                    "--no_progress",
                ],
            )
            == 0
        )
    capsys.readouterr()
    everything = sorted(folder.iterdir())
    assert [p.name for p in everything] == [
        "baseline.json",
        "baseline.sidecar.jsonl",
        "definitions.json",
        "definitions.sidecar.jsonl",
        "highlight.json",
        "highlight.sidecar.jsonl",
    ]
    out = tmp_path / "submission.json"
    assert vote(*everything, "--output", out, "--test", ROOT / "resource/data/cci_test.json") == 0
    text = capsys.readouterr().out
    assert "3 cci results files, 18 items each: baseline, definitions, highlight" in text
    assert "passes the official submission checks" in text
    assert vote(*everything[::-1], "--output", tmp_path / "again.json") == 0
    assert (tmp_path / "again.json").read_bytes() == out.read_bytes()


# ------------------------------------------------------------------------------- stacking


def test_stack_on_the_seven_simulated_models_reports_cross_validated_accuracy_beside_hard_voting(
    tmp_path, cci_record, capsys
):
    """The done-when figure: on the simulated seven-model set (with sidecars) the stack's
    5-fold cross-validated dev accuracy is printed beside hard voting's (the same figure
    ``--method hard`` reports), soft voting's and the best single model's; the file order and a
    second run change no byte of the submission."""
    paths, gold, test = simulated_models(tmp_path, cci_record, probs=True)
    dev = write_gold(tmp_path / "dev.json", cci_record, gold)
    out, report = tmp_path / "stack.json", tmp_path / "report.json"
    argv = ("--gold", dev, "--method", "stack", "--test", test)
    assert vote(*paths, *argv, "--output", out, "--report", report) == 0
    text = capsys.readouterr().out
    assert "fitted on 300 dev items (C = 100, chosen by 5-fold cross-validation)" in text
    assert (
        "dev accuracy (300 items; the stack's pooled over its 5 held-out folds, seed 0):\n"
        "  stack        0.9867\n"
        "  hard vote    0.9467\n"
        "  soft vote    0.9733\n"
        "  best single  0.7533 (model6; picked on the training folds instead: 0.7533)\n"
    ) in text
    assert "ensemble accuracy 0.9867, 5-fold cross-validated (best single 0.7533)" in text
    assert "stack: 0 of 300 ids were ties" in text
    assert "passes the official submission checks" in text
    rep = json.loads(report.read_text())
    assert rep["method"] == "stack" and rep["dev"]["ensemble"] == pytest.approx(296 / 300)
    stack = rep["stack"]
    assert stack["folds"] == 5 and stack["seed"] == 0 and stack["C"] == 100.0
    assert stack["cv_accuracy"] == pytest.approx(296 / 300)
    assert stack["dev_accuracy"]["hard"] == pytest.approx(284 / 300)
    assert sorted(stack["coefficients"]) == [f"model{j}" for j in range(7)]
    assert all(c["probability"] > 0 for c in stack["coefficients"].values())
    assert sum(f["n"] for f in stack["per_fold"]) == 300
    # Hard voting itself reports the same dev accuracy.
    assert vote(*paths, "--gold", dev, "--method", "hard") == 0
    assert "ensemble accuracy 0.9467 (best single 0.7533)" in capsys.readouterr().out
    again, report2 = tmp_path / "again.json", tmp_path / "report2.json"
    assert vote(*paths[::-1], *argv, "--output", again, "--report", report2) == 0
    capsys.readouterr()
    assert again.read_bytes() == out.read_bytes()
    assert json.loads(report2.read_text())["stack"] == stack


def _sharp_and_noise(rng: np.random.Generator, gold: np.ndarray, acc: float) -> tuple[list, list, list]:
    """Choices and probabilities of three members: ``sharp`` (right with probability ``acc``,
    0.9 on its choice when right and 0.45 when wrong) and two noise members (random choices,
    0.5 on them)."""
    n = len(gold)
    right = rng.random(n) < acc
    sharp = np.where(right, gold, (gold + rng.integers(1, 3, size=n)) % 3)
    noise = rng.integers(0, 3, size=(2, n))
    choices = [sharp, *noise]
    confs = [np.where(right, 0.9, 0.45), np.full(n, 0.5), np.full(n, 0.5)]
    probs = []
    for c, conf in zip(choices, confs, strict=True):
        p = np.repeat(((1 - conf) / 2)[:, None], 3, axis=1)
        p[np.arange(n), c] = conf
        probs.append(p.tolist())
    return [c.tolist() for c in choices], probs, ["sharp", "noise1", "noise2"]


def test_stack_fitted_on_dev_answers_the_test_set_where_the_majority_is_wrong(tmp_path, cci_record, capsys):
    """Fitted on dev predictions (--dev-results), the stack trusts the informative member and
    answers the test items where the two noise members outvote it; hard voting does not."""
    rng = np.random.default_rng(5)
    gold = np.tile([0, 1, 2], 20)
    choices, probs, names = _sharp_and_noise(rng, gold, 0.8)
    dev_items = cci_items(cci_record, 60)
    dpaths = [
        write_results(tmp_path / "dev" / f"{n}.json", dev_items, c, p)
        for n, c, p in zip(names, choices, probs, strict=True)
    ]
    dev = write_gold(tmp_path / "dev.json", cci_record, gold)
    test_items = cci_items(cci_record, 6)
    for it in test_items:
        it["id"] = it["id"].replace("v-", "t-")
    test = tmp_path / "test.json"
    test.write_text(json.dumps(test_items, ensure_ascii=False), encoding="utf-8")
    tgold = [0, 1, 2, 0, 1, 2]
    wrong = [(g + 1) % 3 for g in tgold]
    sure = [[0.9 if o == g else 0.05 for o in range(3)] for g in tgold]
    unsure = [[0.5 if o == w else 0.25 for o in range(3)] for w in wrong]
    tpaths = [write_results(tmp_path / "test" / "sharp.json", test_items, tgold, sure)] + [
        write_results(tmp_path / "test" / f"{n}.json", test_items, wrong, unsure) for n in names[1:]
    ]
    out, hard, report = tmp_path / "stack.json", tmp_path / "hard.json", tmp_path / "report.json"
    common = ("--dev-results", *dpaths, "--gold", dev, "--test", test)
    assert vote(*tpaths, *common, "--method", "stack", "--output", out, "--report", report) == 0
    text = capsys.readouterr().out
    assert read_outputs(out) == [LABELS[g] for g in tgold]
    assert "  stack        0.8833\n  hard vote    0.6667\n" in text
    assert "  best single  0.7500 (sharp; picked on the training folds instead: 0.7500)" in text
    coef = json.loads(report.read_text())["stack"]["coefficients"]
    assert coef["sharp"]["probability"] > 3 * max(abs(coef[n]["probability"]) for n in names[1:])
    assert vote(*tpaths, *common, "--method", "hard", "--output", hard) == 0
    assert read_outputs(hard) == [LABELS[w] for w in wrong]


def test_informative_probabilities_weigh_more_than_noise():
    """Two members whose choices are equally accurate: the one whose probabilities say when it
    is right gets the larger probability weight; a third member answering at random gets about
    none."""
    rng = np.random.default_rng(11)
    n = 240
    gold = rng.integers(0, 3, size=n)
    votes, probs = [], []
    for informative in (True, False):
        right = rng.random(n) < 0.7
        v = np.where(right, gold, (gold + rng.integers(1, 3, size=n)) % 3)
        conf = np.where(right, 0.85, 0.45) if informative else rng.uniform(0.45, 0.85, size=n)
        p = np.repeat(((1 - conf) / 2)[:, None], 3, axis=1)
        p[np.arange(n), v] = conf
        votes.append(v)
        probs.append(p)
    v = rng.integers(0, 3, size=n)
    p = rng.dirichlet([1, 1, 1], size=n)
    votes.append(v)
    probs.append(p)
    model = fit_stack(np.array(votes), np.array(probs), gold, folds=5, seed=0)
    informative, flat, noise = model.weights
    assert informative[0] > flat[0] + 1 and informative[0] > 5 * abs(noise[0])
    assert abs(noise[1]) < min(informative[1] + informative[0] / 2, flat[1] + flat[0] / 2)


def test_stack_refuses_what_it_cannot_fit(tmp_path, cci_record, capsys):
    """One line and exit 2, nothing written: no gold, a member without probabilities, a dev set
    too small for the folds, and options the stack decides itself."""
    gold = np.tile([0, 1, 2], 4)  # 4 items per option
    items = cci_items(cci_record, 12)
    probs = [[0.8 if o == g else 0.1 for o in range(3)] for g in gold]
    a = write_results(tmp_path / "a.json", items, gold.tolist(), probs)
    b = write_results(tmp_path / "b.json", items, gold.tolist(), probs)
    bare = write_results(tmp_path / "bare.json", items, gold.tolist())
    dev = write_gold(tmp_path / "dev.json", cci_record, gold)
    out = tmp_path / "o.json"
    for argv, says in [
        ((a, b), "--method stack fits its meta-learner on dev: it needs --gold DEV.json"),
        ((a, bare, "--gold", dev), f"no sidecar with probs for: {bare}"),
        (
            (a, b, "--gold", dev),
            "dev has only 4 item(s) whose answer is inference_1; 5-fold cross-validation of the "
            "stack needs at least 10 of each answer",
        ),
        ((a, b, "--gold", dev, "--folds", "3"), "needs at least 6 of each answer"),
        ((a, b, "--gold", dev, "--weights", "1", "2"), "--method stack learns each member's weight itself"),
        ((a, b, "--gold", dev, "--calibrate"), "--method stack learns each member's weight itself"),
    ]:
        assert vote(*argv, "--method", "stack", "--output", out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not out.exists()
    assert vote(a, b, "--gold", dev, "--method", "stack", "--folds", "3") == 2
    assert "(pass --folds 2, or use a larger dev set)" in capsys.readouterr().err
    assert vote(a, b, "--gold", dev, "--method", "stack", "--folds", "2", "--output", out) == 0
    assert read_outputs(out) == [LABELS[g] for g in gold]
