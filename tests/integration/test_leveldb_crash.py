"""A LevelDB block store survives kill -9 mid-write, and refuses a second process at once; a
channel worker's opener waits (bounded) for a process that still holds it to let it go."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopchain.blockchain.block_store import BlockStore, TxPlace
from loopchain.peer.stores import open_released
from loopchain.storage.abc import StorageError, StoreLocked
from loopchain.storage.leveldb import LevelDBStore
from tests.integration._storage_helpers import CHANNEL, LineReader, stop

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from loopchain.blockchain.block_store import BlockStore
from loopchain.storage.leveldb import LevelDBStore
from tests.integration._storage_helpers import CHANNEL, ChainBuilder

store = BlockStore(LevelDBStore(sys.argv[1]), CHANNEL)
chain = ChainBuilder()
while True:
    block, certificate = chain.next(tx_count=3)
    store.save_block(block, certificate)
    print(block.height, flush=True)
"""

HOLDER = """
import sys
from loopchain.storage.leveldb import LevelDBStore

store = LevelDBStore(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
store.close()
"""


def spawn(tmp_path: Path, name: str, source: str, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_kill_9_while_appending_leaves_a_consistent_store(tmp_path: Path) -> None:
    db = tmp_path / "db"
    proc = spawn(tmp_path, "writer", WRITER, str(db))
    try:
        reader = LineReader(proc.stdout)  # type: ignore[arg-type]
        reader.wait_for(20, timeout=60)
        proc.kill()  # SIGKILL: no close, no flush, possibly in the middle of a batch
        proc.wait(timeout=10)
        printed = [int(line) for line in reader.drain(timeout=10)]
    finally:
        stop(proc)
    assert printed == list(range(len(printed)))
    with LevelDBStore(db, create=False) as kv:
        store = BlockStore(kv, CHANNEL)
        store.check()
        assert store.tip_height() >= printed[-1]
        assert store.total_tx() == 3 * (store.tip_height() + 1)
        prev_hash = b""
        for height in range(store.tip_height() + 1):
            block = store.block_by_height(height)
            assert block is not None, f"height {height} does not load"
            assert block.header.prev_hash == prev_hash
            assert block.check_integrity() is None
            certificate = store.certificate_at(height)
            assert certificate is not None and certificate.block_hash == block.hash
            for index, tx in enumerate(block.transactions):
                place = TxPlace(height, index, block.hash)
                assert store.find_transaction(tx.hash) == (tx, place)
            prev_hash = block.hash


def test_a_store_held_by_a_live_process_is_refused_at_once(tmp_path: Path) -> None:
    db = tmp_path / "db"
    proc = spawn(tmp_path, "holder", HOLDER, str(db))
    try:
        LineReader(proc.stdout).wait_for(1, timeout=30)  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(StorageError, match="another process holds it") as info:
            LevelDBStore(db)
        assert time.monotonic() - started < 2.0
        assert str(db) in str(info.value)
        assert proc.poll() is None  # the holder is alive: the refusal was its lock
        proc.stdin.close()  # type: ignore[union-attr]  # let it close the store and exit
        assert proc.wait(timeout=10) == 0
    finally:
        stop(proc)
    with LevelDBStore(db) as kv:  # free again once the holder is gone
        assert kv.get(b"anything") is None


async def test_a_store_held_by_a_process_that_then_ends_is_opened_once_released(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a channel worker of a peer started again right after a kill -9 meets: the old
    worker still holds the store while it shuts down; the new one waits and then opens it."""
    db = tmp_path / "db"
    proc = spawn(tmp_path, "holder", HOLDER, str(db))
    try:
        LineReader(proc.stdout).wait_for(1, timeout=30)  # type: ignore[arg-type]
        caplog.set_level(logging.WARNING, logger="loopchain.peer.stores")
        opening = asyncio.create_task(open_released(db, wait=120.0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while "waiting up to" not in caplog.text:  # refused once: the holder has it
            assert loop.time() < deadline and not opening.done(), "the opener never waited"
            await asyncio.sleep(0.01)
        assert not opening.done()
        proc.stdin.close()  # type: ignore[union-attr]  # the holder closes the store and ends
        async with asyncio.timeout(60):
            store = await opening
        with store:
            store.put(b"key", b"value", sync=True)
            assert store.get(b"key") == b"value"
        assert proc.wait(timeout=10) == 0
    finally:
        stop(proc)


async def test_a_store_held_past_the_wait_is_refused_and_none_is_waited_for_without_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    proc = spawn(tmp_path, "holder", HOLDER, str(db))
    try:
        LineReader(proc.stdout).wait_for(1, timeout=30)  # type: ignore[arg-type]
        with pytest.raises(
            StoreLocked, match=r"another process holds it .*; still after waiting 0\.2 s$"
        ):
            await open_released(db, wait=0.2)
        with pytest.raises(
            StoreLocked, match=r"another process holds it \(only one owner may open a store\)$"
        ):
            await open_released(db, wait=0.0)  # the peer's own channels: refused at once
        assert proc.poll() is None
    finally:
        stop(proc)
