"""sample/kvstore: set, overwrite, delete, get, and precise errors that change nothing."""

from __future__ import annotations

import json

import pytest

from loopchain.blockchain.score_base import ScoreError
from score.testkit import Harness


def get(harness: Harness, key: str) -> object:
    answer = harness.score.query(json.dumps({"method": "get", "params": {"key": key}}))
    return json.loads(answer)["value"]


@pytest.fixture
def kv() -> Harness:
    return Harness("sample/kvstore")


def test_set_get_overwrite_delete(kv: Harness) -> None:
    assert get(kv, "colour") is None
    assert kv.invoke({"method": "set", "params": {"key": "colour", "value": "red"}}) is None
    assert get(kv, "colour") == "red"
    assert [e.to_json() for e in kv.events] == [
        {"indexed": ["ValueSet(str,str)", "colour"], "data": ["red"]}
    ]
    kv.invoke({"method": "set", "params": {"key": "colour", "value": "blue"}})
    assert get(kv, "colour") == "blue"
    kv.invoke({"method": "delete", "params": {"key": "colour"}})
    assert get(kv, "colour") is None
    assert [e.to_json() for e in kv.events] == [
        {"indexed": ["ValueDeleted(str)", "colour"], "data": []}
    ]
    assert kv.state.data == {}


def test_values_are_stored_canonically(kv: Harness) -> None:
    kv.invoke({"method": "set", "params": {"key": "k", "value": "é"}})
    assert kv.state.data == {b"kv:k": '"é"'.encode()}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("set k v", "expected"),
        ({"method": "set", "params": []}, "params"),
        ({"method": "set", "params": {"key": "k"}}, "params.value"),
        ({"method": "set", "params": {"key": "k", "value": 3}}, "params.value"),
        ({"method": "set", "params": {"key": "", "value": "v"}}, "empty"),
        ({"method": "set", "params": {"key": "k" * 257, "value": "v"}}, "longer than 256 bytes"),
        ({"method": "set", "params": {"key": "é" * 129, "value": "v"}}, "longer than 256 bytes"),
        ({"method": "set", "params": {"key": "k", "value": "v" * 3824}}, "than 3823 characters"),
        ({"method": "set", "params": {"key": "k", "value": "é" * 3824}}, "than 3823 characters"),
        ({"method": "drop", "params": {"key": "k"}}, "unknown method"),
    ],
)
def test_bad_transactions_raise_and_change_nothing(kv: Harness, data: object, message: str) -> None:
    with pytest.raises(ScoreError, match=message):
        kv.invoke(data)
    assert kv.state.data == {}


def test_bad_queries_raise(kv: Harness) -> None:
    with pytest.raises(ScoreError, match="not JSON"):
        kv.score.query("{")
    with pytest.raises(ScoreError, match="unknown query method"):
        kv.score.query('{"method": "list", "params": {"key": "k"}}')


@pytest.mark.parametrize("key", ["k" * 256, "é" * 128])
@pytest.mark.parametrize("letter", ["v", "é"])
def test_the_longest_value_is_set_with_the_longest_key(kv: Harness, key: str, letter: str) -> None:
    value = letter * 3823  # its ValueSet event holds what an event may (4,096 characters)
    kv.invoke({"method": "set", "params": {"key": key, "value": value}})
    assert get(kv, key) == value
    assert [e.to_json() for e in kv.events] == [
        {"indexed": ["ValueSet(str,str)", key], "data": [value]}
    ]
