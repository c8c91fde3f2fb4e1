"""Transaction submissions and reads of one REST proxy, coalesced into batched calls to its peer.

Concurrent `POST /api/v1/transactions` requests wait in a per-channel list; one `CreateTxBatch`
call per channel is in flight at a time, and when it returns, everything that arrived meanwhile
goes in the next one. An idle proxy therefore sends a lone transaction at once, and a busy one
sends one call per batch rather than one per transaction.

Two refinements for busy channels. When a call returns, its clients send their next transactions
a moment later, one by one: the first of them found the channel free and went alone (under 64
clients more than half the calls carried one transaction, ~0.5 ms of the proxy's CPU each). So a
submission that finds the channel free after a call of several waits LINGER_S for the others; after a
call of one (an idle or lightly used proxy) it still goes at once. The wait ends early once as many
submissions wait as the last call carried: the clients it answered are back. (Without it, 64
clients at ~1,800 tx/s took ~36 ms per submission, up to 20 of them in this wait, and left a quarter
of two cores idle.)

And when a call of several returns while a few others wait (fewer than GATHER_BELOW), the next
call does not go with those alone: it waits (LINGER_S at most) until the clients the returned call
answered are back as well, so the clients of a busy proxy gather into one call instead of
travelling in groups that take turns (under 64 clients, 16 per proxy, calls carried ~5.5
transactions each; with it, 1.15x the committed tx/s at 0.86 of the CPU per transaction in
`tools/bench.py -c 64 -d 30 --no-idle --rounds 2`: every call costs the proxy, its peer and the
gossip and journal writes behind it about the same whatever it carries).

Reads are coalesced the same way: queries (`POST /api/v1/query`, v3 `icx_call`) into `QueryBatch`
calls answered with the SCORE's JSON for each, transaction results (`GET
/api/v1/transactions/result`, v3 `icx_getTransactionResult` and the polls of its waiting methods)
into `GetTxResultBatch` calls, transactions (`GET /api/v1/transactions`, v3
`icx_getTransactionByHash`) into `GetTxBatch` calls, and v3 balances (`icx_getBalance`,
`icx_getTotalSupply`) into `GetBalanceBatch` calls. A reply may answer only the first of its
reads (the others did not fit in a message), and the rest go first in the next call. A read the
peer refuses alone is counted under its one-call twin's name (`Query`, `GetTxResult`, `GetTx`,
`GetBalance`), a failed call under the batch method's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

import grpc

from loopchain.p2p.grpc_util import status_of
from loopchain.protos import loopchain_pb2 as pb
from loopchain.rest.errors import RestError, status_error
from loopchain.types.codes import ResponseCode

log = logging.getLogger(__name__)
Answer = TypeVar("Answer")
# (channel, the submissions' texts) -> the peer's answer, one result per submission
BatchCall = Callable[
    [str, list[str]],
    Awaitable[
        pb.CreateTxBatchReply
        | pb.QueryBatchReply
        | pb.TxResultBatchReply
        | pb.GetTxBatchReply
        | pb.BalanceBatchReply
    ],
]
# (the gRPC status of a refusal, the peer's words, whether it refused this one alone in a reply:
# the call itself was served, so its channel is) -> the error its submitter hears
MakeError = Callable[[grpc.StatusCode, str, bool], BaseException]
MAX_BATCH = 500  # submissions in one call (the peer takes up to 1000)
MAX_BUSY_CHANNELS = 256  # channels remembered as busy (a client may name any number of channels)
# how long a submission waits for others after a call of several (module doc). Measured with
# tools/bench.py -c 64 -d 30 --no-idle (alternating rounds): 10 ms against 5 ms gave 1.04x the
# committed tx/s at 0.925 of the CPU per transaction (fewer, larger calls, journal writes and
# gossip batches); 20 ms against 10 ms 1.10x the tx/s (rounds 1.16, 1.04) at 0.86 of the CPU per
# transaction and 0.85 of the p99 (a gRPC message costs ~0.5-1.3 ms of CPU whatever it carries);
# 30 ms against 20 ms 0.88x the tx/s (64 closed-loop clients wait longer); 50 ms against 10 ms 0.67x.
LINGER_S = 0.02
# a call returning while this many wait does not wait for its own clients: the next call is full
# enough that what it costs per transaction is small, and waiting would only add latency (under
# 1,024 clients calls carried ~100 and the wait gained nothing)
GATHER_BELOW = 32


def _text_answer(result: Any) -> str:
    """A submission's answer, its hash; a query's, the SCORE's JSON."""
    if isinstance(result, pb.QueryResult):
        return result.response_json
    tx_hash: str = result.tx_hash
    return tx_hash


def _batch_end(waiting: list[tuple[str, asyncio.Future[Any]]], max_bytes: int | None) -> int:
    """How many of `waiting` go in one call: at most MAX_BATCH, whose texts take at most
    `max_bytes` encoded (and at least one, which a REST body's bound keeps below it)."""
    if max_bytes is None:
        return min(len(waiting), MAX_BATCH)
    total = 0
    for index, (text, _) in enumerate(waiting[:MAX_BATCH]):
        total += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if total > max_bytes and index > 0:
            return index
    return min(len(waiting), MAX_BATCH)


class BatchSubmitter(Generic[Answer]):
    """Coalesces concurrent submissions into batch calls (`CreateTxBatch`, or
    `CreateIconTxBatch` for v3; or reads: `QueryBatch`, `GetTxResultBatch`, `GetTxBatch`,
    `GetBalanceBatch`), one in flight per channel. A refusal, of one submission or of the whole call, reaches its
    submitter as `make_error` makes it (by default the REST v1 error for the status). Each is
    answered what `answer_of` takes from its result (by default a transaction's hash, a query's
    JSON). A read a reply leaves out is sent again (`reads`); a transaction a reply leaves out is
    told the peer gave no answer (it may be pooled)."""

    def __init__(
        self,
        call: BatchCall,
        describe_peer: Callable[[], tuple[str, float]],
        make_error: MakeError | None = None,
        on_call: Callable[[int], None] | None = None,
        max_batch_bytes: int | None = None,
        on_refused: Callable[[grpc.StatusCode], None] | None = None,
        answer_of: Callable[[Any], Answer] | None = None,
        *,
        reads: bool = False,
    ) -> None:
        self._call = call
        # None: a transaction's hash, a query's JSON (the submitter is then a BatchSubmitter[str])
        self._answer_of = cast(Callable[[Any], Answer], answer_of or _text_answer)
        self._reads = reads
        self._on_refused = on_refused  # told each submission the peer refused alone (metrics)
        # of the submissions' texts in one call (the peer refuses a larger request unread:
        # grpc_util.max_submissions_bytes); None: no bound but MAX_BATCH
        self._max_batch_bytes = max_batch_bytes
        self._describe_peer = describe_peer  # (target, timeout) for error messages
        self._make_error = make_error
        self._on_call = on_call  # told how many submissions each call carries (metrics)
        self._waiting: dict[str, list[tuple[str, asyncio.Future[Answer]]]] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # channels whose last call carried several: how many it carried
        self._busy_lately: dict[str, int] = {}
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    async def submit(
        self,
        channel: str,
        data_json: str,
        timeout: float | None = None,
        *,
        send_within: float | None = None,
    ) -> Answer:
        """The answer to the submission (RestError, or what `make_error` makes, when it was
        refused); with `timeout`, a deadline error once it has waited that long, in the queue
        and its call together (the submission, not yet sent, is then not sent). With
        `send_within` (a transaction: its outcome must be known; a read: queued behind a slow
        call it timed out, a 504, where a busy peer is a 503: review), one still waiting to be sent
        after that long is taken out and refused as the busy peer's (RESOURCE_EXHAUSTED: 503 with
        Retry-After, safe to send again); one sent waits for its call, which its deadline bounds."""
        if self._closed:
            raise _stopping()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        waiting = self._waiting.setdefault(channel, [])
        waiting.append((data_json, future))
        if channel in self._lingering and len(waiting) >= min(
            self._busy_lately.get(channel, MAX_BATCH), MAX_BATCH
        ):
            self._lingering.pop(channel).cancel()
            self._send_next(channel)
        elif channel not in self._busy:
            if channel in self._busy_lately:  # let the others come
                self._busy.add(channel)
                self._lingering[channel] = loop.call_later(LINGER_S, self._linger_over, channel)
            else:
                self._send_next(channel)
        entry = (data_json, future)
        if send_within is not None:
            try:
                await asyncio.wait([future], timeout=send_within)
            except asyncio.CancelledError:  # its client left: not sent if not sent yet
                future.cancel()  # (_send_next leaves it out; a call already made settles it)
                raise
            if not future.done() and self._unqueue(
                channel, entry, grpc.StatusCode.RESOURCE_EXHAUSTED
            ):
                raise self._refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the peer is busy: the request waited {send_within:g} s to be sent to it "
                    "and was not sent",
                )
        if timeout is None:
            return await future
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            self._unqueue(channel, entry, grpc.StatusCode.DEADLINE_EXCEEDED)
            raise self._refusal(grpc.StatusCode.DEADLINE_EXCEEDED, "") from None

    def _unqueue(
        self, channel: str, entry: tuple[str, asyncio.Future[Answer]], code: grpc.StatusCode
    ) -> bool:
        """Take a submission still waiting to be sent out of the queue, so that no wait counts it,
        its refusal counted as `code`'s; False when it was sent."""
        queued = self._waiting.get(channel, [])
        if entry not in queued:
            return False
        queued.remove(entry)
        if self._on_refused is not None:
            self._on_refused(code)
        return True

    def _linger_over(self, channel: str) -> None:
        self._lingering.pop(channel, None)
        self._send_next(channel)

    def _send_next(self, channel: str) -> None:
        waiting = self._waiting.get(channel)
        if waiting and any(future.done() for _, future in waiting):  # their submitters left
            waiting = self._waiting[channel] = [w for w in waiting if not w[1].done()]
        if not waiting:
            self._busy.discard(channel)
            self._waiting.pop(channel, None)  # what a channel holds goes with its last submission
            return
        end = _batch_end(waiting, self._max_batch_bytes)
        batch, self._waiting[channel] = waiting[:end], waiting[end:]
        self._busy.add(channel)
        if len(batch) == 1:
            self._busy_lately.pop(channel, None)
        elif channel in self._busy_lately or len(self._busy_lately) < MAX_BUSY_CHANNELS:
            self._busy_lately[channel] = len(batch)
        if self._on_call is not None:
            self._on_call(len(batch))
        task = asyncio.get_running_loop().create_task(self._send(channel, batch))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._sent, batch))

    def _sent(
        self, batch: list[tuple[str, asyncio.Future[Answer]]], task: asyncio.Task[None]
    ) -> None:
        """A call's task is over: its submitters were answered (or, for reads a reply left out,
        wait again), unless it was cancelled before it ever ran (a close right after it was
        made): they hear that the proxy stops."""
        self._tasks.discard(task)
        if task.cancelled():
            for _, future in batch:
                _settle(future, error=_stopping())

    def _refusal(self, code: grpc.StatusCode, words: str, alone: bool = False) -> BaseException:
        """The error a submitter hears for a refusal with `code` and the peer's `words` (`alone`:
        of its own entry in a reply, not of the whole call)."""
        if self._make_error is not None:
            return self._make_error(code, words, alone)
        target, timeout = self._describe_peer()
        return status_error(code, words, target, timeout, alone)

    async def _send(self, channel: str, batch: list[tuple[str, asyncio.Future[Answer]]]) -> None:
        target, _ = self._describe_peer()
        try:
            reply = await self._call(channel, [text for text, _ in batch])
        except grpc.aio.AioRpcError as exc:
            error = self._refusal(exc.code(), exc.details() or "")
            for _, future in batch:
                _settle(future, error=error)
        except asyncio.CancelledError:
            for _, future in batch:
                _settle(future, error=_stopping())
            raise
        except RestError as exc:  # the proxy is stopping: the call was not made
            for _, future in batch:
                _settle(future, error=exc)
        except Exception as exc:  # a defect, or input the parser let through: answer, never hang
            log.exception("a batch of %d submissions to %s failed", len(batch), target)
            error = RestError(
                ResponseCode.FAIL,
                f"the submission failed in the REST proxy: {type(exc).__name__}",
                500,
            )
            for _, future in batch:
                _settle(future, error=error)
        else:
            answered = min(len(reply.results), len(batch))
            for (_, future), result in zip(batch[:answered], reply.results, strict=False):
                if result.code != 0:
                    code = status_of(result.code)
                    if self._on_refused is not None:
                        self._on_refused(code)
                    _settle(future, error=self._refusal(code, result.message, alone=True))
                else:
                    _settle(future, value=self._answer_of(result))
            rest = batch[answered:]
            if self._reads and answered and rest:  # go first next
                self._waiting[channel] = rest + self._waiting.get(channel, [])
            else:
                for _, future in rest:
                    _settle(
                        future, error=RestError(ResponseCode.FAIL, "the peer gave no answer", 502)
                    )
        finally:
            self._after_call(channel, len(batch))

    def _after_call(self, channel: str, carried: int) -> None:
        """Send what waits, or, after a call of several while others wait, let the returned
        call's clients come back and join them first (module doc). Once closed, what waits is
        answered 503."""
        waiting = self._waiting.get(channel)
        if self._closed:
            self._busy.discard(channel)
            for _, future in self._waiting.pop(channel, []):
                _settle(future, error=_stopping())
            return
        if waiting and len(waiting) < GATHER_BELOW and carried > 1 and channel in self._busy_lately:
            expected = min(carried + len(waiting), MAX_BATCH)
            if len(waiting) < expected:
                self._busy_lately[channel] = expected  # the early end of the wait (submit)
                self._lingering[channel] = asyncio.get_running_loop().call_later(
                    LINGER_S, self._linger_over, channel
                )
                return
        self._send_next(channel)

    async def close(self) -> None:
        """Cancel the calls in flight and those about to go (their submitters get an error)."""
        self._closed = True
        for channel, handle in list(self._lingering.items()):
            handle.cancel()
            for _, future in self._waiting.pop(channel, []):
                _settle(future, error=_stopping())
        self._lingering.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _stopping() -> RestError:
    return RestError(ResponseCode.FAIL, "the REST proxy is stopping", 503)


def _settle(
    future: asyncio.Future[Any], *, value: Any = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
