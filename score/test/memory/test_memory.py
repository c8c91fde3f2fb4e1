"""test/memory: loads and echoes ordinary queries; its invoke is never called here."""

from __future__ import annotations

from loopchain.blockchain import ScoreBase
from score.testkit import Harness


def test_loads_without_allocating() -> None:
    harness = Harness("test/memory")
    assert issubclass(harness.score_class, ScoreBase)
    assert harness.score.info()["id"] == "test/memory"
    assert harness.score.query('{"method": "echo"}') == '{"method": "echo"}'
