"""The transaction pool: bounded, first-in first-out, no duplicates."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

from loopchain.types.transaction import Transaction


class PoolFullError(RuntimeError):
    """The pool holds its maximum number of transactions."""


class TxPool:
    """Pending transactions of one channel in arrival order."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._txs: OrderedDict[bytes, Transaction] = OrderedDict()
        self._arrived: dict[bytes, float] = {}

    def add(self, tx: Transaction, now: float = 0.0) -> bool:
        """Add `tx` (arrived at `now`); False when already present; PoolFullError when full."""
        if tx.hash in self._txs:
            return False
        if len(self._txs) >= self.max_size:
            raise PoolFullError(f"transaction pool is full ({self.max_size} transactions)")
        self._txs[tx.hash] = tx
        self._arrived[tx.hash] = now
        return True

    def arrival(self, tx_hash: bytes) -> float:
        """When a pooled transaction arrived (as given to `add`)."""
        return self._arrived[tx_hash]

    def take(
        self, max_count: int, max_bytes: int, exclude: set[bytes] | None = None
    ) -> list[Transaction]:
        """The oldest transactions that fit `max_count` and `max_bytes` (they stay in the pool)."""
        chosen: list[Transaction] = []
        size = 0
        for tx_hash, tx in self._txs.items():
            if len(chosen) >= max_count:
                break
            if exclude and tx_hash in exclude:
                continue
            tx_size = len(tx.encode())
            if chosen and size + tx_size > max_bytes:
                break
            chosen.append(tx)
            size += tx_size
        return chosen

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        """Drop the given transactions (committed ones)."""
        for tx_hash in tx_hashes:
            self._txs.pop(tx_hash, None)
            self._arrived.pop(tx_hash, None)

    def hashes(self) -> Iterator[bytes]:
        """The pooled transactions' hashes, oldest first."""
        return iter(self._txs)

    def get(self, tx_hash: bytes) -> Transaction | None:
        return self._txs.get(tx_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._txs

    def __len__(self) -> int:
        return len(self._txs)

    def __bool__(self) -> bool:
        return bool(self._txs)
