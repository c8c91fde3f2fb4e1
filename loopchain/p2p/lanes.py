"""Queues of messages bounded by count and by bytes, several of them sharing one byte budget.

A link's lane holds what waits to be sent. A lane that holds nothing takes any one message, budget
or not, so that each lane moves at its own pace: a sender that fills the budget loses its own
oldest messages, never another lane's. What they hold together is at most the budget and one
message a lane.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class ByteBudget:
    """The bytes that several queues hold together, and their bound `limit`."""

    limit: int
    held: int = 0


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

    def put_dropping(self, item: T, size: int) -> int:
        """Queue `item` of `size` bytes at once, dropping the oldest messages to make room; how
        many were dropped (it too when the queue is closed)."""
        if self.closed:
            return 1
        dropped = 0
        while not self._fits(size):
            self._pop()
            dropped += 1
        self._items.append((item, size))
        self.bytes += size
        self.budget.held += size
        self._readable.set()
        return dropped

    async def get(self) -> T:
        """The oldest message, once there is one."""
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        return self._pop()

    def close(self) -> None:
        """Drop what is queued (its bytes given back); a `put_dropping` to come queues nothing."""
        self.closed = True
        while self._items:
            self._pop()

    def _pop(self) -> T:
        item, size = self._items.popleft()
        self.bytes -= size
        self.budget.held -= size
        return item
