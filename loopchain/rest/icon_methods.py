"""The read-only ICON JSON-RPC v3 methods over what the chain holds (spec: icon-jsonrpc-v3.md).

Each method takes the channel named by the URL ("" for the peer's default) and the request's
`params` object, checks the params (-32602 naming what is wrong; a field it does not know is
refused too, so a misspelt one is never silently ignored) and answers in the spec's shapes
(loopchain/rest/icon_shapes.py). Not there yet: -31004 for what the peer does not hold, -31002
for a transaction still in the pool, -31003 for one in a block the SCORE has not run yet.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from loopchain.rest.icon_peer import PeerReader
from loopchain.rest.icon_shapes import (
    block_json,
    network_info_json,
    result_json,
    transaction_by_hash_json,
)
from loopchain.types.block import Block
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError

Method = Callable[[str, dict[str, Any]], Awaitable[Any]]  # (channel, params) -> result

_HASH = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_HEIGHT = re.compile(r"0x([0-9a-fA-F]{1,16})")
MAX_HEIGHT = 2**63 - 1  # a height the peer's int64 fields can carry

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


class IconMethods:
    """The v3 methods of one REST proxy, reading its peer through `reader`."""

    def __init__(self, reader: PeerReader, nid: str) -> None:
        self._reader = reader
        self._nid = nid

    def table(self) -> dict[str, Method]:
        """The methods by their JSON-RPC names."""
        return {
            "icx_getLastBlock": self.get_last_block,
            "icx_getBlockByHeight": self.get_block_by_height,
            "icx_getBlockByHash": self.get_block_by_hash,
            "icx_getTransactionByHash": self.get_transaction_by_hash,
            "icx_getTransactionResult": self.get_transaction_result,
            "icx_getNetworkInfo": self.get_network_info,
        }

    async def get_last_block(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        fields(params, ())
        return _block(await self._reader.block(channel), "the chain has no block yet")

    async def get_block_by_height(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("height",))
        height = height_param(text)
        block = await self._reader.block(channel, height=height)
        return _block(block, f"there is no block at height {height} ({text})")

    async def get_block_by_hash(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("hash",))
        block_hash = hash_param(text, "hash")
        block = await self._reader.block(channel, block_hash=block_hash)
        return _block(block, f"there is no final block with hash 0x{block_hash}")

    async def get_transaction_by_hash(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("txHash",))
        tx_hash = hash_param(text, "txHash")
        found = await self._reader.transaction(channel, tx_hash)
        if found is None:
            raise not_found(f"transaction 0x{tx_hash} is not known")
        if found.place is None:
            raise _pending(tx_hash)
        return transaction_by_hash_json(found.tx, found.place)

    async def get_transaction_result(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        (text,) = fields(params, ("txHash",))
        tx_hash = hash_param(text, "txHash")
        found = await self._reader.result(channel, tx_hash)
        if found is None:
            raise not_found(f"transaction 0x{tx_hash} is not known")
        if found.place is None:
            raise _pending(tx_hash)
        if found.outcome is None:
            raise JsonRpcError(
                JsonRpcCode.EXECUTING,
                f"transaction 0x{tx_hash} is in block {found.place.height}, "
                "which the SCORE has not executed yet",
            )
        located = await self._reader.transaction(channel, tx_hash)
        if located is None:  # it was just there: a peer whose store went away
            raise not_found(f"transaction 0x{tx_hash} is not known")
        return result_json(located.tx, found.place, found.outcome)

    async def get_network_info(self, channel: str, params: dict[str, Any]) -> dict[str, str]:
        fields(params, ())
        facts = await self._reader.chain_facts(channel)
        return network_info_json(self._nid, facts.channel, facts.height)


def _block(block: Block | None, missing: str) -> dict[str, Any]:
    if block is None:
        raise not_found(missing)
    return block_json(block)


def _pending(tx_hash: str) -> JsonRpcError:
    return JsonRpcError(
        JsonRpcCode.PENDING, f"transaction 0x{tx_hash} is in the pool, not in a block yet"
    )
