"""JSON-RPC v3 pieces without sockets: the answer shapes, the params checks, the paths, ICON_NID."""

from __future__ import annotations

import base64
import re

import pytest

from loopchain.blockchain.coin import STEP_PRICE
from loopchain.configure import ConfigError, load_config
from loopchain.rest import icon_shapes
from loopchain.rest.icon_methods import fields, hash_param, height_param
from loopchain.rest.icon_shapes import Outcome, Place
from loopchain.rest.jsonrpc import is_jsonrpc_path
from loopchain.types.block import Block
from loopchain.types.crypto import Signer, recover_address
from loopchain.types.hashing import sha3_256
from loopchain.types.icon_address import channel_score_address
from loopchain.types.jsonrpc import JsonRpcError
from loopchain.types.transaction import Transaction

CHANNEL = "loopchain_default"
SIGNER = Signer.generate()


def _tx(data: object, timestamp: int = 1_700_000_000_000_000) -> Transaction:
    return Transaction.create_v1(CHANNEL, data, timestamp, SIGNER)


def _block(height: int, prev_hash: bytes, txs: list[Transaction]) -> Block:
    return Block.create(
        channel=CHANNEL,
        height=height,
        round_=0,
        prev_hash=prev_hash,
        prev_qc=None,
        transactions=txs,
        timestamp=1_700_000_000_000_000 + height,
        leader=SIGNER,
        next_leader=SIGNER.address,
        validators_hash=sha3_256(b"validators"),
    )


def test_a_block_in_the_0_1a_shape() -> None:
    genesis = _block(0, b"", [])
    txs = [_tx({"data": "a"}), _tx("b", 1_700_000_000_000_001)]
    block = _block(1, genesis.hash, txs)
    shaped = icon_shapes.block_json(block)
    assert shaped == {
        "version": "0.1a",
        "prev_block_hash": genesis.hash.hex(),
        "merkle_tree_root_hash": block.header.tx_root.hex(),
        "time_stamp": 1_700_000_000_000_001,
        "confirmed_transaction_list": [
            {**tx.to_json(), "txHash": "0x" + tx.hash_hex} for tx in txs
        ],
        "block_hash": block.hash.hex(),
        "height": 1,
        "peer_id": SIGNER.address,
        "signature": base64.b64encode(block.signature).decode(),
        "next_leader": SIGNER.address,
    }
    assert recover_address(block.hash, base64.b64decode(shaped["signature"])) == SIGNER.address
    assert icon_shapes.block_json(genesis)["prev_block_hash"] == ""
    assert icon_shapes.block_json(genesis)["confirmed_transaction_list"] == []


def test_a_v1_transaction_has_no_top_level_data_for_the_sdk_to_trip_on() -> None:
    """iconsdk's transaction template wants dataType whenever data is present."""
    tx = _tx({"data": "hello"})
    shaped = icon_shapes.transaction_by_hash_json(tx, Place(12, b"\xab" * 32, 3))
    assert "data" not in shaped and "dataType" not in shaped
    assert shaped == {
        "body": tx.body,
        "signature": tx.signature.hex(),
        "txHash": "0x" + tx.hash_hex,
        "txIndex": "0x3",
        "blockHeight": "0xc",
        "blockHash": "0x" + "ab" * 32,
    }
    assert Transaction.from_json({"body": shaped["body"], "signature": shaped["signature"]}) == tx


@pytest.mark.parametrize(
    ("outcome", "status", "failure"),
    [
        (Outcome(0, ""), "0x1", None),
        (Outcome(0, "fine"), "0x1", None),
        (Outcome(9000, "RuntimeError: x"), "0x0", {"code": "0x2328", "message": "RuntimeError: x"}),
        (Outcome(9000, ""), "0x0", {"code": "0x2328", "message": "the SCORE raised an error"}),
        (
            Outcome(9100, ""),
            "0x0",
            {"code": "0x238c", "message": "the SCORE process was unreachable"},
        ),
        (Outcome(7, ""), "0x0", {"code": "0x7", "message": "the SCORE returned code 7"}),
        (Outcome(2, "done twice"), "0x0", {"code": "0x2", "message": "done twice"}),
    ],
)
def test_results_map_loopchain_codes_to_status_and_failure(
    outcome: Outcome, status: str, failure: dict[str, str] | None
) -> None:
    tx = _tx("r")
    shaped = icon_shapes.result_json(tx, Place(5, b"\x01" * 32, 0), outcome)
    assert shaped["status"] == status and shaped.get("failure") == failure
    assert shaped["txHash"] == "0x" + tx.hash_hex and shaped["to"] == channel_score_address(CHANNEL)
    assert (shaped["blockHeight"], shaped["txIndex"]) == ("0x5", "0x0")
    assert shaped["logsBloom"] == "0x" + "00" * 256 and shaped["eventLogs"] == []


def test_network_info() -> None:
    assert icon_shapes.network_info_json("0x3", "c", 255) == {
        "platform": "loopchain",
        "nid": "0x3",
        "channel": "c",
        "earliest": "0x0",
        "latest": "0xff",
        "stepPrice": hex(STEP_PRICE),
        "scoreAddress": channel_score_address("c"),
    }
    assert icon_shapes.network_info_json("0x3", "c", -1)["latest"] == "-0x1"


def test_the_channel_score_address_is_a_stable_cx_address_per_channel() -> None:
    address = channel_score_address(CHANNEL)
    assert re.fullmatch(r"cx[0-9a-f]{40}", address)
    assert address == channel_score_address(CHANNEL)
    assert address != channel_score_address("kofia_1") and address != "cx" + "0" * 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0x" + "ab" * 32, "ab" * 32), ("AB" * 32, "ab" * 32), ("0x" + "Cd" * 32, "cd" * 32)],
)
def test_hashes_with_or_without_0x(text: str, expected: str) -> None:
    assert hash_param(text, "hash") == expected


@pytest.mark.parametrize("text", ["", "0x", "0X" + "ab" * 32, "ab" * 31, "ab" * 33, " " + "a" * 64])
def test_what_is_not_a_hash(text: str) -> None:
    with pytest.raises(JsonRpcError) as refused:
        hash_param(text, "txHash")
    assert refused.value.code == -32602 and "'txHash'" in refused.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0x0", 0), ("0x00", 0), ("0x1A", 26), ("0x7fffffffffffffff", 2**63 - 1)],
)
def test_heights(text: str, expected: int) -> None:
    assert height_param(text) == expected


@pytest.mark.parametrize("text", ["0", "26", "0x", "-0x1", "0x8000000000000000", "0x" + "1" * 17])
def test_what_is_not_a_height(text: str) -> None:
    with pytest.raises(JsonRpcError) as refused:
        height_param(text)
    assert refused.value.code == -32602


def test_fields_refuse_unknown_missing_and_non_strings() -> None:
    assert fields({"a": "1", "b": "2"}, ("b", "a")) == ["2", "1"]
    assert fields({}, ()) == []
    for params, text in (
        ({"a": "1", "c": "3"}, "unknown param 'c'"),
        ({}, "'a' is missing"),
        ({"a": 1}, "must be a string"),
    ):
        with pytest.raises(JsonRpcError, match=text):
            fields(params, ("a",))
    with pytest.raises(JsonRpcError, match="takes no params"):
        fields({"x": "1"}, ())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v3", True),
        ("/api/v3/", True),
        ("/api/v3/kofia", True),
        ("/api/v3d", True),
        ("/api/v3d/kofia", True),
        ("/api/v30", False),
        ("/api/v3x/a", False),
        ("/api/v1/transactions", False),
    ],
)
def test_jsonrpc_paths(path: str, expected: bool) -> None:
    assert is_jsonrpc_path(path) is expected


def test_icon_nid_defaults_to_0x3_and_takes_hex_as_icon_writes_it() -> None:
    assert load_config(environ={}).ICON_NID == "0x3"
    assert load_config(environ={"ICON_NID": "0x50"}).ICON_NID == "0x50"
    assert load_config(environ={}, overrides={"ICON_NID": "0xffffffff"}).ICON_NID == "0xffffffff"


@pytest.mark.parametrize("nid", ["3", "0x", "0x0", "0x03", "0X3", "0xA", "0x100000000", " 0x3"])
def test_icon_nid_refuses_other_spellings(nid: str) -> None:
    with pytest.raises(ConfigError, match="ICON_NID"):
        load_config(environ={}, overrides={"ICON_NID": nid})
