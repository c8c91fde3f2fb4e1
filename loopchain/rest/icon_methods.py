"""The ICON JSON-RPC v3 methods (spec: icon-jsonrpc-v3.md).

Each method takes the request's Call (the channel named by the URL, "" for the peer's default, and
the wait asked for by an "Icon-Options: timeout=<ms>" header) and its `params` object, checks the
params (-32602 naming what is wrong; a field it does not know is refused too, so a misspelt one is
never silently ignored) and answers in the spec's shapes (loopchain/rest/icon_shapes.py): -31004
for what the peer does not hold, -31002 for a transaction still in the pool, -31003 for one in a
block the SCORE has not run yet, -31006 (data: the txHash) when a wait ends without a result.
A transaction is checked by the peer (types/icon_tx.py, peer/channel_service.py), which answers
-32602 with its reason, or -31001 when its pool is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from loopchain.blockchain.coin import CONTRACT_NOT_FOUND, TREASURY, steps_for
from loopchain.rest.handlers import LastBlocks
from loopchain.rest.icon_peer import BusyError, NotKnown, PeerReader
from loopchain.rest.icon_shapes import (
    block_json,
    network_info_json,
    result_json,
    transaction_by_hash_json,
)
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.icon_address import channel_score_address
from loopchain.types.icon_tx import (
    DATA_TYPES,
    KNOWN_FIELDS,
    InvalidTransaction,
    check_address,
    check_estimate_params,
)
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError

DEFAULT_WAIT_MS = 5_000  # icx_waitTransactionResult without an Icon-Options timeout
MAX_WAIT_MS = 60_000
_POLL_FIRST, _POLL_MAX = 0.02, 0.2  # seconds between looks at a result being waited for


@dataclass(frozen=True)
class Call:
    """One request's context: the channel its URL names ("" for the peer's default) and the
    wait its "Icon-Options: timeout=<ms>" header asks for (None: DEFAULT_WAIT_MS)."""

    channel: str
    wait_ms: int | None = None


Method = Callable[[Call, dict[str, Any]], Awaitable[Any]]  # (call, params) -> result

_HASH = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_HEIGHT = re.compile(r"0x([0-9a-fA-F]{1,16})")
MAX_HEIGHT = 2**63 - 1  # a height the peer's int64 fields can carry
ESTIMATE_FIELDS = KNOWN_FIELDS - {"stepLimit", "signature"}  # what debug_estimateStep takes

# Methods of the spec that this node does not serve (-32601 with the way round).
NOT_SERVED = {
    "icx_getBlock": "icx_getBlock (block version 0.3) is not served: use icx_getLastBlock, "
    "icx_getBlockByHeight or icx_getBlockByHash (block version 0.1a)",
}


def invalid(message: str) -> JsonRpcError:
    """A -32602 error."""
    return JsonRpcError(JsonRpcCode.INVALID_PARAMS, message)


def fields(params: dict[str, Any], required: tuple[str, ...]) -> list[str]:
    """The values of the `required` string fields, in order; -32602 for a missing field, a
    value that is not a string, or a field the method does not take."""
    unknown = sorted(set(params) - set(required))
    if unknown:
        takes = ", ".join(required) if required else "no params"
        raise invalid(f"unknown param {unknown[0]!r}: this method takes {takes}")
    values = []
    for name in required:
        if name not in params:
            raise invalid(f"param {name!r} is missing")
        value = params[name]
        if not isinstance(value, str):
            raise invalid(f"param {name!r} must be a string, got {type(value).__name__}")
        values.append(value)
    return values


def hash_param(value: str, name: str) -> str:
    """A 32-byte hash given as 64 hex digits, with or without 0x, as 64 lowercase digits."""
    match = _HASH.fullmatch(value)
    if match is None:
        raise invalid(f"param {name!r} {value[:80]!r} is not a hash: 0x and 64 hex digits")
    return match.group(1).lower()


def height_param(value: str) -> int:
    """A block height given as "0x" and hex digits."""
    match = _HEIGHT.fullmatch(value)
    height = int(match.group(1), 16) if match is not None else -1
    if not 0 <= height <= MAX_HEIGHT:
        raise invalid(f"param 'height' {value[:80]!r} is not a block height: 0x and hex digits")
    return height


def not_found(message: str) -> JsonRpcError:
    """A -31004 error."""
    return JsonRpcError(JsonRpcCode.NOT_FOUND, message)


def _not_known(tx_hash: str, unknown: NotKnown) -> JsonRpcError:
    """-31004 for a transaction the peer does not know, with its reason when it gave one."""
    why = f": {unknown.why}" if unknown.why else ""
    return not_found(f"transaction 0x{tx_hash} is not known{why}")


class IconMethods:
    """The v3 methods of one REST proxy, reading its peer through `reader`."""

    def __init__(self, reader: PeerReader, nid: str) -> None:
        self._reader = reader
        self._nid = nid
        self._last_blocks: LastBlocks[dict[str, Any]] = LastBlocks()  # icx_getLastBlock

    def table(self) -> dict[str, Method]:
        """The methods by their JSON-RPC names."""
        return {
            "icx_getLastBlock": self.get_last_block,
            "icx_getBlockByHeight": self.get_block_by_height,
            "icx_getBlockByHash": self.get_block_by_hash,
            "icx_getTransactionByHash": self.get_transaction_by_hash,
            "icx_getTransactionResult": self.get_transaction_result,
            "icx_getNetworkInfo": self.get_network_info,
            "icx_sendTransaction": self.send_transaction,
            "icx_sendTransactionAndWait": self.send_transaction_and_wait,
            "icx_waitTransactionResult": self.wait_transaction_result,
            "icx_getBalance": self.get_balance,
            "icx_getTotalSupply": self.get_total_supply,
            "icx_call": self.call,
            "icx_getScoreApi": self.get_score_api,
        }

    def debug_table(self) -> dict[str, Method]:
        """The methods of the debug namespace (/api/v3d)."""
        return {"debug_estimateStep": self.estimate_step}

    async def get_last_block(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        fields(params, ())
        named = self._last_blocks.hash_of(call.channel)
        unchanged, block = await self._reader.last_block(call.channel, named)
        kept = self._last_blocks.unchanged(call.channel, unchanged)
        if kept is not None:  # still the block answered before: its answer again
            return kept
        answer = self._block(block, "the chain has no block yet")
        if block is not None:
            self._last_blocks.keep(call.channel, named, block.hash.hex(), answer)
        return answer

    async def get_block_by_height(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("height",))
        height = height_param(text)
        block = await self._reader.block(call.channel, height=height)
        return self._block(block, f"there is no block at height {height} ({text})")

    async def get_block_by_hash(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("hash",))
        block_hash = hash_param(text, "hash")
        block = await self._reader.block(call.channel, block_hash=block_hash)
        return self._block(block, f"there is no final block with hash 0x{block_hash}")

    async def get_transaction_by_hash(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("txHash",))
        tx_hash = hash_param(text, "txHash")
        found = await self._reader.transaction(call.channel, tx_hash)
        if isinstance(found, NotKnown):
            raise _not_known(tx_hash, found)
        if found.place is None:
            raise _pending(tx_hash)
        return transaction_by_hash_json(found.tx, found.place)

    async def get_transaction_result(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("txHash",))
        return await self._result(call, hash_param(text, "txHash"))

    async def _result(self, call: Call, tx_hash: str) -> dict[str, Any]:
        # the result and, once executed, the transaction (its receipt names its `to`): one lookup
        found = await self._reader.result(call.channel, tx_hash, with_tx=True)
        if isinstance(found, NotKnown):
            raise _not_known(tx_hash, found)
        if found.place is None:
            raise _pending(tx_hash)
        if found.outcome is None:
            raise JsonRpcError(
                JsonRpcCode.EXECUTING,
                f"transaction 0x{tx_hash} is in block {found.place.height}, "
                "which the SCORE has not executed yet",
            )
        tx = found.tx
        if tx is None:  # a peer older than with_tx: the transaction in a lookup of its own
            located = await self._reader.transaction(call.channel, tx_hash)
            if isinstance(located, NotKnown):  # it was just there: a peer whose store went away
                raise _not_known(tx_hash, located)
            tx = located.tx
        score = ""
        if found.outcome.events:  # emitted by the channel's SCORE
            score = channel_score_address(await self._reader.channel_name(call.channel))
        return result_json(tx, found.place, found.outcome, score)

    async def wait_transaction_result(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("txHash",))
        return await self._wait(call, hash_param(text, "txHash"))

    async def _wait(self, call: Call, tx_hash: str) -> dict[str, Any]:
        """The result once there is one; -31006 when the wait ends first."""
        wait_ms = DEFAULT_WAIT_MS if call.wait_ms is None else call.wait_ms
        deadline = time.monotonic() + wait_ms / 1000
        pause = _POLL_FIRST
        while True:
            try:
                return await self._result(call, tx_hash)
            except JsonRpcError as exc:
                # the proxy's own refusal of a poll for want of room leaves the transaction as
                # it was: taken, so waited for (a client told to send it again was told it is
                # known: review); a peer's failure still ends the wait with its words
                busy = isinstance(exc, BusyError)
                if exc.code not in (JsonRpcCode.PENDING, JsonRpcCode.EXECUTING) and not busy:
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise JsonRpcError(
                        JsonRpcCode.TIMEOUT,
                        f"no result of transaction 0x{tx_hash} within {wait_ms} ms: {exc.message}",
                        "0x" + tx_hash,
                    ) from None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(pause, left)):
                    await self._reader.stopping.wait()
            if self._reader.stopping.is_set():
                # answered before the proxy goes (a wait of a minute held its stop until it was
                # killed, and its client got no answer: lifecycle review)
                raise JsonRpcError(
                    JsonRpcCode.TIMEOUT,
                    f"no result of transaction 0x{tx_hash} yet, and this REST proxy is stopping: "
                    "ask again (another peer, or this one once it is back)",
                    "0x" + tx_hash,
                )
            pause = min(pause * 2, _POLL_MAX)

    async def send_transaction(self, call: Call, params: dict[str, Any]) -> str:
        # the peer checks everything; the params go on as JSON text, their strings unchanged
        text = json.dumps(params, ensure_ascii=False, separators=(",", ":"))
        return "0x" + await self._reader.send(call.channel, text)

    async def send_transaction_and_wait(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        tx_hash = await self.send_transaction(call, params)
        return await self._wait(call, tx_hash[2:])

    async def get_balance(self, call: Call, params: dict[str, Any]) -> str:
        _no_height(params)
        (address,) = fields({k: v for k, v in params.items() if k != "height"}, ("address",))
        coin = await self._reader.balance(call.channel, address)
        return hex(coin.balance)

    async def get_total_supply(self, call: Call, params: dict[str, Any]) -> str:
        _no_height(params)
        fields({k: v for k, v in params.items() if k != "height"}, ())
        coin = await self._reader.balance(call.channel, TREASURY)
        return hex(coin.total_supply)

    async def call(self, call: Call, params: dict[str, Any]) -> Any:
        """icx_call: a read-only call of the channel's SCORE, answered with what it returns."""
        _no_height(params)
        allowed = {"to", "dataType", "data", "from"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise invalid(f"unknown param {unknown[0]!r}: icx_call takes to, dataType, data, from")
        if params.get("dataType") != "call":
            raise invalid("param 'dataType' must be \"call\"")
        data = params.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("method"), str):
            raise invalid("param 'data' must be an object with a 'method' string")
        if set(data) - {"method", "params"}:
            raise invalid("param 'data' takes only 'method' and 'params'")
        if "params" in data and not isinstance(data["params"], dict):
            raise invalid("param 'data.params' must be an object")
        sender = params.get("from")
        if sender is not None:
            check_param_address(sender, "from")
        to = params.get("to")
        if not isinstance(to, str):
            raise invalid("param 'to' is missing")
        name = await self._reader.channel_name(call.channel)
        if to != channel_score_address(name):
            raise JsonRpcError(
                JsonRpcCode.SCORE_ERROR - CONTRACT_NOT_FOUND,
                f"no SCORE at {to[:64]!r}: channel {name}'s SCORE is {channel_score_address(name)}",
            )
        answer = await self._reader.query(call.channel, json.dumps(data, ensure_ascii=False))
        try:
            return canonical.parse(answer, floats=True)
        except EncodingError:
            raise JsonRpcError(
                JsonRpcCode.INTERNAL_ERROR, "the SCORE answered something that is not JSON"
            ) from None

    async def get_score_api(self, call: Call, params: dict[str, Any]) -> list[Any]:
        """icx_getScoreApi: the API the channel SCORE's package states ([] when none)."""
        _no_height(params)
        (address,) = fields({k: v for k, v in params.items() if k != "height"}, ("address",))
        check_param_address(address, "address")
        score = await self._reader.score(call.channel)
        if address != score.address:
            raise JsonRpcError(
                JsonRpcCode.SCORE_ERROR - CONTRACT_NOT_FOUND,
                f"no SCORE at {address}: this channel's SCORE is {score.address}",
            )
        return score.api

    async def estimate_step(self, call: Call, params: dict[str, Any]) -> str:
        """debug_estimateStep: the steps the transaction (without stepLimit and signature) would
        use, by the coin's schedule."""
        for name in ("stepLimit", "signature"):
            if name in params:
                raise invalid(f"param {name!r} is not taken: the estimate is made without it")
        unknown = sorted(set(params) - ESTIMATE_FIELDS)
        if unknown:  # a transaction's fields only: the node would refuse one with others
            raise invalid(
                f"unknown param {unknown[0]!r}: a transaction has only "
                + ", ".join(sorted(ESTIMATE_FIELDS))
            )
        data_type, data = params.get("dataType"), params.get("data")
        if data_type not in (None, *DATA_TYPES) or (data_type is None) != (data is None):
            raise invalid(
                "params 'dataType' and 'data' must be given together, dataType one of "
                + ", ".join(DATA_TYPES)
            )
        try:  # each field given as a transaction's (review: {"from": [], "to": {}} had one)
            check_estimate_params(params)
        except InvalidTransaction as exc:
            raise invalid(f"param {exc.message}") from None
        try:
            return hex(steps_for(data_type, data))
        except EncodingError as exc:
            raise invalid(f"param 'data' refused: {exc}") from None

    def _block(self, block: Block | None, missing: str) -> dict[str, Any]:
        if block is None:
            raise not_found(missing)
        return block_json(block, self._nid)

    async def get_network_info(self, call: Call, params: dict[str, Any]) -> dict[str, str]:
        fields(params, ())
        facts = await self._reader.chain_facts(call.channel)
        # the channel's own (its genesis data's), as its peer says; a peer of an earlier
        # version says none: this proxy's ICON_NID
        return network_info_json(facts.nid or self._nid, facts.channel, facts.height)


def check_param_address(value: Any, name: str) -> str:
    """An "hx…" or "cx…" address param (-32602 otherwise)."""
    if not isinstance(value, str):
        raise invalid(f"param {name!r} must be a string")
    try:
        return check_address(value, name)
    except InvalidTransaction as exc:
        raise invalid(exc.message) from None


def _no_height(params: dict[str, Any]) -> None:
    """-32602 for a "height" param: balances are read at the last executed block only."""
    if "height" in params:
        raise invalid(
            "param 'height' is not served: balances and the supply are those of the last "
            "executed block"
        )


def _pending(tx_hash: str) -> JsonRpcError:
    return JsonRpcError(
        JsonRpcCode.PENDING, f"transaction 0x{tx_hash} is in the pool, not in a block yet"
    )
