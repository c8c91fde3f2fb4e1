"""Every process ends within its shutdown deadline of SIGTERM, even with its event loop stuck
(a watchdog thread ends it), and at once on a second signal: loopchain.lifecycle in a real
subprocess."""

from __future__ import annotations

import ctypes
import os
import platform
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


def _to_thread(pid: int, tid: int, signum: int) -> None:
    """Send `signum` to one thread of `pid` (tgkill), not to the process (the kernel picks)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, {signum})")


SYS_TGKILL = 234  # x86-64


@pytest.mark.skipif(platform.machine() != "x86_64", reason="tgkill's number is x86-64's")
@pytest.mark.parametrize("first_to_a_thread", [False, True], ids=["first-to-process", "both"])
def test_a_signal_that_lands_on_another_thread_is_heard_while_the_main_thread_is_blocked(
    first_to_a_thread: bool,
) -> None:
    """The kernel hands a process's signal to any of its threads. Python runs its handlers in the
    main thread only, and one delivered to another thread (gRPC's, the watchdog) does not wake a
    main thread blocked in a system call: a second SIGTERM during a stuck shutdown was unheard
    until the deadline (an hour here; the suite saw it, once, as a test timing out)."""
    proc = _start(3600.0)
    others = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
    assert others, "the process has no thread but its main one"
    if first_to_a_thread:
        _to_thread(proc.pid, others[0], signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None and proc.stdout.readline() == "stopping\n"
    _to_thread(proc.pid, others[0], signal.SIGTERM)  # the main thread sleeps in a system call
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "a second SIGTERM during shutdown: ending the process now" in err


LOOP_CLOSED = """
import asyncio, time
from loopchain.lifecycle import stop_on_signals

async def main() -> None:
    stop_on_signals(asyncio.get_running_loop(), asyncio.Event(), deadline=0.5)

asyncio.run(main())
print("ready", flush=True)
time.sleep(3600)  # the loop is closed; the interpreter's ending is what is stuck (a thread's join)
"""

LOGGING_STUCK = """
import asyncio, logging, time
from loopchain.lifecycle import stop_on_signals

logging.basicConfig(level=logging.INFO)

async def main() -> None:
    stop = asyncio.Event()
    stop_on_signals(asyncio.get_running_loop(), stop, deadline=0.5)
    print("ready", flush=True)
    await stop.wait()
    print("stopping", flush=True)
    logging.getLogger().handlers[0].acquire()  # a log write blocked on a full pipe holds this
    time.sleep(3600)

asyncio.run(main())
"""

WAKEUP_TAKEN = """
import asyncio, signal, time
from loopchain.lifecycle import stop_on_signals

async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_on_signals(loop, stop, deadline=0.5)
    loop.add_signal_handler(signal.SIGUSR1, print)  # takes the signal wake-up descriptor
    print("ready", flush=True)
    await stop.wait()
    print("stopping", flush=True)
    time.sleep(3600)

asyncio.run(main())
"""

WAKEUP_TAKEN_BEFORE = """
import asyncio, signal, socket, time
from loopchain.lifecycle import stop_on_signals

async def main() -> None:
    stop = asyncio.Event()
    other, _ = socket.socketpair()
    other.setblocking(False)
    signal.set_wakeup_fd(other.fileno())  # something of the process's own, before the watchdog
    stop_on_signals(asyncio.get_running_loop(), stop, deadline=0.5)
    print("ready", flush=True)
    await stop.wait()
    print("stopping", flush=True)
    time.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("script", "said", "warned"),
    [
        # the watchdog's call into a closed loop killed it: every later signal was a no-op
        (LOOP_CLOSED, "", ("shutdown still running 0.5 s after SIGTERM",)),
        # the reason is logged under the handlers' locks: a stuck write held up the ending too
        (LOGGING_STUCK, "stopping\n", ()),  # nothing logged: logging is what is stuck
        # asyncio's add_signal_handler took the wake-up descriptor: SIGTERM was lost
        (
            WAKEUP_TAKEN,
            "stopping\n",
            ("taken from the shutdown watchdog", "shutdown still running 0.5 s after SIGTERM"),
        ),
        # taken before it: the watchdog takes it over, and says so
        (
            WAKEUP_TAKEN_BEFORE,
            "stopping\n",
            ("taken before the shutdown watchdog", "shutdown still running 0.5 s after SIGTERM"),
        ),
    ],
    ids=["loop-closed", "logging-stuck", "wakeup-descriptor-taken", "taken-before"],
)
def test_the_deadline_ends_the_process_however_its_shutdown_is_stuck(
    script: str, said: str, warned: tuple[str, ...]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)  # ends by itself, long before this
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == said
    assert "Traceback" not in err
    assert all(words in err for words in warned), err
