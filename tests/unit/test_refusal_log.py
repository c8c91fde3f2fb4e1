"""RefusalLog: refused input leaves a warning, but a flood of it cannot flood the log."""

from __future__ import annotations

import logging

import pytest

from loopchain.configure import RefusalLog


def test_refusals_are_logged_up_to_the_rate_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    refusals = RefusalLog(logging.getLogger("test.refusals"), per_second=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for n in range(10):  # ten at one instant: two lines, eight counted
            refusals.refused("refused %d", n)
        assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused 1"]
        assert refusals.suppressed == 8
        now[0] += 0.5  # one more line's worth of time: it reports what was not logged
        refusals.refused("refused %d", 10)
        assert caplog.records[-1].getMessage() == "refused 10 (8 more refusals not logged)"
        assert refusals.suppressed == 0
        now[0] += 60  # a quiet minute refills only up to the rate
        for n in range(5):
            refusals.refused("later %d", n)
    assert sum(r.getMessage().startswith("later") for r in caplog.records) == 2
