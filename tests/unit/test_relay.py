"""Transaction gossip: a lone transaction goes at once; under load the relay waits for a full
batch (or its linger) so that one gossip call carries many transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from loopchain.configure import Config
from loopchain.peer import relay as relay_module
from loopchain.peer.relay import TxRelay
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.peer import PeerInfo
from loopchain.types.transaction import Transaction
from tests.sim.harness import CHANNEL

OTHERS = [PeerInfo(f"hx{i:040x}", f"127.0.0.1:{7100 + 100 * i}", i) for i in range(1, 4)]
SIGNER = Signer.generate()
BATCH_MAX = 4
HOUR = 3600.0  # a linger no test could wait out: what is sent was not held by it


class RecordingTransport:
    """The PeerTransport's gossip half, recording each batch per peer."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[bytes, ...]]] = []
        self.arrived = asyncio.Event()

    def send_consensus(self, *_: object) -> None:
        raise AssertionError("the relay sends transactions only")

    def send_txs(self, peer: PeerInfo, channel: str, txs: Sequence[Transaction]) -> None:
        assert channel == CHANNEL
        self.sent.append((peer.peer_id, tuple(tx.hash for tx in txs)))
        self.arrived.set()

    def connect(self, peer: PeerInfo) -> None:
        raise AssertionError("unused")

    async def fetch_block(self, *_: object) -> Block | None:
        raise AssertionError("unused")

    async def fetch_blocks(self, *_: object) -> object:
        raise AssertionError("unused")

    async def close(self) -> None:
        pass

    def batches(self) -> list[tuple[bytes, ...]]:
        """The batches as the first peer got them (every peer gets the same)."""
        return [txs for peer, txs in self.sent if peer == OTHERS[0].peer_id]

    async def wait_batches(self, count: int) -> list[tuple[bytes, ...]]:
        async with asyncio.timeout(30):
            while len(self.batches()) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.batches()


def _txs(count: int, start: int = 0) -> tuple[Transaction, ...]:
    return tuple(
        Transaction.create_v1(CHANNEL, {"n": start + i}, 1_000_000 + start + i, SIGNER)
        for i in range(count)
    )


async def _settle() -> None:
    """Let every ready task run until each waits (no timer in these tests fires: HOUR)."""
    for _ in range(20):
        await asyncio.sleep(0)


def _config() -> Config:
    return Config(
        {
            "MAX_TX_COUNT_IN_ADDTX_LIST": BATCH_MAX,
            "MAX_BLOCK_KBYTES": 1024,
            "SEND_TX_LIST_DURATION": HOUR,
        }
    )


@pytest.fixture
async def relay() -> AsyncIterator[tuple[TxRelay, RecordingTransport]]:
    transport = RecordingTransport()
    relay = TxRelay(CHANNEL, _config(), transport, lambda: OTHERS)
    task = asyncio.create_task(relay.run())
    yield relay, transport
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_lone_transactions_go_at_once_one_after_another(
    relay: tuple[TxRelay, RecordingTransport],
) -> None:
    gossip, transport = relay
    first, second = _txs(2)
    gossip.queue((first,))
    assert await transport.wait_batches(1) == [(first.hash,)]
    gossip.queue((second,))  # a moment after the first: still one at a time, not lingered
    assert await transport.wait_batches(2) == [(first.hash,), (second.hash,)]
    assert sorted(peer for peer, _ in transport.sent) == sorted(2 * [p.peer_id for p in OTHERS])


async def test_under_load_a_batch_waits_until_it_is_full(
    relay: tuple[TxRelay, RecordingTransport],
) -> None:
    gossip, transport = relay
    burst = _txs(3)
    gossip.queue(burst)  # a quiet channel's first burst goes at once, whole
    assert await transport.wait_batches(1) == [tuple(tx.hash for tx in burst)]
    more = _txs(3, start=10)
    gossip.queue(more)  # load: more than one in sight, a batch just went: wait for a full one
    await _settle()
    assert len(transport.batches()) == 1, "sent before the batch was full"
    last = _txs(1, start=20)
    gossip.queue(last)  # now a full batch (BATCH_MAX) is in sight
    batches = await transport.wait_batches(2)
    assert batches[1] == tuple(tx.hash for tx in (*more, *last))[:BATCH_MAX]
    assert gossip.batches == 2 and gossip.skipped == 0


async def test_a_batch_leaves_without_what_the_others_hold_by_then() -> None:
    """As a batch leaves, the transactions the others hold already (a certified block carried
    them) are dropped from it; a batch left with none sends nothing."""
    config = Config(
        {
            "MAX_TX_COUNT_IN_ADDTX_LIST": BATCH_MAX,
            "MAX_BLOCK_KBYTES": 1024,
            "SEND_TX_LIST_DURATION": HOUR,
        }
    )
    held: set[bytes] = set()
    transport = RecordingTransport()
    gossip = TxRelay(
        CHANNEL,
        config,
        transport,
        lambda: OTHERS,
        lambda txs: [t for t in txs if t.hash not in held],
    )
    task = asyncio.create_task(gossip.run())
    try:
        two = _txs(2)
        held.add(two[0].hash)
        gossip.queue(two)
        assert await transport.wait_batches(1) == [(two[1].hash,)]
        full = _txs(BATCH_MAX, start=10)  # under load now: a full batch leaves at once
        held.update(tx.hash for tx in full)
        gossip.queue(full)
        await _settle()
        assert len(transport.batches()) == 1 and gossip.spared == 1 + BATCH_MAX
        assert gossip.batches == 1  # taken and dropped whole: no batch went to any peer
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_full_queue_is_one_warning_and_its_draining_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """While the gossip queue is full every intake batch finds it so: that was a WARNING line a
    batch (tens a second under load). Now one when it fills, and one when it has room again
    saying how many transactions stayed pooled meanwhile; the next time it fills, one more."""
    monkeypatch.setattr(relay_module, "RELAY_QUEUE_MAX", 2 * BATCH_MAX)
    caplog.set_level(logging.INFO, logger=relay_module.__name__)
    transport = RecordingTransport()
    gossip = TxRelay(CHANNEL, _config(), transport, lambda: OTHERS)

    def lines(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    gossip.queue(_txs(2 * BATCH_MAX))  # full, the relay not yet running
    for n in range(5):
        gossip.queue(_txs(3, start=100 + 10 * n))
    assert gossip.skipped == 15
    assert len(lines("gossip queue full")) == 1, lines("gossip queue full")
    task = asyncio.create_task(gossip.run())
    try:
        await transport.wait_batches(2)
        assert lines("has room again") == [
            f"channel {CHANNEL}: gossip queue has room again; 15 transactions stayed pooled here"
        ]
        gossip.queue(_txs(2 * BATCH_MAX + 1, start=500))  # full again
        assert len(lines("gossip queue full")) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
