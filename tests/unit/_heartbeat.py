"""Stand-ins the peer's heartbeat tests share (the RadioStation's side differs per test file)."""

from __future__ import annotations

from loopchain.types.peer import PeerInfo

CHANNEL = "alpha"


class HeartbeatChannel:
    """A channel service as the heartbeat loop sees it: its status, and the members it is given."""

    name = CHANNEL

    def __init__(self) -> None:
        self.members: list[PeerInfo] = []

    def status(self) -> dict[str, int]:
        return {"peer_type": 0, "block_height": 0}

    def set_members(self, peers: list[PeerInfo]) -> None:
        self.members = peers
