"""A peer's public server handing other peers' link streams to a channel worker, over real gRPC:
what waits for the worker is bounded by bytes, a sender whose lane is full loses its own oldest
messages, one sender's messages never hold up another's, and one channel's slow worker never
holds up another channel's messages on the same stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p import grpc_util, worker_link
from loopchain.p2p.peer_client import PeerLink
from loopchain.p2p.server import start_peer_server
from loopchain.p2p.worker_link import WorkerLink, WorkerRefusal
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from tests.integration._one_channel import CHANNEL, OneChannelBackend
from tools.procs import Proc, free_port_pair, wait_until_async

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


async def _flood(target: str, written: list[int]) -> None:
    """A sender that is no member streaming big proposals as fast as the peer reads them."""
    message = pb.ConsensusMessage(channel=CHANNEL, sender="x", proposal=b"{" * PROPOSAL_BYTES)
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.PeerServiceStub(channel).DeliverStream(timeout=120)
        while True:
            await call.write(message)
            written[0] += 1


async def test_a_sender_flooding_a_worker_is_held_back_and_others_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without TLS (no caller named) a flood of proposals for a stuck worker filled one queue of
    1024 messages in the peer (GBs of proposals, the oldest dropped) and honest votes waited
    behind them for good. Now each sender's host has its lanes: the flood (from ::1) fills its
    own lane up to CALLER_LANE_BYTES and loses its own oldest, while another peer's votes (from
    127.0.0.1) reach the worker."""
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
        load_config(environ={}, overrides={"IP_LOCAL": "[::]"}),  # IPv4 and IPv6 callers
        port,
        None,
        workers=lambda name: link if name == CHANNEL else None,
    )
    written = [0]
    flood = asyncio.create_task(_flood(f"[::1]:{port}", written))
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


MEMBER = "hx" + "1" * 40
FLOOD_CALLERS = 64
FLOOD_BYTES = 256 << 10  # each message of the flood: a proposal, or a batch of transactions
RESERVE = 16 << 10  # CALLER_RESERVE_BYTES in these tests
BUDGET = 4 << 20  # WORKER_QUEUE_BYTES in these tests
# the worker's streams are never accepted within a test: what the front sends waits to be
PATIENT = load_config(environ={}, overrides={"GRPC_TIMEOUT": 3600.0})


class _AcceptsOnly(pb_grpc.PeerServiceServicer):
    """A channel worker that takes the streams of one caller (its votes) and leaves every other
    stream unaccepted (as a stalled worker does): what the front sends on them waits."""

    def __init__(self, member: str) -> None:
        self.member = member
        self.votes: list[bytes] = []
        self.stop = asyncio.Event()

    async def DeliverStream(
        self, requests: AsyncIterator[pb.ConsensusMessage], context: Any
    ) -> pb.Ack:
        if worker_link.ForwardedCallers().peer_id(context) != self.member:
            await self.stop.wait()
            return pb.Ack()
        await context.send_initial_metadata((grpc_util.STREAM_ACCEPTED,))
        async for message in requests:
            self.votes.append(message.vote)
        return pb.Ack()

    async def AddTxStream(self, requests: AsyncIterator[pb.TxBatch], context: Any) -> pb.Ack:
        await self.stop.wait()
        return pb.Ack()


async def _flood_from_many_hosts(link: WorkerLink) -> int:
    """FLOOD_CALLERS hosts each pushing a big proposal and a big batch, again once the front is
    sending the first ones (waiting for the worker to accept): the most it held; how many."""
    payload = b"{" * FLOOD_BYTES
    pushed = 0
    for round_ in range(2):
        for n in range(FLOOD_CALLERS):
            source = f"ipv4:10.0.0.{n + 1}:{40000 + round_}"
            link.push(
                pb.ConsensusMessage(channel=CHANNEL, sender="x", proposal=payload), None, source
            )
            link.push(pb.TxBatch(channel=CHANNEL, txs=[payload]), None, source)
            pushed += 2

        async def all_taken() -> bool:
            lanes = [
                lane for peer in link._links.values() for lane in (peer._consensus, peer._gossip)
            ]
            return all(len(lane) == 0 for lane in lanes)

        if round_ == 0:
            await wait_until_async(all_taken, 30, "the front to send the flood's first messages")
    return pushed


def _held_bound(link: WorkerLink) -> int:
    """What the front may hold for the worker: its budget, each lane's reserve and one message."""
    return BUDGET + 2 * len(link._links) * RESERVE + FLOOD_BYTES + 64


def _held_at_most(link: WorkerLink, pushed: int) -> int:
    """What the front holds at most of the `pushed` flood messages: those it did not drop, each
    queued or being sent (none reached the worker)."""
    dropped = sum(peer.dropped for peer in link._links.values())
    return (pushed - dropped) * (FLOOD_BYTES + 64)


@contextlib.asynccontextmanager
async def _flooded_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[_AcceptsOnly, WorkerLink, int]]:
    """A front's link to a worker that accepts only MEMBER's streams, flooded from many hosts
    (BUDGET and RESERVE for its bounds): the worker, the link, and how many messages the flood
    pushed."""
    monkeypatch.setattr(worker_link, "WORKER_QUEUE_BYTES", BUDGET)
    monkeypatch.setattr(worker_link, "CALLER_RESERVE_BYTES", RESERVE, raising=False)
    worker, socket = _AcceptsOnly(MEMBER), tmp_path / "worker.sock"
    server = grpc_util.create_server(CONFIG)
    pb_grpc.add_PeerServiceServicer_to_server(worker, server)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    link = WorkerLink(CHANNEL, socket, PATIENT)
    try:
        yield worker, link, await _flood_from_many_hosts(link)
    finally:
        worker.stop.set()
        await link.close()
        await server.stop(0)


async def test_many_callers_flooding_a_worker_that_does_not_accept_are_held_to_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lane took one message whatever the budget, and a message its lane had taken to send
    (waiting for the worker to accept its stream) was not counted at all: 256 sources' 3 MB
    proposals and batches held 2 GiB for a worker whose budget was 64 MiB. Now what a lane is
    sending is held in the budget, and only a lane's small reserve goes beyond it."""
    async with _flooded_link(tmp_path, monkeypatch) as (_, link, pushed):
        assert _held_at_most(link, pushed) <= _held_bound(link)
        assert link.budget.held <= _held_bound(link)
        assert len(link._links) == 2 * FLOOD_CALLERS  # two connections of each host


async def test_a_members_votes_pass_while_many_callers_flood_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While strangers' big messages hold the worker's budget, a member's votes are taken within
    its lane's reserve and reach the worker, in order; the front holds no more than its bound."""
    async with _flooded_link(tmp_path, monkeypatch) as (worker, link, pushed):
        assert link.budget.held >= BUDGET - FLOOD_BYTES  # the flood holds the budget
        votes = [b"vote %d" % n for n in range(20)]
        for vote in votes:
            link.push(pb.ConsensusMessage(channel=CHANNEL, sender=MEMBER, vote=vote), MEMBER, "")

        async def votes_arrived() -> bool:
            return len(worker.votes) == len(votes)

        await wait_until_async(votes_arrived, 30, "the member's votes to reach the worker")
        assert worker.votes == votes
        assert _held_at_most(link, pushed) <= _held_bound(link)


async def test_a_worker_gone_while_it_held_transactions_is_answered_outcome_unknown(
    tmp_path: Path,
) -> None:
    """A worker killed after it took a batch in (synced to its intake log) and before it
    answered was reported UNAVAILABLE: the client heard 503 "send it again", and a v1 batch sent
    again became a second one. The call reached the worker, so whether it took them is unknown:
    UNKNOWN (REST 502, no Retry-After). A worker that could not be reached at all is still
    UNAVAILABLE: nothing was sent."""
    socket = tmp_path / "worker.sock"
    batch = pb.CreateTxBatchRequest(channel=CHANNEL)
    nobody = WorkerLink(CHANNEL, tmp_path / "nobody.sock", CONFIG)
    try:
        with pytest.raises(WorkerRefusal) as unreached:
            await nobody.call("CreateTxBatch", batch, None, 10.0)
        assert unreached.value.code is grpc.StatusCode.UNAVAILABLE, unreached.value.message
    finally:
        await nobody.close()
    link = WorkerLink(CHANNEL, socket, CONFIG)
    worker = Proc("worker", ["-m", "tests.integration._dying_worker", str(socket)], tmp_path)
    try:
        worker.start()
        await wait_until_async(lambda: _said(worker, "ready"), 60, "the worker to serve")
        held = asyncio.ensure_future(link.call("CreateTxBatch", batch, None, 30.0))
        await wait_until_async(lambda: _said(worker, "holding"), 60, "the worker to hold it")
        worker.kill9()
        with pytest.raises(WorkerRefusal) as gone:
            await held
        assert gone.value.code is grpc.StatusCode.UNKNOWN, gone.value.message
        assert "whether it took them is unknown" in gone.value.message
    finally:
        worker.kill9()
        await link.close()


async def _said(proc: Proc, words: str) -> bool:
    return words in proc.log_text()
