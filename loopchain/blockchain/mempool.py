"""The transaction pool: bounded by count and bytes, no duplicates; a transaction too large for any
block, or with a timestamp outside the window, never enters, and a pooled one leaves when its
timestamp falls out of the window. The channel's writers (the peers that take transactions from
clients) share it: each holds at most its share of the bounds, and blocks take the oldest of each
writer in turn, so that one writer's flood (a byzantine validator signing v1 transactions itself,
which costs it nothing) neither fills the others' pools nor crowds their clients out of blocks."""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from loopchain.blockchain import coin
from loopchain.types import icon_tx
from loopchain.types.canonical import EncodingError
from loopchain.types.transaction import V1, V3, Transaction

UNBOUNDED = 1 << 62
EXPIRY_PERIOD = 1.0  # seconds between two sweeps for expired transactions
EXPIRED_MEMORY = 65_536  # hashes of the latest transactions expired here (to say so when asked)
UNEXECUTED_HEIGHTS_KEPT = 1_024  # final blocks not executed yet whose senders' costs are counted


def block_window_us(window_s: float, max_skew_us: int) -> int | None:
    """How far from a block's timestamp a transaction in it may be stamped (None: any), for a
    pool window of `window_s` seconds and the skew voters allow a leader's clock (see
    ConsensusState.block_window_us)."""
    if math.isinf(window_s):
        return None
    return int((window_s + EXPIRY_PERIOD) * 1_000_000) + max_skew_us


UNKNOWN_WRITER = ""  # of v3 transactions relayed over plain gRPC (no certificate names who sent)


def writer_of(tx: Transaction, relayer: str | None) -> str:
    """Whose share of the pool `tx` takes: a v1 transaction's signer (the peer that took it from
    its client: any other's is refused), else the peer that handed it over (`relayer`: this
    peer for its own clients'; UNKNOWN_WRITER when unknown, relays over plain gRPC are not
    authenticated: they share the others' shares, and the bounds hold against a flood of v3
    transactions only over TLS)."""
    return tx.sender if tx.version == V1 else (relayer or UNKNOWN_WRITER)


class PoolFullError(RuntimeError):
    """The pool, or a writer's share of it, holds its maximum number of transactions or bytes."""


class TxRefused(ValueError):
    """A transaction the pool never takes: too large, or its timestamp is outside the window."""


class TxPool:
    """Pending transactions of one channel in arrival order, by writer."""

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
        # the writers that share the bounds (set by the channel as its parties change): each may
        # hold 1/writers of them, its own clients' transactions included
        self.writers = 1
        self._writer: dict[bytes, str] = {}  # hash -> its writer (writer_of)
        self._queues: dict[str, OrderedDict[bytes, None]] = {}  # writer -> its hashes, in order
        self._writer_bytes: dict[str, int] = {}
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
        # what the v3 transactions of final blocks not executed yet may cost their senders, by
        # block height, and by sender in all (see `note_final`)
        self._unexecuted: dict[int, dict[str, int]] = {}
        self._unexecuted_spend: dict[str, int] = {}

    def check(self, tx: Transaction, now: float, margin: float = 0.0) -> None:
        """Raise TxRefused unless the pool would ever take `tx` (size and timestamp window);
        with `margin`, the window is that much narrower (a client's transaction: see
        ChannelService.intake_margin)."""
        size = len(tx.encode())
        if size > self.max_tx_bytes:
            raise TxRefused(f"transaction is {size} bytes, limit {self.max_tx_bytes}")
        off = tx.timestamp / 1_000_000 - now
        if abs(off) > self.window - margin:
            when = "old" if off < 0 else "far in the future"
            window = f"window {self.window:g} s"
            if margin:
                window += (
                    f"; a client's is taken within {self.window - margin:g} s of this clock, "
                    "so that the other peers' clocks (MAX_TIMESTAMP_SKEW) and its relay take it too"
                )
            raise TxRefused(f"transaction timestamp is {abs(off):.0f} s {when} ({window})")

    def _shares(self, writer: str) -> tuple[int, int]:
        """(how many shares `writer` holds, of how many): one each; the unknown writer (the
        v3 transactions of every other peer over plain gRPC) all but this peer's own."""
        writers = max(1, self.writers)
        return (max(1, writers - 1) if writer == UNKNOWN_WRITER else 1), writers

    def share_size(self, writer: str) -> int:
        """The transactions `writer` may hold: its share of `max_size`."""
        held, of = self._shares(writer)
        return max(1, self.max_size * held // of)

    def share_bytes(self, writer: str) -> int:
        """The memory `writer`'s transactions may hold: its share of `max_bytes`."""
        held, of = self._shares(writer)
        return self.max_bytes * held // of

    def count_of(self, writer: str) -> int:
        queue = self._queues.get(writer)
        return len(queue) if queue is not None else 0

    def bytes_of(self, writer: str) -> int:
        """The memory `writer`'s pooled transactions hold (as `size_bytes` counts it)."""
        return self._writer_bytes.get(writer, 0)

    def has_room_for(self, writer: str, count: int, size: int) -> bool:
        """Whether `writer`'s share has room for `count` more of its transactions holding
        `size` bytes (a relayed transaction that its writer's share has no room for is not
        worth its signature's recovery: the pool would refuse it)."""
        count_fits = self.count_of(writer) + count <= self.share_size(writer)
        return count_fits and self.bytes_of(writer) + size <= self.share_bytes(writer)

    def add(
        self,
        tx: Transaction,
        now: float = 0.0,
        *,
        beyond_limits: bool = False,
        writer: str = UNKNOWN_WRITER,
    ) -> bool:
        """Add `tx` (arrived at `now`, `writer`'s: see writer_of); False when already present;
        TxRefused when it may never enter; PoolFullError when the pool or the writer's share of
        it is full, unless `beyond_limits` (a transaction already promised to a client: its
        admission bounded how far past the limits such ones take the pool)."""
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
        if not beyond_limits and not self.has_room_for(writer, 1, size):
            held, of = self._shares(writer)
            raise PoolFullError(
                f"the share of writer {writer or '(unknown)'} is full ({self.count_of(writer)} "
                f"transactions, {self.bytes_of(writer)} bytes: {held}/{of} of the pool)"
            )
        self._txs[tx.hash] = tx
        self._writer[tx.hash] = writer
        queue = self._queues.get(writer)
        if queue is None:
            queue = self._queues[writer] = OrderedDict()
        queue[tx.hash] = None
        self._writer_bytes[writer] = self._writer_bytes.get(writer, 0) + size
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
        """Transactions that fit `max_count` and `max_bytes` (they stay in the pool): each writer's
        oldest, the next one always of the writer that has taken the least of the block so far,
        by its dominant part (of the count or of the bytes, whichever it took more of), so that
        a writer with thousands waiting takes no more of a block than one with a few while both
        have some, however large or small it makes them (first in, first out, a review's
        byzantine validator filled every block with its own before the clients' of the others;
        one at a time, its 64 KiB ones took the bytes). A transaction that could never fit is
        passed over, so it cannot hold up every block; a writer whose oldest does not fit the
        bytes left is done."""
        chosen: list[Transaction] = []
        size = 0
        txs = self._txs
        # (taken, order, the writer's oldest to come): taken in units of 1/(max_count x
        # max_bytes) of a block, `order` breaking ties (iterators are never compared)
        turns = [(0, order, iter(queue)) for order, queue in enumerate(self._queues.values())]
        while turns and len(chosen) < max_count:
            taken, order, turn = turns[0]
            for tx_hash in turn:
                if exclude and tx_hash in exclude:
                    continue
                tx = txs[tx_hash]
                tx_size = len(tx.encode())
                if tx_size > max_bytes:
                    continue
                if size + tx_size > max_bytes:
                    heapq.heappop(turns)
                    break
                chosen.append(tx)
                size += tx_size
                part = max(tx_size * max_count, max_bytes)
                heapq.heapreplace(turns, (taken + part, order, turn))
                break
            else:
                heapq.heappop(turns)
        return chosen

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        """Drop the given transactions (committed or expired ones)."""
        for tx_hash in tx_hashes:
            tx = self._txs.pop(tx_hash, None)
            if tx is not None:
                self._arrived.pop(tx_hash, None)
                writer = self._writer.pop(tx_hash)
                queue = self._queues[writer]
                del queue[tx_hash]
                left = self._writer_bytes[writer] - tx.held_bytes
                if queue:
                    self._writer_bytes[writer] = left
                else:
                    del self._queues[writer], self._writer_bytes[writer]
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
        STEP_PRICE each), and those of final blocks not executed yet: a sender's balance, read at
        the executed height, is checked against them too (one holding a single fee had thousands
        admitted, and executed for it; one leaving the pool for a final block was counted
        nowhere until its block was executed, and a sender had twice its balance admitted, the
        surplus failing unpaid: reviews)."""
        return self._spend.get(sender, 0) + self._unexecuted_spend.get(sender, 0)

    def note_final(self, height: int, txs: Iterable[Transaction]) -> None:
        """`txs` are in the final block at `height`, which is not executed yet: their senders'
        balances owe what they may cost until it is (`note_executed`). The newest
        UNEXECUTED_HEIGHTS_KEPT heights are kept: a peer syncing far ahead of its SCORE held
        every block's senders (13 KB a block of 200, review); an older one's are forgotten (its
        senders may have more admitted than they hold: those fail unpaid, as before this count)."""
        owed: dict[str, int] = {}
        for tx in txs:
            cost = max_cost(tx)
            if cost is not None and cost[1] > 0:  # (one of no cost is owed nothing)
                owed[cost[0]] = owed.get(cost[0], 0) + cost[1]
        if not owed or height in self._unexecuted:
            return
        self._unexecuted[height] = owed
        for sender, amount in owed.items():
            self._unexecuted_spend[sender] = self._unexecuted_spend.get(sender, 0) + amount
        while len(self._unexecuted) > UNEXECUTED_HEIGHTS_KEPT:  # the oldest (noted in order)
            self._forget_unexecuted(next(iter(self._unexecuted)))

    def note_executed(self, height: int) -> None:
        """The blocks up to `height` are executed: balances read now show what they cost. (Heights
        are noted in order: the oldest are met first, and the rest not looked at.)"""
        while self._unexecuted:
            oldest = next(iter(self._unexecuted))
            if oldest > height:
                return
            self._forget_unexecuted(oldest)

    def _forget_unexecuted(self, height: int) -> None:
        for sender, owed in self._unexecuted.pop(height).items():
            left = self._unexecuted_spend.get(sender, 0) - owed
            if left > 0:
                self._unexecuted_spend[sender] = left
            else:
                del self._unexecuted_spend[sender]

    @property
    def size_bytes(self) -> int:
        """The memory the pooled transactions hold (Transaction.held_bytes, what `max_bytes`
        bounds): several times their bytes."""
        return self._bytes

    def hashes(self, writer: str | None = None) -> Iterator[bytes]:
        """The pooled transactions' hashes (`writer`'s only, when given), oldest first."""
        if writer is None:
            return iter(self._txs)
        return iter(self._queues.get(writer, ()))

    def writer(self, tx_hash: bytes) -> str | None:
        """The writer of a pooled transaction (None: not pooled)."""
        return self._writer.get(tx_hash)

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
