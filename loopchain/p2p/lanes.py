"""Queues of messages bounded by count and by bytes, several of them sharing one byte budget.

A link's lane holds what waits to be sent and what its sending task has taken and not yet sent
(until `done`): a message waiting for a stream to open is held as much as a queued one. Each lane
holds up to the budget's `reserve` bytes of its own, whatever the others hold, so that a lane's
small messages (votes) are taken while other lanes fill the budget. Beyond its reserve a lane
needs room in the shared budget, and room is made fairly: from the lane that would hold the most
beyond its reserve, its oldest waiting messages dropped (the lane itself when it would be that
lane, or the new message when it has none waiting). So a sender that fills the budget loses its
own messages, and a lane holding less than the others still gets its proposal in. What the lanes
hold together is at most the budget, a reserve a lane and one message (a budget holding nothing
beyond the reserves takes any one message).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class ByteBudget:
    """The bytes that several queues hold together: `held` in all, `shared` of them beyond each
    queue's first `reserve` bytes, which `limit` bounds."""

    limit: int
    reserve: int = 0
    held: int = 0
    shared: int = 0
    queues: set[MessageQueue[Any]] = field(default_factory=set, repr=False, compare=False)


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
        self._woken = False  # see `wake`
        self.evicted = 0  # its messages dropped to make room for another queue's
        self.budget.queues.add(self)

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

    def _fits_own(self, size: int) -> bool:
        return not self._items or (
            len(self._items) < self.max_count and self.bytes + size <= self.max_bytes
        )

    def _beyond(self) -> int:
        """The bytes it holds beyond its reserve."""
        return max(0, self.bytes - self.budget.reserve)

    def put_dropping(self, item: T, size: int) -> int:
        """Queue `item` of `size` bytes at once, dropping the oldest messages to make room (see
        the module); how many of its own were dropped (it too when the queue is closed or no
        room could be made)."""
        if self.closed:
            return 1
        dropped = 0
        while self._items and not self._fits_own(size):
            self._drop_oldest()
            dropped += 1
        while not self._fits_budget(size):  # from whoever would hold the most beyond its reserve
            would_hold = self._beyond() + self._beyond_reserve(size)
            others = [q for q in self.budget.queues if q is not self and q._items]
            largest = max(others, key=MessageQueue._beyond, default=None)
            if largest is not None and largest._beyond() > would_hold:
                largest._drop_oldest()
                largest.evicted += 1
            elif self._items and self._fits_without_waiting(size):
                self._drop_oldest()
                dropped += 1
            else:  # the others hold no more than it would, or what holds the budget is being sent
                return dropped + 1
        self._items.append((item, size))
        self._hold(size)
        self._readable.set()
        return dropped

    def _fits_without_waiting(self, size: int) -> bool:
        """Whether `size` more bytes would fit the budget were this queue's waiting messages
        dropped (dropping them is no use otherwise: the new message would go too)."""
        reserve, taken = self.budget.reserve, self._taken
        shared = self.budget.shared - (self._beyond() - max(0, taken - reserve))
        extra = max(0, taken + size - reserve) - max(0, taken - reserve)
        return extra == 0 or shared == 0 or shared + extra <= self.budget.limit

    def _drop_oldest(self) -> None:
        self._hold(-self._items.popleft()[1])

    async def readable(self) -> None:
        """Return once a message waits, or `wake` was called (since the last return)."""
        if not self._items and not self._woken:
            self._readable.clear()
            await self._readable.wait()
        self._woken = False

    def wake(self) -> None:
        """Have `readable` return now, or at its next call (its caller has something to look
        at)."""
        self._woken = True
        self._readable.set()

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
            self._drop_oldest()
        self.done()
        self.budget.queues.discard(self)

    def _hold(self, size: int) -> None:
        """Count `size` bytes more (or fewer, when negative) in this queue and its budget."""
        self.budget.shared += self._beyond_reserve(size)
        self.bytes += size
        self.budget.held += size
