"""The contract-author API: what a SCORE (a Python smart contract) sees and implements.

A SCORE package's main module defines `class UserScore(ScoreBase)`. The engine builds one
instance per SCORE process with a `ScoreContext` and then calls, for every transaction of every
block in chain order, `invoke(transaction, block)`; `query(params)` answers read-only questions.

Determinism rules (every peer must compute the same state from the same blocks):

* no wall clock (`time.time()`, `datetime.now()`): use `block.timestamp` and `transaction.timestamp`;
* no randomness (`random`, `uuid4`, `os.urandom`): derive variety from block and transaction hashes;
* no network, files, subprocesses or environment variables: the state API and the block reader are
  the only inputs besides the transaction;
* no floats in state (rounding differs): use integers; `put_json` refuses floats;
* no iteration over sets or other unordered containers when the order affects state or results;
* keep nothing between calls in instance attributes, not even a cache of the state: a SCORE
  process may restart at any time, each peer's at its own height, and the steps a call counts
  must not depend on what the instance remembers;
* the constructor reads settings only: state and blocks refuse it (ScoreError), since it runs
  when this peer's SCORE process starts, at a height other peers are not at.

Raise `ScoreError` (or any exception) to reject a transaction: its result is code 9000 with the
message, its state changes are discarded, and the chain goes on.

`emit_event(signature, indexed, data)` records an event log in the running transaction's result
(ICON's eventLogs: the signature, such as "Transfer(Address,Address,int)", then up to three indexed
values, then the data values, all strings); a transaction that fails keeps none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from loopchain.types import canonical
from loopchain.types.canonical import EncodingError


class ScoreError(Exception):
    """Raised by a SCORE to reject a transaction or a query with a message for the client."""


@dataclass(frozen=True)
class TransactionView:
    """The transaction a SCORE executes: its hash, the client's JSON data, sender and time (µs),
    and who signed it: "peer" when a peer signed it on behalf of a client it does not name (a v1
    transaction: `sender` is that peer), "client" when the sender signed it itself."""

    tx_hash: str
    data: Any
    sender: str
    timestamp: int
    signed_by: str = "client"


@dataclass(frozen=True)
class BlockView:
    """The block a transaction is executed in, or one a SCORE looks up."""

    height: int
    block_hash: str
    timestamp: int
    leader: str


class StateAccess(Protocol):
    """The SCORE's key-value state; writes of one block are committed atomically by the engine."""

    def get(self, key: bytes) -> bytes | None:
        """The value stored at `key`, or None."""
        ...

    def put(self, key: bytes, value: bytes) -> None:
        """Store `value` at `key`."""
        ...

    def delete(self, key: bytes) -> None:
        """Remove `key` (no error when absent)."""
        ...


class BlockReader(Protocol):
    """Read access to the blocks of the SCORE's own channel."""

    def last_block(self) -> BlockView | None:
        """The last block executed before the current one, or None on an empty chain."""
        ...

    def block_by_height(self, height: int) -> BlockView | None:
        """The block at `height`, or None."""
        ...

    def block_by_hash(self, block_hash: str) -> BlockView | None:
        """The block with hex hash `block_hash`, or None."""
        ...


MAX_EVENTS_PER_TX = 64
MAX_INDEXED = 3  # besides the signature, as ICON allows
MAX_EVENT_VALUES = 32
MAX_EVENT_CHARS = 4096  # the signature and every value of one event together


@dataclass(frozen=True)
class EventLog:
    """One event of a transaction: `indexed` is the signature and the indexed values."""

    indexed: tuple[str, ...]
    data: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"indexed": list(self.indexed), "data": list(self.data)}

    @classmethod
    def from_json(cls, value: Any) -> EventLog:
        """Parse the JSON form (EncodingError when it is not one)."""
        obj = canonical.check_fields(value, {"indexed": list, "data": list}, _EVENT_KNOWN)
        return _event(obj["indexed"], obj["data"], EncodingError)


_EVENT_KNOWN = frozenset({"indexed", "data"})


def _event(indexed: Any, data: Any, error: type[Exception]) -> EventLog:
    values = [*indexed, *data]
    if not indexed or not isinstance(indexed[0], str) or not indexed[0]:
        raise error("an event needs its signature, a non-empty string")
    if len(indexed) > MAX_INDEXED + 1 or len(values) > MAX_EVENT_VALUES + 1:
        raise error(
            f"an event takes at most {MAX_INDEXED} indexed values and {MAX_EVENT_VALUES} in all"
        )
    if not all(isinstance(v, str) for v in values):
        raise error('event values must be strings (ICON writes integers as hex, "0x1f")')
    if sum(len(v) for v in values) > MAX_EVENT_CHARS:
        raise error(f"an event is limited to {MAX_EVENT_CHARS} characters")
    if not all(is_valid_text(v) for v in values):
        raise error("event values must be valid Unicode text (a lone surrogate is not)")
    return EventLog(tuple(indexed), tuple(data))


def is_valid_text(value: str) -> bool:
    """Whether `value` is valid Unicode (no lone surrogate): what can be hashed, sent and stored."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class EventLogs:
    """The events of the transaction that runs now; the engine takes them when it succeeds."""

    def __init__(self) -> None:
        self._items: list[EventLog] = []

    def emit(self, signature: str, indexed: list[str], data: list[str]) -> None:
        if len(self._items) >= MAX_EVENTS_PER_TX:
            raise ScoreError(f"a transaction may emit at most {MAX_EVENTS_PER_TX} events")
        self._items.append(_event([signature, *indexed], list(data), ScoreError))

    def take(self) -> tuple[EventLog, ...]:
        """The events emitted since the last take, which are forgotten."""
        items, self._items = tuple(self._items), []
        return items


@dataclass
class ScoreContext:
    """What the engine hands a SCORE: its state, its channel's blocks, a logger, its package.json,
    and where its events go."""

    db: StateAccess
    blocks: BlockReader
    logger: logging.Logger
    package_info: dict[str, Any]
    events: EventLogs = field(default_factory=EventLogs)


class ScoreBase:
    """Base class of every `UserScore`; override `invoke`, `query` and, if wanted, `info`."""

    def __init__(self, context: ScoreContext) -> None:
        """Keep the context; `self.db`, `self.blocks` and `self.log` are shortcuts into it (the
        state and the blocks answer from `invoke` and `query` on, not in a constructor)."""
        self.context = context
        self.db: StateAccess = context.db
        self.blocks: BlockReader = context.blocks
        self.log: logging.Logger = context.logger

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Execute one transaction; return None (success) or {"code": int, "message": str} (a
        code within int32; a v1 transaction keeps its writes whatever its code)."""
        return None

    def query(self, params: str) -> str:
        """Answer a read-only query: a JSON string in, a JSON string out."""
        raise ScoreError("this SCORE does not answer queries")

    def info(self) -> dict[str, Any]:
        """The package information (the parsed package.json)."""
        return self.context.package_info

    def emit_event(
        self, signature: str, indexed: Sequence[str] = (), data: Sequence[str] = ()
    ) -> None:
        """Record an event log of the running transaction (kept only if it succeeds)."""
        self.context.events.emit(signature, list(indexed), list(data))

    def get_json(self, key: str, default: Any = None) -> Any:
        """The JSON value stored at `key` (UTF-8 encoded), or `default` when absent."""
        raw = self.db.get(_key_bytes(key))
        if raw is None:
            return default
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ScoreError(f"state at {key!r} is not JSON: {exc}") from None

    def put_json(self, key: str, value: Any) -> None:
        """Store `value` at `key` as canonical JSON, so every peer writes the same bytes."""
        try:
            raw = canonical.encode(value)
        except (EncodingError, TypeError) as exc:
            raise ScoreError(f"state at {key!r} must be canonical JSON: {exc}") from None
        self.db.put(_key_bytes(key), raw)


def _key_bytes(key: str) -> bytes:
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ScoreError(f"state key {key!r} is not valid Unicode: {exc.reason}") from None
