"""REST bodies: orjson for speed, the standard library for what orjson does not take."""

from __future__ import annotations

import json

import grpc

from loopchain.rest.errors import RestError, json_response, status_error
from loopchain.types.codes import ResponseCode


def body_of(value: object, status: int = 200) -> object:
    response = json_response(value, status)
    assert response.status == status and response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    return json.loads(response.body)


def test_ordinary_bodies_round_trip() -> None:
    value = {"response_code": 0, "tx_hash": "ab" * 32, "data": {"é": [1, None, True]}}
    assert body_of(value) == value


def test_integers_beyond_64_bits_and_lone_surrogates_still_make_json() -> None:
    assert body_of({"big": 2**70}) == {"big": 2**70}
    assert body_of({"s": "\ud800"}) == {"s": "\ud800"}  # escaped, still valid JSON


def test_a_503_says_when_to_try_again_and_others_do_not() -> None:
    busy = RestError(ResponseCode.FAIL, "busy", 503).response()
    assert busy.headers["Retry-After"] == "1"
    missing = RestError(ResponseCode.NOT_FOUND, "no such thing").response()
    assert "Retry-After" not in missing.headers


def test_a_deadline_the_peer_answered_is_minus_900_with_its_words() -> None:
    """DEADLINE_EXCEEDED is -900 / 504 whoever ran out of time; the message names the peer and
    the deadline, and carries the peer's words (its SCORE did not answer in time)."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    answered = status_error(code, "SCORE of alpha did not answer in time: 3 s", "p:7100", 5.0)
    assert (answered.code, answered.status) == (ResponseCode.TIMEOUT, 504)
    assert answered.message == (
        "the peer at p:7100 did not answer within 5 s (SCORE of alpha did not answer in time: 3 s)"
    )


def test_a_call_the_peer_ended_unanswered_is_a_503_to_try_again() -> None:
    """CANCELLED from the peer (a call of a burst it takes no more of, or one in flight while it
    stops) is overload, answered 503 with Retry-After, not a 502 failure."""
    ended = status_error(grpc.StatusCode.CANCELLED, "", "p:7100", 5.0)
    assert (ended.code, ended.status) == (ResponseCode.FAIL, 503)
    assert (
        ended.message == "the peer at p:7100 ended the call unanswered, try again later (cancelled)"
    )
    assert ended.response().headers["Retry-After"] == "1"
