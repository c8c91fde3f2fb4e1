"""Damage in a LevelDB store's files is refused, never served as data or skipped: the stores are
opened with LevelDB's paranoid checks (a review found both silent cases without them)."""

from __future__ import annotations

from pathlib import Path

import plyvel
import pytest

from loopchain.storage import leveldb
from loopchain.storage.abc import StorageCorrupt, StorageError
from loopchain.storage.leveldb import LevelDBStore
from tests.integration._storage_helpers import damage_a_table

VALUE = b"value-100-" * 50


def test_a_damaged_table_value_is_never_served_after_a_compaction(tmp_path: Path) -> None:
    """Without the checks a compaction read a damaged value unchecked and wrote it again with a
    good checksum: the first read refused it, every read after the compaction served it."""
    path = tmp_path / "db"
    store = LevelDBStore(path)
    for n in range(200):
        store.put(b"k%03d" % n, b"value-%03d-" % n * 50, sync=True)
    store.close()
    damage_a_table(path, VALUE)
    store = LevelDBStore(path, write_buffer_mb=1)
    try:
        with pytest.raises(StorageError, match="corrupt"):
            store.get(b"k100")
        refused: StorageError | None = None
        try:
            for round_ in range(40):  # ordinary writes, which LevelDB compacts with the rest
                with store.write_batch() as batch:
                    for n in range(200):
                        batch.put(b"k%03d_%02d" % (n, round_), b"y" * 300)
        except StorageError as exc:  # refused once a compaction met the damage
            refused = exc
        met = refused is not None
        try:
            store._db.compact_range()  # all of it, now (LevelDB does it in the background)
        except plyvel.Error as exc:
            assert "Corruption" in str(exc), exc  # refused: the damage stays visible
            met = True
        try:
            value = store.get(b"k100")
        except StorageError:
            value = None  # refused, as it must be
        assert value is None, f"served a damaged value as data: {value[:24]!r}"
        if met:  # (a compaction may move the damaged table down whole, reading none of it)
            # the store takes no more writes, saying it is damaged (a SCORE state so marked is
            # moved aside and replayed by the next SCORE process; a block store stops its peer)
            assert refused is None or isinstance(refused, StorageCorrupt), refused
            with pytest.raises(StorageCorrupt, match="Corruption"):
                store.put(b"after", b"x", sync=True)
    finally:
        store.close()


def test_a_damaged_record_in_the_log_refuses_the_store_instead_of_dropping_writes(
    tmp_path: Path,
) -> None:
    """Without the checks recovery dropped the damaged record's 32 KiB of synced batches, kept
    the writes after them, and opened: batches 10 to 31 of 40 were gone, and only LevelDB's own
    LOG said so. Now the store is refused, naming it."""
    path = tmp_path / "db"
    store = LevelDBStore(path)
    for n in range(40):
        with store.write_batch() as batch:  # synced
            batch.put(b"b%02d" % n, b"x" * 1000)
    store.close()
    (log,) = path.glob("*.log")
    raw = bytearray(log.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    log.write_bytes(bytes(raw))
    with pytest.raises(StorageError) as refused:
        LevelDBStore(path)
    assert str(path) in str(refused.value)


def test_a_write_leveldb_refuses_for_damage_says_the_store_is_damaged() -> None:
    damage = plyvel.CorruptionError(b"Corruption: block checksum mismatch: /x/000005.ldb")
    assert isinstance(leveldb._write_error("write to /x failed", damage), StorageCorrupt)
    io = plyvel.IOError(b"IO error: /x/000007.log: No space left on device")
    refused = leveldb._write_error("write to /x failed", io)
    assert type(refused) is StorageError and "No space left" in str(refused)
