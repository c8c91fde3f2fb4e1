"""ClockWatch: what the RadioStation's log says of heartbeats refused for their time."""

from __future__ import annotations

import logging

import pytest

from loopchain.radiostation import clock_watch
from loopchain.radiostation.clock_watch import CLOCK_WARN_S, ClockWatch

LOGGER = "loopchain.radiostation.clock_watch"


def lines(caplog: pytest.LogCaptureFixture, words: str) -> int:
    return sum(
        1 for r in caplog.records if r.levelno == logging.WARNING and words in r.getMessage()
    )


def test_each_peer_is_named_once_then_every_warn_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    watch = ClockWatch()
    for beat in range(150):  # a heartbeat every 2 s for 300 s, from one peer of ten
        watch.refused("hxa", -600.0, beat * 2.0, registered=10)
    assert lines(caplog, "heartbeats of hxa are refused: its clock is 600 s behind") == 1
    watch.refused("hxa", -600.0, CLOCK_WARN_S, registered=10)
    assert lines(caplog, "heartbeats of hxa") == 2
    assert lines(caplog, "this RadioStation's: its clock is probably") == 0  # one of ten


def test_most_peers_off_the_same_way_blame_this_clock_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    watch = ClockWatch()
    watch.refused("hxa", -598.0, 0.0, registered=4)
    watch.refused("hxb", 40.0, 0.5, registered=4)  # the other way: not counted with them
    watch.refused("hxc", -601.0, 1.0, registered=4)
    assert lines(caplog, "its clock is probably the wrong one") == 0  # two of four
    watch.refused("hxd", -600.0, 1.5, registered=4)
    assert lines(caplog, "3 of the 4 registered peers' clocks are 598-601 s behind") == 1
    for beat in range(20):
        watch.refused("hxa", -598.0, 2.0 + beat, registered=4)
    assert lines(caplog, "its clock is probably the wrong one") == 1


def test_old_disagreements_do_not_count_and_the_table_is_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    watch = ClockWatch()
    watch.refused("hxa", 50.0, 0.0, registered=3)
    watch.refused("hxb", 50.0, clock_watch.RECENT_S + 1, registered=3)  # hxa's is old by then
    assert lines(caplog, "its clock is probably the wrong one") == 0
    monkeypatch.setattr(clock_watch, "MAX_WATCHED", 3)
    for index in range(10):
        watch.refused(f"hx{index}", 50.0, 100.0, registered=100)
    assert len(watch._peers) == 3
