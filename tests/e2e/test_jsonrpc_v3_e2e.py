"""ICON JSON-RPC v3 (read-only) against real processes: a RadioStation and two peers with their REST
proxies, in a channel running loopchain/default and one running test/raises. A v1 transaction is
read back through /api/v3 on the other peer, with raw JSON-RPC and with the unmodified iconsdk."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopchain.blockchain.coin import STEP_PRICE
from loopchain.types.crypto import recover_address
from loopchain.types.icon_address import channel_score_address
from loopchain.types.transaction import Transaction
from tools.procs import (
    REST_DIFF,
    LocalNetwork,
    Proc,
    free_port_pair,
    http,
    post_json,
    running_network,
    wait_until,
)

PEERS = 2
DEFAULT = "loopchain_default"
RAISING = "raising"
CHANNELS = {
    DEFAULT: {"score_package": "loopchain/default"},
    RAISING: {"score_package": "test/raises"},
}
RAISES_MESSAGE = "test/raises always fails"  # score/test/raises
NOT_YET = {-31002, -31003, -31004}  # pooled, not executed, not relayed to this peer yet


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path_factory.mktemp("jsonrpc_v3"))
    try:
        yield network.start_with_peers(PEERS, audience=True, channels=CHANNELS)
    finally:
        network.stop_and_check()


def _v3(net: LocalNetwork, port: int, channel: str = "") -> str:
    return f"{net.rest(port)}/api/v3" + (f"/{channel}" if channel else "")


def rpc(url: str, method: str, params: Any = None) -> tuple[int, dict[str, Any]]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1700000000, "method": method}
    if params is not None:
        request["params"] = params
    return http("POST", url, json.dumps(request).encode())


def ok(answer: tuple[int, dict[str, Any]]) -> Any:
    status, body = answer
    assert status == 200 and body["id"] == 1700000000 and "error" not in body, body
    return body["result"]


def assert_error(answer: tuple[int, Any], code: int, text: str = "") -> None:
    status, body = answer
    assert status == 400 and body["jsonrpc"] == "2.0" and body["error"]["code"] == code, body
    assert text in body["error"]["message"], body


def submit(net: LocalNetwork, port: int, data: Any, channel: str = "") -> str:
    """A v1 transaction {"data": data} (in `channel`, else the default), through `port`."""
    body = {"data": data, **({"channel": channel} if channel else {})}
    return str(post_json(f"{net.rest(port)}/api/v1/transactions", body)["tx_hash"])


def final_result(url: str, tx_hash: str) -> dict[str, Any]:
    """Poll icx_getTransactionResult until the result is final; only the not-yet codes may come
    before it."""

    def final() -> dict[str, Any] | None:
        status, body = rpc(url, "icx_getTransactionResult", {"txHash": "0x" + tx_hash})
        if status == 200:
            return dict(body["result"])
        assert body["error"]["code"] in NOT_YET, body
        return None

    return wait_until(final, 60, f"the result of {tx_hash} at {url}")


def check_block(block: dict[str, Any], validators: set[str]) -> None:
    assert {"version", "prev_block_hash", "merkle_tree_root_hash", "time_stamp"} <= set(block)
    assert {"confirmed_transaction_list", "block_hash", "height", "peer_id", "signature"} <= set(
        block
    )
    assert block["version"] == "0.1a" and block["peer_id"] in validators
    assert type(block["height"]) is int and type(block["time_stamp"]) is int
    signature = base64.b64decode(block["signature"], validate=True)
    assert recover_address(bytes.fromhex(block["block_hash"]), signature) == block["peer_id"]
    for item in block["confirmed_transaction_list"]:
        tx = Transaction.from_json({"body": item["body"], "signature": item["signature"]})
        assert item["txHash"] == "0x" + tx.hash_hex


def _validators(net: LocalNetwork) -> set[str]:
    return {net.status(port)["peer_id"] for port in net.peers}


def test_a_v1_transaction_reads_back_through_v3_on_another_peer(net: LocalNetwork) -> None:
    first, second = sorted(net.peers)
    tx_hash = submit(net, first, "hello v3")
    url = _v3(net, second)
    # 1. the result, once final: success, its place, the stand-ins of a v1 transaction
    result = final_result(url, tx_hash)
    assert result["status"] == "0x1" and "failure" not in result
    assert result["txHash"] == "0x" + tx_hash and result["to"] == channel_score_address(DEFAULT)
    assert result["stepUsed"] == result["stepPrice"] == result["cumulativeStepUsed"] == "0x0"
    assert result["eventLogs"] == [] and result["logsBloom"] == "0x" + "0" * 512
    height, index = int(result["blockHeight"], 16), int(result["txIndex"], 16)
    v1 = http("GET", f"{net.rest(second)}/api/v1/transactions?hash={tx_hash}")[1]
    assert v1["block_height"] == height
    # 2. the transaction: as the chain holds it, with its place
    tx = ok(rpc(url, "icx_getTransactionByHash", {"txHash": "0x" + tx_hash}))
    assert tx["body"]["data"] == {"data": "hello v3"}
    assert tx["body"]["channel"] == DEFAULT and tx["txHash"] == "0x" + tx_hash
    assert {k: tx[k] for k in ("blockHeight", "blockHash", "txIndex")} == {
        k: result[k] for k in ("blockHeight", "blockHash", "txIndex")
    }
    signed = Transaction.from_json({"body": tx["body"], "signature": tx["signature"]})
    assert signed.hash_hex == tx_hash and signed.verify_signature()
    # 3. its block, by height and by hash (with and without 0x), the same on both peers
    validators = _validators(net)
    block = ok(rpc(url, "icx_getBlockByHeight", {"height": hex(height)}))
    check_block(block, validators)
    assert block["height"] == height and "0x" + block["block_hash"] == result["blockHash"]
    assert block["confirmed_transaction_list"][index]["txHash"] == "0x" + tx_hash
    for text in (result["blockHash"], result["blockHash"][2:]):
        assert ok(rpc(url, "icx_getBlockByHash", {"hash": text})) == block
    final_result(_v3(net, first), tx_hash)  # final there too (the second may have seen it first)
    assert ok(rpc(_v3(net, first), "icx_getBlockByHeight", {"height": hex(height)})) == block
    v1_block = http("GET", f"{net.rest(second)}/api/v1/blocks?height={height}")[1]
    assert v1_block["block_hash"] == block["block_hash"]
    assert v1_block["block_data_json"]["merkle_tree_root_hash"] == block["merkle_tree_root_hash"]
    # 4. the last block, the genesis block, the network
    last = ok(rpc(url, "icx_getLastBlock"))
    check_block(last, validators)
    assert last["height"] >= height
    genesis = ok(rpc(url, "icx_getBlockByHeight", {"height": "0x0"}))
    check_block(genesis, validators)
    assert genesis["height"] == 0 and genesis["prev_block_hash"] == ""
    info = ok(rpc(url, "icx_getNetworkInfo"))
    assert {k: v for k, v in info.items() if k != "latest"} == {
        "platform": "loopchain",
        "nid": "0x3",
        "channel": DEFAULT,
        "earliest": "0x0",
        "stepPrice": hex(STEP_PRICE),
        "scoreAddress": channel_score_address(DEFAULT),
    }
    assert int(info["latest"], 16) >= last["height"]


def test_a_failed_transaction_has_status_0_and_the_v1_code(net: LocalNetwork) -> None:
    first, second = sorted(net.peers)
    tx_hash = submit(net, first, "fail, please", channel=RAISING)
    result = final_result(_v3(net, second, RAISING), tx_hash)
    assert result["status"] == "0x0" and result["to"] == channel_score_address(RAISING)
    assert result["failure"]["code"] == "0x2328"  # 9000: the SCORE raised
    assert RAISES_MESSAGE in result["failure"]["message"]
    for method in ("icx_getTransactionByHash", "icx_getTransactionResult"):
        answer = rpc(_v3(net, second), method, {"txHash": tx_hash})  # not in the default channel
        assert_error(answer, -31004, tx_hash)
    info = ok(rpc(_v3(net, second, RAISING), "icx_getNetworkInfo"))
    assert info["channel"] == RAISING


def test_every_deterministic_error_code_on_a_real_peer(net: LocalNetwork) -> None:
    port = sorted(net.peers)[1]
    url = _v3(net, port)
    assert_error(http("POST", url, b"{oops"), -32700, "parse error")
    assert_error(http("POST", url, b""), -32700, "empty")
    assert_error(http("POST", url, b"[]"), -32600, "batches")
    assert_error(http("POST", url, b'{"jsonrpc": "1.0", "id": 1, "method": "x"}'), -32600)
    assert_error(http("POST", url, b'{"jsonrpc": "2.0", "id": 1}'), -32600, "method")
    assert_error(http("POST", url, b'{"pad": "' + b"x" * 600_000 + b'"}'), -32600, "limit")
    assert_error(rpc(url, "icx_getBlock", {"height": "0x1"}), -32601, "0.1a")
    assert_error(rpc(url, "icx_noSuchThing"), -32601, "icx_noSuchThing")
    assert_error(rpc(f"{net.rest(port)}/api/v3d", "debug_getTrace", {}), -32601)
    assert_error(rpc(url, "icx_getBlockByHeight", {"height": "12"}), -32602, "height")
    assert_error(rpc(url, "icx_getBlockByHash", {"hash": "0x12"}), -32602, "not a hash")
    assert_error(rpc(url, "icx_getLastBlock", {"x": "1"}), -32602, "unknown param 'x'")
    assert_error(rpc(url, "icx_getTransactionResult", []), -32602, "params")
    assert_error(rpc(url + "/nochannel", "icx_getLastBlock"), -32602, "nochannel")
    unknown = "0x" + "ab" * 32
    for method in ("icx_getTransactionByHash", "icx_getTransactionResult"):
        assert_error(rpc(url, method, {"txHash": unknown}), -31004, unknown)
    assert_error(rpc(url, "icx_getBlockByHash", {"hash": unknown}), -31004, unknown[2:])
    far = hex(net.height(port) + 1_000_000)
    assert_error(rpc(url, "icx_getBlockByHeight", {"height": far}), -31004, "no block")


def test_a_proxy_whose_peer_is_down_answers_internal_error(tmp_path: Path) -> None:
    port = free_port_pair()  # nothing serves gRPC there
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"GRPC_TIMEOUT": 3.0}))
    proxy = Proc("proxy_alone", ["rest_proxy.py", "-p", str(port), "-o", str(conf)], tmp_path)
    proxy.start()
    url = f"http://127.0.0.1:{port + REST_DIFF}/api/v3"
    try:
        answer = wait_until(lambda: http("POST", url, b"{}"), 30, "the proxy to answer")
        assert_error(answer, -32600)
        for method in ("icx_getLastBlock", "icx_getNetworkInfo"):
            assert_error(rpc(url, method), -32603, f"peer at 127.0.0.1:{port} is unreachable")
        assert_error(rpc(url, "icx_getTransactionByHash", {"txHash": "ab" * 32}), -32603)
    finally:
        code = proxy.stop()
    assert code == 0
    proxy.assert_clean_log()


def test_a_transaction_waiting_for_a_block_is_pending(tmp_path: Path) -> None:
    """One block holds one transaction and a leader proposes at most every 30 s: of two
    transactions submitted together, one waits in the pool for 30 s, on any machine."""
    config = {"MAX_BLOCK_TX_NUM": 1, "INTERVAL_BLOCKGENERATION": 30.0}
    with running_network(tmp_path, 1, config) as network:
        port = next(iter(network.peers))
        replies = post_json(f"{network.rest(port)}/api/v1/transactions", [{"a": 1}, {"b": 2}])
        hashes = [reply["tx_hash"] for reply in replies]
        url = _v3(network, port)
        codes = []
        for tx_hash in hashes:
            for method in ("icx_getTransactionByHash", "icx_getTransactionResult"):
                status, body = rpc(url, method, {"txHash": tx_hash})
                codes.append(body["error"]["code"] if status == 400 else 0)
        assert codes.count(-31002) >= 2 and set(codes) <= {-31002, -31003, 0}, codes
        pending = [h for h, c in zip(hashes, codes[::2], strict=True) if c == -31002]
        answer = rpc(url, "icx_getTransactionResult", {"txHash": pending[0]})
        assert_error(answer, -31002, "in the pool")


def test_the_unmodified_iconsdk_reads_blocks_transactions_and_results(net: LocalNetwork) -> None:
    from iconsdk.exception import JSONRPCException
    from iconsdk.icon_service import IconService
    from iconsdk.providers.http_provider import HTTPProvider

    first, second = sorted(net.peers)
    good = submit(net, first, "hello sdk")
    bad = submit(net, first, "fail for the sdk", channel=RAISING)
    final_result(_v3(net, second), good)
    final_result(_v3(net, second, RAISING), bad)
    service = IconService(HTTPProvider(net.rest(second), 3, {"timeout": 10}))
    # 1. the result and the transaction, converted by the SDK's templates
    result = service.get_transaction_result("0x" + good)
    assert result["status"] == 1 and result["txHash"] == "0x" + good
    assert result["to"] == channel_score_address(DEFAULT) and result["stepUsed"] == 0
    assert result["logsBloom"] == bytes(256) and result["eventLogs"] == []
    height, index = result["blockHeight"], result["txIndex"]
    assert type(height) is int and type(index) is int
    tx = service.get_transaction("0x" + good)
    assert tx["txHash"] == "0x" + good and tx["body"]["data"] == {"data": "hello sdk"}
    assert (tx["blockHeight"], tx["txIndex"], tx["blockHash"]) == (
        height,
        index,
        result["blockHash"],
    )
    # 2. blocks: by height, by hash, the latest, the genesis
    block = service.get_block(height)
    assert block["height"] == height and block["block_hash"] == result["blockHash"][2:]
    assert block["confirmed_transaction_list"][index]["txHash"] == "0x" + good
    assert service.get_block(result["blockHash"]) == block
    latest = service.get_block("latest")
    assert latest["height"] >= height and latest["version"] == "0.1a"
    genesis = service.get_block(0)
    assert genesis["height"] == 0 and genesis["prev_block_hash"] == ""
    # 3. a failure, through a provider that names the channel in its URL
    channel = IconService(HTTPProvider(_v3(net, second, RAISING), {"timeout": 10}))
    failed = channel.get_transaction_result("0x" + bad)
    assert failed["status"] == 0 and failed["failure"]["code"] == 9000
    assert RAISES_MESSAGE in failed["failure"]["message"]
    # 4. errors reach the SDK as its JSONRPCException with the spec's codes
    with pytest.raises(JSONRPCException) as missing:
        service.get_transaction_result("0x" + "ab" * 32)
    assert missing.value.rpc_code == -31004
    with pytest.raises(JSONRPCException) as beyond:
        service.get_block(latest["height"] + 1_000_000)
    assert beyond.value.rpc_code == -31004
