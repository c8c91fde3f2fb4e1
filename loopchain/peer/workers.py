"""A channel's worker process: the peer runs it, hands it the calls naming its channel, and starts
it again whenever it exits.

A worker is a peer of one channel (`python -m loopchain.peer.worker`): its own event loop, block
store, SCORE process, links to the other peers and heartbeats to the RadioStation, so that channels
use separate cores and one channel's load or crash does not hold up another. It serves on a unix
socket in a directory of mode 0700 with an unguessable name (owned_dir.py: left by a peer killed
with kill -9, it is removed by the next one); what it needs (the channel's grant, the key's
password) comes on its stdin, never in its arguments or environment. It ends when the peer ends,
however the peer ends.

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
import sys
from collections.abc import Callable
from typing import Any

from loopchain.configure import Config
from loopchain.lifecycle import CHILD_GROUP
from loopchain.p2p.worker_link import WorkerLink
from loopchain.peer.children import Supervised
from loopchain.scoreservice.owned_dir import OwnedDir
from loopchain.scoreservice.supervisor import MAX_SOCKET_PATH_BYTES

log = logging.getLogger(__name__)

FATAL_EXIT_CODES = (1, 2)  # its storage failed, or it could not start: the peer stops too
SOCKET_DIR_PREFIX = "loopchain-worker-"


class ChannelWorker(Supervised):
    """The worker process of `channel`, supervised: `run` keeps it running until `stop`."""

    def __init__(
        self,
        channel: str,
        spec: dict[str, Any],
        config: Config,
        on_fatal: Callable[[str], None],
    ) -> None:
        super().__init__(f"worker of channel {channel}")
        self.channel = channel
        self._socket_dir = OwnedDir(SOCKET_DIR_PREFIX)  # swept by the next peer when left
        self.socket_dir = self._socket_dir.path
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

    async def run(self) -> None:
        """Start the worker, and start it again after each exit, until `stop`."""
        try:
            code = await self.keep_running()
            if code is not None:
                self._on_fatal(f"the worker of channel {self.channel} exited with status {code}")
        finally:
            self._socket_dir.close()

    def _fatal(self, code: int | None) -> bool:
        return code in FATAL_EXIT_CODES

    async def _spawn(self) -> asyncio.subprocess.Process:
        self._socket_dir.open()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a dead worker's socket
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "loopchain.peer.worker", "--channel", self.channel),
            *("--parent-pid", str(os.getpid())),
            stdin=asyncio.subprocess.PIPE,
            process_group=CHILD_GROUP,
        )

    async def _started(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None
        with contextlib.suppress(ConnectionError):
            process.stdin.write(self._spec)
            await process.stdin.drain()
            process.stdin.close()

    async def stop(self) -> None:
        """SIGTERM the worker (SIGKILL after the deadline) and stop starting it again."""
        await super().stop()
        await self.link.close()
