"""The intake journal: client transactions a peer acknowledged and no final block holds yet, in
append-only segment files of the channel's storage directory.

A batch of transactions is one write and one fdatasync (group commit: the submissions that arrive
while one sync runs share the next) before their clients hear "accepted", so a kill -9 or a power
cut right after the answer loses nothing; at start the peer pools again what the journal holds. A
transaction leaves the journal without a write: a segment file is removed once every transaction
in it is final (or out of every pool's timestamp window) and a newer segment takes the appends.
Kept in LevelDB instead, as before, each transaction was written three times more (its entry, the
entry's deletion in its block's batch, and both again as LevelDB compacted them): ~12% of the
network's CPU per transaction under load.

Record: length (4 bytes, big-endian) + CRC-32 of the payload (4) + Transaction.encode(). A segment
is read up to its first record that is cut short or fails its CRC (a write cut by a crash: never
acknowledged); a write that fails is cut back off its segment and the next starts a new one, so
nothing is appended after a bad record. Segment files are named by a sequence number, `00000000000000000001.log`, oldest
first. The journal's appends come from one writer at a time (the intake's flusher, in a worker
thread); its bookkeeping is shared with the event loop under a lock never held across I/O.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loopchain.durable import make_directories
from loopchain.durable import sync_directory as _sync_directory
from loopchain.storage.abc import StorageError
from loopchain.types.canonical import EncodingError
from loopchain.types.transaction import Transaction

log = logging.getLogger(__name__)

HEADER_BYTES = 8
MAX_RECORD_BYTES = 16 * 1024 * 1024  # far above any transaction: a larger length is corruption
SEGMENT_MAX_BYTES = 8 * 1024 * 1024
SEGMENT_MAX_SECONDS = 60.0
SUFFIX = ".log"


@dataclass
class _Segment:
    number: int
    pending: int = 0  # its transactions not yet final
    newest_us: int = 0  # the latest timestamp among its transactions


def encode_record(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big") + payload


def read_records(data: bytes) -> tuple[list[bytes], int]:
    """The whole records at the start of `data`, and the offset where they end (len(data) when
    the segment ends cleanly). No record is empty: a length of 0 is where the data ends (a tail
    of zeros, as a power cut can leave; their checksum would match)."""
    records: list[bytes] = []
    offset = 0
    while offset + HEADER_BYTES <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        crc = int.from_bytes(data[offset + 4 : offset + 8], "big")
        end = offset + HEADER_BYTES + length
        if length == 0 or length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[offset + HEADER_BYTES : end]
        if zlib.crc32(payload) != crc:
            break
        records.append(payload)
        offset = end
    return records, offset


def _report_tail(path: Path, data: bytes, end: int) -> None:
    """Say what follows a segment's last whole record: a write cut short (a record running past
    the end, or zeros) was never acknowledged; anything else is damage, and what it hides may
    have been."""
    tail = data[end:]
    length = int.from_bytes(tail[:4], "big") if len(tail) >= HEADER_BYTES else 0
    # cut short: past the end, the last thing in the file (its payload may be zeros after a
    # power cut), or zeros
    if (
        len(tail) < HEADER_BYTES
        or end + HEADER_BYTES + length >= len(data)
        or not tail.strip(b"\0")
    ):
        log.warning(
            "intake journal %s: %d bytes after its last whole record at %d ignored "
            "(a write cut short; never acknowledged)",
            path,
            len(tail),
            end,
        )
        return
    log.error(
        "intake journal %s: the record at %d is damaged; the %d bytes from there on are "
        "ignored, and acknowledged transactions among them are lost here (other peers may "
        "hold them)",
        path,
        end,
        len(tail),
    )


class IntakeJournal:
    """Acknowledged client transactions of one channel, kept until final."""

    def __init__(
        self,
        directory: Path,
        segment_max_bytes: int = SEGMENT_MAX_BYTES,
        segment_max_seconds: float = SEGMENT_MAX_SECONDS,
    ) -> None:
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_seconds = segment_max_seconds
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._where: dict[bytes, int] = {}  # pending transaction hash -> its segment's number
        self._current: _Segment | None = None
        self._fd: int | None = None
        self._size = 0
        self._opened_at = 0.0
        self._next_number = 1
        self._numbered = False  # the numbers of the segments on disk are known

    def __len__(self) -> int:
        """How many acknowledged transactions the journal holds that are not final."""
        with self._lock:
            return len(self._where)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{SUFFIX}"

    def _numbers(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read the intake journal {self.directory}: {exc}") from None
        return sorted(
            int(name.removesuffix(SUFFIX))
            for name in names
            if name.endswith(SUFFIX) and name.removesuffix(SUFFIX).isdigit()
        )

    # -- start-up

    def replay(self) -> list[Transaction]:
        """Every transaction the journal holds, oldest first (once, at start, before any
        append). A segment is read up to a record cut short or corrupt; an unreadable
        transaction is logged and skipped."""
        if self._numbered:
            raise RuntimeError("the intake journal is replayed once, before any append")
        found: list[Transaction] = []
        for number in self._numbers():
            path = self._path(number)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise StorageError(f"cannot read the intake journal {path}: {exc}") from None
            records, end = read_records(data)
            if end != len(data):
                _report_tail(path, data, end)
            segment = _Segment(number)
            emptied: list[_Segment] = []
            for raw in records:
                try:
                    tx = Transaction.decode(raw)
                except EncodingError as exc:
                    log.error("intake journal %s: an unreadable entry (%s)", path, exc)
                    continue
                found.append(tx)
                if (older := self._track(tx, segment)) is not None:
                    emptied.append(older)
            self._unlink(emptied)
            self._next_number = number + 1
            if segment.pending:
                self._segments[number] = segment
            else:
                self._unlink([segment])
        self._numbered = True
        return found

    # -- appending (one writer at a time)

    def append(self, txs: Sequence[Transaction]) -> None:
        """Write `txs` and sync them; StorageError when they may not be on disk."""
        if not txs:
            return
        data = b"".join(encode_record(tx.encode()) for tx in txs)
        fd, segment = self._segment_for(len(data))
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"wrote {written} of {len(data)} bytes")
            os.fdatasync(fd)
        except OSError as exc:
            self._cut_back(fd)  # none of this batch comes back: it was refused
            self._abandon_current()  # what follows goes to a new segment, after no bad record
            raise StorageError(f"cannot write the intake journal {self.directory}: {exc}") from None
        self._size += len(data)
        with self._lock:
            emptied = [older for tx in txs if (older := self._track(tx, segment)) is not None]
        self._unlink(emptied)  # a client's second try moved the last pending of an older one

    def _segment_for(self, size: int) -> tuple[int, _Segment]:
        if not self._numbered:  # never replayed: append after what is on disk
            self._next_number = max(self._numbers(), default=0) + 1
            self._numbered = True
        fresh = self._fd is None or (
            self._size > 0
            and (
                self._size + size > self.segment_max_bytes
                or time.monotonic() - self._opened_at > self.segment_max_seconds
            )
        )
        if fresh:
            self._open_segment()
        assert self._fd is not None and self._current is not None
        return self._fd, self._current

    def _open_segment(self) -> None:
        self._close_current()
        number = self._next_number
        self._next_number = number + 1  # taken even if this open fails: never tried again (EEXIST)
        path = self._path(number)
        fd: int | None = None
        try:
            if not self.directory.is_dir():  # its path survives a power cut, every level
                make_directories(self.directory)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            _sync_directory(self.directory)  # the new file's name survives a power cut
        except OSError as exc:
            if fd is not None:
                self._discard(fd, path)
            raise StorageError(f"cannot write the intake journal {self.directory}: {exc}") from None
        self._fd, self._size, self._opened_at = fd, 0, time.monotonic()
        with self._lock:
            self._current = self._segments[number] = _Segment(number)

    def _discard(self, fd: int, path: Path) -> None:
        """Close and remove a segment just created and not yet written (its name not yet
        synced); one left behind holds no record, and the next start removes it."""
        try:
            os.close(fd)
        except OSError:
            pass
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("intake journal: cannot remove %s: %s", path, exc)

    def _close_current(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:  # each append was synced before it was acknowledged
                log.warning("intake journal %s: closing a segment: %s", self.directory, exc)
        with self._lock:
            old, self._current = self._current, None
            emptied = [old] if old is not None and old.pending <= 0 else []
            for segment in emptied:
                self._segments.pop(segment.number, None)
        self._unlink(emptied)

    def _cut_back(self, fd: int) -> None:
        """Truncate the segment to its size before the failed write (when even that fails, the
        batch's whole records may come back at the next start: pooled, though refused)."""
        try:
            os.ftruncate(fd, self._size)
        except OSError as exc:
            log.warning(
                "intake journal %s: cannot truncate after a failed write: %s", self.directory, exc
            )

    def _abandon_current(self) -> None:
        try:
            self._close_current()
        except OSError:
            pass

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # -- leaving

    def settle(self, tx_hashes: Iterable[bytes]) -> None:
        """These transactions are final (or can never be pooled): forget them; a segment left
        with none pending is removed unless appends still go to it."""
        emptied: list[_Segment] = []
        with self._lock:
            for tx_hash in tx_hashes:
                number = self._where.pop(tx_hash, None)
                segment = self._segments.get(number) if number is not None else None
                if segment is None:
                    continue
                segment.pending -= 1
                if segment.pending <= 0 and segment is not self._current:
                    emptied.append(self._segments.pop(segment.number))
        self._unlink(emptied)

    def drop_before(self, timestamp_us: int) -> int:
        """Forget the segments whose every transaction is stamped before `timestamp_us` (outside
        every pool's window); returns how many transactions they held."""
        with self._lock:
            old = {
                number
                for number, segment in self._segments.items()
                if segment is not self._current and segment.newest_us < timestamp_us
            }
            gone = [tx_hash for tx_hash, number in self._where.items() if number in old]
            for tx_hash in gone:
                del self._where[tx_hash]
            dropped = [self._segments.pop(number) for number in old]
        self._unlink(dropped)
        return len(gone)

    def _track(self, tx: Transaction, segment: _Segment) -> _Segment | None:
        """Count `tx` in `segment`; an older segment that held it and now holds nothing pending
        is forgotten and returned, for its file to go."""
        previous = self._where.get(tx.hash)
        if previous == segment.number:
            return None  # the same transaction twice in one segment (a client's second try)
        self._where[tx.hash] = segment.number
        segment.pending += 1
        segment.newest_us = max(segment.newest_us, tx.timestamp)
        older = self._segments.get(previous) if previous is not None else None
        if older is None:
            return None
        older.pending -= 1
        if older.pending > 0 or older is self._current:
            return None
        return self._segments.pop(older.number)

    def _unlink(self, segments: Iterable[_Segment]) -> None:
        """Delete these segments' files (outside the lock). A failure only leaves a file that the
        next start reads again and finds final."""
        for segment in segments:
            path = self._path(segment.number)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("intake journal: cannot remove %s: %s", path, exc)
