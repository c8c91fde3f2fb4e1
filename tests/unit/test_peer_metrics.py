"""The peer's metrics and monitoring events from four real channel services over the in-memory
transport: counters and histograms move with the load, gauges read the channel when scraped,
refusals are counted by a fixed reason, and a monitoring sink sees CreateTx, AddBlock and Query
with JSON-serialisable fields."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loopchain import monitor_log
from loopchain.consensus import messages as m
from loopchain.p2p.errors import RequestError
from loopchain.peer.channel_service import ChannelService
from loopchain.peer.metrics import MAX_PENDING_INTAKES, PeerMetrics
from loopchain.types.vote import Complaint
from tests.unit.test_channel_services import CHANNEL, Cluster, submit

pytestmark = pytest.mark.asyncio


def samples(service: ChannelService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the service's registry by (name, sorted labels)."""
    text = service.metrics.peer.exposition().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(service: ChannelService, name: str, **labels: str) -> float:
    return samples(service).get((name, tuple(sorted({"channel": CHANNEL, **labels}.items()))), 0.0)


async def test_metrics_move_with_the_load_and_gauges_read_the_channel(cluster: Cluster) -> None:
    service = cluster.services[0]
    assert value(service, "loopchain_block_height") == service.consensus.tip.height
    hashes = await submit(service, 30, "metrics")
    outcomes = await service.create_txs([{"bad": 1.5}, {"ok": 1}])  # a float is refused
    assert isinstance(outcomes[0], RequestError)
    assert value(service, "loopchain_refused_inputs_total", reason="invalid") == 1
    assert value(service, "loopchain_accepted_txs_total") == 31
    await cluster.wait(lambda: cluster.final_everywhere(hashes, [service]), "all final")
    await cluster.wait(lambda: not service.consensus.pool, "an empty pool")
    found = samples(service)
    key = (("channel", CHANNEL),)
    assert found[("loopchain_committed_txs_total", key)] >= 31
    assert found[("loopchain_committed_blocks_total", key)] >= 1
    assert found[("loopchain_block_height", key)] == service.store.tip_height()
    assert found[("loopchain_round", key)] == service.consensus.round
    assert found[("loopchain_tx_pool_size", key)] == 0
    assert found[("loopchain_tx_pool_bytes", key)] == 0
    assert found[("loopchain_round_timeout_seconds", key)] == service.consensus.paced_timeout()
    assert found[("loopchain_finalisation_seconds_count", key)] == 17  # 16 of 30, 1 of 1
    assert found[("loopchain_finalisation_seconds_sum", key)] > 0
    assert service.metrics.pending_intakes == 0


async def test_a_message_of_another_channel_is_counted_under_a_fixed_reason(
    cluster: Cluster,
) -> None:
    one = cluster.services[0]
    complaint = Complaint.create("other_channel", 5, None, cluster.signers[1])
    with pytest.raises(RequestError):
        one.receive(m.ComplaintReceived(complaint))
    assert value(one, "loopchain_refused_inputs_total", reason="wrong_channel") == 1
    names = {labels for (_, labels) in samples(one)}
    assert all(dict(labels).get("channel") in (None, CHANNEL) for labels in names)


async def test_the_intake_times_kept_are_bounded() -> None:
    metrics = PeerMetrics().channel("bounded")
    for start in range(0, MAX_PENDING_INTAKES + 500, 10):
        metrics.accepted(10, [n.to_bytes(32, "big") for n in range(start, start + 10)], now=1.0)
    assert metrics.pending_intakes == MAX_PENDING_INTAKES
    assert metrics.accepted_txs._value.get() == MAX_PENDING_INTAKES + 500


async def test_a_sink_sees_create_tx_add_block_and_query(cluster: Cluster) -> None:
    events: list[tuple[str, Mapping[str, Any]]] = []
    previous = monitor_log.set_sink(lambda name, fields: events.append((name, dict(fields))))
    try:
        service = cluster.services[0]
        hashes = await submit(service, 3, "monitored")
        await cluster.wait(lambda: cluster.final_everywhere(hashes, [service]), "final")
        with pytest.raises(RequestError):
            await service.query('{"method": "get"}')  # this channel runs no SCORE
    finally:
        monitor_log.set_sink(previous)
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for name, fields in events:
        json.dumps(fields)  # plain values only
        by_name.setdefault(name, []).append(fields)
    created = by_name["CreateTx"]
    assert any(e["count"] == 3 and e["channel"] == CHANNEL for e in created)
    assert {h.hex() for h in hashes} <= {h for e in created for h in e["tx_hashes"]}
    blocks = [e for e in by_name["AddBlock"] if e["channel"] == CHANNEL]
    final = {e["height"]: e for e in blocks}
    place = service.store.transaction_place(hashes[0])
    assert place is not None
    assert final[place.height]["hash"] == place.block_hash.hex()
    assert final[place.height]["tx_count"] >= 1 and final[place.height]["round"] >= 0
    query = by_name["Query"][-1]
    assert query["channel"] == CHANNEL and query["ok"] is False and query["elapsed"] >= 0
