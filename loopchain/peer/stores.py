"""Opening a LevelDB store that a process about to end may still hold.

A peer killed with kill -9 takes its channel workers along, but not at once: each gets SIGTERM
(PDEATHSIG) and shuts down gracefully, closing its stores within its shutdown deadline
(lifecycle.SHUTDOWN_DEADLINE; its watchdog ends it then). A peer started again meanwhile starts
new workers, which find their channel's stores still locked. A new worker waits for the lock,
polling, for at most RELEASE_WAIT seconds, rather than failing at once (its exit status 1 would
stop the new peer). The peer's own store is not waited for: a second peer on a port in use is
refused at once.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from loopchain.lifecycle import SHUTDOWN_DEADLINE
from loopchain.storage.abc import StoreLocked
from loopchain.storage.leveldb import LevelDBStore

log = logging.getLogger(__name__)

RELEASE_WAIT = 6 * SHUTDOWN_DEADLINE  # seconds: an ending process is gone well before
FIRST_POLL, MAX_POLL = 0.05, 0.5


async def open_released(path: Path, wait: float = RELEASE_WAIT, **options: Any) -> LevelDBStore:
    """The LevelDB store at `path` (`options` as LevelDBStore's), opened as soon as no other
    process holds it, within `wait` seconds; StoreLocked when one still does then."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = FIRST_POLL
    while True:
        try:
            store = LevelDBStore(path, **options)
        except StoreLocked as exc:
            left = started + wait - loop.time()
            if left <= 0:
                if wait <= 0:
                    raise
                raise StoreLocked(f"{exc}; still after waiting {wait:g} s") from None
            if poll == FIRST_POLL:
                log.warning(
                    "%s; waiting up to %g s for it to be released (a process of a peer that "
                    "ended, still shutting down?)",
                    exc,
                    wait,
                )
            await asyncio.sleep(min(poll, left))
            poll = min(poll * 2, MAX_POLL)
            continue
        if poll != FIRST_POLL:
            log.info("opened %s after %.1f s", path, loop.time() - started)
        return store
