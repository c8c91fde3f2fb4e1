"""A LevelDB store on a disk that fills up: the failed write is refused, and so is every write
after it until the store is opened again, because LevelDB would drop those later writes (synced,
reported written) when the store is reopened. After a reopen the block store is whole and goes on.
On a real 4 MB tmpfs; skipped when one cannot be mounted (not root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopchain.blockchain.block_store import BlockStore
from loopchain.storage.abc import StorageError
from loopchain.storage.leveldb import LevelDBStore
from tests._mounts import Filler
from tests.integration._storage_helpers import CHANNEL, ChainBuilder


def test_after_a_failed_write_the_store_takes_no_more_until_reopened(disk: Path) -> None:
    store = LevelDBStore(disk / "db")
    for n in range(20):
        store.put(b"before/%02d" % n, b"x" * 1000, sync=True)
    filler = Filler(disk)
    assert filler.top_up() == 0
    with pytest.raises(StorageError, match="No space left on device"):
        store.put(b"failed", b"y" * 50_000, sync=True)
    filler.remove()

    with pytest.raises(StorageError, match="an earlier write failed"):
        store.put(b"after", b"z", sync=True)
    with pytest.raises(StorageError, match="an earlier write failed"):
        store.delete(b"before/00", sync=True)
    batch = store.write_batch()
    batch.put(b"after", b"z")
    with pytest.raises(StorageError, match="an earlier write failed"):
        batch.commit()
    assert store.get(b"before/19") == b"x" * 1000  # reads go on
    store.close()

    with LevelDBStore(disk / "db") as store:
        assert [k for k, _ in store.iterate(b"before/")] == [b"before/%02d" % n for n in range(20)]
        assert store.get(b"failed") is None
        store.put(b"after", b"z", sync=True)  # opened again: writes go on
    with LevelDBStore(disk / "db") as store:
        assert store.get(b"after") == b"z"


def test_a_block_store_that_could_not_save_a_block_is_whole_after_a_reopen(disk: Path) -> None:
    chain = ChainBuilder()
    kv = LevelDBStore(disk / "blocks")
    store = BlockStore(kv, CHANNEL)
    for _ in range(5):
        store.save_block(*chain.next(tx_count=3))
    filler = Filler(disk)
    assert filler.top_up() == 0
    block, certificate = chain.next(tx_count=3)
    with pytest.raises(StorageError, match="No space left on device"):
        store.save_block(block, certificate)
    filler.remove()
    with pytest.raises(StorageError, match="an earlier write failed"):
        store.save_block(block, certificate)  # it would be gone after a reopen
    kv.close()

    with LevelDBStore(disk / "blocks") as kv:
        store = BlockStore(kv, CHANNEL)
        store.check()
        assert store.tip_height() == 4
        store.save_block(block, certificate)
        store.save_block(*chain.next(tx_count=3))
    with LevelDBStore(disk / "blocks") as kv:
        store = BlockStore(kv, CHANNEL)
        store.check()
        assert store.tip_height() == 6
