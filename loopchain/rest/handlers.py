"""Route handlers of the peer REST API v1, each forwarding one call to the peer's gRPC service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc
from aiohttp import web

from loopchain.configure import Config
from loopchain.p2p.codec import peer_status_to_json
from loopchain.p2p.grpc_util import max_submissions_bytes, open_channel
from loopchain.p2p.peer_health import ChannelsHealth
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos.loopchain_pb2_grpc import PeerServiceStub
from loopchain.rest import formatting, params
from loopchain.rest.batch_stream import BatchStreams
from loopchain.rest.errors import (
    ProxyBusy,
    RestError,
    invalid_params,
    json_response,
    rpc_error,
)
from loopchain.rest.submit import BatchCall, BatchSubmitter, MakeError
from loopchain.types.codes import ResponseCode, error_body

Reply = TypeVar("Reply")
# transactions one POST /api/v1/transactions array may hold; fewer when REST_MAX_INFLIGHT is
# smaller (an array holds one in-flight submission slot per transaction, all at once)
MAX_ARRAY_SUBMISSIONS = 500


def _submission_result(outcome: dict[str, Any] | BaseException) -> dict[str, Any]:
    """One element of the answer to an array of transactions."""
    if isinstance(outcome, RestError):
        return error_body(outcome.code, outcome.message)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


# Of GRPC_TIMEOUT, how long a request may wait for its turn to be sent to the peer (a block read
# for one of MAX_BLOCK_READS, a transaction behind the batch in flight) before it is refused 503,
# not sent: answered within 1.5x the deadline, not 2x (a client giving up at twice the deadline,
# 10 s, saw timeouts from a peer restarted under load)
TURN_WAIT_SHARE = 0.5
# Calls to the peer whose answer may be a whole block (up to MAX_BLOCK_KBYTES, held two or
# three times over while it is received, decoded and rendered) in flight at once; more wait for a
# turn (503 when none comes within TURN_WAIT_SHARE of GRPC_TIMEOUT). Without it, 256 clients
# reading a 1 MB block took a proxy to 1.1 GB.
BLOCK_READS = frozenset({"GetBlock"})
MAX_BLOCK_READS = 16


def _entry_result(entry: pb.TxResultEntry) -> pb.TxResultReply:
    return entry.result


def _entry_tx(entry: pb.TxEntry) -> pb.GetTxReply:
    return entry.tx


def _entry_balance(entry: pb.BalanceEntry) -> pb.BalanceReply:
    return entry.balance


Rendered = TypeVar("Rendered")
# channels whose last block is kept, as asked for ("" too): a peer serves a few, and each kept
# block is a whole rendered block (up to a few MB for a full one), so past these no more are kept
MAX_LAST_BLOCKS = 16


class LastBlocks(Generic[Rendered]):
    """The last block of each channel as last answered (its hash, and its answer as rendered):
    a poll of the last block asks the peer only whether it is still that block
    (GetBlockRequest.unless_hash), and is answered the kept rendering, not the block sent,
    decoded and rendered again. A rendering is shared by the answers: not to be modified.

    Concurrent polls' replies may come back in another order than they were asked: a block
    replaces the kept one only when its poll named the kept one (`keep`), so what is kept only
    moves on to blocks the peer served after it, never back. An "unchanged" reply is answered
    what is kept when it comes: the block it named, or one the peer served after it."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[str, Rendered]] = {}

    def hash_of(self, channel: str) -> str:
        """The hash (hex) of the last block kept for `channel` as asked for, "" for none."""
        kept = self._kept.get(channel)
        return kept[0] if kept is not None else ""

    def unchanged(self, channel: str, unchanged: bool) -> Rendered | None:
        """The kept rendering when the peer said (`unchanged`) the last block is still the kept
        one, else None."""
        kept = self._kept.get(channel)
        return kept[1] if unchanged and kept is not None else None

    def keep(self, channel: str, named: str, block_hash: str, rendered: Rendered) -> None:
        """Keep the block with `block_hash` as rendered, answered to a poll that named the block
        with hash `named` ("": none), unless another was kept meanwhile."""
        if self.hash_of(channel) != named:
            return  # a reply overtaken by another poll's: what is kept is as new or newer
        if channel in self._kept or len(self._kept) < MAX_LAST_BLOCKS:
            self._kept[channel] = (block_hash, rendered)


class PeerApi:
    """The REST routes of one peer, backed by a gRPC channel to it (opened by `start`)."""

    def __init__(self, config: Config, peer_target: str, dial: str | None = None) -> None:
        self.peer_target = peer_target  # as messages name the peer
        self.stopping = asyncio.Event()  # set as the proxy stops: waits for results end at once
        self._dial = dial or peer_target  # where the channel connects (its own socket, if any)
        self._config = config
        self._timeout = float(config.GRPC_TIMEOUT)
        self._max_body = int(config.REST_MAX_BODY_BYTES)
        self._max_inflight = int(config.REST_MAX_INFLIGHT)
        self._max_array = min(MAX_ARRAY_SUBMISSIONS, self._max_inflight)
        self._inflight = {False: 0, True: 0}  # calls to the peer in flight, by `submissions`
        self._block_reads = asyncio.Semaphore(MAX_BLOCK_READS)
        self.last_blocks: LastBlocks[dict[str, Any]] = LastBlocks()  # GET /api/v1/blocks
        # told how many submissions each call to the peer carries (the proxy's metrics)
        self.on_submission_call: Callable[[int], None] | None = None
        self._max_batch_bytes = max_submissions_bytes(config)
        self.submitter: BatchSubmitter[str] = BatchSubmitter(
            self._submit_batch,
            self._describe_peer,
            on_call=self._submission_call,
            max_batch_bytes=self._max_batch_bytes,
        )
        self._submitters: list[BatchSubmitter[Any]] = [self.submitter]
        self.querier = self.query_submitter()
        self.results = self.result_submitter()
        self.txs = self.tx_submitter()
        self._channel: grpc.aio.Channel | None = None
        self._stub: PeerServiceStub | None = None
        self.on_rpc_error: Callable[[str, str], None] | None = None  # (method, status code name)
        self._rpc_names: dict[object, str] = {}
        self._batch_streams: tuple[BatchStreams[Any], ...] = ()
        # whether each channel of the peer answers (its worker process may stop alone)
        self.health = ChannelsHealth(self._probe, peer_target, self._timeout)

    async def start(self) -> None:
        """Open the gRPC channel to the peer (connections are made lazily, per call)."""
        self._channel = open_channel(self._dial, self._config)
        self._stub = PeerServiceStub(self._channel)
        self._batch_streams = (
            BatchStreams(self._stub.CreateTxStream, self._stub.CreateTxBatch),
            BatchStreams(self._stub.CreateIconTxStream, self._stub.CreateIconTxBatch),
        )
        service = pb.DESCRIPTOR.services_by_name["PeerService"]
        self._rpc_names = {getattr(self._stub, m.name): m.name for m in service.methods}

    async def close(self) -> None:
        """Close the gRPC channel, cancelling calls in flight."""
        await self.health.close()
        for submitter in self._submitters:
            await submitter.close()
        for streams in self._batch_streams:
            streams.close()
        self._batch_streams = ()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    def routes(self) -> list[web.RouteDef]:
        """The route table of the API."""
        return [
            web.post("/api/v1/transactions", self.create_tx),
            web.get("/api/v1/transactions", self.get_tx),
            web.get("/api/v1/transactions/result", self.get_tx_result),
            web.post("/api/v1/query", self.query),
            web.get("/api/v1/blocks", self.get_block),
            web.get("/api/v1/status/peer", self.status_peer),
            web.get("/api/v1/status/score", self.status_score),
        ]

    @property
    def stub(self) -> PeerServiceStub:
        if self._stub is None:
            raise RestError(ResponseCode.FAIL, "the REST proxy is shutting down", 503)
        return self._stub

    def batch_streams(self, *, icon: bool) -> BatchStreams[Any]:
        """Where batches of submissions go (v1, or v3 with `icon`): streams to the peer, or
        calls when a stream cannot take them."""
        if not self._batch_streams:
            raise RestError(ResponseCode.FAIL, "the REST proxy is shutting down", 503)
        return self._batch_streams[icon]

    @contextlib.contextmanager
    def slots(self, count: int = 1, *, submissions: bool = False) -> Iterator[None]:
        """Hold `count` of the proxy's in-flight calls of one kind, submissions or every other
        call (reads, queries, status); 503 at once when they are taken. Each kind has its own
        REST_MAX_INFLIGHT: a flood of submissions leaves status checks and readers their
        answers (and a block explorer's reads do not refuse transactions)."""
        held = self._inflight[submissions]
        if held + count > self._max_inflight:
            what = "submissions" if submissions else "calls"
            raise ProxyBusy(f"the peer is busy ({held} {what} in flight); try again shortly")
        self._inflight[submissions] += count
        try:
            yield
        finally:
            self._inflight[submissions] -= count

    @property
    def timeout(self) -> float:
        """Seconds each call to the peer may take (GRPC_TIMEOUT)."""
        return self._timeout

    @property
    def turn_wait(self) -> float:
        """Seconds a request may wait for its turn to be sent to the peer (TURN_WAIT_SHARE of
        GRPC_TIMEOUT), then a 503: with its call's own deadline, answered within 1.5x it."""
        return self._timeout * TURN_WAIT_SHARE

    async def call_peer(self, method: Callable[..., Awaitable[Reply]], request: Any) -> Reply:
        """One call to the peer within GRPC_TIMEOUT in one of the in-flight slots (a 503
        RestError at once when none is free); a failed call raises its gRPC error."""
        name = self._rpc_names.get(method, "other")
        with self.slots():
            if name not in BLOCK_READS:
                reply: Reply = await self._invoke(name, method, request)
                return reply
            async with self._block_read_turn():
                reply = await self._invoke(name, method, request)
                return reply

    @contextlib.asynccontextmanager
    async def _block_read_turn(self) -> AsyncIterator[None]:
        """One of the MAX_BLOCK_READS turns, waited for within `turn_wait` (then a 503)."""
        try:
            async with asyncio.timeout(self.turn_wait):
                await self._block_reads.acquire()
        except TimeoutError:  # the proxy's own refusal for want of room (monitors retry it)
            raise ProxyBusy(
                f"{MAX_BLOCK_READS} block reads are in flight to the peer; try again shortly"
            ) from None
        try:
            yield
        finally:
            self._block_reads.release()

    async def _invoke(self, name: str, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        """`method(request)` within GRPC_TIMEOUT, refused at once while the peer is stalled in
        the request's channel (see peer_health); a failure is counted as `name`'s and raised."""
        channel = str(getattr(request, "channel", ""))  # "": the default (or no) channel
        await self.health.admit(channel)  # raises (uncounted) while the channel is stalled
        began = time.monotonic()
        try:
            reply = await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            self.health.observe(channel, exc.code(), time.monotonic() - began)
            self._count_error(name, exc)
            raise
        self.health.observe(channel, None, time.monotonic() - began)
        return reply

    def _count_error(self, method: str, exc: grpc.aio.AioRpcError) -> None:
        if self.on_rpc_error is not None:
            self.on_rpc_error(method, exc.code().name)

    async def peer_metrics(self) -> pb.MetricsReply:
        """The peer's metrics exposition (its gRPC error, or a 503 RestError when busy)."""
        reply: pb.MetricsReply = await self.call_peer(self.stub.GetMetrics, pb.MetricsRequest())
        return reply

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Any) -> Reply:
        try:
            return await self.call_peer(method, request)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, self.peer_target, self._timeout) from None

    async def _probe(self, channel: str, timeout: float) -> None:
        """The cheapest call the peer answers about `channel`: its status there (NOT_FOUND,
        when it serves no such channel, is an answer too)."""
        await self.stub.GetStatus(pb.ChannelRequest(channel=channel), timeout=timeout)

    def _describe_peer(self) -> tuple[str, float]:
        return self.peer_target, self._timeout

    def _submission_call(self, carried: int) -> None:
        if self.on_submission_call is not None:
            self.on_submission_call(carried)

    def batch_submitter(self, call: BatchCall, make_error: MakeError) -> BatchSubmitter[str]:
        """Another submitter over this peer's channel (closed with it)."""
        submitter: BatchSubmitter[str] = BatchSubmitter(
            call, self._describe_peer, make_error, self._submission_call, self._max_batch_bytes
        )
        self._submitters.append(submitter)
        return submitter

    def query_submitter(self, make_error: MakeError | None = None) -> BatchSubmitter[str]:
        """A submitter of queries to this peer, in QueryBatch calls (closed with it), answered
        the SCORE's JSON. A query the peer refuses alone is counted as a failed Query, as when
        each was its own call."""
        querier: BatchSubmitter[str] = self._reader(self.query_batch, "Query", make_error)
        return querier

    def result_submitter(
        self, make_error: MakeError | None = None, *, with_tx: bool = False
    ) -> BatchSubmitter[pb.TxResultReply]:
        """A submitter of transaction result lookups (their hashes) to this peer, in
        GetTxResultBatch calls (closed with it); `with_tx`: each executed transaction's bytes come
        with its result. A lookup the peer refuses alone (NOT_FOUND: an unknown transaction) is
        counted as a failed GetTxResult, as when each was its own call."""
        call = functools.partial(self.tx_result_batch, with_tx=with_tx)
        results: BatchSubmitter[pb.TxResultReply] = self._reader(
            call, "GetTxResult", make_error, _entry_result
        )
        return results

    def tx_submitter(self, make_error: MakeError | None = None) -> BatchSubmitter[pb.GetTxReply]:
        """A submitter of transaction lookups (their hashes) to this peer, in GetTxBatch calls
        (closed with it); refusals counted as GetTx's, as result_submitter's are."""
        txs: BatchSubmitter[pb.GetTxReply] = self._reader(
            self.tx_batch, "GetTx", make_error, _entry_tx
        )
        return txs

    def balance_submitter(
        self, make_error: MakeError | None = None
    ) -> BatchSubmitter[pb.BalanceReply]:
        """A submitter of balance asks (their addresses) to this peer, in GetBalanceBatch calls
        (closed with it); refusals counted as GetBalance's, as result_submitter's are."""
        balances: BatchSubmitter[pb.BalanceReply] = self._reader(
            self.balance_batch, "GetBalance", make_error, _entry_balance
        )
        return balances

    def _reader(
        self,
        call: BatchCall,
        method: str,
        make_error: MakeError | None,
        answer_of: Callable[[Any], Any] | None = None,
    ) -> BatchSubmitter[Any]:
        """A submitter of reads in batch calls; a read refused alone counted as `method`'s."""

        def refused(code: grpc.StatusCode) -> None:
            if self.on_rpc_error is not None:
                self.on_rpc_error(method, code.name)

        reader: BatchSubmitter[Any] = BatchSubmitter(
            call,
            self._describe_peer,
            make_error,
            None,
            self._max_batch_bytes,
            refused,
            answer_of,
            reads=True,
        )
        self._submitters.append(reader)
        return reader

    async def submit_batch(
        self, name: str, request: Any, stub_method: Callable[..., Awaitable[Any]]
    ) -> pb.CreateTxBatchReply:
        """A batch call to the peer within GRPC_TIMEOUT (its failure counted as `name`'s)."""
        reply: pb.CreateTxBatchReply = await self._invoke(name, stub_method, request)
        return reply

    async def _submit_batch(self, channel: str, texts: list[str]) -> pb.CreateTxBatchReply:
        request = pb.CreateTxBatchRequest(channel=channel, data_json=texts)
        return await self.submit_batch("CreateTxBatch", request, self.batch_streams(icon=False))

    async def query_batch(self, channel: str, texts: list[str]) -> pb.QueryBatchReply:
        """The peer's answers to queries of `channel` (a call within GRPC_TIMEOUT)."""
        request = pb.QueryBatchRequest(channel=channel, params_json=texts)
        reply: pb.QueryBatchReply = await self._invoke("QueryBatch", self.stub.QueryBatch, request)
        return reply

    async def tx_result_batch(
        self, channel: str, hashes: list[str], *, with_tx: bool = False
    ) -> pb.TxResultBatchReply:
        """The peer's results of transactions of `channel` (`with_tx`: and each executed one's
        bytes), in a call within GRPC_TIMEOUT."""
        request = pb.TxLookupBatchRequest(channel=channel, tx_hashes=hashes, with_tx=with_tx)
        reply: pb.TxResultBatchReply = await self._invoke(
            "GetTxResultBatch", self.stub.GetTxResultBatch, request
        )
        return reply

    async def balance_batch(self, channel: str, addresses: list[str]) -> pb.BalanceBatchReply:
        """The peer's balances of addresses in `channel` (a call within GRPC_TIMEOUT)."""
        request = pb.BalanceBatchRequest(channel=channel, addresses=addresses)
        reply: pb.BalanceBatchReply = await self._invoke(
            "GetBalanceBatch", self.stub.GetBalanceBatch, request
        )
        return reply

    async def tx_batch(self, channel: str, hashes: list[str]) -> pb.GetTxBatchReply:
        """The peer's transactions of `channel` (a call within GRPC_TIMEOUT)."""
        request = pb.TxLookupBatchRequest(channel=channel, tx_hashes=hashes)
        reply: pb.GetTxBatchReply = await self._invoke("GetTxBatch", self.stub.GetTxBatch, request)
        return reply

    async def _submit(self, channel: str, body: dict[str, Any]) -> dict[str, Any]:
        tx_hash = await self.submitter.submit(
            channel, params.compact_json(body), send_within=self.turn_wait
        )
        return {"response_code": 0, "tx_hash": tx_hash, "more_info": ""}

    async def create_tx(self, request: web.Request) -> web.Response:
        """POST /api/v1/transactions: hand the client's JSON object to the peer's tx pool (or a
        JSON array of objects, answered by an array of results in the same order)."""
        text = await params.read_body(request, self._max_body)
        value = params.parse_json(text)
        if not isinstance(value, list):
            body = params.require_object(value)
            with self.slots(submissions=True):
                return json_response(await self._submit(params.body_channel(body, request), body))
        if not 0 < len(value) <= self._max_array:  # a larger one could never be taken: 400
            raise invalid_params(
                f"an array of transactions holds 1 to {self._max_array} (the smaller of "
                f"{MAX_ARRAY_SUBMISSIONS} and REST_MAX_INFLIGHT {self._max_inflight}), "
                f"got {len(value)}"
            )
        bodies = [
            params.require_object(item, f"transaction {index} of the array")
            for index, item in enumerate(value)
        ]
        channels = [params.body_channel(body, request) for body in bodies]
        # an array's transactions go to the peer in batched calls: it holds a quarter of the
        # submission slots at most (one of 256 held them all, and every single submission of the
        # proxy was refused while it was in flight: review)
        with self.slots(min(len(bodies), max(1, self._max_inflight // 4)), submissions=True):
            outcomes = await asyncio.gather(
                *(self._submit(c, b) for c, b in zip(channels, bodies, strict=True)),
                return_exceptions=True,
            )
        return json_response([_submission_result(outcome) for outcome in outcomes])

    async def get_tx(self, request: web.Request) -> web.Response:
        """GET /api/v1/transactions?hash=H: the transaction with its meta data."""
        channel, tx_hash = params.query_channel(request), params.hash_arg(request)
        with self.slots():
            reply = await self.txs.submit(
                channel, tx_hash, self._timeout, send_within=self.turn_wait
            )
        return json_response(formatting.tx_response(reply))

    async def get_tx_result(self, request: web.Request) -> web.Response:
        """GET /api/v1/transactions/result?hash=H: the SCORE's result code for the transaction."""
        channel, tx_hash = params.query_channel(request), params.hash_arg(request)
        with self.slots():
            reply = await self.results.submit(
                channel, tx_hash, self._timeout, send_within=self.turn_wait
            )
        return json_response(formatting.tx_result_response(reply))

    async def query(self, request: web.Request) -> web.Response:
        """POST /api/v1/query: pass the JSON body verbatim to the SCORE's query."""
        text = await params.read_body(request, self._max_body)
        channel = params.body_channel(params.parse_json(text), request)
        with self.slots():
            answer = await self.querier.submit(
                channel, text, self._timeout, send_within=self.turn_wait
            )
        return json_response(formatting.query_response(answer))

    async def get_block(self, request: web.Request) -> web.Response:
        """GET /api/v1/blocks[?hash=H|height=N]: the last block, or one block with its txs.

        On an empty chain the last block is `{"response_code": 0, "block_hash": "",
        "block_data_json": {"height": -1}}`.
        """
        block_hash = request.query.get("hash")
        height = params.height_arg(request)
        if block_hash is not None and height is not None:
            raise invalid_params("give either hash or height, not both")
        channel = params.query_channel(request)
        message = pb.GetBlockRequest(channel=channel, height=-1)
        selected = block_hash is not None or height is not None
        named = ""  # the last block: sent again only when it is another than the one kept
        if block_hash is not None:
            message.block_hash = params.hash_arg(request)
        elif height is not None:
            message.height = height
        else:
            named = message.unless_hash = self.last_blocks.hash_of(channel)
        reply = await self._call(self.stub.GetBlock, message)
        if not selected:
            kept = self.last_blocks.unchanged(channel, reply.unchanged)
            if kept is not None:
                return json_response(kept)
        if not reply.block and selected:
            wanted = f"hash {block_hash}" if block_hash is not None else f"height {height}"
            raise RestError(ResponseCode.NOT_FOUND, f"there is no block with {wanted}")
        body = formatting.block_response(reply, with_txs=selected)
        if not selected and body.get("block_hash"):
            self.last_blocks.keep(channel, named, body["block_hash"], body)
        return json_response(body)

    async def status_peer(self, request: web.Request) -> web.Response:
        """GET /api/v1/status/peer: the peer's status in the channel."""
        message = pb.ChannelRequest(channel=params.query_channel(request))
        reply = await self._call(self.stub.GetStatus, message)
        return json_response(peer_status_to_json(reply))

    async def status_score(self, request: web.Request) -> web.Response:
        """GET /api/v1/status/score: the channel's SCORE package and versions."""
        message = pb.ChannelRequest(channel=params.query_channel(request))
        reply = await self._call(self.stub.GetScoreStatus, message)
        return json_response(formatting.score_status_response(reply))
