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

    def __init__(self, expected: int = 0) -> None:
        self.loaded = False  # True once every hash stored before it was made has been added
        self.added = 0
        self._filters: list[Bloom] = []
        self._room = 0
        # room for the stored hashes and a quarter more: the next filter, when it comes, is larger
        self._next = (max(FIRST_CAPACITY, expected + expected // 4), FIRST_ERROR)
        self._lock = threading.Lock()

    def add(self, tx_hash: bytes) -> None:
        """Take `tx_hash`. Under a lock: the filter is loaded in a worker thread while the event
        loop adds the hashes of the blocks it saves meanwhile."""
        with self._lock:
            if self._room <= 0:
                capacity, error = self._next
                self._filters.append(Bloom(capacity, error))
                self._room = capacity
                # each next filter has room for as many as all before it: the room doubles, and
                # the first growth of a long chain's filter adds ~1.8 bytes a stored transaction,
                # not 3.6
                self._next = (max(FIRST_CAPACITY, self.added + capacity), error / 2)
            self._filters[-1].add(tx_hash)
            self._room -= 1
            self.added += 1

    def may_hold(self, tx_hash: bytes) -> bool:
        """False when `tx_hash` was surely never added (and the filter is loaded)."""
        return not self.loaded or any(tx_hash in bloom for bloom in self._filters)

    @property
    def size_bytes(self) -> int:
        return sum(bloom.size_in_bits for bloom in self._filters) // 8
