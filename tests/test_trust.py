"""Trust on the newer paths (chat, memory, converters, script_pairs, compare, sessions, text and
CSV readers): one section per defect class of the issue, each refusal checked as in
test_defects.py (exit 2, one line on stderr, no traceback, the folder's files, hashes and modes
unchanged), each silent class by its right output. Every test here failed before its fix.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess

import pytest
from conftest import ROOT, load_script
from test_defects import refused, snapshot

from malpyeong.cli import run_cli
from malpyeong.dialogue import read_lines
from malpyeong.errors import UserError
from malpyeong.inference.predict import PredictionJob

CHAT = load_script("run/chat.py")
MEMORY = load_script("run/memory.py")
CONVERT = load_script("run/convert.py")
SCRIPT_PAIRS = load_script("run/script_pairs.py")
COMPARE = load_script("run/compare.py")
TEST = load_script("run/test.py")
UNPAIRED = load_script("orpo/build_unpaired.py")
VALIDATE = load_script("run/validate.py")
RENDER = load_script("run/render.py")
EVALUATE = load_script("run/evaluate.py")
TRAIN = load_script("run/train.py")
ENTRY = load_script("run/ensemble_entry.py")
MEMORY_STATE = {
    "memory_state": {
        "key_facts": ["A said hello."],
        "unresolved_refs": [],
        "topic": "greeting",
        "turn_count": 2,
    },
    "memory_summary": "A and B greet each other.",
}


def write(path, data: bytes | str):
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ 1. plain text in any encoding

TEXT = "A: Café olé, señor\nB: Naïve façade — “quoted”\n"
LATIN = TEXT.replace("—", "-").replace("“", '"').replace("”", '"')  # Latin-1 has no dash, no quotes


@pytest.mark.parametrize(
    "encoding, text",
    [("utf-8", TEXT), ("utf-8-sig", TEXT), ("utf-16", TEXT), ("cp1252", TEXT), ("latin-1", LATIN)],
)
def test_every_plain_text_input_reads_the_same_encodings(tmp_path, encoding, text, caplog):
    path = write(tmp_path / "lines.txt", text.encode(encoding))  # utf-16 and utf-8-sig: with a BOM
    with caplog.at_level(logging.WARNING, logger="malpyeong.io"):
        assert read_lines(path) == text.splitlines()  # chat --input
        assert MEMORY.read_dialogue(str(path))[1] == {"speaker": "B", "utterance": text.splitlines()[1][3:]}
    legacy = encoding in ("cp1252", "latin-1")
    notes = [r.getMessage() for r in caplog.records if "lines.txt" in r.getMessage()]
    assert len(notes) == 2 * legacy and all(f"read as {encoding}" in n for n in notes)  # once a read


def test_a_latin1_csv_converts(tmp_path, capsys):
    csv = write(tmp_path / "qa.csv", "id,context,question,answer\nq1,Café olé,Où?,Ici\n".encode("latin-1"))
    out = tmp_path / "qa.json"
    argv = ["--from", "flat", "--to", "qa", "--in", csv, "--out", out]
    assert run_cli(CONVERT.main, [str(a) for a in argv]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))[0]["input"]["context"] == "Café olé"


def test_nul_bytes_are_refused_with_their_line(tmp_path, capsys):
    nul = write(tmp_path / "nul.txt", b"A: one\nB: two\nA: th\x00ree\n")
    utf16 = write(tmp_path / "u16.txt", "A: hello\nB: hi\n".encode("utf-16-le"))  # no BOM
    csv = write(tmp_path / "qa.csv", b"context,question\nc,q\x00\n")
    model = ["--model", "nobody/model"]  # never loaded: the input is read first
    refused(
        MEMORY,
        [*model, "--dialogue", nul],
        capsys,
        tmp_path,
        ("nul.txt", "field 'dialogue'", "line 3 holds a NUL byte"),
    )
    refused(
        MEMORY,
        [*model, "--dialogue", utf16],
        capsys,
        tmp_path,
        ("line 1 holds a NUL byte", "UTF-16 saved without a byte-order mark"),
    )
    refused(
        CONVERT,
        ["--from", "flat", "--to", "qa", "--in", csv, "--out", tmp_path / "o.json"],
        capsys,
        tmp_path,
        "line 2 holds a NUL byte",
    )
    blank = write(tmp_path / "blank.txt", "\n  \n")
    chat = ["--model", "nobody/model", "--session", tmp_path / "s.json", "--input", blank]
    refused(CHAT, chat, capsys, tmp_path, ("blank.txt", "field 'input'", "no lines to say"))
    prompt = write(tmp_path / "p.txt", b"You are\x00 kind.")
    refused(
        MEMORY,
        [*model, "--dialogue", write(tmp_path / "ok.txt", "A: hi\n"), "--system_prompt_file", prompt],
        capsys,
        tmp_path,
        ("field 'system_prompt_file'", "line 1 holds a NUL byte"),
    )


# ------------------------------------------------------------------ 2. one check of decoding settings


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--temperature", "nan", "must be a finite number, got nan"),
        ("--temperature", "0", "must be positive"),
        ("--top_p", "5", "must be in (0, 1], got 5.0"),
        ("--top_p", "inf", "must be a finite number"),
        ("--seed", "-1", "must be in [0, 4294967295], got -1"),
        ("--max_new_tokens", "0", "must be at least 1"),
    ],
)
def test_chat_checks_its_sampling_settings_like_prediction(tiny_llama, tmp_path, capsys, flag, value, says):
    lines = write(tmp_path / "lines.txt", "hello\n")
    argv = ["--model", tiny_llama, "--session", tmp_path / "s.json", "--input", lines, flag, value]
    refused(CHAT, argv, capsys, tmp_path, (f"field '{flag[2:]}'", says))


def test_generation_settings_refuse_what_the_decoder_chokes_on():
    from malpyeong.errors import UserError
    from malpyeong.inference.engines import GenerationSettings

    for bad in ({"temperature": float("nan")}, {"top_p": 1.5}, {"num_beams": 0}, {"do_sample": "yes"}):
        with pytest.raises(UserError, match=f"field '{next(iter(bad))}'"):
            GenerationSettings(**bad)
    assert GenerationSettings(temperature=0.7, top_p=0.9, do_sample=True).top_p == 0.9


def test_compare_checks_decoding_settings_before_generating(tiny_models, tmp_path, capsys):
    data = tmp_path / "dev.json"
    data.write_text((ROOT / "resource/data/dcs_dev.json").read_text(encoding="utf-8"), encoding="utf-8")
    models = [tiny_models["llama"], tiny_models["qwen2"]]
    argv = ["--task", "dcs", "--models", *models, "--data", data, "--out", tmp_path / "report"]
    refused(COMPARE, [*argv, "--max_new_tokens", "0"], capsys, tmp_path, "field 'max_new_tokens'")


# ------------------------------------------------------------------ 3. a folder that cannot generate


def test_a_model_without_a_generation_head_is_refused_up_front(tiny_embedder, tiny_llama, tmp_path, capsys):
    lines = write(tmp_path / "lines.txt", "hello\n")
    dialogue = write(tmp_path / "d.txt", "A: hello\n")
    says = (str(tiny_embedder), "is BertModel, an encoder", "no text-generation head")
    refused(
        CHAT,
        ["--model", tiny_embedder, "--session", tmp_path / "s.json", "--input", lines],
        capsys,
        tmp_path,
        ("field 'model'", *says),
    )
    refused(
        MEMORY, ["--model", tiny_embedder, "--dialogue", dialogue], capsys, tmp_path, ("field 'model'", *says)
    )
    refused(
        TEST,
        [
            "--model",
            tiny_embedder,
            "--task",
            "dcs",
            "--input",
            ROOT / "resource/data/dcs_dev.json",
            "--output",
            tmp_path / "r.json",
        ],
        capsys,
        tmp_path,
        says,
    )
    chat = ["--model", tiny_llama, "--session", tmp_path / "s.json", "--input", lines, "--max_length", "256"]
    refused(CHAT, [*chat, "--summarizer", tiny_embedder], capsys, tmp_path, ("field 'summarizer'", *says))


# ------------------------------------------------------------------ 4. outputs never replace inputs


def test_no_output_replaces_an_input(tiny_llama, tmp_path, capsys):
    dialogue = write(tmp_path / "d.txt", "A: hello\nB: hi\n")
    state = write(tmp_path / "state.json", json.dumps(MEMORY_STATE))
    (tmp_path / "hard.txt").hardlink_to(dialogue)
    (tmp_path / "soft.json").symlink_to(state)
    memory = ["--model", tiny_llama, "--dialogue", dialogue, "--state", state, "--overwrite"]
    refused(MEMORY, [*memory, "--out", dialogue], capsys, tmp_path, "--out is also an input (--dialogue)")
    refused(
        MEMORY,
        [*memory, "--out", tmp_path / "hard.txt"],
        capsys,
        tmp_path,
        "--out is also an input (--dialogue)",
    )
    refused(
        MEMORY,
        [*memory, "--out", tmp_path / "soft.json"],
        capsys,
        tmp_path,
        "--out is also an input (--state)",
    )

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    script = write(scripts / "a.txt", "ROSS: Hi there.\nRACHEL: Hello you.\nROSS: How are you?\n")
    pairs = ["--in", scripts, "--overwrite"]
    refused(SCRIPT_PAIRS, [*pairs, "--out", script], capsys, tmp_path, "--out is also an input (--in)")
    refused(
        SCRIPT_PAIRS,
        [*pairs, "--out", scripts / "pairs.txt"],
        capsys,
        tmp_path,
        "the next run would read it as a script",
    )
    refused(
        SCRIPT_PAIRS,
        [*pairs, "--out", tmp_path / "p.jsonl", "--persona", tmp_path / "p.jsonl.report.json"],
        capsys,
        tmp_path,
        "the report is also an input (--persona)",
    )

    lines = write(tmp_path / "lines.txt", "hello\n")
    chat = ["--model", tiny_llama, "--input", lines, "--max_length", "256"]
    refused(
        CHAT,
        [*chat, "--session", tmp_path / "s.json", "--prompts", lines],
        capsys,
        tmp_path,
        "--prompts is also an input (--input)",
    )
    refused(
        CHAT,
        [*chat, "--session", tmp_path / "x.json", "--prompts", tmp_path / "x.json"],
        capsys,
        tmp_path,
        "--prompts and --session are the same path",
    )
    refused(CHAT, [*chat, "--session", lines], capsys, tmp_path, "--session is also an input (--input)")

    data = ROOT / "resource/data/dcs_train.json"
    train = write(tmp_path / "train.json", data.read_bytes())
    argv = ["--task", "dcs", "--data", train, "--out", train, "--overwrite"]
    refused(UNPAIRED, argv, capsys, tmp_path, "--out is also an input (--data)")


# ------------------------------------------------------------------ 5. a failed chat start writes nothing

FAST = ["--memory", "none", "--max_length", "256", "--max_new_tokens", "4"]


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write to (immutable: even root cannot; else read-only by mode)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.getuid() == 0:
        if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here (no chattr)")
    else:
        os.chmod(ro, 0o555)
    yield ro
    if os.getuid() == 0:
        subprocess.run(["chattr", "-i", str(ro)], check=True)
    else:
        os.chmod(ro, 0o755)


def test_a_failed_chat_start_leaves_no_session(tiny_llama, tmp_path, capsys):
    session, lines = tmp_path / "s.json", write(tmp_path / "lines.txt", "hello\n/exit\n")
    argv = ["--model", tiny_llama, *FAST, "--session", session, "--prompts", tmp_path / "p.jsonl"]
    refused(
        CHAT, [*argv, "--input", tmp_path / "lnies.txt"], capsys, tmp_path, ("lnies.txt", "file not found")
    )
    refused(
        CHAT, [*argv, "--input", lines, "--max_length", "9000"], capsys, tmp_path, "--max_length 9000 is over"
    )
    code = run_cli(CHAT.main, [str(a) for a in [*argv, "--input", lines]])  # the corrected rerun
    assert code == 0, capsys.readouterr().err
    assert [t["utterance"] for t in json.loads(session.read_text())["turns"]][:1] == ["hello"]
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 1


def test_a_read_only_session_folder_is_named_before_loading(
    tiny_llama, read_only, tmp_path, capsys, monkeypatch
):
    from malpyeong.io import atomic_write_text

    lines = write(tmp_path / "lines.txt", "hello\n")
    monkeypatch.setattr(CHAT, "load_engine", None)  # never reached
    line = refused(
        CHAT,
        ["--model", tiny_llama, "--session", read_only / "s.json", "--input", lines],
        capsys,
        tmp_path,
        f"cannot write in {read_only}",
    )
    assert line.startswith(f"error: {read_only / 's.json'}: ")
    with pytest.raises(UserError) as err:
        atomic_write_text(read_only / "x.json", "{}")
    assert err.value.file == str(read_only / "x.json") and ".tmp" not in err.value.line()


def test_save_into_a_read_only_folder_is_a_note_not_the_end(tiny_llama, read_only, tmp_path, capsys):
    lines = write(tmp_path / "lines.txt", f"hello\n/save {read_only / 'copy.json'}\n/memory\n")
    argv = ["--model", tiny_llama, *FAST, "--session", tmp_path / "s.json", "--input", lines]
    assert run_cli(CHAT.main, [str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert f"# not saved: {read_only / 'copy.json'}: cannot write here" in out and "# memory (none)" in out


# ------------------------------------------------------------------ 6. resumed session files are checked


def session_file(tmp_path, model, **changes) -> dict:
    """A valid saved session of two turns, with ``changes`` applied (``a.b``: nested keys)."""
    data = {
        "malpyeong_chat": 1,
        "settings": {
            "model": str(model),
            "task": "chat",
            "character": "Mina",
            "memory": "none",
            "max_length": 256,
            "max_new_tokens": 4,
        },
        "turns": [{"speaker": "User", "utterance": "hi"}, {"speaker": "Mina", "utterance": "hello"}],
        "memory": "",
        "folded": 0,
        "log": [{"turn": 0}],
    }
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = data
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        target[int(last) if isinstance(target, list) else last] = value
    return data


def test_a_resumed_session_is_checked_like_a_data_file(tiny_llama, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(CHAT, "load_engine", None)  # every refusal comes before loading
    lines = write(tmp_path / "lines.txt", "more\n")
    cases = [
        ({"turns.1.utterance": None}, "field 'turns[1].utterance': must be text, got null None"),
        (
            {"settings.max_length": "256"},
            "field 'settings.max_length': must be a whole number, got text '256'",
        ),
        ({"settings.do_sample": 1}, "field 'settings.do_sample': must be true or false, got int 1"),
        ({"settings.top_p": 7}, "field 'settings.top_p': must be in (0, 1], got 7"),
        ({"settings.task": "dcs"}, "field 'settings.task': task dcs cannot hold a live chat"),
        ({"settings.prompt": "kk"}, "field 'settings.prompt': unknown prompt"),
        ({"turns": {"0": "hi"}}, "field 'turns': must be a list of turns, got object"),
        ({"folded": 5}, "field 'folded': must be a whole number from 0 to 2 (the turns), got 5"),
        ({"memory": ["x"]}, "field 'memory': must be text (the running summary), got list"),
        ({"settings.temprature": 0.5}, "field 'settings.temprature': unknown setting"),
    ]
    for i, (changes, says) in enumerate(cases):
        path = write(tmp_path / f"s{i}.json", json.dumps(session_file(tmp_path, tiny_llama, **changes)))
        refused(
            CHAT,
            ["--session", path, "--input", lines],
            capsys,
            tmp_path,
            (f"s{i}.json", says, "give another --session"),
        )
    text = json.dumps(session_file(tmp_path, tiny_llama, **{"settings.temperature": 0.5}))
    nan = write(tmp_path / "nan.json", text.replace("0.5", "NaN"))
    refused(
        CHAT,
        ["--session", nan, "--input", lines],
        capsys,
        tmp_path,
        "not valid JSON: NaN is not a JSON number",
    )
    cut = write(tmp_path / "cut.json", text[:-30])
    refused(CHAT, ["--session", cut, "--input", lines], capsys, tmp_path, "not valid JSON (line 1, column")
    two = write(
        tmp_path / "two.json",
        json.dumps(session_file(tmp_path, tiny_llama, **{"turns.0.speaker": 3, "log": 4})),
    )
    assert run_cli(CHAT.main, ["--session", str(two), "--input", str(lines)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "turns[0].speaker" in err[0] and "field 'log'" in err[1], err


# ------------------------------------------------------------------ 7. a rerun continues a scripted chat


def test_rerunning_a_scripted_chat_continues_after_the_answered_lines(
    tiny_llama, tmp_path, capsys, monkeypatch
):
    import malpyeong.dialogue.loop as loop

    session = tmp_path / "s.json"
    lines = write(tmp_path / "lines.txt", "one\ntwo\n\nthree\nfour\n")
    argv = [str(a) for a in ["--model", tiny_llama, *FAST, "--session", session, "--input", lines]]
    replies, real = [], loop.generate_reply

    def reply(engine, task, prompt, settings, turn, out):
        if len(replies) == 2 and not getattr(reply, "resumed", False):
            raise KeyboardInterrupt  # Ctrl-C while the third line is answered
        replies.append(turn)
        return real(engine, task, prompt, settings, turn, out)

    monkeypatch.setattr(loop, "generate_reply", reply)
    assert run_cli(CHAT.main, argv) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    reply.resumed = True
    assert run_cli(CHAT.main, argv) == 0  # the same command again
    out, err = capsys.readouterr()
    assert "continuing" in err and "after its first 2 line(s)" in err
    assert [ln for ln in out.splitlines() if ln.startswith("User: ")] == ["User: three", "User: four"]
    said = [t["utterance"] for t in json.loads(session.read_text())["turns"] if t["speaker"] == "User"]
    assert said == ["one", "two", "three", "four"]  # each line once, in order

    before = session.read_bytes()
    assert run_cli(CHAT.main, argv) == 0
    assert "all 4 line(s)" in capsys.readouterr().err and session.read_bytes() == before
    write(lines, "one\nTWO\nthree\nfour\n")  # an answered line edited
    refused(
        CHAT, argv, capsys, tmp_path, ("lines.txt", "changed since this session read its first 4 line(s)")
    )
    write(lines, "one\ntwo\nthree\nfour\nfive\n")  # a line added at the end
    assert run_cli(CHAT.main, argv) == 0
    said = [t["utterance"] for t in json.loads(session.read_text())["turns"] if t["speaker"] == "User"]
    assert said == ["one", "two", "three", "four", "five"]


# ------------------------------------------------------------------ 8. converters write what validates


def convert(argv, capsys) -> int:
    return run_cli(CONVERT.main, [str(a) for a in ["--from", "flat", "--to", "qa", *argv]])


def test_a_converter_never_writes_what_validate_refuses(tmp_path, capsys):
    dup = write(
        tmp_path / "dup.csv", "id,context,question,answer\nq1,c1,w1?,a1\nq2,c2,w2?,a2\nq1,c3,w3?,a3\n"
    )
    refused(
        CONVERT,
        ["--from", "flat", "--to", "qa", "--in", dup, "--out", tmp_path / "o.json"],
        capsys,
        tmp_path,
        ("dup.csv: item q1: field 'id': duplicate id (2 items share it)", "nothing was written"),
    )
    good = write(
        tmp_path / "good.csv", 'id,context,question,answer\nq1,"c1, with a comma",w1?,a1\nq2,c2,w2?,\n'
    )
    assert convert(["--in", good, "--out", tmp_path / "good.json"], capsys) == 0
    assert run_cli(VALIDATE.main, ["--task", "qa", str(tmp_path / "good.json")]) == 0
    assert "2 qa items (1 with gold output)" in capsys.readouterr().out


def test_the_csv_reader_refuses_ragged_rows_and_repeated_columns_all_at_once(tmp_path, capsys):
    bad = write(
        tmp_path / "bad.csv",
        "id,context,question,answer,answer\nq1,c1,w1?,a1,b1\nq2,c2,w2?,a2,b2,extra\nq3,c3\n\nq4,c4,w4?,a4,b4\n",
    )
    before = snapshot(tmp_path)
    assert convert(["--in", bad, "--out", tmp_path / "o.json"], capsys) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {bad}: item line 1: column 'answer' appears 2 times (columns 4, 5) (every column needs its own name)",
        f"error: {bad}: item row 2 (line 3): 6 fields, the header has 5 (quote a value that holds a comma; give every row every column)",
        f"error: {bad}: item row 3 (line 4): 2 fields, the header has 5 (quote a value that holds a comma; give every row every column)",
    ]
    assert snapshot(tmp_path) == before


def test_row_type_errors_are_named_for_what_they_are(tmp_path, capsys):
    rows = [
        {"context": "c", "question": 7},
        {"context": ["p1", "p2"], "question": "q", "answer": [1]},
        {"context": "", "question": "q"},
    ]
    path = write(tmp_path / "rows.json", json.dumps(rows))
    before = snapshot(tmp_path)
    assert convert(["--in", path, "--out", tmp_path / "o.json"], capsys) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {path}: item row 1: field 'question': is a int, not text",
        f"error: {path}: item row 2: field 'answer': is a list, not text",
        f"error: {path}: item row 3: field 'context': empty",
    ]
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ 9. real splits: DialogSum test, <directions>

# The shape of DialogSum's test split (three summaries and topics per dialogue), in our own words.
DIALOGSUM_TEST = [
    {
        "fname": "test_1",
        "dialogue": "#Person1#: Could you water my plants this weekend?\n#Person2#: Sure, which ones?\n"
        "#Person1#: The ferns on the balcony. They need it twice.",
        "summary1": "#Person1# asks #Person2# to water the balcony ferns twice this weekend.",
        "topic1": "plant care",
        "summary2": "#Person2# agrees to water #Person1#'s ferns over the weekend.",
        "topic2": "favour",
        "summary3": "#Person1# needs the ferns watered while away.",
        "topic3": "watering plants",
    },
    {
        "fname": "test_2",
        "dialogue": "#Person1#: The bus is late again.\n#Person2#: Let's walk, it is only a mile.",
        "summary1": "#Person2# suggests walking because the bus is late.",
        "topic1": "late bus",
        "summary2": "The bus is late, so they decide to walk a mile.",
        "topic2": "commute",
        "summary3": "#Person1# and #Person2# walk instead of waiting.",
        "topic3": "walking",
    },
]


def test_dialogsum_test_split_converts_and_scores_against_every_reference(tmp_path, capsys):
    from malpyeong.data import load_items
    from malpyeong.metrics.memory import rouge1_f, rouge_l_f
    from malpyeong.tasks import get_task

    src = write(tmp_path / "dialogsum.test.jsonl", "".join(json.dumps(r) + "\n" for r in DIALOGSUM_TEST))
    out = tmp_path / "memory_test.json"
    assert (
        run_cli(CONVERT.main, ["--from", "dialogsum", "--to", "memory", "--in", str(src), "--out", str(out)])
        == 0
    )
    assert "2 items with several references" in capsys.readouterr().out
    first = json.loads(out.read_text())[0]
    assert first["output"]["memory_summary"] == DIALOGSUM_TEST[0]["summary1"]
    assert first["output"]["memory_state"]["topic"] == "plant care"
    assert first["references"] == {
        "memory_summary": [DIALOGSUM_TEST[0]["summary2"], DIALOGSUM_TEST[0]["summary3"]],
        "topic": ["favour", "watering plants"],
    }
    assert run_cli(VALIDATE.main, ["--task", "memory", "--gold", str(out)]) == 0

    task = get_task("memory")
    gold = load_items(out, task, require_output=True)
    pred = {it.id: json.loads(json.dumps(it.state)) for it in gold}
    pred["test_1"]["memory_summary"] = DIALOGSUM_TEST[0]["summary2"]  # one reference, word for word
    pred["test_1"]["memory_state"]["topic"] = "watering plants"  # the third topic
    report = task.evaluate(gold, pred)
    refs = [DIALOGSUM_TEST[0][f"summary{i}"] for i in (1, 2, 3)]
    one = sum(rouge1_f(r, refs[1]) for r in refs) / 3  # the mean over the references, not the best (1.0)
    refs2 = [DIALOGSUM_TEST[1][f"summary{i}"] for i in (1, 2, 3)]
    two = sum(rouge1_f(r, refs2[0]) for r in refs2) / 3
    assert report["per_item"]["summary_rouge1"] == pytest.approx([one, two]) and one < 1.0 and two < 1.0
    assert report["summary_rouge1"] == pytest.approx((one + two) / 2)
    assert report["per_item"]["topic_exact"] == [1.0, 1.0]  # exact: any reference
    topics = ["plant care", "favour", "watering plants"]
    assert report["per_item"]["topic_rougeL"][0] == pytest.approx(
        sum(rouge_l_f(t, topics[2]) for t in topics) / 3
    )
    # a single-reference item scores exactly as before
    single = {k: v for k, v in first.items() if k != "references"}
    item = task.parse_item(single, [])
    alone = task.evaluate([item], {item.id: pred["test_1"]})
    assert (
        alone["summary_rouge1"] == pytest.approx(rouge1_f(refs[0], refs[1])) and alone["topic_exact"] == 0.0
    )


def test_angle_bracket_directions_leave_the_utterances(tmp_path, capsys):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    write(
        scripts / "ep.txt",
        "ROSS: <laughs> Hi there, Rachel.\nRACHEL: &lt;to Ross&gt; You came back!\n<Monica enters>\n"
        "MONICA: Hey you two <smiles>.\nROSS: So, what now? I <3 pizza.\n",
    )
    write(
        scripts / "ep.html",
        "<html><body><p><b>Ross:</b> &lt;laughs&gt; Hi there.</p><p><b>Rachel:</b> Hi &amp;lt;waves&amp;gt; back!</p>"
        "<p>&lt;Joey walks in&gt;</p><p><b>Joey:</b> How you doin'?</p></body></html>",
    )
    out = tmp_path / "pairs.jsonl"
    assert run_cli(SCRIPT_PAIRS.main, ["--in", str(scripts), "--out", str(out)]) == 0
    said = {r["output"] for r in map(json.loads, out.read_text().splitlines())}
    said |= {
        u["utterance"]
        for r in map(json.loads, out.read_text().splitlines())
        for u in r["input"]["conversation"]
    }
    assert said == {
        "Hi there, Rachel.",
        "You came back!",
        "Hey you two.",
        "So, what now? I <3 pizza.",
        "Hi there.",
        "Hi back!",
        "How you doin'?",
    }


# ------------------------------------------------------------------ 10. messages name the user's mistake


def chat_run(tiny, folder):
    """A finished run folder of the chat task (its model at the root, as training leaves it)."""
    import shutil

    shutil.copytree(tiny, folder)
    (folder / "malpyeong_run.json").write_text(
        json.dumps(
            {"model": str(tiny), "task": "chat", "prompt": "persona", "merged_dir": ".", "max_length": 256}
        )
    )
    return folder


def test_messages_name_the_users_own_mistake(tiny_llama, tmp_path, capsys, monkeypatch):
    no_tok = tmp_path / "cfgonly"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((tiny_llama / "config.json").read_text())
    data = tmp_path / "notmodel"
    data.mkdir()
    (data / "a.json").write_text("{}")
    dev = write(tmp_path / "dev.json", (ROOT / "resource/data/dcs_dev.json").read_bytes())
    render = ["--task", "dcs", "--data", dev, "--model"]
    line = refused(
        RENDER, [*render, no_tok], capsys, tmp_path, ("cfgonly", "field 'model'", "has no tokenizer")
    )
    assert "Couldn't instantiate" not in line
    refused(
        RENDER,
        [*render, data],
        capsys,
        tmp_path,
        "is not a model folder (no config.json, no tokenizer files)",
    )

    run = chat_run(tiny_llama, tmp_path / "chat_run")
    # nothing generates before every model is checked
    monkeypatch.setattr(PredictionJob, "run", None)
    compare = ["--task", "dcs", "--data", dev, "--out", tmp_path / "report", "--models"]
    refused(
        COMPARE,
        [*compare, tiny_llama, run],
        capsys,
        tmp_path,
        ("chat_run", "this run was trained for task chat, not dcs"),
    )
    refused(COMPARE, [*compare, tiny_llama, data], capsys, tmp_path, ("notmodel", "not a model folder"))
    dialogue = write(tmp_path / "d.txt", "A: hi\n")
    refused(
        MEMORY,
        ["--model", run, "--dialogue", dialogue],
        capsys,
        tmp_path,
        "this run was trained for task chat, not memory",
    )

    lines = write(tmp_path / "lines.txt", "hello\n")
    chat = [
        "--model",
        tiny_llama,
        *FAST,
        "--memory",
        "summary_buffer",
        "--session",
        tmp_path / "s.json",
        "--input",
        lines,
    ]
    refused(
        CHAT, [*chat, "--summarizer", data], capsys, tmp_path, ("field 'summarizer'", "not a model folder")
    )
    refused(
        CHAT, [*chat, "--summarizer", no_tok], capsys, tmp_path, ("field 'summarizer'", "has no tokenizer")
    )

    cut = write(
        tmp_path / "cut.jsonl",
        (ROOT / "resource/data/memory_dev.jsonl").read_text().splitlines()[0] + '\n{"id": "x", "inp\n',
    )
    line = refused(
        VALIDATE,
        ["--task", "memory", cut],
        capsys,
        tmp_path,
        ("line 2, column", "Unterminated string", "(cut short?)"),
    )
    assert "Extra data" not in line
    state = write(
        tmp_path / "state.json", '{"memory_state": {"key_facts": [],\n "topic": "x" "turn_count": 1}}'
    )
    refused(
        MEMORY,
        ["--model", tiny_llama, "--dialogue", dialogue, "--state", state],
        capsys,
        tmp_path,
        "not valid JSON (line 2, column 15: Expecting ',' delimiter)",
    )
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    write(scripts / "ep.txt", "ROSS: Hi there.\nRACHEL: Hello you.\n".encode("utf-16-le"))
    refused(
        SCRIPT_PAIRS,
        ["--in", scripts, "--out", tmp_path / "p.jsonl"],
        capsys,
        tmp_path,
        ("ep.txt", "UTF-16 saved without a byte-order mark"),
    )


# ------------------------------------------------------------------ 11. a metric model the user named


@pytest.mark.parametrize(
    "task, gold, option",
    [
        ("qa", "qa_dev.jsonl", "--embedder"),
        ("qa", "qa_dev.jsonl", "--bertscore_model"),
        ("memory", "memory_dev.jsonl", "--bertscore_model"),
        ("chat", "chat_dev.jsonl", "--bertscore_model"),
    ],
)
def test_a_metric_model_the_user_named_loads_or_stops(tmp_path, capsys, task, gold, option):
    src = ROOT / "resource/data" / gold
    records = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    gold_file = write(tmp_path / gold, src.read_bytes())
    pred = write(tmp_path / "pred.json", json.dumps(records, ensure_ascii=False))
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.txt").write_text("nothing")
    argv = ["--task", task, "--gold", gold_file, "--pred", pred, option, folder]
    refused(
        EVALUATE,
        argv,
        capsys,
        tmp_path,
        ("not-a-model", f"field '{option[2:]}'", "not a model folder (no config.json)"),
    )


def test_the_default_bertscore_model_offline_is_one_notice_without_retries(monkeypatch, caplog):
    import socket
    import time

    import malpyeong.metrics.official as official
    from malpyeong.metrics.chat import chat_scores
    from malpyeong.metrics.qa import qa_scores

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a machine that thinks it is online
    monkeypatch.setattr(official, "_REACHABLE", {}, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(official, "cached_file", lambda *a, **k: None, raising=False)  # no local copy
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        chat = chat_scores(["a b c"], ["a b d"], skip=("perplexity",))
        qa = qa_scores(["a b c"], ["a b d"], [None], [None], only=("bertscore",))
    assert time.monotonic() - start < 10  # no download tried: no retries
    for notices in (chat["notices"], qa["notices"]):
        said = [n for n in notices if n.startswith("bertscore not computed")]
        assert said == [
            "bertscore not computed: the default model 'bert-base-multilingual-cased': not a local folder nor "
            "in the local hub cache, and the hub cannot be reached; pass --bertscore_model with a local copy"
        ]
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]
    assert chat["bertscore"] is None and qa["bertscore"] is None


# ------------------------------------------------------------------ 12. smaller ones


def test_smaller_mistakes_are_one_line(tiny_llama, tmp_path, capsys):
    dev = write(tmp_path / "dev.json", (ROOT / "resource/data/dcs_dev.json").read_bytes())
    refused(
        RENDER,
        ["--task", "dcs", "--data", dev, "--model", tiny_llama, "--n", "-1"],
        capsys,
        tmp_path,
        "field 'n': must be 0 or more, got -1",
    )

    recipe = write(tmp_path / "r.yaml", f"model: {tiny_llama}\nlora_r: 16\ntrain_file: {dev}\nlora_r: 8\n")
    refused(
        TRAIN,
        ["--config", recipe],
        capsys,
        tmp_path,
        ("r.yaml", "key 'lora_r' is given twice (lines 2 and 4)"),
    )
    axolotl = write(
        tmp_path / "ax.yaml",
        f"base_model: {tiny_llama}\nlora_rr: 8\nmicro_bach_size: 2\nsome_new_axolotl_key: 1\n",
    )
    refused(
        CONVERT,
        ["--from", "axolotl", "--to", "recipe", "--in", axolotl, "--out", tmp_path / "r2.yaml"],
        capsys,
        tmp_path,
        "unknown key(s): 'lora_rr' (did you mean 'lora_r'?), 'micro_bach_size' (did you mean 'micro_batch_size'?)",
    )

    dialogue = write(tmp_path / "d.txt", "A: hello\n")
    refused(
        MEMORY,
        ["--model", tiny_llama, "--dialogue", dialogue, "--overwrite"],
        capsys,
        tmp_path,
        "field 'overwrite': --overwrite replaces --out, and no --out is given",
    )

    ds = write(tmp_path / "ds.jsonl", json.dumps(DIALOGSUM_TEST[1]) + "\n")
    line = refused(
        CONVERT,
        [
            "--from",
            "dialogsum",
            "--to",
            "memory",
            "--in",
            ds,
            "--out",
            tmp_path / "m.json",
            "--max_length",
            "100",
        ],
        capsys,
        tmp_path,
        "--max_length do(es) not apply to --from dialogsum --to memory",
    )
    assert "--max_length is for --from qmsum --to memory" in line

    record = json.loads((ROOT / "resource/data/memory_dev.jsonl").read_text(encoding="utf-8").splitlines()[0])
    n = len(record["input"]["conversation"])
    record["output"]["memory_state"]["turn_count"] = n + 3
    gold = write(tmp_path / "gold.jsonl", json.dumps(record, ensure_ascii=False) + "\n")
    refused(
        VALIDATE,
        ["--task", "memory", gold],
        capsys,
        tmp_path,
        f"field 'output.memory_state.turn_count': {n + 3}, but the conversation has {n} utterances",
    )

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes / "a.yaml", f"model: {tiny_llama}\ntrain_file: {dev}\ndev_file: {dev}\n")
    entry = ["--recipes", recipes, "--test", dev]
    refused(
        ENTRY, [*entry, "--out", recipes / "out"], capsys, tmp_path, "--out is inside the --recipes folder"
    )
    refused(ENTRY, [*entry, "--out", tmp_path], capsys, tmp_path, "the input --recipes")


# ------------------------------------------------------------------ 13. repository hygiene


def test_no_session_is_tracked_and_outputs_are_ignored():
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)

    if git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    assert git("ls-files", "sessions", "data").stdout == ""  # a committed session would be resumed
    for path in ("sessions/chat-20250101-000000.json", "sessions/dana.json", "data/dialogsum_memory.json"):
        assert git("check-ignore", "-q", path).returncode == 0, path


@pytest.mark.parametrize(
    "logger, message",
    [
        ("sentence_transformers.base.model", "Saving model to models/tiny-embedder"),
        ("sentence_transformers.SentenceTransformer", "Load pretrained SentenceTransformer: x"),
        ("matplotlib.font_manager", "Matplotlib is building the font cache; this may take a moment."),
    ],
)
def test_library_notices_are_quiet_unless_verbose(logger, message, caplog):
    from malpyeong.cli import quiet_libraries

    for verbose in (False, True):
        caplog.clear()
        quiet_libraries(verbose)
        with caplog.at_level(logging.INFO):  # what run_cli sets for the root logger
            logging.getLogger(logger).setLevel(logging.NOTSET)  # as the library leaves it
            logging.getLogger(logger).warning(message)
            logging.getLogger(logger).info(message)
        assert bool([r for r in caplog.records if r.name == logger]) == verbose
    quiet_libraries(False)
