"""CatchUp's fetching of single blocks, with an in-process stand-in for the other peers."""

from __future__ import annotations

import asyncio
import dataclasses
import types
from collections.abc import Callable
from typing import Any

import pytest

from loopchain.consensus import messages as m
from loopchain.p2p.transport import FetchedRange, MalformedReply, TransportTimeout
from loopchain.peer import catchup
from loopchain.peer.catchup import CatchUp
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.hashing import sha3_256
from loopchain.types.peer import PeerInfo
from loopchain.types.transaction import Transaction
from loopchain.types.vote import QuorumCertificate, Vote
from tests._recoveries import count_recoveries
from tests.sim.harness import CHANNEL, Network, Node

pytestmark = pytest.mark.asyncio

SIGNER = Signer.generate()
BLOCK = Block.create(
    channel="alpha",
    height=1,
    round_=1,
    prev_hash=b"\0" * 32,
    prev_qc=None,
    transactions=[],
    timestamp=1,
    leader=SIGNER,
    next_leader=SIGNER.address,
    validators_hash=b"\0" * 32,
)


class OnePeerHolding:
    """The other peers: they hold `block` only, and count what they are asked for."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.asked: list[bytes] = []

    async def fetch_block(
        self, peer: PeerInfo, channel: str, block_hash: bytes, pooled: Any = None
    ) -> Block | None:
        self.asked.append(block_hash)
        return self.block if block_hash == self.block.hash else None


async def test_a_flood_of_wants_for_missing_blocks_does_not_keep_out_the_one_needed_now() -> None:
    """Names of blocks nobody has (a member may send any number of them) fill the fetch queue;
    the block wanted after them is still fetched: the oldest want gives way, not the newest."""
    peers, fetched = OnePeerHolding(BLOCK), list[m.Event]()

    def wants(up: CatchUp) -> None:
        for n in range(catchup.FETCH_QUEUE_MAX + 5):
            up.want_block(sha3_256(b"junk %d" % n))
        up.want_block(BLOCK.hash)

    await _fetch_until_fetched(peers, wants, fetched)
    assert fetched == [m.BlockFetched(BLOCK)]
    assert len(peers.asked) <= catchup.FETCH_QUEUE_MAX


async def _fetch_until_fetched(
    peers: OnePeerHolding,
    wants: Callable[[CatchUp], None],
    fetched: list[m.Event],
    held: Callable[[bytes], bool] = lambda block_hash: False,
) -> None:
    """A CatchUp over `peers`, given `wants`, fetching until something is fetched (into
    `fetched`); `held`: the blocks this node holds."""
    up = CatchUp(
        "alpha",
        peers,  # type: ignore[arg-type]
        lambda: [PeerInfo("hxother", "127.0.0.1:1", 0)],
        lambda: 0,
        lambda event: fetched.append(event) or [],
        sync_batch=10,
        held=held,
    )
    wants(up)
    loop = asyncio.create_task(up._fetch_loop())
    try:
        async with asyncio.timeout(30):
            while not fetched:
                await asyncio.sleep(0.01)
    finally:
        loop.cancel()


async def test_a_vouched_want_is_fetched_before_any_waiting_name_not_vouched_for() -> None:
    """Names under forged certificates (a member may send them without end, and stall its own
    answers to each for a deadline) wait behind a name a certificate vouched for: the block this
    node needs is the next one asked for, not the one after them all; a name first heard of
    unvouched goes ahead once a certificate vouches for it."""
    peers, fetched = OnePeerHolding(BLOCK), list[m.Event]()
    junk = [sha3_256(b"junk %d" % n) for n in range(catchup.FETCH_QUEUE_MAX)]

    def wants(up: CatchUp) -> None:
        for name in junk:
            up.want_block(name, vouched=False)
        up.want_block(BLOCK.hash, vouched=False)
        up.want_block(junk[0], vouched=True)  # vouched for after all: it goes first
        up.want_block(BLOCK.hash, vouched=True)

    await _fetch_until_fetched(peers, wants, fetched)
    assert fetched == [m.BlockFetched(BLOCK)]
    assert peers.asked[:2] == [junk[0], BLOCK.hash]


async def test_a_want_for_a_block_that_came_meanwhile_is_not_fetched() -> None:
    """A fetch is a round trip: wants waiting behind others for blocks this node got meanwhile
    (by sync, or in a proposal) are skipped. Between far peers a restarted validator fetched
    ten final blocks one after another, each already synced, while the proposal it needed the
    parent of waited behind them: its first turn failed."""
    peers, fetched = OnePeerHolding(BLOCK), list[m.Event]()
    synced = [sha3_256(b"synced %d" % n) for n in range(10)]

    def wants(up: CatchUp) -> None:
        for name in synced:
            up.want_block(name)
        up.want_block(BLOCK.hash)

    await _fetch_until_fetched(peers, wants, fetched, held=set(synced).__contains__)
    assert fetched == [m.BlockFetched(BLOCK)]
    assert peers.asked == [BLOCK.hash]


class Garbling:
    """Other peers whose every block reply is malformed."""

    def __init__(self) -> None:
        self.asked = 0

    async def fetch_block(self, *_: Any) -> Block | None:
        self.asked += 1
        raise MalformedReply("malformed block: garbled")


async def test_a_peer_serving_bad_blocks_is_one_warning_a_period_not_one_a_block(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each bad block a peer serves makes it avoided for AVOID_SECONDS; the WARNING comes when it
    starts to be avoided (before: one for every bad block fetched, as many as it was asked for)."""
    liars = [PeerInfo("hxliar", "127.0.0.1:1", 0), PeerInfo("hxother", "127.0.0.1:2", 1)]
    peers = Garbling()
    up = CatchUp(
        "alpha",
        peers,  # type: ignore[arg-type]
        lambda: list(liars),
        lambda: 0,
        lambda event: [],
        sync_batch=10,
    )
    for n in range(10):
        up.want_block(sha3_256(b"wanted %d" % n))
    loop = asyncio.create_task(up._fetch_loop())
    try:
        async with asyncio.timeout(30):
            while peers.asked < 20:  # each of the ten asked of both peers
                await asyncio.sleep(0.01)
    finally:
        loop.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sorted(w.split(" for ")[0] for w in warnings) == [
        "channel alpha: avoiding 127.0.0.1:1",
        "channel alpha: avoiding 127.0.0.1:2",
    ], warnings


async def test_a_peer_still_serving_bad_blocks_is_warned_of_once_a_period(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bad block pushes the avoidance on: the WARNING comes again once AVOID_SECONDS have
    passed since the last one (before, a peer caught at least once every AVOID_SECONDS was warned
    of once, ever)."""
    clock = [1000.0]
    monkeypatch.setattr(catchup, "time", type("Clock", (), {"monotonic": lambda: clock[0]}))
    up = CatchUp("alpha", None, list, lambda: 0, lambda event: [], sync_batch=10)  # type: ignore[arg-type]
    liar = PeerInfo("hxliar", "127.0.0.1:1", 0)
    for at in (0.0, 20.0, 45.0):
        clock[0] = 1000.0 + at
        up.avoid(liar, "garbled")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]


class _Chain:
    """A consensus stand-in for synced ranges: a block is final when the next one it is handed
    (in the chunk, or the chunk's proof) is one round later, as the two-chain rule has it."""

    def __init__(self, refused: int = 0, other: int = 0) -> None:
        self.tip = 0
        self.refused = refused  # a chunk holding this height is refused (an invalid block)
        self.other = other  # a chunk holding this height also refuses something else
        self.chunks: list[list[int]] = []  # heights of each BlocksSynced, as handed over

    def dispatch(self, event: m.Event) -> list[m.Action]:
        assert isinstance(event, m.BlocksSynced)
        blocks = [block for block, _ in event.blocks]
        self.chunks.append([block.height for block in blocks])
        assert blocks[0].height == self.tip + 1
        if self.refused in self.chunks[-1]:
            return [m.SyncRefused(f"synced block {self.refused}: invalid")]
        elsewhere = (
            [m.Rejected("a parked proposal: invalid")] if self.other in self.chunks[-1] else []
        )
        following = blocks[1:] + ([event.proof[0]] if event.proof is not None else [])
        final = 0  # a block proven final makes its ancestors final
        for index, (block, child) in enumerate(zip(blocks, following, strict=False)):
            if child.header.round == block.header.round + 1:
                final = index + 1
        if final:
            self.tip = blocks[final - 1].height
        return list(elsewhere)


def _stand_in(height: int, round_: int) -> Any:
    return types.SimpleNamespace(
        height=height, header=types.SimpleNamespace(round=round_), transactions=[]
    )


async def test_a_synced_range_is_taken_a_chunk_a_turn_and_a_chunk_not_proven_with_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each chunk of SYNC_CHUNK blocks is proven final by the range's next block; where that one
    is not a round later (a failed round), the chunk's tail is taken again with more blocks, and
    a chunk none of whose blocks can be proven is taken whole with the next."""
    monkeypatch.setattr(catchup, "SYNC_CHUNK", 3)
    rounds = [1, 2, 3, 5, 6, 7, 8, 10, 12, 14, 15, 16]  # failed rounds after 3, 8, 10 and 12
    blocks = [(_stand_in(h, r), None) for h, r in enumerate(rounds, start=1)]
    chain = _Chain()
    up = CatchUp("alpha", None, list, lambda: chain.tip, chain.dispatch, 100)  # type: ignore[arg-type]
    range_ = FetchedRange(tuple(blocks), 12, None)  # type: ignore[arg-type]
    taken = await asyncio.wait_for(up._take(range_), 60)  # one that never ends fails
    assert taken
    assert chain.tip == 11  # the last one has no proof: not final
    assert chain.chunks == [
        [1, 2, 3],  # the proof (4, round 5) is not round 4: 1 and 2 final
        [3, 4, 5],  # 6 (round 7) proves 5, and 3 with it
        [6, 7, 8],  # 9 is round 12: 6 only
        [7, 8, 9],  # none proven: 8 is round 10, 9 round 12, 10 round 14
        [7, 8, 9, 10, 11, 12],  # taken with the next: 11 proves 10, 12 proves 11
        [12],  # no proof: not final here, as before chunks
    ]


async def test_a_synced_range_with_an_invalid_block_is_taken_no_further(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chunks before the invalid block are taken; the one that holds it is refused, and no
    chunk after it is handed over (the peer that served it is then avoided)."""
    monkeypatch.setattr(catchup, "SYNC_CHUNK", 3)
    blocks = [(_stand_in(h, h), None) for h in range(1, 11)]
    chain = _Chain(refused=5)
    up = CatchUp("alpha", None, list, lambda: chain.tip, chain.dispatch, 100)  # type: ignore[arg-type]
    range_ = FetchedRange(tuple(blocks), 10, None)  # type: ignore[arg-type]
    assert not await asyncio.wait_for(up._take(range_), 60)
    assert chain.tip == 3
    assert chain.chunks == [[1, 2, 3], [4, 5, 6]]


async def test_a_refusal_of_something_else_in_the_same_event_takes_the_range_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handing over synced blocks may release a parked proposal that is then refused: that says
    nothing of the peer that served the range, which is taken on to its end. Before, any refusal
    among the event's actions counted as the range's, and an honest peer was avoided."""
    monkeypatch.setattr(catchup, "SYNC_CHUNK", 3)
    blocks = [(_stand_in(h, h), None) for h in range(1, 11)]
    chain = _Chain(other=5)
    up = CatchUp("alpha", None, list, lambda: chain.tip, chain.dispatch, 100)  # type: ignore[arg-type]
    range_ = FetchedRange(tuple(blocks), 10, None)  # type: ignore[arg-type]
    assert await asyncio.wait_for(up._take(range_), 60)
    assert chain.tip == 9  # (the last one has no proof)


class Serving:
    """The other peers, one of them a member serving `block` when asked for it by hash, and a
    range of it with `certificate` when asked to sync."""

    def __init__(self, block: Block, certificate: QuorumCertificate) -> None:
        self.block, self.certificate = block, certificate

    async def fetch_block(
        self, peer: PeerInfo, channel: str, block_hash: bytes, pooled: Any = None
    ) -> Block | None:
        return self.block if block_hash == self.block.hash else None

    async def fetch_blocks(
        self,
        peer: PeerInfo,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Any = None,
        max_bytes: int = 0,
    ) -> FetchedRange:
        blocks = ((self.block, self.certificate),) if from_height == self.block.height else ()
        return FetchedRange(blocks, self.block.height, None)


def _forged_block(victim: Node, liar: Node, count: int, certificate: QuorumCertificate) -> Block:
    """The next block after `victim`'s tip, in a round `liar` leads, holding `count` transactions
    it signed, under `certificate` as its parent's: as received (nothing checked yet)."""
    state, tip = victim.state, victim.state.tip
    round_ = next(
        r for r in range(tip.round + 1, 10_000) if state.leader_of_round(r) == liar.address
    )
    txs = [Transaction.create_v1(CHANNEL, {"n": n}, 10**15 + n, liar.signer) for n in range(count)]
    assert tip.child_voters is not None
    block = Block.create(
        channel=CHANNEL,
        height=tip.height + 1,
        round_=round_,
        prev_hash=tip.block_hash,
        prev_qc=certificate,
        transactions=txs,
        timestamp=tip.timestamp + 1,
        leader=liar.signer,
        next_leader=liar.address,
        validators_hash=tip.child_voters.hash,
        state_height=tip.state_height,
    )
    return Block.decode(block.encode())


@pytest.mark.parametrize("how", ["fetched", "synced"])
async def test_a_block_under_a_forged_certificate_costs_none_of_its_transactions_signatures(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member names a block nobody has (a certificate, checked only once its block is here),
    or offers a range to sync, and serves a block of its own: the next after this node's tip, in
    a round it leads, of many transactions it signed, under a forged parent certificate. The
    header is refused before any of the transactions' signatures is recovered: before, each
    was (about 25 s of the event loop for a 64 MiB block), and only then the certificate."""
    net = Network(4, seed=7)
    net.start()
    net.run_until(0.1)
    net.submit(net.validators.leader_at(0), 2)
    net.run_until(net.now + 3)
    victim, liar = net.honest()[:2]
    real = victim.state.tip_certificate
    assert real is not None and victim.state.tip.height >= 1
    forged_qc = dataclasses.replace(
        real, signatures=tuple((voter, b"\2" * 65) for voter, _ in real.signatures)
    )
    forged = _forged_block(victim, liar, 40, forged_qc)
    certificate = QuorumCertificate.from_votes(
        [
            Vote.create(CHANNEL, forged.height, forged.header.round, forged.hash, n.signer)
            for n in net.honest()[:3]
        ]
    )
    peers = Serving(forged, certificate)
    dispatched: list[m.Event] = []

    def dispatch(event: m.Event) -> list[m.Action]:
        dispatched.append(event)
        return victim.state.handle(event, net.now)

    up = CatchUp(
        CHANNEL,
        peers,  # type: ignore[arg-type]
        lambda: [PeerInfo(liar.address, "127.0.0.1:1", 1)],
        lambda: victim.state.tip.height,
        dispatch,
        sync_batch=10,
        screen=victim.state.header_problem,
        would_check=victim.state.would_check,
    )
    recovered = count_recoveries(monkeypatch)
    if how == "fetched":
        await asyncio.wait_for(up._fetch_one(forged.hash), 60)
    else:
        assert await asyncio.wait_for(up.sync_once(), 60) == 0
    assert recovered == [] and dispatched == []
    assert "certificate signature" in (victim.state.header_problem([(forged, None)]) or "")
    # handed to the consensus as it is, the header is checked before the transactions too
    event = m.BlockFetched(forged) if how == "fetched" else m.BlocksSynced(((forged, certificate),))
    refused = victim.state.handle(event, net.now)
    assert any(isinstance(a, m.Rejected) and "certificate" in a.reason for a in refused)
    assert recovered == []
    # the same block under its parent's real certificate is let through to the consensus, its
    # transactions checked (aside, when fetched)
    honest = _forged_block(victim, liar, 40, real)
    assert victim.state.header_problem([(honest, None)]) is None
    peers.block = honest
    await asyncio.wait_for(up._fetch_one(honest.hash), 60)
    assert len(recovered) == 40 and dispatched == [m.BlockFetched(honest)]
    # past this peer's block limits, even under the real certificate: one it would not have
    # voted for, whose signatures are not worth recovering (a final one comes by sync)
    limit = victim.state.config.limits.max_block_txs
    big = _forged_block(victim, liar, limit + 1, real)
    assert "transactions, limit" in (victim.state.header_problem([(big, None)]) or "")
    peers.block, dispatched[:], recovered[:] = big, [], []
    await asyncio.wait_for(up._fetch_one(big.hash), 60)
    assert recovered == [] and dispatched == []


class OneAtATime:
    """Other peers holding final blocks up to `height`: the first serves one block a call (its
    answers each just inside the deadline, in a real network) naming a far tip; the others serve
    whole ranges."""

    def __init__(self, height: int, slow: PeerInfo) -> None:
        self.height, self.slow = height, slow
        self.asked: list[str] = []

    async def fetch_blocks(
        self,
        peer: PeerInfo,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Any = None,
        max_bytes: int = 0,
    ) -> FetchedRange:
        self.asked.append(peer.peer_id)
        last = min(self.height, from_height + (0 if peer == self.slow else max_blocks - 1))
        blocks = tuple((_stand_in(h, h), None) for h in range(from_height, last + 1))
        proof = (_stand_in(last + 1, last + 1), None) if blocks else None
        claimed = 10**9 if peer == self.slow else self.height
        return FetchedRange(blocks, claimed, proof)  # type: ignore[arg-type]


async def test_a_member_serving_a_block_a_call_holds_the_sync_one_call_a_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member that serves genuine final blocks one a call, naming a far tip, is asked once a
    pass while the others serve whole ranges: before, a peer was asked until it had no more, so
    a sync that began with it went on a block a call (with a real network, one a deadline)."""
    slow, fast = PeerInfo("hxslow", "127.0.0.1:1", 0), PeerInfo("hxfast", "127.0.0.1:2", 1)
    monkeypatch.setattr(
        catchup.random, "shuffle", lambda peers: peers.sort(key=lambda p: p != slow)
    )
    chain, peers = _Chain(), OneAtATime(1000, slow)
    up = CatchUp("alpha", peers, lambda: [slow, fast], lambda: chain.tip, chain.dispatch, 100)  # type: ignore[arg-type]
    assert await asyncio.wait_for(up.sync_once(), 60) == 1000
    assert peers.asked[:2] == ["hxslow", "hxfast"]
    assert peers.asked.count("hxslow") <= 1000 // 100 + 1, peers.asked.count("hxslow")


class GrowingChain(OneAtATime):
    """As OneAtATime, while the chain grows by `growth` blocks during each of the slow member's
    answers (its deadline, in a real network), up to `last`."""

    def __init__(self, height: int, slow: PeerInfo, growth: int, last: int) -> None:
        super().__init__(height, slow)
        self.growth, self.last = growth, last

    async def fetch_blocks(
        self,
        peer: PeerInfo,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Any = None,
        max_bytes: int = 0,
    ) -> FetchedRange:
        if peer == self.slow:
            self.height = min(self.last, self.height + self.growth)
        return await super().fetch_blocks(peer, channel, from_height, max_blocks, pooled, max_bytes)


async def test_a_peer_that_had_no_more_is_asked_again_while_the_chain_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chain grows while a slow member answers: a peer that served all it had is asked
    again in the next pass. Before, once it had no more it was not asked again, and the sync
    went on with the slow member alone, a block a call, falling further behind (a review)."""
    slow, fast = PeerInfo("hxslow", "127.0.0.1:1", 0), PeerInfo("hxfast", "127.0.0.1:2", 1)
    monkeypatch.setattr(
        catchup.random, "shuffle", lambda peers: peers.sort(key=lambda p: p != slow)
    )
    chain, peers = _Chain(), GrowingChain(0, slow, growth=20, last=500)
    up = CatchUp("alpha", peers, lambda: [slow, fast], lambda: chain.tip, chain.dispatch, 100)  # type: ignore[arg-type]
    assert await asyncio.wait_for(up.sync_once(), 60) == 500
    assert peers.asked.count("hxslow") <= 500 // 20 + 2, peers.asked.count("hxslow")
    assert peers.asked.count("hxfast") == peers.asked.count("hxslow")  # each pass asks both


async def test_a_sync_ends_when_no_peer_has_a_block_this_node_lacks_while_its_tip_moves() -> None:
    """The consensus moves the tip while a sync pass waits on its peers: a pass that took no
    block still ends the sync. Ending it only when a pass left the tip where it was kept a node
    following a live chain polling every peer back to back, for good (a review)."""
    chain = _Chain()
    calls = 0

    class Behind:
        async def fetch_blocks(
            self,
            peer: PeerInfo,
            channel: str,
            from_height: int,
            n: int,
            pooled: Any = None,
            max_bytes: int = 0,
        ) -> FetchedRange:
            nonlocal calls
            calls += 1
            assert calls < 1000, "the sync never ended"
            chain.tip += 1  # the consensus made a block final meanwhile
            return FetchedRange((), chain.tip, None)

    peers = [PeerInfo(f"hx{n}", f"127.0.0.1:{n + 1}", n) for n in range(3)]
    up = CatchUp("alpha", Behind(), lambda: list(peers), lambda: chain.tip, chain.dispatch, 100)  # type: ignore[arg-type]
    assert await asyncio.wait_for(up.sync_once(), 60) == 3
    assert calls == 3


class NarrowPath:
    """One peer holding final blocks of BLOCK_BYTES up to `height` behind a path that brings at
    most `carries` bytes within a range's deadline: a range of more runs out of time. It sends
    as a peer does: at most `max_bytes` (16 MiB when 0) but two blocks always, at most
    `max_blocks`, the proof of the last only when it is the tip. Each call moves the clock on
    (`clock`): a range that ran out of time by DEADLINE_S, one that came by the time its bytes
    take on the path."""

    DEADLINE_S = 10.0
    BLOCK_BYTES = 1 << 20  # full blocks: 16 of them fill a range

    def __init__(self, height: int, carries: int) -> None:
        self.height, self.carries = height, carries
        self.clock = 1000.0
        self.asked: list[tuple[int, int]] = []  # (bytes, blocks) each range asked for

    async def fetch_blocks(
        self,
        peer: PeerInfo,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Any = None,
        max_bytes: int = 0,
    ) -> FetchedRange:
        await asyncio.sleep(0)
        self.asked.append((max_bytes, max_blocks))
        count = min(max_blocks, max(2, (max_bytes or 16 << 20) // self.BLOCK_BYTES))
        last = min(self.height, from_height + count - 1)
        blocks = tuple((_stand_in(h, h), None) for h in range(from_height, last + 1))
        sent = max(1, len(blocks)) * self.BLOCK_BYTES
        if sent > self.carries:
            self.clock += self.DEADLINE_S
            raise TransportTimeout(f"{peer.target}: DEADLINE_EXCEEDED Deadline Exceeded")
        self.clock += self.DEADLINE_S * sent / self.carries
        proof = (_stand_in(last + 1, last + 1), None) if blocks and last == self.height else None
        return FetchedRange(blocks, self.height, proof)  # type: ignore[arg-type]


def _narrow(
    monkeypatch: pytest.MonkeyPatch, height: int, carries: int
) -> tuple[CatchUp, _Chain, NarrowPath]:
    peer = PeerInfo("hxfar", "127.0.0.1:1", 0)
    chain, path = _Chain(), NarrowPath(height, carries)
    monkeypatch.setattr(catchup, "time", types.SimpleNamespace(monotonic=lambda: path.clock))
    up = CatchUp("alpha", path, lambda: [peer], lambda: chain.tip, chain.dispatch, 100)  # type: ignore[arg-type]
    return up, chain, path


async def test_a_peer_whose_path_brings_less_than_a_range_in_time_is_asked_smaller_ranges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A range has a deadline, not a size: 16 full blocks are 16 MiB, which a path of less than
    ~13 Mbit/s does not bring in time. A range that ran out of time halves the bytes (and the
    blocks, for peers of earlier versions) asked of that peer next; before, the same range was
    asked again and again, and the peer never caught up. A range cut short by them (the peer had
    more) that came in under a quarter of that time doubles them, so ranges grow back when the
    path carries more again."""
    mib = 1 << 20
    up, chain, path = _narrow(monkeypatch, 300, carries=5 * mib)
    for _ in range(3):  # a pass that took nothing ends the sync; its loop starts another
        await asyncio.wait_for(up.sync_once(), 60)
    assert chain.tip == 300
    assert path.asked[:3] == [(0, 100), (8 * mib, 50), (4 * mib, 25)], path.asked
    assert set(path.asked[3:]) == {(4 * mib, 25)}, path.asked  # 4 blocks came: asked again
    # the path carries every range again (the load that shared it ended): ranges grow back
    path.height, path.carries, asked = 1000, 1 << 30, len(path.asked)
    await asyncio.wait_for(up.sync_once(), 60)
    assert chain.tip == 1000
    grown = [(4 * mib, 25), (8 * mib, 50), (0, 100), (0, 100)]
    assert path.asked[asked : asked + 4] == grown, path.asked[asked:]
    assert up._range_sizes == {}  # back to the peer's own bound: nothing kept of it


async def test_a_path_that_brings_two_blocks_in_time_syncs_them_two_by_two(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A range proves its blocks final but the last (by the next one's certificate), so a range
    of one block without the proof proved nothing: a path that brought fewer than three full
    blocks in time had the sync ask one block again and again, for good (a review). Two blocks
    always come, whatever the bytes asked, and a pass that proves none final ends the sync."""
    up, chain, path = _narrow(monkeypatch, 60, carries=(5 << 20) // 2)
    for _ in range(6):
        await asyncio.wait_for(up.sync_once(), 60)
    assert chain.tip == 60
    assert len(path.asked) < 80, len(path.asked)  # a block proven final a range, about


async def test_a_pass_that_proves_no_block_final_ends_the_sync() -> None:
    """A range of blocks none of which it proves final (one block without the proof, from a
    peer of an earlier version) takes nothing: the pass ends. Counting the blocks received kept
    the sync asking the same range back to back, for good (a review)."""
    chain = _Chain()
    calls = 0

    class OneUnproven:
        async def fetch_blocks(self, *args: Any) -> FetchedRange:
            nonlocal calls
            calls += 1
            assert calls < 1000, "the sync never ended"
            return FetchedRange(((_stand_in(1, 1), None),), 50, None)  # type: ignore[arg-type]

    peer = PeerInfo("hxold", "127.0.0.1:1", 0)
    up = CatchUp("alpha", OneUnproven(), lambda: [peer], lambda: chain.tip, chain.dispatch, 100)  # type: ignore[arg-type]
    assert await asyncio.wait_for(up.sync_once(), 60) == 0
    assert calls == 1 and chain.tip == 0


class ServingWithProof:
    """A member serving the final blocks from a height on, with `proof` as the range's proof."""

    def __init__(
        self,
        chain: list[tuple[Block, QuorumCertificate]],
        proof: tuple[Block, QuorumCertificate],
    ) -> None:
        self.chain, self.proof, self.asked = chain, proof, 0

    async def fetch_blocks(
        self,
        peer: PeerInfo,
        channel: str,
        from_height: int,
        max_blocks: int,
        pooled: Any = None,
        max_bytes: int = 0,
    ) -> FetchedRange:
        self.asked += 1
        blocks = tuple(entry for entry in self.chain if entry[0].height >= from_height)
        return FetchedRange(blocks, self.chain[-1][0].height + 1, self.proof)


async def test_a_range_whose_proof_is_forged_costs_none_of_the_proofs_signatures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member serves the chain's certified head with its real certificate, and as the proof
    that it is final a child of its own: many transactions it signed, under a certificate of its
    own. The proof's certificate is refused before any of its transactions' signatures is
    recovered (they were, on the event loop, at every pass: 2 s a pass for 58,000), and the
    member is avoided (it was asked first again at the next pass)."""
    net = Network(4, seed=7)
    net.start()
    net.run_until(0.1)
    for _ in range(3):
        net.submit(net.validators.leader_at(0), 2)
        net.run_until(net.now + 0.3)
    net.run_until(net.now + 3)
    chain = net.honest()[0].chain
    head, head_qc = chain[-1]
    liar = net.honest()[1]
    victim = next(iter(Network(4, seed=7).nodes.values())).state
    victim.handle(m.BlocksSynced(tuple(chain[:-1]), chain[-1]), net.now)  # the head proves
    assert victim.tip.height == head.height - 1
    txs = [Transaction.create_v1(CHANNEL, {"n": n}, 10**15 + n, liar.signer) for n in range(40)]
    child = Block.create(
        channel=CHANNEL,
        height=head.height + 1,
        round_=head.header.round + 1,
        prev_hash=head.hash,
        prev_qc=head_qc,
        transactions=txs,
        timestamp=head.header.timestamp + 1,
        leader=liar.signer,
        next_leader=liar.address,
        validators_hash=head.header.validators_hash,
        state_root=head.header.state_root,
        results_hash=head.header.results_hash,
        state_height=head.header.state_height,
    )
    child = Block.decode(child.encode())  # as received: nothing checked yet
    own = QuorumCertificate(
        CHANNEL, child.height, child.header.round, child.hash, ((liar.address, b"\2" * 65),)
    )
    peers = ServingWithProof(chain, (child, own))
    target = PeerInfo(liar.address, "127.0.0.1:1", 1)
    up = CatchUp(
        CHANNEL,
        peers,  # type: ignore[arg-type]
        lambda: [target],
        lambda: victim.tip.height,
        lambda event: victim.handle(event, net.now),
        sync_batch=10,
        screen=victim.header_problem,
        would_check=victim.would_check,
    )
    recovered = count_recoveries(monkeypatch)
    assert await asyncio.wait_for(up.sync_once(), 60) == 0
    proof_hashes = {tx.hash for tx in child.transactions}
    assert proof_hashes.isdisjoint(recovered)
    assert victim.tip.height == head.height - 1
    assert target.target in up._avoid
    # handed to the consensus as it is, its certificate is checked before its transactions
    victim.handle(m.BlocksSynced(((head, head_qc),), (child, own)), net.now)
    assert proof_hashes.isdisjoint(recovered)


class TamperingFirst:
    """The other peers: the first serves `block`'s header over a body of its own, the second
    serves `block`."""

    def __init__(self, block: Block, liar: PeerInfo) -> None:
        self.block, self.liar = block, liar
        self.asked: list[str] = []

    async def fetch_block(
        self, peer: PeerInfo, channel: str, block_hash: bytes, pooled: Any = None
    ) -> Block | None:
        self.asked.append(peer.target)
        if peer == self.liar:
            extra = Transaction.create_v1("alpha", {"not": "named"}, 1, SIGNER)
            return dataclasses.replace(self.block, transactions=(extra,))
        return self.block


async def test_a_block_whose_body_its_server_changed_is_fetched_from_another_peer() -> None:
    """A block's hash names its header only: a member serving the header over a body of its own
    ended the fetch (the block was asked for again only at the next timeout) and was not
    avoided (review). It is avoided, and the next peer asked."""
    liar, honest = PeerInfo("hxliar", "127.0.0.1:1", 0), PeerInfo("hxhonest", "127.0.0.1:2", 1)
    peers, fetched = TamperingFirst(BLOCK, liar), list[m.Event]()
    up = CatchUp(
        "alpha",
        peers,  # type: ignore[arg-type]
        lambda: [liar, honest],
        lambda: 0,
        lambda event: fetched.append(event) or [],
        sync_batch=10,
    )
    up._shuffled_others = lambda: [liar, honest]  # type: ignore[method-assign]
    await asyncio.wait_for(up._fetch_one(BLOCK.hash), 30)
    assert fetched == [m.BlockFetched(BLOCK)] and peers.asked == [liar.target, honest.target]
    assert liar.target in up._avoid and honest.target not in up._avoid
