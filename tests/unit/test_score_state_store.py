"""The SCORE's state store as a SCORE process opens it: a store a read found corrupt (marked) is
moved aside and a new one opened, a mark left without its store (a crash after the move, a store
removed by hand) opens a new store, a store without a mark opens as it is; the mark goes once the
marked store is gone. Real LevelDB in a temporary folder."""

from __future__ import annotations

from pathlib import Path

from loopchain.scoreservice.process import damage_marker, open_state_store
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


def test_an_unmarked_store_opens_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "score_state"
    _store_with(path, b"good")
    store = open_state_store(path)
    try:
        assert store.get(b"k") == b"good"
    finally:
        store.close()
    assert _aside(path) == []
