"""Message queues bounded by count and bytes, sharing a byte budget (loopchain.p2p.lanes)."""

from __future__ import annotations

from loopchain.p2p.lanes import ByteBudget, MessageQueue


async def test_put_dropping_drops_the_oldest_by_count_and_by_bytes() -> None:
    queue: MessageQueue[str] = MessageQueue(max_count=3, max_bytes=10)
    assert [queue.put_dropping(name, 3) for name in "abcd"] == [0, 0, 0, 1]
    assert queue.put_dropping("e", 9) == 3  # only the empty queue takes 9 more bytes
    assert len(queue) == 1 and queue.bytes == 9 and await queue.get() == "e"


async def test_queues_sharing_a_budget_drop_their_own_oldest_never_the_others() -> None:
    budget = ByteBudget(10)
    flood: MessageQueue[str] = MessageQueue(100, 100, budget)
    other: MessageQueue[str] = MessageQueue(100, 100, budget)
    assert [flood.put_dropping(f"f{n}", 2) for n in range(5)] == [0] * 5
    assert other.put_dropping("o0", 2) == 0  # an empty queue: taken though the budget is spent
    assert other.put_dropping("o1", 2) == 1  # no room: its own oldest goes, not the flood's
    assert len(flood) == 5 and await other.get() == "o1"
    assert flood.put_dropping("f5", 2) == 1 and budget.held == 10  # the flood too: its own


async def test_closing_a_queue_gives_its_bytes_back_and_takes_no_more() -> None:
    budget = ByteBudget(4)
    queue: MessageQueue[str] = MessageQueue(10, 100, budget)
    assert queue.put_dropping("a", 4) == 0
    queue.close()
    assert budget.held == 0 and len(queue) == 0
    assert queue.put_dropping("c", 1) == 1
