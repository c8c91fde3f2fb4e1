"""What a channel needs from the network, in domain values: no protobuf type or gRPC error
crosses this interface. `GrpcTransport` (peer_client.py) is the real one; `InMemoryTransport`
(memory.py) connects channel services inside one process for tests and simulations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from loopchain.types.block import Block, Pooled
from loopchain.types.peer import PeerInfo
from loopchain.types.transaction import Transaction
from loopchain.types.vote import Complaint, QuorumCertificate, Vote

# A consensus message as sent: a proposal (its block), a vote, a certificate or a complaint.
ConsensusPayload = Block | Vote | QuorumCertificate | Complaint


class TransportError(Exception):
    """A call to another peer failed: unreachable, refused, late, or answered with garbage."""


class TransportTimeout(TransportError):
    """The other peer did not answer within the call's deadline: it is slow, or the path to it
    carries less than the answer's bytes in that time. (Not a peer answering DEADLINE_EXCEEDED
    at once.)"""


class MalformedReply(TransportError):
    """The other peer answered with bytes that do not decode (worth a warning: a faulty or
    hostile peer, not a slow one)."""


@dataclass(frozen=True)
class FetchedRange:
    """Final blocks served by a peer, its tip height and the proof that the last one is final."""

    blocks: tuple[tuple[Block, QuorumCertificate], ...]
    tip_height: int
    proof: tuple[Block, QuorumCertificate] | None


class PeerTransport(Protocol):
    """Messages to other peers of a channel. Sends are fire-and-forget on bounded queues
    (consensus ahead of gossip); fetches have deadlines and raise TransportError."""

    def send_consensus(
        self, peer: PeerInfo, channel: str, sender: str, payload: ConsensusPayload
    ) -> None: ...

    def send_txs(self, peer: PeerInfo, channel: str, txs: Sequence[Transaction]) -> None: ...

    def connect(self, peer: PeerInfo) -> None:
        """Get ready to send to `peer`: its connection and streams are opened ahead of the first
        message (between far peers each costs a round trip); nothing when they are open."""
        ...

    def when_back(self, callback: Callable[[PeerInfo], None]) -> None:
        """Call `callback(peer)` whenever a peer that could not be reached (see `unreachable`)
        takes a message or a stream again: what it missed meanwhile can go to it at once."""
        ...

    def unreachable(self, peer: PeerInfo) -> bool:
        """The last message sent to `peer` failed to reach its process (connection refused or
        lost: it is down, or cut off from this peer), and none has reached it since. False when
        nothing is known: no message sent yet, or a peer that is merely slow."""
        ...

    async def fetch_block(
        self, peer: PeerInfo, channel: str, block_hash: bytes, pooled: Pooled | None = None
    ) -> Block | None:
        """A block (final or not) by hash, None when the peer does not have it (`pooled`: as for
        Block.decode, the transactions this peer holds are taken as they are)."""
        ...

    async def fetch_blocks(
        self,
        peer: PeerInfo,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Pooled | None = None,
        max_bytes: int = 0,
    ) -> FetchedRange:
        """Final blocks from `from_height` on, with the proof of the last when it is the tip
        (`pooled`: as for fetch_block): at most `max_blocks`, and at most `max_bytes` of them
        (0: as many as the other peer sends at once; two blocks always come)."""
        ...

    async def close(self) -> None: ...
