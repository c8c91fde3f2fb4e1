"""The peer's supervised children (loopchain.peer.children) with real processes: a REST proxy
that exits is started again (after a backoff) until it stays up, one that refuses its
configuration (status 2) is not, and stop ends the one running."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from loopchain.peer.children import RestProxy
from tools.procs import pid_alive, wait_until_async

# exits 1 on its first two runs (as a proxy whose port is still held), then runs until stopped
FLAKY = """
import pathlib, sys, time
runs = pathlib.Path(sys.argv[1])
count = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(count))
if count <= 2:
    sys.exit(1)
time.sleep(3600)
"""


async def test_a_child_that_exits_is_started_again_until_it_stays_up(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proxy = RestProxy([sys.executable, "-c", FLAKY, str(runs)], 9000, 0)
    task = asyncio.create_task(proxy.run())

    async def third_run() -> bool:
        return runs.exists() and runs.read_text() == "3"

    try:
        await wait_until_async(third_run, 60, "the third run of the child")
        assert proxy.restarts == 2 and not task.done()
        assert proxy.process is not None and proxy.process.returncode is None
    finally:
        await proxy.stop()
        await asyncio.wait_for(task, 60)
    assert proxy.process.returncode is not None and not pid_alive(proxy.process.pid)


async def test_a_refused_configuration_is_not_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = RestProxy([sys.executable, "-c", "import sys; sys.exit(2)"], 9000, 0)
    await asyncio.wait_for(proxy.run(), 60)
    assert proxy.restarts == 0
    assert "refused its configuration (status 2" in caplog.text


async def test_a_child_that_cannot_be_spawned_is_tried_again_until_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = RestProxy([str(tmp_path / "no-such-program")], 9000, 0)
    task = asyncio.create_task(proxy.run())

    async def tried_twice() -> bool:
        return proxy.restarts >= 2

    try:
        await wait_until_async(tried_twice, 60, "two more tries")
        assert "could not start the REST proxy on port 9000" in caplog.text
        assert "exited (could not start); starting it again" in caplog.text
        assert proxy.process is None and not task.done()
    finally:
        await proxy.stop()
        await asyncio.wait_for(task, 60)
