"""Every process ends within its shutdown deadline of SIGTERM, even with its event loop stuck
(a watchdog thread ends it), and at once on a second signal: loopchain.lifecycle in a real
subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys

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


def test_a_second_signal_ends_the_process_at_once() -> None:
    proc = _start(3600.0)  # the watchdog would wait an hour
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None and proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "a second SIGTERM during shutdown: ending the process now" in err


def test_the_same_signal_again_at_once_is_the_same_request() -> None:
    # a process group's SIGTERM and the parent's forwarding of it: still a graceful shutdown
    proc = _start(0.5, repeat_window=3600.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None and proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "second" not in err
    assert "shutdown still running 0.5 s after SIGTERM: ending the process now" in err


def test_the_same_signal_after_the_window_ends_the_process_at_once() -> None:
    proc = _start(3600.0, repeat_window=0.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None and proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "a second SIGTERM during shutdown: ending the process now" in err
