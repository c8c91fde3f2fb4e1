"""Counting the event loop's turns: a task that gives the loop away and counts each time it
gets it back, so that a test sees whether other work gave the loop turns in between."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Ticks:
    """How many turns the ticker has had (`count`), while `running`."""

    def __init__(self) -> None:
        self.count = 0

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Ticks]:
        task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # started
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
