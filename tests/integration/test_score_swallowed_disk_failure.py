"""A read of the SCORE's state that this machine's disk fails (a table's checksum does not match)
fails the whole call as a store failure even when the SCORE's code catches the error and goes
on (`try: ... except Exception: n = 0`): no result, no staged block, no answer; the SCORE process
marks its store for replay and ends, as for an error the code lets through.

Real parts: the SCORE state in LevelDB with a byte of a table changed on disk, the SCORE process's
LoadedScore in this process and the real SCORE process under its supervisor; the block history
case uses the store damaged at one key (tests/_damaged_store.py), as LevelDB keeps a block's
records in the table block of the state's meta keys, which a load reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopchain.blockchain.execution import SUCCESS
from loopchain.blockchain.score_base import BlockView
from loopchain.protos import score_pb2 as pb
from loopchain.scoreservice import process
from loopchain.scoreservice.client import ScoreRejected, ScoreUnavailable
from loopchain.scoreservice.packages import resolve_package
from loopchain.scoreservice.process import LoadedScore, damage_marker
from loopchain.storage.abc import StorageCorrupt
from tests._damaged_store import DamagedStore
from tests.integration._score_helpers import (
    READY_DEADLINE,
    Blocks,
    make_supervisor,
    running,
    score_config,
    set_op,
    write_package,
)
from tests.integration._storage_helpers import CHANNEL, damage_a_table
from tests.integration.test_score_process import _reloaded
from tools.procs import wait_until_async

STEP_LIMIT = 10_000_000
MARKER = "damaged-count-" + "7" * 48  # in the value the damage hits
# LevelDB checks a checksum per 4 KB table block: two values this big, sorted between the meta
# keys (read when the SCORE loads) and the counter, keep the counter's block apart from theirs
PADDING = "p" * 3500

# Each op but "set" reads state the way much SCORE code does: any problem means "nothing yet"
SOURCE = """
import json

from loopchain.blockchain.score_base import ScoreBase, ScoreError


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        data = transaction.data
        op = data["op"]
        if op == "set":
            self.db.put(data["key"].encode(), data["value"].encode())
            return None
        if op == "first_block":
            try:
                first = self.blocks.block_by_height(0)
            except Exception:
                first = None
            self.db.put(b"first", (first.block_hash if first else "none").encode())
            return None
        try:
            record = json.loads(self.db.get(b"counter") or b'{"n": 0}')
        except Exception:
            record = {"n": 0}
        if op == "count_or_refuse" and record["n"] == 0:
            raise ScoreError("nothing counted yet")
        record["n"] += 1
        self.db.put(b"counter", json.dumps(record).encode())
        return None

    def query(self, params):
        try:
            value = self.db.get(json.loads(params)["key"].encode())
        except Exception:
            value = None
        return json.dumps(None if value is None else value.decode())
"""

COUNTED = json.dumps({"n": 5, "note": MARKER + "q" * 3400})


def _package(tmp_path: Path) -> Path:
    write_package(tmp_path / "repo", "counter", SOURCE)
    return tmp_path / "repo" / "test" / "counter"


def _load(package: Path, state: Path) -> LoadedScore:
    request = pb.LoadRequest(channel=CHANNEL, package_path=str(package), state_path=str(state))
    return LoadedScore(request, STEP_LIMIT)


def _damaged_counter(tmp_path: Path, chain: Blocks) -> Path:
    """The state at tmp_path/state after block 0 (the counter at 5 beside the padding), committed
    and closed, with a byte of the counter's table changed on disk."""
    state = tmp_path / "state"
    loaded = _load(_package(tmp_path), state)
    try:
        block0 = chain.next(
            set_op("a-padding-1", PADDING),
            set_op("a-padding-2", PADDING),
            set_op("counter", COUNTED),
        )
        results, _, _ = loaded.invoke_block(block0)
        assert [r.code for r in results] == [SUCCESS] * 3, results
        loaded.state.commit(0)
    finally:
        loaded.state.store.close()
    damage_a_table(state, MARKER.encode())
    return state


@pytest.mark.parametrize("op", ["count", "count_or_refuse"])
def test_an_invoke_whose_score_swallows_a_failed_read_fails_as_a_store_failure(
    tmp_path: Path, op: str
) -> None:
    """The SCORE catches the checksum error reading its counter and counts from 0 ("count":
    before, the block was staged with the counter at 1 and code 0) or refuses ("count_or_refuse":
    before, a 9000 result): the invoke raises the StorageCorrupt and nothing is staged."""
    chain = Blocks()
    state = _damaged_counter(tmp_path, chain)
    block1 = chain.next({"op": op})
    loaded = _load(_package(tmp_path), state)
    try:
        with pytest.raises(StorageCorrupt, match="is corrupt"):
            results = loaded.invoke_block(block1)
            pytest.fail(f"the invoke gave results {results[0]} over a failed read")
        assert loaded.state.staged is None
        assert loaded.state.executed_height == 0
    finally:
        loaded.state.store.close()


def test_a_query_whose_score_swallows_a_failed_read_fails_as_a_store_failure(
    tmp_path: Path,
) -> None:
    """The SCORE catches the checksum error and answers null (before: the client was told the
    counter is not there): the query raises the StorageCorrupt instead."""
    state = _damaged_counter(tmp_path, Blocks())
    loaded = _load(_package(tmp_path), state)
    try:
        assert json.loads(loaded.query(json.dumps({"key": "a-padding-1"}))) == PADDING
        with pytest.raises(StorageCorrupt):
            answer = loaded.query(json.dumps({"key": "counter"}))
            pytest.fail(f"the query answered {answer} over a failed read")
        assert json.loads(loaded.query(json.dumps({"key": "a-padding-1"}))) == PADDING
    finally:
        loaded.state.store.close()


def test_a_block_history_read_the_score_swallows_fails_the_invoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of a committed block's record that fails (the store damaged at that key), caught by
    the SCORE (before: it recorded "none" as the first block's hash, code 0): the invoke raises,
    nothing is staged; once the key reads again the same block records the real hash (the
    failure raised is not remembered into the next call)."""
    store = DamagedStore()
    monkeypatch.setattr(process, "open_state_store", lambda path: store)
    package, chain = _package(tmp_path), Blocks()
    block0 = chain.next(set_op("k", "v"))
    first = _load(package, tmp_path / "state")
    first.invoke_block(block0)
    first.state.commit(0)
    block1 = chain.next({"op": "first_block"})
    loaded = _load(package, tmp_path / "state")  # a new process: no block cached
    store.damaged.add(b"b:" + (0).to_bytes(8, "big"))
    with pytest.raises(StorageCorrupt):
        results = loaded.invoke_block(block1)
        pytest.fail(f"the invoke gave results {results[0]} over a failed read")
    assert loaded.state.staged is None
    store.damaged.clear()
    results, _, _ = loaded.invoke_block(block1)
    assert [r.code for r in results] == [SUCCESS], results
    assert loaded.state.staged is not None
    assert loaded.state.staged.writes == {b"first": block0.hash.hex().encode()}
    assert isinstance(loaded.state.blocks.block_by_height(0), BlockView)


@pytest.mark.timeout(120)
async def test_the_score_process_marks_a_store_whose_failed_read_its_score_swallowed(
    tmp_path: Path,
) -> None:
    """Through the real SCORE process: the invoke over the damaged counter is not answered
    (before: code 0, the counter staged at 1), the process marks its store and ends, and the
    next one moves the store aside and starts from nothing, to be replayed the chain."""
    chain = Blocks()
    state = _damaged_counter(tmp_path, chain)
    package = resolve_package(
        tmp_path / "repo",
        "test/counter",
        branch="master",
        allow_develop=False,
        work_dir=tmp_path / "work",
    )
    block1 = chain.next({"op": "count"})
    supervisor = make_supervisor(tmp_path, score_config(), package, state=state.name)
    async with running(supervisor):
        pid = supervisor.pid
        assert pid is not None and (await supervisor.client.status()).executed_height == 0
        with pytest.raises((ScoreUnavailable, ScoreRejected), match="state store failed"):
            result = await supervisor.client.invoke_block(block1)
            pytest.fail(f"the invoke gave results {result.results[0]} over a failed read")

        async def started_anew() -> bool:
            aside = [p for p in tmp_path.iterdir() if p.name.startswith("state.corrupt-")]
            return bool(aside) and not damage_marker(state).exists()

        await wait_until_async(started_anew, READY_DEADLINE, "the damaged state moved aside")
        await wait_until_async(
            lambda: _reloaded(supervisor, pid), READY_DEADLINE, "the next SCORE process"
        )
        assert (await supervisor.client.status()).executed_height == -1
