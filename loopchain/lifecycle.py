"""How the node's processes end: a child ends when its parent ends, however the parent ends
(kill -9 included), so a restarted parent always gets its ports back; and every process ends
within SHUTDOWN_DEADLINE seconds of SIGTERM, busy or not."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import select
import signal
import socket
import threading
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
log = logging.getLogger(__name__)


def keep_memory_private() -> bool:
    """Make this process non-dumpable (prctl PR_SET_DUMPABLE 0): processes of the same user without
    CAP_SYS_PTRACE can no longer read its memory, environment or open files through /proc or ptrace.
    Core dumps are off too. False when the system does not allow it."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return bool(prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Ask Linux to send this process `sig` when its parent dies; False when the parent
    `parent_pid` is already gone (the caller should exit at once)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    return not parent_pid or os.getppid() == parent_pid


SHUTDOWN_DEADLINE = 5.0  # seconds a process has after SIGTERM before it ends at once
# A process group's signal and a parent's forwarding of it reach a process together (Ctrl-C on
# ./localnet.sh: SIGINT to the group, then SIGTERM from the script; or a supervisor signalling
# the group): a signal this soon after the first is the same request, not an operator insisting.
REPEAT_WINDOW = 1.0
# A process's children (REST proxy, channel workers, SCORE processes) start in a process group
# of their own (`process_group=CHILD_GROUP`): a terminal's Ctrl-C or a signal to the parent's
# signals a process raises on itself when it crashes (a C extension's fault, an abort): a crash,
# not a kill from outside (kill -9, the OOM killer, SIGTERM) nor a deadline's alarm
CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL}
)
# group reaches the parent alone, which stops its children itself, in order; none is caught by
# SIGINT while it is still importing. They end with their parent however it ends (PDEATHSIG).
CHILD_GROUP = 0


def stop_on_signals(
    loop: asyncio.AbstractEventLoop,
    stop: asyncio.Event,
    deadline: float = SHUTDOWN_DEADLINE,
    repeat_window: float = REPEAT_WINDOW,
) -> None:
    """SIGTERM and SIGINT set `stop` for a graceful shutdown, which gets `deadline` seconds: a
    watchdog thread (which a busy or stuck event loop cannot hold up) then ends the process at
    once, as does a second signal `repeat_window` seconds or more after the first (sooner, it is
    the same request come another way: Ctrl-C reaches a whole process group with SIGINT while
    ./localnet.sh forwards SIGTERM). Every write of the node is one synced batch, so ending there
    tears nothing; it only skips the goodbyes.

    The watchdog hears the signals itself, on the signal wake-up descriptor that Python's C-level
    handler writes each signal's number to, whichever thread the kernel delivers it to. Python
    runs its signal handlers in the main thread only, and a signal delivered to another thread
    (gRPC's, the watchdog) does not interrupt a main thread blocked in a system call: a second
    SIGTERM during a stuck shutdown went unheard until the deadline."""
    heard, told = socket.socketpair()
    told.setblocking(False)

    def watchdog(heard: socket.socket, _told: socket.socket) -> None:  # both held open here
        first: tuple[str, float] | None = None
        while True:
            left = None
            if first is not None:
                left = first[1] + deadline - time.monotonic()
                if left <= 0:
                    _end_now(f"shutdown still running {deadline:g} s after {first[0]}")
            if not select.select([heard], [], [], left)[0]:
                continue
            for signum in heard.recv(64):
                if signum not in SIGNALS:
                    continue
                name, now = signal.Signals(signum).name, time.monotonic()
                if first is None:
                    first = (name, now)
                    # a loop already closed (the interpreter is ending): the deadline still runs
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(stop.set)
                elif now - first[1] >= repeat_window:
                    _end_now(f"a second {name} during shutdown")
                # sooner: the same request again, by another way

    # started now, not at the signal: a process out of memory may not start a thread then; and
    # before the signals are routed to it (a thread that cannot start leaves them as they were)
    threading.Thread(
        target=watchdog, args=(heard, told), name="shutdown-watchdog", daemon=True
    ).start()
    # the descriptor first: a signal between the two finds the old handler, not a silent one
    if signal.set_wakeup_fd(told.fileno(), warn_on_full_buffer=False) != -1:
        log.warning("the signal wake-up descriptor was taken before the shutdown watchdog's")
    for signum in SIGNALS:
        signal.signal(signum, functools.partial(_heard_by_watchdog, told.fileno()))


SIGNALS = (signal.SIGTERM, signal.SIGINT)
END_LOG_WAIT = 1.0  # seconds the reason may take to reach the log before the process ends anyway


def _heard_by_watchdog(told: int, signum: int, _frame: object) -> None:
    """The Python-level handler, in the main thread, when it gets to run: Python's C handler has
    already told the watchdog through the wake-up descriptor; if something has since taken that
    descriptor (asyncio's add_signal_handler would), the handler tells the watchdog itself and
    takes the descriptor back: the watchdog and asyncio's signal handlers do not share a
    process (its handlers are not run once the descriptor is taken back)."""
    with contextlib.suppress(OSError, ValueError):
        if signal.set_wakeup_fd(told, warn_on_full_buffer=False) != told:
            log.warning("the signal wake-up descriptor was taken from the shutdown watchdog")
            os.write(told, bytes([signum]))


def _end_now(reason: str) -> None:
    """End the process now, having logged why, unless logging itself is what is stuck (a handler
    lock held by a write to a full pipe): the log gets END_LOG_WAIT seconds, in a thread."""

    def tell() -> None:
        log.warning("%s: ending the process now", reason)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()

    try:
        teller = threading.Thread(target=tell, name="shutdown-reason", daemon=True)
        teller.start()
        teller.join(END_LOG_WAIT)
    finally:
        os._exit(0)


BEAT_INTERVAL = 1.0  # seconds between a child's beats to its parent (beat_to_parent)
BEAT_FD_ARG = "--beat-fd"  # the option naming the pipe a child beats on
# the option telling a child the TLS key's password comes as the first line of its stdin (a
# child's environment is readable by other processes of its user, through /proc)
PASSWORD_ON_STDIN = "--tls-password-stdin"


def beat_to_parent(fd: int) -> None:
    """Write a byte to `fd`, a pipe its parent reads (loopchain.peer.children), every
    BEAT_INTERVAL from the running event loop, for as long as the loop turns: a loop that stops
    turning (blocked, deadlocked, the process stopped) stops the beats, and the parent kills the
    child to start it again. Nothing when `fd` is negative (no parent watching)."""
    if fd < 0:
        return
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()

    def beat() -> None:
        try:
            os.write(fd, b".")
        except BlockingIOError:  # the pipe is full: the parent has not read the last beats yet
            pass
        except OSError:  # the parent is gone (it closed its end)
            return
        loop.call_later(BEAT_INTERVAL, beat)

    beat()


async def until_exit_or(process: asyncio.subprocess.Process, event: asyncio.Event) -> None:
    """Wait until `process` exits or `event` is set, whichever comes first."""
    exited = asyncio.ensure_future(process.wait())
    stopping = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (exited, stopping):
            task.cancel()
        await asyncio.gather(exited, stopping, return_exceptions=True)


def signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    """Send `signum` to the process group `process` leads (it was started with
    `process_group=CHILD_GROUP`): the process and whatever it forked that is still in the group,
    also once the process itself has exited. Nothing when no one of the group is left (or none
    may be signalled)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


async def terminate(
    process: asyncio.subprocess.Process, deadline: float, *, group: bool = False
) -> None:
    """SIGTERM the process and wait; SIGKILL it when it does not exit within `deadline` s.
    With `group` (a process leading its own group, see signal_group) both signals go to its
    group, and what is left of the group once the process has exited, however it exited, is
    SIGKILLed: processes it forked hold its descriptors and must not outlive it."""

    def send(signum: int) -> None:
        if group:
            signal_group(process, signum)
        else:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    if process.returncode is None:
        send(signal.SIGTERM)
        try:
            async with asyncio.timeout(deadline):
                await process.wait()
        except TimeoutError:
            send(signal.SIGKILL)
            await process.wait()
    if group:
        signal_group(process, signal.SIGKILL)
