"""Batched submissions from the REST proxy to its peer over long-lived streams.

A `CreateTxBatch` call costs the proxy and the peer about twice the CPU of one request and reply
on an open stream (`CreateTxStream`; measured ~0.8 against ~0.4 ms per batch, both sides, on the
machine of the issue), and under load the proxy sends dozens of batches a second. `BatchStreams`
is called like the one-call stub method it replaces, `(request, timeout=...) -> reply`, and fails
as it would (a `grpc.aio.AioRpcError` with the same status), so what calls it does not change:

* each batch borrows an idle stream (one batch in flight on each, answered in order), opening one
  when none is idle, at most MAX_STREAMS; a batch finding them all busy goes by call;
* a stream is accepted by the peer before anything is written to it; a peer that refuses streams
  (an older one: UNIMPLEMENTED, or one holding its limit of streams: RESOURCE_EXHAUSTED) is sent
  calls for REFUSED_BACKOFF_S;
* a stream whose batch fails or misses its deadline is dropped (nothing is sent again: the peer
  may have taken the batch, as with a call that timed out), and one older than STREAM_ROTATE_S is
  ended before its next batch (the peer ends them at 300 s);
* a batch sent whose call or stream ends without the peer's answer (the connection broke, the
  peer died or stopped: a status its handler's `refuse` did not make, and not gRPC's "failed to
  connect") fails UNKNOWN, saying whether the peer took its transactions is unknown (it journals
  them before it answers);
* a batch sent that misses its deadline (on a stream, or by call) fails DEADLINE_EXCEEDED saying
  that whether the peer took its transactions is unknown (OUTCOME_UNKNOWN), and a reply that came
  as the deadline passed (the proxy stopped or starved meanwhile: its timer and the reply are seen
  together) is taken within LATE_REPLY_S rather than dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc

from loopchain.p2p.grpc_util import (
    NEVER_SENT,
    STREAM_ACCEPTED,
    answered_by_handler,
    status_of,
)
from loopchain.protos import loopchain_pb2 as pb

MAX_STREAMS = 4  # streams open at once (the submitter has one batch in flight per channel)
STREAM_ROTATE_S = 60.0
STREAM_DEADLINE_S = 600.0  # the deadline of the stream itself (one left idle ends by it)
REFUSED_BACKOFF_S = 10.0
BY_CALL_WHEN_REFUSED = frozenset(
    {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
GRPC_DEADLINE_DETAILS = "Deadline Exceeded"  # how grpc says a call's own deadline passed
# what a batch sent and not answered within its deadline fails with (DEADLINE_EXCEEDED)
OUTCOME_UNKNOWN = (
    "the transactions were sent and no answer came in time: whether the peer took them is "
    "unknown; look them up before sending them again"
)
# past a batch's deadline, how long a reply the gRPC runtime may already hold is waited for
LATE_REPLY_S = 0.05

Request = TypeVar("Request")


def call_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a call would have raised with `code` and `details`."""
    empty = grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, empty, empty, details)


# how it says the server refused the call's stream (HTTP/2 REFUSED_STREAM: past its concurrent
# streams, a burst's first moments on a new connection): nothing of it was read (review)
STREAM_REFUSED = "RST_STREAM with error code 7"
# statuses a call ends with when the connection broke or the peer died or stopped mid-call (not
# CANCELLED: gRPC ends so the calls of a burst a server takes no more of, before their handler)
_CUT_OFF = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def cut_off(code: grpc.StatusCode, details: str) -> str:
    """What a batch sent that ended without the peer's answer (`code`, gRPC's `details`) fails
    with (UNKNOWN): the peer may have taken its transactions, journaled before it answers. A peer
    killed so was "unreachable, try again later" (503, Retry-After), and a client that did so
    had its v1 transaction final twice (review)."""
    return (
        f"the call ended without the peer's answer ({code.name}: {details}): whether it took the "
        "transactions is unknown; look them up before sending them again"
    )


def _unanswered(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a batch call that failed so was sent and ended without its handler's answer."""
    if exc.code() not in _CUT_OFF or answered_by_handler(exc):
        return False
    details = exc.details() or ""
    return not details.startswith(NEVER_SENT) and STREAM_REFUSED not in details


def _outcome_unknown(details: str) -> str:
    """What a batch call that ended DEADLINE_EXCEEDED with `details` fails with: OUTCOME_UNKNOWN
    when its own deadline passed (gRPC's words), the peer's words when they say it already."""
    if GRPC_DEADLINE_DETAILS in details:
        return OUTCOME_UNKNOWN
    return details if "is unknown" in details else f"{details}; {OUTCOME_UNKNOWN}"


async def _reply(call: Any, deadline: float) -> Any:
    """The next reply of `call` by `deadline` (TimeoutError), or one the gRPC runtime has within
    LATE_REPLY_S past it: when the process was stopped or starved past the deadline, the timer
    fires as the reply that came meanwhile is still on its way to the read."""
    loop = asyncio.get_running_loop()
    read = asyncio.ensure_future(call.read())
    try:
        await asyncio.wait([read], timeout=max(deadline - loop.time(), 0.0))
        if not read.done():
            await asyncio.wait([read], timeout=LATE_REPLY_S)
    except BaseException:  # cancelled
        read.cancel()
        raise
    if not read.done():
        read.cancel()
        raise TimeoutError
    return read.result()


class _Stream:
    def __init__(self, call: Any) -> None:
        self.call = call
        self.opened = time.monotonic()


class BatchStreams(Generic[Request]):
    """Batches over streams opened by `open_stream` (a stream-stream stub method), each reply
    in the order of its request; by `call` (the one-call stub method) when no stream can take
    one (see the module doc)."""

    def __init__(
        self,
        open_stream: Callable[..., Any],
        call: Callable[..., Awaitable[pb.CreateTxBatchReply]],
    ) -> None:
        self._open_stream = open_stream
        self._call = call
        self._idle: list[_Stream] = []
        self._count = 0  # streams open, idle or carrying a batch
        self._by_call_until = 0.0
        self.streamed = 0  # batches answered on a stream (for tests and diagnosis)

    async def __call__(self, request: Request, timeout: float) -> pb.CreateTxBatchReply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # for the whole batch, a stream's opening included
        stream = await self._take(deadline)
        if stream is None:
            try:
                return await self._call(request, timeout=max(deadline - loop.time(), 0.001))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # sent, and not answered
                    raise call_error(exc.code(), _outcome_unknown(exc.details() or "")) from None
                if _unanswered(exc):
                    unknown = cut_off(exc.code(), exc.details() or "")
                    raise call_error(grpc.StatusCode.UNKNOWN, unknown) from None
                raise
        written = False
        try:
            async with asyncio.timeout_at(deadline):
                await stream.call.write(request)
            written = True
            reply = await _reply(stream.call, deadline)
        except TimeoutError:
            self._drop(stream)
            raise call_error(grpc.StatusCode.DEADLINE_EXCEEDED, OUTCOME_UNKNOWN) from None
        except asyncio.InvalidStateError:  # it ended between its last batch and this one
            self._drop(stream)
            raise call_error(grpc.StatusCode.UNAVAILABLE, "the submission stream ended") from None
        except grpc.aio.AioRpcError as exc:
            self._drop(stream)
            if _unanswered(exc):
                # the stream broke (its peer died or ended it; grpc says INTERNAL "Internal
                # error from Core" without the peer's status): under the batch's write, the
                # peer is what cannot be reached; once the batch was written, it may have it
                if not written:
                    broke = f"the submission stream to the peer broke ({exc.details()})"
                    raise call_error(grpc.StatusCode.UNAVAILABLE, broke) from None
                unknown = cut_off(exc.code(), exc.details() or "")
                raise call_error(grpc.StatusCode.UNKNOWN, unknown) from None
            raise
        except BaseException:  # the stream failed (its error is the call's), or a cancellation
            self._drop(stream)
            raise
        if reply is grpc.aio.EOF:  # ended after the batch was written, unanswered
            self._drop(stream)
            unknown = cut_off(grpc.StatusCode.UNAVAILABLE, "the peer ended the submission stream")
            raise call_error(grpc.StatusCode.UNKNOWN, unknown)
        self._idle.append(stream)
        self.streamed += 1
        if reply.code:  # refused as a whole, as the call would have been; the stream goes on
            status = status_of(reply.code)
            raise call_error(status, reply.message)
        result: pb.CreateTxBatchReply = reply
        return result

    async def _take(self, deadline: float) -> _Stream | None:
        """An idle stream, or a new one the peer accepted; None when the batch goes by call."""
        while self._idle:
            stream = self._idle.pop()
            if time.monotonic() - stream.opened <= STREAM_ROTATE_S and not stream.call.done():
                return stream
            self._drop(stream)
        if self._count >= MAX_STREAMS or time.monotonic() < self._by_call_until:
            return None
        self._count += 1
        call = self._open_stream(timeout=STREAM_DEADLINE_S)
        try:
            async with asyncio.timeout_at(deadline):
                metadata = await call.initial_metadata()
                if STREAM_ACCEPTED in tuple(metadata or ()):
                    return _Stream(call)
                code, details = await call.code(), await call.details()
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        except TimeoutError:  # nothing was sent
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            details = "the peer accepted no submission stream in time; nothing was sent"
        except BaseException:
            self._count -= 1
            call.cancel()
            raise
        self._count -= 1
        call.cancel()
        if code in BY_CALL_WHEN_REFUSED:
            self._by_call_until = time.monotonic() + REFUSED_BACKOFF_S
            return None
        raise call_error(code, details)

    def _drop(self, stream: _Stream) -> None:
        """Forget `stream` and cancel it (one found idle carries nothing; one that failed or missed
        a deadline is not to be trusted with another batch)."""
        self._count -= 1
        stream.call.cancel()

    def close(self) -> None:
        """Cancel the idle streams (those carrying a batch end with their callers)."""
        for stream in self._idle:
            stream.call.cancel()
        self._count -= len(self._idle)
        self._idle.clear()
