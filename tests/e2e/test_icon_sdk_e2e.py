"""Client-signed ICON v3 transactions and the native coin, driven by the unmodified iconsdk 2.6.0
against real processes: a RadioStation and two peers with their REST proxies, the channel's genesis
funding the SDK tests' key (as ./localnet.sh's does). Transfers and balances on both peers, a
message sent and waited for, fees paid to the treasury with the supply unchanged, and every refusal
surfacing as the SDK's JSONRPCException."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from iconsdk.builder.call_builder import CallBuilder
from iconsdk.builder.transaction_builder import (
    CallTransactionBuilder,
    MessageTransactionBuilder,
    TransactionBuilder,
)
from iconsdk.exception import JSONRPCException
from iconsdk.icon_service import IconService
from iconsdk.monitor import BlockMonitorSpec, EventFilter, EventMonitorSpec
from iconsdk.providers.http_provider import HTTPProvider
from iconsdk.signed_transaction import SignedTransaction
from iconsdk.wallet.wallet import KeyWallet

from loopchain.blockchain import coin
from loopchain.p2p.peer_service import MAX_SUBMISSIONS_PER_CALL
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types import canonical, icon_tx
from loopchain.types.crypto import Signer
from loopchain.types.icon_address import channel_score_address
from tools.procs import LocalNetwork, http, wait_until

PEERS = 2
CHANNEL = "loopchain_default"
KV = "kv"  # runs sample/kvstore: string params, as v3 calls carry them
NID = 3
GOD_KEY = bytes.fromhex("592eb276d534e2c41a2d9356c0ab262dc233d87e4dd71ce705ec130a8d27ff0c")
GOD = "hxe7af5fcfd8dfc67530a01a0e403882687528dfcb"
SUPPLY = 10**6 * coin.ICX
GENESIS = {
    "accounts": [
        {"name": "god", "address": GOD, "balance": hex(SUPPLY)},
        {"name": "treasury", "address": coin.TREASURY, "balance": "0x0"},
    ],
    "message": "test genesis",
}
# The SDK waits up to its HTTP timeout; the node waits as long as Icon-Options asks (any machine)
WAIT_HEADERS = {"Content-Type": "application/json", "Icon-Options": "timeout=60000"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path_factory.mktemp("icon_sdk"))
    channels = {
        CHANNEL: {"score_package": "loopchain/default", "genesis_data": GENESIS},
        KV: {"score_package": "sample/kvstore", "genesis_data": GENESIS},
    }
    (network.workdir / "channel_manage_data.json").write_text(json.dumps(channels))
    try:
        network.start_radiostation()
        for _ in range(PEERS):
            network.start_peer()
        for port in network.peers:
            for channel in (CHANNEL, KV):
                wait_until(
                    lambda p=port, c=channel: _balance(network, p, GOD, c) > 0,
                    60,
                    f"the genesis of {channel} executed",
                )
        yield network
    finally:
        network.stop_and_check()


def _balance(net: LocalNetwork, port: int, address: str, channel: str = "") -> int:
    """The balance through raw JSON-RPC (-1 while the peer cannot answer yet)."""
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "icx_getBalance",
        "params": {"address": address},
    }
    url = f"{net.rest(port)}/api/v3" + (f"/{channel}" if channel else "")
    status, body = http("POST", url, json.dumps(request).encode())
    return int(body["result"], 16) if status == 200 else -1


def sdk(net: LocalNetwork, port: int, channel: str = "") -> IconService:
    kwargs = {"headers": WAIT_HEADERS, "timeout": 90}
    if channel:
        return IconService(HTTPProvider(f"{net.rest(port)}/api/v3/{channel}", kwargs))
    return IconService(HTTPProvider(net.rest(port), 3, kwargs))


def god() -> KeyWallet:
    return KeyWallet.load(GOD_KEY)


def transfer(to: str, value: int, *, step_limit: int = 1_000_000, nid: int = NID) -> Any:
    return (
        TransactionBuilder()
        .from_(GOD)
        .to(to)
        .value(value)
        .step_limit(step_limit)
        .nid(nid)
        .nonce(1)
        .build()
    )


def settled_balance(net: LocalNetwork, address: str) -> int:
    """`address`'s balance once every peer holds the same: a test that waited for its result on
    one peer may leave another a block behind, whose balance would be stale as a "before"."""

    def agreed() -> tuple[int] | None:  # a tuple: a balance of 0 is an answer too
        held = {_balance(net, port, address) for port in net.peers}
        return (held.pop(),) if len(held) == 1 and -1 not in held else None

    return wait_until(agreed, 60, f"every peer to hold the same balance of {address}")[0]


def balance_becomes(service: IconService, address: str, expected: int) -> None:
    """Wait until `address` holds `expected` (a peer executes a final block a moment later)."""
    wait_until(lambda: service.get_balance(address) == expected, 60, f"{address} at {expected}")


def test_genesis_accounts_and_supply(net: LocalNetwork) -> None:
    for port in net.peers:
        service = sdk(net, port)
        assert service.get_total_supply() == SUPPLY
        genesis = service.get_block(0)  # its list holds the accounts, as ICON's genesis does
        assert genesis["confirmed_transaction_list"] == [
            {"accounts": GENESIS["accounts"], "message": GENESIS["message"], "nid": NID}
        ]
        assert service.get_balance(GOD) <= SUPPLY  # less once other tests paid fees
    assert sdk(net, min(net.peers)).get_balance(KeyWallet.create().get_address()) == 0


def test_transfer_seen_on_both_peers_fee_to_the_treasury(net: LocalNetwork) -> None:
    first, second = sorted(net.peers)
    service, other = sdk(net, first), sdk(net, second)
    recipient = KeyWallet.create().get_address()
    before, treasury = settled_balance(net, GOD), settled_balance(net, coin.TREASURY)

    result = service.send_transaction_and_wait(
        SignedTransaction(transfer(recipient, coin.ICX), god())
    )

    assert result["status"] == 1 and result["to"] == recipient
    assert result["stepUsed"] == coin.STEP_DEFAULT and result["stepPrice"] == coin.STEP_PRICE
    fee = coin.STEP_DEFAULT * coin.STEP_PRICE
    for peer in (service, other):
        balance_becomes(peer, recipient, coin.ICX)
        balance_becomes(peer, GOD, before - coin.ICX - fee)
        balance_becomes(peer, coin.TREASURY, treasury + fee)
        assert peer.get_total_supply() == SUPPLY
    # the transaction reads back as it was signed, on the other peer too
    tx = other.get_transaction(result["txHash"])
    assert tx["from"] == GOD and tx["to"] == recipient and tx["value"] == coin.ICX
    assert tx["blockHeight"] == result["blockHeight"] and tx["nid"] == NID


def test_message_sent_and_waited_for_is_kept_in_the_block(net: LocalNetwork) -> None:
    service = sdk(net, max(net.peers))
    text = "0x" + b"hello, loopchain".hex()
    message = (
        MessageTransactionBuilder()
        .from_(GOD)
        .to(KeyWallet.create().get_address())
        .step_limit(1_000_000)
        .nid(NID)
        .data(text)
        .build()
    )
    result = service.send_transaction_and_wait(SignedTransaction(message, god()))
    assert result["status"] == 1
    assert result["stepUsed"] == coin.steps_for("message", text)
    assert result["stepUsed"] == coin.STEP_DEFAULT + coin.STEP_INPUT_PER_BYTE * len(
        canonical.encode(text)
    )
    tx = service.get_transaction(result["txHash"])
    assert tx["dataType"] == "message" and tx["data"] == text
    block = service.get_block(result["blockHeight"])
    listed = [t for t in block["confirmed_transaction_list"] if t["txHash"] == result["txHash"]]
    assert len(listed) == 1 and listed[0]["data"] == text
    # v1 reads it too, naming the channel it is in (a v3 transaction names none itself)
    url = f"{net.rest(max(net.peers))}/api/v1/transactions?hash={result['txHash'][2:]}"
    status, v1 = http("GET", url)
    assert status == 200 and v1["meta"]["channel_name"] == CHANNEL, v1


def test_out_of_step_fails_in_the_block_and_charges_the_step_limit(net: LocalNetwork) -> None:
    """A call whose stepLimit covers every transaction's steps and its data's, but not the call's,
    fails out of step in its block and pays its whole stepLimit; one below those is refused at
    intake, as ICON's nodes do (one of stepLimit 0 from an empty account was in blocks for
    free)."""
    first = min(net.peers)
    service = sdk(net, first, KV)
    data = {"method": "set", "params": {"key": "steps", "value": "short"}}
    limit = coin.intake_steps(data)
    call = (
        CallTransactionBuilder()
        .from_(GOD)
        .to(channel_score_address(KV))
        .method("set")
        .params(data["params"])
        .step_limit(limit)
        .nid(NID)
        .build()
    )
    result = service.send_transaction_and_wait(SignedTransaction(call, god()))
    assert result["status"] == 0 and result["failure"]["code"] == coin.OUT_OF_STEP
    assert "out of step" in result["failure"]["message"]
    assert result["stepUsed"] == limit
    short = transfer(KeyWallet.create().get_address(), 5, step_limit=coin.STEP_DEFAULT - 1)
    refused = _refused(lambda: sdk(net, first).send_transaction(SignedTransaction(short, god())))
    assert refused.rpc_code == -32602 and "stepLimit" in str(refused)


def _refused(call: Any) -> JSONRPCException:
    with pytest.raises(JSONRPCException) as caught:
        call()
    return caught.value


def test_refusals_reach_the_sdk_as_its_exception(net: LocalNetwork) -> None:
    service = sdk(net, min(net.peers))
    recipient = KeyWallet.create().get_address()
    stranger = KeyWallet.create()
    # a transaction for another network
    wrong_nid = _refused(
        lambda: service.send_transaction(SignedTransaction(transfer(recipient, 1, nid=1), god()))
    )
    assert wrong_nid.rpc_code == -32602 and "nid" in str(wrong_nid)
    # god's transaction signed by another key
    forged = _refused(
        lambda: service.send_transaction(SignedTransaction(transfer(recipient, 1), stranger))
    )
    assert forged.rpc_code == -32602 and stranger.get_address() in str(forged)
    # the same signed transaction twice
    signed = SignedTransaction(transfer(recipient, 1), god())
    service.send_transaction_and_wait(signed)
    replay = _refused(lambda: service.send_transaction(signed))
    assert replay.rpc_code == -32602 and "already known" in str(replay)
    # more than the sender holds
    broke = (
        TransactionBuilder()
        .from_(stranger.get_address())
        .to(recipient)
        .value(coin.ICX)
        .step_limit(1_000_000)
        .nid(NID)
        .build()
    )
    overdraft = _refused(lambda: service.send_transaction(SignedTransaction(broke, stranger)))
    assert overdraft.rpc_code == -32602 and "out of balance" in str(overdraft)
    # a hash nobody sent
    unknown = _refused(lambda: service.get_transaction_result("0x" + "cd" * 32))
    assert unknown.rpc_code == -31004
    balance_becomes(service, recipient, 1)  # only the one good transfer moved anything


def test_score_invoked_by_a_call_transaction_and_read_by_icx_call(net: LocalNetwork) -> None:
    first, second = sorted(net.peers)
    service, other = sdk(net, first, KV), sdk(net, second, KV)
    info = other.get_network_info()
    address = channel_score_address(KV)
    assert info["channel"] == KV and info["scoreAddress"] == address
    status = http("GET", f"{net.rest(second)}/api/v1/status/score?channel={KV}")[1]
    assert status["score_address"] == address and status["id"] == "sample/kvstore"
    api = other.get_score_api(address)  # as the package states it, events included
    assert {(item["type"], item["name"]) for item in api} == {
        ("function", "set"),
        ("function", "delete"),
        ("function", "get"),
        ("eventlog", "ValueSet"),
        ("eventlog", "ValueDeleted"),
    }
    assert next(i for i in api if i["name"] == "get")["readonly"] == "0x1"
    assert _refused(lambda: other.get_score_api(channel_score_address(CHANNEL))).rpc_code == -30002

    def invoke(method: str, params: dict[str, str]) -> dict[str, Any]:
        tx = (
            CallTransactionBuilder()
            .from_(GOD)
            .to(address)
            .method(method)
            .params(params)
            .step_limit(1_000_000)
            .nid(NID)
            .build()
        )
        return dict(service.send_transaction_and_wait(SignedTransaction(tx, god())))

    done = invoke("set", {"key": "colour", "value": "teal"})
    assert done["status"] == 1 and done["to"] == address
    assert done["eventLogs"] == [
        {"scoreAddress": address, "indexed": ["ValueSet(str,str)", "colour"], "data": ["teal"]}
    ]
    assert done["stepUsed"] == coin.steps_for(
        "call", {"method": "set", "params": {"key": "colour", "value": "teal"}}
    )
    query = CallBuilder().to(address).method("get").params({"key": "colour"}).build()
    wait_until(lambda: other.call(query) == {"value": "teal"}, 60, "the value on the other peer")
    # the SCORE refuses: the transaction fails with goloop's "reverted" and writes nothing
    refused = invoke("rename", {"key": "colour"})
    assert refused["status"] == 0 and refused["failure"]["code"] == coin.REVERTED
    assert "unknown method 'rename'" in refused["failure"]["message"]
    assert refused["eventLogs"] == []
    # queries the SCORE refuses, and a SCORE that is not there, are the SDK's exception
    bad_query = CallBuilder().to(address).method("set").params({"key": "colour"}).build()
    assert _refused(lambda: other.call(bad_query)).rpc_code == -30032
    elsewhere = CallBuilder().to(channel_score_address(CHANNEL)).method("get").build()
    assert _refused(lambda: other.call(elsewhere)).rpc_code == -30002


def _set(service: IconService, key: str, value: str) -> dict[str, Any]:
    tx = (
        CallTransactionBuilder()
        .from_(GOD)
        .to(channel_score_address(KV))
        .method("set")
        .params({"key": key, "value": value})
        .step_limit(1_000_000)
        .nid(NID)
        .build()
    )
    return dict(service.send_transaction_and_wait(SignedTransaction(tx, god())))


def test_block_and_event_monitors(net: LocalNetwork) -> None:
    first, second = sorted(net.peers)
    service, watcher = sdk(net, first, KV), sdk(net, second, KV)
    start = watcher.get_block("latest")["height"]
    address = channel_score_address(KV)
    blocks = watcher.monitor(BlockMonitorSpec(start, filters=[]))
    shade = EventFilter("ValueSet(str,str)", address, 1, "shade")
    events = watcher.monitor(EventMonitorSpec(start, shade, logs=True))
    try:
        # the block at `start` at once, then each new one in order (blocks come with transactions)
        note = blocks.read(timeout=60)
        assert int(note["height"], 16) == start
        assert note["hash"][2:] == watcher.get_block(start)["block_hash"]
        _set(service, "other", "x")
        done = _set(service, "shade", "amber")
        for height in range(start + 1, done["blockHeight"] + 1):
            note = blocks.read(timeout=60)
            assert int(note["height"], 16) == height
            assert note["hash"][2:] == watcher.get_block(height)["block_hash"]
        # only the transaction that sets "shade" is notified, with its event and log
        note = events.read(timeout=60)
        assert int(note["height"], 16) == done["blockHeight"]
        assert int(note["index"], 16) == done["txIndex"] and note["events"] == ["0x0"]
        assert note["logs"] == [
            {"scoreAddress": address, "indexed": ["ValueSet(str,str)", "shade"], "data": ["amber"]}
        ]
    finally:
        blocks.close()
        events.close()


def test_loadtool_v3_mode_commits_what_it_sends(net: LocalNetwork) -> None:
    """tools/loadtool.py -t 2 as a process: it funds an account per client from the genesis
    account, sends client-signed transfers, and counts them committed from the chain."""
    port = min(net.peers)
    command = [
        sys.executable,
        "tools/loadtool.py",
        "-t",
        "2",
        "-c",
        "4",
        "-m",
        "2s",
        "--drain",
        "60",
        "-p",
        net.rest(port),
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # a full pool (-31001, the v3 form of 503) is an answer a slower or busier machine may give
    # under load; anything else is an error
    overload = {kind for kind in summary["errors"] if kind.endswith("(-31001)")}
    assert summary["mode"] == "v3_transfer" and set(summary["errors"]) == overload, summary
    assert summary["submitted"] > 0 and summary["committed"] == summary["submitted"], summary


def test_the_peer_takes_a_batch_of_v3_transactions_each_with_its_own_outcome(
    net: LocalNetwork,
) -> None:
    """CreateIconTxBatch, as the REST proxy sends concurrent icx_sendTransaction calls: one result
    per transaction, in order; a refused one costs the others nothing; a batch is bounded."""

    def transfer(signer: Signer, value: int, nonce: int) -> str:
        unsigned = icon_tx.make_params(
            sender=signer.address,
            to="hx" + "ab" * 20,
            step_limit=100_000,
            timestamp_us=time.time_ns() // 1000,
            nid=NID,
            value=value,
            nonce=nonce,
        )
        return json.dumps(icon_tx.sign_params(unsigned, signer))

    god, broke = Signer(GOD_KEY), Signer(bytes([7]) * 32)
    good, twice = transfer(god, 1, 1), transfer(god, 2, 2)
    batch = [good, twice, twice, transfer(broke, 1, 3), '{"not": "a transaction"}']
    port = min(net.peers)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.PeerServiceStub(channel)
        reply = stub.CreateIconTxBatch(
            pb.IconTxBatchRequest(channel=CHANNEL, params_json=batch), timeout=30
        )
        results = list(reply.results)
        assert len(results) == len(batch)
        for index in (0, 1):
            expected = icon_tx.tx_hash(json.loads(batch[index])).hex()
            assert (results[index].code, results[index].tx_hash) == (0, expected)
        invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert results[2].code == invalid and "already known" in results[2].message
        assert results[3].code == invalid and "out of balance" in results[3].message
        assert results[4].code == invalid
        too_many = pb.IconTxBatchRequest(
            channel=CHANNEL, params_json=[good] * (MAX_SUBMISSIONS_PER_CALL + 1)
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateIconTxBatch(too_many, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for index in (0, 1):  # both pooled ones become final on the other peer too
        tx_hash = "0x" + icon_tx.tx_hash(json.loads(batch[index])).hex()
        wait_until(lambda h=tx_hash: _final_elsewhere(net, port, h), 60, f"{tx_hash} final")


def _final_elsewhere(net: LocalNetwork, port: int, tx_hash: str) -> bool:
    other = max(p for p in net.peers if p != port) if len(net.peers) > 1 else port
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "icx_getTransactionResult",
        "params": {"txHash": tx_hash},
    }
    status, body = http("POST", f"{net.rest(other)}/api/v3", json.dumps(request).encode())
    return status == 200 and body["result"]["status"] == "0x1"
