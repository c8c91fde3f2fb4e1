"""The REST proxy's submission batcher: every waiting submission is answered, whatever happens."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopchain.protos import loopchain_pb2 as pb
from loopchain.rest import submit
from loopchain.rest.errors import RestError
from loopchain.rest.submit import BatchSubmitter
from loopchain.types.codes import ResponseCode


async def test_a_failing_batch_answers_its_submitters_and_the_next_one_goes_out() -> None:
    calls: list[list[str]] = []

    async def call(channel: str, texts: list[str]) -> pb.CreateTxBatchReply:
        assert channel == "c"
        calls.append(texts)
        if len(calls) == 1:
            raise ValueError("a defect somewhere below")
        results = [pb.CreateTxResult(tx_hash=f"{i:064x}") for i in range(len(texts))]
        return pb.CreateTxBatchReply(results=results)

    submitter = BatchSubmitter(call, lambda: ("127.0.0.1:1", 1.0))
    with pytest.raises(RestError) as failed:
        await asyncio.wait_for(submitter.submit("c", '{"a": 1}'), 5)
    assert failed.value.status == 500 and "ValueError" in failed.value.message
    # the channel is not left busy: the next submission is sent and answered
    assert await asyncio.wait_for(submitter.submit("c", '{"b": 2}'), 5) == f"{0:064x}"
    assert calls == [['{"a": 1}'], ['{"b": 2}']]
    await submitter.close()


class Peer:
    """A peer that answers every batch at once and remembers each batch's texts."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, channel: str, texts: list[str]) -> pb.CreateTxBatchReply:
        self.calls.append(texts)
        results = [
            pb.CreateTxResult(tx_hash=f"{len(self.calls):032x}{i:032x}") for i in range(len(texts))
        ]
        return pb.CreateTxBatchReply(results=results)


async def test_a_lone_submission_goes_at_once_and_after_a_busy_call_others_join_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a call of one (an idle proxy) the next submission is sent at once, however long the
    linger; after a call of several, a submission that finds the channel free waits for the
    others: until as many wait as that call carried (the linger is made longer than the test), or
    the batch is full."""
    monkeypatch.setattr(submit, "LINGER_S", 3600.0)
    peer = Peer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0))
    await asyncio.wait_for(submitter.submit("c", "a"), 5)
    await asyncio.wait_for(submitter.submit("c", "b"), 5)
    assert peer.calls == [["a"], ["b"]]  # idle: no waiting at all
    # three at once: the first goes alone, the two behind it together (a call of several)
    await asyncio.wait_for(asyncio.gather(*(submitter.submit("c", t) for t in "cde")), 5)
    assert peer.calls[2:] == [["c"], ["d", "e"]]
    first = asyncio.create_task(submitter.submit("c", "f"))
    await asyncio.sleep(0)  # one turn of the loop: "f" waits for others, no call goes
    assert len(peer.calls) == 4
    second = asyncio.create_task(submitter.submit("c", "g"))
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert peer.calls[4:] == [["f", "g"]]  # as many as the last call carried: sent, no linger
    # a batch never exceeds MAX_BATCH, whatever the last call carried
    monkeypatch.setattr(submit, "MAX_BATCH", 3)
    submitter._busy_lately["c"] = 10
    first = asyncio.create_task(submitter.submit("c", "h"))
    await asyncio.sleep(0)
    assert len(peer.calls) == 5
    rest = [asyncio.create_task(submitter.submit("c", t)) for t in "ij"]
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert peer.calls[5:] == [["h", "i", "j"]]  # one call when the batch filled
    await submitter.close()


class HeldPeer(Peer):
    """A Peer whose every call waits until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[asyncio.Event] = []

    async def __call__(self, channel: str, texts: list[str]) -> pb.CreateTxBatchReply:
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return await super().__call__(channel, texts)

    async def called(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.gates) < count:
                await asyncio.sleep(0)


async def call_of_two_in_flight(
    peer: HeldPeer, submitter: BatchSubmitter
) -> list[asyncio.Task[str]]:
    """ "a" alone, then "b" and "c" (waiting behind it) together: the call of two is left in
    flight, held. The three submissions' tasks."""
    first = asyncio.create_task(submitter.submit("c", "a"))
    await peer.called(1)
    pair = [asyncio.create_task(submitter.submit("c", t)) for t in "bc"]
    await asyncio.sleep(0)  # one turn: both wait behind the call in flight
    peer.gates[0].set()
    await peer.called(2)  # after a call of one, the two waiting went at once
    return [first, *pair]


async def test_after_a_call_of_several_its_clients_join_those_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call of several that returns while others wait does not send those alone: the next call
    waits until the clients it answered are back too (the linger is made longer than the test),
    never for more than MAX_BATCH. After a call of one what waits goes at once."""
    monkeypatch.setattr(submit, "LINGER_S", 3600.0)
    peer = HeldPeer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0))
    a, *bc = await call_of_two_in_flight(peer, submitter)
    await asyncio.wait_for(a, 5)
    d = asyncio.create_task(submitter.submit("c", "d"))
    await asyncio.sleep(0)
    peer.gates[1].set()
    await asyncio.wait_for(asyncio.gather(*bc), 5)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(peer.gates) == 2  # "d" waits for "b" and "c" to come back
    e = asyncio.create_task(submitter.submit("c", "e"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(peer.gates) == 2
    f = asyncio.create_task(submitter.submit("c", "f"))
    await peer.called(3)
    peer.gates[2].set()
    await asyncio.wait_for(asyncio.gather(d, e, f), 5)
    assert peer.calls == [["a"], ["b", "c"], ["d", "e", "f"]]
    # the wait is for MAX_BATCH at most: 3 came back from a call of 3 while 1 waited -> 3 go
    monkeypatch.setattr(submit, "MAX_BATCH", 3)
    g = asyncio.create_task(submitter.submit("c", "g"))
    h = asyncio.create_task(submitter.submit("c", "h"))
    i = asyncio.create_task(submitter.submit("c", "i"))
    await peer.called(4)
    j = asyncio.create_task(submitter.submit("c", "j"))
    await asyncio.sleep(0)
    peer.gates[3].set()
    await asyncio.wait_for(asyncio.gather(g, h, i), 5)
    more = [asyncio.create_task(submitter.submit("c", t)) for t in "kl"]
    await peer.called(5)
    peer.gates[4].set()
    await asyncio.wait_for(asyncio.gather(j, *more), 5)
    assert peer.calls[3:] == [["g", "h", "i"], ["j", "k", "l"]]
    await submitter.close()


async def test_a_call_returning_while_many_wait_sends_them_without_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With GATHER_BELOW submissions waiting when a call of several returns, they go at once:
    a call that full gains little from the returned call's clients (the linger made an hour)."""
    monkeypatch.setattr(submit, "LINGER_S", 3600.0)
    monkeypatch.setattr(submit, "GATHER_BELOW", 2)
    peer = HeldPeer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0))
    earlier = await call_of_two_in_flight(peer, submitter)
    more = [asyncio.create_task(submitter.submit("c", t)) for t in "de"]
    await asyncio.sleep(0)
    peer.gates[1].set()
    await peer.called(3)  # two wait, as many as GATHER_BELOW: sent without waiting for "b", "c"
    peer.gates[2].set()
    await asyncio.wait_for(asyncio.gather(*earlier, *more), 5)
    assert peer.calls == [["a"], ["b", "c"], ["d", "e"]]
    await submitter.close()


async def test_submissions_waiting_behind_a_call_when_the_proxy_stops_are_answered_503() -> None:
    """Closing cancels the call in flight; what waits behind it is answered 503 at once and no
    further call goes to the peer, nor does a submission made after the close."""
    peer = HeldPeer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0))
    in_flight = asyncio.create_task(submitter.submit("c", "a"))
    await peer.called(1)
    behind = [asyncio.create_task(submitter.submit("c", t)) for t in "bc"]
    await asyncio.sleep(0)
    await asyncio.wait_for(submitter.close(), 5)
    for task in (in_flight, *behind):
        with pytest.raises(RestError) as stopped:
            await asyncio.wait_for(task, 5)
        assert stopped.value.status == 503 and "stopping" in stopped.value.message
    with pytest.raises(RestError):
        await asyncio.wait_for(submitter.submit("c", "d"), 5)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(peer.gates) == 1


async def test_a_call_closed_before_it_ever_ran_answers_its_submitters_503() -> None:
    """A close in the same turn as the call's task was made cancels it before it runs: its
    submitters hear that the proxy stops rather than waiting for good."""
    peer = HeldPeer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0))
    submitted = asyncio.ensure_future(submitter.submit("c", "a"))
    await asyncio.sleep(0)  # the submission is made: its call's task exists, not yet run
    await submitter.close()  # at once: in this turn
    with pytest.raises(RestError) as stopped:
        await asyncio.wait_for(submitted, 5)
    assert stopped.value.status == 503 and "stopping" in stopped.value.message
    assert not peer.gates  # never sent


async def test_submissions_lingering_when_the_proxy_stops_are_answered_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(submit, "LINGER_S", 3600.0)
    peer = Peer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0))
    await asyncio.wait_for(asyncio.gather(*(submitter.submit("c", t) for t in "abc")), 5)
    lingering = asyncio.create_task(submitter.submit("c", "d"))
    await asyncio.sleep(0)
    await submitter.close()
    with pytest.raises(RestError) as stopped:
        await asyncio.wait_for(lingering, 5)
    assert stopped.value.status == 503 and "stopping" in stopped.value.message
    assert ["d"] not in peer.calls


async def test_a_lingering_batch_goes_out_when_the_linger_ends() -> None:
    peer = Peer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0))
    await asyncio.wait_for(asyncio.gather(*(submitter.submit("c", t) for t in "abc")), 5)
    assert await asyncio.wait_for(submitter.submit("c", "d"), 5)  # the real linger, then sent
    assert peer.calls[-1] == ["d"]
    await submitter.close()


async def test_what_it_keeps_per_channel_is_bounded_whatever_channels_clients_name() -> None:
    """Clients may name any number of channels (the peer refuses unknown ones): once their
    submissions are answered nothing is left per channel, and no more than MAX_BUSY_CHANNELS
    are remembered as busy."""
    peer = Peer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0))
    names = [f"c{i}" for i in range(submit.MAX_BUSY_CHANNELS + 50)]
    for name in names:  # three at once: one goes alone, the two that waited go together
        async with asyncio.timeout(5):
            await asyncio.gather(*(submitter.submit(name, t) for t in "abc"))
    assert sorted(len(texts) for texts in peer.calls[:2]) == [1, 2]
    assert len(submitter._busy_lately) == submit.MAX_BUSY_CHANNELS
    assert not submitter._waiting and not submitter._busy and not submitter._lingering
    await submitter.close()


async def test_batches_are_bounded_by_bytes_as_well_as_by_count() -> None:
    """Submissions waiting together go in calls of at most `max_batch_bytes` of texts (encoded:
    a non-ASCII text counts its UTF-8 bytes, a lone surrogate too, which the peer refuses), at
    least one a call, so the peer never refuses a call by its size; every submission is answered
    once."""
    peer = Peer()
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 1.0), max_batch_bytes=1000)
    texts = ["a" * 300] * 7 + ["é" * 300] + ["b" * 1500] + ["c" * 10] * 3 + ["\ud800" * 400]
    answers = await asyncio.wait_for(
        asyncio.gather(*(submitter.submit("c", text) for text in texts)), 5
    )
    assert len(set(answers)) == len(texts)
    assert sorted(t for call in peer.calls for t in call) == sorted(texts)
    for call in peer.calls:
        size = sum(len(text.encode("utf-8", "surrogatepass")) for text in call)
        assert size <= 1000 or len(call) == 1, [len(t) for t in call]
    assert len(peer.calls) >= 5
    await submitter.close()


async def test_queries_a_reply_leaves_out_are_sent_again_first() -> None:
    """A QueryBatch reply may answer only its first queries (the rest did not fit in a
    message): those go first in the next call, and each query hears its own answer or refusal;
    a reply that answers none fails its queries (502) rather than sending them forever."""
    calls: list[list[str]] = []

    async def peer(channel: str, texts: list[str]) -> pb.QueryBatchReply:
        calls.append(texts)
        results = [
            pb.QueryResult(code=3, message=f"bad {text}")
            if text.startswith("bad")
            else pb.QueryResult(response_json=text.upper())
            for text in texts[:2]  # at most two answers fit
        ]
        return pb.QueryBatchReply(results=[] if "none" in texts else results)

    refused: list[grpc.StatusCode] = []
    submitter = BatchSubmitter(
        peer, lambda: ("127.0.0.1:1", 1.0), on_refused=refused.append, reads=True
    )
    texts = ["a", "b", "bad c", "d", "e", "f"]
    answers = await asyncio.wait_for(
        asyncio.gather(*(submitter.submit("c", t) for t in texts), return_exceptions=True), 5
    )
    assert calls == [["a"], ["b", "bad c", "d", "e", "f"], ["d", "e", "f"], ["f"]]
    assert answers[:2] == ["A", "B"] and answers[3:] == ["D", "E", "F"]
    error = answers[2]
    assert isinstance(error, RestError) and error.status == 400, error
    assert "bad c" in error.message
    assert refused == [grpc.StatusCode.INVALID_ARGUMENT]  # counted, one a query refused alone
    with pytest.raises(RestError) as failed:
        await asyncio.wait_for(submitter.submit("c", "none"), 5)
    assert failed.value.status == 502 and "no answer" in failed.value.message
    await submitter.close()


async def test_a_call_the_stopping_proxy_cannot_make_is_answered_as_it_said() -> None:
    """The proxy refuses the call itself while it shuts down (its stub is gone): the submitters
    hear that 503, not a defect's 500."""

    async def stopping(channel: str, texts: list[str]) -> pb.QueryBatchReply:
        raise RestError(ResponseCode.FAIL, "the REST proxy is shutting down", 503)

    submitter = BatchSubmitter(stopping, lambda: ("127.0.0.1:1", 1.0))
    with pytest.raises(RestError) as refused:
        await asyncio.wait_for(submitter.submit("c", "q"), 5)
    assert refused.value.status == 503 and "shutting down" in refused.value.message
    await submitter.close()


async def test_a_query_that_waits_past_its_deadline_is_answered_so_and_never_sent() -> None:
    """The deadline of a query counts its wait behind the call in flight: past it the client
    hears the deadline error (504, as from a call of its own that ran out of time), and the
    query is left out of the next call."""
    release = asyncio.Event()
    calls: list[list[str]] = []

    async def peer(channel: str, texts: list[str]) -> pb.QueryBatchReply:
        calls.append(texts)
        await release.wait()
        return pb.QueryBatchReply(results=[pb.QueryResult(response_json=t) for t in texts])

    refused: list[grpc.StatusCode] = []
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 0.2), on_refused=refused.append)
    first = asyncio.create_task(submitter.submit("c", "first"))

    async def in_flight() -> None:
        while not calls:
            await asyncio.sleep(0)

    await asyncio.wait_for(in_flight(), 5)
    with pytest.raises(RestError) as late:
        await submitter.submit("c", "late", 0.2)
    assert late.value.status == 504, late.value
    assert refused == [grpc.StatusCode.DEADLINE_EXCEEDED]  # counted, as its own call's was
    assert not submitter._waiting.get("c")  # and out of the queue: no wait counts it
    release.set()
    assert await asyncio.wait_for(first, 5) == "first"
    assert await asyncio.wait_for(submitter.submit("c", "next", 5), 5) == "next"
    assert calls == [["first"], ["next"]]  # "late" was never sent
    await submitter.close()


async def test_a_transaction_not_sent_within_its_wait_is_refused_503_and_never_sent() -> None:
    """A submission waits at most `send_within` to be sent behind the call in flight: past it
    the client hears 503 (the peer is busy; it was not sent, so sending it again makes no
    second transaction) instead of waiting for that call and then its own, past its client's
    patience. One that was sent waits for its call's answer however long the wait was."""
    peer = HeldPeer()
    refused: list[grpc.StatusCode] = []
    submitter = BatchSubmitter(peer, lambda: ("127.0.0.1:1", 5.0), on_refused=refused.append)
    sent = asyncio.create_task(submitter.submit("c", "sent", send_within=0.01))
    await peer.called(1)
    with pytest.raises(RestError) as busy:
        await asyncio.wait_for(submitter.submit("c", "behind", send_within=0.01), 5)
    assert busy.value.status == 503 and busy.value.code == ResponseCode.FAIL, busy.value
    assert "not sent" in busy.value.message, busy.value.message
    assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert not submitter._waiting.get("c")
    assert not sent.done()  # its wait is over too, but it was sent: it waits for the answer
    peer.gates[0].set()
    assert await asyncio.wait_for(sent, 5) == f"{1:032x}{0:032x}"
    after = asyncio.create_task(submitter.submit("c", "after", send_within=0.01))
    await peer.called(2)
    peer.gates[1].set()
    await asyncio.wait_for(after, 5)
    assert peer.calls == [["sent"], ["after"]]  # "behind" never went
    await submitter.close()


# what a read call does with a batch: answer a prefix of this many (0: none), or fail whole
_REPLIES = st.one_of(st.integers(0, 3), st.just("fail"))


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.sampled_from(["x", "y"]), st.text(alphabet="abc", min_size=1, max_size=4)),
        min_size=1,
        max_size=30,
    ),
    replies=st.lists(_REPLIES, max_size=40),
    cancelled=st.sets(st.integers(0, 29), max_size=5),
    max_bytes=st.integers(1, 32),
)
def test_every_read_is_answered_once_with_its_own_answer_in_its_own_channel(
    items: list[tuple[str, str]], replies: list[int | str], cancelled: set[int], max_bytes: int
) -> None:
    """Reads in two channels, whatever each call does (answers a prefix, none, or fails) and
    whichever readers stop waiting: every read still waiting ends once, with its own channel's
    answer, its own refusal, the error of the call that carried it, or "no answer" from a reply
    that answered none; a read whose reader left is not sent in a later call; a call carries one
    channel's reads within the byte bound (past the first); nothing is left behind."""

    async def run() -> None:
        sent: list[tuple[str, list[str]]] = []
        answered_none: set[str] = set()  # reads carried by a call whose reply answered none
        plan = iter(replies)

        async def peer(channel: str, texts: list[str]) -> pb.QueryBatchReply:
            sent.append((channel, texts))
            await asyncio.sleep(0)
            reply = next(plan, len(texts))  # past the plan, every call answers in full
            if reply == "fail":
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
                )
            if reply == 0:
                answered_none.update(texts)
            return pb.QueryBatchReply(
                results=[
                    pb.QueryResult(code=3, message=f"refused {text}")
                    if text.startswith("c")
                    else pb.QueryResult(response_json=f"{channel}:{text.upper()}")
                    for text in texts[: int(reply)]
                ]
            )

        submitter = BatchSubmitter(
            peer, lambda: ("127.0.0.1:1", 30.0), max_batch_bytes=max_bytes, reads=True
        )
        texts = [f"{text}{i}" for i, (_, text) in enumerate(items)]
        tasks = [
            asyncio.create_task(submitter.submit(channel, text))
            for (channel, _), text in zip(items, texts, strict=True)
        ]
        await asyncio.sleep(0)
        left = {texts[i] for i in cancelled if i < len(tasks) and tasks[i].cancel()}
        sent_before = len(sent)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        # a read carried by a call already made (one a channel) may be sent; none later is
        made = len({channel for channel, _ in items})
        later = {text for _, batch in sent[sent_before + made :] for text in batch}
        assert not left & later
        for i, ((channel, _), outcome) in enumerate(zip(items, outcomes, strict=True)):
            asked = texts[i]
            if isinstance(outcome, asyncio.CancelledError):
                assert i in cancelled
            elif isinstance(outcome, RestError):
                refused = (outcome.status, outcome.message)
                assert refused in (
                    (400, f"refused {asked}"),
                    (503, "the peer at 127.0.0.1:1 is unreachable (down)"),
                    (502, "the peer gave no answer"),
                ), refused
                assert refused[0] != 502 or asked in answered_none, refused
            else:
                assert outcome == f"{channel}:{asked.upper()}", (asked, outcome)
        for channel, batch in sent:
            assert all(items[int(text.lstrip("abc"))][0] == channel for text in batch)
            assert len(batch) == 1 or sum(len(text) for text in batch) <= max_bytes
        await asyncio.sleep(0)  # the last call's task is discarded once it is done
        assert not submitter._waiting and not submitter._busy and not submitter._tasks
        assert not submitter._lingering
        await submitter.close()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(submit, "LINGER_S", 0.0)  # the linger's timers run at once
        asyncio.run(run())


async def test_a_submission_the_peer_refused_unavailable_in_its_entry_says_the_peers_words() -> (
    None
):
    """A channel that takes no transactions now (halted, or its peer's clock off) answers each
    entry UNAVAILABLE with its reason: the client hears that reason with a 503, not "the peer at
    X is unreachable (...)", which is what a call that never reached the peer says."""
    words = "this peer's clock is 600 s ahead of the RadioStation's, and blocks ... refused"

    async def call(channel: str, texts: list[str]) -> pb.CreateTxBatchReply:
        code = grpc.StatusCode.UNAVAILABLE.value[0]
        return pb.CreateTxBatchReply(
            results=[pb.CreateTxResult(code=code, message=words) for _ in texts]
        )

    submitter = BatchSubmitter(call, lambda: ("127.0.0.1:1", 1.0))
    with pytest.raises(RestError) as refused:
        await asyncio.wait_for(submitter.submit("c", '{"a": 1}'), 5)
    assert (refused.value.status, refused.value.message) == (503, words)
    assert refused.value.response().headers["Retry-After"] == "1"
    await submitter.close()
