"""An in-memory PeerTransport: channel services of one process talk to each other directly.

Messages travel as the real transport carries them — encoded on send, decoded on arrival — and
arrive on a later turn of the event loop, so a handler never runs inside its sender. Peers can be
cut off (`down`) to watch the others carry on, or made to serve garbled blocks (`garbled`), as a
faulty or hostile member would. For unit tests and simulations only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from loopchain.consensus import messages as m
from loopchain.p2p.peer_service import ChannelBackend
from loopchain.p2p.transport import (
    ConsensusPayload,
    FetchedRange,
    MalformedReply,
    TransportError,
)
from loopchain.types.block import Block, Pooled
from loopchain.types.canonical import EncodingError
from loopchain.types.peer import PeerInfo
from loopchain.types.transaction import Transaction
from loopchain.types.vote import Complaint, QuorumCertificate, Vote

T = TypeVar("T")


class InMemoryNetwork:
    """The channel backends of several peers, by peer id, and which of them are cut off."""

    def __init__(self) -> None:
        self.backends: dict[str, ChannelBackend] = {}
        self.down: set[str] = set()
        self.garbled: set[str] = set()  # peers whose block replies arrive cut short
        self.delivered = 0
        self.gossiped = 0  # transactions delivered by gossip
        self.connected: list[tuple[str, str]] = []  # (from, to): each `connect`, in order
        self.when_back: list[Callable[[PeerInfo], None]] = []  # every transport's callbacks

    def bring_back(self, peer: PeerInfo) -> None:
        """Peer `peer`, cut off (in `down`), can be reached again: the others are told so, as a
        real transport tells them when their links get through again."""
        self.down.discard(peer.peer_id)
        for callback in list(self.when_back):
            callback(peer)

    def transport(self, sender: str) -> InMemoryTransport:
        """The transport one peer uses."""
        return InMemoryTransport(self, sender)


class InMemoryTransport:
    """The PeerTransport of one peer of an InMemoryNetwork."""

    def __init__(self, network: InMemoryNetwork, sender: str) -> None:
        self.network = network
        self.sender = sender

    def _target(self, peer: PeerInfo) -> ChannelBackend | None:
        if self.sender in self.network.down or peer.peer_id in self.network.down:
            return None
        return self.network.backends.get(peer.peer_id)

    def send_consensus(
        self, peer: PeerInfo, channel: str, sender: str, payload: ConsensusPayload
    ) -> None:
        raw, kind = payload.encode(), type(payload)
        asyncio.get_running_loop().call_soon(self._deliver, peer, raw, kind)

    def _deliver(self, peer: PeerInfo, raw: bytes, kind: type) -> None:
        target = self._target(peer)
        if target is None:
            return
        self.network.delivered += 1
        target.receive(_event(kind, raw, target))

    def send_txs(self, peer: PeerInfo, channel: str, txs: Sequence[Transaction]) -> None:
        raws = [tx.encode() for tx in txs]

        def deliver() -> None:
            target = self._target(peer)
            if target is not None:
                self.network.gossiped += len(raws)
                relayed = [Transaction.decode(raw) for raw in raws]
                target.receive_txs(relayed, self.sender)  # known, as a TLS peer is

        asyncio.get_running_loop().call_soon(deliver)

    def when_back(self, callback: Callable[[PeerInfo], None]) -> None:
        self.network.when_back.append(callback)

    def connect(self, peer: PeerInfo) -> None:
        self.network.connected.append((self.sender, peer.peer_id))  # nothing to open here

    def unreachable(self, peer: PeerInfo) -> bool:
        return self._target(peer) is None

    async def fetch_block(
        self, peer: PeerInfo, channel: str, block_hash: bytes, pooled: Pooled | None = None
    ) -> Block | None:
        await asyncio.sleep(0)
        target = self._reachable(peer)
        found = target.get_block(-1, block_hash)
        return self._decode(peer, found.block, Block, pooled) if found is not None else None

    async def fetch_blocks(
        self,
        peer: PeerInfo,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Pooled | None = None,
        max_bytes: int = 0,
    ) -> FetchedRange:
        await asyncio.sleep(0)
        found = self._reachable(peer).block_range(from_height, max_blocks, max_bytes)
        blocks = tuple(
            (self._decode(peer, b, Block, pooled), self._decode(peer, c, QuorumCertificate))
            for b, c in found.blocks
        )
        proof = None
        if found.proof is not None:
            proof = (
                self._decode(peer, found.proof[0], Block, pooled),
                self._decode(peer, found.proof[1], QuorumCertificate),
            )
        return FetchedRange(blocks, found.tip_height, proof)

    def _decode(self, peer: PeerInfo, raw: bytes, kind: type[T], pooled: Pooled | None = None) -> T:
        if peer.peer_id in self.network.garbled:
            raw = raw[:-1]
        try:
            if pooled is not None:  # a block
                return kind.decode(raw, pooled)  # type: ignore[attr-defined, no-any-return]
            return kind.decode(raw)  # type: ignore[attr-defined, no-any-return]
        except EncodingError as exc:
            raise MalformedReply(f"{peer.target} served a malformed block: {exc}") from None

    def _reachable(self, peer: PeerInfo) -> ChannelBackend:
        target = self._target(peer)
        if target is None:
            raise TransportError(f"peer {peer.peer_id} is unreachable")
        return target

    async def close(self) -> None:
        return None


def _event(kind: type, raw: bytes, target: ChannelBackend) -> m.Event:
    if kind is Block:
        return m.ProposalReceived(Block.decode(raw, target.pooled_transaction))
    if kind is Vote:
        return m.VoteReceived(Vote.decode(raw))
    if kind is QuorumCertificate:
        return m.CertificateReceived(QuorumCertificate.decode(raw))
    return m.ComplaintReceived(Complaint.decode(raw))
