"""The intake journal on a real directory: what was appended (synced) comes back after a restart
or a crash, whatever is final leaves with its segment, a write cut short or failing loses nothing
acknowledged, and the files stay few."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopchain.blockchain import intake_journal
from loopchain.blockchain.intake_journal import IntakeJournal, encode_record, read_records
from loopchain.peer.intake import IntakeLog, IntakeRefused
from loopchain.storage.abc import StorageError
from loopchain.types.transaction import Transaction
from tests._syncs import record_syncs
from tests.integration._storage_helpers import ChainBuilder


@pytest.fixture
def chain() -> ChainBuilder:
    return ChainBuilder()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def hashes(txs: list[Transaction]) -> list[bytes]:
    return [tx.hash for tx in txs]


def test_appended_transactions_come_back_in_order_after_a_restart(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    txs = [chain.transaction() for _ in range(5)]
    journal = IntakeJournal(tmp_path / "intake")
    journal.append(txs[:2])
    journal.append(txs[2:])
    assert len(journal) == 5
    journal.close()
    again = IntakeJournal(tmp_path / "intake")
    back = again.replay()
    assert hashes(back) == hashes(txs)
    assert [tx.encode() for tx in back] == [tx.encode() for tx in txs]
    assert len(again) == 5


def test_a_crash_without_close_keeps_every_synced_append(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    txs = [chain.transaction() for _ in range(3)]
    journal = IntakeJournal(tmp_path / "intake")
    journal.append(txs)  # no close: as after kill -9
    assert hashes(IntakeJournal(tmp_path / "intake").replay()) == hashes(txs)
    later = [chain.transaction()]
    IntakeJournal(tmp_path / "intake").append(later)  # never replayed: after what is there
    again = IntakeJournal(tmp_path / "intake")
    assert hashes(again.replay()) == hashes(txs + later)
    with pytest.raises(RuntimeError, match="replayed once"):
        again.replay()


def test_a_segment_goes_once_everything_in_it_is_final_and_appends_moved_on(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    directory = tmp_path / "intake"
    one_record = len(encode_record(chain.transaction().encode()))
    journal = IntakeJournal(directory, segment_max_bytes=2 * one_record)
    first, second, third = ([chain.transaction() for _ in range(2)] for _ in range(3))
    for batch in (first, second, third):
        journal.append(batch)
    assert len(segments(directory)) == 3  # two records fill a segment
    journal.settle(hashes(first)[:1])
    assert len(segments(directory)) == 3  # one of its two is still pending
    journal.settle(hashes(first)[1:] + hashes(second))
    assert len(segments(directory)) == 1  # the segment appends go to stays
    journal.settle(hashes(third))
    assert len(journal) == 0 and len(segments(directory)) == 1
    journal.append([chain.transaction()])  # a new segment: the emptied one goes
    assert len(segments(directory)) == 1
    assert len(IntakeJournal(directory).replay()) == 1


def test_a_segment_whose_last_pending_transaction_a_client_sent_again_goes_at_once(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    """A client's second try of a transaction not final yet is appended to the open segment and
    counted there; an older segment it leaves with nothing pending is removed then, not at the
    window's sweep (and after a restart the same holds for the replayed segments)."""
    directory = tmp_path / "intake"
    one_record = len(encode_record(chain.transaction().encode()))
    journal = IntakeJournal(directory, segment_max_bytes=one_record)
    first, second = chain.transaction(), chain.transaction()
    journal.append([first])
    journal.append([second])  # a full segment each
    assert len(segments(directory)) == 2
    journal.append([first])  # the second try: a third segment, and the first one has nothing left
    assert [p.name for p in segments(directory)] == [f"{n:020d}.log" for n in (2, 3)]
    assert len(journal) == 2
    journal.close()

    replayed = IntakeJournal(directory, segment_max_bytes=one_record)
    assert hashes(replayed.replay()) == hashes([second, first])
    replayed.append([second])  # again: segment 2 empties, the open one keeps it
    assert [p.name for p in segments(directory)] == [f"{n:020d}.log" for n in (3, 4)]


def test_a_replayed_segment_that_is_all_final_is_removed_when_settled(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    directory = tmp_path / "intake"
    txs = [chain.transaction() for _ in range(3)]
    IntakeJournal(directory).append(txs)
    journal = IntakeJournal(directory)
    journal.replay()
    journal.settle(hashes(txs))  # the channel found them final
    assert segments(directory) == []
    journal.append([chain.transaction()])  # numbering goes on past the removed one
    assert [p.name for p in segments(directory)] == [f"{2:020d}.log"]


def test_a_record_cut_short_at_the_end_is_ignored_and_appends_go_to_a_new_segment(
    tmp_path: Path, chain: ChainBuilder, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "intake"
    txs = [chain.transaction() for _ in range(3)]
    IntakeJournal(directory).append(txs)
    path = segments(directory)[0]
    with path.open("ab") as file:  # a write cut by a crash: never acknowledged
        file.write(encode_record(chain.transaction().encode())[:-7])
    journal = IntakeJournal(directory)
    with caplog.at_level(logging.WARNING):
        assert hashes(journal.replay()) == hashes(txs)
    assert any("ignored" in r.getMessage() for r in caplog.records)
    later = chain.transaction()
    journal.append([later])
    assert len(segments(directory)) == 2  # nothing appended after the torn record
    assert hashes(IntakeJournal(directory).replay()) == hashes([*txs, later])


def test_a_record_whose_bytes_changed_ends_its_segment(chain: ChainBuilder) -> None:
    good = [encode_record(chain.transaction().encode()) for _ in range(3)]
    damaged = bytearray(good[1])
    damaged[20] ^= 0x01
    data = good[0] + bytes(damaged) + good[2]
    records, end = read_records(data)
    assert records == [good[0][intake_journal.HEADER_BYTES :]]
    assert end == len(good[0])
    huge = (intake_journal.MAX_RECORD_BYTES + 1).to_bytes(4, "big") + bytes(4)
    assert read_records(good[0] + huge) == (records, len(good[0]))


def test_a_tail_of_zeros_ends_the_data_without_an_error(
    tmp_path: Path, chain: ChainBuilder, caplog: pytest.LogCaptureFixture
) -> None:
    """A power cut can leave a segment's end as zeros; 8 zeros read as an empty record whose
    checksum matches (crc32 of nothing is 0), and each was logged as an unreadable entry (512
    errors for 4 KiB at every start). No record is empty: zeros are where the data ends."""
    directory = tmp_path / "intake"
    txs = [chain.transaction() for _ in range(2)]
    IntakeJournal(directory).append(txs)
    with segments(directory)[0].open("ab") as file:
        file.write(bytes(4096))
    with caplog.at_level(logging.WARNING):
        assert hashes(IntakeJournal(directory).replay()) == hashes(txs)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in caplog.records if "write cut short" in r.getMessage()]


def test_a_damaged_record_with_records_after_it_is_an_error_not_a_write_cut_short(
    tmp_path: Path, chain: ChainBuilder, caplog: pytest.LogCaptureFixture
) -> None:
    """What follows a damaged record in the middle of a segment was acknowledged: that is
    reported as an error (lost here), not as a write cut short and never acknowledged."""
    directory = tmp_path / "intake"
    txs = [chain.transaction() for _ in range(3)]
    IntakeJournal(directory).append(txs)
    path = segments(directory)[0]
    data = bytearray(path.read_bytes())
    data[len(encode_record(txs[0].encode())) + 20] ^= 0x01  # a byte of the second record
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert hashes(IntakeJournal(directory).replay()) == hashes(txs[:1])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "damaged" in errors[0], errors
    assert not [r for r in caplog.records if "write cut short" in r.getMessage()]


def test_a_last_record_whose_payload_is_zeros_is_a_write_cut_short(
    tmp_path: Path, chain: ChainBuilder, caplog: pytest.LogCaptureFixture
) -> None:
    """A power cut can leave the last record's header written and its payload zeros (its
    checksum fails): the last thing in the file was never acknowledged, not damage."""
    directory = tmp_path / "intake"
    txs = [chain.transaction() for _ in range(2)]
    IntakeJournal(directory).append(txs)
    record = encode_record(chain.transaction().encode())
    with segments(directory)[0].open("ab") as file:
        file.write(record[: intake_journal.HEADER_BYTES] + bytes(len(record) - 8))
    with caplog.at_level(logging.WARNING):
        assert hashes(IntakeJournal(directory).replay()) == hashes(txs)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r for r in caplog.records if "write cut short" in r.getMessage()]


def test_a_segment_whose_close_fails_keeps_its_synced_appends(
    tmp_path: Path, chain: ChainBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() may report an earlier write's error (NFS, a failing disk) when the journal moves
    to a new segment; every append was synced before it was acknowledged, so the append that
    moved on goes through (before, the error ended the intake's writer)."""
    directory = tmp_path / "intake"
    journal = IntakeJournal(directory, segment_max_bytes=1)  # a segment per append
    first = [chain.transaction()]
    journal.append(first)
    real_close = os.close

    def failing_close(fd: int) -> None:  # a segment's (a folder's, when synced, closes)
        segment = stat.S_ISREG(os.fstat(fd).st_mode)
        real_close(fd)
        if segment:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(intake_journal.os, "close", failing_close)
    second = [chain.transaction()]
    journal.append(second)
    monkeypatch.setattr(intake_journal.os, "close", real_close)
    assert hashes(IntakeJournal(directory).replay()) == hashes(first + second)


def test_a_failing_write_loses_nothing_acknowledged_and_the_next_goes_to_a_new_segment(
    tmp_path: Path, chain: ChainBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "intake"
    journal = IntakeJournal(directory)
    kept = [chain.transaction() for _ in range(2)]
    journal.append(kept)
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:  # ENOSPC after half of it
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(intake_journal.os, "write", half_then_full)
    with pytest.raises(StorageError, match="No space left"):
        journal.append([chain.transaction() for _ in range(2)])
    monkeypatch.setattr(intake_journal.os, "write", real_write)
    later = [chain.transaction()]
    journal.append(later)
    assert len(segments(directory)) == 2
    assert len(journal) == 3  # the refused ones were never acknowledged
    assert hashes(IntakeJournal(directory).replay()) == hashes(kept + later)


def test_a_new_segment_whose_name_cannot_be_synced_does_not_wedge_later_appends(
    tmp_path: Path, chain: ChainBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment is created (O_EXCL) and its folder's sync fails: that append is refused, its
    file is closed and removed, and the next append opens a segment under a fresh name."""
    directory = tmp_path / "intake"
    journal = IntakeJournal(directory, segment_max_bytes=1)  # a segment per append
    kept = [chain.transaction() for _ in range(2)]
    journal.append(kept)
    real_open, real_sync = os.open, intake_journal._sync_directory
    created: list[int] = []

    def remembering_open(path: object, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)  # type: ignore[arg-type]
        created.append(fd)
        return fd

    def failing_sync(folder: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(intake_journal.os, "open", remembering_open)
    monkeypatch.setattr(intake_journal, "_sync_directory", failing_sync)
    with pytest.raises(StorageError, match="Input/output error"):
        journal.append([chain.transaction()])
    monkeypatch.setattr(intake_journal, "_sync_directory", real_sync)
    monkeypatch.setattr(intake_journal.os, "open", real_open)
    with pytest.raises(OSError):
        os.fstat(created[-1])  # the refused segment's descriptor was closed
    assert len(segments(directory)) == 1  # and its empty file removed
    later = [chain.transaction() for _ in range(2)]
    journal.append(later)
    assert len(journal) == 4
    assert hashes(IntakeJournal(directory).replay()) == hashes(kept + later)


def test_segments_older_than_the_window_are_dropped_but_not_the_open_one(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    directory = tmp_path / "intake"
    journal = IntakeJournal(directory, segment_max_bytes=1)  # a segment per append
    old = [chain.transaction() for _ in range(2)]
    journal.append(old)
    newer = [chain.transaction()]
    journal.append(newer)
    assert journal.drop_before(newer[0].timestamp) == 2
    assert len(journal) == 1 and len(segments(directory)) == 1
    assert journal.drop_before(newer[0].timestamp + 1) == 0  # appends still go there
    assert hashes(IntakeJournal(directory).replay()) == hashes(newer)


def test_appends_move_to_a_new_segment_once_the_open_one_is_old(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    directory = tmp_path / "intake"
    journal = IntakeJournal(directory, segment_max_seconds=-1.0)  # always old
    txs = [chain.transaction() for _ in range(3)]
    for tx in txs:
        journal.append([tx])
    assert len(segments(directory)) == 3
    journal.settle(hashes(txs[:2]))
    assert len(segments(directory)) == 1
    assert hashes(IntakeJournal(directory).replay()) == hashes(txs[2:])


def test_a_journal_it_cannot_read_or_write_is_a_storage_error(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    """What the peer's start-up and intake turn into a clear refusal: a segment that cannot be
    read (here a folder in its place) stops the replay, a journal folder that cannot be made
    refuses the append; neither is taken for an empty journal."""
    unreadable = tmp_path / "unreadable"
    (unreadable / f"{1:020d}.log").mkdir(parents=True)
    with pytest.raises(StorageError, match="cannot read the intake journal"):
        IntakeJournal(unreadable).replay()
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file where the folder should be")
    journal = IntakeJournal(blocked / "intake")
    with pytest.raises(StorageError, match=r"intake journal .*blocked"):
        journal.append([chain.transaction()])
    assert len(journal) == 0


def test_a_journal_never_written_is_empty(tmp_path: Path) -> None:
    journal = IntakeJournal(tmp_path / "absent")
    assert journal.replay() == [] and len(journal) == 0
    journal.settle([bytes(32)])
    assert journal.drop_before(1 << 62) == 0
    assert not (tmp_path / "absent").exists()


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 4)),
        st.tuples(st.just("settle"), st.integers(0, 50)),
        st.tuples(st.just("restart"), st.booleans()),
        st.tuples(st.just("retry"), st.integers(0, 50)),  # a client sends a pending one again
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS, segment_bytes=st.integers(1, 4000))
def test_what_is_acknowledged_and_not_final_always_comes_back(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, object]], segment_bytes: int
) -> None:
    """Any run of appends, settles and restarts (closed or crashed): a replay returns every
    acknowledged transaction not yet final, nothing never acknowledged, and no more segment files
    than hold something pending (plus the open one)."""
    directory = tmp_path_factory.mktemp("journal") / "intake"
    chain = ChainBuilder()
    journal = IntakeJournal(directory, segment_max_bytes=segment_bytes)
    acknowledged: dict[bytes, Transaction] = {}
    final: set[bytes] = set()
    for op, arg in ops:
        if op == "append":
            batch = [chain.transaction() for _ in range(int(arg))]  # type: ignore[call-overload]
            journal.append(batch)
            acknowledged.update((tx.hash, tx) for tx in batch)
        elif op == "retry":
            pending = [tx for h, tx in acknowledged.items() if h not in final]
            if pending:
                journal.append([pending[int(arg) % len(pending)]])  # type: ignore[call-overload]
        elif op == "settle":
            pending = [h for h in acknowledged if h not in final]
            done = pending[: int(arg) % (len(pending) + 1)]  # type: ignore[call-overload]
            journal.settle(done)
            final.update(done)
        else:
            if arg:
                journal.close()
            journal = IntakeJournal(directory, segment_max_bytes=segment_bytes)
            back = journal.replay()
            journal.settle([tx.hash for tx in back if tx.hash in final])  # the channel's check
        assert len(journal) == len(acknowledged) - len(final)
    journal.close()
    back = {tx.hash for tx in IntakeJournal(directory).replay()}
    assert set(acknowledged) - final <= back <= set(acknowledged)
    files = segments(directory)
    assert len(files) <= len(acknowledged) - len(final) + 1


async def test_an_unexpected_failure_of_a_write_refuses_its_batch_and_the_next_goes_through(
    tmp_path: Path, chain: ChainBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only IntakeRefused was caught: any other error ended the intake's writer task with the
    batch's writers waiting for good (their clients timed out, their admission room was never
    given back, and shutdown waited on them)."""
    journal = IntakeJournal(tmp_path / "intake")
    intake = IntakeLog(journal, 0)
    real_append = journal.append

    def failing_append(txs: list[Transaction]) -> None:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(journal, "append", failing_append)
    with pytest.raises(IntakeRefused, match="something nobody foresaw"):
        await asyncio.wait_for(intake.write([chain.transaction()]), 30)
    monkeypatch.setattr(journal, "append", real_append)
    kept = [chain.transaction()]
    await asyncio.wait_for(intake.write(kept), 30)
    await asyncio.wait_for(intake.drain(), 30)
    assert hashes(IntakeJournal(tmp_path / "intake").replay()) == hashes(kept)


def test_a_journal_made_folders_deep_syncs_every_new_folder_into_its_parent(
    tmp_path: Path, chain: ChainBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal whose folder and its parents are new synced only the folder's own parent: a
    power cut could lose the upper folders' names, and with them every acknowledged
    transaction written below."""
    synced = record_syncs(monkeypatch, (intake_journal, "_sync_directory"))
    directory = tmp_path / "peer" / "channel" / "intake"
    journal = IntakeJournal(directory)
    journal.append([chain.transaction()])
    assert {tmp_path, tmp_path / "peer", tmp_path / "peer" / "channel", directory} <= set(synced)
    assert len(IntakeJournal(directory).replay()) == 1
