"""Damage in a LevelDB store's files is refused, never served as data or skipped: the stores are
opened with LevelDB's paranoid checks (a review found both silent cases without them)."""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopchain.blockchain import block_store
from loopchain.blockchain.block_store import BlockStore, StoreDamaged
from loopchain.configure import load_config
from loopchain.p2p.memory import InMemoryNetwork
from loopchain.p2p.radiostation_client import ChannelGrant
from loopchain.peer import node as node_module
from loopchain.peer.node import PeerNode, PeerOptions
from loopchain.storage import leveldb, leveldb_tail
from loopchain.storage.abc import StorageCorrupt, StorageError
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types.crypto import Signer
from loopchain.types.validators import ValidatorSet
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


def _with_a_damaged_log(path: Path) -> None:
    """A store at `path` of 40 synced batches whose log has one bit flipped in its middle."""
    store = LevelDBStore(path)
    for n in range(40):
        with store.write_batch() as batch:  # synced
            batch.put(b"b%02d" % n, b"x" * 1000)
    store.close()
    (log,) = path.glob("*.log")
    raw = bytearray(log.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    log.write_bytes(bytes(raw))


def test_a_damaged_record_in_the_log_refuses_the_store_instead_of_dropping_writes(
    tmp_path: Path,
) -> None:
    """Without the checks recovery dropped the damaged record's 32 KiB of synced batches, kept
    the writes after them, and opened: batches 10 to 31 of 40 were gone, and only LevelDB's own
    LOG said so. Now the store is refused, naming it."""
    path = tmp_path / "db"
    _with_a_damaged_log(path)
    with pytest.raises(StorageError) as refused:
        LevelDBStore(path)
    assert str(path) in str(refused.value)


def test_a_store_folder_removed_or_replaced_while_open_is_found(tmp_path: Path) -> None:
    """A store whose folder was removed went on through its open files, unnoticed until LevelDB
    wanted a new file; a restart then began from an empty chain (operator review). A peer asks
    each channel's block store at each heartbeat, and stops the channel when it moved."""
    path = tmp_path / "blocks"
    store = LevelDBStore(path)
    try:
        store.put(b"k", b"v", sync=True)
        BlockStore(store, "alpha").check_in_place()  # (as the peer asks it)
        path.rename(tmp_path / "aside")
        with pytest.raises(StorageError) as gone:
            store.check_in_place()
        assert str(gone.value).startswith(f"LevelDB store at {path} was removed while it was open")
        path.mkdir()
        with pytest.raises(StorageCorrupt, match="was replaced while it was open"):
            store.check_in_place()
        path.rmdir()
        (tmp_path / "aside").rename(path)  # put back: the same folder
        store.check_in_place()
        assert store.get(b"k") == b"v"
    finally:
        store.close()


async def test_a_peer_refusing_its_damaged_block_store_says_what_to_do(tmp_path: Path) -> None:
    """LevelDB's words name the damage, not what the operator does next (operator review)."""
    node = PeerNode(
        load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(tmp_path)}),
        PeerOptions(7100, ("127.0.0.1:7102",), None, None, False),
    )
    path = node.root / "alpha" / "blocks"
    path.parent.mkdir(parents=True)
    _with_a_damaged_log(path)
    node.signer, node.transport = Signer.generate(), object()  # type: ignore[assignment]
    grant = ChannelGrant("alpha", "no/score", ValidatorSet("alpha", 1, ()))
    async with asyncio.TaskGroup() as group:
        with pytest.raises(StorageCorrupt) as refused:
            await node._open_channel(grant, Signer.generate().address, group)
    said = str(refused.value)
    assert said.startswith(f"LevelDB store at {path} is corrupt: Corruption: ")
    assert said.endswith(
        ". Restore the store from a backup, or move it aside: the peer then syncs the chain from "
        "the others (the transactions it acknowledged are kept apart, in its intake journal)"
    )


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        (
            block_store.HEIGHT + (0).to_bytes(8, "big"),
            b"\x01" * 32,
            "it has a height index but no tip pointer",
        ),
        (block_store.EXECUTED, b"garbage", "the execution record is corrupt"),
        (block_store.SAFETY, b"garbage", "the safety record is damaged"),
    ],
    ids=["index-without-tip", "execution-record", "safety-record"],
)
async def test_a_peer_refusing_an_inconsistent_block_store_says_what_to_do(
    tmp_path: Path, key: bytes, value: bytes, words: str
) -> None:
    """A store LevelDB reads but whose records disagree or do not parse (StoreDamaged: found by
    the store's checks, or by the channel's service reading its records as it opens) said what
    was wrong but not what to do, as LevelDB's damage does (reviews)."""
    node = PeerNode(
        load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(tmp_path)}),
        PeerOptions(7100, ("127.0.0.1:7102",), None, None, False),
    )
    path = node.root / "alpha" / "blocks"
    path.parent.mkdir(parents=True)
    with LevelDBStore(path) as kv:
        kv.put(key, value)
    node.signer = Signer.generate()
    node.transport = InMemoryNetwork().transport(node.signer.address)
    grant = ChannelGrant("alpha", "no/score", ValidatorSet("alpha", 1, ()))
    async with asyncio.TaskGroup() as group:
        with pytest.raises(StoreDamaged) as refused:
            await node._open_channel(grant, Signer.generate().address, group)
    said = str(refused.value)
    assert said.startswith(f"block store of channel 'alpha' is inconsistent: {words}"), said
    assert said.endswith(
        ". Restore the store from a backup, or move it aside: the peer then syncs the chain from "
        "the others (the transactions it acknowledged are kept apart, in its intake journal)"
    ), said
    for store in node.stores:
        store.close()


def test_a_write_leveldb_refuses_for_damage_says_the_store_is_damaged() -> None:
    damage = plyvel.CorruptionError(b"Corruption: block checksum mismatch: /x/000005.ldb")
    assert isinstance(leveldb._write_error("write to /x failed", damage), StorageCorrupt)
    io = plyvel.IOError(b"IO error: /x/000007.log: No space left on device")
    refused = leveldb._write_error("write to /x failed", io)
    assert type(refused) is StorageError and "No space left" in str(refused)


def _batches(path: Path, sizes: list[int]) -> Path:
    """A closed store at `path` holding one synced batch of each size (key b%02d), in its log."""
    store = LevelDBStore(path)
    for n, size in enumerate(sizes):
        with store.write_batch() as batch:
            batch.put(b"b%02d" % n, bytes([n + 1]) * size)
    store.close()
    (log,) = path.glob("*.log")
    return log


def _held(path: Path, count: int) -> list[int]:
    store = LevelDBStore(path)
    try:
        return [n for n in range(count) if store.get(b"b%02d" % n) is not None]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("sizes", "zeroed", "pad", "kept"),
    [
        ([1000] * 40, 300, False, 39),  # inside the last record
        ([1000] * 40, 300, True, 39),  # and the file grown to its page's end, zero-filled
        ([1000] * 40, 5000, False, 35),  # from inside the 36th on: those after it are all zeros
        ([1000] * 3 + [100_000], 20_000, False, 3),  # a record of four fragments
    ],
)
def test_a_log_whose_end_a_power_cut_zeroed_is_cut_before_the_record_that_ran_into_it(
    tmp_path: Path, sizes: list[int], zeroed: int, pad: bool, kept: int
) -> None:
    """Some file systems come back from a power cut with a file's unsynced end zeroed. The
    record that ran into the zeros failed its checksum and the paranoid checks refused the whole
    store; it is cut now (kept beside the log), and the records before it are all there."""
    path = tmp_path / "db"
    log = _batches(path, sizes)
    raw = bytearray(log.read_bytes())
    raw[-zeroed:] = bytes(zeroed)
    if pad:
        raw += bytes(-len(raw) % 4096)
    log.write_bytes(bytes(raw))
    assert _held(path, len(sizes)) == list(range(kept))
    (aside,) = path.glob("*.zeroed-tail")
    assert aside.name == log.name + ".zeroed-tail"
    assert bytes(raw).endswith(aside.read_bytes())
    assert aside.read_bytes().rstrip(b"\0")  # the record's bytes that were left, not only zeros
    store = LevelDBStore(path)  # the cut is for good, and the store takes writes again
    store.put(b"after", b"x", sync=True)
    store.close()
    assert _held(path, len(sizes)) == list(range(kept))


def test_a_zeroed_end_with_damage_before_it_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """Cutting the zeroed end cannot mend damage before it: the store is refused as before, its
    log as it was (the cut record put back), nothing left beside it."""
    path = tmp_path / "db"
    log = _batches(path, [1000] * 40)
    raw = bytearray(log.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    raw[-300:] = bytes(300)
    log.write_bytes(bytes(raw))
    with pytest.raises(StorageCorrupt, match="checksum mismatch"):
        LevelDBStore(path)
    assert log.read_bytes() == bytes(raw)
    assert not list(path.glob("*.zeroed-tail"))


def test_a_record_ending_in_zeros_of_its_own_is_never_cut(tmp_path: Path) -> None:
    """A whole record whose own bytes end in zeros passes its checksum: it is kept, also when
    the store is refused for damage elsewhere (a cut is not even tried: the log stays as is)."""
    path = tmp_path / "db"
    store = LevelDBStore(path)
    for n in range(40):
        store.put(b"b%02d" % n, b"x" * 1000 if n < 39 else b"y" + bytes(999), sync=True)
    store.close()
    (log,) = path.glob("*.log")
    raw = log.read_bytes()
    assert leveldb_tail.zeroed_tail_cut(raw) is None
    assert len(raw.rstrip(b"\0")) < len(raw) - 900
    damaged = bytearray(raw)
    damaged[len(raw) // 2] ^= 0x01
    log.write_bytes(bytes(damaged))
    with pytest.raises(StorageCorrupt):
        LevelDBStore(path)
    assert log.read_bytes() == bytes(damaged)
    log.write_bytes(raw)
    store = LevelDBStore(path)
    try:
        assert store.get(b"b39") == b"y" + bytes(999)
    finally:
        store.close()


def test_a_manifest_edit_whose_bytes_a_power_cut_zeroed_is_cut(tmp_path: Path) -> None:
    """LevelDB's MANIFEST is written in the log's format: an edit appended whose bytes a power
    cut zeroed (its header on disk) is cut as a log's record is; LevelDB removes nothing an
    edit replaces before the edit is synced, so the store opens whole."""
    path = tmp_path / "db"
    store = LevelDBStore(path, write_buffer_mb=1)
    for round_ in range(6):  # several memtables flushed to tables: several edits
        with store.write_batch() as batch:
            for n in range(1000):
                batch.put(b"k%d_%04d" % (round_, n), b"v" * 400)
    store.close()
    manifest = path / (path / "CURRENT").read_text().strip()
    raw = manifest.read_bytes()
    header = b"\x12\x34\x56\x78" + (40).to_bytes(2, "little") + bytes([leveldb_tail.FULL])
    manifest.write_bytes(raw + header + bytes(40))
    store = LevelDBStore(path)
    try:
        assert all(
            store.get(b"k%d_%04d" % (round_, n)) == b"v" * 400
            for round_ in range(6)
            for n in range(1000)
        )
    finally:
        store.close()
    assert (path / (manifest.name + ".zeroed-tail")).read_bytes() == header + bytes(40)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=12),
    zeroed=st.integers(1, 200_000),
    pad=st.booleans(),
)
def test_any_zeroed_end_of_a_log_keeps_exactly_the_records_before_it(
    sizes: list[int], zeroed: int, pad: bool
) -> None:
    """Whatever length of a log's end is zeroed (across fragments, blocks and trailers), the
    store opens with exactly the synced batches whose records end before the zeros."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "db"
        store = LevelDBStore(path)
        ends = []  # where each synced batch's record ends in the log
        for n, size in enumerate(sizes):
            with store.write_batch() as batch:
                batch.put(b"b%02d" % n, bytes([n + 1]) * size)
            (log,) = path.glob("*.log")
            ends.append(log.stat().st_size)
        store.close()
        raw = bytearray(log.read_bytes())
        zeroed = min(zeroed, len(raw))
        raw[len(raw) - zeroed :] = bytes(zeroed)
        if pad:
            raw += bytes(-len(raw) % 4096)
        log.write_bytes(bytes(raw))
        zeros_from = len(raw.rstrip(b"\0"))  # (a block's zero-filled trailer may come first)
        whole = sum(1 for end in ends if end <= zeros_from)
        assert _held(path, len(sizes)) == list(range(whole))


def _zeroed_log(path: Path) -> tuple[Path, bytes]:
    """A closed store at `path` whose log's last record a power cut zeroed; the log and its bytes."""
    log = _batches(path, [1000] * 40)
    raw = bytearray(log.read_bytes())
    raw[-300:] = bytes(300)
    log.write_bytes(bytes(raw))
    return log, bytes(raw)


def _reopening_fails(monkeypatch: pytest.MonkeyPatch, fail: Callable[[], None]) -> list[Any]:
    """The store's second opening (its reopening after the cut) runs `fail` (which raises); the
    arguments of each opening, in order."""
    real, calls = leveldb._db, []

    def opening(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 2:
            fail()
        return real(*args)

    monkeypatch.setattr(leveldb, "_db", opening)
    return calls


def test_a_reopening_failing_for_another_reason_puts_the_end_back_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose reopening after the cut fails for want of space (descriptors, a lock) is
    not taken for damaged (a SCORE state store so taken is moved aside and replayed): that
    error is raised, and the log is as it was."""
    path = tmp_path / "db"
    log, raw = _zeroed_log(path)
    real = leveldb._db

    def full_disk() -> None:
        raise plyvel.IOError(b"IO error: " + bytes(path) + b"/000005.ldb: No space left on device")

    calls = _reopening_fails(monkeypatch, full_disk)
    with pytest.raises(StorageError, match="No space left on device") as refused:
        LevelDBStore(path)
    assert not isinstance(refused.value, StorageCorrupt)
    assert len(calls) == 2 and log.read_bytes() == raw
    assert not list(path.glob("*.zeroed-tail"))
    monkeypatch.setattr(leveldb, "_db", real)  # space again: the cut is made and holds
    assert _held(path, 40) == list(range(39))


def test_a_cut_whose_sync_fails_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log cut but its sync refused (an I/O error, once): the end is put back, and the store
    refused for that error (not taken for damaged: a SCORE state store so taken is replayed)."""
    path = tmp_path / "db"
    log, raw = _zeroed_log(path)
    real, failed = os.fsync, list[int]()

    def failing_on_the_log(fd: int) -> None:  # once
        if not failed and os.readlink(f"/proc/self/fd/{fd}").endswith(".log"):
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing_on_the_log)
    with pytest.raises(StorageError, match=r"cannot be cut.*Input/output error") as refused:
        LevelDBStore(path)
    assert not isinstance(refused.value, StorageCorrupt)
    assert failed
    assert log.read_bytes() == raw
    assert not list(path.glob("*.zeroed-tail"))


def test_a_log_another_opener_recovered_meanwhile_is_left_and_its_copy_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the log is gone by the time its end would be put back (another opener of the store
    recovered it meanwhile), nothing is written in its place: the store is refused as LevelDB
    said, and the copy of the cut end stays beside it."""
    path = tmp_path / "db"
    log, _ = _zeroed_log(path)

    def recovered_by_another() -> None:
        log.unlink()
        raise plyvel.CorruptionError(b"Corruption: checksum mismatch")

    _reopening_fails(monkeypatch, recovered_by_another)
    with pytest.raises(StorageCorrupt, match="checksum mismatch"):
        LevelDBStore(path)
    assert not log.exists()
    assert [p.name for p in path.glob("*.zeroed-tail")] == [log.name + ".zeroed-tail"]


def test_a_store_that_lost_its_current_file_is_refused_not_made_again(tmp_path: Path) -> None:
    """Without CURRENT, LevelDB opening with create_if_missing made a new empty store in the
    folder, replayed its logs and deleted every table: the peer ran on a chain missing all but
    its last few MB (review). The folder is refused as damaged, its files as they were."""
    path = tmp_path / "db"
    store = LevelDBStore(path, write_buffer_mb=1)
    for n in range(3000):  # enough for tables beside the log
        store.put(b"B/%05d" % n, os.urandom(1000), sync=n % 500 == 0)
    store.close()
    (path / "CURRENT").unlink()
    before = sorted(os.listdir(path))
    assert any(name.endswith(".ldb") for name in before), before
    with pytest.raises(StorageCorrupt, match="lost its CURRENT file"):
        LevelDBStore(path)
    assert sorted(os.listdir(path)) == before


def test_a_store_whose_making_stopped_before_its_current_file_is_made_anew(
    tmp_path: Path,
) -> None:
    """A new store's MANIFEST is written before its CURRENT: a crash between them left no data,
    and the folder is a new store."""
    path = tmp_path / "db"
    path.mkdir()
    (path / "MANIFEST-000001").write_bytes(b"")
    (path / "LOCK").write_bytes(b"")
    store = LevelDBStore(path)
    try:
        store.put(b"k", b"v", sync=True)
        assert store.get(b"k") == b"v"
    finally:
        store.close()


def test_a_peers_node_cache_that_lost_its_current_file_is_made_anew(tmp_path: Path) -> None:
    """The node store is a cache of what the RadioStation said: refused as damaged, it stopped
    the peer's start; it is moved aside (kept) and made anew."""
    path = tmp_path / "node"
    store = LevelDBStore(path, write_buffer_mb=1)
    for n in range(3000):
        store.put(b"k%05d" % n, os.urandom(1000))
    store.close()
    (path / "CURRENT").unlink()
    fresh = node_module._open_node_cache(path)
    try:
        assert fresh.get(b"k00001") is None
        fresh.put(b"k", b"v", sync=True)
    finally:
        fresh.close()
    assert [p.name.startswith("node.damaged-") for p in tmp_path.iterdir()].count(True) == 1
