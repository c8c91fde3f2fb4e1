"""The peer's chain as the JSON-RPC v3 methods read it: gRPC calls through the REST proxy's channel,
replies decoded to domain values, failures turned into JSON-RPC errors.

* "not found" is None, after one more call tells an unknown channel (-32602, naming it) from an
  unknown transaction or block: the peer answers NOT_FOUND for either;
* the peer's refusal of an argument is -32602 with its words;
* every other failure (peer down or too slow, busy proxy, reply it cannot decode) is -32603 with
  a message saying which, never a traceback or a hang (each call has GRPC_TIMEOUT).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from loopchain.blockchain.execution import parse_events
from loopchain.p2p.errors import TX_NOT_FOUND_BECAUSE
from loopchain.protos import loopchain_pb2 as pb
from loopchain.rest.errors import RETRY_AFTER_SECONDS, ProxyBusy, RestError, status_error
from loopchain.rest.formatting import decode_block, decode_tx
from loopchain.rest.handlers import PeerApi
from loopchain.rest.icon_shapes import Outcome, Place
from loopchain.rest.submit import BatchSubmitter
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError
from loopchain.types.transaction import Transaction

Reply = TypeVar("Reply")
Found = TypeVar("Found")

# The peer's refusals by their JSON-RPC codes (anything else is -32603): of any call, and of a
# transaction (a full pool or a channel at capacity)
_CODES = {grpc.StatusCode.INVALID_ARGUMENT: JsonRpcCode.INVALID_PARAMS}  # the peer's words
_SEND_CODES = {**_CODES, grpc.StatusCode.RESOURCE_EXHAUSTED: JsonRpcCode.POOL_OVERFLOW}
# a query the SCORE refused or failed: ICON's -30000 - 32 (reverted by the SCORE)
SCORE_REVERTED = JsonRpcCode.SCORE_ERROR - 32
_QUERY_CODES = {grpc.StatusCode.INVALID_ARGUMENT: SCORE_REVERTED}
# channel names kept (channel_name): a peer serves a few channels, asked for by name or as "";
# each is asked again after CHANNEL_NAME_TTL_S (the peer's default channel may change)
MAX_NAMED_CHANNELS = 256
CHANNEL_NAME_TTL_S = 5.0


class _Unknown(Exception):
    """The peer answered NOT_FOUND to a lookup of a batch: in the lookup's own entry (`served`:
    the call was served, so the channel is and the transaction is unknown), or to the whole
    call; `details` in the peer's words."""

    def __init__(self, served: bool, details: str = "") -> None:
        super().__init__()
        self.served = served
        self.details = details


MAX_WHY_CHARS = 400  # of the peer's reason a transaction is not known, told on


@dataclass(frozen=True)
class NotKnown:
    """The peer does not know the transaction; `why`, when it says (it expired there, or will
    never be final): v3 clients were told only that it was not known (clock review)."""

    why: str = ""

    @staticmethod
    def of(details: str) -> NotKnown:
        """From the peer's NOT_FOUND words ("transaction … not found: why")."""
        return NotKnown(details.partition(TX_NOT_FOUND_BECAUSE)[2][:MAX_WHY_CHARS])


@dataclass(frozen=True)
class FoundTx:
    """A transaction and its place (None while it is only pooled)."""

    tx: Transaction
    place: Place | None


@dataclass(frozen=True)
class FoundResult:
    """A transaction's result (None until the SCORE ran it), its place (None while pooled) and,
    when asked for, the executed transaction itself (else None)."""

    outcome: Outcome | None
    place: Place | None
    tx: Transaction | None = None


@dataclass(frozen=True)
class ScoreFacts:
    """The channel SCORE's "cx…" address and its API (ICON's icx_getScoreApi list)."""

    address: str
    api: list[Any]


@dataclass(frozen=True)
class Coin:
    """An account's balance and the total supply in loop, at an executed height."""

    balance: int
    total_supply: int
    height: int


@dataclass(frozen=True)
class ChainFacts:
    """A channel's name as the peer knows it and its last height (-1 before the genesis)."""

    channel: str
    height: int
    nid: str = ""  # the channel's ICON network id ("0x3"); "" from a peer that does not say


def _place(height: int, block_hash: str, tx_index: int) -> Place | None:
    if height < 0:
        return None
    try:
        raw = bytes.fromhex(block_hash)
    except ValueError:
        raw = b""
    if len(raw) != 32 or tx_index < 0:
        raise JsonRpcError(
            JsonRpcCode.INTERNAL_ERROR, "the peer named a malformed place of the transaction"
        )
    return Place(height, raw, tx_index)


def _block_of(reply: pb.BlockReply | None) -> Block | None:
    """The block a GetBlock reply carries (None for NOT_FOUND or an empty chain)."""
    if reply is None or not reply.block:
        return None
    return _decoded(lambda raw: decode_block(raw, reply.tx_hashes), reply.block)


class PeerReader:
    """Reads one peer's chains over the proxy's gRPC channel to it."""

    def __init__(self, api: PeerApi) -> None:
        self._api = api
        self.stopping = api.stopping  # set as the proxy stops
        # concurrent icx_sendTransaction calls share CreateIconTxBatch calls to the peer
        self._sender = api.batch_submitter(self._send_batch, self._send_error)
        # and icx_call queries QueryBatch calls, lookups GetTxBatch and GetTxResultBatch calls,
        # balances GetBalanceBatch calls
        self._querier = api.query_submitter(self._query_error)
        self._results = api.result_submitter(self._lookup_error)
        self._receipts = api.result_submitter(self._lookup_error, with_tx=True)
        self._txs = api.tx_submitter(self._lookup_error)
        self._balances = api.balance_submitter(self._balance_error)
        # a served channel's name, and when the peer said it, by how it was asked for
        self._names: dict[str, tuple[str, float]] = {}

    async def _call(
        self, name: str, request: Any, channel: str | None, codes: Mapping[Any, int] = _CODES
    ) -> Any:
        """The reply of the peer's method `name`, or None for NOT_FOUND (after checking that
        `channel` is served; None for `channel`: the call asks about the channel itself, so
        NOT_FOUND means an unknown channel); any other failure as a JsonRpcError."""
        try:
            return await self._api.call_peer(getattr(self._api.stub, name), request)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        except RestError as exc:  # the proxy is busy or stopping
            raise _from_rest(exc) from None
        if code != grpc.StatusCode.NOT_FOUND or channel is None:
            raise self._refusal(code, details, codes)
        await self.chain_facts(channel)
        return None

    async def chain_facts(self, channel: str) -> ChainFacts:
        """The channel's name and last height; -32602 for a channel the peer does not serve."""
        reply = await self._call("GetStatus", pb.ChannelRequest(channel=channel), None)
        if channel in self._names or len(self._names) < MAX_NAMED_CHANNELS:
            self._names[channel] = (reply.channel, time.monotonic())
        return ChainFacts(reply.channel, reply.block_height, reply.nid)

    async def channel_name(self, channel: str) -> str:
        """The name of the channel `channel` asks for ("": the peer's default one), for its
        SCORE's address (which icx_call checks and receipts name): asked of the peer at most
        once in CHANNEL_NAME_TTL_S, not once a request (a proxy started by hand may outlive its
        peer's configuration, so a name is not kept for good); -32602 for a channel the peer does
        not serve."""
        known = self._names.get(channel)
        if known is not None and time.monotonic() - known[1] < CHANNEL_NAME_TTL_S:
            return known[0]
        return (await self.chain_facts(channel)).channel

    async def last_block(self, channel: str, kept_hash: str) -> tuple[bool, Block | None]:
        """(True, None) when the last final block is still the one with `kept_hash` (hex; the
        peer sends it only when it is another), else (False, the last block or None: none)."""
        request = pb.GetBlockRequest(channel=channel, height=-1, unless_hash=kept_hash)
        reply = await self._call("GetBlock", request, channel)
        if reply is not None and reply.unchanged and kept_hash:
            return True, None
        return False, _block_of(reply)

    async def block(self, channel: str, height: int = -1, block_hash: str = "") -> Block | None:
        """The final block with `block_hash`, else at `height`, else the last (None: none)."""
        request = pb.GetBlockRequest(channel=channel, height=height, block_hash=block_hash)
        block = _block_of(await self._call("GetBlock", request, channel))
        if block is None:
            return None
        if block_hash:  # the peer also knows blocks not final yet: only the final one counts
            final = await self.block(channel, height=block.height)
            return block if final is not None and final.hash == block.hash else None
        return block

    async def transaction(self, channel: str, tx_hash: str) -> FoundTx | NotKnown:
        """A transaction the peer holds, pooled or in a final block."""
        reply = await self._lookup(self._txs, channel, tx_hash)
        if isinstance(reply, NotKnown):
            return reply
        tx = _decoded(decode_tx, reply.tx)
        return FoundTx(tx, _place(reply.block_height, reply.block_hash, reply.tx_index))

    async def result(
        self, channel: str, tx_hash: str, *, with_tx: bool = False
    ) -> FoundResult | NotKnown:
        """A transaction's result and place (`with_tx`: and the transaction, once executed, in
        the same lookup), or NotKnown for a transaction the peer does not know."""
        reply = await self._lookup(self._receipts if with_tx else self._results, channel, tx_hash)
        if isinstance(reply, NotKnown):
            return reply
        tx = _decoded(decode_tx, reply.tx) if reply.tx else None
        if tx is not None and tx.hash.hex() != tx_hash:
            raise JsonRpcError(
                JsonRpcCode.INTERNAL_ERROR, "the peer sent another transaction than the one asked"
            )
        outcome = None
        if reply.executed:
            try:
                events = parse_events(reply.events_json)
            except EncodingError:
                raise JsonRpcError(
                    JsonRpcCode.INTERNAL_ERROR, "the peer sent malformed event logs"
                ) from None
            outcome = Outcome(
                reply.code, reply.message, reply.steps, reply.cumulative_steps, events
            )
        return FoundResult(
            outcome, _place(reply.block_height, reply.block_hash, reply.tx_index), tx
        )

    async def _lookup(
        self, lookups: BatchSubmitter[Found], channel: str, tx_hash: str
    ) -> Found | NotKnown:
        """The peer's answer to a lookup of `tx_hash` in `channel` (in a batch call), or NotKnown
        for a transaction the peer does not know."""
        try:
            with self._api.slots():
                return await lookups.submit(
                    channel, tx_hash, self._api.timeout, send_within=self._api.turn_wait
                )
        except _Unknown as unknown:  # the transaction, or the channel: -32602 for the channel
            if not unknown.served:
                await self.chain_facts(channel)
            return NotKnown.of(unknown.details)
        except RestError as exc:  # busy, stopping, or the peer gave no answer
            raise _from_rest(exc) from None

    async def send(self, channel: str, params_json: str) -> str:
        """Pool a client-signed transaction (its params as JSON text); its hash, 64 hex digits."""
        try:
            with self._api.slots(submissions=True):  # bounded as every call is: busy at once
                return await self._sender.submit(
                    channel, params_json, send_within=self._api.turn_wait
                )
        except RestError as exc:  # busy, stopping, or the peer gave no answer
            raise _from_rest(exc) from None

    async def _send_batch(self, channel: str, texts: list[str]) -> pb.CreateTxBatchReply:
        request = pb.IconTxBatchRequest(channel=channel, params_json=texts)
        return await self._api.submit_batch(
            "CreateIconTxBatch", request, self._api.batch_streams(icon=True)
        )

    def _send_error(self, code: grpc.StatusCode, details: str, alone: bool = False) -> JsonRpcError:
        """A transaction the peer refused (or a failed call) as its JSON-RPC error: an unknown
        channel and the peer's refusal of an argument in its words (-32602), a full pool -31001,
        anything else -32603."""
        return self._refusal(code, details, _SEND_CODES, alone)

    def _lookup_error(self, code: grpc.StatusCode, details: str, alone: bool = False) -> Exception:
        """A lookup of a transaction or its result the peer refused (`alone`: in its own entry),
        or a failed call: NOT_FOUND, an unknown transaction or channel, is told apart by
        `_lookup`; anything else as `_call`'s."""
        if code == grpc.StatusCode.NOT_FOUND:
            return _Unknown(served=alone, details=details)
        return self._refusal(code, details, _CODES, alone)

    def _balance_error(
        self, code: grpc.StatusCode, details: str, alone: bool = False
    ) -> JsonRpcError:
        """A balance ask the peer refused (or a failed call), as `_call`'s refusal of a call
        about the channel itself: NOT_FOUND, an unknown channel, is -32602."""
        return self._refusal(code, details, _CODES, alone)

    def _query_error(
        self, code: grpc.StatusCode, details: str, alone: bool = False
    ) -> JsonRpcError:
        """A query the peer refused (or a failed call) as its JSON-RPC error: an unknown channel
        -32602, a query the SCORE refused or failed -30032, anything else -32603."""
        return self._refusal(code, details, _QUERY_CODES, alone)

    def _refusal(
        self, code: grpc.StatusCode, details: str, codes: Mapping[Any, int], alone: bool = False
    ) -> JsonRpcError:
        if code == grpc.StatusCode.NOT_FOUND:
            return JsonRpcError(JsonRpcCode.INVALID_PARAMS, details)
        rest = status_error(code, details, self._api.peer_target, self._api.timeout, alone)
        return JsonRpcError(
            codes.get(code, JsonRpcCode.INTERNAL_ERROR), rest.message, _retry_data(rest)
        )

    async def score(self, channel: str) -> ScoreFacts:
        """The channel SCORE's v3 address and API description."""
        reply = await self._call("GetScoreStatus", pb.ChannelRequest(channel=channel), None)
        try:
            api = canonical.parse(reply.api_json or "[]")
        except EncodingError:
            api = None
        if not isinstance(api, list):
            raise JsonRpcError(JsonRpcCode.INTERNAL_ERROR, "the peer sent a malformed SCORE API")
        return ScoreFacts(str(reply.score_address), api)

    async def query(self, channel: str, params_json: str) -> str:
        """The channel SCORE's JSON answer to a read-only query."""
        try:
            with self._api.slots():
                return await self._querier.submit(
                    channel, params_json, self._api.timeout, send_within=self._api.turn_wait
                )
        except RestError as exc:  # busy, stopping, or the peer gave no answer
            raise _from_rest(exc) from None

    async def balance(self, channel: str, address: str) -> Coin:
        """An account's ICX and the total supply at the last executed block."""
        try:
            with self._api.slots():
                reply = await self._balances.submit(
                    channel, address, self._api.timeout, send_within=self._api.turn_wait
                )
        except RestError as exc:  # busy, stopping, or the peer gave no answer
            raise _from_rest(exc) from None
        try:
            return Coin(int(reply.balance), int(reply.total_supply), reply.height)
        except ValueError:
            raise JsonRpcError(
                JsonRpcCode.INTERNAL_ERROR, "the peer sent a malformed balance"
            ) from None


def _decoded(decode: Callable[[bytes], Reply], raw: bytes) -> Reply:
    """A reply's block or transaction, decoded; -32603 when the peer sent garbage."""
    try:
        return decode(raw)
    except RestError as exc:
        raise _from_rest(exc) from None


def _retry_data(error: RestError) -> dict[str, int] | None:
    """What a v3 error says of an overload v1 answers 503 with Retry-After: when to try again
    (its HTTP answer stays 400, the only one ICON's SDK reads errors from; jsonrpc.failure adds
    the header)."""
    return {"retryAfter": int(RETRY_AFTER_SECONDS)} if error.status == 503 else None


class BusyError(JsonRpcError):
    """-32603 for the proxy's own refusal for want of room (ProxyBusy): worth trying again."""


def _from_rest(error: RestError) -> JsonRpcError:
    """The proxy's own refusal (busy, stopping) or a call that got no answer, as -32603: an
    overload says when to try again, as v1's 503 does (it was a bare -32603, as if the peer
    had failed; review)."""
    kind = BusyError if isinstance(error, ProxyBusy) else JsonRpcError
    return kind(JsonRpcCode.INTERNAL_ERROR, error.message, _retry_data(error))
