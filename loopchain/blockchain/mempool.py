"""The transaction pool: bounded by count and bytes, first-in first-out, no duplicates; a
transaction too large for any block, or with a timestamp outside the window, never enters, and a
pooled one leaves when its timestamp falls out of the window."""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from loopchain.blockchain import coin
from loopchain.types import icon_tx
from loopchain.types.canonical import EncodingError
from loopchain.types.transaction import V3, Transaction

UNBOUNDED = 1 << 62
EXPIRY_PERIOD = 1.0  # seconds between two sweeps for expired transactions
EXPIRED_MEMORY = 65_536  # hashes of the latest transactions expired here (to say so when asked)


def block_window_us(window_s: float, max_skew_us: int) -> int | None:
    """How far from a block's timestamp a transaction in it may be stamped (None: any), for a
    pool window of `window_s` seconds and the skew voters allow a leader's clock (see
    ConsensusState.block_window_us)."""
    if math.isinf(window_s):
        return None
    return int((window_s + EXPIRY_PERIOD) * 1_000_000) + max_skew_us


class PoolFullError(RuntimeError):
    """The pool holds its maximum number of transactions or bytes."""


class TxRefused(ValueError):
    """A transaction the pool never takes: too large, or its timestamp is outside the window."""


class TxPool:
    """Pending transactions of one channel in arrival order."""

    def __init__(
        self,
        max_size: int,
        *,
        max_bytes: int = UNBOUNDED,
        max_tx_bytes: int = UNBOUNDED,
        window: float = math.inf,
    ) -> None:
        self.max_size = max_size
        self.max_bytes = max_bytes
        self.max_tx_bytes = max_tx_bytes
        self.window = window  # seconds a transaction's timestamp may lie from now, either way
        self._txs: OrderedDict[bytes, Transaction] = OrderedDict()
        self._arrived: dict[bytes, float] = {}
        self._by_signature: dict[bytes, bytes] = {}  # signature -> hash, for a block's decode
        self._bytes = 0
        self._next_sweep = 0.0
        # (timestamp, hash) of pooled transactions, earliest first, for the expiry sweep; an entry
        # of a transaction that left is skipped when met, and the heap is rebuilt from the pool
        # when such entries outnumber the pooled ones (each costs O(1) amortised)
        self._by_time: list[tuple[int, bytes]] = []
        self._expired: OrderedDict[bytes, int] = OrderedDict()  # hash -> timestamp: `expired`
        self._spend: dict[str, int] = {}  # see `spend_of`

    def check(self, tx: Transaction, now: float) -> None:
        """Raise TxRefused unless the pool would ever take `tx` (size and timestamp window)."""
        size = len(tx.encode())
        if size > self.max_tx_bytes:
            raise TxRefused(f"transaction is {size} bytes, limit {self.max_tx_bytes}")
        off = tx.timestamp / 1_000_000 - now
        if abs(off) > self.window:
            when = "old" if off < 0 else "far in the future"
            raise TxRefused(
                f"transaction timestamp is {abs(off):.0f} s {when} (window {self.window:g} s)"
            )

    def add(self, tx: Transaction, now: float = 0.0, *, beyond_limits: bool = False) -> bool:
        """Add `tx` (arrived at `now`); False when already present; TxRefused when it may never
        enter; PoolFullError when full, unless `beyond_limits` (a transaction already promised
        to a client: its admission bounded how far past the limits such ones take the pool)."""
        if tx.hash in self._txs:
            return False
        try:
            self.check(tx, now)
        except TxRefused:
            if beyond_limits and tx.timestamp / 1_000_000 < now - self.window:
                self._note_expired(tx)  # acknowledged, and too old now (a replayed one)
            raise
        size = tx.held_bytes
        if not beyond_limits and len(self._txs) >= self.max_size:
            raise PoolFullError(f"transaction pool is full ({self.max_size} transactions)")
        if not beyond_limits and self._bytes + size > self.max_bytes:
            raise PoolFullError(f"transaction pool is full ({self.max_bytes} bytes)")
        self._txs[tx.hash] = tx
        self._arrived[tx.hash] = now
        self._expired.pop(tx.hash, None)
        self._by_signature.setdefault(tx.signature, tx.hash)
        self._bytes += size
        owed = max_cost(tx)
        if owed is not None:
            self._spend[owed[0]] = self._spend.get(owed[0], 0) + owed[1]
        if self.window != math.inf:
            heapq.heappush(self._by_time, (tx.timestamp, tx.hash))
        return True

    def expire(self, now: float) -> list[Transaction]:
        """Drop the transactions whose timestamp fell out of the window (a sweep at most every
        EXPIRY_PERIOD seconds); returns them."""
        # a clock set back since the last sweep sweeps now: waiting for it to pass the time of
        # the next one again kept expired transactions for as long as it had gone back
        waiting = now < self._next_sweep <= now + EXPIRY_PERIOD
        if waiting or math.isinf(self.window):
            return []
        self._next_sweep = now + EXPIRY_PERIOD
        oldest_us = (now - self.window) * 1_000_000
        heap, expired = self._by_time, []
        while heap and heap[0][0] < oldest_us:  # the expired ones only, not the whole pool
            _, tx_hash = heapq.heappop(heap)
            tx = self._txs.get(tx_hash)
            if tx is not None:
                expired.append(tx)
                self._note_expired(tx)
        self.remove(tx.hash for tx in expired)
        if len(heap) > 2 * len(self._txs) + 1024:
            self._by_time = [(tx.timestamp, tx_hash) for tx_hash, tx in self._txs.items()]
            heapq.heapify(self._by_time)
        return expired

    def expired(self, tx_hash: bytes) -> bool:
        """Whether `tx_hash` left this pool because its timestamp fell out of the window before
        a block took it, or was acknowledged and came back (from the intake journal) too old to
        be pooled again; the latest EXPIRED_MEMORY such transactions are remembered."""
        return tx_hash in self._expired

    def expired_stamp(self, tx_hash: bytes) -> int | None:
        """The timestamp of a transaction `expired` says left this pool (None: not one)."""
        return self._expired.get(tx_hash)

    def _note_expired(self, tx: Transaction) -> None:
        self._expired[tx.hash] = tx.timestamp
        self._expired.move_to_end(tx.hash)
        while len(self._expired) > EXPIRED_MEMORY:
            self._expired.popitem(last=False)

    def arrival(self, tx_hash: bytes) -> float:
        """When a pooled transaction arrived (as given to `add`)."""
        return self._arrived[tx_hash]

    def take(
        self, max_count: int, max_bytes: int, exclude: set[bytes] | None = None
    ) -> list[Transaction]:
        """The oldest transactions that fit `max_count` and `max_bytes` (they stay in the pool);
        one that could never fit is passed over, so it cannot hold up every block."""
        chosen: list[Transaction] = []
        size = 0
        for tx_hash, tx in self._txs.items():
            if len(chosen) >= max_count:
                break
            if exclude and tx_hash in exclude:
                continue
            tx_size = len(tx.encode())
            if tx_size > max_bytes:
                continue
            if size + tx_size > max_bytes:
                break
            chosen.append(tx)
            size += tx_size
        return chosen

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        """Drop the given transactions (committed or expired ones)."""
        for tx_hash in tx_hashes:
            tx = self._txs.pop(tx_hash, None)
            if tx is not None:
                self._arrived.pop(tx_hash, None)
                if self._by_signature.get(tx.signature) == tx_hash:
                    del self._by_signature[tx.signature]
                self._bytes -= tx.held_bytes
                owed = max_cost(tx)
                if owed is not None:
                    left = self._spend.get(owed[0], 0) - owed[1]
                    if left > 0:
                        self._spend[owed[0]] = left
                    else:
                        self._spend.pop(owed[0], None)

    def spend_of(self, sender: str) -> int:
        """What the pooled v3 transactions of `sender` may cost it at most (value + stepLimit x
        STEP_PRICE each): a sender's balance is checked against its pooled transactions too (one
        holding a single fee had thousands admitted, and executed for it, review)."""
        return self._spend.get(sender, 0)

    @property
    def size_bytes(self) -> int:
        """The memory the pooled transactions hold (Transaction.held_bytes, what `max_bytes`
        bounds): several times their bytes."""
        return self._bytes

    def hashes(self) -> Iterator[bytes]:
        """The pooled transactions' hashes, oldest first."""
        return iter(self._txs)

    def get(self, tx_hash: bytes) -> Transaction | None:
        return self._txs.get(tx_hash)

    def by_signature(self, signature: bytes) -> Transaction | None:
        """The pooled transaction with this signature (a block that carries it is decoded
        without decoding it again, when its bytes are the same)."""
        tx_hash = self._by_signature.get(signature)
        return self._txs.get(tx_hash) if tx_hash is not None else None

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._txs

    def __len__(self) -> int:
        return len(self._txs)

    def __bool__(self) -> bool:
        return bool(self._txs)


def max_cost(tx: Transaction) -> tuple[str, int] | None:
    """(sender, value + stepLimit x STEP_PRICE) of a v3 transaction: the most it may cost its
    sender; None for a v1 one (or a v3 one that does not parse: none is pooled)."""
    if tx.version != V3:
        return None
    try:
        icon = tx.icon()
    except (EncodingError, icon_tx.InvalidTransaction):
        return None
    return icon.sender, icon.value + icon.step_limit * coin.STEP_PRICE
