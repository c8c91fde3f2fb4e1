"""Message queues bounded by count and bytes, sharing a byte budget (loopchain.p2p.lanes)."""

from __future__ import annotations

import asyncio

from loopchain.p2p.lanes import ByteBudget, MessageQueue


async def _turns(count: int = 10) -> None:
    """Let the event loop run what is ready (nothing here waits for time or the network)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_put_waits_for_room_by_bytes_and_an_empty_queue_takes_any_message() -> None:
    queue: MessageQueue[str] = MessageQueue(max_count=100, max_bytes=10)
    assert await queue.put("big", 50)  # larger than the bound: an empty queue takes it
    waiting = asyncio.create_task(queue.put("next", 1))
    await _turns()
    assert not waiting.done()  # 51 bytes would be queued: it waits
    assert await queue.get() == "big"
    assert await waiting
    assert queue.bytes == 1 and queue.budget.held == 1


async def test_queues_sharing_a_budget_wait_for_each_other_but_never_behind_their_own() -> None:
    budget = ByteBudget(10)
    flood: MessageQueue[str] = MessageQueue(100, 100, budget)
    other: MessageQueue[str] = MessageQueue(100, 100, budget)
    for n in range(5):
        assert await flood.put(f"f{n}", 2)
    blocked = asyncio.create_task(flood.put("f5", 2))
    assert await other.put("o0", 2)  # an empty queue: taken though the budget is spent
    second = asyncio.create_task(other.put("o1", 2))
    await _turns()
    assert not blocked.done() and not second.done()
    assert await other.get() == "o0"  # its own bytes given back make room for it
    await _turns()
    assert second.done() and not blocked.done()
    assert budget.held == 12


async def test_put_dropping_drops_the_oldest_by_count_and_by_bytes() -> None:
    queue: MessageQueue[str] = MessageQueue(max_count=3, max_bytes=10)
    assert [queue.put_dropping(name, 3) for name in "abcd"] == [0, 0, 0, 1]
    assert queue.put_dropping("e", 9) == 3  # only the empty queue takes 9 more bytes
    assert len(queue) == 1 and queue.bytes == 9 and await queue.get() == "e"


async def test_closing_a_queue_gives_its_bytes_back_and_ends_those_waiting() -> None:
    budget = ByteBudget(4)
    queue: MessageQueue[str] = MessageQueue(10, 100, budget)
    assert await queue.put("a", 4)
    waiting = asyncio.create_task(queue.put("b", 4))
    await _turns()
    queue.close()
    assert await waiting is False
    assert budget.held == 0 and len(queue) == 0
    assert not await queue.put("c", 1)
