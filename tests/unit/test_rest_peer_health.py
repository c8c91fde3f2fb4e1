"""PeerHealth: a call that runs out of time makes the proxy probe its peer; only a probe without
an answer has calls refused, and any answer from the peer ends that (no sockets: the probe is a
coroutine the test scripts)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from loopchain.p2p.peer_health import PROBE_TIMEOUT, ChannelsHealth, PeerHealth

TARGET = "127.0.0.1:7100"
CALL_TIMEOUT = 5.0


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


RAN_OUT = rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class ScriptedProbe:
    """Each probe takes the next outcome from a queue: None to answer, RAN_OUT to run out of its
    deadline (the test's clock moves on by it), or another exception for the peer to answer."""

    def __init__(self) -> None:
        self.outcomes: asyncio.Queue[BaseException | None] = asyncio.Queue()
        self.deadlines: list[float] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def __call__(self, timeout: float) -> None:
        self.deadlines.append(timeout)
        outcome = await self.outcomes.get()
        if outcome is RAN_OUT:
            self.now += timeout
        if outcome is not None:
            raise outcome


def health_for(probe: ScriptedProbe) -> PeerHealth:
    return PeerHealth(probe, TARGET, CALL_TIMEOUT, clock=probe.clock)


async def settle(health: PeerHealth, probe: ScriptedProbe, probes: int) -> None:
    """Wait until the watcher has taken `probes` probes and waits for the next (or stopped)."""
    async with asyncio.timeout(30):
        while len(probe.deadlines) < probes or not probe.outcomes.empty():
            await asyncio.sleep(0)
        for _ in range(10):  # let the watcher act on the last outcome
            await asyncio.sleep(0)


async def stalled() -> tuple[PeerHealth, ScriptedProbe]:
    """A PeerHealth whose peer let a call and then a probe run out of time; its next probe waits."""
    probe = ScriptedProbe()
    health = health_for(probe)
    health.observe(grpc.StatusCode.DEADLINE_EXCEEDED, CALL_TIMEOUT)
    probe.outcomes.put_nowait(RAN_OUT)
    await settle(health, probe, 2)
    assert health.stalled
    return health, probe


def refusal(health: PeerHealth) -> grpc.aio.AioRpcError | None:
    try:
        health.check()
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


async def test_an_unanswered_probe_after_a_timeout_refuses_calls_until_an_answer() -> None:
    probe = ScriptedProbe()
    health = health_for(probe)
    health.observe(grpc.StatusCode.DEADLINE_EXCEEDED, CALL_TIMEOUT)
    assert refusal(health) is None, "one call out of time refuses nothing by itself"
    probe.outcomes.put_nowait(RAN_OUT)
    await settle(health, probe, 2)
    assert probe.deadlines[0] == PROBE_TIMEOUT
    error = refusal(health)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert "answered nothing" in (error.details() or "")
    health.observe(
        grpc.StatusCode.DEADLINE_EXCEEDED, CALL_TIMEOUT
    )  # a call from before: changes nothing
    assert refusal(health) is not None
    probe.outcomes.put_nowait(None)  # the peer answers the next probe
    await settle(health, probe, 2)
    assert refusal(health) is None and not health.stalled
    await health.close()


@pytest.mark.parametrize(
    "answer",
    [
        None,
        rpc_error(grpc.StatusCode.NOT_FOUND, "no such channel"),
        rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "the peer's own words, at once"),
        rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"),
    ],
    ids=["status", "the peer's error", "the peer's deadline error", "refused at once"],
)
async def test_a_peer_that_answers_the_probe_is_never_refused(
    answer: BaseException | None,
) -> None:
    probe = ScriptedProbe()
    health = health_for(probe)
    health.observe(grpc.StatusCode.DEADLINE_EXCEEDED, CALL_TIMEOUT)
    probe.outcomes.put_nowait(answer)
    await settle(health, probe, 1)
    assert refusal(health) is None and not health.stalled
    await health.close()


async def test_any_call_the_peer_answers_ends_the_refusals() -> None:
    health, _ = await stalled()
    health.observe(grpc.StatusCode.CANCELLED, 0.1)  # the caller gave up: proves nothing
    assert health.stalled
    health.observe(grpc.StatusCode.INVALID_ARGUMENT, 0.01)  # the peer's own refusal: it answers
    assert not health.stalled and refusal(health) is None
    await health.close()  # the watcher waiting on its probe stops
    assert not health.stalled


async def test_calls_that_never_ran_out_of_time_start_no_probe() -> None:
    probe = ScriptedProbe()
    health = health_for(probe)
    for code, elapsed in [
        (None, 4.9),
        (grpc.StatusCode.UNAVAILABLE, 0.0),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 0.0),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 0.2),  # the peer's own answer, long before 5 s
    ]:
        health.observe(code, elapsed)
    await asyncio.sleep(0)
    assert probe.deadlines == [] and refusal(health) is None


async def test_a_probe_that_fails_otherwise_ends_the_watch_and_the_refusals() -> None:
    health, probe = await stalled()
    probe.outcomes.put_nowait(RuntimeError("the channel is closed"))
    await settle(health, probe, 2)
    assert not health.stalled and refusal(health) is None
    health.observe(grpc.StatusCode.DEADLINE_EXCEEDED, CALL_TIMEOUT)  # a new watch can start
    probe.outcomes.put_nowait(None)
    await settle(health, probe, 3)
    assert not health.stalled


@pytest.mark.parametrize("stalls", [True, False], ids=["probe runs out", "probe answered"])
async def test_calls_made_during_the_first_probe_wait_for_its_outcome(stalls: bool) -> None:
    probe = ScriptedProbe()
    health = health_for(probe)
    health.observe(grpc.StatusCode.DEADLINE_EXCEEDED, CALL_TIMEOUT)
    waiting = asyncio.create_task(health.admit())
    await settle(health, probe, 1)  # the probe is out, its outcome not yet known
    assert not waiting.done(), "a call went to the peer before the probe said whether it answers"
    probe.outcomes.put_nowait(RAN_OUT if stalls else None)
    if stalls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await waiting
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    else:
        await waiting
        await health.admit()  # and later calls go at once
    await health.close()


async def test_channels_health_closes_whole_while_a_call_runs_out_of_time() -> None:
    """A call of another channel running out of time while ChannelsHealth closes changed the
    dict being walked: close raised, probes were left running and the proxy's channel to its
    peer open (review). Each probe ends, and nothing is watched after the close."""
    probes: list[str] = []

    async def probe(channel: str, timeout: float) -> None:
        probes.append(channel)
        await asyncio.Event().wait()  # never answers

    health = ChannelsHealth(probe, "127.0.0.1:1", 5.0)
    for channel in ("a", "b"):
        health.observe(channel, grpc.StatusCode.DEADLINE_EXCEEDED, 5.0)
    await asyncio.sleep(0)
    assert health.stalled("a") or probes

    async def late_call() -> None:
        await asyncio.sleep(0)
        health.observe("c", grpc.StatusCode.DEADLINE_EXCEEDED, 5.0)

    late = asyncio.create_task(late_call())
    await health.close()
    await late
    assert not health.stalled("c") and not health.stalled("a")
    health.observe("d", grpc.StatusCode.DEADLINE_EXCEEDED, 5.0)  # after the close: not watched
    assert not health.stalled("d")
    await asyncio.sleep(0)
    assert "d" not in probes and "c" not in probes
