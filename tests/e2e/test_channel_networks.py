"""Each channel its own network for ICON v3 transactions, against real processes: a RadioStation
and a peer serving two channels that fund one client at genesis. A v3 transaction names its
network (nid) and no channel: with one nid for both, a transfer signed for one channel was
replayed byte for byte into the other by a third party and moved the client's coin there too
(review). A channel's genesis_data may now state its nid."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from loopchain.types import icon_tx
from loopchain.types.crypto import Signer
from tools.procs import LocalNetwork, http, wait_until

ALPHA, BETA = "alpha", "beta"  # alpha states no nid (the peer's ICON_NID, 0x3); beta 0x5
CLIENT = Signer.generate()
TO = "hx" + "22" * 20
FUNDS = 10**22
GENESIS = {"accounts": [{"name": "client", "address": CLIENT.address, "balance": hex(FUNDS)}]}
CHANNELS = {
    ALPHA: {"score_package": "loopchain/default", "genesis_data": GENESIS},
    BETA: {"score_package": "loopchain/default", "genesis_data": {**GENESIS, "nid": "0x5"}},
}


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    net = LocalNetwork(
        tmp_path_factory.mktemp("channel_networks"), {"LOOPCHAIN_DEFAULT_CHANNEL": ALPHA}
    )
    try:
        net.start_with_peers(1, channels=CHANNELS)
        yield net.rest(next(iter(net.peers)))
    finally:
        net.stop_and_check()


def rpc(rest: str, channel: str, method: str, params: Any) -> tuple[int, dict[str, Any]]:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return http("POST", f"{rest}/api/v3/{channel}", json.dumps(request).encode())


def result(answer: tuple[int, dict[str, Any]]) -> Any:
    status, body = answer
    assert status == 200 and "error" not in body, body
    return body["result"]


def balance(rest: str, channel: str, address: str) -> int:
    return int(result(rpc(rest, channel, "icx_getBalance", {"address": address})), 16)


def transfer(nid: int, nonce: int) -> dict[str, Any]:
    params = icon_tx.make_params(
        sender=CLIENT.address,
        to=TO,
        step_limit=100_000,
        timestamp_us=time.time_ns() // 1000,
        nid=nid,
        value=10**18,
        nonce=nonce,
    )
    return icon_tx.sign_params(params, CLIENT)


def final(rest: str, channel: str, tx_hash: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        _, body = rpc(rest, channel, "icx_getTransactionResult", {"txHash": tx_hash})
        return body.get("result")

    return wait_until(found, 60, f"{tx_hash} final in {channel}")


def test_a_channels_network_id_is_its_genesis_datas_else_the_peers(rest: str) -> None:
    wait_until(lambda: balance(rest, BETA, CLIENT.address) > 0, 60, "beta's genesis")
    assert result(rpc(rest, ALPHA, "icx_getNetworkInfo", {}))["nid"] == "0x3"
    assert result(rpc(rest, BETA, "icx_getNetworkInfo", {}))["nid"] == "0x5"
    genesis = result(rpc(rest, BETA, "icx_getBlockByHeight", {"height": "0x0"}))
    assert genesis["confirmed_transaction_list"][0]["nid"] == "0x5"


def test_a_transfer_signed_for_one_channel_is_refused_in_the_other(rest: str) -> None:
    wait_until(
        lambda: balance(rest, ALPHA, CLIENT.address) and balance(rest, BETA, CLIENT.address),
        60,
        "both channels funded",
    )
    before = {c: balance(rest, c, CLIENT.address) for c in (ALPHA, BETA)}
    for signed_for, other, nid in ((ALPHA, BETA, 0x3), (BETA, ALPHA, 0x5)):
        signed = transfer(nid, nonce=nid)
        tx_hash = result(rpc(rest, signed_for, "icx_sendTransaction", signed))
        status, body = rpc(rest, other, "icx_sendTransaction", signed)  # a third party replays
        assert status == 400 and body["error"]["code"] == -32602, body
        assert f"'nid' is {nid:#x}, this network is" in body["error"]["message"], body
        assert final(rest, signed_for, tx_hash)["status"] == "0x1"
    for channel in (ALPHA, BETA):  # each moved once: its own transfer, and no replayed one
        assert balance(rest, channel, TO) == 10**18
        assert balance(rest, channel, CLIENT.address) < before[channel] - 10**18
