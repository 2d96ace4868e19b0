"""Parsed episodes to dialogue-pair records of the ``chat`` task, and the report.

A record is the reply of one speaker and the turns before it in the same scene::

    {"id": "0101-003-007",
     "input": {"conversation": [{"speaker": "Monica", "utterance": "..."}, ...],
               "speaker": "Joey", "persona": "..."},      # persona only with --persona
     "output": "Joey's line"}

Speakers are normalised across all episodes: case, stray spaces and trailing dots do not make
a new speaker (``MONICA``, ``Monica`` and ``monica `` are one), an alias table maps other
spellings (``RACH`` -> ``Rachel``), and each speaker is written the way the scripts write it
most often in mixed case. Consecutive lines of one speaker (split by a stage direction) are
one turn, so a reply is never a speaker answering themself.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from malpyeong.errors import UserError
from malpyeong.io import read_text, read_yaml
from malpyeong.prep.screenplays.parse import DROP_REASONS, Episode, Turn

SKIP_REASONS = ("first_turn", "other_speaker", "short_reply")
MAPPING_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class PairOptions:
    context: int = 4  # turns before the reply (at most; fewer at the start of a scene)
    character: str | None = None  # keep only replies of this speaker
    min_words: int = 1  # replies with fewer words are skipped
    merge_consecutive: bool = True  # one speaker's consecutive lines form one turn
    aliases: dict[str, str] = field(default_factory=dict)  # spelling -> speaker
    personas: dict[str, str] = field(default_factory=dict)  # speaker -> description


def speaker_key(name: str) -> str:
    """What makes two spellings one speaker: case, spacing and a trailing dot do not count."""
    return " ".join(name.replace("’", "'").casefold().split()).strip(" .")


def capitalised(name: str) -> str:
    """``MRS. GELLER`` -> ``Mrs. Geller``, ``JOEY'S DATE`` -> ``Joey's Date``."""
    return re.sub(r"[^\W\d_]+(?:'[^\W\d_]+)?", lambda m: m.group(0)[0].upper() + m.group(0)[1:].lower(), name)


class SpeakerNames:
    """One display name per speaker key, chosen over every spelling seen in the inputs."""

    def __init__(self, episodes: Sequence[Episode], aliases: dict[str, str]) -> None:
        self.aliases = {speaker_key(k): v for k, v in aliases.items()}
        spellings: dict[str, Counter] = {}
        for ep in episodes:
            for scene in ep.scenes:
                for turn in scene:
                    name = self.aliases.get(speaker_key(turn.speaker), turn.speaker)
                    spellings.setdefault(speaker_key(name), Counter())[" ".join(name.split())] += 1
        for target in self.aliases.values():
            spellings.setdefault(speaker_key(target), Counter())[target] += 0
        self.display = {key: self._choose(counts) for key, counts in spellings.items()}

    @staticmethod
    def _choose(counts: Counter) -> str:
        """Mixed case over ALL CAPS (a transcript's shouting style), a capital first letter
        over a lowercase one (a typo), then the most frequent."""

        def all_caps(s: str) -> bool:
            return s == s.upper() and s != s.lower()

        mixed = [s for s in counts if not all_caps(s)]
        if not mixed:
            return capitalised(max(counts.items(), key=lambda x: (x[1], x[0]))[0])
        return max(mixed, key=lambda s: (not s[:1].islower(), counts[s], s))

    def key(self, name: str) -> str:
        return speaker_key(self.aliases.get(speaker_key(name), name))

    def __call__(self, name: str) -> str:
        return self.display.get(self.key(name), name)


@dataclass
class PairReport:
    episodes: int = 0
    encodings: Counter = field(default_factory=Counter)
    scenes: int = 0
    lines_read: int = 0
    spoken_lines: int = 0
    continuation_lines: int = 0
    turns: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    speakers: Counter = field(default_factory=Counter)  # spoken lines per speaker
    per_episode: list[dict] = field(default_factory=list)

    def as_dict(self, top: int = 10) -> dict:
        return {
            "episodes": self.episodes,
            "encodings": dict(self.encodings),
            "scenes": self.scenes,
            "lines_read": self.lines_read,
            "spoken_lines": self.spoken_lines,
            "continuation_lines": self.continuation_lines,
            "turns": self.turns,
            "pairs_written": self.pairs,
            "dropped_lines": {r: self.dropped[r] for r in DROP_REASONS if self.dropped[r]},
            "skipped_pairs": {r: self.skipped[r] for r in SKIP_REASONS if self.skipped[r]},
            "top_speakers": self.speakers.most_common(top),
            "per_episode": self.per_episode,
        }

    def lines(self, top: int = 10) -> list[str]:
        """The report as ``run/script_pairs.py`` prints it."""
        enc = ", ".join(f"{n} {e}" for e, n in sorted(self.encodings.items()))
        dropped = ", ".join(f"{r} {self.dropped[r]}" for r in DROP_REASONS if self.dropped[r])
        skipped = ", ".join(f"{r} {self.skipped[r]}" for r in SKIP_REASONS if self.skipped[r])
        return [
            f"episodes      {self.episodes} ({enc})",
            f"scenes        {self.scenes}",
            f"lines read    {self.lines_read}: {self.spoken_lines} spoken, "
            f"{self.continuation_lines} continuing a speech, "
            f"{self.lines_read - self.spoken_lines - self.continuation_lines} dropped",
            f"dropped       {dropped or 'none'}",
            f"turns         {self.turns} (one speaker's consecutive lines joined)",
            f"pairs written {self.pairs}" + (f" (skipped: {skipped})" if skipped else ""),
            "top speakers  " + ", ".join(f"{s} {n}" for s, n in self.speakers.most_common(top)),
        ]


def scene_turns(scene: Sequence[Turn], names: SpeakerNames, merge: bool) -> list[Turn]:
    """The scene's turns with normalised speakers, one speaker's consecutive lines joined."""
    out: list[Turn] = []
    for turn in scene:
        speaker = names(turn.speaker)
        if merge and out and names.key(out[-1].speaker) == names.key(speaker):
            prev = out[-1]
            out[-1] = Turn(prev.speaker, f"{prev.text} {turn.text}", prev.line, prev.multi)
        else:
            out.append(Turn(speaker, turn.text, turn.line, turn.multi))
    return out


def unique_names(episodes: Sequence[Episode]) -> list[str]:
    """Episode names for record ids: the file stems, numbered where two files share one."""
    seen: Counter = Counter(ep.name for ep in episodes)
    used: Counter = Counter()
    out = []
    for ep in episodes:
        if seen[ep.name] > 1:
            used[ep.name] += 1
            out.append(f"{ep.name}~{used[ep.name]}")
        else:
            out.append(ep.name)
    return out


def build_pairs(episodes: Sequence[Episode], options: PairOptions) -> tuple[list[dict], PairReport]:
    """Records of the ``chat`` task from parsed episodes, and what happened to every line."""
    names = SpeakerNames(episodes, options.aliases)
    character = names.key(options.character) if options.character else None
    personas = {names.key(k): v for k, v in options.personas.items()}
    report = PairReport()
    records: list[dict] = []
    for ep, ep_name in zip(episodes, unique_names(episodes), strict=True):
        report.episodes += 1
        report.encodings[ep.encoding] += 1
        report.scenes += len(ep.scenes)
        report.lines_read += ep.lines_read
        report.spoken_lines += ep.fates["spoken"]
        report.continuation_lines += ep.fates["continuation"]
        report.dropped.update({r: n for r, n in ep.fates.items() if r in DROP_REASONS})
        written = len(records)
        for s, scene in enumerate(ep.scenes, 1):
            for turn in scene:
                report.speakers[names(turn.speaker)] += 1
            turns = scene_turns(scene, names, options.merge_consecutive)
            report.turns += len(turns)
            for t, reply in enumerate(turns):
                reason = _skip_reason(t, reply, names, character, options.min_words)
                if reason:
                    report.skipped[reason] += 1
                    continue
                context = turns[max(0, t - options.context) : t]
                inp: dict = {
                    "conversation": [{"speaker": c.speaker, "utterance": c.text} for c in context],
                    "speaker": reply.speaker,
                }
                persona = personas.get(names.key(reply.speaker))
                if persona:
                    inp["persona"] = persona
                records.append({"id": f"{ep_name}-{s:03d}-{t:03d}", "input": inp, "output": reply.text})
        report.per_episode.append(
            {
                "name": ep_name,
                "path": ep.path,
                "encoding": ep.encoding,
                "scenes": len(ep.scenes),
                "lines_read": ep.lines_read,
                "spoken_lines": ep.fates["spoken"],
                "pairs": len(records) - written,
            }
        )
    report.pairs = len(records)
    return records, report


def _skip_reason(
    index: int, reply: Turn, names: SpeakerNames, character: str | None, min_words: int
) -> str | None:
    if index == 0:
        return "first_turn"
    if character is not None and names.key(reply.speaker) != character:
        return "other_speaker"  # a line of several speakers (Monica and Rachel:) included
    if len(reply.text.split()) < min_words:
        return "short_reply"
    return None


def read_mapping(path: str, field: str) -> dict[str, str]:
    """A JSON or YAML file mapping names to text (aliases, personas)."""
    data = read_yaml(path, field=field)  # JSON is YAML too
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise UserError("expected a mapping of names to text", file=path, field=field)
    return data


def read_personas(path: str, character: str | None) -> dict[str, str]:
    """Character descriptions by speaker: a JSON/YAML mapping, or a text file describing
    ``character``."""
    if Path(path).suffix.lower() in MAPPING_SUFFIXES:
        return read_mapping(path, "persona")
    if not character:
        raise UserError(
            "a text persona describes one character",
            file=path,
            field="persona",
            hint="name the character, or give a JSON/YAML mapping speaker -> text",
        )
    text = read_text(path, field="persona").strip()
    if not text:
        raise UserError("empty persona file", file=path, field="persona")
    return {character: text}


def persona_of(personas: dict[str, str], character: str) -> str | None:
    """The description of ``character`` (spelling as speakers are matched)."""
    wanted = speaker_key(character)
    return next((v for k, v in personas.items() if speaker_key(k) == wanted), None)
