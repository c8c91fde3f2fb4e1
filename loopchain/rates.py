"""A token bucket on its caller's clock: at most `rate` a second, in bursts of at most `burst`."""

from __future__ import annotations


class TokenBucket:
    """At most `rate` things a second, `burst` at once; the caller gives the time (a clock that
    goes back fills nothing, and counts on from where it is now)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.capacity = burst
        self._tokens = burst
        self._at = now

    def available(self, now: float) -> int:
        """How many may be taken at `now`."""
        # kept at its old time, a bucket whose clock was set back filled again only once the
        # clock had passed that time (review)
        self._tokens = min(self.capacity, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        return int(self._tokens)

    def take(self, count: int = 1) -> None:
        self._tokens -= count

    def give_back(self, count: int) -> None:
        """Return tokens taken for things that did not happen after all."""
        self._tokens = min(self.capacity, self._tokens + count)
