"""A read of a damaged store on the streams of the real PeerServicer over gRPC on 127.0.0.1: the
one message whose read meets the damage is answered as damaged (DATA_LOSS) and the stream goes on
answering the next message as usual, without telling the caller where this machine keeps the store.

* The relay streams between peers (AddTxStream, DeliverStream) answer no message by itself: a
  refused one is counted under its status (the peer's metrics) and skipped, and the Ack that ends
  the stream counts the handled and the refused.
* The client stream of the REST proxy (CreateIconTxStream, through the proxy's BatchStreams)
  answers each batch: one refused as a whole carries the status in the reply's code and message,
  which BatchStreams raises as the one call would have.

The store is real (BlockStore) over an in-memory key-value store damaged where the test chooses;
the client stream's channel is the peer's real ChannelService, whose admission reads the store."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.blockchain import block_store
from loopchain.blockchain.block_store import BlockStore
from loopchain.configure import load_config
from loopchain.consensus import messages as m
from loopchain.p2p import grpc_util
from loopchain.p2p.memory import InMemoryNetwork
from loopchain.p2p.peer_service import PeerServicer
from loopchain.p2p.server import PeerServer
from loopchain.peer.channel_service import ChannelService, ChannelSettings
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.rest.batch_stream import BatchStreams
from loopchain.types import canonical, icon_tx
from loopchain.types.crypto import Signer
from loopchain.types.icon_tx import make_params, sign_params
from loopchain.types.transaction import Transaction
from tests._damaged_store import DAMAGED_PATH, DamagedStore
from tests.integration._one_channel import CHANNEL, OneChannelBackend
from tests.integration._storage_helpers import ChainBuilder
from tools.procs import free_port_pair, wait_until_async

CONFIG = load_config(environ={})
DEADLINE = 60.0  # the work takes milliseconds; a slow machine has plenty
RICH = 10**30  # loop: pays for any transfer here
DAMAGED = "the peer's store is corrupt where this read goes"  # what the caller is told


class Monitor:
    """Where the servicer counts the errors it answers (the peer's metrics)."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def rpc_error(self, method: str, code: str) -> None:
        self.errors.append((method, code))

    def exposition(self) -> bytes:
        return b""


class RelayChannel:
    """The part of a channel the relay streams reach. As the channel's consensus does, it asks
    its block store whether each transaction it is given is final already (so a damaged place of
    the store meets the message that reads it); it keeps the others, and the events."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.txs: list[Transaction] = []
        self.events: list[m.Event] = []

    def _not_final(self, txs: tuple[Transaction, ...] | list[Transaction]) -> list[Transaction]:
        return [tx for tx in txs if self.store.transaction_place(tx.hash) is None]

    def receive_txs(self, txs: list[Transaction]) -> None:
        self.txs.extend(self._not_final(txs))

    def receive(self, event: m.Event) -> None:
        if isinstance(event, m.ProposalReceived):
            self._not_final(event.block.transactions)
        self.events.append(event)

    async def receive_txs_in_turns(
        self, txs: list[Transaction], relayer: str | None = None
    ) -> None:
        self.receive_txs(txs)

    async def receive_in_turns(self, event: m.Event) -> None:
        self.receive(event)

    def pooled_transaction(self, signature: bytes) -> Transaction | None:
        return None

    def member_ids(self) -> set[str]:
        return set()


class CountingServicer(PeerServicer):
    """The real servicer, counting the client streams it is asked to serve."""

    def __init__(self, backend: OneChannelBackend[Any], monitor: Monitor) -> None:
        super().__init__(backend, "receiver", None, monitor)  # type: ignore[arg-type]
        self.opened = 0

    async def CreateIconTxStream(
        self, requests: AsyncIterator[pb.IconTxBatchRequest], context: Any
    ) -> None:
        self.opened += 1
        await super().CreateIconTxStream(requests, context)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Any], Any]]:
    """Serve a channel with the real servicer on 127.0.0.1: (servicer, monitor, stub)."""
    started: list[tuple[PeerServer, grpc.aio.Channel]] = []

    async def start(channel: Any) -> tuple[CountingServicer, Monitor, pb_grpc.PeerServiceStub]:
        monitor = Monitor()
        servicer = CountingServicer(OneChannelBackend(channel), monitor)
        server = grpc_util.create_server(CONFIG, monitor.rpc_error)
        pb_grpc.add_PeerServiceServicer_to_server(servicer, server)
        port = free_port_pair()
        grpc_util.bind(server, "127.0.0.1", port)
        await server.start()
        link = grpc_util.open_channel(f"127.0.0.1:{port}", CONFIG)
        started.append((PeerServer(server, servicer), link))
        return servicer, monitor, pb_grpc.PeerServiceStub(link)

    yield start
    for served, link in started:
        await link.close()
        await served.stop(grace=0)


def _corrupt_index(kv: DamagedStore, tx: Transaction) -> str:
    """The table holding the transaction's index entry fails its checksum (StorageCorrupt)."""
    kv.damaged.add(block_store.TX + tx.hash)
    return "StorageCorrupt"


def _dangling_index(kv: DamagedStore, tx: Transaction) -> str:
    """The index entry names a height the store does not hold (StoreDamaged)."""
    kv.put(block_store.TX + tx.hash, (9).to_bytes(8, "big") + (0).to_bytes(4, "big"))
    return "StoreDamaged"


def _relay_messages(
    method: str, chain: ChainBuilder, damaged: Transaction, whole: Transaction
) -> list[Any]:
    """Two messages of `method`'s stream: the first carries `damaged`, the second `whole`."""
    if method == "AddTxStream":
        return [pb.TxBatch(channel=CHANNEL, txs=[tx.encode()]) for tx in (damaged, whole)]
    return [  # proposals: each carries its transaction
        pb.ConsensusMessage(channel=CHANNEL, proposal=chain.block([tx]).encode())
        for tx in (damaged, whole)
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", [_corrupt_index, _dangling_index])
@pytest.mark.parametrize("method", ["AddTxStream", "DeliverStream"])
async def test_a_relayed_message_meeting_a_damaged_store_is_refused_alone_and_the_stream_goes_on(
    serve: Callable[[Any], Any],
    method: str,
    damage: Callable[[DamagedStore, Transaction], str],
) -> None:
    kv = DamagedStore()
    channel = RelayChannel(BlockStore(kv, CHANNEL))
    _servicer, monitor, stub = await serve(channel)
    chain = ChainBuilder(CHANNEL)
    damaged, whole = chain.transaction(), chain.transaction()
    damage(kv, damaged)
    first, second = _relay_messages(method, chain, damaged, whole)

    def handled() -> list[Transaction]:
        if method == "AddTxStream":
            return channel.txs
        return [tx for e in channel.events for tx in e.block.transactions]  # type: ignore[attr-defined]

    call = getattr(stub, method)(timeout=DEADLINE)
    await call.write(first)

    async def refused() -> bool:
        return bool(monitor.errors) or call.done()  # counted, or the stream ended by it

    await wait_until_async(refused, DEADLINE, "the damaged message's refusal")
    assert not call.done(), await call.code()  # the stream goes on
    assert monitor.errors == [(method, "DATA_LOSS")]  # counted as damaged, nothing else
    assert handled() == []
    await call.write(second)  # the same stream: still open, still read

    async def second_handled() -> bool:
        return bool(handled()) or call.done()

    await wait_until_async(second_handled, DEADLINE, "the next message handled")
    assert [tx.hash for tx in handled()] == [whole.hash]
    await call.done_writing()
    ack = await call
    assert await call.code() == grpc.StatusCode.OK
    assert ack.code == 0 and ack.message == "1 handled, 1 refused", ack
    assert monitor.errors == [(method, "DATA_LOSS")]
    assert DAMAGED_PATH not in ack.message and "/" not in ack.message


def _icon_texts(count: int) -> list[str]:
    """`count` distinct signed ICON transfers, as a client sends their params."""
    signer, now_us = Signer.generate(), time.time_ns() // 1000
    texts = []
    for n in range(count):
        params = make_params(
            sender=signer.address,
            to="hx" + "b0" * 20,
            value=1,
            step_limit=100_000,
            timestamp_us=now_us + n,
            nid=3,  # ICON_NID's default, 0x3
            nonce=n,
        )
        texts.append(json.dumps(sign_params(params, signer)))
    return texts


def _hash_of(text: str) -> bytes:
    checked = icon_tx.verify_send_params(canonical.parse(text))
    return Transaction.from_icon(checked, signature_verified=True).hash


@pytest.mark.timeout(120)
async def test_a_client_batch_meeting_a_damaged_store_is_answered_data_loss_and_the_stream_goes_on(
    tmp_path: Path, serve: Callable[[Any], Any]
) -> None:
    """The peer's admission of a client-signed transaction asks the block store whether it is
    final already; that read meets a table whose checksum fails for the first batch only."""
    kv = DamagedStore()
    signer = Signer.generate()
    settings = ChannelSettings(
        CHANNEL, "no/score", Signer.generate().address, "127.0.0.1:7100", tmp_path / CHANNEL, 0
    )
    service = ChannelService(
        settings=settings,
        config=CONFIG,
        signer=signer,
        store=BlockStore(kv, CHANNEL),
        transport=InMemoryNetwork().transport(signer.address),
    )

    async def balances(addresses: list[str]) -> list[tuple[int, int, int]]:  # the SCORE's
        return [(RICH, RICH, 0)] * len(addresses)

    service.score.balances = balances  # type: ignore[method-assign]
    servicer, monitor, stub = await serve(service)
    streams = BatchStreams(stub.CreateIconTxStream, stub.CreateIconTxBatch)
    first, second = _icon_texts(2)
    kv.damaged.add(block_store.TX + _hash_of(first))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await streams(pb.IconTxBatchRequest(channel=CHANNEL, params_json=[first]), DEADLINE)
        assert refused.value.code() == grpc.StatusCode.DATA_LOSS, refused.value
        details = refused.value.details() or ""
        assert DAMAGED in details, details
        assert DAMAGED_PATH not in details and "/" not in details, (
            details
        )  # no path of this machine

        reply = await streams(
            pb.IconTxBatchRequest(channel=CHANNEL, params_json=[second]), DEADLINE
        )
        assert reply.code == 0 and reply.message == "", reply
        assert [r.tx_hash for r in reply.results] == [_hash_of(second).hex()], reply
        assert all(r.code == 0 for r in reply.results), reply
        assert servicer.opened == 1 and streams.streamed == 2  # both answered on one stream
        assert monitor.errors == [("CreateIconTxStream", "DATA_LOSS")]
        assert (
            _hash_of(second) in service.consensus.pool
            and _hash_of(first) not in service.consensus.pool
        )
        assert service.halted is None  # one client's read does not stop the channel

        # its one-call twin (the proxy's fallback) answers the damaged batch alike
        with pytest.raises(grpc.aio.AioRpcError) as call_refused:
            await stub.CreateIconTxBatch(
                pb.IconTxBatchRequest(channel=CHANNEL, params_json=[first]), timeout=DEADLINE
            )
        assert call_refused.value.code() == grpc.StatusCode.DATA_LOSS, call_refused.value
        assert call_refused.value.details() == details
        assert monitor.errors[1:] == [("CreateIconTxBatch", "DATA_LOSS")]
    finally:
        streams.close()
        if service.intake is not None:
            await service.intake.drain()
        service.journal.close()
