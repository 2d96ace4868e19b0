"""The repair step for raw generations without constrained decoding: each documented repair on
constructed broken outputs, and what stays unrepairable."""

from __future__ import annotations

import pytest

from malpyeong.metrics.jsonrepair import read_json_object

OBJ = {"a": [1, 2], "b": "x, y}"}


def test_valid_json_needs_no_repair():
    read = read_json_object('  {"a": [1, 2], "b": "x, y}"}\n')
    assert read.value == OBJ and read.raw_valid and read.repairs == () and not read.repaired


@pytest.mark.parametrize(
    "text, repairs",
    [
        ('```json\n{"a": [1, 2], "b": "x, y}"}\n```', ("code_fence",)),
        ('```\n{"a": [1, 2], "b": "x, y}"}', ("code_fence",)),  # a fence never closed
        ('Here is the state: {"a": [1, 2], "b": "x, y}"} Hope it helps!', ("surrounding_text",)),
        ('{"a": [1, 2,], "b": "x, y}",}', ("trailing_comma",)),
        ('Sure!\n```json\n{"a": [1, 2 , ] , "b": "x, y}" }\n```\nDone.', ("code_fence", "trailing_comma")),
        ('The answer {"a": [1, 2,], "b": "x, y}"}<|im_end|> more', ("surrounding_text", "trailing_comma")),
    ],
)
def test_each_documented_repair(text, repairs):
    read = read_json_object(text)
    assert read.value == OBJ and not read.raw_valid and read.repaired
    assert read.repairs == repairs


def test_commas_and_brackets_inside_strings_are_left_alone():
    text = 'note {"a": "one,]", "b": "{\\"q\\": 1,}"} end'
    assert read_json_object(text).value == {"a": "one,]", "b": '{"q": 1,}'}


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2], "b": "x',  # cut off before its brackets close
        "{'a': 1}",  # single quotes
        '{"a": True}',  # a Python literal
        "no JSON at all",
        "[1, 2]",  # JSON, but not an object
        "",
    ],
)
def test_unrepairable(text):
    read = read_json_object(text)
    assert read.value is None and not read.raw_valid and not read.repaired
