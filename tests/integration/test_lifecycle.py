"""Every process ends within its shutdown deadline of SIGTERM, even with its event loop stuck
(a watchdog thread ends it), and at once on a second signal: loopchain.lifecycle in a real
subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tools.procs import ROOT

STUCK_SHUTDOWN = """
import asyncio, sys, time
from loopchain.lifecycle import stop_on_signals

async def main() -> None:
    stop = asyncio.Event()
    stop_on_signals(
        asyncio.get_running_loop(), stop, deadline=float(sys.argv[1]), repeat_window=float(sys.argv[2])
    )
    print("ready", flush=True)
    await stop.wait()
    print("stopping", flush=True)
    time.sleep(3600)  # a shutdown that never ends, holding the event loop

asyncio.run(main())
"""


def _start(deadline: float, repeat_window: float = 0.0) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_SHUTDOWN, str(deadline), str(repeat_window)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_a_stuck_shutdown_ends_at_its_deadline() -> None:
    proc = _start(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)  # ends by itself, long before this
    assert out == "stopping\n"
    assert proc.returncode == 0
    assert "shutdown still running 0.5 s after SIGTERM: ending the process now" in err


@pytest.mark.parametrize(
    ("first", "deadline", "repeat_window", "ending"),
    [
        # another signal later during shutdown: at once (the watchdog would wait an hour)
        (signal.SIGINT, 3600.0, 0.0, "a second SIGTERM during shutdown: ending the process now"),
        # another signal at once (Ctrl-C's SIGINT to the group, then a parent's SIGTERM): still
        # the graceful shutdown, ended only by its deadline
        (signal.SIGINT, 0.5, 3600.0, "shutdown still running 0.5 s after SIGINT: ending"),
        # the same one after the repeat window: an operator insisting, at once
        (signal.SIGTERM, 3600.0, 0.0, "a second SIGTERM during shutdown: ending the process now"),
        # the same one at once (a process group's SIGTERM and the parent's forwarding of it):
        # still the graceful shutdown, ended only by its deadline
        (signal.SIGTERM, 0.5, 3600.0, "shutdown still running 0.5 s after SIGTERM: ending"),
    ],
    ids=["another-later", "another-at-once", "same-later", "same-at-once"],
)
def test_a_second_signal_during_shutdown(
    first: signal.Signals, deadline: float, repeat_window: float, ending: str
) -> None:
    proc = _start(deadline, repeat_window)
    proc.send_signal(first)
    assert proc.stdout is not None and proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert ending in err
    if "still running" in ending:
        assert "second" not in err
