"""The block store's filter of transaction hashes: a lookup of a transaction not in the chain
reads nothing once the filter is loaded, and no stored transaction is ever reported absent —
whether it was stored before the filter was made, while it was loading, or after."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rbloom import Bloom

from loopchain.blockchain import block_store as schema
from loopchain.blockchain import tx_filter
from loopchain.blockchain.block_store import BlockStore, BlockStoreError
from loopchain.blockchain.mempool import block_window_us
from loopchain.blockchain.tx_filter import RecentTxFilter, TxFilter
from loopchain.storage.leveldb import LevelDBStore
from loopchain.storage.memory import MemoryStore
from loopchain.types.transaction import Transaction
from tests.integration._storage_helpers import BASE_TIME_US, CHANNEL, ChainBuilder


def _hashes(count: int, salt: bytes = b"") -> list[bytes]:
    return [hashlib.sha3_256(salt + i.to_bytes(8, "big")).digest() for i in range(count)]


def test_an_unloaded_filter_says_maybe_to_every_hash() -> None:
    hashes = TxFilter()
    assert hashes.may_hold(b"\x01" * 32)
    hashes.add(b"\x02" * 32)
    assert hashes.may_hold(b"\x01" * 32)
    hashes.loaded = True
    assert not hashes.may_hold(b"\x01" * 32) and hashes.may_hold(b"\x02" * 32)


def test_a_loaded_empty_filter_holds_nothing() -> None:
    hashes = TxFilter()
    hashes.loaded = True
    assert not any(hashes.may_hold(h) for h in _hashes(100))
    assert hashes.size_bytes == 0


def test_the_filter_grows_past_its_first_capacity_without_losing_a_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tx_filter, "FIRST_CAPACITY", 64)
    hashes = TxFilter()
    hashes.loaded = True
    added = _hashes(64 * 15)  # the filters of 64, 64, 128, 256 and 512 hashes: five
    for tx_hash in added:
        hashes.add(tx_hash)
    assert all(hashes.may_hold(tx_hash) for tx_hash in added)
    others = _hashes(20_000, salt=b"other")
    false_positives = sum(hashes.may_hold(h) for h in others)
    assert false_positives < 0.01 * len(others)  # each filter at its rate (0.1 %, 0.05 %, ...)
    first = TxFilter()
    first.add(added[0])
    assert hashes.size_bytes >= 15 * first.size_bytes  # 64 + 128 + 256 + 512 hashes' room


def test_hashes_added_from_two_threads_at_once_are_all_kept_in_one_growing_filter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The filter loads in a worker thread while the event loop adds the hashes of the blocks it
    saves meanwhile: no hash and no count is lost, and it grows once when full, not once per
    thread that found it full (the making of a filter is widened here so the threads meet)."""
    monkeypatch.setattr(tx_filter, "FIRST_CAPACITY", 64)
    real = tx_filter.Bloom

    def slow_to_make(capacity: int, error: float) -> Bloom:
        time.sleep(0.001)  # lets the other thread run: it finds the filter full as well
        return real(capacity, error)

    monkeypatch.setattr(tx_filter, "Bloom", slow_to_make)
    hashes = TxFilter()
    hashes.loaded = True
    halves = _hashes(64 * 15 // 2, salt=b"loaded"), _hashes(64 * 15 // 2, salt=b"saved")
    threads = [threading.Thread(target=lambda h=h: [hashes.add(x) for x in h]) for h in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert hashes.added == 64 * 15
    assert all(hashes.may_hold(h) for half in halves for h in half)
    assert len(hashes._filters) == 5  # of 64, 64, 128, 256 and 512 hashes, as added by one


def test_a_filter_is_sized_for_the_chain_it_starts_with() -> None:
    small, large = TxFilter(0), TxFilter(10 * tx_filter.FIRST_CAPACITY)
    small.add(b"\x01" * 32)
    large.add(b"\x01" * 32)
    assert large.size_bytes >= 12 * small.size_bytes  # room for 12.5x the hashes


@settings(max_examples=30, deadline=None)
@given(stored=st.lists(st.binary(min_size=1, max_size=40), max_size=300))
def test_no_added_hash_is_ever_said_absent(stored: list[bytes]) -> None:
    hashes = TxFilter()
    for tx_hash in stored:
        hashes.add(tx_hash)
    hashes.loaded = True
    assert all(hashes.may_hold(tx_hash) for tx_hash in stored)


class CountingReads(MemoryStore):
    """A MemoryStore that records the transaction-index keys it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.index_reads: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        if key.startswith(schema.TX):
            self.index_reads.append(key)
        return super().get(key)


def _save_blocks(store: BlockStore, chain: ChainBuilder, blocks: int, txs: int) -> list[bytes]:
    """Save `blocks` final blocks of `txs` transactions each; their transactions' hashes."""
    saved = []
    for _ in range(blocks):
        block, certificate = chain.next(txs)
        store.save_block(block, certificate)
        saved += [tx.hash for tx in block.transactions]
    return saved


def _loaded(store: BlockStore) -> int:
    counts = list(store.load_tx_filter())
    assert store.tx_filter.loaded
    return counts[-1]


def test_once_loaded_a_transaction_not_in_the_chain_costs_no_read() -> None:
    kv, chain = CountingReads(), ChainBuilder()
    stored = _save_blocks(BlockStore(kv, CHANNEL), chain, 3, 4)
    reopened = BlockStore(kv, CHANNEL)
    unknown = _hashes(50, salt=b"new")
    kv.index_reads.clear()
    assert not any(reopened.has_transaction(h) for h in unknown[:5])
    assert len(kv.index_reads) == 5  # not loaded yet: each lookup reads the index, as before
    assert _loaded(reopened) == len(stored)
    kv.index_reads.clear()
    for tx_hash in unknown:  # every lookup of a transaction not in the chain
        assert not reopened.has_transaction(tx_hash)
        assert reopened.find_transaction(tx_hash) is None
        assert reopened.transaction_place(tx_hash) is None
        assert reopened.tx_result(tx_hash) is None
    # none read, but those the filter takes for stored (false positives: rare, it is nearly empty)
    maybe = {schema.TX + h for h in unknown if reopened.tx_filter.may_hold(h)}
    assert len(maybe) <= 2 and set(kv.index_reads) <= maybe
    for tx_hash in stored:  # the stored ones are still read, and found
        assert reopened.has_transaction(tx_hash)
    assert len(kv.index_reads) == len(stored)
    kv.index_reads.clear()
    block, certificate = chain.next(6)  # saving a block of new transactions reads no index
    reopened.save_block(block, certificate)
    assert len(kv.index_reads) <= 2  # (a false positive reads)
    assert all(reopened.has_transaction(tx.hash) for tx in block.transactions)


def test_blocks_saved_while_the_filter_loads_are_found_after_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(schema, "FILTER_LOAD_STEP", 2)
    chain = ChainBuilder()
    kv = LevelDBStore(tmp_path / "blocks")
    try:
        before = _save_blocks(BlockStore(kv, CHANNEL), chain, 3, 3)
        reopened = BlockStore(kv, CHANNEL)
        steps = reopened.load_tx_filter()
        assert next(steps) == 2 and not reopened.tx_filter.loaded
        during = _save_blocks(reopened, chain, 2, 3)  # between two steps: after its snapshot
        counts = list(steps)
        assert reopened.tx_filter.loaded and counts[-1] == len(before)  # its snapshot's only
        block, certificate = chain.next(3)
        reopened.save_block(block, certificate)
        after = [tx.hash for tx in block.transactions]
        for tx_hash in before + during + after:
            assert reopened.has_transaction(tx_hash)
            assert reopened.find_transaction(tx_hash) is not None
        # and a transaction already in the chain is still refused in a new block
        replay = chain.block([chain.transaction(), block.transactions[0]])
        with pytest.raises(BlockStoreError, match="already at height"):
            reopened.save_block(replay, chain.certify(replay))
    finally:
        kv.close()


def test_a_filter_that_fails_to_grow_in_a_save_leaves_nothing_stored_that_it_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hash goes into the filter before its block is written: when the filter cannot take it
    (no memory for a larger one), the block is not written, so no stored transaction is ever
    "surely not stored"."""
    kv, chain = CountingReads(), ChainBuilder()
    store = BlockStore(kv, CHANNEL)
    _loaded(store)
    block, certificate = chain.next(5)
    real_add, calls = TxFilter.add, []

    def failing(self: TxFilter, tx_hash: bytes, stamped_us: int | None = None) -> None:
        calls.append(tx_hash)
        if len(calls) == 3:
            raise MemoryError
        real_add(self, tx_hash, stamped_us)

    monkeypatch.setattr(TxFilter, "add", failing)
    with pytest.raises(MemoryError):
        store.save_block(block, certificate)
    assert store.tip_height() == -1
    assert not [key for key, _ in kv.iterate(schema.TX)]  # nothing written
    monkeypatch.setattr(TxFilter, "add", real_add)
    store.save_block(block, certificate)  # the same block again, once there is room
    assert store.tip_height() == 0
    assert all(store.has_transaction(tx.hash) for tx in block.transactions)


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=50),  # the chain's time goes on (seconds)
            st.lists(st.integers(min_value=-200, max_value=200), max_size=8),  # stamps, off it
        ),
        max_size=40,
    )
)
def test_a_recent_filter_never_says_a_stored_hash_is_absent(
    blocks: list[tuple[int, list[int]]],
) -> None:
    """Whatever the chain's time and however its transactions are stamped (beyond the span,
    behind or ahead), an added hash asked about with its timestamp is "maybe", later too."""
    hashes = RecentTxFilter(30_000_000)  # a span of 30 s
    hashes.loaded = True
    now, stored = 1_000_000_000_000, []
    for step, offsets in blocks:
        now += step * 1_000_000
        hashes.advance(now)
        for offset in offsets:
            tx_hash = hashlib.sha3_256(b"%d" % len(stored)).digest()
            stamp = now + offset * 1_000_000
            hashes.add(tx_hash, stamp)
            stored.append((tx_hash, stamp))
        assert all(hashes.may_hold(tx_hash, stamp) for tx_hash, stamp in stored)
    assert len(hashes._buckets) <= 2 * tx_filter.BUCKETS_A_SPAN + 2


def test_a_recent_filter_loads_the_recent_blocks_only_and_stays_small() -> None:
    """A whole-chain filter grew with the chain for good and read the whole index at each start
    (review: ~229 MB a day, 39 minutes of reads after 30 days at 1,000 transactions a second).
    A recent one reads the blocks within its span, holds as much, and still knows every
    stored transaction asked about with its timestamp; an old one asked about costs a read."""
    window = 10_000_000  # 10 s: the filter spans 20
    kv, chain = CountingReads(), ChainBuilder(step_us=5_000_000)  # a block every 5 s
    saved = _save_blocks(BlockStore(kv, CHANNEL, window), chain, 40, 3)  # 200 s of chain
    reopened = BlockStore(kv, CHANNEL, window)
    assert _loaded(reopened) <= 3 * ((2 * 20 + 10) // 5 + 2)  # its blocks, not all 40
    assert isinstance(reopened.tx_filter, RecentTxFilter)
    for height in range(40):
        block = reopened.block_by_height(height)
        assert block is not None
        assert all(reopened.has_transaction(tx.hash, tx.timestamp) for tx in block.transactions)
    assert all(reopened.has_transaction(tx_hash) for tx_hash in saved)  # by hash: a read each
    kv.index_reads.clear()
    new = [chain.transaction() for _ in range(50)]  # stamped now: surely not stored
    assert not any(reopened.has_transaction(tx.hash, tx.timestamp) for tx in new)
    assert len(kv.index_reads) <= 2  # (false positives only)
    _save_blocks(reopened, chain, 200, 3)  # 1,000 s more
    assert len(reopened.tx_filter._buckets) <= 2 * tx_filter.BUCKETS_A_SPAN + 2


@pytest.mark.parametrize("how", ["window lowered", "stamped past the window"])
def test_a_transaction_stamped_far_from_its_block_is_known_after_a_restart(how: str) -> None:
    """The loader reads the blocks within the span and the window of the newest: a transaction
    stamped further from its block than the window it reopens with (written under a wider one,
    or in a block others certified with theirs) was in no block it read, and was "surely not
    stored": a replay of it was stored again (review). The widest window a store was written
    under is kept, and each transaction stamped further still is recorded."""
    wide, narrow = block_window_us(300.0, 30_000_000), block_window_us(60.0, 30_000_000)
    assert wide is not None and narrow is not None
    kv, chain = MemoryStore(), ChainBuilder(step_us=5_000_000)
    store = BlockStore(kv, CHANNEL, wide if how == "window lowered" else narrow)
    _loaded(store)
    store.save_block(*chain.next(0))
    # a client's clock fast: inside the wide window; or stamped as the chain's time at restart
    ahead = 290_000_000 if how == "window lowered" else 1_500_000_000
    tx = Transaction.create_v1(
        CHANNEL, {"x": 1}, BASE_TIME_US + 5_000_000 + ahead, chain.signers[0]
    )
    block = chain.block([tx])
    certificate = chain.certify(block)
    chain.advance(block, certificate)
    store.save_block(block, certificate)
    for _ in range(56 if how == "window lowered" else 300):  # 280 s (1,500 s) more of blocks
        store.save_block(*chain.next(0))
    reopened = BlockStore(kv, CHANNEL, narrow)
    _loaded(reopened)
    assert reopened.has_transaction(tx.hash, tx.timestamp)
    again = chain.block([tx])
    with pytest.raises(BlockStoreError, match="already at height 1"):
        reopened.save_block(again, chain.certify(again))


def test_a_store_an_earlier_version_wrote_keeps_the_whole_chain_filter() -> None:
    """Its blocks were saved with no record of how far their transactions are stamped from
    them: a recent filter could not know which to read."""
    kv, chain = MemoryStore(), ChainBuilder()
    saved = _save_blocks(BlockStore(kv, CHANNEL), chain, 3, 2)  # no window: no record
    window = block_window_us(300.0, 0)
    reopened = BlockStore(kv, CHANNEL, window)
    assert isinstance(reopened.tx_filter, TxFilter)
    assert _loaded(reopened) == len(saved)
    assert isinstance(BlockStore(MemoryStore(), CHANNEL, window).tx_filter, RecentTxFilter)


def test_a_store_that_saved_blocks_unrecorded_forgets_its_record() -> None:
    """Written with a window, then without one (blocks saved with no record of their stamps),
    then with one again: the record said blocks were recorded, the loader trusted it, and a
    transaction stamped far from its old block was "surely not stored" (review). A store that
    saves unrecorded forgets its record, and keeps the whole-chain filter after."""
    window = block_window_us(60.0, 0)
    kv, chain = MemoryStore(), ChainBuilder(step_us=5_000_000)
    store = BlockStore(kv, CHANNEL, window)
    store.save_block(*chain.next(0))
    assert kv.get(schema.STAMP_GAP) is not None
    unwindowed = BlockStore(kv, CHANNEL)  # read, nothing saved: the record stays
    assert unwindowed.tip_height() == 0 and kv.get(schema.STAMP_GAP) is not None
    unwindowed.save_block(*chain.next(1))
    assert kv.get(schema.STAMP_GAP) is None
    assert isinstance(BlockStore(kv, CHANNEL, window).tx_filter, TxFilter)


@pytest.mark.parametrize("stamp", [-1, 1 << 64, 10**30])
def test_a_transaction_stamped_out_of_any_range_is_saved_and_known(stamp: int) -> None:
    """A transaction stamped before 0 or past 2**64 (in a block certified by peers with no
    window) failed its block's save for good (OverflowError: the channel halted, review)."""
    window = block_window_us(60.0, 0)
    kv, chain = MemoryStore(), ChainBuilder(step_us=5_000_000)
    store = BlockStore(kv, CHANNEL, window)
    _loaded(store)
    store.save_block(*chain.next(0))
    tx = Transaction.create_v1(CHANNEL, {"far": True}, stamp, chain.signers[0])
    block = chain.block([tx])
    certificate = chain.certify(block)
    chain.advance(block, certificate)
    store.save_block(block, certificate)
    reopened = BlockStore(kv, CHANNEL, window)
    _loaded(reopened)
    assert reopened.has_transaction(tx.hash, tx.timestamp)
