"""Outbound gRPC to other peers: bounded per-peer send queues and block-range fetches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

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
    """One remote peer: a gRPC channel and a bounded queue drained by a sender task."""

    def __init__(
        self,
        target: str,
        config: Config,
        tls: Tls | None = None,
        *,
        server_name: str = "",
        queue_size: int = 1024,
    ) -> None:
        self.target = target
        self.timeout = float(config.GRPC_TIMEOUT)
        self._channel = open_channel(target, config, tls, server_name)
        self.stub = pb_grpc.PeerServiceStub(self._channel)
        self._queue: asyncio.Queue[Outbound] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), name=f"link:{self.target}"
            )

    def send(self, message: Outbound) -> None:
        """Queue a message; when the queue is full the oldest message is dropped."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(message)

    async def _drain(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                if isinstance(message, pb.TxBatch):
                    await self.stub.AddTxBatch(message, timeout=self.timeout)
                else:
                    await self.stub.Deliver(message, timeout=self.timeout)
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._channel.close()
