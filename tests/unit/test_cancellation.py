"""Stopping is never swallowed: a task cancelled in the same turn as the event it waits for
finishes cancelled (Python 3.11's asyncio.wait_for returns the event's result instead, and the
peer then ignored SIGTERM with its SCORE runtime waiting for a stopped SCORE)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from loopchain.blockchain.block_store import BlockStore
from loopchain.configure import load_config
from loopchain.peer.score_runtime import ScoreRuntime
from loopchain.storage.memory import MemoryStore


@pytest.mark.asyncio
async def test_execute_loop_cancelled_as_its_wake_event_fires_ends(tmp_path: Path) -> None:
    runtime = ScoreRuntime(
        config=load_config(environ={}),
        channel="cancel_channel",
        store=BlockStore(MemoryStore(), "cancel_channel"),
        package_name="no/such-package",  # no SCORE process: the loop only waits for blocks
        storage_dir=tmp_path,
        port=0,
        on_executed=lambda event: None,
    )
    task = asyncio.create_task(runtime.run())
    for _ in range(100):  # a few turns of the loop, until it waits for a final block
        if runtime._wake._waiters:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0)
    assert runtime._wake._waiters, "the loop never waited: the race below would prove nothing"  # type: ignore[attr-defined]
    runtime.block_final()  # the wake event fires ...
    task.cancel()  # ... in the same turn as the stop
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done, "the cancelled loop kept running"
    assert task.cancelled()


def test_the_node_code_uses_asyncio_timeout_not_wait_for() -> None:
    root = Path(__file__).resolve().parents[2] / "loopchain"
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py")
        if "protos" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "asyncio.wait_for(" in line
    ]
    assert not offenders, f"asyncio.wait_for can swallow a cancellation (Python 3.11): {offenders}"
