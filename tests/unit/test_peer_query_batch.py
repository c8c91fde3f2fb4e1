"""The peer's QueryBatch (`PeerServicer._query_batch`) over a channel that stands in for the
SCORE, and its GetTxResultBatch over one that stands in for the store: what a reply carries and
what is computed for it. The calls against a real network are in
tests/e2e/test_hostile.py."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from loopchain.blockchain.block_store import StoreDamaged
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.p2p.peer_service import (
    _REPLY_OVERHEAD,
    _RESULT_OVERHEAD,
    MAX_LOOKUP_REPLY_BYTES,
    PeerServicer,
    TxLookup,
    TxOutcome,
    _BatchReply,
    _query_refusal,
)
from loopchain.protos import loopchain_pb2 as pb
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction


def _answers(*sizes: int) -> list[pb.QueryResult]:
    return [pb.QueryResult(response_json="x" * size) for size in sizes]


def _fitting(results: list[pb.QueryResult], max_bytes: int) -> list[pb.QueryResult]:
    reply = _BatchReply(max_bytes, _query_refusal, "query answer")
    for result in results:
        if not reply.add(result):
            break
    return reply.results


def test_a_reply_carries_the_answers_that_fit_in_a_message_in_order() -> None:
    results = _answers(300, 300, 300, 10)
    assert _fitting(results, 10_000) == results
    fitted = _fitting(results, 800)
    assert fitted == results[:2]  # the third would pass the limit: asked again
    assert pb.QueryBatchReply(results=fitted).ByteSize() <= 800
    assert _fitting(results[2:], 800) == results[2:]


def test_an_answer_larger_than_a_message_alone_is_refused_with_its_size() -> None:
    (refused,) = _fitting(_answers(5_000, 10), 1_000)
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert not refused.response_json
    assert "5003 bytes is larger than a reply may be (1000 bytes)" in refused.message


class OneAtATime:
    """A channel whose queries are answered one after another (as a SCORE process answers
    them), each `size` characters long."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.finished = 0
        self._turn = asyncio.Lock()

    def member_ids(self) -> set[str]:
        return set()

    async def query(self, text: str) -> str:
        async with self._turn:
            await asyncio.sleep(0)
            self.finished += 1
            return text + "x" * self.size


class Backend:
    def __init__(self, channel: OneAtATime) -> None:
        self._channel = channel

    def channel(self, name: str) -> OneAtATime:
        return self._channel


async def test_queries_past_a_full_reply_are_cancelled_not_answered_and_dropped() -> None:
    """300 queries whose answers fill a reply three at a time: the reply carries three, and the
    queries behind them are cancelled rather than answered and thrown away (before: all 300
    were answered, and held, for every reply)."""
    channel = OneAtATime(300_000)
    servicer = PeerServicer(Backend(channel), "peer", max_reply=1_000_000)  # type: ignore[arg-type]
    texts = [f'{{"n":{i}}}' for i in range(300)]
    request = pb.QueryBatchRequest(channel="c", params_json=texts)
    reply = await servicer._query_batch(request, None)
    assert [r.response_json for r in reply.results] == [t + "x" * 300_000 for t in texts[:3]]
    assert channel.finished <= 5, channel.finished
    await asyncio.sleep(0)
    assert channel.finished <= 5 and not channel._turn.locked()  # nothing runs on


class Monitor:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def rpc_error(self, method: str, code: str) -> None:
        self.errors.append((method, code))


async def test_a_refused_query_is_counted_once_however_often_it_is_asked_again() -> None:
    """Queries past a full reply are asked again by the proxy: a refusal is counted when the
    reply that tells it goes, not each time it is worked out."""
    monitor = Monitor()
    servicer = PeerServicer(
        Backend(OneAtATime(300_000)),  # type: ignore[arg-type]
        "peer",
        monitor=monitor,  # type: ignore[arg-type]
        max_reply=1_000_000,
    )
    texts = [f'{{"n":{i}}}' for i in range(4)] + ["not json"]
    calls = 0
    while texts:  # as the proxy does: what a reply leaves out, asked again
        calls += 1
        request = pb.QueryBatchRequest(channel="c", params_json=texts)
        reply = await servicer._query_batch(request, None)
        assert reply.results
        texts = texts[len(reply.results) :]
    assert calls == 2
    assert monitor.errors == [("Query", "INVALID_ARGUMENT")]


# ---------------------------------------------------------------- GetTxResultBatch, GetTxBatch


class Results:
    """A channel whose transactions are `known` (hash -> events JSON); `damaged` reads fail
    as a damaged store's do. Its transactions are pooled; it counts the status asked of it."""

    def __init__(self, known: dict[bytes, str], damaged: frozenset[bytes] = frozenset()) -> None:
        self.known = known
        self.damaged = damaged
        self.statuses = 0
        self.tx = Transaction.create_v1("c", {"data": "pooled"}, 1, Signer.generate())

    def status(self) -> dict[str, Any]:
        self.statuses += 1
        return {"score_id": "score/x", "score_version": "1.0"}

    def find_tx(self, tx_hash: bytes) -> TxLookup | None:
        if tx_hash in self.damaged:
            raise StoreDamaged("block 3 does not parse")
        return TxLookup(self.tx, -1, b"") if tx_hash in self.known else None

    def member_ids(self) -> set[str]:
        return set()

    def dropped(self, tx_hash: bytes) -> str | None:
        return None

    def tx_result(self, tx_hash: bytes) -> TxOutcome | None:
        if tx_hash in self.damaged:
            raise StoreDamaged("block 3 does not parse")
        if tx_hash not in self.known:
            return None
        return TxOutcome(0, "", True, 3, b"\x01" * 32, 0, events_json=self.known[tx_hash])


def _lookup_of(hashes: list[str]) -> pb.TxLookupBatchRequest:
    return pb.TxLookupBatchRequest(channel="c", tx_hashes=hashes)


async def _result_batch(
    servicer: PeerServicer, hashes: list[str]
) -> list[tuple[int, str, pb.TxResultReply]]:
    reply = await servicer._tx_result_batch(_lookup_of(hashes), None)
    return [(entry.code, entry.message, entry.result) for entry in reply.results]


async def test_each_lookup_of_a_batch_is_answered_or_refused_alone_and_counted_once() -> None:
    good, lost, gone = (bytes([n]) * 32 for n in (1, 2, 3))
    monitor = Monitor()
    servicer = PeerServicer(
        Backend(Results({good: ""}, frozenset({lost}))),  # type: ignore[arg-type]
        "peer",
        monitor=monitor,  # type: ignore[arg-type]
    )
    hashes = [good.hex(), gone.hex(), "0x" + good.hex(), "zz", lost.hex()]
    entries = await _result_batch(servicer, hashes)
    (ok, _, result), unknown, prefixed, malformed, damaged = entries
    assert ok == prefixed[0] == 0 and result == prefixed[2] and result.executed
    assert (result.block_height, result.block_hash) == (3, "01" * 32)
    assert unknown[:2] == (
        grpc.StatusCode.NOT_FOUND.value[0],
        f"transaction {gone.hex()} not found",
    )
    assert malformed[0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "64 hex characters" in malformed[1]
    assert damaged[0] == grpc.StatusCode.DATA_LOSS.value[0] and "corrupt" in damaged[1]
    for refused in (unknown, malformed, damaged):
        assert refused[2] == pb.TxResultReply()  # no result beside a refusal
    assert monitor.errors == [
        ("GetTxResult", "NOT_FOUND"),
        ("GetTxResult", "INVALID_ARGUMENT"),
        ("GetTxResult", "DATA_LOSS"),
    ]


async def test_a_result_batch_with_tx_carries_each_executed_transaction_and_no_other() -> None:
    """with_tx (a v3 receipt): an executed transaction's bytes come with its result, read once
    each; one not executed yet carries none and is not read; without with_tx nothing is read."""
    done, waiting = bytes([1]) * 32, bytes([2]) * 32
    read: list[bytes] = []

    class Receipts(Results):
        def tx_result(self, tx_hash: bytes) -> TxOutcome | None:
            if tx_hash == waiting:
                return TxOutcome(2, "not invoked yet", False, 3, b"\x01" * 32, 1)
            return super().tx_result(tx_hash)

        def find_tx(self, tx_hash: bytes) -> TxLookup | None:
            read.append(tx_hash)
            return super().find_tx(tx_hash)

    channel = Receipts({done: "", waiting: ""})
    servicer = PeerServicer(Backend(channel), "peer")  # type: ignore[arg-type]
    request = pb.TxLookupBatchRequest(channel="c", tx_hashes=[done.hex(), waiting.hex()])
    plain = await servicer._tx_result_batch(request, None)
    assert [entry.result.tx for entry in plain.results] == [b"", b""] and read == []
    request.with_tx = True
    executed, pending = (await servicer._tx_result_batch(request, None)).results
    assert executed.code == 0 and executed.result.executed
    assert executed.result.tx == channel.tx.encode()
    assert pending.code == 0 and not pending.result.executed and pending.result.tx == b""
    assert read == [done]


async def test_a_result_batch_reply_holds_what_fits_and_the_rest_is_asked_again() -> None:
    """Results with large event logs: a reply carries those that fit in a message, and the
    caller asks the rest again."""
    known = {bytes([n]) * 32: "e" * 300_000 for n in range(5)}
    monitor = Monitor()
    servicer = PeerServicer(
        Backend(Results(known)),  # type: ignore[arg-type]
        "peer",
        monitor=monitor,  # type: ignore[arg-type]
        max_reply=1_000_000,
    )
    hashes = [h.hex() for h in known] + ["ff" * 32]
    replies = []
    while hashes:  # as the proxy does: what a reply leaves out, asked again
        entries = await _result_batch(servicer, hashes)
        assert entries
        replies.append(len(entries))
        hashes = hashes[len(entries) :]
    assert replies == [3, 3]
    assert monitor.errors == [("GetTxResult", "NOT_FOUND")]


async def test_a_refusal_worked_out_past_a_full_reply_is_counted_when_it_is_told() -> None:
    """An unknown transaction's refusal that does not fit in the reply is asked again: it is
    counted once, with the reply that tells it, not each time it is worked out."""
    good = bytes([1]) * 32
    servicer = PeerServicer(Backend(Results({good: "e" * 1000})), "p")  # type: ignore[arg-type]
    (fitted,) = (await servicer._tx_result_batch(_lookup_of([good.hex()]), None)).results
    monitor = Monitor()
    servicer = PeerServicer(
        Backend(Results({good: "e" * 1000})),  # type: ignore[arg-type]
        "peer",
        monitor=monitor,  # type: ignore[arg-type]
        max_reply=_REPLY_OVERHEAD + fitted.ByteSize() + _RESULT_OVERHEAD + 10,  # no room beside
    )
    first = await servicer._tx_result_batch(_lookup_of([good.hex(), "ff" * 32]), None)
    assert len(first.results) == 1 and monitor.errors == []
    second = await servicer._tx_result_batch(_lookup_of(["ff" * 32]), None)
    assert second.results[0].code == grpc.StatusCode.NOT_FOUND.value[0]
    assert monitor.errors == [("GetTxResult", "NOT_FOUND")]


async def test_a_lookup_reply_is_bounded_below_a_message_and_lets_the_loop_run_meanwhile() -> None:
    """Lookups whose entries pass MAX_LOOKUP_REPLY_BYTES fill a reply up to it (the rest are
    asked again); and other tasks run while a batch is looked up, not after all of it."""
    known = {n.to_bytes(32, "big"): "e" * 100_000 for n in range(100)}
    order: list[str] = []

    class Watched(Results):
        def tx_result(self, tx_hash: bytes) -> TxOutcome | None:
            order.append("lookup")
            return super().tx_result(tx_hash)

    servicer = PeerServicer(Backend(Watched(known)), "peer")  # type: ignore[arg-type]
    hashes = [h.hex() for h in known]
    batch = asyncio.ensure_future(servicer._tx_result_batch(_lookup_of(hashes), None))

    async def another_task() -> None:
        order.append("other")

    other = asyncio.ensure_future(another_task())
    reply = await batch
    await other
    assert 0 < order.index("other") < len(order) - 1, order  # ran between two lookups
    assert 30 < len(reply.results) < 100
    assert reply.ByteSize() <= MAX_LOOKUP_REPLY_BYTES < reply.ByteSize() + 100_100


async def test_a_result_batch_of_more_than_1000_lookups_is_refused_whole() -> None:
    servicer = PeerServicer(Backend(Results({})), "peer")  # type: ignore[arg-type]
    request = pb.TxLookupBatchRequest(channel="c", tx_hashes=["ab" * 32] * 1001)
    with pytest.raises(RequestError) as refused:
        await servicer._tx_result_batch(request, None)
    assert refused.value.kind is ErrorKind.INVALID and "limit 1000" in refused.value.message


async def test_each_transaction_of_a_batch_is_answered_as_get_tx_with_one_status_a_call() -> None:
    good, lost, gone = (bytes([n]) * 32 for n in (1, 2, 3))
    channel = Results({good: ""}, frozenset({lost}))
    monitor = Monitor()
    servicer = PeerServicer(
        Backend(channel),  # type: ignore[arg-type]
        "peer",
        monitor=monitor,  # type: ignore[arg-type]
    )
    hashes = [good.hex(), gone.hex(), lost.hex(), good.hex(), "zz"]
    reply = await servicer._tx_lookup_batch(_lookup_of(hashes), None)
    first, unknown, damaged, again, malformed = reply.results
    assert first.code == again.code == 0 and first.tx == again.tx
    assert first.tx.tx == channel.tx.encode() and first.tx.block_height == -1
    assert (first.tx.peer_id, first.tx.score_id, first.tx.score_version) == (
        channel.tx.sender,  # the peer that took it (its v1 signer), not the one answering
        "score/x",
        "1.0",
    )
    assert channel.statuses == 1  # asked once for the call, not once a transaction
    assert unknown.code == grpc.StatusCode.NOT_FOUND.value[0] and gone.hex() in unknown.message
    assert damaged.code == grpc.StatusCode.DATA_LOSS.value[0]
    assert malformed.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert monitor.errors == [
        ("GetTx", "NOT_FOUND"),
        ("GetTx", "DATA_LOSS"),
        ("GetTx", "INVALID_ARGUMENT"),
    ]


class Coins:
    """A channel whose balances are their address's length, asked one at a time (as the SCORE
    process answers them); an address not starting "hx" is refused as the peer refuses it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def member_ids(self) -> set[str]:
        return set()

    async def balance(self, address: str) -> tuple[int, int, int]:
        self.asked.append(address)
        await asyncio.sleep(0)
        if not address.startswith("hx"):
            raise RequestError(ErrorKind.INVALID, f"'address' must be 'hx': {address}")
        return len(address), 1000, 7


async def test_each_address_of_a_balance_batch_is_answered_or_refused_alone() -> None:
    monitor = Monitor()
    channel = Coins()
    servicer = PeerServicer(
        Backend(channel),  # type: ignore[arg-type]
        "peer",
        monitor=monitor,  # type: ignore[arg-type]
    )
    request = pb.BalanceBatchRequest(channel="c", addresses=["hx1", "nope", "hx12"])
    first, refused, second = (await servicer._balance_batch(request, None)).results
    assert (first.code, first.balance) == (
        0,
        pb.BalanceReply(balance="3", total_supply="1000", height=7),
    )
    assert second.balance.balance == "4"
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "nope" in refused.message
    assert not refused.HasField("balance")
    assert sorted(channel.asked) == ["hx1", "hx12", "nope"]  # all asked at once
    assert monitor.errors == [("GetBalance", "INVALID_ARGUMENT")]
    over = pb.BalanceBatchRequest(channel="c", addresses=["hx1"] * 1001)
    with pytest.raises(RequestError, match="1001 addresses in one call, limit 1000"):
        await servicer._balance_batch(over, None)
