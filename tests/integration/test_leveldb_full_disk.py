"""A LevelDB store on a disk that fills up: the failed write is refused, and so is every write
after it until the store is opened again, because LevelDB would drop those later writes (synced,
reported written) when the store is reopened. After a reopen the block store is whole and goes on.
On a real 4 MB tmpfs; skipped when one cannot be mounted (not root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopchain.blockchain.block_store import BlockStore
from loopchain.configure import load_config
from loopchain.peer.node import PeerNode, PeerOptions
from loopchain.storage.abc import StorageError
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types.peer import PeerInfo
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


def test_a_peer_whose_node_cache_cannot_be_written_runs_on_and_writes_it_once_there_is_room(
    disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The node store is a cache of what the RadioStation said: a write it refused for a full
    disk stopped the whole peer (every channel) at the next member change, and every later one
    too after the space came back (review). It is warned about; the next write, with room,
    opens the store again and is kept."""
    node = PeerNode(
        load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(disk)}),
        PeerOptions(7100, ("127.0.0.1:7102",), None, None, False),
    )
    node.node_store = LevelDBStore(disk / "node")
    node.stores.append(node.node_store)
    members = [PeerInfo("hx" + "1" * 40, "127.0.0.1:7100", 1)]
    filler = Filler(disk)
    assert filler.top_up() == 0
    big = [PeerInfo("hx" + "2" * 40, f"127.0.0.1:{7000 + n}", n) for n in range(2000)]
    node._cache_members("channel", big)  # no room: warned about, not raised
    assert "the node cache is not written" in caplog.text
    node._cache_members("other", members)  # the store takes none after a failed write
    assert node._cached_members("other") == []
    filler.remove()
    node._cache_members("other", members)
    assert node._cached_members("other") == members
    for store in node.stores:
        store.close()
    with LevelDBStore(disk / "node") as store:
        assert store.get(b"members/other") is not None
