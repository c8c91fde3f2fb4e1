"""The peer's QueryBatch (`PeerServicer._query_batch`) over a channel that stands in for the
SCORE, and its GetTxResultBatch over one that stands in for the store: what a reply carries and
what is computed for it. The calls against a real network are in
tests/e2e/test_hostile.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from loopchain.blockchain.block_store import StoreDamaged
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.p2p.peer_service import PeerServicer, TxOutcome, _BatchReply, _query_refusal
from loopchain.protos import loopchain_pb2 as pb


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


# ---------------------------------------------------------------- GetTxResultBatch


class Results:
    """A channel whose transactions are `known` (hash -> events JSON); `damaged` reads fail
    as a damaged store's do."""

    def __init__(self, known: dict[bytes, str], damaged: frozenset[bytes] = frozenset()) -> None:
        self.known = known
        self.damaged = damaged

    def member_ids(self) -> set[str]:
        return set()

    def tx_result(self, tx_hash: bytes) -> TxOutcome | None:
        if tx_hash in self.damaged:
            raise StoreDamaged("block 3 does not parse")
        if tx_hash not in self.known:
            return None
        return TxOutcome(0, "", True, 3, b"\x01" * 32, 0, events_json=self.known[tx_hash])


def _result_batch(
    servicer: PeerServicer, hashes: list[str]
) -> list[tuple[int, str, pb.TxResultReply]]:
    request = pb.TxResultBatchRequest(channel="c", tx_hashes=hashes)
    reply = servicer._tx_result_batch(request, None)
    return [(entry.code, entry.message, entry.result) for entry in reply.results]


def test_each_lookup_of_a_batch_is_answered_or_refused_alone_and_counted_once() -> None:
    good, lost, gone = (bytes([n]) * 32 for n in (1, 2, 3))
    monitor = Monitor()
    servicer = PeerServicer(
        Backend(Results({good: ""}, frozenset({lost}))),  # type: ignore[arg-type]
        "peer",
        monitor=monitor,  # type: ignore[arg-type]
    )
    entries = _result_batch(servicer, [good.hex(), gone.hex(), "0x" + good.hex(), "zz", lost.hex()])
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


def test_a_result_batch_reply_holds_what_fits_and_the_rest_is_asked_again() -> None:
    """Results with large event logs: a reply carries those that fit in a message, and the
    caller asks the rest again; a refusal is counted once, when its reply goes."""
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
        entries = _result_batch(servicer, hashes)
        assert entries
        replies.append(len(entries))
        hashes = hashes[len(entries) :]
    assert replies == [3, 3]
    assert monitor.errors == [("GetTxResult", "NOT_FOUND")]


def test_a_result_batch_of_more_than_1000_lookups_is_refused_whole() -> None:
    servicer = PeerServicer(Backend(Results({})), "peer")  # type: ignore[arg-type]
    request = pb.TxResultBatchRequest(channel="c", tx_hashes=["ab" * 32] * 1001)
    with pytest.raises(RequestError) as refused:
        servicer._tx_result_batch(request, None)
    assert refused.value.kind is ErrorKind.INVALID and "limit 1000" in refused.value.message
