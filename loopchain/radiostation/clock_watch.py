"""Heartbeats refused for their time, as the RadioStation's log tells them.

A heartbeat more than MAX_TIMESTAMP_SKEW off the RadioStation's clock is refused; which clock is
wrong, neither side knows. Refused every HEARTBEAT_INTERVAL, each one logged filled the log (895
lines in 130 s, a review) and blamed nobody. Here each peer's disagreement is logged once, then
again every CLOCK_WARN_S while it lasts; and when most registered peers disagree the same way,
one line says that this RadioStation's clock is the likely wrong one.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CLOCK_WARN_S = 300.0  # seconds between two lines about one peer's (or this station's) clock
RECENT_S = 60.0  # a disagreement counts towards "most peers" this long after it was seen
MAX_WATCHED = 1024  # peers remembered (registered ones: others are refused before)


class ClockWatch:
    """Which peers' heartbeats were refused for their time lately, and by how much."""

    def __init__(self) -> None:
        # peer -> (its clock minus this one's, seconds; when seen; when last logged), monotonic
        self._peers: dict[str, tuple[float, float, float]] = {}
        self._station_logged = -CLOCK_WARN_S

    def refused(self, peer_id: str, offset: float, now: float, registered: int) -> None:
        """A heartbeat of `peer_id` was refused, its clock `offset` seconds off this one (at
        monotonic `now`; `registered`: peers the registry holds)."""
        _, _, logged = self._peers.pop(peer_id, (0.0, 0.0, -CLOCK_WARN_S))
        if len(self._peers) >= MAX_WATCHED:
            self._peers.pop(next(iter(self._peers)))
        if now - logged >= CLOCK_WARN_S:
            way = "ahead of" if offset > 0 else "behind"
            log.warning(
                "heartbeats of %s are refused: its clock is %.0f s %s this RadioStation's (more "
                "than MAX_TIMESTAMP_SKEW); said again every %.0f s while it lasts",
                peer_id[:50],
                abs(offset),
                way,
                CLOCK_WARN_S,
            )
            logged = now
        self._peers[peer_id] = (offset, now, logged)
        self._judge_own_clock(offset, now, registered)

    def _judge_own_clock(self, offset: float, now: float, registered: int) -> None:
        """Most registered peers off the same way: this clock is the one to set right."""
        if now - self._station_logged < CLOCK_WARN_S:
            return
        same_way = [
            o for o, seen, _ in self._peers.values() if now - seen <= RECENT_S and o * offset > 0
        ]
        if registered < 2 or 2 * len(same_way) <= registered:
            return
        self._station_logged = now
        way = "ahead of" if offset > 0 else "behind"
        log.warning(
            "%d of the %d registered peers' clocks are %.0f-%.0f s %s this RadioStation's: its "
            "clock is probably the wrong one, so set it right (NTP). Until then it refuses their "
            "heartbeats (their channels go on, with the member lists they fetch)",
            len(same_way),
            registered,
            min(abs(o) for o in same_way),
            max(abs(o) for o in same_way),
            way,
        )
