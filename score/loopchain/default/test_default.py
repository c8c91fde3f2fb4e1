"""loopchain/default: accepts everything, writes nothing, echoes queries."""

from __future__ import annotations

import json

from score.testkit import Harness


def test_invoke_accepts_any_data_without_state() -> None:
    harness = Harness("loopchain/default")
    assert harness.invoke({"data": "hello"}) is None
    assert harness.invoke(["a", 1, True]) is None
    assert harness.invoke("plain string") is None
    assert harness.state.data == {}


def test_query_echoes_params_verbatim() -> None:
    harness = Harness("loopchain/default")
    params = '{"b": 1,  "a": ["x"]}'
    assert harness.score.query(params) == params
    assert json.loads(harness.score.query("{}")) == {}


def test_info_is_package_json() -> None:
    harness = Harness("loopchain/default")
    info = harness.score.info()
    assert info["id"] == "loopchain/default"
    assert info["main"] == "default_score"
    assert harness.package.version == "1.0.0"
    assert harness.package.all_versions == ("1.0.0",)
