"""Outbound gRPC to other peers: the PeerTransport over bounded per-peer links."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import grpc

from loopchain import failpoints
from loopchain.configure import Config
from loopchain.p2p.grpc_util import STREAM_ACCEPTED, Tls, open_channel
from loopchain.p2p.lanes import ByteBudget, MessageQueue
from loopchain.p2p.server_certs import ServerCheck, ServerRefused
from loopchain.p2p.transport import ConsensusPayload, FetchedRange, MalformedReply, TransportError
from loopchain.p2p.turns import TurnBudget
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.block import Block, Pooled
from loopchain.types.canonical import EncodingError
from loopchain.types.peer import PeerInfo
from loopchain.types.transaction import Transaction
from loopchain.types.vote import QuorumCertificate, Vote

log = logging.getLogger(__name__)

Outbound = pb.ConsensusMessage | pb.TxBatch
STREAM_ROTATE_S = 60.0  # a lane's stream older than this is replaced before its next message
STREAM_DEADLINE_S = 600.0  # the deadline of a lane's stream (one left idle ends by it)
LANE_BYTES = 64 << 20  # the bytes a lane holds (beside its bound by count)
# a stream refused for these: the peer takes the same messages one call each
BY_CALL_WHEN_REFUSED = frozenset(
    {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED}
)


def _failure(exc: Exception) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name} {exc.details()}"
    if isinstance(exc, TimeoutError):
        return "no room to write within the deadline"
    return f"stream already ended ({exc})"


def consensus_message(channel: str, sender: str, payload: ConsensusPayload) -> pb.ConsensusMessage:
    """The Deliver message carrying a proposal, vote, certificate or complaint."""
    message = pb.ConsensusMessage(channel=channel, sender=sender)
    if isinstance(payload, Block):
        message.proposal = payload.encode()
    elif isinstance(payload, Vote):
        message.vote = payload.encode()
    elif isinstance(payload, QuorumCertificate):
        message.certificate = payload.encode()
    else:
        message.complaint = payload.encode()
    return message


class _Lane:
    """One lane of a link: its messages in order on one long-lived stream, opened when needed
    (and accepted by the other peer before anything is written to it), replaced when it ends
    or is older than STREAM_ROTATE_S (after the other peer has handled all of it). A message
    whose stream fails is dropped, as a failed call's would be. To a peer that refuses a
    stream for a reason the call does not share (too many streams, or no streams at all) each
    message goes by its one-call twin `call`."""

    def __init__(self, link: PeerLink, open_stream: Any, call: Any) -> None:
        self.link = link
        self.target = link.target
        self.timeout = link.timeout
        self.metadata = link.metadata
        self._open_stream = open_stream
        self._call = call
        self._stream: Any = None
        self._opened = 0.0

    async def send(self, message: Outbound) -> bool:
        """True when the message was written to the stream or taken by the call."""
        if not await self.link.admitted():  # its stream, opened before, ends
            self.close()
            return False
        now = asyncio.get_running_loop().time()
        if self._stream is not None and (
            self._stream.done() or now - self._opened > STREAM_ROTATE_S
        ):
            await self._end()
        if self._stream is None:
            refusal = await self._open()
            if refusal is not None:
                self.link.failed(refusal)
                return refusal in BY_CALL_WHEN_REFUSED and await self._send_by_call(message)
        try:
            async with asyncio.timeout(self.timeout):
                await self._stream.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError) as exc:
            log.debug("stream to %s failed: %s", self.target, _failure(exc))
            if isinstance(exc, grpc.aio.AioRpcError):
                self.link.failed(exc.code())
            self.close()
            return False
        self.link.reached()
        return True

    async def _open(self) -> grpc.StatusCode | None:
        """Open a stream and wait until the other peer accepts it: None when it does, else the
        status it was refused with."""
        stream = self._open_stream(timeout=STREAM_DEADLINE_S, metadata=self.metadata)
        try:
            async with asyncio.timeout(self.timeout):
                metadata = await stream.initial_metadata()
                if STREAM_ACCEPTED in tuple(metadata or ()):
                    self._stream, self._opened = stream, asyncio.get_running_loop().time()
                    return None
                code, details = await stream.code(), await stream.details()
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details()
        except TimeoutError:
            code, details = grpc.StatusCode.DEADLINE_EXCEEDED, "not accepted within the deadline"
        stream.cancel()
        log.debug("no stream to %s: %s %s", self.target, code.name, details)
        return code

    async def _send_by_call(self, message: Outbound) -> bool:
        try:
            await self._call(message, timeout=self.timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            log.debug("send to %s failed: %s", self.target, _failure(exc))
            self.link.failed(exc.code())
            return False
        self.link.reached()
        return True

    async def _end(self) -> None:
        """Close the stream being replaced and wait (within the deadline) for the other peer's
        answer, which comes after it has handled all that was written: the lane's next stream
        starts after the last, so its messages stay in order."""
        stream, self._stream = self._stream, None
        if stream.done():  # ended by the other peer, or by its connection's failure
            code = await stream.code()
            if code != grpc.StatusCode.OK:
                self.link.failed(code)
            return
        try:
            async with asyncio.timeout(self.timeout):
                await stream.done_writing()
                await stream
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError) as exc:
            log.debug("stream to %s ended badly: %s", self.target, _failure(exc))
            stream.cancel()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None


class PeerLink:
    """One remote peer: a gRPC channel and two lanes bounded by count and bytes, each drained by
    its own task onto its own stream, so consensus messages never wait behind transaction gossip
    (HTTP/2 carries both at once). `budget`: bytes the lanes share with other links' (see
    loopchain.p2p.lanes). Over mutual TLS to a peer (`server_name`: its peer id) nothing is sent
    to, nor fetched from, a server whose certificate is refused (server_certs.ServerCheck:
    revoked, checked again when the revocation lists change)."""

    def __init__(
        self,
        target: str,
        config: Config,
        tls: Tls | None = None,
        *,
        server_name: str = "",
        queue_size: int = 1024,
        gossip_queue_size: int = 64,
        lane_bytes: int = LANE_BYTES,
        budget: ByteBudget | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.target = target
        self.metadata = metadata  # sent with every stream and call (a channel worker's caller)
        self.timeout = float(config.GRPC_TIMEOUT)
        self._channel = open_channel(target, config, tls, server_name, watched=True)
        self._check = (
            ServerCheck(tls, target, server_name, self.timeout)
            if tls is not None and tls.handshake is not None and server_name
            else None
        )
        self.refusal = ""  # why the other peer's server is refused now ("": it is not)
        self.stub = pb_grpc.PeerServiceStub(self._channel)
        self._consensus: MessageQueue[pb.ConsensusMessage] = MessageQueue(
            queue_size, lane_bytes, budget
        )
        self._gossip: MessageQueue[pb.TxBatch] = MessageQueue(gossip_queue_size, lane_bytes, budget)
        self._tasks: list[asyncio.Task[None]] = []
        self._dropped = 0  # see `dropped`
        # the last message either lane tried to send found no connection to the other peer
        # (UNAVAILABLE: refused, reset, no route, failed handshake, pings unanswered, or it is
        # stopping), and it has taken none since
        self.unreachable = False

    @property
    def dropped(self) -> int:
        """Its messages dropped: their lane full (the oldest first, or to make room for another
        link's lane sharing its budget), the link closed, or the other peer's server refused."""
        return self._dropped + self._consensus.evicted + self._gossip.evicted

    def reached(self) -> None:
        """A lane's message went through."""
        self.unreachable = False

    async def admitted(self) -> bool:
        """Whether the other peer's server may be sent to now (see ServerCheck); a peer refused
        counts as unreachable: this peer is cut off from it."""
        if self._check is None:
            return True
        try:
            await self._check.admit()
        except ServerRefused as refused:
            self.refusal = refused.message
            self.unreachable = True
            return False
        self.refusal = ""
        return True

    async def _fetch_admitted(self) -> None:
        if not await self.admitted():
            raise TransportError(f"{self.target}: {self.refusal}")

    def failed(self, code: grpc.StatusCode) -> None:
        """A lane's message did not go through: UNAVAILABLE says no connection could be had; a
        missed deadline says nothing (a slow peer); any other code is the other peer's answer."""
        if code == grpc.StatusCode.UNAVAILABLE:
            self.unreachable = True
        elif code != grpc.StatusCode.DEADLINE_EXCEEDED:
            self.unreachable = False

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(
                    self._drain(
                        self._consensus, _Lane(self, self.stub.DeliverStream, self.stub.Deliver)
                    ),
                    name=f"link:{self.target}",
                ),
                loop.create_task(
                    self._drain(
                        self._gossip, _Lane(self, self.stub.AddTxStream, self.stub.AddTxBatch)
                    ),
                    name=f"gossip:{self.target}",
                ),
            ]

    def _lane_of(self, message: Outbound) -> MessageQueue[Any]:
        return self._gossip if isinstance(message, pb.TxBatch) else self._consensus

    def send(self, message: Outbound) -> None:
        """Queue a message on its lane; when the lane is full its oldest messages are dropped
        (gossiped transactions stay pooled at the sender and are gossiped again)."""
        self._dropped += self._lane_of(message).put_dropping(message, message.ByteSize())

    async def _drain(self, queue: MessageQueue[Any], lane: _Lane) -> None:
        try:
            while True:
                message = await queue.get()
                try:
                    sent = await lane.send(message)
                finally:
                    queue.done()  # held (in the budget) until it has gone
                if not sent and self.refusal:
                    self._dropped += 1
                if (
                    sent
                    and isinstance(message, pb.ConsensusMessage)
                    and message.HasField("proposal")
                ):
                    failpoints.hit("proposal-broadcast")
        finally:
            lane.close()

    async def fetch_blocks(
        self, channel: str, from_height: int, max_blocks: int, pooled: Pooled | None = None
    ) -> FetchedRange:
        """Final blocks from `from_height` on, decoded (TransportError if failed or malformed;
        `pooled`: see Block.decode)."""
        await self._fetch_admitted()
        try:
            return await self._fetch_blocks(channel, from_height, max_blocks, pooled)
        except grpc.aio.AioRpcError as exc:
            raise TransportError(f"{self.target}: {exc.code().name} {exc.details()}") from None
        except EncodingError as exc:
            raise MalformedReply(f"{self.target} served a malformed block: {exc}") from None

    async def _fetch_blocks(
        self, channel: str, from_height: int, max_blocks: int, pooled: Pooled | None
    ) -> FetchedRange:
        reply = await self.stub.GetBlockRange(
            pb.BlockRangeRequest(channel=channel, from_height=from_height, max_blocks=max_blocks),
            timeout=self.timeout * 2,
        )
        if len(reply.blocks) > max_blocks:
            raise EncodingError(f"{len(reply.blocks)} blocks for at most {max_blocks} asked")
        blocks, budget = [], TurnBudget()  # a range is up to ~100 big blocks: not in one turn
        for b in reply.blocks:
            blocks.append((Block.decode(b.block, pooled), QuorumCertificate.decode(b.certificate)))
            await budget.spent()
        proof = None
        if reply.HasField("commit_proof") and reply.commit_proof.block:
            proof = (
                Block.decode(reply.commit_proof.block, pooled),
                QuorumCertificate.decode(reply.commit_proof.certificate),
            )
        return FetchedRange(tuple(blocks), reply.tip_height, proof)

    async def fetch_block(
        self, channel: str, block_hash: bytes, pooled: Pooled | None = None
    ) -> Block | None:
        """A block (final or not) by hash, None when the peer does not have it (`pooled`: see
        Block.decode)."""
        await self._fetch_admitted()
        try:
            reply = await self.stub.GetBlock(
                pb.GetBlockRequest(channel=channel, block_hash=block_hash.hex(), height=-1),
                timeout=self.timeout,
            )
            return Block.decode(reply.block, pooled) if reply.block else None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise TransportError(f"{self.target}: {exc.code().name} {exc.details()}") from None
        except EncodingError as exc:
            raise MalformedReply(f"{self.target} served a malformed block: {exc}") from None

    async def close(self) -> None:
        self._consensus.close()
        self._gossip.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._channel.close()


class GrpcTransport:
    """The PeerTransport over gRPC: one PeerLink per remote peer (mutual TLS pinned to its peer
    id when TLS is on), made on first use."""

    def __init__(self, config: Config, tls: Tls | None = None) -> None:
        self.config = config
        self.tls = tls
        self.links: dict[str, PeerLink] = {}

    @staticmethod
    def _key(peer: PeerInfo) -> str:
        return f"{peer.peer_id}@{peer.target}"

    def link(self, peer: PeerInfo) -> PeerLink:
        key = self._key(peer)
        link = self.links.get(key)
        if link is None:
            link = PeerLink(peer.target, self.config, self.tls, server_name=peer.peer_id)
            link.start()
            self.links[key] = link
        return link

    def send_consensus(
        self, peer: PeerInfo, channel: str, sender: str, payload: ConsensusPayload
    ) -> None:
        self.link(peer).send(consensus_message(channel, sender, payload))

    def send_txs(self, peer: PeerInfo, channel: str, txs: Sequence[Transaction]) -> None:
        self.link(peer).send(pb.TxBatch(channel=channel, txs=[tx.encode() for tx in txs]))

    def unreachable(self, peer: PeerInfo) -> bool:
        link = self.links.get(self._key(peer))
        return link is not None and link.unreachable

    async def fetch_block(
        self, peer: PeerInfo, channel: str, block_hash: bytes, pooled: Pooled | None = None
    ) -> Block | None:
        return await self.link(peer).fetch_block(channel, block_hash, pooled)

    async def fetch_blocks(
        self,
        peer: PeerInfo,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Pooled | None = None,
    ) -> FetchedRange:
        return await self.link(peer).fetch_blocks(channel, from_height, max_blocks, pooled)

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
