"""Whether a peer answers at all (the REST proxy's peer; a peer's channel worker).

A peer that stopped answering (stopped by a signal or a debugger, swapped out, its event loop
stuck) keeps its TCP connections open, so every call to it would wait out its whole deadline and
end in a 504. After a call runs out of time the proxy probes the peer with a cheap call on a short
deadline, and calls made meanwhile wait for its outcome rather than join the stall; when the
probe gets no answer either, the peer is taken as stalled and every call is refused at once as the
peer being unreachable (REST: 503 with Retry-After; JSON-RPC: -32603) until a probe is answered
again. A peer that is only slow on one call answers the probe, and nothing is refused.

A peer serves each channel in a process of its own when it has channel workers, and one worker
can stop answering while the others answer: the REST proxy watches each channel apart
(`ChannelsHealth`), probing the channel whose call ran out of time and refusing only its calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import grpc

log = logging.getLogger(__name__)
PROBE_TIMEOUT = 1.0  # seconds a probe may take
# A call ran out of time when it ended DEADLINE_EXCEEDED after at least this share of its
# deadline: sooner, the status is the peer's own answer.
RAN_OUT = 0.9


def ran_out(code: grpc.StatusCode | None, elapsed: float, deadline: float) -> bool:
    """Whether a call that ended with `code` after `elapsed` seconds ran out of its deadline."""
    return code == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed >= RAN_OUT * deadline


Probe = Callable[[float], Awaitable[object]]  # one cheap call to the peer with this deadline
# one cheap call about one channel of the peer with this deadline
ChannelProbe = Callable[[str, float], Awaitable[object]]
# channels watched at once by a ChannelsHealth (a client may name any channel; beyond these, a
# channel whose call runs out of time is not watched: its calls wait out their deadlines)
MAX_WATCHED_CHANNELS = 64


class PeerHealth:
    """Tracks whether the peer answers; `admit()` before a call, `observe()` after it."""

    def __init__(
        self,
        probe: Probe,
        target: str,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str = "",
    ) -> None:
        """`name`: what the log calls it (default: "the peer at <target>")."""
        self._probe = probe
        self._name = name or f"the peer at {target}"
        self._timeout = timeout
        self._clock = clock
        self._stalled_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_probe: asyncio.Event | None = None  # set once the watch's first probe ended

    @property
    def stalled(self) -> bool:
        return self._stalled_since is not None

    @property
    def probing(self) -> bool:
        return self._task is not None

    async def admit(self) -> None:
        """Let a call go to the peer: once the first probe after a call that ran out of time
        has ended (at most PROBE_TIMEOUT), and unless the peer is taken as stalled (`check`)."""
        first = self._first_probe
        if first is not None and not first.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * PROBE_TIMEOUT):  # the probe has its own deadline
                    await first.wait()
        self.check()

    def check(self) -> None:
        """Raise the refusal (an UNAVAILABLE gRPC error, as if the call had been made) while the
        peer is taken as stalled."""
        if self._stalled_since is None:
            return
        silent = self._clock() - self._stalled_since + self._timeout
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=(
                f"it has answered nothing for {silent:.0f} s, neither a call within "
                f"{self._timeout:g} s nor a probe within {PROBE_TIMEOUT:g} s; calls to it are "
                "refused until it answers again"
            ),
        )

    def observe(
        self, code: grpc.StatusCode | None, elapsed: float, deadline: float | None = None
    ) -> None:
        """How a call to the peer ended (None: it answered, else its status code) and after how
        many seconds (of `deadline`, by default the timeout). A call that ran out of time starts
        the probes; any other end but a cancellation (the caller gave up) ends the refusals."""
        if ran_out(code, elapsed, self._timeout if deadline is None else deadline):
            if self._task is None:
                self._first_probe = asyncio.Event()
                self._task = asyncio.get_running_loop().create_task(self._watch(self._first_probe))
        elif code != grpc.StatusCode.CANCELLED:
            self._answered()

    def _answered(self) -> None:
        if self._stalled_since is not None:
            log.info(
                "%s answers again after %.1f s; calls to it go through",
                self._name,
                self._clock() - self._stalled_since,
            )
            self._stalled_since = None

    async def _watch(self, first_probe: asyncio.Event) -> None:
        """Probe until a probe ends before its deadline, taking the peer as stalled from the
        first probe that runs out of time. A probe refused at once (UNAVAILABLE: the peer is down
        or says so) ends the refusals too: calls then fail as fast by themselves."""
        try:
            while True:
                began = self._clock()
                try:
                    await self._probe(PROBE_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    if ran_out(exc.code(), self._clock() - began, PROBE_TIMEOUT):
                        self._stall()
                        first_probe.set()
                        continue
                except Exception as exc:  # the channel closing under the probe: stop probing
                    log.debug("probe of %s failed: %r", self._name, exc)
                break
            self._answered()
        finally:
            first_probe.set()
            self._task = None

    def _stall(self) -> None:
        if self._stalled_since is None:
            self._stalled_since = self._clock()
            log.warning(
                "%s answered neither a call within %g s nor a probe within %g s; "
                "calls to it are refused (503) until it answers again",
                self._name,
                self._timeout,
                PROBE_TIMEOUT,
            )

    async def close(self) -> None:
        """Stop probing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class ChannelsHealth:
    """A PeerHealth for each channel of the peer whose calls ran out of time (`admit(channel)`
    before a call of that channel, `observe(channel, ...)` after it): the probe asks about that
    channel, and while it gets no answer only that channel's calls are refused. A channel is
    watched from its first call that runs out of time, and forgotten once it answers again."""

    def __init__(
        self,
        probe: ChannelProbe,
        target: str,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._target = target
        self._timeout = timeout
        self._clock = clock
        self._watched: dict[str, PeerHealth] = {}
        self._closed = False

    def stalled(self, channel: str) -> bool:
        """Whether calls of `channel` are refused now."""
        health = self._watched.get(channel)
        return health is not None and health.stalled

    async def admit(self, channel: str) -> None:
        """PeerHealth.admit for `channel` (nothing to wait for when it is not watched)."""
        health = self._watched.get(channel)
        if health is None:
            return
        try:
            await health.admit()
        except grpc.aio.AioRpcError as exc:  # say which channel is refused
            shown = f"channel {channel}" if channel else "its default channel"
            raise grpc.aio.AioRpcError(
                exc.code(),
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                f"{exc.details()} (in {shown})",  # what it says first, as a whole-peer stall
            ) from None

    def observe(
        self,
        channel: str,
        code: grpc.StatusCode | None,
        elapsed: float,
        deadline: float | None = None,
    ) -> None:
        """PeerHealth.observe for a call of `channel`."""
        health = self._watched.get(channel)
        if health is None:
            if self._closed or not ran_out(
                code, elapsed, self._timeout if deadline is None else deadline
            ):
                return
            self._forget_idle()
            if len(self._watched) >= MAX_WATCHED_CHANNELS:
                return
            shown = f"channel {channel}" if channel else "its default channel"
            health = PeerHealth(
                lambda timeout: self._probe(channel, timeout),
                self._target,
                self._timeout,
                self._clock,
                name=f"the peer at {self._target} in {shown}",
            )
            self._watched[channel] = health
        health.observe(code, elapsed, deadline)

    def _forget_idle(self) -> None:
        """Forget the channels that answer again (neither probed nor refused)."""
        for channel, health in list(self._watched.items()):
            if not health.stalled and not health.probing:
                del self._watched[channel]

    async def close(self) -> None:
        """Stop probing, for good: calls running out of time meanwhile or later watch nothing
        (one watched during the closing changed the dict being walked: a review had it raise,
        and the proxy's channel to its peer was left open)."""
        self._closed = True
        closing = list(self._watched.values())
        self._watched.clear()
        for health in closing:
            await health.close()
