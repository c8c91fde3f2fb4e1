"""Stand-ins the peer's heartbeat tests share (the RadioStation's side differs per test file)."""

from __future__ import annotations

from loopchain.consensus.messages import ValidatorsChanged
from loopchain.types.peer import PeerInfo
from loopchain.types.validators import ValidatorSet

CHANNEL = "alpha"


class HeartbeatChannel:
    """A channel service as the heartbeat loop sees it: its status, the members and events it is
    given, and how its peer's clock is off (Node._judge_clock sets it)."""

    def __init__(self, role: str = "validator", name: str = CHANNEL) -> None:
        self.name = name
        self.members: list[PeerInfo] = []
        self.role = role
        self.clock_off: str | None = None
        self.received: list[object] = []  # the consensus events it was given
        self.kept_ready = 0  # heartbeats that kept its links to the members ready

    def status(self) -> dict[str, int | str]:
        return {"peer_type": 0, "block_height": 0, "role": self.role}

    def set_members(self, peers: list[PeerInfo]) -> None:
        self.members = peers

    def receive(self, event: object) -> None:
        self.received.append(event)

    def take_newest_set(self, validators: ValidatorSet) -> None:
        """The RadioStation's newest set, as the consensus is given it."""
        self.receive(ValidatorsChanged(validators))

    def keep_members_ready(self) -> None:
        self.kept_ready += 1
