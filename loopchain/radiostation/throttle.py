"""How often a registered peer may change its registration (its target or group): each change
rewrites and syncs the whole registry file, on the event loop, and logs a line, so a member that
registered again with a field flipped at each call had the RadioStation make a synced write of
its registry per call, as fast as it called. Only changes the RadioStation makes are counted
(after the target answered with the peer's key): a try refused busy, or whose target did not
answer, costs nothing. Time is passed in."""

from __future__ import annotations

from loopchain.radiostation.registry import MAX_PEERS

# A bound on a member flipping a field, never met by a peer that really moves: a peer moves when
# it restarts at another address, and a restart (a process start, its stores opened, its server
# bound, its target probed) takes about a second at the very least, so one change a second
# refills faster than any peer restarts; ten at once take an operator's run of restarts (or a
# peer's group set and set back) without a wait. A member flipping a field at every call makes at
# most one synced registry write and one INFO line a second, each after a probe of its target
# (at most MAX_PROBES of which run at once), instead of one per call.
CHANGE_BURST = 10  # changes of one peer taken at once
CHANGE_INTERVAL_S = 1.0  # and then one in this many seconds


class ChangeThrottle:
    """A bucket of CHANGE_BURST changes per peer, refilled by one every CHANGE_INTERVAL_S; the
    buckets of at most `max_peers` peers are kept (past it the one that changed the longest ago
    is forgotten: its bucket is full, unless more peers than a registry takes changed within
    CHANGE_BURST intervals)."""

    def __init__(
        self,
        burst: int = CHANGE_BURST,
        interval: float = CHANGE_INTERVAL_S,
        max_peers: int = MAX_PEERS,
    ) -> None:
        self.burst = burst
        self.interval = interval
        self.max_peers = max_peers
        self._buckets: dict[
            str, tuple[float, float]
        ] = {}  # peer -> (changes left, at), oldest first

    def wait(self, peer_id: str, now: float) -> float:
        """The seconds until a change of `peer_id` is taken, 0.0 when one is now (none taken)."""
        return max(0.0, 1.0 - self._left(peer_id, now)) * self.interval

    def take(self, peer_id: str, now: float) -> float:
        """Take a change of `peer_id` at `now`: 0.0 when it is taken, else the seconds until one
        is (nothing taken)."""
        left = self._left(peer_id, now)
        if left < 1.0:  # counted on from `now`: a clock set back does not stall the refill
            self._buckets[peer_id] = (left, now)  # (a known peer: its place is kept)
            return (1.0 - left) * self.interval
        self._buckets.pop(peer_id, None)  # re-inserted last: the dict stays in order of change
        self._buckets[peer_id] = (left - 1.0, now)
        while len(self._buckets) > self.max_peers:
            del self._buckets[next(iter(self._buckets))]
        return 0.0

    def _left(self, peer_id: str, now: float) -> float:
        """The changes `peer_id` has left at `now` (refilled since its last change or refusal)."""
        left, at = self._buckets.get(peer_id, (float(self.burst), now))
        return min(float(self.burst), left + max(0.0, now - at) / self.interval)
