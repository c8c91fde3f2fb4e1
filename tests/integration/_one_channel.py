"""The backend a real PeerServicer reaches in tests of the p2p layer: one channel, "alpha"."""

from __future__ import annotations

from typing import Generic, TypeVar

from loopchain.p2p.errors import ErrorKind, RequestError

CHANNEL = "alpha"
C = TypeVar("C")


class OneChannelBackend(Generic[C]):
    """Serves `channel` as CHANNEL and refuses any other name as the peer does (NOT_FOUND)."""

    def __init__(self, channel: C) -> None:
        self.alpha = channel

    def channel(self, name: str) -> C:
        if name != CHANNEL:
            raise RequestError(ErrorKind.NOT_FOUND, f"no channel {name!r} on this peer")
        return self.alpha

    def identify(self, challenge: bytes) -> tuple[str, bytes]:
        raise NotImplementedError
