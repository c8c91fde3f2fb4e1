"""Runs a SCORE package of this repository without a SCORE process, on the engine's own state.

`Harness` loads a package as the peer does and executes each `invoke` as a block of one
transaction, with the state classes of the SCORE process (loopchain/scoreservice/state.py) over an
in-memory store, so that what a test sees is what a peer would record:

* the constructor sees neither state nor blocks (ScoreError, as when the process loads it);
* a transaction that raises keeps none of its writes or events (its block is still committed);
* keys starting with a NUL byte are refused (they are the engine's), as are keys and values
  out of bounds and writes past a transaction's limit;
* `self.blocks` in invoke holds the blocks committed before the running one;
* a query reads the committed state and may not write.

Unlike the process, the harness runs no step meter and lets the SCORE's exception reach the test.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from loopchain.blockchain.execution import SCORE_ERROR, SUCCESS, TxResult
from loopchain.blockchain.score_base import (
    BlockView,
    EventLog,
    EventLogs,
    ScoreBase,
    ScoreContext,
    TransactionView,
)
from loopchain.scoreservice.packages import ScorePackage, load_score_class, resolve_package
from loopchain.scoreservice.process import CONSTRUCTOR_READS
from loopchain.scoreservice.state import (
    USER_PREFIX,
    BlockGate,
    NoState,
    ReadOnlyState,
    ScoreState,
    StateProxy,
)
from loopchain.storage.memory import MemoryStore

REPOSITORY = Path(__file__).resolve().parent
OWNER = "hx" + "11" * 20
ALICE = "hx" + "aa" * 20
BOB = "hx" + "bb" * 20
FIRST_BLOCK_TIME = 1_000_000  # µs; block h is at FIRST_BLOCK_TIME + h


class MemoryState:
    """A dict-backed StateAccess without the engine's rules: for testing ScoreBase's helpers
    alone (a SCORE package is tested with Harness)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        """The value at `key`, or None."""
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        """Store `value` at `key`."""
        assert isinstance(key, bytes) and isinstance(value, bytes)
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        """Remove `key` if present."""
        self.data.pop(key, None)


class MemoryBlocks:
    """A list-backed BlockReader; `add` appends the next block (for testing ScoreBase alone)."""

    def __init__(self) -> None:
        self.chain: list[BlockView] = []

    def add(self, timestamp: int = FIRST_BLOCK_TIME, leader: str = OWNER) -> BlockView:
        """Append and return a block at the next height."""
        height = len(self.chain)
        block = BlockView(height, f"{height:064x}", timestamp + height, leader)
        self.chain.append(block)
        return block

    def last_block(self) -> BlockView | None:
        """The newest block, or None."""
        return self.chain[-1] if self.chain else None

    def block_by_height(self, height: int) -> BlockView | None:
        """The block at `height`, or None."""
        return self.chain[height] if 0 <= height < len(self.chain) else None

    def block_by_hash(self, block_hash: str) -> BlockView | None:
        """The block with `block_hash`, or None."""
        return next((b for b in self.chain if b.block_hash == block_hash), None)


class HarnessState(ScoreState):
    """The engine's ScoreState over a MemoryStore, with its committed user state as a dict."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())

    @property
    def data(self) -> Mapping[bytes, bytes]:
        """The SCORE's keys and values as the last committed block left them, read-only (a
        write to it would change nothing: seed state with Harness.seed)."""
        return MappingProxyType(
            {key[len(USER_PREFIX) :]: value for key, value in self.store.iterate(USER_PREFIX)}
        )


class Harness:
    """A SCORE instance on the engine's state, in memory; each invoke is a block of its own."""

    def __init__(
        self, name: str, info: dict[str, Any] | None = None, repository: Path = REPOSITORY
    ) -> None:
        """Load package `name` of `repository` (this folder); `info` replaces its package.json
        in the context when given. Raises what the process would report as a load failure."""
        self.package: ScorePackage = load_sample_package(name, repository)
        self.state = HarnessState()
        self.proxy = StateProxy(ReadOnlyState(self.state, "state writes only inside invoke"))
        self._query_view = ReadOnlyState(self.state, "state is read-only in a query")
        self._event_logs = EventLogs()
        blocks = BlockGate(self.state.blocks)
        self.context = ScoreContext(
            self.proxy,
            blocks,
            logging.getLogger(f"score.{name}"),
            info or self.package.info,
            self._event_logs,
        )
        self.score_class: type[ScoreBase] = load_score_class(self.package)
        self.proxy.target = NoState(CONSTRUCTOR_READS)
        blocks.closed = CONSTRUCTOR_READS
        try:
            self.score = self.score_class(self.context)
        finally:
            self.proxy.reset()
            blocks.closed = None
        self.events: tuple[EventLog, ...] = ()  # those of the last invoke, when it succeeded
        self._tx_count = 0

    def invoke(
        self, data: Any, sender: str = OWNER, signed_by: str = "client"
    ) -> dict[str, Any] | None:
        """Invoke one transaction with `data` in the next block (signed by its sender, or by
        `signed_by="peer"` as a peer signs a v1 transaction) and commit that block. What the
        SCORE raises is raised here once its writes and events are dropped."""
        height = self.state.executed_height + 1
        block = BlockView(height, f"{height:064x}", FIRST_BLOCK_TIME + height, OWNER)
        self._tx_count += 1
        tx_hash = f"{self._tx_count:064x}"
        transaction = TransactionView(tx_hash, data, sender, block.timestamp, signed_by)
        self.state.begin_block()
        overlay = self.state.overlay()
        self.proxy.target = overlay
        self._event_logs.take()
        self.events = ()
        try:
            returned = self.score.invoke(transaction, block)
        except BaseException:
            self._event_logs.take()
            self._commit(block, TxResult(tx_hash, SCORE_ERROR, "the SCORE raised"))
            raise
        finally:
            self.proxy.reset()
        self.events = self._event_logs.take()
        self.state.merge(overlay)
        code = returned.get("code") if isinstance(returned, dict) else SUCCESS
        code = code if type(code) is int else SUCCESS
        self._commit(block, TxResult(tx_hash, code, "", events=self.events))
        return returned

    @property
    def blocks(self) -> Any:
        """The blocks committed so far (a BlockReader: last_block, block_by_height, ...)."""
        return self.state.blocks

    def seed(self, key: bytes, value: bytes) -> None:
        """Put `value` at the SCORE's `key` in the committed state, as if an earlier block had
        written it (the testkit before the engine's state took `harness.state.data[key] = value`)."""
        if not isinstance(key, bytes) or not isinstance(value, bytes) or not key:
            raise TypeError("seed takes a non-empty bytes key and a bytes value")
        self.state.store.put(USER_PREFIX + key, value)

    def query(self, params: str) -> str:
        """The SCORE's answer to `params`, from the committed state (writes refused)."""
        self.proxy.target = self._query_view
        try:
            return self.score.query(params)
        finally:
            self.proxy.reset()

    def _commit(self, block: BlockView, result: TxResult) -> None:
        self.state.stage_block(block, [result])
        self.state.commit(block.height)


def load_sample_package(name: str, repository: Path = REPOSITORY) -> ScorePackage:
    """Resolve package `name` of `repository` (by default this one) as a plain folder."""
    work_dir = Path(tempfile.gettempdir()) / "loopchain-score-samples"
    return resolve_package(
        repository, name, branch="master", allow_develop=False, work_dir=work_dir
    )
