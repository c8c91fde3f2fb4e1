"""Message queues bounded by count and bytes, sharing a byte budget (loopchain.p2p.lanes)."""

from __future__ import annotations

from loopchain.p2p.lanes import ByteBudget, MessageQueue


async def test_put_dropping_drops_the_oldest_by_count_and_by_bytes() -> None:
    queue: MessageQueue[str] = MessageQueue(max_count=3, max_bytes=10)
    assert [queue.put_dropping(name, 3) for name in "abcd"] == [0, 0, 0, 1]
    assert queue.put_dropping("e", 9) == 3  # only the empty queue takes 9 more bytes
    assert len(queue) == 1 and queue.bytes == 9 and await queue.get() == "e"


async def test_room_in_a_shared_budget_is_made_by_the_queue_that_holds_the_most() -> None:
    """Beyond its reserve a queue needs room in the budget; it is taken from the queue that would
    hold the most (its oldest waiting messages), which is the flood's, not the queue's own."""
    budget = ByteBudget(10, reserve=2)  # beyond its first 2 bytes a queue needs the budget's room
    flood: MessageQueue[str] = MessageQueue(100, 100, budget)
    other: MessageQueue[str] = MessageQueue(100, 100, budget)
    assert [flood.put_dropping(f"f{n}", 2) for n in range(6)] == [0] * 6
    assert budget.shared == 10 and budget.held == 12
    assert other.put_dropping("o0", 2) == 0  # within its reserve: taken though the budget is spent
    assert other.put_dropping("o1", 2) == 0  # the flood's oldest made room
    assert flood.evicted == 1 and len(flood) == 5 and len(other) == 2
    assert flood.put_dropping("f6", 2) == 1 and budget.shared == 10  # the flood: its own oldest
    assert [await other.get(), await other.get()] == ["o0", "o1"]


async def test_a_big_message_gets_room_from_a_flood_and_not_from_an_equal_share() -> None:
    """A queue holding nothing took any one message whatever the budget: many queues' big
    messages held many times the budget (GBs in front of a channel worker). Now a big message
    beyond the reserve needs room: a member's proposal gets it from the floods holding more than
    it would, while queues holding as much as it would keep theirs (it is dropped), and its own
    waiting votes are not dropped for nothing."""
    budget = ByteBudget(10, reserve=2)
    queues: list[MessageQueue[str]] = [MessageQueue(100, 100, budget) for _ in range(4)]
    assert [queue.put_dropping("big", 6) for queue in queues] == [0, 0, 1, 1]
    assert budget.held == 12 and budget.shared == 8  # 4 of each beyond its reserve
    assert queues[3].put_dropping("vote", 2) == 0  # small: within its reserve, whatever is held
    assert queues[3].put_dropping("big", 6) == 1  # the others hold no more than it would: it goes
    assert len(queues[3]) == 1 and budget.held == 14  # and its vote stays
    flood: MessageQueue[str] = MessageQueue(100, 100, ByteBudget(20, reserve=2))
    member: MessageQueue[str] = MessageQueue(100, 100, flood.budget)
    assert [flood.put_dropping("junk", 4) for _ in range(5)] == [0] * 5  # 18 beyond its reserve
    assert member.put_dropping("vote", 1) == 0
    assert member.put_dropping("proposal", 8) == 0  # room made from the flood
    assert flood.evicted == 2 and flood.budget.shared <= 20
    assert [await member.get(), await member.get()] == ["vote", "proposal"]


async def test_a_message_taken_is_held_until_it_is_done() -> None:
    """A message its sender had taken off the queue was no longer counted, though it was held
    while it waited (seconds, for a stream to open): a queue's bound did not bound it."""
    budget = ByteBudget(10)
    queue: MessageQueue[str] = MessageQueue(100, 10, budget)
    assert queue.put_dropping("a", 6) == 0
    assert await queue.get() == "a"
    assert queue.bytes == 6 and budget.held == 6  # being sent: still held
    assert queue.put_dropping("b", 6) == 1  # no room beside it
    queue.done()  # sent
    assert queue.bytes == 0 and budget.held == 0
    assert queue.put_dropping("b", 6) == 0
    assert await queue.get() == "b"
    queue.close()  # what is being sent is given back too
    assert budget.held == budget.shared == 0
    queue.done()
    assert budget.held == 0


async def test_closing_a_queue_gives_its_bytes_back_and_takes_no_more() -> None:
    budget = ByteBudget(4)
    queue: MessageQueue[str] = MessageQueue(10, 100, budget)
    assert queue.put_dropping("a", 4) == 0
    queue.close()
    assert budget.held == 0 and len(queue) == 0
    assert queue.put_dropping("c", 1) == 1
