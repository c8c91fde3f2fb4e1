"""A SCORE process whose state store fails (its disk fills up) ends, and the process its
supervisor starts next opens the store again and goes on from the last commit: a LevelDB store
takes no writes after a failed one until it is reopened. On a real 4 MB tmpfs (root only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopchain.scoreservice.client import ScoreRejected, ScoreUnavailable
from tests._mounts import Filler, mount_tmpfs, tmpfs_unavailable, unmount
from tests.integration._score_helpers import (
    READY_DEADLINE,
    Blocks,
    make_package,
    make_supervisor,
    running,
    score_config,
    set_op,
)
from tests.integration.test_score_process import _reloaded
from tools.procs import wait_until_async


async def test_a_failed_state_store_ends_the_process_and_the_next_one_goes_on(
    tmp_path: Path,
) -> None:
    reason = tmpfs_unavailable()
    if reason is not None:
        pytest.skip(f"cannot mount a tmpfs (needs root): {reason}")
    disk = tmp_path / "disk"
    assert mount_tmpfs(disk, 4) is None
    try:
        package, chain = make_package(tmp_path), Blocks()
        block0, block1 = chain.next(set_op("a", "1")), chain.next(set_op("a", "x" * 200_000))
        supervisor = make_supervisor(tmp_path, score_config(), package, state="disk/state")
        async with running(supervisor):
            client = supervisor.client
            await client.invoke_block(block0)
            await client.commit_block(0, block0.hash.hex())
            pid = supervisor.pid
            assert pid is not None
            filler = Filler(disk)
            assert filler.top_up() == 0
            await client.invoke_block(block1)
            with pytest.raises((ScoreUnavailable, ScoreRejected), match="state store failed"):
                await client.commit_block(1, block1.hash.hex())
            filler.remove()  # space is back: a new process opens the store again
            await wait_until_async(
                lambda: _reloaded(supervisor, pid), READY_DEADLINE, "the next SCORE process"
            )
            assert (await client.status()).executed_height == 0
            await client.invoke_block(block1)
            assert (await client.commit_block(1, block1.hash.hex())).executed_height == 1
            assert await client.query('{"key": "a"}') == '"' + "x" * 200_000 + '"'
    finally:
        unmount(disk)
