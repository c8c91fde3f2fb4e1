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
and intake log), without the fail points of the peer's environment (they fire in its first run).
Its exit status says why it ended:

* WORKER_STORAGE_FAILED: its storage failed, or its store fails its checks. The channel stops on
  this peer, as a channel in the peer's own process does: starting it again would only fail again
  until the storage is fixed.
* WORKER_SPEC_REFUSED: it refused what its peer handed it. The channel stops, as the same spec
  would be refused again.
* any other status (1: an exception nothing caught, a bug, or a start refused by the system): it
  crashed, and is started again. After MAX_CRASHES within CRASH_WINDOW the channel stops instead
  of starting it forever.

A channel stopped so answers its calls UNAVAILABLE, saying why; the peer's other channels go on,
and the peer stops once none is left (Node._channel_stopped).
* killed by a signal from outside (kill -9, the OOM killer, SIGTERM), or by its peer for giving no
  sign of life for CHILD_HANG_TIMEOUT (loopchain.peer.children), or ended by one (0): it is
  started again, however often.
* ended by a signal of its own fault (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL: a C extension
  crashed, perhaps reading damaged data): a crash, counted as status 1 is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from loopchain import failpoints
from loopchain.configure import Config
from loopchain.lifecycle import BEAT_FD_ARG, CHILD_GROUP, CRASH_SIGNALS
from loopchain.p2p.worker_link import WorkerLink
from loopchain.peer.children import Supervised, hand_over
from loopchain.scoreservice.owned_dir import OwnedDir
from loopchain.scoreservice.supervisor import MAX_SOCKET_PATH_BYTES

log = logging.getLogger(__name__)

WORKER_SPEC_REFUSED = 2  # it refused what its peer handed it: the channel stops
WORKER_STORAGE_FAILED = 3  # its storage failed or fails its checks: the channel stops
MAX_CRASHES = 5  # crashes of a worker within CRASH_WINDOW that stop its channel
CRASH_WINDOW = 120.0
MAX_WORKER_SPEC_BYTES = 4 << 20  # what a worker reads of its spec (the configuration is in it)
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
        super().__init__(f"worker of channel {channel}", float(config.CHILD_HANG_TIMEOUT))
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
        if len(self._spec) > MAX_WORKER_SPEC_BYTES:
            raise OSError(
                f"what the peer hands the worker of channel {channel} is {len(self._spec)} bytes; "
                f"a worker reads at most {MAX_WORKER_SPEC_BYTES} (its channel grant or the "
                "configuration is that large?)"
            )
        self.link = WorkerLink(channel, self.socket_path, config)
        self._on_fatal = on_fatal
        self._crashes: deque[float] = deque()  # when it crashed (monotonic), in CRASH_WINDOW
        self._spawned = False

    async def run(self) -> None:
        """Start the worker, and start it again after each exit, until `stop`; a fatal exit
        tells its peer why (`on_fatal`)."""
        try:
            code = await self.keep_running()
            if code is not None:
                why = self._why(code)
                self.link.stop_serving(why)
                self._on_fatal(why)
        finally:
            self._socket_dir.close()

    def _why(self, code: int) -> str:
        """Why the peer stops after the worker's fatal exit with `code`."""
        ended = f"the worker of channel {self.channel} exited with status {code}"
        if code == WORKER_STORAGE_FAILED:
            return f"{ended}: its storage failed (its reason and what to do above)"
        if code == WORKER_SPEC_REFUSED:
            return f"{ended}: it refused what its peer handed it (its reason above)"
        last = f"with signal {signal.Signals(-code).name}" if code < 0 else f"with status {code}"
        return (
            f"the worker of channel {self.channel} crashed {len(self._crashes)} times within "
            f"{CRASH_WINDOW:.0f} s, the last time {last} (the tracebacks or reasons "
            "are above), and is not started again. What is stored is whole; report the crash, "
            "then start the peer again"
        )

    def _fatal(self, code: int | None) -> bool:
        if code in (WORKER_STORAGE_FAILED, WORKER_SPEC_REFUSED):
            return True
        if code is None or code == 0:  # could not be spawned, or stopped by a signal
            return False
        if code < 0 and -code not in CRASH_SIGNALS:  # killed from outside, or as hung
            return False
        now = time.monotonic()
        self._crashes.append(now)
        while now - self._crashes[0] > CRASH_WINDOW:
            self._crashes.popleft()
        return len(self._crashes) >= MAX_CRASHES

    async def _spawn(self, beat_fd: int) -> asyncio.subprocess.Process:
        self._socket_dir.open()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a dead worker's socket
        # fail points fire in the first run: one started again would hit them again and again
        env = None if not self._spawned else _without(os.environ, failpoints.ENV)
        self._spawned = True
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "loopchain.peer.worker", "--channel", self.channel),
            *("--parent-pid", str(os.getpid())),
            *((BEAT_FD_ARG, str(beat_fd)) if beat_fd >= 0 else ()),
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(beat_fd,) if beat_fd >= 0 else (),
            process_group=CHILD_GROUP,
            env=env,
        )

    async def _started(self, process: asyncio.subprocess.Process) -> None:
        await hand_over(process, self._spec)

    async def stop(self) -> None:
        """SIGTERM the worker (SIGKILL after the deadline) and stop starting it again."""
        await super().stop()
        await self.link.close()


def _without(environ: Mapping[str, str], name: str) -> dict[str, str]:
    """A copy of `environ` without `name`."""
    return {key: value for key, value in environ.items() if key != name}
