"""test/raises: loads, then raises in invoke and query."""

from __future__ import annotations

import pytest

from score.testkit import Harness


def test_invoke_and_query_raise() -> None:
    harness = Harness("test/raises")
    with pytest.raises(RuntimeError, match="test/raises always fails"):
        harness.invoke({"data": "x"})
    assert harness.state.data == {}  # its write is discarded, as the engine discards it
    assert harness.state.executed_height == 0  # and its block committed: the chain goes on
    with pytest.raises(RuntimeError, match="test/raises always fails"):
        harness.score.query("{}")
    assert harness.score.info()["id"] == "test/raises"
