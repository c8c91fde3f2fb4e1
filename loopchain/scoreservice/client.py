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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from loopchain.blockchain.execution import InvokeResult, TxResult, parse_events
from loopchain.configure import Config
from loopchain.protos import score_pb2 as pb
from loopchain.protos import score_pb2_grpc as pb_grpc
from loopchain.scoreservice import MAX_BALANCE_ADDRESSES
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
    size = int(config.GRPC_MAX_MESSAGE_BYTES)
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]


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
        self._balance_waiting: list[tuple[str, asyncio.Future[tuple[int, int, int]]]] = []
        self._balance_busy = False
        self.balance_calls = 0  # Balance calls made (each answers every address it carries)
        self._tasks: set[asyncio.Task[None]] = set()

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
            code, details = exc.code(), exc.details() or ""
            message = f"SCORE {what}: {details or code.name}"
            if code in _UNAVAILABLE_CODES:
                deadline = code == grpc.StatusCode.DEADLINE_EXCEEDED
                if deadline:
                    message = f"SCORE {what}: no answer within the deadline"
                raise ScoreUnavailable(message, deadline_exceeded=deadline) from None
            raise ScoreRejected(message) from None

    async def _status_call(self, what: str, call: Awaitable[pb.ScoreStatus]) -> ScoreStatusInfo:
        status = decode_status(await self._call(what, call))
        self.last_status = status
        return status

    async def load(self, channel: str, package: ScorePackage, state_path: Path) -> ScoreStatusInfo:
        """Load `package` (a resolved folder) with its state DB at `state_path`."""
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
            "load", self._stub.Load(request, timeout=max(self.timeout, self.invoke_timeout))
        )

    async def status(self) -> ScoreStatusInfo:
        """The process's current status."""
        return await self._status_call(
            "status", self._stub.Status(pb.Empty(), timeout=self.timeout)
        )

    async def invoke_block(self, block: Block, timeout: float | None = None) -> InvokeResult:
        """Execute the next block's transactions and stage their state changes (within
        `timeout` seconds, by default SCORE_INVOKE_TIMEOUT)."""
        request = pb.InvokeRequest(
            block=block.encode(), tx_hashes=b"".join(tx.hash for tx in block.transactions)
        )
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
        read (-1: none)."""
        reply = await self._call(
            "query",
            self._stub.Query(
                pb.ScoreQueryRequest(params_json=params_json), timeout=self.query_timeout
            ),
        )
        return str(reply.response_json), int(reply.height)

    async def balance(self, address: str) -> tuple[int, int, int]:
        """(balance of `address`, total supply, executed height) in loop, as last committed.

        Concurrent asks share calls (each v3 submission checks its sender's balance): one Balance
        call is in flight at a time, and the addresses asked meanwhile go together in the next,
        up to MAX_BALANCE_ADDRESSES. A lone ask goes at once."""
        future: asyncio.Future[tuple[int, int, int]] = asyncio.get_running_loop().create_future()
        self._balance_waiting.append((address, future))
        if not self._balance_busy:
            self._ask_balances()
        return await future

    def _ask_balances(self) -> None:
        waiting = self._balance_waiting
        self._balance_busy = bool(waiting)
        if not waiting:
            return
        batch = waiting[:MAX_BALANCE_ADDRESSES]
        self._balance_waiting = waiting[MAX_BALANCE_ADDRESSES:]
        task = asyncio.get_running_loop().create_task(self._balances(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _balances(
        self, batch: list[tuple[str, asyncio.Future[tuple[int, int, int]]]]
    ) -> None:
        try:
            request = pb.BalanceRequest(addresses=[address for address, _ in batch])
            self.balance_calls += 1
            reply = await self._call(
                "balance", self._stub.Balance(request, timeout=self.query_timeout)
            )
            answers = _balance_answers(reply, len(batch))
        except BaseException as exc:  # the askers hear it; cancellation ends this task too
            failure = (
                exc if isinstance(exc, Exception) else ScoreUnavailable("SCORE balance: cancelled")
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
        finally:
            self._ask_balances()

    async def close(self) -> None:
        """Close the channel (calls in flight fail with ScoreUnavailable; a later call reopens it)."""
        channel, self._channel, self._stub_instance = self._channel, None, None
        if channel is not None:
            await channel.close()
