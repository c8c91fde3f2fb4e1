"""The REST codec: peer gRPC replies → the JSON shapes of the peer REST API v1."""

from __future__ import annotations

import base64
import json
from typing import Any

from loopchain.protos import loopchain_pb2 as pb
from loopchain.rest.errors import RestError
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.codes import ResponseCode
from loopchain.types.crypto import SignatureError
from loopchain.types.transaction import Transaction
from loopchain.types.validators import ValidatorSet

EMPTY_CHAIN: dict[str, Any] = {
    "response_code": 0,
    "block_hash": "",
    "block_data_json": {"height": -1},
}


def _bad_reply(what: str, exc: Exception) -> RestError:
    return RestError(ResponseCode.FAIL, f"the peer sent an undecodable {what}: {exc}", 502)


def decode_block(raw: bytes, tx_hashes: bytes = b"") -> Block:
    """Canonical block bytes from the peer as a Block (502 when the peer sent garbage). The peer
    checked them already: they are parsed without the canonical re-check, and with the hashes
    it sent, without hashing the transactions again."""
    try:
        return Block.decode_trusted(raw, tx_hashes)
    except (ValueError, TypeError, KeyError) as exc:  # EncodingError is a ValueError
        raise _bad_reply("block", exc) from None


def decode_tx(raw: bytes) -> Transaction:
    """Canonical transaction bytes from the peer as a Transaction (502 when malformed)."""
    try:
        return Transaction.decode(raw)
    except (ValueError, TypeError, KeyError) as exc:  # EncodingError is a ValueError
        raise _bad_reply("transaction", exc) from None


def validator_set_json(update: ValidatorSet) -> dict[str, Any]:
    """A validator set (the configuration a block records) as REST JSON."""
    settings: Any = {}
    if update.score_settings:
        try:
            settings = canonical.parse(update.score_settings)
        except EncodingError:  # shown as it is; the RadioStation signed it
            settings = update.score_settings
    return {
        "version": update.version,
        "validators": [
            {
                "peer_id": v.peer_id,
                "weight": v.weight,
                "group_id": v.group_id,
                "public_key": v.public_key.hex(),
            }
            for v in update.validators
        ],
        "groups": [{"group_id": g.group_id, "weight": g.weight} for g in update.groups],
        "auditors": list(update.auditors),
        "score_package": update.score_package,
        "score_settings": settings,
        "issuer": update.issuer,
    }


def block_data_json(block: Block) -> dict[str, Any]:
    """The `block_data_json` object of a block (with the configuration it records, if any: the
    genesis block records the channel's first)."""
    header = block.header
    extra = (
        {"validator_set": validator_set_json(block.validator_update)}
        if block.validator_update is not None
        else {}
    )
    return {
        **extra,
        "prev_block_hash": header.prev_hash.hex(),
        "merkle_tree_root_hash": header.tx_root.hex(),
        "time_stamp": header.timestamp,
        "height": header.height,
        "peer_id": header.leader,
        "round": header.round,
        "next_leader": header.next_leader,
        "block_hash": block.hash.hex(),
        "state_root": header.state_root.hex(),
        "tx_count": len(block.transactions),
    }


def tx_data_json(block: Block) -> list[dict[str, Any]]:
    """The `tx_data_json` list of a block: one summary per transaction."""
    return [
        {
            "tx_hash": tx.hash_hex,
            "timestamp": tx.timestamp,
            "data_string": json.dumps(tx.data, ensure_ascii=False),
            "peer_id": tx.sender,
        }
        for tx in block.transactions
    ]


def block_response(reply: pb.BlockReply, with_txs: bool) -> dict[str, Any]:
    """A GetBlock reply as REST JSON; an empty reply is the empty chain (height -1)."""
    if not reply.block:
        return dict(EMPTY_CHAIN)
    block = decode_block(reply.block, reply.tx_hashes)
    body: dict[str, Any] = {
        "response_code": 0,
        "block_hash": block.hash.hex(),
        "block_data_json": block_data_json(block),
    }
    if with_txs:
        body["tx_data_json"] = tx_data_json(block)
    return body


def tx_response(reply: pb.GetTxReply) -> dict[str, Any]:
    """A GetTx reply as REST JSON: the client's data, meta, signature and public key."""
    tx = decode_tx(reply.tx)
    try:
        public_key = tx.public_key()
    except SignatureError as exc:
        raise _bad_reply("transaction signature", exc) from None
    return {
        "response_code": 0,
        "data": tx.data,
        "meta": {
            "peer_id": reply.peer_id,
            "score_id": reply.score_id,
            "score_version": reply.score_version,
            "channel_name": reply.channel,
        },
        "more_info": "",
        "signature": base64.b64encode(tx.signature).decode("ascii"),
        "public_key": base64.b64encode(public_key).decode("ascii"),
        "block_height": reply.block_height,
    }


def tx_result_response(reply: pb.TxResultReply) -> dict[str, Any]:
    """A GetTxResult reply as REST JSON (`message` only when the peer gave one)."""
    response: dict[str, Any] = {"code": reply.code}
    if reply.message:
        response["message"] = reply.message
    return {"response_code": 0, "response": response}


def query_response(response_json: str) -> dict[str, Any]:
    """A SCORE's answer to a query as REST JSON; one that is not JSON is passed as a string."""
    try:
        response: Any = canonical.parse(response_json, floats=True) if response_json else None
    except EncodingError:  # not JSON, or beyond the limits (a lone surrogate): passed as text
        response = response_json
    return {"response_code": 0, "response": response}


def score_status_response(reply: pb.ScoreStatusReply) -> dict[str, Any]:
    """A GetScoreStatus reply as REST JSON."""
    body: dict[str, Any] = {
        "response_code": 0,
        "id": reply.id,
        "version": reply.version,
        "all_version": list(reply.all_version),
        "status": reply.status,
    }
    if reply.score_address:
        body["score_address"] = reply.score_address  # where JSON-RPC v3 reaches it
    if reply.message:
        body["message"] = reply.message
    return body
