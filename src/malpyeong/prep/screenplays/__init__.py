"""TV and film scripts to dialogue pairs for the ``chat`` task.

``read_source`` (markup) reads a plain-text, HTML or Word script into lines, detecting the
encoding (decode); ``parse_source`` (parse) turns the lines into scenes of spoken turns and
gives every other line its drop reason; ``build_pairs`` (pairs) writes reply records with the
turns before them, never across a scene, and the report. ``run/script_pairs.py`` is the CLI.
"""

from __future__ import annotations

from malpyeong.prep.screenplays.decode import decode_bytes
from malpyeong.prep.screenplays.markup import Line, Source, read_source
from malpyeong.prep.screenplays.parse import (
    DROP_REASONS,
    Episode,
    Turn,
    parse_source,
    strip_directions,
)
from malpyeong.prep.screenplays.replies import (
    PairOptions,
    PairReport,
    SpeakerNames,
    build_pairs,
    persona_of,
    read_mapping,
    read_personas,
    speaker_key,
)

__all__ = [
    "DROP_REASONS",
    "Episode",
    "Line",
    "PairOptions",
    "PairReport",
    "Source",
    "SpeakerNames",
    "Turn",
    "build_pairs",
    "decode_bytes",
    "parse_source",
    "persona_of",
    "read_mapping",
    "read_personas",
    "read_source",
    "speaker_key",
    "strip_directions",
]
