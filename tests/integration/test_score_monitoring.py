"""The SCORE runtime's monitoring events and metrics with a real SCORE process and a real LevelDB
store: each executed block is an InvokeResult event (height, ok and failed counts, elapsed) and one
observation of the execution-time histogram; a package that cannot load is an Error event."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from loopchain import monitor_log
from loopchain.blockchain.block_store import BlockStore
from loopchain.configure import load_config
from loopchain.peer.metrics import PeerMetrics
from loopchain.peer.score_runtime import ScoreRuntime
from loopchain.storage.leveldb import LevelDBStore
from tests.integration._storage_helpers import CHANNEL, ChainBuilder
from tests.integration.test_score_runtime import BLOCKS, _executed_to, _fill, running
from tools.procs import ROOT, wait_until_async

Events = list[tuple[str, Mapping[str, Any]]]


def _runtime(tmp_path: Path, store: BlockStore, package: str, metrics: PeerMetrics) -> ScoreRuntime:
    config = load_config(
        environ={}, overrides={"DEFAULT_SCORE_REPOSITORY_PATH": str(ROOT / "score")}
    )
    return ScoreRuntime(
        config=config,
        channel=CHANNEL,
        store=store,
        package_name=package,
        storage_dir=tmp_path / "channel",
        port=1,
        on_executed=lambda event: None,
        metrics=metrics.channel(CHANNEL),
    )


@pytest.mark.timeout(120)
async def test_each_executed_block_is_an_invoke_result_and_a_timing(tmp_path: Path) -> None:
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    metrics = PeerMetrics()
    events: Events = []
    previous = monitor_log.set_sink(lambda name, fields: events.append((name, dict(fields))))
    try:
        runtime = _runtime(tmp_path, store, "sample/kvstore", metrics)
        async with running(runtime):
            await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "every block executed")
    finally:
        monitor_log.set_sink(previous)
    invoked = [fields for name, fields in events if name == "InvokeResult"]
    assert [e["height"] for e in invoked] == list(range(BLOCKS))
    for event in invoked:
        assert event["channel"] == CHANNEL
        assert (event["ok"], event["failed"]) == (3, 0)  # three kvstore sets per block
        assert event["elapsed"] >= 0
    count = metrics.registry.get_sample_value(
        "loopchain_score_execution_seconds_count", {"channel": CHANNEL}
    )
    assert count == BLOCKS


@pytest.mark.timeout(60)
async def test_a_package_that_cannot_load_is_an_error_event(tmp_path: Path) -> None:
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    events: Events = []
    previous = monitor_log.set_sink(lambda name, fields: events.append((name, dict(fields))))
    try:
        _runtime(tmp_path, store, "no/such", PeerMetrics())
    finally:
        monitor_log.set_sink(previous)
    errors = [fields for name, fields in events if name == "Error"]
    assert len(errors) == 1
    assert errors[0]["kind"] == "score_package" and "no/such" in errors[0]["message"]
