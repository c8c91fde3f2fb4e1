"""The peer's client of a SCORE process (gRPC over a unix socket); domain types in, domain types out.

Every call has a deadline. Failures surface as `ScoreUnavailable` (the process is down, unreachable,
not loaded, or missed the deadline) or `ScoreRejected` (the process refused the request: wrong
height, nothing staged, a query the SCORE failed). After a process restart the staged block is gone:
a commit then fails with ScoreRejected and the block has to be invoked again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import grpc

from loopchain.blockchain.execution import InvokeResult, TxResult, parse_events
from loopchain.configure import Config
from loopchain.protos import score_pb2 as pb
from loopchain.protos import score_pb2_grpc as pb_grpc
from loopchain.scoreservice import MAX_BALANCE_ADDRESSES, MAX_QUERIES, score_link_bytes
from loopchain.scoreservice.packages import ScorePackage
from loopchain.types.block import Block

__all__ = [
    "InvokeResult",
    "ScoreCallError",
    "ScoreClient",
    "ScoreRejected",
    "ScoreStatusInfo",
    "ScoreUnavailable",
    "TxResult",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
A = TypeVar("A")

# Codes meaning "the SCORE cannot serve now" rather than "this request is refused".
_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.FAILED_PRECONDITION,  # the process runs but has no SCORE loaded
}


class ScoreCallError(Exception):
    """A SCORE call that failed; `message` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ScoreUnavailable(ScoreCallError):
    """The SCORE process is down, unreachable, not loaded or missed the call's deadline."""

    def __init__(self, message: str, *, deadline_exceeded: bool = False) -> None:
        super().__init__(message)
        self.deadline_exceeded = deadline_exceeded


class ScoreRejected(ScoreCallError):
    """The SCORE process refused the request (wrong height, nothing staged, a failed query)."""


@dataclass(frozen=True)
class ScoreStatusInfo:
    """What a SCORE process reports: 0 loaded and running, -1 not available (with the reason)."""

    status: int
    id: str = ""
    version: str = ""
    all_versions: tuple[str, ...] = ()
    message: str = ""
    executed_height: int = -1
    state_root: bytes = b""
    results_hash: bytes = b""

    @property
    def loaded(self) -> bool:
        return self.status == 0

    @classmethod
    def unavailable(cls, message: str) -> ScoreStatusInfo:
        """A status -1 with `message`."""
        return cls(status=-1, message=message)


def decode_status(reply: pb.ScoreStatus) -> ScoreStatusInfo:
    """ScoreStatus message -> ScoreStatusInfo."""
    return ScoreStatusInfo(
        status=reply.status,
        id=reply.id,
        version=reply.version,
        all_versions=tuple(reply.all_version),
        message=reply.message,
        executed_height=reply.executed_height,
        state_root=reply.state_root,
        results_hash=reply.results_hash,
    )


def decode_invoke_reply(reply: pb.InvokeReply) -> InvokeResult:
    """InvokeReply message -> InvokeResult."""
    results = [
        TxResult(r.tx_hash, r.code, r.message, r.steps, parse_events(r.events_json))
        for r in reply.results
    ]
    return InvokeResult(reply.height, results, reply.state_root, reply.results_hash)


def _options(config: Config) -> list[tuple[str, int]]:
    size = score_link_bytes(int(config.GRPC_MAX_MESSAGE_BYTES))
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]


def _failure(what: str, code: grpc.StatusCode, details: str) -> ScoreCallError:
    """The error of a SCORE call (or of one query of a call) that ended with `code`."""
    message = f"SCORE {what}: {details or code.name}"
    if code in _UNAVAILABLE_CODES:
        deadline = code == grpc.StatusCode.DEADLINE_EXCEEDED
        if deadline:
            message = f"SCORE {what}: no answer within the deadline"
        return ScoreUnavailable(message, deadline_exceeded=deadline)
    return ScoreRejected(message)


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _query_answers(reply: pb.ScoreQueryReply) -> list[tuple[str, int] | ScoreCallError]:
    """(answer, executed height) or the refusal, per query a SCORE's Query reply answers."""
    return [
        (answer.response_json, reply.height)
        if answer.code == 0
        else _failure(
            "query", _STATUS_CODES.get(answer.code, grpc.StatusCode.UNKNOWN), answer.message
        )
        for answer in reply.answers
    ]


class _Batched(Generic[A, T]):
    """Asks of one kind that share calls: one call is in flight at a time, and the asks made
    meanwhile go together in the next, up to `limit` of them and, past the first, `max_size` of
    their `size`. A lone ask goes at once; an ask whose asker has stopped waiting is not sent.

    `send` answers a batch with one outcome per ask of a prefix of it: a result, or the error of
    that ask alone. The asks past that prefix go first in the next call. A call that fails
    fails every ask it carried."""

    def __init__(
        self,
        what: str,
        send: Callable[[list[A]], Awaitable[Sequence[T | ScoreCallError]]],
        limit: int,
        size: Callable[[A], int] | None = None,
        max_size: int = 0,
    ) -> None:
        self.what = what
        self._send = send
        self._limit = limit
        self._size = size
        self._max_size = max_size
        self._waiting: deque[tuple[A, asyncio.Future[T]]] = deque()
        self._busy = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls made (each answers every ask it carries)

    async def ask(self, item: A) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._busy:
            self._next()
        return await future

    async def ask_all(self, items: Sequence[A]) -> list[T]:
        """The answer to each item, asked together (in one call when they fit in one); a failure
        of any of them is raised."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[T]] = [loop.create_future() for _ in items]
        self._waiting.extend(zip(items, futures, strict=True))
        if futures and not self._busy:
            self._next()
        return list(await asyncio.gather(*futures))

    def _next(self) -> None:
        waiting = self._waiting
        batch: list[tuple[A, asyncio.Future[T]]] = []
        size = 0
        while waiting and len(batch) < self._limit:
            item, future = waiting[0]
            if not future.done() and self._size is not None:
                size += self._size(item)
                if batch and size > self._max_size:
                    break
            waiting.popleft()
            if not future.done():
                batch.append((item, future))
        self._busy = bool(batch)
        if batch:
            task = asyncio.get_running_loop().create_task(self._call(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[tuple[A, asyncio.Future[T]]]) -> None:
        try:
            self.calls += 1
            outcomes = await self._send([item for item, _ in batch])
            if not 0 < len(outcomes) <= len(batch):
                raise ScoreRejected(f"SCORE {self.what}: {len(outcomes)} answers to {len(batch)}")
        except BaseException as exc:  # the askers hear it; cancellation ends this task too
            failure = (
                exc
                if isinstance(exc, Exception)
                else ScoreUnavailable(f"SCORE {self.what}: cancelled")
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
        else:
            answered = len(outcomes)
            for (_, future), outcome in zip(batch[:answered], outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, ScoreCallError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            self._waiting.extendleft(reversed(batch[answered:]))  # first in the next call
        finally:
            self._next()


def _balance_answers(reply: pb.BalanceReply, asked: int) -> list[tuple[int, int, int]]:
    """(balance, total supply, height) per address asked, from a SCORE's Balance reply."""
    if len(reply.balances) != asked:
        raise ScoreRejected(f"SCORE balance: {len(reply.balances)} answers to {asked} addresses")
    try:
        supply = int(reply.total_supply)
        return [(int(balance), supply, reply.height) for balance in reply.balances]
    except ValueError:
        raise ScoreRejected("SCORE balance: an amount that is not a number") from None


class ScoreClient:
    """Async client of one SCORE process at `unix:socket_path`; every call has a deadline."""

    def __init__(
        self,
        socket_path: Path,
        config: Config,
        on_invoke_timeout: Callable[[], None] | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = float(config.GRPC_TIMEOUT)
        self.invoke_timeout = float(config.SCORE_INVOKE_TIMEOUT)
        self.query_timeout = float(config.SCORE_QUERY_TIMEOUT)
        self._on_invoke_timeout = on_invoke_timeout
        self._options = _options(config)
        self._channel: grpc.aio.Channel | None = None  # opened in the event loop of the first call
        self._stub_instance: pb_grpc.ScoreServiceStub | None = None
        self.last_status: ScoreStatusInfo | None = None
        self._balances = _Batched("balance", self._ask_balances, MAX_BALANCE_ADDRESSES)
        # the queries of one call: at most a quarter of a message (a character is up to 4 bytes)
        self._queries = _Batched(
            "query", self._ask_queries, MAX_QUERIES, len, int(config.GRPC_MAX_MESSAGE_BYTES) // 16
        )

    @property
    def _stub(self) -> pb_grpc.ScoreServiceStub:
        if self._stub_instance is None:
            target = f"unix:{self.socket_path}"
            self._channel = grpc.aio.insecure_channel(target, options=self._options)
            self._stub_instance = pb_grpc.ScoreServiceStub(self._channel)
        return self._stub_instance

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise _failure(what, exc.code(), exc.details() or "") from None

    async def _status_call(self, what: str, call: Awaitable[pb.ScoreStatus]) -> ScoreStatusInfo:
        status = decode_status(await self._call(what, call))
        self.last_status = status
        return status

    async def load(
        self, channel: str, package: ScorePackage, state_path: Path, timeout: float | None = None
    ) -> ScoreStatusInfo:
        """Load `package` (a resolved folder) with its state DB at `state_path`, within `timeout`
        seconds (by default the longer of GRPC_TIMEOUT and SCORE_INVOKE_TIMEOUT)."""
        request = pb.LoadRequest(
            channel=channel,
            package_path=str(package.path),
            package_id=package.id,
            package_version=package.version,
            all_versions=list(package.all_versions),
            state_path=str(state_path),
            settings_json=json.dumps(package.settings) if package.settings else "",
        )
        return await self._status_call(
            "load",
            self._stub.Load(request, timeout=timeout or max(self.timeout, self.invoke_timeout)),
        )

    async def status(self) -> ScoreStatusInfo:
        """The process's current status."""
        return await self._status_call(
            "status", self._stub.Status(pb.Empty(), timeout=self.timeout)
        )

    async def invoke_block(
        self, block: Block, timeout: float | None = None, commit_first: Block | None = None
    ) -> InvokeResult:
        """Execute the next block's transactions and stage their state changes (within
        `timeout` seconds, by default SCORE_INVOKE_TIMEOUT), after committing `commit_first`,
        the block staged before (as commit_block), in the same call."""
        request = pb.InvokeRequest(
            block=block.encode(), tx_hashes=b"".join(tx.hash for tx in block.transactions)
        )
        if commit_first is not None:
            request.commit.height = commit_first.height
            request.commit.block_hash = commit_first.hash.hex()
        try:
            reply = await self._call(
                f"invoke of block {block.height}",
                self._stub.InvokeBlock(request, timeout=timeout or self.invoke_timeout),
            )
        except ScoreUnavailable as exc:
            if exc.deadline_exceeded and self._on_invoke_timeout is not None:
                self._on_invoke_timeout()
            raise
        return decode_invoke_reply(reply)

    async def commit_block(self, height: int, block_hash: str) -> ScoreStatusInfo:
        """Make the staged block at `height` (hex hash `block_hash`) durable, atomically."""
        request = pb.CommitRequest(height=height, block_hash=block_hash)
        return await self._status_call(
            f"commit of block {height}", self._stub.CommitBlock(request, timeout=self.timeout)
        )

    async def rollback_block(self, height: int) -> ScoreStatusInfo:
        """Discard the staged block at `height`."""
        request = pb.RollbackRequest(height=height)
        return await self._status_call(
            f"rollback of block {height}", self._stub.RollbackBlock(request, timeout=self.timeout)
        )

    async def query(self, params_json: str) -> str:
        """The SCORE's JSON answer to a read-only query."""
        return (await self.query_at(params_json))[0]

    async def query_at(self, params_json: str) -> tuple[str, int]:
        """The SCORE's JSON answer to a read-only query, and the executed height of the state it
        read (-1: none).

        Concurrent queries share calls, as balances do (`balance`), up to MAX_QUERIES."""
        return await self._queries.ask(params_json)

    async def _ask_queries(self, queries: list[str]) -> list[tuple[str, int] | ScoreCallError]:
        request = pb.ScoreQueryRequest(queries=queries)
        reply = await self._call("query", self._stub.Query(request, timeout=self.query_timeout))
        return _query_answers(reply)

    async def balance(self, address: str) -> tuple[int, int, int]:
        """(balance of `address`, total supply, executed height) in loop, as last committed.

        Concurrent asks share calls (each v3 submission checks its sender's balance): one Balance
        call is in flight at a time, and the addresses asked meanwhile go together in the next,
        up to MAX_BALANCE_ADDRESSES. A lone ask goes at once."""
        return await self._balances.ask(address)

    async def balances(self, addresses: Sequence[str]) -> list[tuple[int, int, int]]:
        """`balance` of each address, asked together: they go in the next call, as many as fit
        in one (MAX_BALANCE_ADDRESSES), with any asked meanwhile."""
        return await self._balances.ask_all(addresses)

    async def _ask_balances(self, addresses: list[str]) -> list[tuple[int, int, int]]:
        request = pb.BalanceRequest(addresses=addresses)
        reply = await self._call("balance", self._stub.Balance(request, timeout=self.query_timeout))
        return _balance_answers(reply, len(addresses))

    @property
    def balance_calls(self) -> int:
        """Balance calls made (each answers every address it carries)."""
        return self._balances.calls

    @property
    def query_calls(self) -> int:
        """Query calls made (each answers the queries it carries)."""
        return self._queries.calls

    async def close(self) -> None:
        """Close the channel (calls in flight fail with ScoreUnavailable; a later call reopens it)."""
        channel, self._channel, self._stub_instance = self._channel, None, None
        if channel is not None:
            await channel.close()
