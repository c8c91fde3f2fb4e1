"""test/loop: loads and echoes ordinary queries; its invoke is never called here (it never returns)."""

from __future__ import annotations

from loopchain.blockchain import ScoreBase
from score.testkit import Harness


def test_loads_without_running_the_loop() -> None:
    harness = Harness("test/loop")
    assert issubclass(harness.score_class, ScoreBase)
    assert harness.score.info()["id"] == "test/loop"
    assert harness.score.query('{"method": "echo"}') == '{"method": "echo"}'
