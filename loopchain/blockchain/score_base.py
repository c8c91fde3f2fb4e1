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
* keep nothing between calls in instance attributes that the state does not also hold: a SCORE
  process may restart at any time and is rebuilt from the state DB alone.

Raise `ScoreError` (or any exception) to reject a transaction: its result is code 9000 with the
message, its state changes are discarded, and the chain goes on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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


@dataclass
class ScoreContext:
    """What the engine hands a SCORE: its state, its channel's blocks, a logger, its package.json."""

    db: StateAccess
    blocks: BlockReader
    logger: logging.Logger
    package_info: dict[str, Any]


class ScoreBase:
    """Base class of every `UserScore`; override `invoke`, `query` and, if wanted, `info`."""

    def __init__(self, context: ScoreContext) -> None:
        """Keep the context; `self.db`, `self.blocks` and `self.log` are shortcuts into it."""
        self.context = context
        self.db: StateAccess = context.db
        self.blocks: BlockReader = context.blocks
        self.log: logging.Logger = context.logger

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Execute one transaction; return None (success) or {"code": int, "message": str}."""
        return None

    def query(self, params: str) -> str:
        """Answer a read-only query: a JSON string in, a JSON string out."""
        raise ScoreError("this SCORE does not answer queries")

    def info(self) -> dict[str, Any]:
        """The package information (the parsed package.json)."""
        return self.context.package_info

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
