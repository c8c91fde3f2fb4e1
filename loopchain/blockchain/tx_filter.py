"""Which transaction hashes a block store may hold: a Bloom filter over the hashes of the
transactions in final blocks, so that asking about a transaction that is not in the chain (every
new one, at intake, in gossip, in a proposal and when its block is saved) reads nothing.

A miss in LevelDB is not free: each one that looks into more than one table file is charged to the
first, and a file charged often enough is compacted. Under load those misses outnumbered the
transactions several times over, and the compaction they caused grew with the store.

The filter says "surely not" or "maybe": a "maybe" reads the store, so a false positive (at most
about 0.2 %) costs one read and never a wrong answer. Until it has been loaded with the hashes
already stored (`BlockStore.load_tx_filter`), it says "maybe" to everything. It grows with the
chain: when one Bloom filter is full, another with room for as many as all before it and half its
error rate is added.
It lives in memory only (Python's hash of bytes, which rbloom uses, differs between processes), at
about 1.8 bytes a transaction of the filter's room: 2.2 a stored one at start, and at most about
twice that right after it grows."""

from __future__ import annotations

import threading

from rbloom import Bloom

FIRST_CAPACITY = 1 << 16  # hashes the first filter takes (~115 KiB) when the chain holds fewer
FIRST_ERROR = 0.001  # the first filter's false-positive rate; each next one has half the rate


class TxFilter:
    """A growing Bloom filter of transaction hashes that says "maybe" until it is loaded."""

    def __init__(self, expected: int = 0, first: int | None = None) -> None:
        self.loaded = False  # True once every hash stored before it was made has been added
        self.added = 0
        self._filters: list[Bloom] = []
        self._room = 0
        self._first = FIRST_CAPACITY if first is None else first
        # room for the stored hashes and a quarter more: the next filter, when it comes, is larger
        self._next = (max(self._first, expected + expected // 4), FIRST_ERROR)
        self._lock = threading.Lock()

    def add(self, tx_hash: bytes, stamped_us: int | None = None) -> None:
        """Take `tx_hash` (`stamped_us`, its transaction's timestamp, is RecentTxFilter's). Under
        a lock: the filter is loaded in a worker thread while the event loop adds the hashes of
        the blocks it saves meanwhile."""
        with self._lock:
            if self._room <= 0:
                capacity, error = self._next
                self._filters.append(Bloom(capacity, error))
                self._room = capacity
                # each next filter has room for as many as all before it: the room doubles, and
                # the first growth of a long chain's filter adds ~1.8 bytes a stored transaction,
                # not 3.6
                self._next = (max(self._first, self.added + capacity), error / 2)
            self._filters[-1].add(tx_hash)
            self._room -= 1
            self.added += 1

    def may_hold(self, tx_hash: bytes, stamped_us: int | None = None) -> bool:
        """False when `tx_hash` was surely never added (and the filter is loaded)."""
        return not self.loaded or any(tx_hash in bloom for bloom in self._filters)

    def advance(self, block_time_us: int) -> None:
        """The chain's time moved on (a whole-chain filter keeps every hash)."""

    @property
    def size_bytes(self) -> int:
        return sum(bloom.size_in_bits for bloom in self._filters) // 8


# a recent filter's buckets a span: each covers a quarter of it, and one is dropped at a time
BUCKETS_A_SPAN = 4
BUCKET_FIRST_CAPACITY = 1 << 14  # hashes a bucket's first filter takes (~29 KiB)


class RecentTxFilter:
    """The hashes of the stored transactions stamped within `span_us` of the chain's time (its
    newest block's timestamp), in filters by their timestamp: what a whole-chain filter held
    grew with the chain for good (~2.6 bytes a transaction: 229 MB a day at 1,000 a second),
    and loading it read the whole index at every start (review). Only lookups of a transaction
    with its timestamp are answered (intake, gossip, proposals, saves: a transaction stamped
    out of the pool's window is refused by the window before it could be); one stamped before
    the span, or a lookup by hash alone, says "maybe" (a read).

    It never says "surely not" of a stored hash: one added stamped before the span is not kept,
    and its lookups are before the span too (the chain's time only goes on); one stamped
    further ahead than the span is kept in a filter of its own for good. Loading it reads the
    blocks stamped within twice the span of the newest (BlockStore.load_tx_filter): a block
    holds no transaction stamped further from it than the pool's window (the consensus' rule)."""

    def __init__(self, span_us: int) -> None:
        self.loaded = False
        self.span_us = span_us
        self.bucket_us = max(1, span_us // BUCKETS_A_SPAN)
        self.added = 0
        self._chain_us: int | None = None  # the newest block's timestamp seen
        self._buckets: dict[int, TxFilter] = {}  # by timestamp // bucket_us
        self._ahead = _loaded(TxFilter(first=BUCKET_FIRST_CAPACITY))  # further ahead, when added
        self._lock = threading.Lock()

    def advance(self, block_time_us: int) -> None:
        """A block stamped `block_time_us` is stored: the buckets that end before the span
        behind the newest block are dropped."""
        with self._lock:
            if self._chain_us is not None and block_time_us <= self._chain_us:
                return
            self._chain_us = block_time_us
            oldest = (block_time_us - self.span_us) // self.bucket_us
            for key in [key for key in self._buckets if key < oldest]:
                del self._buckets[key]

    def add(self, tx_hash: bytes, stamped_us: int | None = None) -> None:
        """Take the hash of a stored transaction stamped `stamped_us` (advance first, with its
        block's timestamp)."""
        with self._lock:
            self.added += 1
            now = self._chain_us
            if now is None or stamped_us is None or stamped_us > now + self.span_us:
                target = self._ahead
            elif stamped_us < now - self.span_us:
                return  # asked about, it is "maybe": before the span for good
            else:
                key = stamped_us // self.bucket_us
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = self._buckets[key] = _loaded(TxFilter(first=BUCKET_FIRST_CAPACITY))
                target = bucket
            target.add(tx_hash)

    def may_hold(self, tx_hash: bytes, stamped_us: int | None = None) -> bool:
        """False when `tx_hash`, stamped `stamped_us`, is surely not stored (and the filter is
        loaded); "maybe" when its timestamp is not given or lies before the span."""
        if not self.loaded or stamped_us is None:
            return True
        now = self._chain_us
        if now is None:  # loaded, and no block was stored: none is
            return False
        if stamped_us < now - self.span_us:
            return True
        if self._ahead.added and self._ahead.may_hold(tx_hash):
            return True
        bucket = self._buckets.get(stamped_us // self.bucket_us)
        return bucket is not None and bucket.may_hold(tx_hash)

    @property
    def size_bytes(self) -> int:
        buckets = list(self._buckets.values())
        return self._ahead.size_bytes + sum(bucket.size_bytes for bucket in buckets)


def _loaded(hashes: TxFilter) -> TxFilter:
    hashes.loaded = True  # (a bucket holds what it was given: nothing was stored before it)
    return hashes
