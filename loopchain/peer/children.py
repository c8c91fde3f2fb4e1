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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from loopchain.lifecycle import CHILD_GROUP, terminate, until_exit_or

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

    def __init__(self, name: str) -> None:
        self.name = name  # for the log: "REST proxy on port 9000", "worker of channel a"
        self.restarts = 0
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()

    async def _spawn(self) -> asyncio.subprocess.Process:
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
        try:
            process = await self._spawn()
        except OSError as exc:
            log.error("could not start the %s: %s", self.name, exc)
            return None
        self.process = process
        log.info("started the %s (pid %d)", self.name, process.pid)
        try:
            await self._started(process)
            await until_exit_or(process, self._stopping)
        finally:
            await terminate(process, STOP_DEADLINE)
        return process.returncode

    async def stop(self) -> None:
        """SIGTERM the child (SIGKILL after STOP_DEADLINE) and stop starting it again."""
        self._stopping.set()
        if self.process is not None:
            await terminate(self.process, STOP_DEADLINE)


class RestProxy(Supervised):
    """The peer's REST proxy process (`command`), listening on `port`."""

    def __init__(self, command: Sequence[str], port: int) -> None:
        super().__init__(f"REST proxy on port {port}")
        self.command = list(command)
        self.port = port

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*self.command, process_group=CHILD_GROUP)

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
