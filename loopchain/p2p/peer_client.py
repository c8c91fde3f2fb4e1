"""Outbound gRPC to other peers: the PeerTransport over bounded per-peer links."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from loopchain import failpoints
from loopchain.configure import Config
from loopchain.p2p.grpc_util import (
    STREAM_ACCEPTED,
    Tls,
    max_proposal_bytes,
    open_channel,
    range_reply_bytes,
)
from loopchain.p2p.lanes import ByteBudget, MessageQueue
from loopchain.p2p.peer_health import ran_out
from loopchain.p2p.server_certs import ServerCheck, ServerRefused
from loopchain.p2p.transport import (
    ConsensusPayload,
    FetchedRange,
    MalformedReply,
    TransportError,
    TransportTimeout,
)
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
STREAM_ROTATE_S = 60.0  # a lane's stream older than this is replaced (make-before-break)
ROTATE_RETRY_S = 10.0  # a replacement refused is tried again this much later
PROBE_S = 1.0  # an idle lane to a peer that cannot be reached tries to open a stream this often
# an idle lane keeps its stream ready (opens, replaces, probes) while its link was used or
# connected (GrpcTransport.connect: each member list names the member) within this long: a link
# to a peer no longer listed goes quiet
KEEP_READY_S = 600.0
# a link unused this long (no message, no fetch, not listed) is closed when another is made: a
# peer's links are bounded by the peers it talked to lately, not by all it ever did (members
# come and go, move to other targets, over a life)
FORGET_LINK_S = 2 * KEEP_READY_S
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
    """One lane of a link: its messages on one long-lived stream, accepted by the other peer
    before anything is written to it. The stream is opened ahead of the messages, so that none
    waits for an acceptance (a round trip, most of a round between far peers) but after a
    failure: when the lane starts and whenever it falls idle without a working stream (see
    `ready`: again every PROBE_S while the peer cannot be reached, and once it is back), while
    the link is used (KEEP_READY_S; never for a link made with `keep_ready` False). One older
    than STREAM_ROTATE_S is replaced make-before-break: its successor is opened beside it while it
    carries on, and it ends in the background once the successor takes over (the messages of a
    stream are handled in order; those of two streams around a replacement may not be). A
    message whose stream fails is dropped, as a failed call's would be. To a peer that refuses a
    stream for a reason the call does not share (too many streams, or no streams at all) each
    message goes by its one-call twin `call`."""

    def __init__(
        self, link: PeerLink, queue: MessageQueue[Any], open_stream: Any, call: Any
    ) -> None:
        self.link = link
        self._queue = queue  # woken when a successor is accepted or refused
        self.target = link.target
        self.timeout = link.timeout
        self.metadata = link.metadata
        self._open_stream = open_stream
        self._call = call
        self._stream: Any = None
        self._opened = 0.0
        self._next: asyncio.Task[tuple[Any, grpc.StatusCode | None]] | None = None  # successor
        self._next_after = 0.0  # no successor is opened before this (the last one was refused)
        # an open failed since the lane's last message, when the link had come back this many
        # times (None: none failed); tried again when the peer is back (see `ready`)
        self._failed_at: int | None = None
        self._background: set[asyncio.Task[Any]] = set()  # replaced streams ending

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def idle_for(self) -> float | None:
        """How long an idle lane may wait for its next message before `ready` has work to do:
        its stream's replacement falls due (or may be tried again), or, with no stream or to a
        peer that cannot be reached, the next look (at whether its stream ended, whether to try
        again). None: nothing to do until a message comes (or a wake: a successor accepted or
        refused, the peer found unreachable or back); a link not used for KEEP_READY_S."""
        now = self._now()
        if not self.link.keeps_ready():
            return None
        if self.link.unreachable or self._stream is None:  # its stream may have ended too
            return PROBE_S
        if self._next is not None:
            return None  # its end wakes the lane
        return max(0.0, max(self._opened + STREAM_ROTATE_S, self._next_after) - now)

    async def ready(self) -> None:
        """With no message waiting: have a stream open and replace one that is old, so that the
        next message goes at once. An open that fails is tried again at the next message, every
        PROBE_S while the peer cannot be reached (its return is seen at once, not at the next
        message), and once when it is back (the other lane found it)."""
        self._take_successor()
        if not self.link.keeps_ready():
            return
        if self._stream is not None and self._stream.done():
            await self._drop_ended()
        if self._stream is None:
            backs = self.link.backs  # a return seen while this try fails: tried again
            if self._failed_at == backs and not self.link.unreachable:
                return
            if not await self.link.admitted():
                return
            refusal = await self._open()
            if refusal is None:
                self._failed_at = None
                self.link.reached()
            else:
                self.link.failed(refusal)
                self._failed_at = backs
        else:
            self._replace_when_old()

    async def send(self, message: Outbound) -> bool:
        """True when the message was written to the stream or taken by the call."""
        self._failed_at = None
        self.link.used()
        if not await self.link.admitted():  # its stream, opened before, ends
            self.close()
            return False
        self._take_successor()
        if self._stream is not None and self._stream.done():
            await self._drop_ended()
        if self._stream is None:
            refusal = await self._open()
            if refusal is not None:
                self.link.failed(refusal)
                return refusal in BY_CALL_WHEN_REFUSED and await self._send_by_call(message)
        else:
            self._replace_when_old()
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

    def _replace_when_old(self) -> None:
        now = self._now()
        if self._next is None and now - self._opened > STREAM_ROTATE_S and now >= self._next_after:
            self._next = asyncio.get_running_loop().create_task(self._accepted())
            self._next.add_done_callback(lambda _: self._queue.wake())

    def _take_successor(self) -> None:
        """Carry on on the successor once it is accepted; the stream it replaces ends in the
        background. A successor refused leaves the stream as it is (tried again later)."""
        task = self._next
        if task is None or not task.done():
            return
        self._next = None
        stream, refusal = None, None
        if task.cancelled():
            pass
        elif task.exception() is not None:
            log.warning("no stream to %s: %r", self.target, task.exception())
        else:
            stream, refusal = task.result()
        if stream is None:
            self._next_after = self._now() + ROTATE_RETRY_S
            if refusal is not None:
                self.link.failed(refusal)
            return
        old, self._stream, self._opened = self._stream, stream, self._now()
        if old is not None and not old.done():
            ending = asyncio.get_running_loop().create_task(self._finish(old))
            self._background.add(ending)
            ending.add_done_callback(self._background.discard)

    async def _accepted(self) -> tuple[Any, grpc.StatusCode | None]:
        """A new stream once the other peer accepts it, or the status it was refused with."""
        stream = self._open_stream(timeout=STREAM_DEADLINE_S, metadata=self.metadata)
        try:
            async with asyncio.timeout(self.timeout):
                metadata = await stream.initial_metadata()
                if STREAM_ACCEPTED in tuple(metadata or ()):
                    return stream, None
                code, details = await stream.code(), await stream.details()
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details()
        except TimeoutError:
            code, details = grpc.StatusCode.DEADLINE_EXCEEDED, "not accepted within the deadline"
        except asyncio.CancelledError:
            stream.cancel()
            raise
        stream.cancel()
        log.debug("no stream to %s: %s %s", self.target, code.name, details)
        return None, code

    async def _open(self) -> grpc.StatusCode | None:
        """Open a stream and wait until the other peer accepts it: None when it does, else the
        status it was refused with."""
        stream, refusal = await self._accepted()
        if stream is not None:
            self._stream, self._opened = stream, self._now()
        return refusal

    async def _send_by_call(self, message: Outbound) -> bool:
        try:
            await self._call(message, timeout=self.timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            log.debug("send to %s failed: %s", self.target, _failure(exc))
            self.link.failed(exc.code())
            return False
        self.link.reached()
        return True

    async def _drop_ended(self) -> None:
        """Take off the lane a stream that ended (by the other peer, or by its connection's
        failure): its status tells of the peer."""
        stream, self._stream = self._stream, None
        code = await stream.code()
        if code != grpc.StatusCode.OK:
            self.link.failed(code)

    async def _finish(self, stream: Any) -> None:
        """End a stream the lane no longer writes to and wait (within the deadline) for the
        other peer's answer, which comes once it has handled all that was written."""
        try:
            async with asyncio.timeout(self.timeout):
                await stream.done_writing()
                await stream
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError) as exc:
            log.debug("stream to %s ended badly: %s", self.target, _failure(exc))
            stream.cancel()
        except asyncio.CancelledError:
            stream.cancel()
            raise

    def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
        if self._next is not None:
            task, self._next = self._next, None
            if task.done() and not task.cancelled() and task.exception() is None:
                stream, _ = task.result()
                if stream is not None:
                    stream.cancel()
            task.cancel()
        for task in self._background:
            task.cancel()


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
        on_back: Callable[[], None] | None = None,
        keep_ready: bool = True,
    ) -> None:
        self.target = target
        self.metadata = metadata  # sent with every stream and call (a channel worker's caller)
        self.on_back = on_back  # called when the peer, unreachable, takes a message (or stream)
        # whether idle lanes keep their streams ready (see _Lane.ready) while the link is used;
        # False: opened at a message (a channel worker's caller links, one per caller)
        self.keep_ready = keep_ready
        self._used = time.monotonic()
        self.timeout = float(config.GRPC_TIMEOUT)
        # the bytes of a block served to this peer, before it is decoded (decoding one of 60 MB
        # held the event loop 3 s, review): a block not final yet no larger than a proposal it
        # takes (one it would never vote for); a final one, synced, no larger than a range reply
        # holds (blocks made final under larger settings, or before this peer's were lowered)
        self._largest_block = max_proposal_bytes(int(config.MAX_BLOCK_KBYTES))
        self._largest_final = range_reply_bytes(self._largest_block)
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
        # stopping), and it has taken none since (see `_reachable`)
        self.unreachable = False
        self.backs = 0  # how many times the peer was found back after being unreachable

    @property
    def dropped(self) -> int:
        """Its messages dropped: their lane full (the oldest first, or to make room for another
        link's lane sharing its budget), the link closed, or the other peer's server refused."""
        return self._dropped + self._consensus.evicted + self._gossip.evicted

    def used(self) -> None:
        """A message was sent, or the link is wanted (a member list names its peer)."""
        self._used = time.monotonic()

    def keeps_ready(self) -> bool:
        """Whether idle lanes keep their streams ready now (see KEEP_READY_S)."""
        return self.keep_ready and time.monotonic() - self._used < KEEP_READY_S

    def unused_for(self) -> float:
        """Seconds since the link was last used (see `used`)."""
        return time.monotonic() - self._used

    def reached(self) -> None:
        """A lane's message (or stream) went through."""
        self._reachable()

    def _reachable(self) -> None:
        """The other peer answered: a peer that could not be reached is back (`on_back`)."""
        back, self.unreachable = self.unreachable, False
        if back:
            self.backs += 1
            self._wake_lanes()  # a lane whose open failed tries again
            if self.on_back is not None:
                self.on_back()

    def _wake_lanes(self) -> None:
        self._consensus.wake()
        self._gossip.wake()

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
            if not self.unreachable:
                self.unreachable = True
                self._wake_lanes()  # the other lane's stream may have ended too
        elif code != grpc.StatusCode.DEADLINE_EXCEEDED:
            self._reachable()

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(
                    self._drain(
                        self._consensus,
                        _Lane(self, self._consensus, self.stub.DeliverStream, self.stub.Deliver),
                    ),
                    name=f"link:{self.target}",
                ),
                loop.create_task(
                    self._drain(
                        self._gossip,
                        _Lane(self, self._gossip, self.stub.AddTxStream, self.stub.AddTxBatch),
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
                message = await self._next_message(queue, lane)
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

    @staticmethod
    async def _next_message(queue: MessageQueue[Any], lane: _Lane) -> Any:
        """The lane's next message; while none waits, the lane readies its stream for it."""
        while not len(queue):
            await lane.ready()
            if len(queue):
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(lane.idle_for()):
                    await queue.readable()  # a message, or a wake
        return await queue.get()

    async def fetch_blocks(
        self,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Pooled | None = None,
        max_bytes: int = 0,
    ) -> FetchedRange:
        """Final blocks from `from_height` on, decoded (TransportError if failed or malformed,
        TransportTimeout when the range did not come within its deadline; `pooled`: see
        Block.decode)."""
        await self._fetch_admitted()
        deadline = self.timeout * 2
        began = time.monotonic()
        try:
            return await self._fetch_blocks(
                channel, from_height, max_blocks, pooled, max_bytes, deadline
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            # a range that did not come in time; not a peer answering DEADLINE_EXCEEDED at once
            late = ran_out(code, time.monotonic() - began, deadline)
            failed = TransportTimeout if late else TransportError
            raise failed(f"{self.target}: {code.name} {exc.details()}") from None
        except EncodingError as exc:
            raise MalformedReply(f"{self.target} served a malformed block: {exc}") from None

    async def _fetch_blocks(
        self,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Pooled | None,
        max_bytes: int,
        deadline: float,
    ) -> FetchedRange:
        request = pb.BlockRangeRequest(
            channel=channel, from_height=from_height, max_blocks=max_blocks, max_bytes=max_bytes
        )
        reply = await self.stub.GetBlockRange(request, timeout=deadline)
        if len(reply.blocks) > max_blocks:
            raise EncodingError(f"{len(reply.blocks)} blocks for at most {max_blocks} asked")
        blocks, budget = [], TurnBudget()  # a range is up to ~100 big blocks: not in one turn
        for b in reply.blocks:
            block = self._block(b.block, pooled, self._largest_final)
            blocks.append((block, QuorumCertificate.decode(b.certificate)))
            await budget.spent()
        proof = None
        if reply.HasField("commit_proof") and reply.commit_proof.block:
            proof = (
                self._block(reply.commit_proof.block, pooled, self._largest_final),
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
            return self._block(reply.block, pooled, self._largest_block) if reply.block else None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise TransportError(f"{self.target}: {exc.code().name} {exc.details()}") from None
        except EncodingError as exc:
            raise MalformedReply(f"{self.target} served a malformed block: {exc}") from None

    def _block(self, data: bytes, pooled: Pooled | None, largest: int) -> Block:
        """A served block decoded; EncodingError when it is larger than `largest` bytes."""
        if len(data) > largest:
            raise EncodingError(
                f"a block of {len(data)} bytes, more than the {largest} this peer takes (see "
                "MAX_BLOCK_KBYTES: is it set alike on every peer?)"
            )
        return Block.decode(data, pooled)

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
        self._when_back: list[Callable[[PeerInfo], None]] = []
        self._closing: set[asyncio.Task[None]] = set()  # links forgotten, being closed

    @staticmethod
    def _key(peer: PeerInfo) -> str:
        return f"{peer.peer_id}@{peer.target}"

    def link(self, peer: PeerInfo) -> PeerLink:
        key = self._key(peer)
        link = self.links.get(key)
        if link is None:
            link = PeerLink(
                peer.target,
                self.config,
                self.tls,
                server_name=peer.peer_id,
                on_back=lambda: self._back(peer),
            )
            self._forget_unused()
            link.start()
            self.links[key] = link
        else:  # each caller uses it (sends, fetches, connects): marked so, it is not forgotten
            link.used()  # with a message queued on it
        return link

    def _forget_unused(self) -> None:
        """Close the links unused for FORGET_LINK_S (in the background: what they held is
        dropped); one is made again when its peer is talked to."""
        for key, link in list(self.links.items()):
            if link.unused_for() >= FORGET_LINK_S:
                del self.links[key]
                closing = asyncio.create_task(link.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closed)

    def _closed(self, closing: asyncio.Task[None]) -> None:
        self._closing.discard(closing)
        if not closing.cancelled() and closing.exception() is not None:
            log.warning("closing an unused link failed: %r", closing.exception())

    def send_consensus(
        self, peer: PeerInfo, channel: str, sender: str, payload: ConsensusPayload
    ) -> None:
        self.link(peer).send(consensus_message(channel, sender, payload))

    def send_txs(self, peer: PeerInfo, channel: str, txs: Sequence[Transaction]) -> None:
        self.link(peer).send(pb.TxBatch(channel=channel, txs=[tx.encode() for tx in txs]))

    def connect(self, peer: PeerInfo) -> None:
        self.link(peer)  # a new link opens its lanes' streams at once; one made is marked used

    def when_back(self, callback: Callable[[PeerInfo], None]) -> None:
        self._when_back.append(callback)

    def _back(self, peer: PeerInfo) -> None:
        loop = asyncio.get_running_loop()
        for callback in self._when_back:  # off the lane's task: what they raise is theirs
            loop.call_soon(callback, peer)

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
        max_bytes: int = 0,
    ) -> FetchedRange:
        return await self.link(peer).fetch_blocks(
            channel, from_height, max_blocks, pooled, max_bytes
        )

    async def close(self) -> None:
        links, self.links = self.links, {}
        for link in links.values():
            await link.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
