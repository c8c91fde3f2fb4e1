"""The REST proxy's batches of submissions over streams to the real PeerServicer on 127.0.0.1:
answered in order on one long-lived stream, a batch refused as a whole refused as the call would
be while the stream goes on, a deadline drops the stream, and a peer that refuses streams (an
older one, or one holding its limit) is sent calls."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p import grpc_util, peer_service
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.p2p.peer_service import PeerServicer
from loopchain.p2p.server import PeerServer, start_peer_server
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.rest import batch_stream, submit
from loopchain.rest.batch_stream import BatchStreams
from loopchain.rest.handlers import PeerApi
from loopchain.types import canonical
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction
from tests.integration._fake_peer import start_fake_peer
from tests.integration._one_channel import CHANNEL, OneChannelBackend
from tools.procs import Proc, free_port_pair, wait_until_async

SIGNER = Signer.generate()
CONFIG = load_config(environ={})
TIMEOUT = 10.0


class Channel:
    """What CreateTxBatch reaches of a channel: it signs what clients sent, in order, and can
    be held (its answers wait until released)."""

    def __init__(self) -> None:
        self.taken: list[dict[str, Any]] = []
        self.numbers: dict[str, int] = {}  # hash -> the "n" of the body it was made of
        self.waiting = 0  # batches held
        self.released = asyncio.Event()
        self.released.set()

    async def create_txs(self, bodies: list[dict[str, Any]]) -> list[Transaction | RequestError]:
        self.waiting += 1
        await self.released.wait()
        self.waiting -= 1
        outcomes: list[Transaction | RequestError] = []
        for body in bodies:
            self.taken.append(body)
            if body.get("bad"):
                outcomes.append(RequestError(ErrorKind.INVALID, "refused: bad"))
                continue
            tx = Transaction.create_v1(CHANNEL, body, len(self.taken), SIGNER)
            self.numbers[tx.hash_hex] = int(body["n"])
            outcomes.append(tx)
        return outcomes

    def member_ids(self) -> set[str]:
        return set()


class CountingServicer(PeerServicer):
    """The real servicer, counting the submission streams it is asked to serve."""

    def __init__(self, backend: OneChannelBackend[Channel]) -> None:
        super().__init__(backend, "receiver", None, None)  # type: ignore[arg-type]
        self.opened: Counter[str] = Counter()

    async def CreateTxStream(
        self, requests: AsyncIterator[pb.CreateTxBatchRequest], context: Any
    ) -> None:
        self.opened["CreateTxStream"] += 1
        await super().CreateTxStream(requests, context)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[CountingServicer, PeerServer, int]]:
    port = free_port_pair()
    servicer = CountingServicer(OneChannelBackend(Channel()))
    server = grpc_util.create_server(CONFIG, None)
    pb_grpc.add_PeerServiceServicer_to_server(servicer, server)
    grpc_util.bind(server, "127.0.0.1", port)
    await server.start()
    served = PeerServer(server, servicer)
    yield servicer, served, port
    await served.stop(grace=0)


@pytest.fixture
async def stub(
    peer: tuple[CountingServicer, PeerServer, int],
) -> AsyncIterator[pb_grpc.PeerServiceStub]:
    channel = grpc_util.open_channel(f"127.0.0.1:{peer[2]}", CONFIG)
    yield pb_grpc.PeerServiceStub(channel)
    await channel.close()


def _streams(stub: pb_grpc.PeerServiceStub) -> BatchStreams[pb.CreateTxBatchRequest]:
    return BatchStreams(stub.CreateTxStream, stub.CreateTxBatch)


def _batch(first: int, count: int, channel: str = CHANNEL) -> pb.CreateTxBatchRequest:
    texts = [canonical.encode({"n": n}).decode() for n in range(first, first + count)]
    return pb.CreateTxBatchRequest(channel=channel, data_json=texts)


def _numbers(servicer: CountingServicer) -> list[int]:
    return [int(body["n"]) for body in servicer.backend.alpha.taken]  # type: ignore[attr-defined]


async def test_batches_go_in_order_on_one_stream_and_concurrent_ones_on_a_few(
    peer: tuple[CountingServicer, PeerServer, int], stub: pb_grpc.PeerServiceStub
) -> None:
    servicer = peer[0]
    streams = _streams(stub)
    for first in range(0, 50, 5):
        reply = await streams(_batch(first, 5), timeout=TIMEOUT)
        assert len(reply.results) == 5 and all(r.code == 0 and r.tx_hash for r in reply.results)
    assert _numbers(servicer) == list(range(50))
    assert servicer.opened == {"CreateTxStream": 1} and streams.streamed == 10

    replies = await asyncio.gather(
        *(streams(_batch(100 + 10 * k, 10), timeout=TIMEOUT) for k in range(8))
    )
    assert sorted(_numbers(servicer)[50:]) == list(range(100, 180))
    numbers = servicer.backend.alpha.numbers  # type: ignore[attr-defined]
    for k, reply in enumerate(replies):  # each reply answers its own batch
        assert [numbers[r.tx_hash] for r in reply.results] == list(
            range(100 + 10 * k, 110 + 10 * k)
        )
    assert servicer.opened["CreateTxStream"] <= 4  # MAX_STREAMS; the rest went by call
    assert streams.streamed >= 11


async def test_a_batch_refused_as_a_whole_fails_as_the_call_would_and_the_stream_goes_on(
    peer: tuple[CountingServicer, PeerServer, int], stub: pb_grpc.PeerServiceStub
) -> None:
    servicer = peer[0]
    streams = _streams(stub)
    for request in (
        _batch(0, 1, channel="beta"),
        _batch(0, peer_service.MAX_SUBMISSIONS_PER_CALL + 1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await streams(request, timeout=TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError) as by_call:
            await stub.CreateTxBatch(request, timeout=TIMEOUT)
        assert (refused.value.code(), refused.value.details()) == (
            by_call.value.code(),
            by_call.value.details(),
        )
        assert refused.value.code() in (
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    bad = pb.CreateTxBatchRequest(
        channel=CHANNEL, data_json=['{"n": 1}', '{"n": 2, "bad": true}', "[not an object"]
    )
    reply = await streams(bad, timeout=TIMEOUT)
    assert [r.code for r in reply.results] == [
        0,
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
    ]
    assert servicer.opened == {"CreateTxStream": 1} and streams.streamed == 3


async def test_a_batch_past_its_deadline_drops_its_stream_and_the_next_opens_another(
    peer: tuple[CountingServicer, PeerServer, int], stub: pb_grpc.PeerServiceStub
) -> None:
    servicer = peer[0]
    streams = _streams(stub)
    await streams(_batch(0, 1), timeout=TIMEOUT)
    servicer.backend.alpha.released.clear()  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await streams(_batch(1, 1), timeout=0.2)
    assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # it was sent: the peer may have taken it (and it does, released), which the error says
    assert late.value.details() == batch_stream.OUTCOME_UNKNOWN
    assert "is unknown" in late.value.details() and "look them up" in late.value.details()
    servicer.backend.alpha.released.set()  # type: ignore[attr-defined]
    reply = await streams(_batch(2, 1), timeout=TIMEOUT)
    assert reply.results[0].code == 0
    assert servicer.opened == {"CreateTxStream": 2}


async def test_a_peer_that_refuses_streams_is_sent_calls(
    peer: tuple[CountingServicer, PeerServer, int],
    stub: pb_grpc.PeerServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servicer = peer[0]
    monkeypatch.setattr(peer_service, "MAX_CLIENT_STREAMS", 0)  # holding its limit
    streams = _streams(stub)
    reply = await streams(_batch(0, 3), timeout=TIMEOUT)
    assert [r.code for r in reply.results] == [0, 0, 0] and _numbers(servicer) == [0, 1, 2]
    assert streams.streamed == 0

    older_port = free_port_pair()  # a peer of an earlier version: no CreateTxStream at all
    server, older = await start_fake_peer(older_port)
    try:
        channel = grpc_util.open_channel(f"127.0.0.1:{older_port}", CONFIG)
        older_stub = pb_grpc.PeerServiceStub(channel)
        request = pb.CreateTxBatchRequest(channel="loopchain_default", data_json=['{"a": 1}'])
        reply = await _streams(older_stub)(request, timeout=TIMEOUT)
        assert reply.results[0].code == 0
        assert reply.results[0].tx_hash in older.chains["loopchain_default"].pool
        await channel.close()
    finally:
        await server.stop(None)


async def test_a_stopping_peer_ends_the_stream_of_a_batch_it_holds_with_the_outcome_unknown(
    peer: tuple[CountingServicer, PeerServer, int], stub: pb_grpc.PeerServiceStub
) -> None:
    """The peer had the batch when it stopped (its intake may have journaled it): UNAVAILABLE,
    a 503 "try again" at the REST API, had a v1 batch sent again made final twice (review)."""
    servicer, served = peer[0], peer[1]
    streams = _streams(stub)
    await streams(_batch(0, 1), timeout=TIMEOUT)
    servicer.backend.alpha.released.clear()  # type: ignore[attr-defined]
    held = asyncio.ensure_future(streams(_batch(1, 1), timeout=TIMEOUT))

    async def batch_held() -> bool:
        return servicer.backend.alpha.waiting == 1  # type: ignore[attr-defined,no-any-return]

    await wait_until_async(batch_held, 20, "the peer holding the batch")
    await servicer.end_streams(TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await held
    assert ended.value.code() is grpc.StatusCode.UNKNOWN, ended.value
    assert "whether it took the transactions is unknown" in (ended.value.details() or "")
    await served.stop(grace=0)


async def test_a_batch_sent_by_call_to_a_peer_that_goes_away_holding_it_is_outcome_unknown(
    peer: tuple[CountingServicer, PeerServer, int], stub: pb_grpc.PeerServiceStub
) -> None:
    """A peer gone (killed, stopped) while it held the batch may have journaled it: UNKNOWN,
    not "unreachable, try again" (review: a v1 batch sent again was final twice); its own
    refusals (`refuse`) and a peer never reached stay what they were."""
    servicer, served = peer[0], peer[1]
    streams = _streams(stub)
    streams._by_call_until = asyncio.get_running_loop().time() + 600  # as if streams were refused
    channel = servicer.backend.alpha  # type: ignore[attr-defined]

    async def halted(bodies: list[dict[str, Any]]) -> list[Transaction | RequestError]:
        raise RequestError(ErrorKind.UNAVAILABLE, "channel alpha is halted")

    channel.create_txs, taking = halted, channel.create_txs
    refused = await refusal_of(streams(_batch(0, 1), timeout=TIMEOUT))  # the handler's answer
    assert (refused.code(), refused.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "channel alpha is halted",
    ), refused
    channel.create_txs = taking
    servicer.backend.alpha.released.clear()  # type: ignore[attr-defined]
    held = asyncio.ensure_future(streams(_batch(1, 1), timeout=TIMEOUT))

    async def batch_held() -> bool:
        return servicer.backend.alpha.waiting == 1  # type: ignore[attr-defined,no-any-return]

    await wait_until_async(batch_held, 20, "the peer holding the batch")
    await served.stop(grace=0)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await held
    assert ended.value.code() is grpc.StatusCode.UNKNOWN, ended.value
    assert "whether it took the transactions is unknown" in (ended.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unreached:  # nobody serves the port now
        await streams(_batch(2, 1), timeout=TIMEOUT)
    assert unreached.value.code() is grpc.StatusCode.UNAVAILABLE, unreached.value


@pytest.mark.parametrize(
    ("code", "details", "answered", "unknown"),
    [
        (grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)", False, True),
        (grpc.StatusCode.INTERNAL, "Internal error from Core", False, True),
        (grpc.StatusCode.UNKNOWN, "Unexpected <class 'OSError'>", False, True),
        (grpc.StatusCode.UNAVAILABLE, "channel alpha is halted", True, False),  # `refuse`
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; ...", False, False),
        # past the server's concurrent streams (a burst on a new connection): never read
        (
            grpc.StatusCode.UNAVAILABLE,
            "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))",
            False,
            False,
        ),
        (grpc.StatusCode.CANCELLED, "Cancelled", False, False),  # a burst's, before its handler
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many", False, False),
    ],
)
def test_which_failures_leave_a_batch_sent_unanswered(
    code: grpc.StatusCode, details: str, answered: bool, unknown: bool
) -> None:
    """A review had a refused stream of a burst (nothing read) answered 502 "unknown"."""
    trailing = grpc.aio.Metadata(grpc_util.ANSWERED) if answered else grpc.aio.Metadata()
    failure = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)
    assert batch_stream._unanswered(failure) is unknown


async def refusal_of(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


async def test_a_stream_past_its_age_answers_the_batch_it_holds_and_the_next_opens_another(
    peer: tuple[CountingServicer, PeerServer, int],
    stub: pb_grpc.PeerServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer ended a stream at its age limit even while it was taking a batch in: the client
    heard UNAVAILABLE (REST: 503, send it again) for transactions the peer may have taken (the
    intake goes on once begun), and a v1 batch sent again became a second one. The age now bounds
    the wait for a batch only: the batch held past it is answered, then the stream ends."""
    servicer = peer[0]
    age = 0.5
    monkeypatch.setattr(peer_service, "STREAM_MAX_AGE_S", age)
    monkeypatch.setattr(batch_stream, "STREAM_ROTATE_S", age / 2)  # as the proxy does, before
    streams = _streams(stub)
    servicer.backend.alpha.released.clear()  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    opened = loop.time()
    held = asyncio.ensure_future(streams(_batch(0, 1), timeout=TIMEOUT))

    async def held_past_its_age() -> bool:
        waiting = servicer.backend.alpha.waiting == 1  # type: ignore[attr-defined]
        return waiting and loop.time() > opened + 2 * age

    await wait_until_async(held_past_its_age, 20, "the batch held past the stream's age")
    servicer.backend.alpha.released.set()  # type: ignore[attr-defined]
    assert (await held).results[0].code == 0
    reply = await streams(_batch(1, 1), timeout=TIMEOUT)
    assert reply.results[0].code == 0 and servicer.opened == {"CreateTxStream": 2}


async def test_a_peer_killed_under_its_streams_is_unavailable_never_an_internal_error(
    tmp_path: Path,
) -> None:
    """kill -9 of the peer process: the next batch, written on the stream left idle, mostly fails
    in grpc's core (INTERNAL "Internal error from Core", no status from the dead peer; on a slower
    machine the kernel's reset may come first); it is the peer that cannot be reached,
    UNAVAILABLE (a 503 with Retry-After at the REST API, not a 502), and so is every batch after
    it until the peer is back. The first may also have been written before the stream failed
    (the peer might have been alive to take it, for all the proxy knows): UNKNOWN then, whether
    it was taken unknown; never INTERNAL."""
    port = free_port_pair()
    peer = Proc("batch_peer", ["-m", "tests.integration._batch_peer", str(port)], tmp_path)
    peer.start()
    try:
        await wait_until_async(_said_ready(peer), 60, "the peer process to serve")
        channel = grpc_util.open_channel(f"127.0.0.1:{port}", CONFIG)
        try:
            streams = _streams(pb_grpc.PeerServiceStub(channel))
            reply = await streams(_batch(0, 1), timeout=TIMEOUT)
            assert reply.results[0].code == 0 and streams.streamed == 1
            peer.kill9()
            failed = []
            for n in range(1, 4):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await streams(_batch(n, 1), timeout=TIMEOUT)
                failed.append((refused.value.code(), refused.value.details()))
        finally:
            await channel.close()
    finally:
        peer.stop()
    assert all(code is grpc.StatusCode.UNAVAILABLE for code, _ in failed[1:]), failed
    # the first write meets either grpc core's INTERNAL (said as the stream broke) or, when the
    # kernel's reset came first (a slower machine), grpc's own UNAVAILABLE "Stream removed"
    code, first = failed[0]
    if code is grpc.StatusCode.UNKNOWN:
        assert "whether it took the transactions is unknown" in first, failed
    else:
        assert code is grpc.StatusCode.UNAVAILABLE, failed
        assert "the submission stream to the peer broke" in first or "Stream removed" in first


def _said_ready(proc: Proc) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        return "ready" in proc.log_text()

    return ready


def _texts_of(sizes: list[int], first: int) -> list[str]:
    """Client bodies `{"n":N,"pad":"xx…"}` of exactly `sizes` bytes each, numbered from `first`."""
    texts = []
    for n, size in enumerate(sizes, first):
        head = canonical.encode({"n": n, "pad": ""}).decode()
        texts.append(head[:-2] + "x" * (size - len(head)) + head[-2:])
    assert [len(t) for t in texts] == sizes
    return texts


async def test_the_largest_batch_a_proxy_sends_passes_the_bounds_of_the_peers_server() -> None:
    """The proxy's submitter gathers at most MAX_BATCH submissions of at most
    max_submissions_bytes into one call; the peer's server, started as a peer starts it (its
    request and call bounds), takes the largest such batch whole: every submission is answered
    with its hash (a bound without room for the call's envelope refused it RESOURCE_EXHAUSTED)."""
    config = load_config(environ={}, overrides={"GRPC_TIMEOUT": 60.0})  # a slow machine's signing
    port = free_port_pair()
    channel = Channel()
    server = await start_peer_server(OneChannelBackend(channel), "receiver", config, port, None)
    api = PeerApi(config, f"127.0.0.1:{port}")
    await api.start()
    carried: list[int] = []
    api.on_submission_call = carried.append
    limit = grpc_util.max_submissions_bytes(config)
    each, extra = divmod(limit, submit.MAX_BATCH)  # MAX_BATCH texts of `limit` bytes in all
    sizes = [each + 1] * extra + [each] * (submit.MAX_BATCH - extra)
    try:
        channel.released.clear()  # the first call is held while the others gather behind it
        first = asyncio.create_task(api.submitter.submit(CHANNEL, _texts_of([100], 0)[0]))
        await wait_until_async(_async(lambda: channel.waiting == 1), TIMEOUT, "the first call")
        texts = _texts_of(sizes, 1)
        rest = [asyncio.create_task(api.submitter.submit(CHANNEL, text)) for text in texts]
        gathered = _async(lambda: len(api.submitter._waiting.get(CHANNEL, [])) == len(texts))
        await wait_until_async(gathered, TIMEOUT, "the submissions gathered")
        channel.released.set()
        hashes = await asyncio.gather(first, *rest)
    finally:
        await api.close()
        await server.stop(grace=0)
    assert carried == [1, submit.MAX_BATCH]
    assert len(set(hashes)) == 1 + len(texts)
    assert [channel.numbers[h] for h in hashes] == list(range(1 + len(texts)))
    assert sum(len(canonical.encode(body)) for body in channel.taken[1:]) == limit


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


class _HeldCall:
    """A stream call the peer accepted whose reply the test hands over (`reply`)."""

    def __init__(self) -> None:
        self.written: list[Any] = []
        self.reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.cancelled = False

    async def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return (grpc_util.STREAM_ACCEPTED,)

    async def write(self, request: Any) -> None:
        self.written.append(request)

    async def read(self) -> Any:
        return await self.reply

    def done(self) -> bool:
        return self.cancelled

    def cancel(self) -> bool:
        self.cancelled = True
        return True


async def _no_call(request: Any, timeout: float) -> pb.CreateTxBatchReply:
    raise AssertionError("the batch went by call")


async def test_a_reply_that_reaches_the_proxy_as_its_deadline_passes_is_taken_not_dropped() -> None:
    """The proxy stopped (SIGSTOP) or starved past a batch's deadline while its reply came: when
    it runs again, the timer fires first and the reply reaches the read a moment later. It is
    taken (the review saw every such batch answered 504 and then committed)."""
    loop = asyncio.get_running_loop()
    call = _HeldCall()
    streams: BatchStreams[pb.CreateTxBatchRequest] = BatchStreams(lambda **_: call, _no_call)
    answer = pb.CreateTxBatchReply(results=[pb.CreateTxResult(tx_hash="ab" * 32)])
    timeout = 3.0  # room for the write before the deadline on a slow machine
    deadline = loop.time() + timeout
    sending = asyncio.ensure_future(streams(_batch(0, 1), timeout=timeout))
    await wait_until_async(_async(lambda: bool(call.written)), 30, "the batch written")

    def stopped_past_the_deadline() -> None:
        while loop.time() <= deadline:  # the process is stopped: nothing of it runs
            time.sleep(0.01)
        # the reply arrived meanwhile: the runtime hands it over after the timer, when it runs
        loop.call_soon(loop.call_soon, call.reply.set_result, answer)

    loop.call_soon(stopped_past_the_deadline)
    reply = await sending
    assert list(reply.results) == list(answer.results)
    assert not call.cancelled and streams.streamed == 1
