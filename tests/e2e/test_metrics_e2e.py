"""/metrics of real processes: a RadioStation and two peers (with their REST proxies and SCOREs) in
two channels. Under load from concurrent clients the peer's figures move and agree with its REST
API; refusals are counted by reason; a client cannot make new series; the RadioStation counts its
peers and refused operator calls."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tools.procs import LocalNetwork, get, http, post_json, wait_until

PEERS = 2
DEFAULT, SECOND = "loopchain_default", "second"
CHANNELS = {
    DEFAULT: {"score_package": "loopchain/default"},
    SECOND: {"score_package": "loopchain/default"},
}
CLIENTS, PER_CLIENT = 4, 15
FOREIGN = "chosen_by_a_client"  # a channel name no one serves
METHOD = "PROPFIND"  # an HTTP method no route takes (the parser refuses unknown ones)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(tmp_path_factory.mktemp("metrics"))
    try:
        yield network.start_with_peers(PEERS, channels=CHANNELS)
    finally:
        network.stop_and_check()


def scrape(base: str) -> tuple[str, Samples]:
    """The text of GET base/metrics (checked to be Prometheus text) and its samples."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = response.read().decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"series {key} twice"  # the proxy's and the peer's never clash
            found[key] = sample.value
    return text, found


def at(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _submit_many(net: LocalNetwork, port: int, channel: str, client: int) -> list[str]:
    url = f"{net.rest(port)}/api/v1/transactions"
    hashes = []
    for n in range(PER_CLIENT):
        reply = post_json(url, {"channel": channel, "client": client, "n": n})
        assert reply["response_code"] == 0, reply
        hashes.append(str(reply["tx_hash"]))
    return hashes


def _final_on(net: LocalNetwork, port: int, channel: str, tx_hash: str) -> bool:
    url = f"{net.rest(port)}/api/v1/transactions?hash={tx_hash}&channel={channel}"
    status, body = http("GET", url)
    return status == 200 and body["block_height"] >= 0


def _all_final(net: LocalNetwork, port: int, channel: str, hashes: list[str]) -> bool:
    return all(_final_on(net, port, channel, h) for h in hashes)


def _height_agrees(net: LocalNetwork, port: int, channel: str) -> bool:
    gauge = at(scrape(net.rest(port))[1], "loopchain_block_height", channel=channel)
    return gauge == _chain_height(net, port, channel)


def _chain_height(net: LocalNetwork, port: int, channel: str) -> int:
    block = get(f"{net.rest(port)}/api/v1/blocks?channel={channel}")
    return int(block["block_data_json"]["height"])


def test_peer_metrics_move_under_load_and_agree_with_the_chain(net: LocalNetwork) -> None:
    port = min(net.peers)
    base = net.rest(port)
    _, before = scrape(base)
    assert at(before, "loopchain_rest_peer_metrics_up") == 1
    for channel in CHANNELS:
        assert ("loopchain_tx_pool_size", frozenset({("channel", channel)})) in before
        assert ("loopchain_tx_pool_bytes", frozenset({("channel", channel)})) in before
    # 1. concurrent clients load both channels
    with ThreadPoolExecutor(CLIENTS * 2) as pool:
        jobs = {
            (channel, client): pool.submit(_submit_many, net, port, channel, client)
            for channel in CHANNELS
            for client in range(CLIENTS)
        }
        sent = {
            c: [h for (ch, _), job in jobs.items() if ch == c for h in job.result()]
            for c in CHANNELS
        }
    for channel, hashes in sent.items():
        what = f"{len(hashes)} transactions final in {channel}"
        wait_until(partial(_all_final, net, port, channel, hashes), 120, what)
    # 2. the figures moved, per channel, and the height is the chain's
    for channel in CHANNELS:
        what = f"the height gauge of {channel} at the chain's height"
        wait_until(partial(_height_agrees, net, port, channel), 30, what)
    _, after = scrape(base)
    for channel in CHANNELS:
        committed = at(after, "loopchain_committed_txs_total", channel=channel) - at(
            before, "loopchain_committed_txs_total", channel=channel
        )
        assert committed >= CLIENTS * PER_CLIENT, (channel, committed)
        accepted = at(after, "loopchain_accepted_txs_total", channel=channel)
        assert accepted >= CLIENTS * PER_CLIENT
        assert at(after, "loopchain_finalisation_seconds_count", channel=channel) > 0
        assert at(after, "loopchain_finalisation_seconds_sum", channel=channel) > 0
        assert at(after, "loopchain_score_execution_seconds_count", channel=channel) > 0
        assert at(after, "loopchain_committed_blocks_total", channel=channel) > at(
            before, "loopchain_committed_blocks_total", channel=channel
        )
    route = {"route": "/api/v1/transactions", "method": "POST", "status": "200"}
    assert at(after, "loopchain_rest_requests_total", **route) >= 2 * CLIENTS * PER_CLIENT
    assert at(after, "loopchain_process_resident_memory_bytes") > 0
    assert at(after, "loopchain_rest_process_resident_memory_bytes") > 0


def test_refusals_are_counted_by_reason(net: LocalNetwork) -> None:
    port = min(net.peers)
    base = net.rest(port)
    _, before = scrape(base)
    url = f"{base}/api/v1/transactions"
    # the peer refuses a float (its canonical encoding has none); the proxy refuses non-JSON
    status, _ = http("POST", url, json.dumps({"price": 1.5}).encode())
    assert status == 400
    status, _ = http("POST", url, b"{not json")
    assert status == 400
    missing = "ab" * 32
    status, _ = http("GET", f"{url}?hash={missing}")
    assert status == 404
    _, after = scrape(base)

    def moved(name: str, **labels: str) -> float:
        return at(after, name, **labels) - at(before, name, **labels)

    assert moved("loopchain_refused_inputs_total", channel=DEFAULT, reason="invalid") == 1
    assert moved("loopchain_refused_inputs_total", channel=SECOND, reason="invalid") == 0
    assert moved("loopchain_rest_refused_total", reason="invalid") == 2
    assert moved("loopchain_grpc_errors_total", method="GetTx", code="NOT_FOUND") == 1
    assert moved("loopchain_rest_peer_rpc_errors_total", method="GetTx", code="NOT_FOUND") == 1


def test_a_client_cannot_choose_label_values(net: LocalNetwork) -> None:
    port = min(net.peers)
    base = net.rest(port)
    _, before = scrape(base)
    for path in (
        f"/api/v1/status/peer?channel={FOREIGN}",
        f"/api/v1/blocks?channel={FOREIGN}",
        f"/{FOREIGN}",
    ):
        status, _ = http("GET", base + path)
        assert status in (400, 404), path
    status, _ = http(
        "POST", f"{base}/api/v1/transactions", json.dumps({"channel": FOREIGN}).encode()
    )
    assert status in (400, 404)
    status, _ = http(METHOD, f"{base}/api/v1/blocks")
    assert status >= 400
    text, after = scrape(base)
    assert FOREIGN not in text and METHOD not in text
    channels = {dict(labels).get("channel") for _, labels in after} - {None}
    assert channels == set(CHANNELS)
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert at(after, "loopchain_rest_requests_total", **unmatched) > at(
        before, "loopchain_rest_requests_total", **unmatched
    )
    assert any(
        name == "loopchain_rest_requests_total" and ("method", "other") in labels
        for name, labels in after
    )


def _station_sees(net: LocalNetwork, channel: str) -> bool:
    samples = scrape(net.rs_rest)[1]
    return (
        at(samples, "loopchain_radiostation_peers_connected", channel=channel) == PEERS
        and at(samples, "loopchain_radiostation_leader_known", channel=channel) == 1
    )


def test_the_radiostation_counts_its_peers_and_refused_operator_calls(net: LocalNetwork) -> None:
    for channel in CHANNELS:
        what = f"{PEERS} connected peers and a leader in {channel}"
        wait_until(partial(_station_sees, net, channel), 30, what)
    _, before = scrape(net.rs_rest)
    status, _ = http(
        "POST", f"{net.rs_rest}/api/v1/conf", json.dumps({"name": "X", "value": 1}).encode()
    )
    assert status == 401
    text, after = scrape(net.rs_rest)
    for channel in CHANNELS:
        assert at(after, "loopchain_radiostation_peers_registered", channel=channel) == PEERS
        assert at(after, "loopchain_radiostation_leader_changes_total", channel=channel) >= 0
    assert (
        at(after, "loopchain_radiostation_admin_refused_total", reason="no_token")
        == at(before, "loopchain_radiostation_admin_refused_total", reason="no_token") + 1
    )
    assert "token" not in text.lower().replace("no_token", "").replace("wrong_token", "")
