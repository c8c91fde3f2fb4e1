"""A peer's children beat to it (real child processes): one that stops beating for its
CHILD_HANG_TIMEOUT (its event loop blocked, the process stopped) is killed and started again,
one that beats is left alone however long its parent's own loop was held up, and one that has
not begun beating (still starting) is not taken for hung. Before, a hung REST proxy or channel
worker was left as it was: only its exit got it started again."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from loopchain.lifecycle import BEAT_FD_ARG, CHILD_GROUP
from loopchain.peer import children
from loopchain.peer.children import Supervised
from tools.procs import wait_until_async

HANG = 3.0  # the least CHILD_HANG_TIMEOUT allowed

# A child that beats from its event loop, then, once BLOCK_AFTER is in its environment and
# the file it names exists, blocks its loop for good (a handler that never returns).
CHILD = """
import asyncio, os, sys, time
from loopchain.lifecycle import beat_to_parent

async def main(fd):
    if os.environ.get("QUIET_START"):
        time.sleep(3600)  # still starting: no beat yet
    beat_to_parent(fd)
    block = os.environ.get("BLOCK_AFTER")
    while not (block and os.path.exists(block)):
        await asyncio.sleep(0.05)
    time.sleep(3600)

asyncio.run(main(int(sys.argv[2])))
"""


class _Child(Supervised):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__("test child", HANG)
        self.env = {**os.environ, **env}
        self.pids: list[int] = []

    async def _spawn(self, beat_fd: int) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-c", CHILD, BEAT_FD_ARG, str(beat_fd)),
            pass_fds=(beat_fd,),
            process_group=CHILD_GROUP,
            env=self.env,
        )
        self.pids.append(process.pid)
        return process


async def _running(child: _Child) -> asyncio.Task[int | None]:
    running = asyncio.create_task(child.keep_running())

    async def started() -> bool:
        return bool(child.pids)

    await wait_until_async(started, 30, "the child to start")
    return running


async def _beating(child: _Child) -> None:
    async def beating() -> bool:
        return child.beating

    await wait_until_async(beating, 30, "the child's first beat")


async def _replaced(child: _Child, what: str) -> None:
    async def replaced() -> bool:
        return len(child.pids) >= 2

    await wait_until_async(replaced, 60, what)


async def _passed(seconds: float) -> None:
    """Let `seconds` pass with the event loop turning (to see that something does not happen)."""
    end = time.monotonic() + seconds

    async def passed() -> bool:
        return time.monotonic() > end

    await wait_until_async(passed, seconds + 30, f"{seconds} s to pass")


async def _stopped(child: _Child, running: asyncio.Task[int | None]) -> None:
    await child.stop()
    assert await running is None


async def test_a_child_whose_loop_blocks_is_killed_and_started_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    block = tmp_path / "block"
    child = _Child({"BLOCK_AFTER": str(block)})
    running = await _running(child)
    try:
        await _beating(child)
        first = child.pids[0]
        process = child.process
        assert process is not None
        block.touch()  # from now on, every run of the child blocks right after its first beat
        with caplog.at_level(logging.ERROR, logger="loopchain.peer.children"):
            await _replaced(child, "the hung child to be killed and started again")
        assert process.returncode == -signal.SIGKILL
        assert child.hung == 1 and child.restarts == 1
        assert f"the test child (pid {first}) gave no sign of life for 3 s" in caplog.text
    finally:
        await _stopped(child, running)


async def test_a_stopped_child_is_killed_and_started_again() -> None:
    child = _Child({})
    running = await _running(child)
    try:
        await _beating(child)
        process = child.process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        await _replaced(child, "the stopped child to be killed and started again")
        assert process.returncode == -signal.SIGKILL and child.hung == 1
    finally:
        await _stopped(child, running)


async def test_a_parent_held_up_longer_than_the_timeout_kills_no_beating_child() -> None:
    """The parent's loop blocked for three times HANG: the beats wait in the pipe, and are read
    before the watchdog's next turn, so the healthy child is not taken for hung."""
    child = _Child({})
    running = await _running(child)
    try:
        await _beating(child)
        first = child.pids[0]
        time.sleep(3 * HANG)  # the whole event loop held up
        await _passed(2.0)  # a few turns of the watchdog
        assert child.pids == [first] and child.hung == 0
    finally:
        await _stopped(child, running)


async def test_a_child_that_has_not_begun_beating_is_not_taken_for_hung() -> None:
    """A child still starting (a worker opening a long chain) gives no beat yet: it is left to
    start however long that takes."""
    child = _Child({"QUIET_START": "1"})
    running = await _running(child)
    try:
        process = child.process
        assert process is not None
        await _passed(3 * HANG)
        assert process.returncode is None and child.pids == [process.pid] and child.hung == 0
        assert not child.beating
    finally:
        await _stopped(child, running)


async def test_a_child_that_cannot_have_its_pipe_is_tried_again_as_a_failed_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of descriptors for the beat pipe (EMFILE) is a start that failed: logged and tried
    again after the backoff, as a failed spawn is. The first version let the error out of the
    restart loop: the REST proxy's task died, and a worker's took its whole peer down (review)."""
    made = os.pipe

    def pipe() -> tuple[int, int]:
        monkeypatch.setattr(children.os, "pipe", made)  # the next start gets one
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(children.os, "pipe", pipe)
    child = _Child({})
    with caplog.at_level(logging.ERROR, logger="loopchain.peer.children"):
        running = await _running(child)
    try:
        await _beating(child)
        assert child.restarts == 1 and "could not start the test child" in caplog.text
    finally:
        await _stopped(child, running)
