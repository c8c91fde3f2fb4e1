"""Peer identity values shared by the peer and the RadioStation."""

from __future__ import annotations

from dataclasses import dataclass

from loopchain.types import canonical
from loopchain.types.hashing import sha3_256


@dataclass(frozen=True)
class PeerInfo:
    """A peer as the directory knows it."""

    peer_id: str
    target: str
    order: int
    group_id: str = ""


def connect_digest(peer_id: str, target: str, group_id: str) -> bytes:
    """What a peer signs to register with the RadioStation (proves it holds the peer id's key)."""
    body = {"peer_id": peer_id, "target": target, "group_id": group_id}
    return sha3_256(b"loopchain.connect." + canonical.encode(body))


IDENTIFY_CHALLENGE_BYTES = 32


def identify_digest(challenge: bytes) -> bytes:
    """What a peer signs to prove to the RadioStation that its key answers at its target."""
    return sha3_256(b"loopchain.identify." + challenge)


def heartbeat_digest(
    peer_id: str, channel: str, peer_type: int, block_height: int, timestamp_us: int
) -> bytes:
    """What a peer signs in each heartbeat (only the peer itself can say it is alive or leader)."""
    body = {
        "peer_id": peer_id,
        "channel": channel,
        "peer_type": peer_type,
        "block_height": block_height,
        "timestamp": timestamp_us,
    }
    return sha3_256(b"loopchain.heartbeat." + canonical.encode(body))
