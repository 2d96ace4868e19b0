"""Quality filters for synthetic instruction–response pairs (Magpie) and teacher outputs.

Each check is a small pure function of a string, so it can be tested on constructed examples
and reused by any generator; :func:`filter_pairs` runs them in a fixed order and says, per
record, the first reason it was dropped. Near-duplicate removal goes through
:mod:`malpyeong.prep.dedup` (Simhash), so synthetic data is deduplicated the same way as the
official files.

Thresholds were checked on natural Korean text: every CCI dialogue, every DCS summary (the most
repetitive: up to 0.20 / 0.25) and every DCS utterance over 50 characters of the official files
stays under both repetition bounds. They are dataclass fields so a recipe can change them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

# Hangul syllables, jamo, compatibility jamo, jamo extensions A/B.
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff]")

# Refusals and assistant boilerplate, Korean and English. Matched on the response only: an
# instruction may legitimately ask about apologies or AI.
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"죄송(?:하지만|합니다만|하게도|해요,? 하지만)",
    r"(?:도와|답변(?:해|을)? ?|알려|제공해)\s?드릴 수 (?:없|가 없)",
    r"(?:제공|답변|응답|도움을 드리기|수행)할 수 없습니다",
    r"(?:저는|나는) (?:AI|인공지능|언어 ?모델|챗봇)(?:이기|이라서|이므로|로서|으로서|일 뿐)",
    r"(?:AI|인공지능) (?:언어 ?)?(?:모델|어시스턴트)(?:로서|으로서|이기 때문에)",
    r"부적절한 (?:요청|질문|내용)",
    r"\bI(?:'m| am) (?:sorry|unable|not able)\b",
    r"\bI (?:cannot|can't|can not|won't) (?:help|assist|provide|answer|do|comply)",
    r"\bAs an AI\b",
    r"\bI apologi[sz]e\b",
)
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.IGNORECASE)


def hangul_ratio(text: str) -> float:
    """Share of Hangul among the letters of ``text`` (digits, spaces, punctuation ignored)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if _HANGUL.match(c)) / len(letters)


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    """Share of word ``n``-gram occurrences that repeat an earlier one (0 = none, →1 = a loop)."""
    words = text.split()
    total = len(words) - n + 1
    if total <= 1:
        return 0.0
    grams = Counter(tuple(words[i : i + n]) for i in range(total))
    return 1.0 - len(grams) / total


def repeated_chars_ratio(text: str, n: int = 10) -> float:
    """Like :func:`repeated_ngram_ratio` on characters with spaces removed.

    Catches loops without spaces (``하하하하…``, a sentence glued to itself) that word n-grams miss.
    """
    chars = "".join(text.split())
    total = len(chars) - n + 1
    if total <= 1:
        return 0.0
    grams = Counter(chars[i : i + n] for i in range(total))
    return 1.0 - len(grams) / total


def is_refusal(text: str) -> bool:
    """True when ``text`` refuses or hides behind 'as an AI' boilerplate (Korean or English)."""
    return _REFUSAL.search(text) is not None


@dataclass
class FilterConfig:
    """Bounds for :func:`filter_pairs`; lengths are in characters."""

    min_hangul: float = 0.5  # share of Hangul among letters, instruction and response
    min_instruction_chars: int = 5
    max_instruction_chars: int = 500
    min_response_chars: int = 10
    max_response_chars: int = 4000
    max_word_repeat: float = 0.3  # repeated word 3-gram share
    max_char_repeat: float = 0.4  # repeated character 10-gram share
    dedup_k: int | None = 3  # Simhash bits for near-duplicates; None: no dedup
    dedup_on: str = "instruction"  # "instruction" or "pair"

    def as_dict(self) -> dict:
        return asdict(self)


REASONS = ("empty", "hangul", "length", "repetition", "refusal", "duplicate")


def check_pair(instruction: str, response: str, config: FilterConfig | None = None) -> str | None:
    """The first reason to drop this pair (one of :data:`REASONS` but duplicate), or None."""
    c = config or FilterConfig()
    ins, res = instruction.strip(), response.strip()
    if not ins or not res:
        return "empty"
    if hangul_ratio(ins) < c.min_hangul or hangul_ratio(res) < c.min_hangul:
        return "hangul"
    if not (c.min_instruction_chars <= len(ins) <= c.max_instruction_chars) or not (
        c.min_response_chars <= len(res) <= c.max_response_chars
    ):
        return "length"
    for text in (ins, res):
        if repeated_ngram_ratio(text) > c.max_word_repeat or repeated_chars_ratio(text) > c.max_char_repeat:
            return "repetition"
    if is_refusal(res):
        return "refusal"
    return None


def filter_pairs(
    records: list[dict[str, Any]], config: FilterConfig | None = None
) -> tuple[list[dict[str, Any]], dict]:
    """Keep the records (``{"instruction", "response", ...}``) that pass every check.

    Returns the kept records (input order) and a report: counts per reason, and the dropped
    indices with their reason (indices into ``records``; no text, so reports are safe to share).
    """
    from malpyeong.prep.dedup import dedup_texts

    c = config or FilterConfig()
    reasons: dict[int, str] = {}
    passing = []
    for i, r in enumerate(records):
        why = check_pair(str(r.get("instruction", "")), str(r.get("response", "")), c)
        if why:
            reasons[i] = why
        else:
            passing.append(i)
    if c.dedup_k is not None and len(passing) > 1:
        if c.dedup_on == "pair":
            texts = [f"{records[i]['instruction']}\n{records[i]['response']}" for i in passing]
        else:
            texts = [records[i]["instruction"] for i in passing]
        keep = set(dedup_texts(texts, k=c.dedup_k))
        for j, i in enumerate(passing):
            if j not in keep:
                reasons[i] = "duplicate"
        passing = [i for j, i in enumerate(passing) if j in keep]
    counts = Counter(reasons.values())
    report = {
        "n_in": len(records),
        "n_out": len(passing),
        "dropped": {r: counts.get(r, 0) for r in REASONS},
        "dropped_indices": {str(i): reasons[i] for i in sorted(reasons)},
        "config": c.as_dict(),
    }
    return [records[i] for i in passing], report
