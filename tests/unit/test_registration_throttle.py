"""ChangeThrottle: how often one registered peer's registration may change (time passed in)."""

from __future__ import annotations

from loopchain.radiostation.throttle import ChangeThrottle


def test_a_burst_then_one_change_an_interval_per_peer() -> None:
    throttle = ChangeThrottle(burst=3, interval=10.0)
    assert [throttle.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert throttle.take("a", 100.0) == 10.0
    assert throttle.take("a", 104.0) == 6.0  # refused: nothing taken, the bucket still refills
    assert throttle.take("b", 104.0) == 0.0  # another peer has a bucket of its own
    assert throttle.take("a", 110.0) == 0.0
    assert throttle.take("a", 110.0) == 10.0
    assert throttle.take("a", 140.0) == 0.0  # refilled up to the burst, no further
    assert throttle.take("a", 140.0) == 0.0
    assert throttle.take("a", 140.0) == 0.0
    assert throttle.take("a", 140.0) == 10.0


def test_a_clock_set_back_refills_nothing_and_takes_nothing_away() -> None:
    throttle = ChangeThrottle(burst=1, interval=10.0)
    assert throttle.take("a", 1_000.0) == 0.0
    assert throttle.take("a", 500.0) == 10.0
    assert throttle.take("a", 505.0) == 5.0  # counted from the time it was set back to


def test_buckets_of_at_most_max_peers_are_kept() -> None:
    throttle = ChangeThrottle(burst=1, interval=10.0, max_peers=2)
    for peer in ("a", "b", "c"):
        assert throttle.take(peer, 0.0) == 0.0
    assert len(throttle._buckets) == 2
    assert throttle.take("a", 0.0) == 0.0  # the one that changed the longest ago was forgotten
    assert throttle.take("c", 0.0) == 10.0


def test_wait_says_when_a_change_is_taken_and_takes_none() -> None:
    throttle = ChangeThrottle(burst=2, interval=10.0)
    assert [throttle.wait("a", 100.0) for _ in range(5)] == [0.0] * 5  # asking takes nothing
    assert throttle.take("a", 100.0) == 0.0
    assert throttle.take("a", 100.0) == 0.0
    assert throttle.wait("a", 104.0) == 6.0
    assert throttle.wait("a", 104.0) == 6.0
    assert throttle.wait("a", 110.0) == 0.0
    assert throttle.take("a", 110.0) == 0.0
    assert throttle.wait("a", 110.0) == 10.0
