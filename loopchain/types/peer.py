"""Peer identity values shared by the peer and the RadioStation."""

from __future__ import annotations

import json
from collections.abc import Mapping
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


def settings_digest(heartbeat: bytes, settings: bytes) -> bytes:
    """What a peer signs for the `settings` (encode_settings) its heartbeat of digest `heartbeat`
    carries: a signature apart, so that a RadioStation of an earlier version, which checks the
    heartbeat's alone, still takes it."""
    return sha3_256(b"loopchain.heartbeat.settings." + heartbeat + settings)


# The settings every peer of a channel must share: a peer whose value differs refuses the
# others' blocks or has its own refused (the leaders' turns, the clock's tolerance, the
# transactions' window, a block's count and size), or records other results than theirs (the
# SCORE's limits). Each heartbeat says the peer's, and the RadioStation compares them.
ALIKE_SETTINGS = (
    "LEADER_BLOCK_CREATION_LIMIT",
    "MAX_TIMESTAMP_SKEW",
    "TX_TIMESTAMP_WINDOW",
    "MAX_BLOCK_TX_NUM",
    "MAX_BLOCK_KBYTES",
    "SCORE_STEP_LIMIT",
    "SCORE_MEMORY_LIMIT_MB",
)
MAX_SETTINGS_BYTES = 1024  # settings in a heartbeat past this are not looked at
MAX_SETTING = 2**53  # a setting's value is taken within this of 0 (a float holds every integer)

Settings = dict[str, int | float]


def encode_settings(values: Mapping[str, object]) -> bytes:
    """The ALIKE_SETTINGS of `values` (a configuration) as a heartbeat carries them."""
    said = {name: values[name] for name in ALIKE_SETTINGS if name in values}
    return json.dumps(said, sort_keys=True, separators=(",", ":")).encode()


def decode_settings(raw: bytes) -> Settings | None:
    """The settings a heartbeat carries: the ALIKE_SETTINGS among them that are finite numbers
    within MAX_SETTING of 0 (a 400-digit one raised converting it; review); None when there are
    none, or they are not a small JSON object."""
    if not raw or len(raw) > MAX_SETTINGS_BYTES:
        return None
    try:
        said = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(said, dict):
        return None
    settings: Settings = {
        name: value
        for name, value in said.items()
        if name in ALIKE_SETTINGS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and abs(value) <= MAX_SETTING  # NaN and the infinities are not
    }
    return settings or None
