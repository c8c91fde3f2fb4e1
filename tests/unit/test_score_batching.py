"""How the SCORE client lets concurrent asks share calls (`_Batched`), with a send that records
what it was given: the real SCORE process behind it is in tests/integration/test_score_process.py
and test_score_coin.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

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


async def test_a_reply_with_no_answers_fails_its_asks_instead_of_asking_again_forever() -> None:
    send = Recorder(answer_at_most=0)
    batched = _Batched("query", send, limit=10)
    send.release.set()
    with pytest.raises(ScoreRejected, match="0 answers to 1"):
        await batched.ask("a")
    assert send.sent == [["a"]]
