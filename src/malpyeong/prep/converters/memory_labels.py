"""Labels the memory-state converters derive by rule (no model): facts as sentences, and
unresolved references in the last turns.

Unresolved references (English only): a demonstrative noun phrase — ``this``, ``that``,
``these`` or ``those`` followed by a noun — in the last two utterances whose noun occurs nowhere
before it in the dialogue (compared lowercased, plural ``s``/``ies`` ignored), so the listener
cannot tell from the conversation what it points to (``that tape`` when no tape was mentioned).
What follows the demonstrative must look like a noun: not a function, time or quantity word
(``that is``, ``this morning``), not a noun that sums up what was said (``this issue``, ``those
reasons``), not a frequent verb (``that sounds``), not capitalised, and after ``this``/``that``
not a form ending in ``s``, ``ed`` or ``ly`` (``that comes``: a relative clause). Bare pronouns
(``it``, ``they``) are left out: without a parser the rule cannot tell whether an earlier noun
fits them. How good it is: on the DialogSum dev file
it marks few references (most dialogues resolve what they mention), and a hand check of what it
marked is in the README's memory section; a teacher model (``run/distill.py --task memory``)
gives better labels where that matters.
"""

from __future__ import annotations

import argparse
import re

SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")
_DEMONSTRATIVE = re.compile(r"\b(this|that|these|those)\s+([A-Za-z][A-Za-z-]*)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
NOT_A_NOUN = frozenset(
    """
a an the this that these those is are was were be been being am 's do does did done have has had
will would can could should shall may might must not no yes so too very really just only also
even still again then there here now when where what which who whom whose why how if as at by
for from in into of on onto to up down out over under with without about after before than
and or but nor i you he she it we they me him her us them my your his its our their mine yours
one ones all any some each every both either neither much many more most less least such same
other another way kind sort thing things lot lots
morning afternoon evening night day days week weeks weekend month months year years time times
today tonight tomorrow yesterday moment minute minutes hour hours season semester term spring
summer autumn fall winter monday tuesday wednesday thursday friday saturday sunday
guy guys man woman case long far back much anyone anybody someone somebody everyone
everybody nobody anything something everything nothing good bad great different until
issue issues matter matters question questions problem problems reason reasons point points idea
ideas respect regard stuff
sound sounds seem seems look looks give make go come work help mean happen cost take get feel
depend belong need remain stand
""".split()
)


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` followed by a space (empty parts dropped)."""
    return [s.strip() for s in SENTENCE_END.split(text.strip()) if s.strip()]


def _stem(word: str) -> str:
    word = word.lower().strip("'-")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _is_head_noun(demonstrative: str, word: str, following: str) -> bool:
    """Whether ``word`` after a demonstrative can be the noun it points with: not a function,
    time or quantity word, not a contraction (``that's``), not capitalised (``that English is``:
    a conjunction), and after singular ``this``/``that`` not a verb form (``that comes``,
    ``that offered``, ``that really``)."""
    lower = word.lower()
    if lower in NOT_A_NOUN or following.startswith("'") or word[0].isupper():
        return False
    if demonstrative.lower() in ("this", "that"):
        if lower.endswith(("ed", "ly")) or (lower.endswith("s") and not lower.endswith("ss")):
            return False
    return True


def unresolved_refs(utterances: list[str], last: int = 2) -> list[str]:
    """Demonstrative noun phrases of the last ``last`` utterances that nothing before them
    names (see the module docstring), each once, as written."""
    first = max(len(utterances) - last, 0)
    found: list[str] = []
    for k in range(first, len(utterances)):
        text = utterances[k]
        for m in _DEMONSTRATIVE.finditer(text):
            head = m.group(2)
            if not _is_head_noun(m.group(1), head, text[m.end() :]):
                continue
            before = " ".join([*utterances[:k], text[: m.start()]])
            if _stem(head) in {_stem(w) for w in _WORD.findall(before)}:
                continue
            if m.group(0) not in found:
                found.append(m.group(0))
    return found


def add_memory_options(group: argparse._ArgumentGroup) -> None:
    """``--turn_count``, shared by the memory converters (added once)."""
    if "--turn_count" in group._option_string_actions:
        return
    group.add_argument(
        "--turn_count",
        choices=("utterances", "speaker_turns"),
        default="utterances",
        help="memory: turn_count is the number of utterances (default), or of "
        "speaker turns (consecutive utterances of one speaker count once; "
        "written as input.turn_count_by)",
    )


def cut_words(text: str, max_chars: int) -> str:
    """``text`` cut at the last space before ``max_chars`` (no cut when it fits)."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut or text[:max_chars]


__all__ = ["add_memory_options", "cut_words", "sentences", "unresolved_refs"]
