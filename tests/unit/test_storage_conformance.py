"""One conformance suite for every KeyValueStore backend (LevelDB in a temp dir, memory)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from loopchain.storage import open_store
from loopchain.storage.abc import KeyValueStore, StorageCorrupt, StorageError
from loopchain.storage.leveldb import LevelDBStore
from loopchain.storage.memory import MemoryStore
from tests.integration._storage_helpers import flip_in_tables

Factory = Callable[[], KeyValueStore]
BACKENDS = ["memory", "leveldb"]


def make_factory(backend: str, directory: Path) -> Factory:
    """A function that opens the backend's store; LevelDB reopens the same directory each time."""
    if backend == "memory":
        return MemoryStore
    return lambda: LevelDBStore(directory / "db")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    kv = make_factory(request.param, tmp_path)()
    yield kv
    kv.close()


def items(
    kv: KeyValueStore, prefix: bytes = b"", reverse: bool = False
) -> list[tuple[bytes, bytes]]:
    return list(kv.iterate(prefix, reverse=reverse))


# -- single operations


def test_get_put_overwrite_delete(store: KeyValueStore) -> None:
    assert store.get(b"k") is None
    store.put(b"k", b"v1")
    assert store.get(b"k") == b"v1"
    store.put(b"k", b"v2", sync=True)
    assert store.get(b"k") == b"v2"
    store.delete(b"k")
    assert store.get(b"k") is None
    store.delete(b"never-there", sync=True)
    assert items(store) == []


def test_empty_key_and_value_and_binary_bytes(store: KeyValueStore) -> None:
    store.put(b"", b"root")
    store.put(b"\x00\xff", b"")
    assert store.get(b"") == b"root"
    assert store.get(b"\x00\xff") == b""
    assert items(store) == [(b"", b"root"), (b"\x00\xff", b"")]


@pytest.mark.parametrize("bad", ["text", 7, None, bytearray(b"k")])
def test_non_bytes_keys_and_values_are_type_errors(store: KeyValueStore, bad: object) -> None:
    with pytest.raises(TypeError):
        store.put(bad, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.put(b"k", bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.get(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.iterate(bad)  # type: ignore[arg-type]
    assert items(store) == []


# -- iteration


KEYS = [b"", b"\x00", b"a", b"a\x00", b"ab", b"abc", b"b", b"b\xff", b"\xff", b"\xff\xff"]


def test_iterate_is_in_byte_order_with_prefix_and_reverse(store: KeyValueStore) -> None:
    for index, key in enumerate(reversed(KEYS)):
        store.put(key, str(index).encode())
    assert [k for k, _ in items(store)] == KEYS
    assert [k for k, _ in items(store, reverse=True)] == KEYS[::-1]
    assert [k for k, _ in items(store, b"a")] == [b"a", b"a\x00", b"ab", b"abc"]
    assert [k for k, _ in items(store, b"a", reverse=True)] == [b"abc", b"ab", b"a\x00", b"a"]
    assert [k for k, _ in items(store, b"\xff")] == [b"\xff", b"\xff\xff"]
    assert [k for k, _ in items(store, b"\xff", reverse=True)] == [b"\xff\xff", b"\xff"]
    assert items(store, b"abcd") == []
    assert items(store, b"c") == []
    assert dict(items(store))[b"ab"] == store.get(b"ab")


@pytest.mark.parametrize("key", [b"", b"a", b"a\xff", b"\xff\x00", b"\xff"])
def test_reverse_prefix_includes_the_key_equal_to_the_prefix(
    store: KeyValueStore, key: bytes
) -> None:
    # plyvel's prefix/start iterators lose this key when reversed; the store must not.
    written = {key: b"only", key + b"\x01": b"next", b"\x00" + key: b"before"}
    for k, v in written.items():
        store.put(k, v)
    expected = sorted((k, v) for k, v in written.items() if k.startswith(key))
    assert (key, b"only") in expected
    assert items(store, key) == expected
    assert items(store, key, reverse=True) == expected[::-1]


def test_iterate_sees_a_snapshot_taken_when_called(store: KeyValueStore) -> None:
    store.put(b"p1", b"old")
    store.put(b"p2", b"old")
    iterator = store.iterate(b"p")
    store.put(b"p1", b"new")
    store.put(b"p3", b"added")
    store.delete(b"p2")
    assert list(iterator) == [(b"p1", b"old"), (b"p2", b"old")]
    assert items(store, b"p") == [(b"p1", b"new"), (b"p3", b"added")]


# -- write batches


def test_batch_is_invisible_until_commit_then_applies_in_order(store: KeyValueStore) -> None:
    store.put(b"gone", b"x")
    batch = store.write_batch()
    batch.put(b"a", b"1")
    batch.put(b"b", b"1")
    batch.delete(b"b")
    batch.delete(b"gone")
    batch.put(b"a", b"2")
    assert store.get(b"a") is None
    assert store.get(b"gone") == b"x"
    batch.commit()
    assert items(store) == [(b"a", b"2")]


def test_uncommitted_batch_changes_nothing(store: KeyValueStore) -> None:
    store.put(b"keep", b"v")
    batch = store.write_batch()
    batch.put(b"new", b"v")
    batch.delete(b"keep")
    del batch
    assert items(store) == [(b"keep", b"v")]


def test_batch_context_commits_on_success_and_drops_on_error(store: KeyValueStore) -> None:
    with store.write_batch() as batch:
        batch.put(b"ok", b"1")
    with pytest.raises(ZeroDivisionError), store.write_batch() as batch:
        batch.put(b"bad", b"1")
        batch.delete(b"ok")
        _ = 1 / 0
    assert items(store) == [(b"ok", b"1")]


def test_batch_commits_once(store: KeyValueStore) -> None:
    batch = store.write_batch()
    batch.put(b"a", b"1")
    batch.commit()
    with pytest.raises(StorageError, match="already committed"):
        batch.commit()
    with pytest.raises(StorageError, match="already committed"):
        batch.put(b"b", b"1")
    assert items(store) == [(b"a", b"1")]


# -- closing


def test_closed_store_raises_storage_error(store: KeyValueStore) -> None:
    store.put(b"k", b"v")
    batch = store.write_batch()
    batch.put(b"x", b"y")
    store.close()
    store.close()  # closing twice is harmless
    for use in (
        lambda: store.get(b"k"),
        lambda: store.put(b"k", b"v"),
        lambda: store.delete(b"k"),
        lambda: store.iterate(),
        lambda: store.write_batch(),
        batch.commit,
    ):
        with pytest.raises(StorageError, match="closed"):
            use()


def test_context_manager_closes(store: KeyValueStore) -> None:
    with store as kv:
        kv.put(b"k", b"v")
    with pytest.raises(StorageError):
        store.get(b"k")


# -- LevelDB specifics


def test_leveldb_persists_across_reopen(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db") as kv:
        kv.put(b"a", b"1", sync=True)
        with kv.write_batch() as batch:
            batch.put(b"b", b"2")
    with open_store(str(tmp_path / "db"), create=False) as kv:
        assert items(kv) == [(b"a", b"1"), (b"b", b"2")]


def _tables_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.ldb"))


def test_leveldb_compresses_only_when_asked_and_reads_what_either_way_wrote(
    tmp_path: Path,
) -> None:
    """Compression off (the peers' default: their blocks barely shrink and compressing cost CPU)
    writes tables as they are; on, Snappy shrinks them; a store reads tables written either way."""
    value = b"0" * 4096  # compresses ~20x
    sizes = {}
    for compression in (False, True):
        path = tmp_path / f"db-{compression}"
        with LevelDBStore(path, compression=compression) as kv:
            for i in range(512):
                kv.put(i.to_bytes(4, "big"), value)
        with LevelDBStore(path, compression=compression):  # reopened: the log becomes a table
            pass
        sizes[compression] = _tables_bytes(path)
        with LevelDBStore(path, compression=not compression) as kv:
            assert [v for _, v in kv.iterate()] == [value] * 512
    assert sizes[False] > 512 * 4096 > 10 * sizes[True], sizes


def test_leveldb_a_value_damaged_on_disk_is_refused_not_returned(tmp_path: Path) -> None:
    """A byte changed in a table (a failing disk, a stray write) is caught by the table's
    checksum when read, by get and by iterate: StorageCorrupt naming the store, never the damaged
    bytes served as if they were the value (a block served as stored would carry them on)."""
    path = tmp_path / "db"
    marker = b'{"amount": "1000000", "to": "hx' + b"ab" * 20 + b'"}'
    with LevelDBStore(path) as kv:
        kv.put(b"B/block", marker * 8)
        kv.put(b"other", b"untouched")
    with LevelDBStore(path):  # reopened: the log becomes a table
        pass
    flip_in_tables(path, marker)
    with LevelDBStore(path) as kv:
        with pytest.raises(StorageCorrupt, match=str(path)):
            kv.get(b"B/block")
        with pytest.raises(StorageCorrupt, match=str(path)):
            list(kv.iterate(b"B/"))


@pytest.mark.parametrize("cached", [True, False])
def test_leveldb_a_table_file_gone_is_a_storage_error(tmp_path: Path, cached: bool) -> None:
    """A table file deleted under the store (an operator's mistake, a failing disk) is reported
    by iterate (a scan that keeps its blocks out of the cache as well) as a StorageError naming
    the store, never plyvel's own error. (LevelDB's get reads the keys of a table it cannot find
    as absent.)"""
    path = tmp_path / "db"
    with LevelDBStore(path) as kv:
        kv.put(b"t/first", b"x" * 100)
    with LevelDBStore(path):  # reopened: the log becomes a table
        pass
    with LevelDBStore(path) as kv:
        for table in path.glob("*.ldb"):
            table.unlink()
        with pytest.raises(StorageError, match=str(path)):
            list(kv.iterate(b"t/", cached=cached))


def _store_of_tables(path: Path, tables: int = 3) -> list[Path]:
    """A LevelDB store at `path` whose keys lie in `tables` table files (and none in its log)."""
    for n in range(tables):
        with LevelDBStore(path) as kv:
            for i in range(100):
                kv.put(b"t/%03d/%03d" % (n, i), b"v" * 50)
        with LevelDBStore(path):  # reopened: the log becomes a table
            pass
    found = sorted(path.glob("*.ldb"))
    assert len(found) >= tables
    return found


def test_leveldb_a_store_missing_a_table_file_is_refused_when_opened(tmp_path: Path) -> None:
    """LevelDB's get reads the keys of a table file it cannot find as absent: a store opened
    without one would answer that its blocks and transactions were never stored. LevelDB refuses
    it itself, naming the file, before this store's own check of the tables' sizes: this pins
    that refusal, which the block store relies on."""
    path = tmp_path / "db"
    tables = _store_of_tables(path)
    with LevelDBStore(path) as kv:  # whole: opens, and every key is read
        assert len(list(kv.iterate(b"t/"))) == 300
    tables[1].unlink()
    with pytest.raises(StorageCorrupt, match=tables[1].name) as refused:
        LevelDBStore(path)
    assert str(path) in str(refused.value)
    with pytest.raises(StorageCorrupt, match=tables[1].name):  # not "locked": it was closed
        LevelDBStore(path)


def test_leveldb_a_store_with_a_truncated_table_file_is_refused_when_opened(tmp_path: Path) -> None:
    """Opened, LevelDB would fail the first read of a table cut short (an I/O error), at any time
    later; it is refused at once instead, the table named with its sizes, and the store closed."""
    path = tmp_path / "db"
    tables = _store_of_tables(path)
    size = tables[0].stat().st_size
    with tables[0].open("r+b") as table:
        table.truncate(size - 10)
    for _attempt in range(2):  # not "locked" the second time: the refusal closed it
        number = tables[0].stem
    with pytest.raises(StorageCorrupt, match=f"table {number} {size - 10} bytes of {size}"):
        LevelDBStore(path)


def test_leveldb_a_table_file_that_cannot_be_looked_at_is_a_storage_error(tmp_path: Path) -> None:
    """A table whose file cannot even be looked at (here a link to itself) is a StorageError
    naming the store, not an OSError out of the opening."""
    path = tmp_path / "db"
    tables = _store_of_tables(path)
    tables[0].unlink()
    tables[0].symlink_to(tables[0].name)
    with pytest.raises(StorageError, match=f"cannot check LevelDB store at {path}"):
        LevelDBStore(path)


def test_leveldb_a_table_cut_short_while_open_is_a_storage_error_when_read(tmp_path: Path) -> None:
    """Cut short after the store was opened (and before any read opened it), a table fails its
    reads with LevelDB's I/O error: a StorageError naming the store, never plyvel's own."""
    path = tmp_path / "db"
    tables = _store_of_tables(path, tables=1)
    with LevelDBStore(path) as kv:
        with tables[0].open("r+b") as table:
            table.truncate(tables[0].stat().st_size - 10)
        with pytest.raises(StorageError, match=f"read of LevelDB store at {path} failed"):
            kv.get(b"t/000/000")


def test_leveldb_write_buffer_and_table_sizes_are_the_ones_asked_for(tmp_path: Path) -> None:
    """3 MB written: a 1 MB write buffer has written tables by then, an 8 MB one holds it all in
    memory (and its log). Compacted, 1 MB tables hold it in three or more files, 8 MB ones in one."""
    value = bytes(range(256)) * 16  # 4 KB
    buffered, compacted = {}, {}
    for size_mb in (1, 8):
        path = tmp_path / f"db-{size_mb}"
        with LevelDBStore(path, write_buffer_mb=size_mb, max_file_mb=size_mb) as kv:
            for i in range(768):
                kv.put(i.to_bytes(4, "big"), value)
            buffered[size_mb] = len(list(path.glob("*.ldb")))
            kv._db.compact_range(start=b"", stop=b"\xff" * 5)  # into tables of max_file_mb
            compacted[size_mb] = len(list(path.glob("*.ldb")))
            assert [v for _, v in kv.iterate()] == [value] * 768
    assert buffered[1] >= 1 and buffered[8] == 0, buffered
    assert compacted[1] >= 3 and compacted[8] == 1, compacted


def test_leveldb_tables_carry_a_bloom_filter(tmp_path: Path) -> None:
    """Lookups of absent keys (is this relayed transaction known?) are answered by a filter in
    each table instead of reading it: every table written names LevelDB's Bloom filter."""
    path = tmp_path / "db"
    with LevelDBStore(path) as kv:
        for i in range(1000):
            kv.put(i.to_bytes(4, "big"), b"v")
    with LevelDBStore(path) as kv:  # reopened: the log becomes a table
        assert kv.get((5000).to_bytes(4, "big")) is None
    tables = list(path.glob("*.ldb"))
    assert tables and all(b"filter.leveldb.BuiltinBloomFilter2" in t.read_bytes() for t in tables)


def test_leveldb_second_handle_is_refused_with_path_in_message(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "db"
    with LevelDBStore(path):
        with pytest.raises(StorageError, match="another handle in this process holds it") as info:
            LevelDBStore(path)
        assert str(path) in str(info.value)
    with LevelDBStore(path) as kv:  # the lock is released on close
        assert kv.get(b"k") is None


def test_leveldb_missing_store_without_create(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist") as info:
        LevelDBStore(tmp_path / "absent", create=False)
    assert str(tmp_path / "absent") in str(info.value)
    assert not (tmp_path / "absent").exists()


def test_leveldb_path_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("not a database")
    with pytest.raises(StorageError, match=str(path)):
        LevelDBStore(path)


# -- the model test


key_strategy = st.lists(st.sampled_from([0, 1, 97, 98, 255]), max_size=3).map(bytes)
value_strategy = st.binary(max_size=4)
op_strategy = st.tuples(key_strategy, st.one_of(st.none(), value_strategy))


class StoreMachine(RuleBasedStateMachine):
    """Random puts, deletes, batches (committed or not) and reopens against a dict model."""

    factory: Factory

    def __init__(self) -> None:
        super().__init__()
        self.kv = self.factory()
        self.model: dict[bytes, bytes] = {}

    @rule(key=key_strategy, value=value_strategy, sync=st.booleans())
    def put(self, key: bytes, value: bytes, sync: bool) -> None:
        self.kv.put(key, value, sync=sync)
        self.model[key] = value

    @rule(key=key_strategy)
    def delete(self, key: bytes) -> None:
        self.kv.delete(key)
        self.model.pop(key, None)

    @rule(ops=st.lists(op_strategy, max_size=6), commit=st.booleans())
    def batch(self, ops: list[tuple[bytes, bytes | None]], commit: bool) -> None:
        batch = self.kv.write_batch()
        for key, value in ops:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if not commit:
            return
        batch.commit()
        for key, value in ops:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value

    @rule()
    def reopen(self) -> None:
        if isinstance(self.kv, LevelDBStore):
            self.kv.close()
            self.kv = self.factory()

    @rule(prefix=key_strategy, reverse=st.booleans())
    def iterate_prefix(self, prefix: bytes, reverse: bool) -> None:
        expected = sorted(
            ((k, v) for k, v in self.model.items() if k.startswith(prefix)), reverse=reverse
        )
        assert items(self.kv, prefix, reverse) == expected

    @invariant()
    def matches_model(self) -> None:
        assert items(self.kv) == sorted(self.model.items())
        for key in (b"", b"a", b"\xff"):
            assert self.kv.get(key) == self.model.get(key)

    def teardown(self) -> None:
        self.kv.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_matches_dict_model(backend: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="kvmodel-"))
    counter = itertools.count()
    try:

        def fresh() -> Factory:
            return make_factory(backend, root / str(next(counter)))

        class Machine(StoreMachine):
            def __init__(self) -> None:
                self.factory = fresh()
                super().__init__()

        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=60,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        shutil.rmtree(root)
