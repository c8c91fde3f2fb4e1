"""Child processes of the peer that are started again whenever they exit (`Supervised`): the REST
proxy here, and the channel workers (loopchain.peer.workers).

A child killed, crashed or unable to start its work yet is started again after a backoff:
FIRST_BACKOFF, doubling up to MAX_BACKOFF, back to FIRST_BACKOFF once a child ran STABLE_AFTER
seconds. A child that exits with a status saying that trying again cannot help (its `_fatal`) is
not started again.

The REST proxy keeps no state of its own (it asks the peer, and keeps a channel's name for a few
seconds), so starting it again loses nothing.
It exits when it cannot listen on its port, which is what a peer started again at once after a
kill -9 meets: the dead peer's proxy holds the port until it has stopped too (it ends with its
peer, gracefully, within its shutdown deadline). Started again, the new proxy gets the port then;
a peer never runs on without its REST API.

A child that hangs is killed and started again too: each beats on a pipe from its event loop
(lifecycle.beat_to_parent), and one that gives no beat for CHILD_HANG_TIMEOUT seconds (its event
loop blocked or deadlocked, the process stopped) is SIGKILLed. The time is counted in turns of
the parent's own loop, so a parent too busy to read the beats kills nobody. A child starts
beating once it is up (a proxy listening, a worker with its channel open), so however long its
start takes on a slow machine or a long chain, it is not taken for hung.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

from loopchain.lifecycle import (
    BEAT_FD_ARG,
    BEAT_INTERVAL,
    CHILD_GROUP,
    PASSWORD_ON_STDIN,
    terminate,
    until_exit_or,
)

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.2
MAX_BACKOFF = 5.0
STABLE_AFTER = 30.0  # a child that ran this long starts again after FIRST_BACKOFF
STOP_DEADLINE = 4.0  # between SIGTERM and SIGKILL (within the peer's own shutdown deadline)
REST_CONFIG_REFUSED = 2  # rest_proxy.py's exit status for a configuration it cannot use


async def restart_loop(
    name: str,
    run_once: Callable[[], Awaitable[int | None]],
    stopping: asyncio.Event,
    fatal: Callable[[int | None], bool],
    on_restart: Callable[[], None],
) -> int | None:
    """Run `run_once` (one child, until it exits; its exit status, None when it could not start)
    again after each exit until `stopping` is set (then None) or `fatal` says of an exit status
    that trying again cannot help (then that status)."""
    loop = asyncio.get_running_loop()
    backoff = FIRST_BACKOFF
    while not stopping.is_set():
        started = loop.time()
        code = await run_once()
        if stopping.is_set():
            return None
        if fatal(code):
            return code
        if loop.time() - started > STABLE_AFTER:
            backoff = FIRST_BACKOFF
        on_restart()
        log.warning("%s exited (%s); starting it again in %.1f s", name, ended(code), backoff)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(backoff):
                await stopping.wait()
        backoff = min(backoff * 2, MAX_BACKOFF)
    return None


def ended(code: int | None) -> str:
    """How a child ended, for the log."""
    if code is None:
        return "could not start"
    return f"signal {-code}" if code < 0 else f"status {code}"


class Supervised:
    """A child process kept running by `restart_loop` until `stop`; subclasses say how it starts
    (`_spawn`), what it is told once started (`_started`) and which exits end it (`_fatal`)."""

    def __init__(self, name: str, hang_timeout: float) -> None:
        self.name = name  # for the log: "REST proxy on port 9000", "worker of channel a"
        self.hang_timeout = hang_timeout  # CHILD_HANG_TIMEOUT; 0: a hung child is left alone
        self.restarts = 0
        self.hung = 0  # times it was killed for giving no beat
        self.beating = False  # whether the running child has begun beating
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()

    async def _spawn(self, beat_fd: int) -> asyncio.subprocess.Process:
        """Start the child, handing it `beat_fd` (BEAT_FD_ARG, in pass_fds) to beat on; -1: none."""
        raise NotImplementedError

    async def _started(self, process: asyncio.subprocess.Process) -> None:
        """Called once the process runs (a worker gets its spec on stdin)."""

    def _fatal(self, code: int | None) -> bool:
        """True when an exit with `code` means that starting the child again cannot help."""
        return False

    async def keep_running(self) -> int | None:
        """Start the child, and start it again after each exit, until `stop` (then None) or a
        fatal exit (then its status)."""
        return await restart_loop(
            self.name, self._run_once, self._stopping, self._fatal, self._count_restart
        )

    def _count_restart(self) -> None:
        self.restarts += 1

    async def _run_once(self) -> int | None:
        """Run one process until it exits or `stop`; its exit status (None: could not start)."""
        self.beating = False
        beats = beat_fd = -1
        try:
            try:
                if self.hang_timeout > 0:
                    beats, beat_fd = os.pipe()
                process = await self._spawn(beat_fd)
            except OSError as exc:  # (out of descriptors too: tried again, as a failed start)
                log.error("could not start the %s: %s", self.name, exc)
                return None
            finally:
                if beat_fd >= 0:
                    os.close(beat_fd)
            self.process = process
            log.info("started the %s (pid %d)", self.name, process.pid)
            watching = asyncio.ensure_future(self._watch(process, beats)) if beats >= 0 else None
            try:
                await self._started(process)
                await until_exit_or(process, self._stopping)
            finally:
                if watching is not None:
                    watching.cancel()
                    await asyncio.gather(watching, return_exceptions=True)
                await terminate(process, STOP_DEADLINE)
            return process.returncode
        finally:
            if beats >= 0:
                os.close(beats)

    async def _watch(self, process: asyncio.subprocess.Process, beats: int) -> None:
        """SIGKILL `process` once it has given no beat on `beats` for `hang_timeout` seconds
        since its last, counted in BEAT_INTERVAL turns of this loop."""
        loop = asyncio.get_running_loop()
        heard = 0

        def on_beats() -> None:
            nonlocal heard
            try:
                got = os.read(beats, 4096)
            except BlockingIOError:
                return
            if got:
                heard += len(got)
            else:  # the child closed its end (it has exited): process.wait() says so
                loop.remove_reader(beats)

        os.set_blocking(beats, False)
        loop.add_reader(beats, on_beats)
        try:
            silent = 0.0  # no limit before the first beat: a child begins beating once it is up
            while True:
                await asyncio.sleep(BEAT_INTERVAL)
                if heard:
                    heard, silent, self.beating = 0, 0.0, True
                    continue
                silent += BEAT_INTERVAL
                if self.beating and silent >= self.hang_timeout and process.returncode is None:
                    log.error(
                        "the %s (pid %d) gave no sign of life for %.0f s (its event loop "
                        "blocked, or the process stopped): killing it to start it again",
                        self.name,
                        process.pid,
                        silent,
                    )
                    self.hung += 1
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    return
        finally:
            loop.remove_reader(beats)

    async def stop(self) -> None:
        """SIGTERM the child (SIGKILL after STOP_DEADLINE) and stop starting it again."""
        self._stopping.set()
        if self.process is not None:
            await terminate(self.process, STOP_DEADLINE)


async def hand_over(process: asyncio.subprocess.Process, data: bytes) -> None:
    """Write `data` to a child started with a stdin pipe, and close it (what the child needs
    and no other process may read: a worker's spec, a key's password); a child already gone
    takes nothing."""
    assert process.stdin is not None
    with contextlib.suppress(ConnectionError):
        process.stdin.write(data)
        await process.stdin.drain()
        process.stdin.close()


class RestProxy(Supervised):
    """The peer's REST proxy process (`command`), listening on `port`."""

    def __init__(
        self, command: Sequence[str], port: int, hang_timeout: float, password: str | None = None
    ) -> None:
        super().__init__(f"REST proxy on port {port}", hang_timeout)
        self.command = list(command)
        self.port = port
        self._password = password  # the TLS key's, handed on stdin (see rest.main)

    async def _spawn(self, beat_fd: int) -> asyncio.subprocess.Process:
        beating = (BEAT_FD_ARG, str(beat_fd)) if beat_fd >= 0 else ()
        told = (PASSWORD_ON_STDIN,) if self._password is not None else ()
        return await asyncio.create_subprocess_exec(
            *self.command,
            *beating,
            *told,
            stdin=asyncio.subprocess.PIPE if told else None,
            pass_fds=(beat_fd,) if beat_fd >= 0 else (),
            process_group=CHILD_GROUP,
        )

    async def _started(self, process: asyncio.subprocess.Process) -> None:
        if self._password is not None:
            await hand_over(process, self._password.encode() + b"\n")

    def _fatal(self, code: int | None) -> bool:
        return code == REST_CONFIG_REFUSED

    async def run(self) -> None:
        """Keep the proxy running until `stop`."""
        code = await self.keep_running()
        if code is not None:
            log.error(
                "REST proxy on port %d refused its configuration (status %d, its reason above); "
                "this peer serves no REST API",
                self.port,
                code,
            )
