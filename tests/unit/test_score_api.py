"""The SCORE API a channel states (package.json "api") as icx_getScoreApi answers it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopchain.peer.score_runtime import score_api_json

KVSTORE = Path(__file__).resolve().parents[2] / "score" / "sample" / "kvstore" / "package.json"


def test_the_stated_api_is_answered_in_canonical_json() -> None:
    api = [{"type": "function", "name": "get", "inputs": [], "outputs": [{"type": "str"}]}]
    text = score_api_json({"api": api})
    assert json.loads(text) == api
    assert text == json.dumps(api, separators=(",", ":"), sort_keys=True)


@pytest.mark.parametrize(
    "info",
    [{}, {"api": None}, {"api": {"type": "function"}}, {"api": ["set"]}, {"api": [{"x": 1.5}]}],
)
def test_no_api_or_a_malformed_one_is_an_empty_list(info: dict[str, object]) -> None:
    assert score_api_json(info) == "[]"


def test_the_kvstore_sample_states_its_functions_and_events() -> None:
    api = json.loads(score_api_json(json.loads(KVSTORE.read_text())))
    kinds = {(item["type"], item["name"]) for item in api}
    assert kinds == {
        ("function", "set"),
        ("function", "delete"),
        ("function", "get"),
        ("eventlog", "ValueSet"),
        ("eventlog", "ValueDeleted"),
    }
