"""A listed channel whose genesis funds accounts, with its peers starting one after another.

Found by `tools/bench.py` (issue 8's "stopping for good with thousands of transactions pooled"):
the first listed peer to register gets a validator set of itself alone from the RadioStation, and a
genesis that funds accounts is proposed at once, so that peer certifies a genesis block by itself;
the peers that register later get the full set, whose quorum they reach without it, and certify
another genesis. Two chains; the first peer never joins the others' (it rejects their blocks: "does
not extend the tip") and its pool fills up. In listed mode the RadioStation's validator set is now
the listed validators from the start, registered or not, so every version names one committee and
any two quorums of it meet: one genesis.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopchain.blockchain import coin
from tools.procs import LocalNetwork, get, wait_until

PEERS = 4
CHANNEL = "loopchain_default"
GENESIS = {
    "accounts": [
        {"name": "god", "address": "hxe7af5fcfd8dfc67530a01a0e403882687528dfcb", "balance": "0x1"},
        {"name": "treasury", "address": coin.TREASURY, "balance": "0x0"},
    ],
    "message": "genesis race",
}


def _first_peer_alone(
    net: LocalNetwork, ports: list[int], channel: dict[str, object]
) -> tuple[int, list[int]]:
    """Write the channel, start the RadioStation and the first peer alone until it has its set;
    (the first port, the others)."""
    (net.workdir / "channel_manage_data.json").write_text(json.dumps({CHANNEL: channel}))
    net.start_radiostation()
    first = ports[0]
    net.start_peer(first)
    wait_until(lambda: net.status(first)["validator_count"] >= 1, 30, "the first peer's set")
    return first, ports[1:]


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "open"])
def test_a_peer_that_starts_alone_ends_on_the_same_chain_as_the_others(
    tmp_path: Path, listed: bool
) -> None:
    net = LocalNetwork(tmp_path, {"ENABLE_CHANNEL_AUTH": listed})
    ports = sorted(net.new_peer_port() for _ in range(PEERS))
    ids = {port: net.make_peer_key(port) for port in ports}
    peers = [{"peer_id": ids[p], "peer_target": f"127.0.0.1:{p}"} for p in ports] if listed else []
    try:
        _, others = _first_peer_alone(net, ports, {"peers": peers, "genesis_data": GENESIS})
        # whatever the first peer does now, the network it joins must end as one chain
        for port in others:
            net.start_peer(port, wait=False)
        wait_until(
            lambda: all(net.status(p)["validator_count"] == PEERS for p in others),
            60,
            "four validators seen by the later peers",
        )
        for port in ports:  # a transaction each, so that every peer has work to propose
            net.submit(port, {"genesis race": port})

        def one_chain() -> bool:
            if min(net.height(p) for p in ports) < 1:
                return False
            return (
                len({net.block_hash_at(p, 0) for p in ports}) == 1
                and len({net.block_hash_at(p, 1) for p in ports}) == 1
            )

        wait_until(one_chain, 60, "every peer on one chain (the same blocks 0 and 1)")
    finally:
        for proc in reversed(net.procs):
            proc.stop(timeout=15)


def test_an_open_channel_whose_founder_dies_before_its_genesis_is_founded_when_it_returns(
    tmp_path: Path,
) -> None:
    """kill -9 of an open channel's first peer before any block: the three others are a quorum,
    but none of them may found the channel; the founder, restarted on its storage, founds it and
    the transaction the others held is final everywhere, on one chain."""
    net = LocalNetwork(tmp_path, {"ENABLE_CHANNEL_AUTH": False})
    ports = sorted(net.new_peer_port() for _ in range(PEERS))
    try:
        # no genesis data: a genesis that funds accounts would be founded at once
        founder, others = _first_peer_alone(net, ports, {"peers": []})
        assert net.height(founder) == -1  # nothing to found the channel with yet
        net.peers[founder].kill9()
        for port in others:
            net.start_peer(port, wait=False)
        wait_until(
            lambda: all(net.status(p)["validator_count"] == PEERS for p in others),
            60,
            "the later peers in a set led by the dead founder",
        )
        tx_hash = net.submit(others[0], {"waits for": "its founder"})
        assert all(net.height(p) == -1 for p in others)
        net.start_peer(founder)
        wait_until(
            lambda: all(net.final_on(p, tx_hash) for p in ports),
            60,
            "the transaction final on every peer once the founder is back",
        )
        assert len({net.block_hash_at(p, 0) for p in ports}) == 1
        genesis = get(f"{net.rest(others[1])}/api/v1/blocks?height=0")
        assert genesis["block_data_json"]["peer_id"] == net.make_peer_key(founder)
    finally:
        for proc in reversed(net.procs):
            proc.stop(timeout=15)
