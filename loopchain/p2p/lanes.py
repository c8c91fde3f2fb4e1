"""Queues of messages bounded by count and by bytes, several of them sharing one byte budget.

A link's lane holds what waits to be sent. A lane that holds nothing takes any one message, budget
or not, so that each lane moves at its own pace: a sender that fills the budget makes the others
wait for room behind their one message, never behind its own. What they hold together is at most
the budget and one message a lane.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class ByteBudget:
    """The bytes that several queues hold together, and their bound `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = asyncio.Event()

    def give_back(self, size: int) -> None:
        """`size` bytes left a queue: whoever waits for room looks again."""
        self.held -= size
        self._freed.set()
        self._freed = asyncio.Event()

    async def freed(self) -> None:
        """Wait until some bytes are given back (or a queue closes)."""
        await self._freed.wait()


class MessageQueue(Generic[T]):
    """First in, first out: at most `max_count` messages and `max_bytes` bytes (an empty queue
    takes any one message), its bytes counted in `budget` too (its own when None)."""

    def __init__(self, max_count: int, max_bytes: int, budget: ByteBudget | None = None) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.budget = budget if budget is not None else ByteBudget(max_bytes)
        self.bytes = 0
        self.closed = False
        self._items: deque[tuple[T, int]] = deque()
        self._readable = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def _fits(self, size: int) -> bool:
        if not self._items:
            return True
        return (
            len(self._items) < self.max_count
            and self.bytes + size <= self.max_bytes
            and self.budget.held + size <= self.budget.limit
        )

    async def put(self, item: T, size: int) -> bool:
        """Queue `item` of `size` bytes once there is room for it; False (not queued) when the
        queue is closed before."""
        while not self.closed and not self._fits(size):
            await self.budget.freed()
        if self.closed:
            return False
        self._append(item, size)
        return True

    def put_dropping(self, item: T, size: int) -> int:
        """Queue `item` of `size` bytes at once, dropping the oldest messages to make room; how
        many were dropped (it too when the queue is closed)."""
        if self.closed:
            return 1
        dropped = 0
        while not self._fits(size):
            self._pop()
            dropped += 1
        self._append(item, size)
        return dropped

    async def get(self) -> T:
        """The oldest message, once there is one."""
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        return self._pop()

    def close(self) -> None:
        """Drop what is queued (its bytes given back); a `put` waiting or to come queues nothing."""
        self.closed = True
        while self._items:
            self._pop()
        self.budget.give_back(0)  # wakes those waiting to put

    def _append(self, item: T, size: int) -> None:
        self._items.append((item, size))
        self.bytes += size
        self.budget.held += size
        self._readable.set()

    def _pop(self) -> T:
        item, size = self._items.popleft()
        self.bytes -= size
        self.budget.give_back(size)
        return item
