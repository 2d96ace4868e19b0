"""Bytes of a script file to text: detect the encoding, never crash.

Transcripts found on the web are UTF-8, Windows-1252 (smart quotes as bytes 0x91-0x94) or
Latin-1; Korean scripts saved by older Windows tools are CP949. The detection is the one every
plain-text input of malpyeong goes through (:func:`malpyeong.io.decode_text`, where the order
of the checks is written down); scripts use it without the NUL-byte check of
:func:`malpyeong.io.read_text`, since a web page may hold stray control bytes.

A declared charset (``<meta charset=...>``) is not trusted over the bytes: the Friends pages
declare windows-1252 while being ASCII, and a wrong declaration is common.
"""

from __future__ import annotations

from malpyeong.io import decode_text


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """``(text, encoding name)`` for the bytes of a text file; never raises."""
    return decode_text(raw)
