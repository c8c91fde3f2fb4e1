"""The SCORE's state store as a SCORE process opens it: a store a read found corrupt (marked) is
moved aside and a new one opened, a mark left without its store (a crash after the move, a store
removed by hand) opens a new store, a store without a mark opens as it is; the mark goes once the
marked store is gone. Real LevelDB in a temporary folder."""

from __future__ import annotations

import time
import types
from pathlib import Path

import pytest

from loopchain.scoreservice import process
from loopchain.scoreservice.process import KEPT_CORRUPT_COPIES, damage_marker, open_state_store
from loopchain.storage.leveldb import LevelDBStore


def _store_with(path: Path, value: bytes) -> None:
    with LevelDBStore(path) as kv:
        kv.put(b"k", value, sync=True)


def _aside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if ".corrupt-" in p.name)


def test_a_marked_store_is_moved_aside_and_a_new_one_opened(tmp_path: Path) -> None:
    path = tmp_path / "score_state"
    _store_with(path, b"damaged")
    damage_marker(path).write_text("LevelDB store at ... is corrupt: block checksum mismatch")
    store = open_state_store(path)
    try:
        assert store.get(b"k") is None  # new and empty: the peer replays the chain into it
    finally:
        store.close()
    assert len(_aside(path)) == 1 and not damage_marker(path).exists()
    with LevelDBStore(path.parent / _aside(path)[0]) as kept:  # kept for inspection
        assert kept.get(b"k") == b"damaged"


def test_a_mark_without_its_store_opens_a_new_one_and_goes(tmp_path: Path) -> None:
    """A crash between the move and the mark's removal, or a store removed by hand to replay:
    before, every start tried to move the missing store aside and failed, for good."""
    path = tmp_path / "score_state"
    damage_marker(path).write_text("corrupt")
    store = open_state_store(path)
    store.close()
    assert _aside(path) == [] and not damage_marker(path).exists()


def test_the_marks_removal_is_synced_and_a_store_without_one_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark's removal is made durable (its folder synced): a mark back after a power cut had
    the new store moved aside and the chain replayed again (review). No mark, no sync."""
    synced: list[Path] = []
    real = process.sync_directory

    def counted(directory: Path) -> None:
        synced.append(directory)
        real(directory)

    monkeypatch.setattr(process, "sync_directory", counted)
    path = tmp_path / "score_state"
    _store_with(path, b"damaged")
    damage_marker(path).write_text("corrupt")
    open_state_store(path).close()
    assert synced == [damage_marker(path).parent] and not damage_marker(path).exists()
    open_state_store(path).close()  # the new store, unmarked
    assert synced == [damage_marker(path).parent]


def test_an_unmarked_store_opens_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "score_state"
    _store_with(path, b"good")
    store = open_state_store(path)
    try:
        assert store.get(b"k") == b"good"
    finally:
        store.close()
    assert _aside(path) == []


def test_a_store_with_a_table_cut_short_is_moved_aside_and_a_new_one_opened(
    tmp_path: Path,
) -> None:
    """A table file cut short (a crash on a filesystem that lost its end, a full disk) is found
    when the store is opened, not at the first read of that table some time later."""
    path = tmp_path / "score_state"
    _store_with(path, b"cut")
    with LevelDBStore(path):  # reopened: the log becomes a table
        pass
    (table,) = path.glob("*.ldb")
    with table.open("r+b") as cut:
        cut.truncate(table.stat().st_size - 5)
    store = open_state_store(path)
    try:
        assert store.get(b"k") is None  # new and empty: the peer replays the chain into it
    finally:
        store.close()
    assert len(_aside(path)) == 1


def test_only_the_newest_corrupt_copies_are_kept(tmp_path: Path) -> None:
    """A disk that corrupts the state at every start: each start moves a whole copy aside. Before,
    every copy was kept (the disk filled with them); now the newest KEPT_CORRUPT_COPIES are, and
    moves within one second get names of their own (before: the second rename failed)."""
    path = tmp_path / "score_state"
    for round_ in range(KEPT_CORRUPT_COPIES + 3):
        _store_with(path, f"damaged {round_}".encode())
        damage_marker(path).write_text("corrupt")
        open_state_store(path).close()
    kept = _aside(path)
    assert len(kept) == KEPT_CORRUPT_COPIES
    values = set()
    for name in kept:
        with LevelDBStore(path.parent / name) as copy:
            values.add(copy.get(b"k"))
    last = KEPT_CORRUPT_COPIES + 2
    assert values == {
        f"damaged {r}".encode() for r in range(last - KEPT_CORRUPT_COPIES + 1, last + 1)
    }


def test_the_copy_just_moved_aside_is_kept_when_the_clock_went_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies are named by the time they were made; a clock set back (NTP, an operator) names
    the newest as the oldest. Before, it was the one removed at once: the evidence of the damage
    just met was lost, and older copies kept."""
    path = tmp_path / "score_state"
    clock = iter([2_000_000_000.0, 2_000_000_100.0, 1_900_000_000.0])  # the third: set back
    stopped = types.SimpleNamespace(
        time=lambda: next(clock), strftime=time.strftime, gmtime=time.gmtime
    )
    monkeypatch.setattr(process, "time", stopped)  # the module's clock only (logging keeps its own)
    for round_ in range(3):
        _store_with(path, f"damaged {round_}".encode())
        damage_marker(path).write_text("corrupt")
        open_state_store(path).close()
    kept = set()
    for name in _aside(path):
        with LevelDBStore(path.parent / name) as copy:
            kept.add(copy.get(b"k"))
    assert b"damaged 2" in kept and len(kept) == KEPT_CORRUPT_COPIES


def test_a_mark_made_while_the_store_opens_is_left_for_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer marks the state (ScoreSupervisor.replace_state) while a process just started is
    opening it, past its look for a mark: that process opens the store as it is and is then
    killed; the mark stays for the next one (before: the opening removed any mark there, and
    the next process opened the old state again; review)."""
    path = tmp_path / "score_state"
    _store_with(path, b"ahead")
    opened = process.open_store

    def open_as_it_is_marked(where: Path) -> object:
        damage_marker(path).write_text("ahead of the block store")
        return opened(where)

    monkeypatch.setattr(process, "open_store", open_as_it_is_marked)
    with open_state_store(path) as store:
        assert store.get(b"k") == b"ahead"
    assert damage_marker(path).exists()
    monkeypatch.setattr(process, "open_store", opened)
    with open_state_store(path) as store:  # the next process
        assert store.get(b"k") is None
    assert len(_aside(path)) == 1 and not damage_marker(path).exists()
