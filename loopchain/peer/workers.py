"""A channel's worker process: the peer runs it, hands it the calls naming its channel, and starts
it again whenever it exits.

A worker is a peer of one channel (`python -m loopchain.peer.worker`): its own event loop, block
store, SCORE process, links to the other peers and heartbeats to the RadioStation, so that channels
use separate cores and one channel's load or crash does not hold up another. It serves on a unix
socket in a directory of mode 0700 with an unguessable name; what it needs (the channel's grant,
the key's password) comes on its stdin, never in its arguments or environment. It ends when the
peer ends, however the peer ends.

A worker killed or crashed is started again after a backoff (what it acknowledged is in its store
and intake log); one that exits with status 1 or 2 (its storage failed, or it could not start)
stops the peer, as a channel in the peer's own process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopchain.configure import Config
from loopchain.lifecycle import CHILD_GROUP
from loopchain.p2p.worker_link import WorkerLink
from loopchain.scoreservice.supervisor import (
    MAX_SOCKET_PATH_BYTES,
    private_dir,
    terminate,
    until_exit_or,
)

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.2
MAX_BACKOFF = 5.0
STABLE_AFTER = 30.0  # a worker that ran this long starts again after FIRST_BACKOFF
STOP_DEADLINE = 4.0  # between SIGTERM and SIGKILL (within the peer's own shutdown deadline)
FATAL_EXIT_CODES = (1, 2)  # its storage failed, or it could not start: the peer stops too
SOCKET_DIR_PREFIX = "loopchain-worker-"


class ChannelWorker:
    """The worker process of `channel`, supervised: `run` keeps it running until `stop`."""

    def __init__(
        self,
        channel: str,
        spec: dict[str, Any],
        config: Config,
        on_fatal: Callable[[str], None],
    ) -> None:
        self.channel = channel
        self.socket_dir = Path(tempfile.gettempdir()).absolute() / (
            SOCKET_DIR_PREFIX + secrets.token_hex(8)
        )
        self.socket_path = self.socket_dir / "peer.sock"
        size = len(os.fsencode(str(self.socket_path)))
        if size > MAX_SOCKET_PATH_BYTES:
            raise OSError(
                f"channel worker socket path {self.socket_path} is {size} bytes long; unix "
                f"sockets allow {MAX_SOCKET_PATH_BYTES}: set TMPDIR to a shorter directory"
            )
        self._spec = json.dumps({**spec, "socket": str(self.socket_path)}).encode()
        self.link = WorkerLink(channel, self.socket_path, config)
        self._on_fatal = on_fatal
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self.restarts = 0

    async def run(self) -> None:
        """Start the worker, and start it again after each exit, until `stop`."""
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF
        try:
            while not self._stopping.is_set():
                started = loop.time()
                code = await self._run_once()
                if self._stopping.is_set():
                    return
                if code in FATAL_EXIT_CODES:
                    self._on_fatal(
                        f"the worker of channel {self.channel} exited with status {code}"
                    )
                    return
                if loop.time() - started > STABLE_AFTER:
                    backoff = FIRST_BACKOFF
                self.restarts += 1
                log.warning(
                    "worker of channel %s exited (%s); starting it again in %.1f s",
                    self.channel,
                    _ended(code),
                    backoff,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._stopping.wait()
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    async def _run_once(self) -> int | None:
        """Run one process until it exits or `stop`; its exit status (None: could not start)."""
        private_dir(self.socket_dir)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a dead worker's socket
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "loopchain.peer.worker", "--channel", self.channel),
                *("--parent-pid", str(os.getpid())),
                stdin=asyncio.subprocess.PIPE,
                process_group=CHILD_GROUP,
            )
        except OSError as exc:
            log.error("could not start the worker of channel %s: %s", self.channel, exc)
            return None
        self._process = process
        log.info("started the worker of channel %s (pid %d)", self.channel, process.pid)
        try:
            assert process.stdin is not None
            with contextlib.suppress(ConnectionError):
                process.stdin.write(self._spec)
                await process.stdin.drain()
                process.stdin.close()
            await until_exit_or(process, self._stopping)
        finally:
            await terminate(process, STOP_DEADLINE)
        return process.returncode

    async def stop(self) -> None:
        """SIGTERM the worker (SIGKILL after STOP_DEADLINE) and stop starting it again."""
        self._stopping.set()
        if self._process is not None:
            await terminate(self._process, STOP_DEADLINE)
        await self.link.close()


def _ended(code: int | None) -> str:
    if code is None:
        return "could not start"
    return f"signal {-code}" if code < 0 else f"status {code}"
