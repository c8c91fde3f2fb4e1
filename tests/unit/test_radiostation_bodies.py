"""RadioStation request bodies: a JSON object or a BadBody naming the problem, never a parser crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopchain.radiostation.bodies import MAX_NUMBER_DIGITS, BadBody, parse_object

TOKENS = st.sampled_from(
    [
        *("{", "}", "[", "]", ",", ":", '"a"', '"\\ud800"', '"\\ud83d\\ude00"', "1", "-0"),
        *("1e999", "NaN", "-Infinity", "true", "null", "9" * (MAX_NUMBER_DIGITS + 1)),
        *(" ", "\\", '"'),
    ]
)


@given(st.binary(max_size=200))
def test_any_bytes_give_an_object_or_bad_body(raw: bytes) -> None:
    try:
        assert isinstance(parse_object(raw), dict)
    except BadBody as exc:
        assert str(exc)


@given(st.lists(TOKENS, max_size=40))
def test_json_like_text_gives_an_object_or_bad_body(tokens: list[str]) -> None:
    raw = "".join(tokens).encode("utf-8")
    try:
        body = parse_object(raw)
    except BadBody as exc:
        assert str(exc).startswith("request body")
        return
    assert isinstance(body, dict)
    json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")  # clean through


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b'{"a": ' + b"1" * 5000 + b"}", "5000 digits"),
        (b'{"a": -' + b"1" * (MAX_NUMBER_DIGITS + 1) + b"}", f"{MAX_NUMBER_DIGITS + 1} digits"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": 1e400}', "out of range"),
        (b'{"a": "\\udc00"}', "lone surrogate"),
        (b'{"a": "\xc3"}', "not UTF-8"),
        (b"[1]", "not list"),
    ],
)
def test_refusals_say_why(raw: bytes, words: str) -> None:
    with pytest.raises(BadBody, match=words):
        parse_object(raw)


def test_a_plain_object_is_read_as_is() -> None:
    raw = '{"n": -' + "1" * MAX_NUMBER_DIGITS + ', "s": "\\ud83d\\ude00 ü", "f": 1.5}'
    body = parse_object(raw.encode("utf-8"))
    assert body == {"n": -int("1" * MAX_NUMBER_DIGITS), "s": "\U0001f600 ü", "f": 1.5}
