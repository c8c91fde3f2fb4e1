"""A SCORE process logs failed transactions at a bounded rate (log review: anyone may send
transactions that fail, and each logged an INFO line on every peer)."""

from __future__ import annotations

import logging

import pytest

from loopchain.configure import RefusalLog
from loopchain.scoreservice import process


def test_failed_transactions_are_logged_at_most_twenty_a_second_the_others_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    monkeypatch.setattr(process, "_FAILED", RefusalLog(process.log, 20.0, lambda: now[0], 20))
    with caplog.at_level(logging.INFO, logger="loopchain.score"):
        for n in range(100):
            process._log_failure(f"0x{n:064x}", "failed in the SCORE: ValueError: no")
        assert len(caplog.records) == 20  # in one instant: the bucket's twenty
        now[0] = 1.0
        process._log_failure("0x" + "f" * 64, "failed: block results limit reached")
    last = caplog.records[-1].getMessage()
    assert len(caplog.records) == 21
    assert last == (
        f"transaction 0x{'f' * 64} failed: block results limit reached "
        "(80 more failed transactions not logged)"
    )
