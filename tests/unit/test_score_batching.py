"""How the SCORE client lets concurrent asks share calls (`_Batched`), with a send that records
what it was given: the real SCORE process behind it is in tests/integration/test_score_process.py
and test_score_coin.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopchain.scoreservice.client import (
    ScoreCallError,
    ScoreRejected,
    ScoreUnavailable,
    _Batched,
)


class Recorder:
    """A send that answers each item with its upper case, `answer_at_most` of a batch, once
    `release` is set; items starting with "bad" are refused alone."""

    def __init__(self, answer_at_most: int = 1_000) -> None:
        self.sent: list[list[str]] = []
        self.release = asyncio.Event()
        self.answer_at_most = answer_at_most
        self.fail: BaseException | None = None

    async def __call__(self, items: list[str]) -> Sequence[str | ScoreCallError]:
        self.sent.append(items)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [
            ScoreRejected(f"refused {item}") if item.startswith("bad") else item.upper()
            for item in items[: self.answer_at_most]
        ]


async def _settled(tasks: list[asyncio.Task[str]]) -> list[str | BaseException]:
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_asks_made_during_a_call_go_together_in_the_next_within_count_and_size() -> None:
    send = Recorder()
    batched = _Batched("query", send, limit=3, size=len, max_size=4)
    items = ["a", "bb", "cc", "d", "e", "f", "badg"]
    tasks = [asyncio.create_task(batched.ask(item)) for item in items]
    send.release.set()
    answers = await _settled(tasks)
    # the first alone; then at most 3 a call and, past the first, 4 characters
    assert send.sent == [["a"], ["bb", "cc"], ["d", "e", "f"], ["badg"]]
    assert answers[:6] == ["A", "BB", "CC", "D", "E", "F"]
    assert isinstance(answers[6], ScoreRejected) and "refused badg" in str(answers[6])
    assert batched.calls == 4


async def test_an_item_larger_than_the_size_limit_still_goes_alone() -> None:
    send = Recorder()
    batched = _Batched("query", send, limit=10, size=len, max_size=2)
    tasks = [asyncio.create_task(batched.ask(item)) for item in ("a", "long", "b")]
    send.release.set()
    assert await _settled(tasks) == ["A", "LONG", "B"]
    assert send.sent == [["a"], ["long"], ["b"]]


async def test_the_asks_a_reply_leaves_out_go_first_in_the_next_call() -> None:
    send = Recorder(answer_at_most=2)
    batched = _Batched("query", send, limit=10)
    tasks = [asyncio.create_task(batched.ask(item)) for item in "abcdef"]
    send.release.set()
    assert await _settled(tasks) == ["A", "B", "C", "D", "E", "F"]
    assert send.sent == [["a"], ["b", "c", "d", "e", "f"], ["d", "e", "f"], ["f"]]


async def test_an_ask_whose_asker_stopped_waiting_is_not_sent() -> None:
    send = Recorder()
    batched = _Batched("query", send, limit=10)
    first = asyncio.create_task(batched.ask("a"))
    gone = asyncio.create_task(batched.ask("b"))
    kept = asyncio.create_task(batched.ask("c"))
    await asyncio.sleep(0)
    gone.cancel()
    send.release.set()
    assert await _settled([first, kept]) == ["A", "C"]
    assert send.sent == [["a"], ["c"]]


@pytest.mark.parametrize(
    "failure, heard",
    [
        (ScoreUnavailable("SCORE query: no answer"), ScoreUnavailable),
        (ScoreRejected("SCORE query: refused"), ScoreRejected),
    ],
)
async def test_a_failed_call_fails_every_ask_it_carried_and_the_next_asks_go_out(
    failure: ScoreCallError, heard: type[ScoreCallError]
) -> None:
    send = Recorder()
    batched = _Batched("query", send, limit=10)
    tasks = [asyncio.create_task(batched.ask(item)) for item in "abc"]
    send.fail = failure
    send.release.set()
    answers = await _settled(tasks)
    assert all(isinstance(answer, heard) for answer in answers), answers
    send.fail = None
    assert await batched.ask("d") == "D"
    assert send.sent == [["a"], ["b", "c"], ["d"]]


async def test_asks_made_together_go_in_one_call_and_a_failure_of_any_is_raised() -> None:
    send = Recorder()
    batched = _Batched("balance", send, limit=3)
    send.release.set()
    assert await batched.ask_all(["a", "b", "c", "d"]) == ["A", "B", "C", "D"]
    assert await batched.ask_all([]) == []
    assert send.sent == [["a", "b", "c"], ["d"]]  # together, not the first alone: at most 3 a call
    send.release.clear()
    first = asyncio.create_task(batched.ask("e"))
    together = asyncio.create_task(batched.ask_all(["f", "badg", "h"]))
    send.release.set()
    assert await first == "E"
    with pytest.raises(ScoreRejected, match="refused badg"):
        await together
    assert send.sent[2:] == [["e"], ["f", "badg", "h"]]  # asked during a call: the next one


async def test_a_reply_with_no_answers_fails_its_asks_instead_of_asking_again_forever() -> None:
    send = Recorder(answer_at_most=0)
    batched = _Batched("query", send, limit=10)
    send.release.set()
    with pytest.raises(ScoreRejected, match="0 answers to 1"):
        await batched.ask("a")
    assert send.sent == [["a"]]


# what a call does with a batch: answer a prefix of this many (0: none, a defect), or fail
_REPLIES = st.one_of(st.integers(0, 5), st.just("fail"))


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=30),
    replies=st.lists(_REPLIES, max_size=40),
    cancelled=st.sets(st.integers(0, 29), max_size=5),
    limit=st.integers(1, 6),
    max_size=st.integers(1, 12),
)
def test_every_ask_is_answered_once_with_its_own_outcome(
    items: list[str], replies: list[int | str], cancelled: set[int], limit: int, max_size: int
) -> None:
    """Whatever each call does (answers a prefix, none, or fails) and whichever askers stop
    waiting: every ask still waiting ends, with its own answer or the error of a call that
    carried it; none is sent after its asker left or after it was answered; no call carries more
    than `limit` asks or, past the first, `max_size` of their size."""

    async def run() -> None:
        sent: list[list[str]] = []
        plan = iter(replies)

        async def send(batch: list[str]) -> list[str | ScoreCallError]:
            sent.append(batch)
            await asyncio.sleep(0)
            reply = next(plan, len(batch))  # past the plan, every call answers in full
            if reply == "fail":
                raise ScoreUnavailable("SCORE query: down")
            return [
                ScoreRejected(f"refused {item}") if item.startswith("c") else item.upper()
                for item in batch[: int(reply)]
            ]

        batched = _Batched("query", send, limit, len, max_size)
        tasks = [asyncio.create_task(batched.ask(f"{item}{i}")) for i, item in enumerate(items)]
        await asyncio.sleep(0)
        left = {f"{items[i]}{i}" for i in cancelled if i < len(tasks) and tasks[i].cancel()}
        sent_before = len(sent)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        # an ask whose asker left is not sent again (one carried by a call in flight may be)
        assert not left & {item for batch in sent[sent_before + 1 :] for item in batch}
        for i, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
            asked = f"{item}{i}"
            if isinstance(outcome, asyncio.CancelledError):
                assert i in cancelled
            elif isinstance(outcome, ScoreRejected):
                # refused alone, or in a reply that answered none
                assert f"refused {asked}" in str(outcome) or "0 answers" in str(outcome), outcome
            elif isinstance(outcome, ScoreUnavailable):
                assert "down" in str(outcome)
            else:
                assert outcome == asked.upper()
        for batch in sent:
            assert len(batch) <= limit
            assert len(batch) == 1 or sum(len(item) for item in batch) <= max_size
        await asyncio.sleep(0)  # the last call's task is discarded once it is done
        assert not batched._waiting and not batched._busy and not batched._tasks

    asyncio.run(run())
