"""The LevelDB KeyValueStore (plyvel); the only module of loopchain that imports plyvel.

LevelDB holds an exclusive lock on its directory, so exactly one process (and one handle) may open
a store; a second opener gets a StorageError saying so at once instead of waiting (StoreLocked
when another process holds it: a caller that knows that process is ending may try again).

A store whose write failed (disk full, read-only, I/O error) takes no more writes until it is
opened again: LevelDB's log writer moves its block offset on even when the append fails, so the
records appended after a failed one sit misaligned in the log and are dropped when the store is
reopened (with LevelDB 1.22, every synced write after one ENOSPC was gone after a reopen).
LevelDB itself refuses further writes only after a failed sync.

A store with a table file cut short is refused when opened (StorageCorrupt), as LevelDB itself
refuses one with a table file missing: opened, its first read of that table, at any later time,
would fail with an I/O error. (A SCORE state store refused so is moved aside and replayed.) One
whose log or MANIFEST a power cut left with a zeroed end is opened without the record that ran
into it (loopchain.storage.leveldb_tail).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import resource
import stat as stat_module
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plyvel

from loopchain.durable import make_directories, write_atomic
from loopchain.lazy import lazy_module
from loopchain.storage.abc import (
    KeyValueStore,
    StorageCorrupt,
    StorageError,
    StorageReplaced,
    StoreLocked,
    WriteBatch,
)
from loopchain.storage.memory import check_bytes

if TYPE_CHECKING:
    from loopchain.storage import leveldb_tail
else:  # needed only for a store refused at its opening
    leveldb_tail = lazy_module("loopchain.storage.leveldb_tail")

log = logging.getLogger(__name__)

BLOOM_FILTER_BITS = 10  # per key: ~1% false positives
# tables a store keeps open: an eighth of the descriptors its process may open, so that a few
# stores stay within the half its servers' connections leave (grpc_util.connections_a_port),
# between LevelDB's least and its default (a lookup in a table not open reopens it)
MIN_OPEN_FILES, MAX_OPEN_FILES = 74, 1000
ZEROED_TAIL_SUFFIX = ".zeroed-tail"  # a log's zeroed end cut at opening, kept beside it
# a table of the current version in LevelDB's "leveldb.sstables" property: " number:size[...]"
_TABLE_LINE = re.compile(r"^\s*(\d+):(\d+)\[", re.MULTILINE)


def open_files_bound() -> int:
    """The tables a store opened now keeps open (see MAX_OPEN_FILES)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_FILES
    return max(MIN_OPEN_FILES, min(MAX_OPEN_FILES, soft // 8))


# What LevelDB says when its LOCK file is held, and who holds it.
_OTHER_PROCESS = "another process holds it"
_LOCK_HOLDERS = {
    "temporarily unavailable": _OTHER_PROCESS,  # flock() failed with EAGAIN
    "already held by process": "another handle in this process holds it",
}


def _message(exc: BaseException) -> str:
    """plyvel errors carry bytes messages; make them text."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


# how LevelDB's messages begin for damage it found (a compaction meeting a damaged table, with its
# paranoid checks: every write after it fails so)
CORRUPTION = "Corruption:"
# a store's files that hold its data: tables (".sst" by older LevelDBs) and write-ahead logs
_DATA_SUFFIXES = (".ldb", ".sst", ".log")


def _write_error(what: str, exc: BaseException) -> StorageError:
    """A failed write as StorageCorrupt when LevelDB found damage (the store must be restored or,
    a SCORE state, replayed: writing again would fail again), else StorageError."""
    message = f"{what}: {_message(exc)}"
    damaged = isinstance(exc, plyvel.CorruptionError) or _message(exc).startswith(CORRUPTION)
    return StorageCorrupt(message) if damaged else StorageError(message)


def _lock_holder(exc: BaseException) -> str | None:
    """Who holds the store's lock, when `exc` says it is held; None for any other error."""
    text = _message(exc).lower()
    if not isinstance(exc, plyvel.IOError):
        return None
    return next((holder for marker, holder in _LOCK_HOLDERS.items() if marker in text), None)


def _open(path: Path, create: bool, compression: bool, sizes: dict[str, int]) -> Any:
    """Open the plyvel DB at `path`, translating every failure into a StorageError."""
    if create:
        try:  # each new folder synced into its parent: LevelDB syncs only its own folder, and a
            # power cut could lose a new store's name with its first synced votes (review)
            make_directories(path)
        except OSError as exc:
            raise StorageError(f"cannot create LevelDB store directory {path}: {exc}") from None
        _refuse_headless(path)
    elif not (path / "CURRENT").is_file():  # LevelDB would create the directory before refusing
        raise StorageError(f"LevelDB store at {path} does not exist")
    try:
        try:
            return _db(path, create, compression, sizes)
        except plyvel.CorruptionError as exc:
            db = _open_without_zeroed_tails(path, compression, sizes)
            if db is None:
                raise exc from None
            return db
    except plyvel.Error as exc:
        holder = _lock_holder(exc)
        if holder:
            refusal = StoreLocked if holder == _OTHER_PROCESS else StorageError
            raise refusal(
                f"LevelDB store at {path} is locked: {holder} (only one owner may open a store)"
            ) from None
        if isinstance(exc, plyvel.CorruptionError):
            raise StorageCorrupt(f"LevelDB store at {path} is corrupt: {_message(exc)}") from None
        raise StorageError(f"cannot open LevelDB store at {path}: {_message(exc)}") from None


def _refuse_headless(path: Path) -> None:
    """StorageCorrupt when the folder holds a store's tables or logs without its CURRENT file
    (lost to a file system's damage, a partial copy, a hand): LevelDB would make a new empty
    store there, replay the logs into it and delete every table as obsolete (review: a channel's
    blocks below its last few MB gone for good, its tip still checked good). A folder with none,
    or a MANIFEST alone (a store whose making stopped before its CURRENT), is a new store."""
    if (path / "CURRENT").is_file():
        return
    try:
        names = [entry.name for entry in os.scandir(path)]
    except OSError as exc:
        raise StorageError(f"cannot list LevelDB store directory {path}: {exc}") from None
    held = sorted(name for name in names if name.endswith(_DATA_SUFFIXES))
    if held:
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise StorageCorrupt(
            f"LevelDB store at {path} has lost its CURRENT file but holds {shown}: it is "
            "not opened as a new store (that would delete its tables); restore it, or repair "
            "it with LevelDB's repair"
        )


def _db(path: Path, create: bool, compression: bool, sizes: dict[str, int]) -> Any:
    return plyvel.DB(
        str(path),
        create_if_missing=create,
        compression="snappy" if compression else None,
        # most lookups are for keys that are absent (is this relayed transaction known?): a
        # filter answers them without reading tables (1.25 bytes per key, of open tables only)
        bloom_filter_bits=BLOOM_FILTER_BITS,
        max_open_files=open_files_bound(),
        # damage refused, not skipped: without it a damaged record in the log was dropped at
        # recovery with the synced batches of its 32 KiB (LevelDB's own LOG said so, nothing
        # else), and a compaction read a damaged table value unchecked and wrote it again
        # with a good checksum, served as right ever after (review). A write cut short at
        # the log's end is still taken as the end (a crash's), and a zeroed end is cut
        # (_open_without_zeroed_tails)
        paranoid_checks=True,
        **sizes,
    )


def _open_without_zeroed_tails(path: Path, compression: bool, sizes: dict[str, int]) -> Any:
    """The store at `path`, refused as damaged, opened once the record running into the zeroed
    end of its logs or MANIFEST is cut (loopchain.storage.leveldb_tail; each kept beside its file
    as `<file>.zeroed-tail`); None, and the files as they were, when there is none or the store
    is refused all the same (its damage is elsewhere). A reopening that fails otherwise (no
    space, descriptors, a lock) puts them back too, and its own error is raised, as is a
    StorageError when a file cannot be read, copied or cut."""
    cut: list[tuple[Path, int, bytes]] = []
    try:
        for file in _log_format_files(path):
            raw = file.read_bytes()
            at = leveldb_tail.zeroed_tail_cut(raw)
            if at is None:
                continue
            # counted before the copy and the cut: whatever of them fails is undone
            cut.append((file, at, raw[at:]))
            write_atomic(_aside(file), raw[at:])
            with file.open("r+b") as handle:
                handle.truncate(at)
                os.fsync(handle.fileno())
    except OSError as exc:  # (no space for the copy, an I/O error): not taken for damage
        _put_back(path, cut)
        raise StorageError(
            f"LevelDB store at {path} is refused as damaged, and the zeroed end of its log that "
            f"may be why cannot be cut to try without it: {exc}"
        ) from None
    if not cut:
        return None
    try:
        db = _db(path, False, compression, sizes)
    except plyvel.Error as exc:
        _put_back(path, cut)
        if isinstance(exc, plyvel.CorruptionError):
            return None
        raise
    for file, _at, tail in cut:
        log.warning(
            "LevelDB store at %s: %s ended in zeroed bytes (a power cut, on some file systems): "
            "its last record (%d bytes left of it, written after the last sync that completed) "
            "was cut and kept beside it as %s",
            path,
            file.name,
            len(tail.rstrip(b"\0")),
            _aside(file).name,
        )
    return db


def _put_back(path: Path, cut: list[tuple[Path, int, bytes]]) -> None:
    """Give each file in `cut` its end again, when it is as it was cut (another opener of the
    store may have changed it meanwhile: then it is left), and remove the copy beside it."""
    for file, at, tail in reversed(cut):
        aside = _aside(file)
        try:
            try:
                size = file.stat().st_size
            except FileNotFoundError:
                continue  # another opener recovered the store and removed the file: left so
            if size == at:
                with file.open("ab") as handle:
                    handle.write(tail)
                    handle.flush()  # (the tail is still in the buffer: synced, not lost)
                    os.fsync(handle.fileno())
            if size in (at, at + len(tail)):
                aside.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageCorrupt(
                f"LevelDB store at {path} is corrupt, and the zeroed end cut from {file.name} "
                f"to try without it cannot be put back ({exc}): it is kept as {aside.name}"
            ) from None


def _aside(file: Path) -> Path:
    """Where the zeroed end cut from `file` is kept."""
    return file.with_name(file.name + ZEROED_TAIL_SUFFIX)


def _log_format_files(path: Path) -> list[Path]:
    """The store's logs and its current MANIFEST (LevelDB writes both in its log format)."""
    files = sorted(path.glob("*.log"))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        manifest = path / (path / "CURRENT").read_text().strip()
        if manifest.name.startswith("MANIFEST-") and manifest.is_file():
            files.append(manifest)
    return files


def _successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: there is none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _position(raw: Any, prefix: bytes, reverse: bool) -> None:
    """Put a raw iterator on the first (or, reversed, the last) key that may start with `prefix`."""
    if not reverse:
        raw.seek(prefix)
        return
    bound = _successor(prefix)
    if bound is None:
        raw.seek_to_last()
        return
    raw.seek(bound)
    if raw.valid():
        raw.prev()
    else:
        raw.seek_to_last()


class LevelDBWriteBatch(WriteBatch):
    """A plyvel write batch committed with sync=True; nothing is written unless it is committed."""

    def __init__(self, store: LevelDBStore, batch: Any) -> None:
        self._store = store
        self._batch = batch
        self._done = False

    def _check_open(self) -> None:
        if self._done:
            raise StorageError("write batch was already committed")
        self._store._check_open()

    def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        self._batch.put(check_bytes("key", key), check_bytes("value", value))

    def delete(self, key: bytes) -> None:
        self._check_open()
        self._batch.delete(check_bytes("key", key))

    def commit(self) -> None:
        """Write every buffered change atomically and wait until it is on disk."""
        self._check_open()
        self._store._check_writable()
        try:
            self._batch.write()
        except (plyvel.Error, RuntimeError) as exc:
            raise self._store._write_failed(exc, "write batch") from None
        self._done = True


def _identity(path: Path) -> tuple[int, int]:
    """The device and inode of a folder: another folder put at its path has others."""
    stat = os.stat(path)
    if not stat_module.S_ISDIR(stat.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))
    return stat.st_dev, stat.st_ino


class LevelDBStore(KeyValueStore):
    """A LevelDB database in one directory, opened exclusively by this process. `compression`:
    Snappy for the tables written from now on (each table records its own, so a store reads
    whatever it was written with). `write_buffer_mb`: the most a store holds in memory before it
    writes a table; `max_file_mb`: the size of the tables it writes (LevelDB's 4 and 2 when None;
    either can change between openings)."""

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        compression: bool = False,
        write_buffer_mb: int | None = None,
        max_file_mb: int | None = None,
    ) -> None:
        self.path = Path(path)
        sizes = {
            name: mb << 20
            for name, mb in (("write_buffer_size", write_buffer_mb), ("max_file_size", max_file_mb))
            if mb is not None
        }
        self._db = _open(self.path, create, compression, sizes)
        self._write_failure: str | None = None  # the first write that failed: no more writes
        self._folder = _identity(self.path)  # the folder opened (check_in_place)
        try:
            self._check_tables()
        except BaseException:
            self._db.close()
            raise

    def check_in_place(self) -> None:
        """StorageCorrupt when the store's folder was removed or replaced since it was opened:
        a removed store went on serving and taking writes through its open files, unnoticed,
        until LevelDB wanted a new file, and a restart started from an empty chain (operator
        review). A stat of the folder, asked with each status (~4 us); one that fails otherwise
        (a network file system's passing error) is no verdict."""
        try:
            now = _identity(self.path)
        except (FileNotFoundError, NotADirectoryError):
            what = "removed"
        except OSError:
            return
        else:
            if now == self._folder:
                return
            what = "replaced"
        raise StorageReplaced(
            f"LevelDB store at {self.path} was {what} while it was open: what was written since "
            "is not in what is there now. Put the store back, or move what is there aside (the "
            "peer then syncs the chain from the others), and start the peer again"
        )

    def _tables(self) -> dict[int, int]:
        """Size by file number of each table of the store's current version."""
        listed = self._db.get_property(b"leveldb.sstables") or b""
        text = listed.decode("ascii", errors="replace")
        return {int(number): int(size) for number, size in _TABLE_LINE.findall(text)}

    def _on_disk(self, number: int) -> int | None:
        for suffix in (".ldb", ".sst"):  # LevelDB writes .ldb, and reads the .sst of old versions
            try:
                return (self.path / f"{number:06d}{suffix}").stat().st_size
            except FileNotFoundError:
                continue
            except OSError as exc:  # unreadable folder, an I/O error
                raise StorageError(f"cannot check LevelDB store at {self.path}: {exc}") from None
        return None

    def _check_tables(self) -> None:
        """StorageCorrupt unless every table file of the current version is there at its size.
        A compaction may start with the opening and replace tables meanwhile: a table is wanting
        only when it is still listed after it was found wanting (a file number is never used
        again, so a table listed before and after was live in between)."""
        listed = self._tables()
        found = {number: self._on_disk(number) for number in listed}
        wanting = [n for n, size in found.items() if size != listed[n]]
        if not wanting:
            return
        still = self._tables()
        problems = [
            f"table {n:06d} "
            + ("missing" if found[n] is None else f"{found[n]} bytes of {listed[n]}")
            for n in sorted(wanting)
            if n in still
        ]
        if problems:
            more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise StorageCorrupt(
                f"LevelDB store at {self.path} is corrupt: {', '.join(problems[:5])}{more}"
            )

    def _check_open(self) -> None:
        if self._db.closed:
            raise StorageError(f"LevelDB store at {self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._write_failure is not None:
            message = (
                f"write to {self.path} refused: an earlier write failed ({self._write_failure}); "
                "the store takes no more writes until it is opened again"
            )
            damaged = self._write_failure.startswith(CORRUPTION)
            raise StorageCorrupt(message) if damaged else StorageError(message)

    def _write_failed(self, exc: BaseException, what: str) -> StorageError:
        """The error for a failed write (`what`), the first one remembered: the store takes no
        more writes until it is opened again."""
        if isinstance(exc, plyvel.Error) and self._write_failure is None:
            self._write_failure = _message(exc)
        return _write_error(f"{what} to {self.path} failed", exc)

    def get(self, key: bytes) -> bytes | None:
        """The value of `key`, its table's checksum verified: StorageCorrupt when the disk
        changed it (values are served as stored, a block's bytes to clients and peers)."""
        self._check_open()
        try:
            value: bytes | None = self._db.get(check_bytes("key", key), verify_checksums=True)
        except plyvel.CorruptionError as exc:
            raise self._corrupt(exc) from None
        except plyvel.Error as exc:  # an I/O error, a table cut short (LevelDB reads a table
            # file gone as absent keys: only opening the store again refuses it)
            raise StorageError(
                f"read of LevelDB store at {self.path} failed: {_message(exc)}"
            ) from None
        return value

    def _corrupt(self, exc: BaseException) -> StorageCorrupt:
        return StorageCorrupt(f"LevelDB store at {self.path} is corrupt: {_message(exc)}")

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._check_writable()
        try:
            self._db.put(check_bytes("key", key), check_bytes("value", value), sync=sync)
        except plyvel.Error as exc:  # a full or read-only disk
            raise self._write_failed(exc, "write") from None

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._check_writable()
        try:
            self._db.delete(check_bytes("key", key), sync=sync)
        except plyvel.Error as exc:
            raise self._write_failed(exc, "write") from None

    def iterate(
        self, prefix: bytes = b"", *, reverse: bool = False, cached: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order, from a snapshot
        (`cached=False`: a one-off scan, whose table blocks stay out of LevelDB's block cache)."""
        self._check_open()
        check_bytes("prefix", prefix)
        # plyvel's own prefix/start iterators drop the key equal to `prefix` when reversed, so
        # walk LevelDB's raw iterator (created now, so it reads a snapshot of this moment).
        raw = self._db.raw_iterator(verify_checksums=True, fill_cache=cached)
        return self._walk(raw, prefix, reverse)

    def _walk(self, raw: Any, prefix: bytes, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        try:
            _position(raw, prefix, reverse)
            step = raw.prev if reverse else raw.next
            while raw.valid():
                key = raw.key()
                if not key.startswith(prefix):
                    return
                yield key, raw.value()
                step()
        except plyvel.CorruptionError as exc:
            raise self._corrupt(exc) from None
        except plyvel.Error as exc:  # a table file gone, an I/O error
            raise StorageError(
                f"read of LevelDB store at {self.path} failed: {_message(exc)}"
            ) from None
        except RuntimeError as exc:
            raise StorageError(f"LevelDB store at {self.path} was closed: {exc}") from None
        finally:
            raw.close()

    def write_batch(self) -> WriteBatch:
        """A batch whose writes become visible together on commit (synced to disk)."""
        self._check_open()
        return LevelDBWriteBatch(self, self._db.write_batch(sync=True))

    def close(self) -> None:
        """Release the directory lock; later use raises StorageError (closing twice is fine)."""
        if not self._db.closed:
            self._db.close()
