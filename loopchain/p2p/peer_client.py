"""Outbound gRPC to other peers: bounded per-peer send queues and block-range fetches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import grpc

from loopchain.configure import Config
from loopchain.p2p.grpc_util import Tls, open_channel
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from loopchain.types.vote import Complaint, QuorumCertificate, Vote

log = logging.getLogger(__name__)

Outbound = pb.ConsensusMessage | pb.TxBatch


def proposal_message(channel: str, sender: str, block: Block) -> pb.ConsensusMessage:
    return pb.ConsensusMessage(channel=channel, sender=sender, proposal=block.encode())


def vote_message(channel: str, sender: str, vote: Vote) -> pb.ConsensusMessage:
    return pb.ConsensusMessage(channel=channel, sender=sender, vote=vote.encode())


def certificate_message(channel: str, sender: str, qc: QuorumCertificate) -> pb.ConsensusMessage:
    return pb.ConsensusMessage(channel=channel, sender=sender, certificate=qc.encode())


def complaint_message(channel: str, sender: str, complaint: Complaint) -> pb.ConsensusMessage:
    return pb.ConsensusMessage(channel=channel, sender=sender, complaint=complaint.encode())


def tx_batch_message(channel: str, txs: list[Transaction]) -> pb.TxBatch:
    return pb.TxBatch(channel=channel, txs=[tx.encode() for tx in txs])


@dataclass(frozen=True)
class FetchedRange:
    """Final blocks served by a peer, its tip height and the proof that the last one is final."""

    blocks: tuple[tuple[Block, QuorumCertificate], ...]
    tip_height: int
    proof: tuple[Block, QuorumCertificate] | None


class PeerLink:
    """One remote peer: a gRPC channel and two bounded lanes, each drained by its own task, so
    consensus messages never wait behind transaction gossip (HTTP/2 carries both at once)."""

    def __init__(
        self,
        target: str,
        config: Config,
        tls: Tls | None = None,
        *,
        server_name: str = "",
        queue_size: int = 1024,
        gossip_queue_size: int = 64,
    ) -> None:
        self.target = target
        self.timeout = float(config.GRPC_TIMEOUT)
        self._channel = open_channel(target, config, tls, server_name)
        self.stub = pb_grpc.PeerServiceStub(self._channel)
        self._consensus: asyncio.Queue[pb.ConsensusMessage] = asyncio.Queue(queue_size)
        self._gossip: asyncio.Queue[pb.TxBatch] = asyncio.Queue(gossip_queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0  # messages dropped because their lane was full (oldest first)

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(
                    self._drain(self._consensus, self.stub.Deliver), name=f"link:{self.target}"
                ),
                loop.create_task(
                    self._drain(self._gossip, self.stub.AddTxBatch),
                    name=f"gossip:{self.target}",
                ),
            ]

    def send(self, message: Outbound) -> None:
        """Queue a message on its lane; when the lane is full its oldest message is dropped
        (gossiped transactions stay pooled at the sender and are gossiped again)."""
        queue: asyncio.Queue[Any] = (
            self._gossip if isinstance(message, pb.TxBatch) else self._consensus
        )
        if queue.full():
            queue.get_nowait()
            self.dropped += 1
        queue.put_nowait(message)

    async def _drain(self, queue: asyncio.Queue[Any], call: Any) -> None:
        while True:
            message = await queue.get()
            try:
                await call(message, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                log.debug("send to %s failed: %s %s", self.target, exc.code().name, exc.details())

    async def fetch_blocks(self, channel: str, from_height: int, max_blocks: int) -> FetchedRange:
        """Final blocks from `from_height` on, decoded (EncodingError if malformed)."""
        reply = await self.stub.GetBlockRange(
            pb.BlockRangeRequest(channel=channel, from_height=from_height, max_blocks=max_blocks),
            timeout=self.timeout * 2,
        )
        blocks = tuple(
            (Block.decode(b.block), QuorumCertificate.decode(b.certificate)) for b in reply.blocks
        )
        proof = None
        if reply.HasField("commit_proof") and reply.commit_proof.block:
            proof = (
                Block.decode(reply.commit_proof.block),
                QuorumCertificate.decode(reply.commit_proof.certificate),
            )
        return FetchedRange(blocks, reply.tip_height, proof)

    async def fetch_block(self, channel: str, block_hash: bytes) -> Block | None:
        """A block (final or not) by hash, or None when the peer does not have it."""
        try:
            reply = await self.stub.GetBlock(
                pb.GetBlockRequest(channel=channel, block_hash=block_hash.hex(), height=-1),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return Block.decode(reply.block) if reply.block else None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._channel.close()
