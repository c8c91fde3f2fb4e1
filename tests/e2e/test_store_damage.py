"""A block damaged on disk under a real peer (the real radiostation.py and peer.py, with its REST
proxy and SCORE process): a byte of an old block's stored bytes changed in its LevelDB table, as a
failing disk or a stray write does. Blocks are served as stored (no decode), so only the table's
checksum can tell: a read of that block or of a transaction in it is answered 500 (JSON-RPC
-32603) with words saying the peer's store cannot serve it, never the damaged bytes as if they
were the block; the peer logs it at ERROR, goes on serving the rest and making blocks, and stops
cleanly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._storage_helpers import damage_a_table
from tools.procs import LocalNetwork, http, wait_until

CHANNEL = "loopchain_default"
MARKER = "damaged-on-disk-" + "7" * 64  # the transaction data the damage hits
# LevelDB checks a checksum per 4 KB table block, which holds several small values: transactions
# this big keep the damaged block's body apart from the blocks the peer reads when it starts
PADDING = "p" * 6000
LATER_BLOCKS = 10  # above the damaged block: more than the start-up check walks back


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path)
    try:
        network.start_radiostation()
        yield network
    finally:
        network.stop_all()


def _final(net: LocalNetwork, port: int, data: object) -> str:
    tx_hash = net.submit(port, data)
    wait_until(lambda: net.final_on(port, tx_hash), 60, f"transaction {tx_hash} final")
    return tx_hash


def test_a_block_damaged_on_disk_is_answered_500_and_the_peer_goes_on(
    net: LocalNetwork,
) -> None:
    port = net.start_peer()
    wait_until(lambda: net.status(port)["validator_count"] == 1, 60, "the peer as validator")
    _final(net, port, {"padding": PADDING})  # apart from the first block (read at start)
    damaged_tx = _final(net, port, {"note": MARKER, "padding": PADDING})
    damaged_height = net.tx_height(port, damaged_tx)
    assert damaged_height is not None and damaged_height >= 0
    for n in range(LATER_BLOCKS):
        _final(net, port, {"later": n})
    tip = net.height(port)
    assert tip >= damaged_height + LATER_BLOCKS
    assert net.peers[port].stop() == 0

    damage_a_table(
        Path(net.config_values["DEFAULT_STORAGE_PATH"]) / f"peer_{port}" / CHANNEL / "blocks",
        MARKER.encode(),
    )
    net.start_peer(port)  # its start-up check reads the newest blocks only: it starts
    rest = net.rest(port)
    for url in (
        f"{rest}/api/v1/blocks?height={damaged_height}",
        f"{rest}/api/v1/transactions?hash={damaged_tx}",
    ):
        status, body = http("GET", url)
        assert status == 500, (url, status, body)
        assert body["response_code"] == -1 and "cannot read it from its store" in body["message"]
        assert "corrupt" in body["message"] and "its log names the store" in body["message"]
        assert MARKER[:16] not in str(body) and str(net.workdir) not in str(body)  # nor paths

    request = {"jsonrpc": "2.0", "id": 7, "method": "icx_getBlockByHeight"}
    request["params"] = {"height": hex(damaged_height)}
    status, body = http("POST", f"{rest}/api/v3", json.dumps(request).encode())
    assert status >= 400 and body["error"]["code"] == -32603, body  # ICON's internal error
    assert "corrupt" in body["error"]["message"] and MARKER[:16] not in str(body), body

    status, body = http("GET", f"{rest}/api/v1/blocks?height={tip}")  # the rest is served
    assert status == 200, body
    after = _final(net, port, {"after": "the damage"})  # and the chain goes on
    assert (net.tx_height(port, after) or 0) > tip
    assert net.peers[port].stop() == 0
    peer = net.peers[port]
    assert not peer.problems()  # no traceback
    errors = [line for line in peer.log_text().splitlines() if " ERROR " in line]
    # (its filter of recent transactions reads the newest blocks at start: it meets the damage
    # too, and is not loaded; every lookup reads the store then)
    said = ("the store cannot serve it", "transaction filter not loaded")
    assert errors and all(any(words in line for words in said) for line in errors), errors
