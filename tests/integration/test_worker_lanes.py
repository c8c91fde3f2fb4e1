"""A peer's public server handing other peers' link streams to a channel worker, over real gRPC:
what waits for the worker is bounded by bytes, a sender whose lane is full loses its own oldest
messages, one sender's messages never hold up another's, and one channel's slow worker never
holds up another channel's messages on the same stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p import grpc_util, worker_link
from loopchain.p2p.peer_client import PeerLink
from loopchain.p2p.server import start_peer_server
from loopchain.p2p.worker_link import WorkerLink
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from tests.integration._one_channel import CHANNEL, OneChannelBackend
from tools.procs import free_port_pair, wait_until_async

CONFIG = load_config(environ={})
PROPOSAL_BYTES = 512 << 10


class _StuckWorker(pb_grpc.PeerServiceServicer):
    """A channel worker that takes votes at once and is stuck on the first proposal of a stream
    (until `release`): its sender's messages pile up in the peer in front of it."""

    def __init__(self) -> None:
        self.votes: list[bytes] = []
        self.proposals = 0
        self.release = asyncio.Event()

    async def DeliverStream(
        self, requests: AsyncIterator[pb.ConsensusMessage], context: Any
    ) -> pb.Ack:
        await context.send_initial_metadata((grpc_util.STREAM_ACCEPTED,))
        async for message in requests:
            if message.HasField("proposal"):
                self.proposals += 1
                await self.release.wait()
            else:
                self.votes.append(message.vote)
        return pb.Ack()


async def _flood(port: int, written: list[int]) -> None:
    """A sender that is no member streaming big proposals as fast as the peer reads them."""
    message = pb.ConsensusMessage(channel=CHANNEL, sender="x", proposal=b"{" * PROPOSAL_BYTES)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.PeerServiceStub(channel).DeliverStream(timeout=120)
        while True:
            await call.write(message)
            written[0] += 1


async def test_a_sender_flooding_a_worker_is_held_back_and_others_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without TLS (no caller named) a flood of proposals for a stuck worker filled one queue of
    1024 messages in the peer (GBs of proposals, the oldest dropped) and honest votes waited
    behind them for good. Now each sender's connection has its lanes: the flood fills its own
    lane up to CALLER_LANE_BYTES and loses its own oldest, while another peer's votes reach the
    worker."""
    monkeypatch.setattr(worker_link, "CALLER_LANE_BYTES", 4 << 20, raising=False)
    worker = _StuckWorker()
    socket = tmp_path / "worker.sock"
    worker_server = grpc_util.create_server(CONFIG)
    pb_grpc.add_PeerServiceServicer_to_server(worker, worker_server)
    worker_server.add_insecure_port(f"unix:{socket}")
    await worker_server.start()
    link = WorkerLink(CHANNEL, socket, CONFIG)
    port = free_port_pair()
    front = await start_peer_server(
        OneChannelBackend(object()),
        "front",
        CONFIG,
        port,
        None,
        workers=lambda name: link if name == CHANNEL else None,
    )
    written = [0]
    flood = asyncio.create_task(_flood(port, written))
    honest = PeerLink(f"127.0.0.1:{port}", CONFIG)
    honest.start()

    async def worker_stuck() -> bool:
        return worker.proposals == 1

    async def votes_arrived() -> bool:
        return len(worker.votes) == 5

    async def flood_held_back() -> bool:  # its lane can take no more
        return link.budget.held + PROPOSAL_BYTES > worker_link.CALLER_LANE_BYTES

    try:
        await wait_until_async(worker_stuck, 30, "the worker to be stuck on a proposal")
        for n in range(5):
            honest.send(pb.ConsensusMessage(channel=CHANNEL, sender="h", vote=b"%d" % n))
        await wait_until_async(votes_arrived, 30, "the honest votes to reach the worker")
        assert worker.votes == [b"%d" % n for n in range(5)]
        await wait_until_async(flood_held_back, 30, "the flood's lane to be full")

        async def flood_drops_its_own() -> bool:
            return sum(lane.dropped for lane in link._links.values()) > 0

        await wait_until_async(flood_drops_its_own, 30, "the flood to lose its oldest")
        assert link.budget.held <= worker_link.CALLER_LANE_BYTES + PROPOSAL_BYTES
        assert worker.votes == [b"%d" % n for n in range(5)]  # none of the honest lost
    finally:
        flood.cancel()
        await asyncio.gather(flood, return_exceptions=True)
        worker.release.set()
        await honest.close()
        await front.stop(0)
        await link.close()
        await worker_server.stop(0)


async def test_a_stuck_worker_holds_up_no_other_channels_messages_on_the_same_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stream of a peer carries its messages of every channel. The peer waited for room in a
    stuck worker's lane before it read the stream's next message: the other channel's votes
    behind the proposals waited with them, for good."""
    monkeypatch.setattr(worker_link, "CALLER_LANE_BYTES", 2 << 20, raising=False)
    workers, servers, links = [_StuckWorker(), _StuckWorker()], [], {}
    workers[1].release.set()  # the other channel's worker is not stuck
    for name, worker in zip(("alpha", "beta"), workers, strict=True):
        socket = tmp_path / f"{name}.sock"
        served = grpc_util.create_server(CONFIG)
        pb_grpc.add_PeerServiceServicer_to_server(worker, served)
        served.add_insecure_port(f"unix:{socket}")
        await served.start()
        servers.append(served)
        # its links never give up a write (a write that timed out dropped the message and let
        # the lane move: only as slowly as that did the other channel's messages get through)
        patient = load_config(environ={}, overrides={"GRPC_TIMEOUT": 3600.0})
        links[name] = WorkerLink(name, socket, patient)
    port = free_port_pair()
    front = await start_peer_server(
        OneChannelBackend(object()), "front", CONFIG, port, None, workers=links.get
    )
    honest = PeerLink(f"127.0.0.1:{port}", CONFIG)
    honest.start()
    try:
        for _ in range(12):  # 6 MiB for alpha's lane of 2 MiB, its worker stuck on the first
            honest.send(
                pb.ConsensusMessage(channel="alpha", sender="h", proposal=b"{" * PROPOSAL_BYTES)
            )
        for n in range(5):
            honest.send(pb.ConsensusMessage(channel="beta", sender="h", vote=b"%d" % n))

        async def beta_votes() -> bool:
            return len(workers[1].votes) == 5

        await wait_until_async(beta_votes, 30, "beta's votes behind alpha's proposals")
        assert workers[0].proposals == 1 and not workers[0].votes
    finally:
        workers[0].release.set()
        await honest.close()
        await front.stop(0)
        for link in links.values():
            await link.close()
        for served in servers:
            await served.stop(0)
