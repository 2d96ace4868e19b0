"""Scripts to pairs on real, messy transcripts: the Friends pages of ../shared/data (never
copied into the project; the test skips without them).

The spoken lines are counted here independently of the parser: regular expressions on the raw
pages (blocks cut at <p>, <br>, headings; markup stripped; a block that starts with a speaker
label and holds a word once bracketed directions are removed is a spoken line). The parser's
lines are aligned with them by (speaker, first words) and must recover at least 98%; its
scenes must each fall inside one scene of the independent count; no utterance may keep a
bracket, a tag, an entity, a scene heading or the words of a direction found on the page.
"""

from __future__ import annotations

import difflib
import html
import re
from pathlib import Path

import pytest
from conftest import ROOT

from malpyeong.prep.screenplays import PairOptions, SpeakerNames, build_pairs, parse_source, read_source
from malpyeong.prep.screenplays.replies import scene_turns

# ../shared next to the checkout (a worktree sits one level deeper)
FRIENDS = next(
    (
        p / "shared" / "data" / "scripts" / "friends"
        for p in (ROOT.parent, ROOT.parent.parent)
        if (p / "shared" / "data" / "scripts" / "friends").is_dir()
    ),
    ROOT.parent / "shared" / "data" / "scripts" / "friends",
)
pytestmark = pytest.mark.skipif(not FRIENDS.is_dir(), reason="no Friends transcripts here")

LABEL = re.compile(r"^([A-Za-z][A-Za-z0-9 .,'&/#-]{0,39}?)\s*(?:\([^)]*\)|\[[^\]]*\])?\s*:\s*(.*)$")
NOT_A_SPEAKER = re.compile(r"(\bby|\bfrom|^notes?|^scene|transcriber'?s? note)$", re.I)


def page_blocks(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = re.sub(r"(?is)<head\b.*?</head>", " ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</?(?:p|h\d|div|blockquote|hr|td|tr|li)\b[^>]*>", "\n", text)
    return [b.strip() for b in html.unescape(re.sub(r"<[^>]+>", "", text)).split("\n")]


def words(text: str, n: int = 3) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower())[:n])


def independent_lines(path: Path) -> list[tuple[str, str, int]]:
    """(speaker, first words, scene number) of every spoken line on the page."""
    lines, scene = [], 0
    for block in page_blocks(path):
        if re.match(r"^[\[(]\s*scene\b", block, re.I):
            scene += 1
            continue
        m = LABEL.match(block)
        if not m or NOT_A_SPEAKER.search(m[1].strip()):
            continue
        speech = re.sub(r"\([^()]*\)|\[[^\[\]]*\]", " ", m[2])
        if re.search(r"[A-Za-z0-9]", speech):
            lines.append((m[1].strip().lower(), words(speech), scene))
    return lines


def page_directions(path: Path) -> set[str]:
    """The words of every bracketed direction of four words or more on the page (shorter ones
    may be ordinary speech too: "in the kitchen")."""
    found = set()
    for block in page_blocks(path):
        for inner in re.findall(r"\(([^()]*)\)|\[([^\[\]]*)\]", block):
            text = " ".join((inner[0] or inner[1]).split())
            if len(text.split()) >= 4 and not re.match(r"scene\b", text, re.I):
                found.add(text)
    return found


@pytest.fixture(scope="module")
def parsed():
    files = sorted(FRIENDS.glob("*.html"))
    episodes = [parse_source(read_source(f)) for f in files]
    records, report = build_pairs(episodes, PairOptions(context=4))
    return files, episodes, records, report


def test_spoken_lines_recovered(parsed):
    files, episodes, _, report = parsed
    total = matched = 0
    for path, ep in zip(files, episodes, strict=True):
        ind = independent_lines(path)
        mine = [(t.speaker.lower(), words(t.text)) for scene in ep.scenes for t in scene]
        blocks = difflib.SequenceMatcher(
            None, [x[:2] for x in ind], mine, autojunk=False
        ).get_matching_blocks()
        total += len(ind)
        matched += sum(b.size for b in blocks)
        # each of the parser's scenes lies inside one scene of the independent count
        scene_of = {}
        for b in blocks:
            for k in range(b.size):
                scene_of[b.b + k] = ind[b.a + k][2]
        at = 0
        for scene in ep.scenes:
            seen = {scene_of[i] for i in range(at, at + len(scene)) if i in scene_of}
            assert len(seen) <= 1, f"{path.name}: a scene spans {sorted(seen)}"
            at += len(scene)
    rate = matched / total
    print(
        f"\nFriends: {matched} of {total} spoken lines recovered ({rate:.2%}); "
        f"{report.spoken_lines} lines kept by the parser, {report.pairs} pairs"
    )
    assert total > 10_000 and rate >= 0.98


def test_no_direction_heading_tag_or_entity_left(parsed):
    files, episodes, records, _ = parsed
    by_episode: dict[str, list[str]] = {}
    for r in records:
        texts = [r["output"]] + [c["utterance"] for c in r["input"]["conversation"]]
        by_episode.setdefault(r["id"].rsplit("-", 2)[0], []).extend(texts)
    bad = re.compile(
        r"[()\[\]{}<>]|&#?\w+;|\bscene\s*:|\b(?:opening|closing)\s+(?:credits|titles)\b|"
        r"commercial\s+break|\b(?:written|transcribed)\s+by\b",
        re.I,
    )
    for path in files:
        texts = by_episode[path.stem]
        assert not [t for t in texts if bad.search(t) or "\ufffd" in t], path.name
        joined = "\n".join(texts)
        leaked = [d for d in page_directions(path) if d in joined]
        assert leaked == [], f"{path.name}: {leaked[:3]}"


def test_pairs_never_cross_a_scene(parsed):
    files, episodes, records, _ = parsed
    names = SpeakerNames(episodes, {})
    scenes = {}
    for ep in episodes:
        for s, scene in enumerate(ep.scenes, 1):
            scenes[f"{ep.name}-{s:03d}"] = [
                (t.speaker, t.text) for t in scene_turns(scene, names, merge=True)
            ]
    for r in records:
        key, t = r["id"].rsplit("-", 1)
        turns = scenes[key]
        context = [(c["speaker"], c["utterance"]) for c in r["input"]["conversation"]]
        assert turns[int(t)] == (r["input"]["speaker"], r["output"])
        assert turns[int(t) - len(context) : int(t)] == context


def test_latin1_pages_read(parsed):
    files, episodes, records, report = parsed
    latin = [ep.name for ep in episodes if ep.encoding == "latin-1"]
    assert latin == ["0117", "0122"] and report.as_dict()["encodings"]["latin-1"] == 2
    spanish = [r["output"] for r in records if r["id"].startswith("0117-") and "¿" in r["output"]]
    assert spanish and all("\ufffd" not in s for s in spanish)
