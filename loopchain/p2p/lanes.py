"""Queues of messages bounded by count and by bytes, several of them sharing one byte budget.

A link's lane holds what waits to be sent and what its sending task has taken and not yet sent
(until `done`): a message waiting for a stream to open is held as much as a queued one. Each lane
holds up to the budget's `reserve` bytes of its own, whatever the others hold, so that a lane's
small messages (votes) are taken while other lanes fill the budget; beyond its reserve a lane
needs room in the shared budget and makes it by dropping its own oldest messages, never another
lane's, so that each lane moves at its own pace and a sender that fills the budget loses its own
messages. A message for which its lane can make no room (the budget is held by other lanes, or by
its own message being sent) is dropped. What they hold together is at most the budget, a reserve
a lane and one message (a budget holding nothing beyond the reserves takes any one message).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class ByteBudget:
    """The bytes that several queues hold together: `held` in all, `shared` of them beyond each
    queue's first `reserve` bytes, which `limit` bounds."""

    limit: int
    reserve: int = 0
    held: int = 0
    shared: int = 0


class MessageQueue(Generic[T]):
    """First in, first out: at most `max_count` messages and `max_bytes` bytes with the ones taken
    and not yet done (a queue holding none waiting takes any one message), its bytes counted in
    `budget` too (its own when None)."""

    def __init__(self, max_count: int, max_bytes: int, budget: ByteBudget | None = None) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.budget = budget if budget is not None else ByteBudget(max_bytes)
        self.bytes = 0  # of the messages waiting and the ones taken, not yet done
        self.closed = False
        self._items: deque[tuple[T, int]] = deque()
        self._taken = 0
        self._readable = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def _beyond_reserve(self, size: int) -> int:
        """The bytes of the shared budget this queue would hold were it to hold `size` more."""
        return max(0, self.bytes + size - self.budget.reserve) - max(
            0, self.bytes - self.budget.reserve
        )

    def _fits_budget(self, size: int) -> bool:
        extra = self._beyond_reserve(size)
        shared = self.budget.shared
        return extra == 0 or shared == 0 or shared + extra <= self.budget.limit

    def _fits(self, size: int) -> bool:
        return self._fits_budget(size) and (
            not self._items
            or (len(self._items) < self.max_count and self.bytes + size <= self.max_bytes)
        )

    def put_dropping(self, item: T, size: int) -> int:
        """Queue `item` of `size` bytes at once, dropping the oldest messages to make room; how
        many were dropped (it too when the queue is closed or no room could be made)."""
        if self.closed:
            return 1
        dropped = 0
        while self._items and not self._fits(size):
            self._hold(-self._items.popleft()[1])
            dropped += 1
        if not self._fits_budget(size):  # the budget is the other queues' (or being sent)
            return dropped + 1
        self._items.append((item, size))
        self._hold(size)
        self._readable.set()
        return dropped

    async def get(self) -> T:
        """The oldest message, once there is one; its bytes stay held until `done`."""
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        item, size = self._items.popleft()
        self._taken += size
        return item

    def done(self) -> None:
        """The messages taken are sent (or failed): their bytes are given back."""
        self._hold(-self._taken)
        self._taken = 0

    def close(self) -> None:
        """Drop what is queued (its bytes given back, and those of the messages taken); a
        `put_dropping` to come queues nothing."""
        self.closed = True
        while self._items:
            self._hold(-self._items.popleft()[1])
        self.done()

    def _hold(self, size: int) -> None:
        """Count `size` bytes more (or fewer, when negative) in this queue and its budget."""
        self.budget.shared += self._beyond_reserve(size)
        self.bytes += size
        self.budget.held += size
