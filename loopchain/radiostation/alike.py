"""Whether the peers of a channel run with the settings they must share (types/peer.py
ALIKE_SETTINGS). Each heartbeat says the peer's; one set otherwise than the others refuses their
blocks or has its own refused, or records other results, and nothing but the stalls showed why
(operator review: a peer with another LEADER_BLOCK_CREATION_LIMIT said only "but the leader is
..."). The RadioStation answers each heartbeat with how its settings differ from those of the
channel's other connected peers, and logs a peer in a minority."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Container, Iterable

from loopchain.types.peer import ALIKE_SETTINGS, Settings

log = logging.getLogger(__name__)


def _shown(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def compare(
    own: Settings, others: Iterable[Settings], skip: Container[str] = ()
) -> tuple[str, bool]:
    """How `own` differs from `others` ("" when in nothing: per setting, its value here and each
    other value with how many of the others that state the setting hold it), and whether it is
    in a minority (fewer peers, this one counted, hold one of its values than hold another)."""
    others = list(others)
    parts, minority = [], False
    for name in ALIKE_SETTINGS:
        if name not in own or name in skip:
            continue
        held = Counter(s[name] for s in others if name in s)
        elsewhere = [(value, n) for value, n in held.most_common() if value != own[name]]
        if elsewhere:
            total = sum(held.values())
            said = ", ".join(f"{_shown(value)} at {n} of {total}" for value, n in elsewhere)
            parts.append(f"{name} {_shown(own[name])} here, {said} other peers")
            minority = minority or held[own[name]] + 1 < elsewhere[0][1]
    return "; ".join(parts), minority


class SettingsWatch:
    """What the RadioStation last logged of each peer of each channel about its settings, so
    that it logs a peer in a minority once, and again only when what it says changes, at most
    every WARN_EVERY_S (a peer changing its values at each heartbeat logged a line each)."""

    WARN_EVERY_S = 60.0

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock  # monotonic
        self._told: dict[tuple[str, str], tuple[str, float]] = {}

    def judge(
        self,
        channel: str,
        peer_id: str,
        own: Settings,
        others: list[Settings],
        skip: Container[str],
        pairs: int,
    ) -> str:
        """How `own` differs from `others` (compare), logged when `peer_id` is in a minority.
        `pairs` (the channels' members counted over every channel) bounds what is remembered."""
        said, minority = compare(own, others, skip)
        key = (channel, peer_id)
        warned, warned_at = self._told.get(key, ("", -math.inf))
        now = self.clock()
        if minority:
            if said != warned and now - warned_at >= self.WARN_EVERY_S:
                if key not in self._told and len(self._told) >= pairs:  # removed peers' go
                    self._told.clear()
                self._told[key] = (said, now)
                log.warning(
                    "channel %s: peer %s runs with other settings than the channel's other "
                    "connected peers (they must be alike on every peer: its blocks or theirs "
                    "are refused, or its results differ): %s",
                    channel,
                    peer_id,
                    said,
                )
        elif warned:
            del self._told[key]
            log.info(
                "channel %s: peer %s no longer runs with settings of its own", channel, peer_id
            )
        return said
