"""Scripts to dialogue pairs on our own hand-made scripts: exact records for plain text, HTML
and Word files, stage directions (nested, wrapped), several speakers, a character filter,
encodings, and the command line with its report."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, SAMPLES, load_script

from malpyeong.cli import run_cli
from malpyeong.data import load_items
from malpyeong.prep.screenplays import (
    PairOptions,
    build_pairs,
    decode_bytes,
    parse_source,
    read_source,
    strip_directions,
)
from malpyeong.tasks import get_task

KITCHEN = """\
Written by: Test Writer
[Scene: A kitchen. Ana is cooking.]
Ana: (stirring (slowly)) Dinner is almost ready.
BEN: Great, I'm starving. (He sits down.) What
are we having? (looking
at the pot)
ana: Soup. {Note: she lies.}
(Ben sniffs the air.)
Ben: Smells like soup.
Ana and Ben: Soup!
Commercial Break
[Scene: The living room.]
Cleo: Who made soup?
Ben: (pointing) She did.
(a long pause)
Ben: Nobody else would.
End
"""

ROOF = """<html><head><title>Roof (ours)</title></head><body>
<h1>The Roof</h1>
<p>Transcribed by: nobody in particular</p>
<p>[Scene: A rooftop at dusk.]</p>
<p><b>Hana:</b> Tom &amp; I saw the &quot;big&quot; moon&nbsp;rise.</p>
<p><b>Tom</b>: It was huge. (He spreads
his arms wide.) Like a plate.</p>
<p><strong>Hana:</strong> A very small plate.</p>
<p>(Tom sulks.)</p>
<p><b>Tom:</b> Fine.<br>
A saucer, then.<br>
<br>
<b>Hana:</b> Thank you.<br>
<b>[Scene: The stairs.]</b><br>
<b>Tom:</b> Who left the door open?<br>
<b>Hana:</b> Not me &#8212; the wind.</p>
</body></html>
"""


def pairs_of(tmp_path, name: str, text: str | bytes, **options) -> tuple[list[dict], object]:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    keep_multi = options.pop("keep_multi", True)
    episode = parse_source(read_source(path), keep_multi=keep_multi)
    return build_pairs([episode], PairOptions(**options))


def brief(records: list[dict]) -> list[tuple]:
    return [
        (
            r["id"],
            [(c["speaker"], c["utterance"]) for c in r["input"]["conversation"]],
            r["input"]["speaker"],
            r["output"],
        )
        for r in records
    ]


def test_plain_text_golden_pairs(tmp_path):
    records, report = pairs_of(tmp_path, "kitchen.txt", KITCHEN, context=2)
    assert brief(records) == [
        (
            "kitchen-001-001",
            [("Ana", "Dinner is almost ready.")],
            "Ben",
            "Great, I'm starving. What are we having?",
        ),
        (
            "kitchen-001-002",
            [("Ana", "Dinner is almost ready."), ("Ben", "Great, I'm starving. What are we having?")],
            "Ana",
            "Soup.",
        ),
        (
            "kitchen-001-003",
            [("Ben", "Great, I'm starving. What are we having?"), ("Ana", "Soup.")],
            "Ben",
            "Smells like soup.",
        ),
        ("kitchen-001-004", [("Ana", "Soup."), ("Ben", "Smells like soup.")], "Ana and Ben", "Soup!"),
        # a new scene after the commercial break: the context starts again
        ("kitchen-002-001", [("Cleo", "Who made soup?")], "Ben", "She did. Nobody else would."),
    ]
    d = report.as_dict()
    assert (d["lines_read"], d["spoken_lines"], d["continuation_lines"], d["turns"]) == (17, 8, 2, 7)
    assert d["dropped_lines"] == {
        "scene_heading": 2,
        "stage_direction": 2,
        "credits": 1,
        "commercial_break": 1,
        "end": 1,
    }
    assert d["lines_read"] == d["spoken_lines"] + d["continuation_lines"] + sum(d["dropped_lines"].values())
    assert d["skipped_pairs"] == {"first_turn": 2}
    assert d["top_speakers"][0] == ("Ben", 4)


def test_html_golden_pairs(tmp_path):
    records, report = pairs_of(tmp_path, "roof.html", ROOF, context=3)
    assert brief(records) == [
        ("roof-001-001", [("Hana", 'Tom & I saw the "big" moon rise.')], "Tom", "It was huge. Like a plate."),
        (
            "roof-001-002",
            [("Hana", 'Tom & I saw the "big" moon rise.'), ("Tom", "It was huge. Like a plate.")],
            "Hana",
            "A very small plate.",
        ),
        (
            "roof-001-003",
            [
                ("Hana", 'Tom & I saw the "big" moon rise.'),
                ("Tom", "It was huge. Like a plate."),
                ("Hana", "A very small plate."),
            ],
            "Tom",
            "Fine. A saucer, then.",
        ),
        (
            "roof-001-004",
            [
                ("Tom", "It was huge. Like a plate."),
                ("Hana", "A very small plate."),
                ("Tom", "Fine. A saucer, then."),
            ],
            "Hana",
            "Thank you.",
        ),
        ("roof-002-001", [("Tom", "Who left the door open?")], "Hana", "Not me — the wind."),
    ]
    d = report.as_dict()
    assert d["dropped_lines"] == {"scene_heading": 2, "stage_direction": 1, "credits": 1, "title": 1}
    assert d["continuation_lines"] == 1  # "A saucer, then." after <br>


def test_docx_golden_pairs(tmp_path):
    docx = pytest.importorskip("docx")
    doc = docx.Document()
    doc.add_paragraph("[Scene: A bus stop at night.]")
    para = doc.add_paragraph()
    para.add_run("Dara: Is the last bus gone? (checking").add_break()  # a soft line break
    para.add_run("her watch) It is late.")
    doc.add_paragraph("Eli: It left five minutes ago.")
    row = doc.add_table(rows=1, cols=2).rows[0]
    row.cells[0].text, row.cells[1].text = "Dara", "Then we walk."
    doc.add_paragraph("Eli: (sighing) We walk.")
    doc.save(tmp_path / "bus.docx")
    episode = parse_source(read_source(tmp_path / "bus.docx"))
    records, report = build_pairs([episode], PairOptions(context=4))
    assert episode.encoding == "docx"
    assert brief(records) == [
        ("bus-001-001", [("Dara", "Is the last bus gone? It is late.")], "Eli", "It left five minutes ago."),
        (
            "bus-001-002",
            [("Dara", "Is the last bus gone? It is late."), ("Eli", "It left five minutes ago.")],
            "Dara",
            "Then we walk.",
        ),
        (
            "bus-001-003",
            [
                ("Dara", "Is the last bus gone? It is late."),
                ("Eli", "It left five minutes ago."),
                ("Dara", "Then we walk."),
            ],
            "Eli",
            "We walk.",
        ),
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hi (waves) there.", "Hi there."),
        ("(stirring (slowly)) Ready.", "Ready."),  # nested: the whole direction goes
        ("A (one) b (two) c.", "A b c."),  # non-greedy: the speech between two directions stays
        ("Look [pointing] up {note: sky} now", "Look up now"),
        ("Fine ( he sighs", "Fine"),  # never closed: a direction cut short
        ("Fine) really.", "Fine really."),  # a stray closing bracket
        ("Well ( laughs ) , okay .", "Well, okay."),
        ("Tom &amp; Jerry", "Tom & Jerry"),
    ],
)
def test_directions_are_removed_bracket_by_bracket(text, expected):
    assert strip_directions(text) == expected


def test_several_speakers_kept_or_dropped_and_character_filter(tmp_path):
    kept, _ = pairs_of(tmp_path, "k.txt", KITCHEN, context=1)
    assert [r["input"]["speaker"] for r in kept] == ["Ben", "Ana", "Ben", "Ana and Ben", "Ben"]
    dropped, report = pairs_of(tmp_path, "k.txt", KITCHEN, context=1, keep_multi=False)
    assert [r["input"]["speaker"] for r in dropped] == ["Ben", "Ana", "Ben", "Ben"]
    assert report.as_dict()["dropped_lines"]["multi_speaker"] == 1
    ben, report = pairs_of(tmp_path, "k.txt", KITCHEN, context=1, character="BEN ")
    assert [r["output"] for r in ben] == [
        "Great, I'm starving. What are we having?",
        "Smells like soup.",
        "She did. Nobody else would.",
    ]
    assert report.as_dict()["skipped_pairs"] == {"first_turn": 2, "other_speaker": 2}
    short, report = pairs_of(tmp_path, "k.txt", KITCHEN, context=1, min_words=2)
    assert "Soup." not in [r["output"] for r in short]
    assert report.as_dict()["skipped_pairs"]["short_reply"] == 2


def test_consecutive_lines_of_one_speaker_kept_apart_on_request(tmp_path):
    records, report = pairs_of(tmp_path, "k.txt", KITCHEN, context=1, merge_consecutive=False)
    assert records[-1]["input"]["conversation"] == [{"speaker": "Ben", "utterance": "She did."}]
    assert records[-1]["output"] == "Nobody else would."
    assert report.turns == 8


def test_speakers_normalised_and_aliased(tmp_path):
    text = "MONICA: Hi.\nJoey : Hey.\nmonica  : How are you?\nMNCA: Fine.\nMR. GELLER: Kids!\n"
    records, report = pairs_of(tmp_path, "n.txt", text, aliases={"mnca": "Monica"})
    assert [(r["input"]["speaker"], r["output"]) for r in records] == [
        ("Joey", "Hey."),
        ("Monica", "How are you? Fine."),
        ("Mr. Geller", "Kids!"),
    ]
    assert dict(report.speakers) == {"Monica": 3, "Joey": 1, "Mr. Geller": 1}


@pytest.mark.parametrize(
    "raw, encoding, line",
    [
        ("Ana: It’s mine.\n".encode("cp1252"), "cp1252", "It’s mine."),
        ("Ana: ¿Qué pasa?\n".encode("latin-1"), "latin-1", "¿Qué pasa?"),
        (
            "민지: 안녕하세요, 오늘 날씨가 좋네요.\n".encode("cp949"),
            "cp949",
            "안녕하세요, 오늘 날씨가 좋네요.",
        ),
        ("\ufeffAna: Hello.\n".encode("utf-8"), "utf-8-sig", "Hello."),
        ("Ana: 안녕.\n".encode(), "utf-8", "안녕."),
    ],
)
def test_encodings_detected(tmp_path, raw, encoding, line):
    text, found = decode_bytes(raw)
    assert found == encoding
    path = tmp_path / "e.txt"
    path.write_bytes(raw + b"Bo: Ok.\n")
    episode = parse_source(read_source(path))
    assert episode.scenes[0][0].text == line


def test_any_bytes_read_without_crashing(tmp_path):
    path = tmp_path / "junk.html"
    path.write_bytes(bytes(range(256)) * 4 + b"<p><b>Ana:</b> Still here.</p>")
    episode = parse_source(read_source(path))
    assert episode.encoding == "latin-1"
    assert episode.scenes[-1][-1].text == "Still here."


def test_cli_writes_pairs_and_report(tmp_path, capsys):
    src = tmp_path / "kitchen.txt"
    src.write_text(KITCHEN, encoding="utf-8")
    out = tmp_path / "pairs.jsonl"
    main = load_script(ROOT / "run" / "script_pairs.py").main
    assert run_cli(main, ["--in", str(src), "--out", str(out), "--character", "Ben"]) == 0
    shown = capsys.readouterr().out
    assert "lines read    17: 8 spoken, 2 continuing a speech, 7 dropped" in shown
    assert "pairs written 3 (skipped: first_turn 2, other_speaker 2)" in shown
    assert len(load_items(out, get_task("chat"), require_output=True)) == 3
    report = json.loads((tmp_path / "pairs.jsonl.report.json").read_text(encoding="utf-8"))
    assert report["pairs_written"] == 3 and report["scenes"] == 2
    assert run_cli(main, ["--in", str(src), "--out", str(out)]) == 2  # exists: no overwrite
    assert "output exists" in capsys.readouterr().err
    assert run_cli(main, ["--in", str(src), "--out", str(tmp_path / "x.jsonl"), "--character", "Zed"]) == 2
    assert "no dialogue pairs found" in capsys.readouterr().err
    assert run_cli(main, ["--in", str(tmp_path / "none.txt"), "--out", str(tmp_path / "y.json")]) == 2


def test_shipped_samples(tmp_path, capsys):
    out = tmp_path / "samples.json"
    main = load_script(ROOT / "run" / "script_pairs.py").main
    assert (
        run_cli(
            main,
            [
                "--in",
                str(SAMPLES / "scripts"),
                "--out",
                str(out),
                "--persona",
                str(SAMPLES / "scripts" / "personas.yaml"),
            ],
        )
        == 0
    )
    shown = capsys.readouterr().out
    assert "episodes      4 (4 utf-8)" in shown and "pairs written 68" in shown
    items = load_items(out, get_task("chat"), require_output=True)
    with_persona = {it.speaker for it in items if it.persona}
    assert with_persona == {"Mina", "Jake", "민지", "준호"}
    text = "\n".join([it.reply for it in items] + [u.utterance for it in items for u in it.conversation])
    for leak in ("(", ")", "[", "]", "{", "}", "&amp;", "Scene", "장면", "각본"):
        assert leak not in text
