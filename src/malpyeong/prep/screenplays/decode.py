"""Bytes of a script file to text: detect the encoding, never crash.

Transcripts found on the web are UTF-8, Windows-1252 (smart quotes as bytes 0x91-0x94) or
Latin-1; Korean scripts saved by older Windows tools are CP949. The order of the checks:

1. a byte-order mark (UTF-8, UTF-16) says it;
2. bytes that decode as strict UTF-8 are UTF-8 (other encodings almost never produce valid
   UTF-8 multi-byte sequences by chance);
3. CP949, when many bytes are non-ASCII (Korean text is mostly Hangul) and they decode
   strictly into Hangul syllables — a Latin-1 page with a few accented letters is neither;
4. Latin-1 when no byte lies in 0x80-0x9F (there Latin-1 and Windows-1252 agree);
5. Windows-1252, when no byte is one of the five it leaves undefined;
6. Latin-1, which maps every byte and so always succeeds.

A declared charset (``<meta charset=...>``) is not trusted over the bytes: the Friends pages
declare windows-1252 while being ASCII, and a wrong declaration is common.
"""

from __future__ import annotations

import codecs

CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")
KOREAN_MIN_SHARE = 0.15  # share of non-ASCII bytes above which CP949 is considered
HANGUL_MIN_SHARE = 0.9  # share of the decoded non-ASCII characters that must be Hangul syllables


def is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3"


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """``(text, encoding name)`` for the bytes of a text file; never raises."""
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if raw.startswith(bom):
            return raw.decode(name, errors="replace"), name
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    high = sum(b >= 0x80 for b in raw)
    if raw and high / len(raw) >= KOREAN_MIN_SHARE:
        try:
            text = raw.decode("cp949")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            wide = [c for c in text if ord(c) >= 0x80]
            if wide and sum(map(is_hangul, wide)) / len(wide) >= HANGUL_MIN_SHARE:
                return text, "cp949"
    if not any(0x80 <= b <= 0x9F for b in raw):
        return raw.decode("latin-1"), "latin-1"  # the same text as cp1252 would give
    if not CP1252_UNDEFINED.intersection(raw):
        return raw.decode("cp1252"), "cp1252"
    return raw.decode("latin-1"), "latin-1"
