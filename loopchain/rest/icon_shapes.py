"""The JSON shapes of ICON JSON-RPC v3 answers (spec: icon-jsonrpc-v3.md), made from domain values.

Blocks take ICON's "0.1a" shape, which the SDK's get_block reads: all nine keys, heights and
timestamps as JSON integers, hashes as 64 hex digits without 0x ("" for the genesis block's
previous hash). Transactions, results and network facts carry numbers as "0x…" strings.

A client-signed v3 transaction is answered as ICON answers it: its params as received, with its
base64 "signature" and "txHash"; its result carries the steps it used, the step price and its block's
steps up to it, and a failure's goloop code (coin.py) in hex.

What a peer-signed v1 transaction has no ICON counterpart for is stood in for, the same way in every
answer:
* its JSON is the one the chain stores, `{"body": {...}, "signature": "<hex>"}`, plus "txHash"
  ("0x…"): no top-level `data`, so the SDK's transaction template (which wants `dataType` whenever
  `data` is present) takes it as it is;
* its result's `to` is the channel's SCORE address (types/icon_address.py), the SCORE that ran it;
* steps are not metered in ICON's units: stepUsed, stepPrice and cumulativeStepUsed are "0x0",
  eventLogs is [], logsBloom is "0x" + 512 zeros;
* a failure's `code` is loopchain's result code in hex (9000 = 0x2328 the SCORE raised,
  9100 = 0x238c the SCORE process was unreachable, else the code the SCORE returned), so nothing
  of the v1 result is lost; goloop reads codes from 32 up as "the SCORE failed".
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from loopchain.blockchain.coin import STEP_PRICE
from loopchain.blockchain.score_base import EventLog
from loopchain.types.block import Block
from loopchain.types.icon_address import channel_score_address
from loopchain.types.transaction import V3, Transaction

BLOCK_VERSION = "0.1a"
PLATFORM = "loopchain"
ZERO = "0x0"
EMPTY_LOGS_BLOOM = "0x" + "0" * 512
SUCCESS, SCORE_ERROR, SCORE_UNREACHABLE = 0, 9000, 9100
_FAILURE_TEXT = {
    SCORE_ERROR: "the SCORE raised an error",
    SCORE_UNREACHABLE: "the SCORE process was unreachable",
}


@dataclass(frozen=True)
class Place:
    """Where a final block holds a transaction."""

    height: int
    block_hash: bytes
    tx_index: int


@dataclass(frozen=True)
class Outcome:
    """An executed transaction's result: code (0 success) and message, and for a v3 transaction
    the steps it used and its block's steps up to and including it."""

    code: int
    message: str
    steps: int = 0
    cumulative_steps: int = 0
    events: tuple[EventLog, ...] = ()


def hex_int(value: int) -> str:
    """An integer as ICON writes numbers: "0x1a", "0x0"."""
    return hex(value)


def tx_hash_hex(tx_hash: bytes) -> str:
    """A transaction hash as ICON writes it: "0x" + 64 hex digits."""
    return "0x" + tx_hash.hex()


def transaction_json(tx: Transaction) -> dict[str, Any]:
    """A transaction of a block with its "txHash": a v3 one as its sender sent it, a v1 one as
    the chain holds it."""
    if tx.version == V3:
        signature = base64.b64encode(tx.signature).decode("ascii")
        return {**tx.body, "signature": signature, "txHash": tx_hash_hex(tx.hash)}
    return {**tx.to_json(), "txHash": tx_hash_hex(tx.hash)}


def genesis_list(block: Block, nid: str) -> list[dict[str, Any]]:
    """The genesis block's list as ICON shows it: one item with the accounts it funded, its
    message and the network id: the one its genesis states, else `nid` ([] when the channel
    funds no account)."""
    update = block.validator_update
    genesis = update.genesis_data() if block.height == 0 and update is not None else None
    if genesis is None:
        return []
    stated = hex(genesis.nid) if genesis.nid is not None else nid
    return [{**genesis.to_json(), "message": genesis.message, "nid": stated}]


def block_json(block: Block, nid: str = "") -> dict[str, Any]:
    """A block in the "0.1a" shape (all nine keys, and next_leader); the genesis block lists its
    accounts (`nid`: the network's, which that item names)."""
    header = block.header
    listed = (
        [transaction_json(tx) for tx in block.transactions]
        if block.height
        else genesis_list(block, nid)
    )
    return {
        "version": BLOCK_VERSION,
        "prev_block_hash": header.prev_hash.hex(),
        "merkle_tree_root_hash": header.tx_root.hex(),
        "time_stamp": header.timestamp,
        "confirmed_transaction_list": listed,
        "block_hash": block.hash.hex(),
        "height": header.height,
        "peer_id": header.leader,
        "signature": base64.b64encode(block.signature).decode("ascii"),
        "next_leader": header.next_leader,
    }


def _place_json(place: Place) -> dict[str, str]:
    return {
        "txIndex": hex_int(place.tx_index),
        "blockHeight": hex_int(place.height),
        "blockHash": "0x" + place.block_hash.hex(),
    }


def transaction_by_hash_json(tx: Transaction, place: Place) -> dict[str, Any]:
    """The answer of icx_getTransactionByHash: the transaction, its hash and its place."""
    return {**transaction_json(tx), **_place_json(place)}


def result_json(
    tx: Transaction, place: Place, outcome: Outcome, score_address: str = ""
) -> dict[str, Any]:
    """The answer of icx_getTransactionResult for an executed transaction (`score_address`: the
    channel SCORE's, which emitted its events)."""
    icon = tx.version == V3
    body: dict[str, Any] = {
        "txHash": tx_hash_hex(tx.hash),
        **_place_json(place),
        "to": tx.body["to"] if icon else channel_score_address(tx.channel),
        "stepUsed": hex_int(outcome.steps),
        "stepPrice": hex_int(STEP_PRICE) if icon else ZERO,
        "cumulativeStepUsed": hex_int(outcome.cumulative_steps),
        "eventLogs": [
            {"scoreAddress": score_address, "indexed": list(e.indexed), "data": list(e.data)}
            for e in outcome.events
        ],
        "logsBloom": EMPTY_LOGS_BLOOM,
        "status": "0x1" if outcome.code == SUCCESS else "0x0",
    }
    if outcome.code != SUCCESS:
        text = outcome.message or _FAILURE_TEXT.get(
            outcome.code, f"the SCORE returned code {outcome.code}"
        )
        body["failure"] = {"code": hex_int(outcome.code), "message": text}
    return body


def network_info_json(nid: str, channel: str, height: int) -> dict[str, str]:
    """The answer of icx_getNetworkInfo ("latest" is "-0x1" before the genesis block), with the
    channel SCORE's address beside ICON's keys."""
    return {
        "platform": PLATFORM,
        "nid": nid,
        "channel": channel,
        "earliest": ZERO,
        "latest": hex_int(height),
        "stepPrice": hex_int(STEP_PRICE),
        "scoreAddress": channel_score_address(channel),  # the channel's SCORE (loopchain's own)
    }
