"""The SCORE process's SerialRunner: blocking calls run one at a time on one thread of their own
(never the event loop's), a caller that stops waiting does not free the turn early, and a call's
error reaches its caller without stopping the next call."""

from __future__ import annotations

import asyncio
import threading

import pytest

from loopchain.scoreservice.process import SerialRunner
from tools.procs import wait_until


async def test_calls_run_one_at_a_time_on_one_thread_that_is_not_the_loops() -> None:
    runner = SerialRunner()
    running, most, threads = 0, 0, set()
    lock = threading.Lock()

    def call(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        threads.add(threading.get_ident())
        with lock:
            running -= 1
        return n * n

    results = await asyncio.gather(*(runner.call(lambda n=n: call(n)) for n in range(50)))
    assert results == [n * n for n in range(50)]
    assert most == 1
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_a_caller_that_stops_waiting_keeps_the_turn_until_its_call_ends() -> None:
    runner = SerialRunner()
    release, order = threading.Event(), []

    def slow() -> str:
        assert release.wait(60), "never released"
        order.append("slow")
        return "slow"

    first = asyncio.create_task(runner.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(first), 0.05)
    first.cancel()
    second = asyncio.create_task(runner.call(lambda: order.append("second") or "second"))
    await asyncio.sleep(0.05)
    assert order == []  # the second waits for the first call itself, not for its caller
    release.set()
    assert await second == "second"
    assert order == ["slow", "second"]


async def test_an_error_reaches_its_caller_and_the_next_call_runs() -> None:
    runner = SerialRunner()

    def fails() -> None:
        raise ValueError("the SCORE raised")

    with pytest.raises(ValueError, match="the SCORE raised"):
        await runner.call(fails)
    assert await runner.call(lambda: 42) == 42


def test_a_call_that_ends_after_its_loop_closed_ends_quietly() -> None:
    """The process stops (its loop closes) while a call runs: when the call ends, its answer
    has no one to go to, and the thread goes on without an error (before, it died with 'Event
    loop is closed' written to the log)."""
    runner = SerialRunner()
    started, release, after = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:

        def slow() -> int:
            started.set()
            release.wait(60)
            return 1

        async def begin() -> asyncio.Task[int]:
            task = asyncio.ensure_future(runner.call(slow))
            await asyncio.to_thread(started.wait, 60)
            return task

        loop = asyncio.new_event_loop()
        task = loop.run_until_complete(begin())
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
        release.set()
        runner._calls.put(after.set)  # runs once the call has tried to answer
        thread = runner._thread
        assert thread is not None
        wait_until(
            lambda: after.is_set() or not thread.is_alive(), 60, "the call to end one way or other"
        )
        assert after.is_set() and errors == [], errors
    finally:
        threading.excepthook = hook
        release.set()
