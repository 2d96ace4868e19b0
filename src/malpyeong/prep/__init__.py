"""Data preparation: making and cleaning training data before a model sees it.

    dedup, dedup_files, simhash   near-duplicate removal within and across data files
    filters                       quality filters of generated pairs (Hangul, length, refusals)
    magpie                        instruction-response pairs sampled from an aligned chat model
    distill, self_distill         a teacher's (or the model's own) answers as training targets
    converters/                   public datasets and other tools' formats into ours
    screenplays/                  TV and film scripts into dialogue pairs (the chat task)

Each is a module of its own (``from malpyeong.prep.dedup import ...``); ``from malpyeong.prep
import *`` imports them all.
"""

__all__ = [
    "converters",
    "dedup",
    "dedup_files",
    "distill",
    "filters",
    "magpie",
    "screenplays",
    "self_distill",
    "simhash",
]
