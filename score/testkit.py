"""In-memory state and block reader for testing SCORE classes directly (no SCORE process)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from loopchain.blockchain.score_base import (
    BlockView,
    EventLog,
    ScoreBase,
    ScoreContext,
    TransactionView,
)
from loopchain.scoreservice.packages import ScorePackage, load_score_class, resolve_package

REPOSITORY = Path(__file__).resolve().parent
OWNER = "hx" + "11" * 20
ALICE = "hx" + "aa" * 20
BOB = "hx" + "bb" * 20


class MemoryState:
    """A dict-backed StateAccess."""

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
    """A list-backed BlockReader; `add` appends the next block."""

    def __init__(self) -> None:
        self.chain: list[BlockView] = []

    def add(self, timestamp: int = 1_000_000, leader: str = OWNER) -> BlockView:
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


class Harness:
    """A sample SCORE instance with its in-memory state and blocks."""

    def __init__(self, name: str, info: dict[str, Any] | None = None) -> None:
        """Load sample `name`; `info` replaces its package.json in the context when given."""
        self.package: ScorePackage = load_sample_package(name)
        self.score_class: type[ScoreBase] = load_score_class(self.package)
        self.state = MemoryState()
        self.blocks = MemoryBlocks()
        context = ScoreContext(
            self.state, self.blocks, logging.getLogger(f"score.{name}"), info or self.package.info
        )
        self.score = self.score_class(context)
        self.context = context
        self.events: tuple[EventLog, ...] = ()  # those of the last invoke, when it succeeded
        self._tx_count = 0

    def invoke(
        self, data: Any, sender: str = OWNER, signed_by: str = "client"
    ) -> dict[str, Any] | None:
        """Invoke one transaction with `data` in a new block (signed by its sender, or by
        `signed_by="peer"` as a peer signs a v1 transaction)."""
        block = self.blocks.add()
        self._tx_count += 1
        tx = TransactionView(f"{self._tx_count:064x}", data, sender, block.timestamp, signed_by)
        self.context.events.take()
        self.events = ()
        returned = self.score.invoke(tx, block)
        self.events = self.context.events.take()
        return returned


def load_sample_package(name: str) -> ScorePackage:
    """Resolve a sample package of this repository as a plain folder."""
    work_dir = Path(tempfile.gettempdir()) / "loopchain-score-samples"
    return resolve_package(
        REPOSITORY, name, branch="master", allow_develop=False, work_dir=work_dir
    )
