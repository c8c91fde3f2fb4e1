"""ICON JSON-RPC v3 (read-only) of the real rest_proxy.py process against a PeerService on 127.0.0.1
(tests/integration/_fake_peer.py): the envelope, every method's shape, every error code."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio

from loopchain.blockchain.coin import STEP_DEFAULT, STEP_INPUT_PER_BYTE, STEP_PRICE
from loopchain.types.crypto import Signer, recover_address
from loopchain.types.icon_address import channel_score_address
from loopchain.types.icon_tx import make_params, sign_params
from loopchain.types.transaction import Transaction
from tests.integration._fake_peer import DEFAULT_CHANNEL, FakePeer, start_fake_peer
from tests.integration._proxy import ProxyProcess, proxy_in_front_of
from tools.procs import free_port_pair, wait_until_async

GRPC_TIMEOUT = 3.0
MAX_BODY = 16 * 1024
OTHER_CHANNEL = "kofia_1"
EMPTY_CHANNEL = "empty_channel"
NID = "0x7"  # not the default: the configured value must reach the answer
BLOCK_KEYS = {
    "version",
    "prev_block_hash",
    "merkle_tree_root_hash",
    "time_stamp",
    "confirmed_transaction_list",
    "block_hash",
    "height",
    "peer_id",
    "signature",
    "next_leader",
}
RESULT_KEYS = {
    "txHash",
    "txIndex",
    "blockHeight",
    "blockHash",
    "to",
    "stepUsed",
    "stepPrice",
    "cumulativeStepUsed",
    "eventLogs",
    "logsBloom",
    "status",
}

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def network(
    session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[FakePeer, ProxyProcess]]:
    fake = FakePeer(channels=(DEFAULT_CHANNEL, OTHER_CHANNEL, EMPTY_CHANNEL))
    conf = {"GRPC_TIMEOUT": GRPC_TIMEOUT, "REST_MAX_BODY_BYTES": MAX_BODY, "ICON_NID": NID}
    async with proxy_in_front_of(fake, tmp_path_factory.mktemp("proxy"), conf, session) as proxy:
        yield fake, proxy


@pytest_asyncio.fixture(loop_scope="module")
async def peer(network: tuple[FakePeer, ProxyProcess]) -> AsyncIterator[FakePeer]:
    fake = network[0]
    yield fake
    fake.clear_failures()
    fake.score = True
    for chain in fake.chains.values():
        chain.executed_height = None


@pytest.fixture
def v3(network: tuple[FakePeer, ProxyProcess]) -> str:
    return network[1].base + "/api/v3"


async def post(
    session: aiohttp.ClientSession, url: str, raw: bytes, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=raw, **kwargs) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def rpc(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    params: Any = None,
    request_id: Any = 1,
) -> tuple[int, dict[str, Any]]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        request["params"] = params
    return await post(session, url, json.dumps(request).encode())


def result(answer: tuple[int, dict[str, Any]], request_id: Any = 1) -> Any:
    status, body = answer
    assert status == 200, body
    assert body == {"jsonrpc": "2.0", "id": request_id, "result": body["result"]}
    return body["result"]


def assert_error(
    answer: tuple[int, dict[str, Any]], code: int, text: str, request_id: Any = 1
) -> None:
    status, body = answer
    assert status == 400, body
    assert set(body) == {"jsonrpc", "id", "error"} and body["jsonrpc"] == "2.0", body
    assert body["id"] == request_id, body
    assert body["error"]["code"] == code, body
    assert text in body["error"]["message"], body


async def submit(session: aiohttp.ClientSession, base: str, data: Any, channel: str = "") -> str:
    payload = {"data": data, **({"channel": channel} if channel else {})}
    async with session.post(base + "/api/v1/transactions", json=payload) as resp:
        assert resp.status == 200
        return str((await resp.json())["tx_hash"])


def base_of(v3: str) -> str:
    return v3.removesuffix("/api/v3")


# ---------------------------------------------------------------- the envelope


async def test_every_path_serves_and_id_is_echoed_as_given(session, v3, peer):
    for url in (v3, v3 + "/", f"{v3}/{DEFAULT_CHANNEL}"):
        info = result(await rpc(session, url, "icx_getNetworkInfo"))
        assert info["channel"] == DEFAULT_CHANNEL
    for request_id in (0, 1700000000, "abc", None, 2.5, -1):
        answer = await rpc(session, v3, "icx_getNetworkInfo", request_id=request_id)
        result(answer, request_id)
    raw = b'{"jsonrpc": "2.0", "method": "icx_getNetworkInfo"}'  # no id: answered with null
    result(await post(session, v3, raw), None)
    # params may be absent, null or {}; no Content-Type is needed, any is taken
    for params in ({}, None):
        result(await rpc(session, v3, "icx_getNetworkInfo", params))
    raw = b'{"jsonrpc":"2.0","id":1,"method":"icx_getNetworkInfo","params":null}'
    result(await post(session, v3, raw, headers={"Content-Type": "text/plain"}))


async def test_a_request_without_content_type_is_served(v3, peer):
    host, port = v3.removeprefix("http://").split("/")[0].split(":")
    body = b'{"jsonrpc":"2.0","id":9,"method":"icx_getNetworkInfo"}'
    head = f"POST /api/v3 HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 200"), answer
    reply = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert reply["id"] == 9 and reply["result"]["platform"] == "loopchain"


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"{not json", "not JSON"),
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\xff\xfe{}", "not JSON"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"a": NaN}}', "not JSON"),
        (b"[" * 100 + b"]" * 100, "levels of nesting"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"a": "\\ud800"}}', "Unicode"),
    ],
)
async def test_what_is_not_json_is_a_parse_error(session, v3, peer, raw, text):
    assert_error(await post(session, v3, raw), -32700, text, None)


@pytest.mark.parametrize(
    ("raw", "text", "request_id"),
    [
        (b"[]", "batches are not served", None),
        (b'[{"jsonrpc":"2.0","id":1,"method":"icx_getLastBlock"}]', "batches", None),
        (b'"icx_getLastBlock"', "must be a JSON object", None),
        (b"42", "must be a JSON object", None),
        (b"null", "must be a JSON object", None),
        (b'{"id": 3, "method": "icx_getLastBlock"}', '"jsonrpc": "2.0"', 3),
        (b'{"jsonrpc": "1.0", "id": 3, "method": "icx_getLastBlock"}', '"jsonrpc": "2.0"', 3),
        (b'{"jsonrpc": 2.0, "id": 3, "method": "icx_getLastBlock"}', '"jsonrpc": "2.0"', 3),
        (b'{"jsonrpc": "2.0", "id": 3}', "must name a method", 3),
        (b'{"jsonrpc": "2.0", "id": 3, "method": ""}', "must name a method", 3),
        (b'{"jsonrpc": "2.0", "id": 3, "method": ["icx_getLastBlock"]}', "name a method", 3),
        (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "icx_getLastBlock"}', "id must", None),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "icx_getLastBlock"}', "id must", None),
        (b'{"jsonrpc": "2.0", "id": true, "method": "icx_getLastBlock"}', "id must", None),
    ],
)
async def test_what_is_not_a_request_is_an_invalid_request(
    session, v3, peer, raw, text, request_id
):
    assert_error(await post(session, v3, raw), -32600, text, request_id)


async def test_a_body_over_the_limit_is_refused_whole_or_chunked(session, v3, peer):
    request = {"jsonrpc": "2.0", "id": 5, "method": "icx_getLastBlock", "pad": "x" * MAX_BODY}
    answer = await post(session, v3, json.dumps(request).encode())
    assert_error(answer, -32600, f"limit of {MAX_BODY} bytes", None)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc": "2.0", "id": 5, "method": "icx_getLastBlock", "pad": "'
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    async with session.post(v3, data=chunks()) as resp:
        assert resp.status == 400
        assert_error((resp.status, await resp.json()), -32600, f"{MAX_BODY} bytes", None)
    result(await rpc(session, v3, "icx_getNetworkInfo"))  # and the proxy goes on


async def test_unknown_methods_and_the_debug_namespace(session, v3, peer):
    assert_error(await rpc(session, v3, "icx_noSuchMethod"), -32601, "'icx_noSuchMethod'")
    assert_error(await rpc(session, v3, "icx_getBlock", {"height": "0x0"}), -32601, "0.1a")
    debug = v3 + "d"
    for url in (debug, debug + "/", f"{debug}/{DEFAULT_CHANNEL}"):
        for method in ("debug_getTrace", "icx_getLastBlock"):
            assert_error(await rpc(session, url, method, {}), -32601, method)
        assert result(await rpc(session, url, "debug_estimateStep", {})) == hex(STEP_DEFAULT)
    message = {"dataType": "message", "data": "0x6869"}  # 8 bytes of JSON: "0x6869"
    estimate = result(await rpc(session, debug, "debug_estimateStep", message))
    assert estimate == hex(STEP_DEFAULT + 8 * STEP_INPUT_PER_BYTE)
    for bad, words in (
        ({"stepLimit": "0x1"}, "stepLimit"),
        ({"dataType": "message"}, "together"),
        ({"dataType": "nonsense", "data": "x"}, "together"),
        ({"foo": 1}, "unknown param 'foo'"),  # no transaction has it: the node refuses one
        # each field given is checked as a transaction's (review: these had an estimate)
        ({"version": "0x3", "from": [], "to": {}}, "param 'from' must be a string"),
        ({"to": "cx" + "1" * 39}, "param 'to' must be 'hx' or 'cx'"),
        ({"version": "0x2"}, "param 'version' must be '0x3'"),
        ({"nid": "3"}, "param 'nid' must be '0x'"),
        ({"dataType": "call", "data": "x"}, "must be an object"),
    ):
        assert_error(await rpc(session, debug, "debug_estimateStep", bad), -32602, words)
    sdk = {"version": "0x3", "from": "hx" + "a" * 40, "to": "hx" + "b" * 40, "nid": "0x3"}
    assert result(await rpc(session, debug, "debug_estimateStep", sdk)) == hex(STEP_DEFAULT)


async def test_a_cross_site_request_is_answered(session, v3, peer):
    """Reads (and, later, client-signed transactions) are nothing a page elsewhere could make
    this peer sign: the v1 cross-site refusal does not apply."""
    raw = b'{"jsonrpc":"2.0","id":1,"method":"icx_getNetworkInfo"}'
    result(await post(session, v3, raw, headers={"Origin": "http://elsewhere.example"}))


# ---------------------------------------------------------------- params and channels


@pytest.mark.parametrize(
    ("method", "params", "text"),
    [
        ("icx_getLastBlock", [], "params must be a JSON object"),
        ("icx_getLastBlock", "0x1", "params must be a JSON object"),
        ("icx_getLastBlock", {"height": "0x1"}, "unknown param 'height'"),
        ("icx_getNetworkInfo", {"x": 1}, "unknown param 'x'"),
        ("icx_getBlockByHeight", {}, "'height' is missing"),
        ("icx_getBlockByHeight", {"height": 1}, "must be a string"),
        ("icx_getBlockByHeight", {"height": "1"}, "not a block height"),
        ("icx_getBlockByHeight", {"height": "0x"}, "not a block height"),
        ("icx_getBlockByHeight", {"height": "-0x1"}, "not a block height"),
        ("icx_getBlockByHeight", {"height": "0xg"}, "not a block height"),
        ("icx_getBlockByHeight", {"height": "0x8000000000000000"}, "not a block height"),
        ("icx_getBlockByHeight", {"height": "0x1", "hash": "0x"}, "unknown param 'hash'"),
        ("icx_getBlockByHash", {}, "'hash' is missing"),
        ("icx_getBlockByHash", {"hash": "0x1234"}, "not a hash"),
        ("icx_getBlockByHash", {"hash": "0x" + "g" * 64}, "not a hash"),
        ("icx_getBlockByHash", {"hash": None}, "must be a string"),
        ("icx_getTransactionByHash", {}, "'txHash' is missing"),
        ("icx_getTransactionByHash", {"tx_hash": "0x" + "1" * 64}, "unknown param 'tx_hash'"),
        ("icx_getTransactionByHash", {"txHash": "0x" + "1" * 63}, "not a hash"),
        ("icx_getTransactionResult", {"txHash": "1" * 65}, "not a hash"),
        ("icx_getTransactionResult", {"txHash": 12}, "must be a string"),
    ],
)
async def test_bad_params_are_invalid_params(session, v3, peer, method, params, text):
    assert_error(await rpc(session, v3, method, params), -32602, text)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("icx_getLastBlock", None),
        ("icx_getBlockByHeight", {"height": "0x0"}),
        ("icx_getBlockByHash", {"hash": "ab" * 32}),
        ("icx_getTransactionByHash", {"txHash": "0x" + "ab" * 32}),
        ("icx_getTransactionResult", {"txHash": "0x" + "ab" * 32}),
        ("icx_getNetworkInfo", None),
    ],
)
async def test_an_unknown_channel_is_invalid_params_naming_it(session, v3, peer, method, params):
    assert_error(await rpc(session, v3 + "/nochannel", method, params), -32602, "'nochannel'")
    # a name no channel can have is refused before the peer is asked
    assert_error(await rpc(session, v3 + "/a%01b", method, params), -32602, "not a channel name")


# ---------------------------------------------------------------- blocks


def check_block(block: dict[str, Any], leader: str) -> None:
    """The "0.1a" shape, and every value true to itself."""
    assert set(block) == BLOCK_KEYS
    assert block["version"] == "0.1a" and block["peer_id"] == leader
    assert type(block["height"]) is int and type(block["time_stamp"]) is int
    for key in ("block_hash", "merkle_tree_root_hash"):
        assert len(bytes.fromhex(block[key])) == 32, key
    if block["height"] == 0:
        assert block["prev_block_hash"] == ""
    else:
        assert len(bytes.fromhex(block["prev_block_hash"])) == 32
    signature = base64.b64decode(block["signature"], validate=True)
    assert recover_address(bytes.fromhex(block["block_hash"]), signature) == leader
    for item in block["confirmed_transaction_list"]:
        tx = Transaction.from_json({k: v for k, v in item.items() if k != "txHash"})
        assert item["txHash"] == "0x" + tx.hash_hex


async def test_the_last_block_of_an_empty_chain_is_not_found(session, v3, peer):
    answer = await rpc(session, f"{v3}/{EMPTY_CHANNEL}", "icx_getLastBlock")
    assert_error(answer, -31004, "no block yet")
    info = result(await rpc(session, f"{v3}/{EMPTY_CHANNEL}", "icx_getNetworkInfo"))
    assert info["latest"] == "-0x1" and info["earliest"] == "0x0"


async def test_blocks_by_last_height_and_hash_in_the_0_1a_shape(session, v3, peer):
    peer.make_block()  # whatever other tests left in the pool
    hashes = [await submit(session, base_of(v3), f"block tx {i}") for i in range(3)]
    block = peer.make_block()
    last = result(await rpc(session, v3, "icx_getLastBlock"))
    check_block(last, peer.signer.address)
    assert last["height"] == block.height and last["block_hash"] == block.hash.hex()
    assert last["time_stamp"] == block.header.timestamp
    assert last["merkle_tree_root_hash"] == block.header.tx_root.hex()
    assert last["prev_block_hash"] == block.header.prev_hash.hex()
    assert last["next_leader"] == block.header.next_leader
    listed = last["confirmed_transaction_list"]
    assert [item["txHash"] for item in listed] == ["0x" + h for h in hashes]
    assert listed[1]["body"]["data"] == {"data": "block tx 1"}
    by_height = await rpc(session, v3, "icx_getBlockByHeight", {"height": hex(block.height)})
    assert result(by_height) == last
    for text in ("0x" + block.hash.hex(), block.hash.hex(), "0x" + block.hash.hex().upper()):
        assert result(await rpc(session, v3, "icx_getBlockByHash", {"hash": text})) == last
    # a height with leading zeros or capitals is the same height
    padded = "0x" + hex(block.height)[2:].upper().rjust(4, "0")
    assert result(await rpc(session, v3, "icx_getBlockByHeight", {"height": padded})) == last


async def test_the_genesis_block_has_an_empty_previous_hash(session, v3, peer):
    if not peer.chains[DEFAULT_CHANNEL].blocks:
        peer.make_block()
    genesis = result(await rpc(session, v3, "icx_getBlockByHeight", {"height": "0x0"}))
    check_block(genesis, peer.signer.address)
    assert genesis["height"] == 0 and genesis["prev_block_hash"] == ""


async def test_blocks_that_are_not_there_are_not_found(session, v3, peer):
    tip = len(peer.chains[DEFAULT_CHANNEL].blocks)
    answer = await rpc(session, v3, "icx_getBlockByHeight", {"height": hex(tip + 5)})
    assert_error(answer, -31004, f"no block at height {tip + 5}")
    answer = await rpc(session, v3, "icx_getBlockByHash", {"hash": "0x" + "cd" * 32})
    assert_error(answer, -31004, "cd" * 32)
    # a block of another channel is not in this one
    other = peer.make_block(OTHER_CHANNEL)
    answer = await rpc(session, v3, "icx_getBlockByHash", {"hash": other.hash.hex()})
    assert_error(answer, -31004, other.hash.hex())
    found = await rpc(
        session, f"{v3}/{OTHER_CHANNEL}", "icx_getBlockByHash", {"hash": other.hash.hex()}
    )
    assert result(found)["block_hash"] == other.hash.hex()


# ---------------------------------------------------------------- transactions and results


async def test_a_transaction_pending_then_in_a_block(session, v3, peer):
    base = base_of(v3)
    peer.make_block()  # whatever other tests left in the pool
    first = await submit(session, base, {"n": 1})
    tx_hash = await submit(session, base, {"n": 2, "text": "two"})
    for method in ("icx_getTransactionByHash", "icx_getTransactionResult"):
        answer = await rpc(session, v3, method, {"txHash": "0x" + tx_hash})
        assert_error(answer, -31002, "in the pool")
    block = peer.make_block()
    assert [tx.hash_hex for tx in block.transactions] == [first, tx_hash]
    for text in ("0x" + tx_hash, tx_hash, "0x" + tx_hash.upper()):
        found = result(await rpc(session, v3, "icx_getTransactionByHash", {"txHash": text}))
        assert found == {
            **block.transactions[1].to_json(),
            "txHash": "0x" + tx_hash,
            "txIndex": "0x1",
            "blockHeight": hex(block.height),
            "blockHash": "0x" + block.hash.hex(),
        }
    assert found["body"]["data"] == {"data": {"n": 2, "text": "two"}}


async def test_results_success_failure_and_not_executed(session, v3, peer):
    base = base_of(v3)
    chain = peer.chains[DEFAULT_CHANNEL]
    peer.make_block()  # whatever other tests left in the pool
    good, raised, unreachable, custom = [await submit(session, base, i) for i in range(4)]
    chain.results[raised] = (9000, "RuntimeError: boom")
    chain.results[unreachable] = (9100, "")
    chain.results[custom] = (-5, "the SCORE said no")
    block = peer.make_block()
    chain.executed_height = block.height - 1
    answer = await rpc(session, v3, "icx_getTransactionResult", {"txHash": "0x" + good})
    assert_error(answer, -31003, f"in block {block.height}")
    chain.executed_height = None
    place = {"blockHeight": hex(block.height), "blockHash": "0x" + block.hash.hex()}
    answers = {}
    for index, tx_hash in enumerate((good, raised, unreachable, custom)):
        found = result(await rpc(session, v3, "icx_getTransactionResult", {"txHash": tx_hash}))
        assert {k: found[k] for k in place} == place
        assert found["txHash"] == "0x" + tx_hash and found["txIndex"] == hex(index)
        assert found["to"] == channel_score_address(DEFAULT_CHANNEL)
        assert found["stepUsed"] == found["stepPrice"] == found["cumulativeStepUsed"] == "0x0"
        assert found["eventLogs"] == [] and found["logsBloom"] == "0x" + "0" * 512
        answers[tx_hash] = found
    assert set(answers[good]) == RESULT_KEYS and answers[good]["status"] == "0x1"
    failures = {
        raised: {"code": "0x2328", "message": "RuntimeError: boom"},
        unreachable: {"code": "0x238c", "message": "the SCORE process was unreachable"},
        custom: {"code": "-0x5", "message": "the SCORE said no"},
    }
    for tx_hash, failure in failures.items():
        assert set(answers[tx_hash]) == RESULT_KEYS | {"failure"}
        assert answers[tx_hash]["status"] == "0x0" and answers[tx_hash]["failure"] == failure


class PeerBeforeWithTx(FakePeer):
    """A peer older than TxLookupBatchRequest.with_tx: it never sends a result's transaction."""

    async def GetTxResultBatch(self, request: Any, context: Any) -> Any:
        request.with_tx = False
        return await super().GetTxResultBatch(request, context)


async def test_a_receipt_from_a_peer_before_with_tx_looks_its_transaction_up(session, tmp_path):
    """A proxy newer than its peer (started again from an updated checkout) still answers an
    executed transaction's receipt, the wait for it too: the transaction in a lookup of its own."""
    fake = PeerBeforeWithTx()
    async with proxy_in_front_of(fake, tmp_path, {}, session) as proxy:
        tx_hash = await submit(session, proxy.base, "old peer")
        fake.make_block()
        url, params = proxy.base + "/api/v3", {"txHash": "0x" + tx_hash}
        for method in ("icx_getTransactionResult", "icx_waitTransactionResult"):
            found = result(await rpc(session, url, method, params))
            assert found["txHash"] == "0x" + tx_hash and found["status"] == "0x1", found
            assert found["to"] == channel_score_address(DEFAULT_CHANNEL), found
        assert fake.counted["GetTxBatch"] == 2  # one lookup of its own each


async def test_a_wait_for_a_result_is_answered_when_the_proxy_stops(session, tmp_path):
    """SIGTERM to the proxy while a client waits a minute for a pending transaction's result:
    the wait is answered at once (-31006, the transaction's hash, "ask again"), and the proxy
    ends by itself; the wait held its stop until the proxy was killed, and its client got no
    answer at all (lifecycle review)."""
    fake = FakePeer()
    async with proxy_in_front_of(fake, tmp_path, {}, session) as proxy:
        tx_hash = await submit(session, proxy.base, "never in a block")
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "icx_waitTransactionResult",
            "params": {"txHash": "0x" + tx_hash},
        }
        waiting = asyncio.create_task(
            post(
                session,
                proxy.base + "/api/v3",
                json.dumps(request).encode(),
                headers={"Icon-Options": "timeout=60000"},
            )
        )

        async def polling() -> bool:
            return fake.counted["GetTxResultBatch"] >= 2

        await wait_until_async(polling, 30, "the wait to poll the peer")
        proxy.send_signal(signal.SIGTERM)
        answer = await waiting
        assert_error(answer, -31006, "this REST proxy is stopping")
        assert answer[1]["error"]["data"] == "0x" + tx_hash
        assert proxy.wait(timeout=30) == 0
        assert "ending the process now" not in proxy.log_text()


async def test_a_transaction_the_peer_dropped_is_not_found_with_the_peers_reason(session, v3, peer):
    """The peer says why it does not know a transaction (it expired there, and will not be
    final): -31004 says it too; v3 clients were told only that it was not known, where REST v1
    gave the reason (clock review)."""
    tx_hash = "ab" * 32
    why = "it expired here (TX_TIMESTAMP_WINDOW 300 s); send it again"
    peer.dropped[tx_hash] = why
    try:
        for method in ("icx_getTransactionByHash", "icx_getTransactionResult"):
            answer = await rpc(session, v3, method, {"txHash": "0x" + tx_hash})
            assert_error(answer, -31004, f"transaction 0x{tx_hash} is not known: {why}")
        other = "cd" * 32  # no reason given: the words as before
        answer = await rpc(session, v3, "icx_getTransactionResult", {"txHash": "0x" + other})
        assert_error(answer, -31004, f"transaction 0x{other} is not known")
        assert answer[1]["error"]["message"] == f"transaction 0x{other} is not known"
    finally:
        peer.dropped.clear()


class PeerSwappingTxs(FakePeer):
    """A faulty peer that sends, with each result, the bytes of the first transaction of its
    chain, whichever was asked."""

    async def GetTxResultBatch(self, request: Any, context: Any) -> Any:
        reply = await super().GetTxResultBatch(request, context)
        first = self.chains[DEFAULT_CHANNEL].blocks[0].transactions[0].encode()
        for entry in reply.results:
            if entry.result.tx:
                entry.result.tx = first
        return reply


async def test_a_receipt_with_another_transaction_is_an_internal_error(session, tmp_path):
    fake = PeerSwappingTxs()
    async with proxy_in_front_of(fake, tmp_path, {}, session) as proxy:
        first = await submit(session, proxy.base, "first")
        second = await submit(session, proxy.base, "second")
        fake.make_block()
        url = proxy.base + "/api/v3"
        found = result(await rpc(session, url, "icx_getTransactionResult", {"txHash": first}))
        assert found["txHash"] == "0x" + first
        swapped = await rpc(session, url, "icx_getTransactionResult", {"txHash": second})
        assert_error(swapped, -32603, "another transaction than the one asked")


async def test_unknown_transactions_are_not_found_in_their_channel_only(session, v3, peer):
    unknown = "0x" + "ef" * 32
    asked = peer.counted["GetStatus"]
    for method in ("icx_getTransactionByHash", "icx_getTransactionResult"):
        assert_error(await rpc(session, v3, method, {"txHash": unknown}), -31004, unknown)
    # refused in its own entry of a served call: no status call to tell it from a channel
    assert peer.counted["GetStatus"] == asked
    tx_hash = await submit(session, base_of(v3), "other", channel=OTHER_CHANNEL)
    peer.make_block(OTHER_CHANNEL)
    params = {"txHash": "0x" + tx_hash}
    assert_error(await rpc(session, v3, "icx_getTransactionByHash", params), -31004, tx_hash)
    found = result(await rpc(session, f"{v3}/{OTHER_CHANNEL}", "icx_getTransactionResult", params))
    assert found["status"] == "0x1" and found["to"] == channel_score_address(OTHER_CHANNEL)
    assert channel_score_address(OTHER_CHANNEL) != channel_score_address(DEFAULT_CHANNEL)


async def test_icx_call_checks_its_score_address_without_asking_the_peer_each_time(
    session, v3, peer
):
    """The channel's name, whose SCORE address icx_call checks `to` against, is asked of the
    peer once: a channel's name does not change. A channel the peer does not serve is refused
    every time."""

    def call_of(to: str) -> dict[str, Any]:
        return {"to": to, "dataType": "call", "data": {"method": "total"}}

    for channel in (DEFAULT_CHANNEL, OTHER_CHANNEL):
        url = f"{v3}/{channel}"
        first = result(await rpc(session, url, "icx_call", call_of(channel_score_address(channel))))
        asked = peer.counted["GetStatus"]
        for _ in range(3):
            again = await rpc(session, url, "icx_call", call_of(channel_score_address(channel)))
            assert result(again) == first == {"echo": {"method": "total"}}
        wrong = await rpc(session, url, "icx_call", call_of("cx" + "0" * 40))
        assert_error(
            wrong, -30002, f"channel {channel}'s SCORE is {channel_score_address(channel)}"
        )
        assert peer.counted["GetStatus"] == asked
    for _ in range(2):
        unknown = await rpc(session, f"{v3}/nochannel", "icx_call", call_of("cx" + "0" * 40))
        assert_error(unknown, -32602, "nochannel")


async def test_network_info(session, v3, peer):
    chain = peer.chains[OTHER_CHANNEL]
    if not chain.blocks:
        peer.make_block(OTHER_CHANNEL)
    info = result(await rpc(session, f"{v3}/{OTHER_CHANNEL}", "icx_getNetworkInfo"))
    assert info == {
        "platform": "loopchain",
        "nid": NID,
        "channel": OTHER_CHANNEL,
        "earliest": "0x0",
        "latest": hex(len(chain.blocks) - 1),
        "stepPrice": hex(STEP_PRICE),
        "scoreAddress": channel_score_address(OTHER_CHANNEL),
    }


# ---------------------------------------------------------------- a peer that fails


@pytest.mark.parametrize(
    ("code", "rpc_code", "text"),
    [
        # a whole call that failed so "is unreachable (...)", an entry the peer refused so its
        # own words: both carry them
        (grpc.StatusCode.UNAVAILABLE, -32603, "peer says unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, -32603, f"within {GRPC_TIMEOUT:g} s"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, -32603, "try again later"),
        (grpc.StatusCode.INTERNAL, -32603, "INTERNAL"),
        (grpc.StatusCode.INVALID_ARGUMENT, -32602, "peer says"),
        (grpc.StatusCode.UNIMPLEMENTED, -32603, "not available"),
    ],
)
async def test_peer_failures_are_json_rpc_errors(session, v3, peer, code, rpc_code, text):
    tx_hash = await submit(session, base_of(v3), "failures")
    for method, rpc_method, params in (
        ("GetBlock", "icx_getLastBlock", None),
        ("GetTx", "icx_getTransactionByHash", {"txHash": tx_hash}),
        ("GetTxResult", "icx_getTransactionResult", {"txHash": tx_hash}),
        # the whole call of a batch of lookups (above: the lookup alone, in its entry)
        ("GetTxBatch", "icx_getTransactionByHash", {"txHash": tx_hash}),
        ("GetTxResultBatch", "icx_getTransactionResult", {"txHash": tx_hash}),
        ("GetStatus", "icx_getNetworkInfo", None),
    ):
        peer.fail(method, code, f"peer says {code.name.lower()}")
        assert_error(await rpc(session, v3, rpc_method, params), rpc_code, text)
        peer.clear_failures()
    peer.make_block()
    # a failure while telling an unknown channel from an unknown transaction is reported too;
    # a transaction refused in its own entry needs no telling (its call was served)
    peer.fail("GetStatus", grpc.StatusCode.UNAVAILABLE, "down")
    unknown = {"txHash": "0x" + "12" * 32}
    answer = await rpc(session, f"{v3}/nochannel", "icx_getTransactionByHash", unknown)
    assert_error(answer, -32603, "unreachable")
    answer = await rpc(session, v3, "icx_getTransactionByHash", unknown)
    assert_error(answer, -31004, "12" * 32)


async def test_a_peer_without_its_score_service_answers_internal_error(session, v3, peer):
    tx_hash = await submit(session, base_of(v3), "no score")
    peer.make_block()
    peer.score = False
    answer = await rpc(session, v3, "icx_getTransactionResult", {"txHash": tx_hash})
    assert_error(answer, -32603, "SCORE service is not running")
    result(await rpc(session, v3, "icx_getTransactionByHash", {"txHash": tx_hash}))


async def test_peer_down_answers_internal_error_and_recovers(session, tmp_path):
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    fake.make_block()
    proxy = ProxyProcess(port, tmp_path, {"GRPC_TIMEOUT": GRPC_TIMEOUT})
    proxy.start()
    try:
        await proxy.wait_ready(session)
        url = proxy.base + "/api/v3"
        result(await rpc(session, url, "icx_getLastBlock"))
        await server.stop(None)
        for method in ("icx_getLastBlock", "icx_getNetworkInfo"):
            answer = await rpc(session, url, method)
            assert_error(answer, -32603, f"peer at 127.0.0.1:{port} is unreachable")
        server, _ = await start_fake_peer(port, fake)

        async def serves_again() -> bool:
            status, _ = await rpc(session, url, "icx_getLastBlock")
            return status == 200

        await wait_until_async(serves_again, 15, "the proxy to reach the peer again")
        assert result(await rpc(session, url, "icx_getNetworkInfo"))["nid"] == "0x3"  # default
    finally:
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


async def test_calls_beyond_the_in_flight_limit_are_internal_errors_at_once(session, tmp_path):
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path, {"GRPC_TIMEOUT": 60.0, "REST_MAX_INFLIGHT": 2})
    proxy.start()
    try:
        await proxy.wait_ready(session)
        hanging = [
            asyncio.ensure_future(session.post(proxy.base + "/api/v1/query", json=q))
            for q in ({"hang": True, "n": 1}, {"hang": True, "n": 2})
        ]

        async def one_in_flight() -> bool:
            return sum(name == "Query" for name, _ in fake.calls) == 1

        # both hold their slots from the start: the first reaches the peer, the other waits
        await wait_until_async(one_in_flight, 30, "a query to reach the peer")
        answer = await rpc(session, proxy.base + "/api/v3", "icx_getLastBlock")
        assert_error(answer, -32603, "2 calls in flight")
        assert answer[1]["error"]["data"] == {"retryAfter": 1}  # as v1's 503 says when
        request = {"jsonrpc": "2.0", "id": 2, "method": "icx_getLastBlock"}
        async with session.post(proxy.base + "/api/v3", json=request) as response:
            assert (response.status, response.headers.get("Retry-After")) == (400, "1")
        assert not any(name == "GetBlock" for name, _ in fake.calls)  # refused before the peer
        # a send has in-flight slots of its own (REST_MAX_INFLIGHT submissions): not refused by
        # the reads in flight, it reaches the peer (this fake one has no v3 intake)
        sender = Signer(bytes([9]) * 32)
        unsigned = make_params(
            sender=sender.address, to="hx" + "b0" * 20, step_limit=100_000, timestamp_us=1, nid=3
        )
        answer = await rpc(
            session, proxy.base + "/api/v3", "icx_sendTransaction", sign_params(unsigned, sender)
        )
        assert_error(answer, -32603, "not available from the peer yet")  # the peer's answer
        fake.release_queries.set()
        for response in await asyncio.gather(*hanging):
            assert response.status == 200
            response.release()
        answer = await rpc(session, proxy.base + "/api/v3", "icx_getLastBlock")
        assert_error(answer, -31004, "no block yet")
    finally:
        fake.release_queries.set()
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()
