"""The peer-side SCORE runtime with a real SCORE process and real LevelDB stores: blocks execute in
order, and after the SCORE loses what it committed the runtime re-executes exactly the missing blocks
and reaches the roots it recorded."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from loopchain.blockchain import execution
from loopchain.blockchain.block_store import BlockStore
from loopchain.blockchain.execution import InvokeResult
from loopchain.configure import load_config
from loopchain.consensus import messages as m
from loopchain.peer import score_runtime as score_runtime_module
from loopchain.peer.channel_service import storage_advice
from loopchain.peer.score_runtime import MAX_TIMEOUTS_PER_BLOCK, ScoreRuntime
from loopchain.scoreservice import STOPPED_EXIT, STORE_FAILED_EXIT
from loopchain.scoreservice import state as state_module
from loopchain.scoreservice import supervisor as supervisor_module
from loopchain.scoreservice.client import ScoreUnavailable
from loopchain.scoreservice.process import damage_marker
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from tests.integration._storage_helpers import (
    BASE_TIME_US,
    CHANNEL,
    ChainBuilder,
    damage_a_table,
)
from tools.procs import ROOT, wait_until_async

BLOCKS = 6


def _kv_transactions(chain: ChainBuilder, block: int) -> list[Transaction]:
    return [
        Transaction.create_v1(
            CHANNEL,
            {"method": "set", "params": {"key": f"k{block}-{i}", "value": f"v{block}"}},
            1_000_000 * block + i,
            chain.signers[0],
        )
        for i in range(3)
    ]


def _fill(store: BlockStore, chain: ChainBuilder) -> None:
    for height in range(BLOCKS):
        block = chain.block(_kv_transactions(chain, height))
        qc = chain.certify(block)
        chain.advance(block, qc)
        store.save_block(block, qc)


@contextlib.asynccontextmanager
async def running(runtime: ScoreRuntime) -> AsyncIterator[list[m.BlockExecuted]]:
    task = asyncio.create_task(runtime.run())
    try:
        yield []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runtime.stop()


def _runtime(
    tmp_path: Path,
    store: BlockStore,
    seen: list[m.BlockExecuted],
    package: str = "sample/kvstore",
    on_storage_error: Callable[[Exception], None] | None = None,
    **settings: object,
) -> ScoreRuntime:
    config = load_config(
        environ={},
        overrides={"DEFAULT_SCORE_REPOSITORY_PATH": str(ROOT / "score"), **settings},
    )
    return ScoreRuntime(
        config=config,
        channel=CHANNEL,
        store=store,
        package_name=package,
        storage_dir=tmp_path / "channel",
        port=40000 + (hash(str(tmp_path)) % 20000),
        on_executed=seen.append,
        on_storage_error=on_storage_error,
    )


@pytest.mark.timeout(120)
async def test_blocks_execute_in_order_and_a_lost_score_state_is_replayed(tmp_path: Path) -> None:
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    seen: list[m.BlockExecuted] = []
    runtime = _runtime(tmp_path, store, seen)
    async with running(runtime):
        await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "execution of every block")
        answer = await runtime.query(json.dumps({"method": "get", "params": {"key": "k5-2"}}))
    assert json.loads(answer) == {"value": "v5"}
    assert [event.height for event in seen] == list(range(BLOCKS))
    recorded = store.executed()
    assert recorded is not None
    first = store.block_by_height(0)
    assert first is not None
    for index, tx in enumerate(first.transactions):  # each set announced by its event log
        event = {"indexed": ["ValueSet(str,str)", f"k0-{index}"], "data": ["v0"]}
        assert store.tx_result(tx.hash) == (0, "", 0, 0, 0, canonical.encode([event]).decode())

    # The SCORE loses everything it committed (its state directory is gone): the runtime replays
    # blocks 0..5 into it and must arrive at the roots it recorded, without recording anything anew.
    shutil.rmtree(tmp_path / "channel" / "score_state")
    await _replay_to_recorded(tmp_path, store, recorded)


async def _replay_to_recorded(
    tmp_path: Path, store: BlockStore, recorded: tuple[int, bytes, bytes]
) -> str:
    """Start a runtime again over the executed `store`: its SCORE must load and be replayed to
    the recorded roots, and nothing be recorded anew. Returns a query's answer after it."""
    replayed: list[m.BlockExecuted] = []
    runtime = _runtime(tmp_path, store, replayed)
    async with running(runtime):
        assert runtime.supervisor is not None
        await runtime.supervisor.wait_ready(30)
        assert runtime.supervisor.load_error is None

        async def score_caught_up() -> bool:
            status = await runtime.supervisor.client.status()  # type: ignore[union-attr]
            return status.executed_height == BLOCKS - 1 and status.state_root == recorded[1]

        await wait_until_async(score_caught_up, 60, "the SCORE to replay to the recorded roots")
        answer = await runtime.query(json.dumps({"method": "get", "params": {"key": "k5-2"}}))
    assert replayed == []  # nothing executed anew: the peer had already recorded every block
    assert store.executed() == recorded
    return answer


async def _executed_chain(tmp_path: Path) -> tuple[BlockStore, tuple[int, bytes, bytes], Path]:
    """A chain every block of which the SCORE executed: its store, what it recorded, and the
    path of the SCORE's state store."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    runtime = _runtime(tmp_path, store, [])
    async with running(runtime):
        await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "execution of every block")
    recorded = store.executed()
    assert recorded is not None
    return store, recorded, tmp_path / "channel" / "score_state"


async def _replayed_aside(
    tmp_path: Path, store: BlockStore, recorded: tuple[int, bytes, bytes], state: Path
) -> str:
    """Replay to the recorded roots (_replay_to_recorded); the damaged state store was moved
    aside, once, and its mark for the next process removed: its name."""
    answer = await _replay_to_recorded(tmp_path, store, recorded)
    assert json.loads(answer) == {"value": "v5"}
    aside = [p.name for p in state.parent.iterdir() if p.name.startswith("score_state.corrupt-")]
    assert len(aside) == 1, aside
    assert not damage_marker(state).exists()
    return aside[0]


def _empty_manifest(state: Path) -> Path:
    """What a filesystem repair left: its manifest cut to nothing (the store will not open)."""
    manifest = state / (state / "CURRENT").read_text().strip()
    manifest.write_bytes(b"")
    return manifest


def _changed_byte(state: Path) -> Path:
    """A byte changed on disk (a failing disk): the store opens, a read of that table fails."""
    return damage_a_table(state, b'{"block_hash":"')  # in the one table block it has


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", [_empty_manifest, _changed_byte])
async def test_a_corrupt_score_state_is_moved_aside_and_replayed_to_the_recorded_roots(
    tmp_path: Path, damage: Callable[[Path], Path]
) -> None:
    """A filesystem error and its repair can leave the SCORE's LevelDB unreadable (its manifest
    cut to nothing: seen after an ext4 that turned read-only was checked and mounted again), or
    a failing disk change a byte that only LevelDB's checksum catches, on a read. The SCORE must
    not stay unloaded, which would make this peer record results no other peer has, nor end at
    the same read process after process: the corrupt store is moved aside (a read that finds it
    corrupt marks it for the next process) and the recorded blocks replayed into a new one."""
    store, recorded, state = await _executed_chain(tmp_path)
    damaged = damage(state)
    as_damaged = damaged.read_bytes()

    aside = await _replayed_aside(tmp_path, store, recorded, state)
    assert (state.parent / aside / damaged.name).read_bytes() == as_damaged  # kept as it was


@pytest.mark.timeout(120)
@pytest.mark.parametrize("height", [b"x\xff", b"12a", b""])
async def test_a_score_state_whose_meta_is_damaged_is_moved_aside_and_replayed(
    tmp_path: Path, height: bytes
) -> None:
    """The executed height the state store records, damaged (not a number): it was taken for a
    package that cannot load, and this peer recorded results 9100 and the old root for every
    block after, which no other peer recorded (review). It is a damaged store: moved aside and
    replayed from the chain."""
    store, recorded, state = await _executed_chain(tmp_path)
    kv = LevelDBStore(state)
    kv.put(state_module.META_PREFIX + b"height", height, sync=True)
    kv.close()

    await _replayed_aside(tmp_path, store, recorded, state)


@pytest.mark.timeout(120)
async def test_a_state_store_that_cannot_be_opened_holds_execution_until_it_can(
    tmp_path: Path,
) -> None:
    """A state store this machine cannot open (here another process holds its lock; a read-only
    or full disk does the same) is not the package's fault: recording 9100 and the old root, as
    for a package no peer can load, would give this peer results no other peer has. Execution
    waits, the status says why, and once the store opens every block runs for real."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    holder = LevelDBStore(tmp_path / "channel" / "score_state")  # the state store's lock, held
    runtime = _runtime(tmp_path, store, [], SCORE_RESTART_BACKOFF_MAX=0.5)
    async with running(runtime):
        assert runtime.supervisor is not None

        async def refused_for_the_lock() -> bool:
            message = runtime.info().message
            return runtime.info().status == -1 and "score_state" in message and "lock" in message

        await wait_until_async(refused_for_the_lock, 60, "the SCORE refusing its held store")
        restarts = runtime.supervisor.restarts

        async def tried_again() -> bool:
            return runtime.supervisor.restarts > restarts  # type: ignore[union-attr]

        await wait_until_async(tried_again, 60, "another try to load")
        assert store.executed() is None  # nothing recorded while the store cannot be opened
        assert runtime.supervisor.load_error is None
        holder.close()
        await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "execution of every block")
        answer = await runtime.query(json.dumps({"method": "get", "params": {"key": "k5-2"}}))
    assert json.loads(answer) == {"value": "v5"}
    for height in range(BLOCKS):
        block = store.block_by_height(height)
        assert block is not None
        codes = {store.tx_result(tx.hash)[0] for tx in block.transactions}  # type: ignore[index]
        assert codes == {0}, (height, codes)


def _hold_the_last_commit(
    runtime: ScoreRuntime, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """(held, release): the SCORE's commit of the last block waits for `release` (the real SCORE
    process behind it); `held` is set once the block's results are recorded and its commit waits."""
    assert runtime.supervisor is not None
    client = runtime.supervisor.client
    commit = client.commit_block
    held, release = asyncio.Event(), asyncio.Event()

    async def commit_the_last_when_released(height: int, block_hash: str) -> Any:
        if height == BLOCKS - 1:
            held.set()
            await release.wait()
        return await commit(height, block_hash)

    monkeypatch.setattr(client, "commit_block", commit_the_last_when_released)
    return held, release


@pytest.mark.timeout(120)
async def test_a_query_reads_the_state_of_every_block_whose_results_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer records a block's results, then the SCORE commits the block's state: a query in
    between (a client that has read its transaction's result reads what it set) waits for that
    commit. Before, it was answered from the state before the block: here the last block's
    commit is held (the real SCORE process behind it) while the query is asked."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    runtime = _runtime(tmp_path, store, [], SCORE_QUERY_TIMEOUT=60.0, SCORE_INVOKE_TIMEOUT=120.0)
    held, release = _hold_the_last_commit(runtime, monkeypatch)
    last = BLOCKS - 1
    async with running(runtime):
        async with asyncio.timeout(60):
            await held.wait()  # the last block's results are recorded, its commit not yet made
        executed = store.executed()
        assert executed is not None and executed[0] == last
        params = json.dumps({"method": "get", "params": {"key": f"k{last}-2"}})
        query = asyncio.create_task(runtime.query(params))
        await asyncio.wait({query}, timeout=2)  # before, answered by then: {"value": null}
        release.set()
        answer = await query
    assert json.loads(answer) == {"value": f"v{last}"}


def _behind_a_stuck_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: float
) -> tuple[ScoreRuntime, asyncio.Event]:
    """A runtime with SCORE_QUERY_TIMEOUT `budget` whose last block's commit never ends, and the
    event set once that commit waits."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    runtime = _runtime(tmp_path, store, [], SCORE_QUERY_TIMEOUT=budget)
    held, _ = _hold_the_last_commit(runtime, monkeypatch)
    return runtime, held


@pytest.mark.timeout(120)
async def test_a_query_behind_a_stuck_commit_is_answered_within_one_query_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that never ends: a query waits at most half of SCORE_QUERY_TIMEOUT for it, then
    is answered from the state there is, the whole within one SCORE_QUERY_TIMEOUT. Before, it
    waited the whole timeout for the state and then its own call had as long again (6 s by
    default, past the 5 s the REST proxy gives the peer: a 504 from the proxy, not the peer)."""
    budget = 2.0
    runtime, held = _behind_a_stuck_commit(tmp_path, monkeypatch, budget)
    assert runtime.supervisor is not None
    client = runtime.supervisor.client
    loop = asyncio.get_running_loop()
    asked: list[float] = []
    query = client.query_at

    async def timed_query(params_json: str) -> tuple[str, int]:
        asked.append(loop.time())
        return await query(params_json)

    monkeypatch.setattr(client, "query_at", timed_query)
    last = BLOCKS - 1
    async with running(runtime):
        async with asyncio.timeout(60):
            await held.wait()
        started = loop.time()
        answer = await runtime.query(json.dumps({"method": "get", "params": {"key": f"k{last}-2"}}))
    assert json.loads(answer) == {"value": None}  # the state before the stuck block
    assert len(asked) == 1
    waited = asked[0] - started
    assert budget / 2 - 0.05 <= waited < budget, waited  # before: the whole budget


@pytest.mark.timeout(120)
async def test_balances_not_asked_current_are_read_from_the_state_there_is_without_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Balances asked not `current` (a peer's check of what other peers relayed: a block late
    does no harm, and it is asked often) are read from the state the SCORE holds, behind a
    stuck commit too, without waiting for the commits; a SCORE answering nothing is a
    deadline error all the same."""
    runtime, held = _behind_a_stuck_commit(tmp_path, monkeypatch, 2.0)
    assert runtime.supervisor is not None
    waits: list[float] = []
    real_wait = runtime._state_caught_up

    async def counted(seconds: float) -> bool:
        waits.append(seconds)
        return await real_wait(seconds)

    monkeypatch.setattr(runtime, "_state_caught_up", counted)
    address = "hx" + "0" * 40
    async with running(runtime):
        async with asyncio.timeout(60):
            await held.wait()
        (answer,) = await runtime.balances([address], current=False)
        assert waits == [] and answer[2] == BLOCKS - 2  # the state before the stuck block
        never = asyncio.Event()

        async def no_answer(*args: Any) -> Any:
            await never.wait()

        monkeypatch.setattr(runtime.supervisor.client, "balances", no_answer)
        with pytest.raises(ScoreUnavailable, match="SCORE balance: no answer within 2 s") as info:
            await runtime.balances([address], current=False)
    assert info.value.deadline_exceeded and waits == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("what", ["query", "balance"])
async def test_a_score_that_answers_nothing_is_a_deadline_error_within_one_query_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """A stuck commit and a SCORE that answers nothing: the query (or balance) ends as a deadline
    error naming SCORE_QUERY_TIMEOUT once that has passed, state wait and call together (before:
    a balance waited as long as its call's own deadline after the state's, a hung one for good)."""
    budget = 1.0
    runtime, held = _behind_a_stuck_commit(tmp_path, monkeypatch, budget)
    assert runtime.supervisor is not None
    never = asyncio.Event()

    async def no_answer(*args: Any) -> Any:
        await never.wait()

    monkeypatch.setattr(
        runtime.supervisor.client, "query_at" if what == "query" else what, no_answer
    )
    async with running(runtime):
        async with asyncio.timeout(60):
            await held.wait()
        if what == "query":
            asking = asyncio.create_task(runtime.query(json.dumps({"method": "get"})))
        else:
            asking = asyncio.create_task(runtime.balance("hx" + "0" * 40))
        done, _ = await asyncio.wait({asking}, timeout=10 * budget)  # decides how old code fails
        assert asking in done, "no answer at all"
        with pytest.raises(ScoreUnavailable, match=f"SCORE {what}: no answer within 1 s") as info:
            asking.result()
    assert info.value.deadline_exceeded


def _executed_to(store: BlockStore, height: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        executed = store.executed()
        return executed is not None and executed[0] >= height

    return check


@pytest.mark.timeout(60)
async def test_a_final_block_gone_from_the_store_stops_execution_through_the_peer(
    tmp_path: Path,
) -> None:
    """The execution loop reads the next final block; one the store lost (damaged on disk) is
    told to the peer, which stops the channel as for a failed write, and the loop ends (before:
    the store's error ended the runtime's task group with a traceback)."""
    kv = LevelDBStore(tmp_path / "blocks")
    store = BlockStore(kv, CHANNEL)
    _fill(store, ChainBuilder())
    lost = next(key for key, _ in kv.iterate(b"B/") if key[2:10] == (3).to_bytes(8, "big"))
    kv.delete(lost, sync=True)
    store = BlockStore(kv, CHANNEL)  # nothing of block 3 kept decoded
    failures: list[Exception] = []
    runtime = _runtime(tmp_path, store, [], "no/such", on_storage_error=failures.append)
    task = asyncio.create_task(runtime.run())
    await asyncio.wait_for(task, 30)  # ends by itself
    await runtime.stop()
    assert len(failures) == 1 and "block 3 is missing" in str(failures[0]), failures
    assert store.executed() is not None and store.executed()[0] == 2  # type: ignore[index]


@pytest.mark.timeout(60)
async def test_an_unloadable_package_gives_9100_and_keeps_the_state_root(tmp_path: Path) -> None:
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    runtime = _runtime(tmp_path, store, [], "no/such")
    assert runtime.info().status == -1 and "no/such" in runtime.info().message
    async with running(runtime):
        await wait_until_async(_executed_to(store, BLOCKS - 1), 30, "9100 results for every block")
    block = store.block_by_height(3)
    assert block is not None
    code, message, height, *_ = store.tx_result(block.transactions[0].hash)  # type: ignore[misc]
    assert (code, height) == (9100, 3) and "no/such" in message
    executed = store.executed()
    assert executed is not None and executed[1] == store.roots_at(0)[0]  # type: ignore[index]


@pytest.mark.timeout(120)
async def test_a_peer_started_again_with_a_package_that_no_longer_loads_goes_on_with_9100(
    tmp_path: Path,
) -> None:
    """Blocks executed under a package that loaded; the peer is started again and its package
    no longer loads: the next blocks are recorded 9100 with the state root kept, as on a peer
    that never loaded it. Before, the start's replay asked the SCORE (not loaded) for its
    state, was refused, and tried again for good: the peer executed nothing more (and the chain
    halted where every peer was so)."""
    repository = tmp_path / "repo"
    _write_named_package(
        repository,
        "test/flip",
        "test.flip",
        "from loopchain.blockchain import ScoreBase\nclass UserScore(ScoreBase):\n    pass\n",
    )
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    chain = ChainBuilder()
    settings = {"DEFAULT_SCORE_REPOSITORY_PATH": str(repository), "SCORE_INVOKE_TIMEOUT": 2.0}

    def add(heights: range) -> None:
        for height in heights:
            block = chain.block(_kv_transactions(chain, height))
            certificate = chain.certify(block)
            chain.advance(block, certificate)
            store.save_block(block, certificate)

    add(range(3))
    async with running(_runtime(tmp_path, store, [], "test/flip", **settings)):
        await wait_until_async(_executed_to(store, 2), 60, "blocks 0-2 executed")
    executed = store.executed()
    assert executed is not None
    _write_named_package(repository, "test/flip", "test.flip", "raise RuntimeError('gone')\n")
    add(range(3, 6))
    runtime = _runtime(tmp_path, store, [], "test/flip", **settings)
    async with running(runtime):
        await wait_until_async(_executed_to(store, 5), 60, "blocks 3-5 recorded 9100")
    assert runtime.supervisor is not None and "gone" in (runtime.supervisor.load_error or "")
    block = store.block_by_height(4)
    assert block is not None
    code, message, height, *_ = store.tx_result(block.transactions[0].hash)  # type: ignore[misc]
    assert (code, height) == (9100, 4) and "gone" in message
    assert store.executed()[1] == executed[1]  # type: ignore[index]


# A package no peer can load, and what its 9100 results must say on every peer
UNLOADABLE = {
    "raises_on_import": (
        "raise RuntimeError('this package does not import')\n",
        "importing score_main.py of SCORE package 'test.broken' failed: RuntimeError: this "
        "package does not import",
    ),
    "names_its_own_file": (
        "open(__file__ + '.gone')\n",
        "No such file or directory: 'score_main.py.gone'",
    ),
    "not_found": (
        None,
        "not found in <repository>: looked for the folder <repository>/test/broken",
    ),
}


async def _unloadable_results(
    root: Path,
    blocks: list[tuple[Block, Any]],
    source: str | None,
    repository: Path | None = None,
    package_name: str = "test/broken",
    package_id: str = "test.broken",
) -> tuple[tuple[int, bytes, bytes] | None, list[Any]]:
    """(executed pointer, each transaction's result) of a peer under `root` whose package
    `package_name` (id `package_id`) in `repository` (by default `root`/repo, a relative one
    from the working folder) is `source` (none: it is missing)."""
    repository = repository or root / "repo"
    if source is not None:  # (root / an absolute path is that path)
        _write_named_package(root / repository, package_name, package_id, source)
    (root / repository).mkdir(parents=True, exist_ok=True)
    store = BlockStore(LevelDBStore(root / "blocks"), CHANNEL)
    for block, certificate in blocks:
        store.save_block(block, certificate)
    config = load_config(environ={}, overrides={"DEFAULT_SCORE_REPOSITORY_PATH": str(repository)})
    runtime = ScoreRuntime(
        config=config,
        channel=CHANNEL,
        store=store,
        package_name=package_name,
        storage_dir=root / "channel",
        port=0,
        on_executed=lambda executed: None,
    )
    async with running(runtime):
        await wait_until_async(_executed_to(store, len(blocks) - 1), 60, f"9100 under {root}")
    results = [store.tx_result(tx.hash) for block, _ in blocks for tx in block.transactions]
    return store.executed(), results


def _write_named_package(repository: Path, name: str, package_id: str, source: str) -> None:
    """Write package `name` ("<org>/<package>") with id `package_id` into `repository`."""
    folder = repository / name
    folder.mkdir(parents=True, exist_ok=True)
    info = {"id": package_id, "version": "1.0", "main": "score_main"}
    (folder / "package.json").write_text(json.dumps(info))
    (folder / "score_main.py").write_text(source)


def _unloadable_blocks() -> list[tuple[Block, Any]]:
    chain = ChainBuilder()
    blocks = []
    for height in range(2):
        block = chain.block(_kv_transactions(chain, height))
        certificate = chain.certify(block)
        chain.advance(block, certificate)
        blocks.append((block, certificate))
    return blocks


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", sorted(UNLOADABLE))
async def test_a_package_no_peer_can_load_gives_every_peer_the_same_results(
    tmp_path: Path, case: str
) -> None:
    """The 9100 results of a package that cannot be loaded name it without the peer's own
    folders (its path inside the package, the repository as "<repository>"), so peers whose
    folders differ record the same results hash (before: each recorded the absolute path of its
    own copy, and consensus stopped at the first block's results)."""
    source, wanted = UNLOADABLE[case]
    blocks = _unloadable_blocks()
    first, second = await asyncio.gather(
        _unloadable_results(tmp_path / "peer_7100", blocks, source),
        _unloadable_results(tmp_path / "peer_7200", blocks, source),
    )
    assert first == second
    _, results = first
    for result in results:
        assert result is not None
        code, message, *_ = result
        assert code == execution.SCORE_UNREACHABLE and wanted in message, message
        assert str(tmp_path) not in message, message


@pytest.mark.timeout(180)
@pytest.mark.parametrize("imports", [True, False], ids=["raises_on_import", "not_found"])
async def test_a_relative_repository_words_9100_results_like_an_absolute_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imports: bool
) -> None:
    """A peer naming its repository "score" (the default, relative to its working folder) and
    one naming its own absolutely record the same 9100 results for a package "score/code2" that
    raises "score is not configured" on import (or is missing): only absolute forms of a peer's
    folders become "<repository>", never the word "score" (before: the relative peer recorded
    'score/code2' as '<repository>/code2' and "<repository> is not configured", so the two
    peers' results hashes differed and consensus stopped)."""
    source = "raise RuntimeError('score is not configured')\n" if imports else None
    name = "score/code2"  # the package's name and id
    blocks = _unloadable_blocks()
    relative_root, absolute_root = tmp_path / "peer_7100", tmp_path / "peer_7200"
    relative_root.mkdir()
    monkeypatch.chdir(relative_root)  # where "score" is the relative peer's repository
    first, second = await asyncio.gather(
        _unloadable_results(relative_root, blocks, source, Path("score"), *[name] * 2),
        _unloadable_results(absolute_root, blocks, source, absolute_root / "score", *[name] * 2),
    )
    assert first[0] is not None and second[0] is not None
    assert first[0][2] == second[0][2], (first[1][0], second[1][0])  # the results hashes
    assert first == second
    wanted = (
        "of SCORE package 'score/code2' failed: RuntimeError: score is not configured"
        if imports
        else "SCORE package 'score/code2' not found in <repository>: looked for the folder "
        "<repository>/score/code2"
    )
    for result in first[1]:
        assert result is not None
        code, message, *_ = result
        assert code == execution.SCORE_UNREACHABLE and wanted in message, message
        assert str(tmp_path) not in message, message


async def _committed_state_and_an_older_store(tmp_path: Path) -> tuple[BlockStore, BlockStore]:
    """A SCORE state that committed blocks 0-5 with the store it executed them from, and a
    store holding the same blocks but none of their results (restored from an older copy)."""
    chain = ChainBuilder()
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, chain)
    first = _runtime(tmp_path, store, [])
    async with running(first):
        await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "execution of every block")
        assert first.supervisor is not None
        client = first.supervisor.client

        async def committed() -> bool:  # the results are recorded first, then the SCORE commits
            return (await client.status()).executed_height >= BLOCKS - 1

        await wait_until_async(committed, 60, "the SCORE's commit of the last block")
    restored = BlockStore(LevelDBStore(tmp_path / "restored"), CHANNEL)
    for height in range(BLOCKS):
        block, certificate = store.block_by_height(height), store.certificate_at(height)
        assert block is not None and certificate is not None
        restored.save_block(block, certificate)
    return store, restored


def _moved_aside(state: Path) -> list[Path]:
    return sorted(state.parent.glob(f"{state.name}.corrupt-*"))


@pytest.mark.timeout(120)
async def test_a_score_state_newer_than_the_block_store_is_made_anew_from_the_chain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The SCORE committed blocks 0-5; the block store is then restored from a copy holding the
    blocks but none of their results (backups of the two made one after the other). The SCORE
    would refuse every block the peer executes next: its state is moved aside, kept, and made
    anew from the chain, and every block executes again to the same results and roots (before:
    the channel stopped, for the operator to move the state aside by hand)."""
    store, restored = await _committed_state_and_an_older_store(tmp_path)
    failures: list[Exception] = []
    runtime = _runtime(tmp_path, restored, [], on_storage_error=failures.append)
    assert runtime.supervisor is not None
    state = runtime.supervisor.state_path
    assert _moved_aside(state) == []
    async with running(runtime):
        await wait_until_async(_executed_to(restored, BLOCKS - 1), 60, "the blocks executed again")
        client = runtime.supervisor.client

        async def committed() -> bool:
            return (await client.status()).executed_height == BLOCKS - 1

        await wait_until_async(committed, 60, "the new state's commit of the last block")
    assert failures == []
    assert restored.executed() == store.executed()
    for height in range(BLOCKS):
        assert restored.roots_at(height) == store.roots_at(height), height
    assert len(_moved_aside(state)) == 1 and not damage_marker(state).exists()
    told = caplog.text
    assert f"holds blocks through height {BLOCKS - 1}" in told, told
    assert "results only through height -1" in told and "moved aside to" in told, told


@pytest.mark.timeout(120)
async def test_a_score_state_newer_than_the_block_store_that_cannot_be_marked_stops_execution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but the mark that has the state made anew cannot be written (a full disk): the
    runtime tells the peer once (which stops the channel), naming both heights, the SCORE state
    and what to do, and executes nothing; the state is left in place."""
    _, restored = await _committed_state_and_an_older_store(tmp_path)

    def full_disk(path: Path, data: bytes, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(supervisor_module, "write_atomic", full_disk)
    failures: list[Exception] = []
    runtime = _runtime(tmp_path, restored, [], on_storage_error=failures.append)
    async with running(runtime):

        async def told_once() -> bool:
            return bool(failures)

        await wait_until_async(told_once, 60, "the store older than the SCORE state told")
    assert len(failures) == 1, failures
    told = str(failures[0])
    assert f"holds blocks through height {BLOCKS - 1}" in told, told
    assert "results only through height -1" in told and "score_state" in told, told
    assert "No space left on device" in told and "Restore both from the same backup" in told, told
    assert "free space or repair the storage" in told, told
    assert storage_advice(failures[0]) == ""  # (its words say it: not the block store's advice)
    assert restored.executed() is None
    assert runtime.supervisor is not None and _moved_aside(runtime.supervisor.state_path) == []


@pytest.mark.timeout(120)
async def test_a_score_state_still_newer_than_the_block_store_once_made_anew_stops_execution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state made anew once that is ahead again (here: the replacement did nothing) is not
    made anew again and again: the peer is told once, and the channel stops."""
    _, restored = await _committed_state_and_an_older_store(tmp_path)
    replaced: list[str] = []

    async def replace_nothing(self: object, reason: str) -> None:
        replaced.append(reason)

    monkeypatch.setattr(supervisor_module.ScoreSupervisor, "replace_state", replace_nothing)
    failures: list[Exception] = []
    runtime = _runtime(tmp_path, restored, [], on_storage_error=failures.append)
    async with running(runtime):

        async def told_once() -> bool:
            return bool(failures)

        await wait_until_async(told_once, 60, "the state ahead again told")
    assert len(replaced) == 1 and len(failures) == 1, (replaced, failures)
    told = str(failures[0])
    assert f"holds blocks through height {BLOCKS - 1}" in told, told
    assert "after it was made anew. Restore both from the same backup" in told, told
    assert storage_advice(failures[0]) == ""
    assert restored.executed() is None


# a SCORE whose state depends on its process: not deterministic
PER_PROCESS = """
import os

from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        self.db.put(b"executed by", str(os.getpid()).encode())
"""


@pytest.mark.timeout(180)
async def test_a_replay_giving_other_roots_than_recorded_stops_execution_through_the_peer(
    tmp_path: Path,
) -> None:
    """A SCORE whose state depends on its process executes blocks 0-5; its state is then lost
    and replayed, and block 0 gives other roots than recorded. The runtime tells the peer once
    (which stops the channel), naming the block, and commits nothing. Before, it logged the
    difference and committed: the peer's state, every later block's roots with it, and its
    queries' answers differed from the network's from there on."""
    repository = tmp_path / "repo"
    _write_named_package(repository, "test/pid", "test.pid", PER_PROCESS)
    settings = {"DEFAULT_SCORE_REPOSITORY_PATH": str(repository)}
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    async with running(_runtime(tmp_path, store, [], "test/pid", **settings)):
        await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "execution of every block")
    recorded = store.executed()
    shutil.rmtree(tmp_path / "channel" / "score_state")
    failures: list[Exception] = []
    runtime = _runtime(
        tmp_path, store, [], "test/pid", on_storage_error=failures.append, **settings
    )
    async with running(runtime):

        async def told() -> bool:
            return bool(failures)

        await wait_until_async(told, 60, "the replay's other roots told")
        assert runtime.supervisor is not None
        assert (await runtime.supervisor.client.status()).executed_height == -1
    assert len(failures) == 1, failures
    message = str(failures[0])
    assert "re-executing block 0 gave other roots than recorded" in message, message
    assert "cannot reproduce the state it recorded" in message, message
    assert "not deterministic" in message and "nothing was committed" in message, message
    assert store.executed() == recorded


@pytest.mark.timeout(180)
async def test_blocks_recorded_while_the_score_was_unavailable_are_executed_once_it_is(
    tmp_path: Path,
) -> None:
    """Blocks recorded 9100 while this peer's package could not be used (here: not installed
    yet), an empty one among them, are executed once the package is there, and the peer goes on;
    3a9a6df told an unavailable block by its first transaction's 9100, so the empty block, which
    has none, stopped the channel as "not deterministic" at every start."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    chain = ChainBuilder()
    for height in range(3):
        block = chain.block(_kv_transactions(chain, height) if height != 1 else [])
        qc = chain.certify(block)
        chain.advance(block, qc)
        store.save_block(block, qc)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    async with running(_runtime(tmp_path, store, [], DEFAULT_SCORE_REPOSITORY_PATH=str(nothing))):
        await wait_until_async(_executed_to(store, 2), 60, "9100 results for every block")
    failures: list[Exception] = []
    runtime = _runtime(tmp_path, store, [], on_storage_error=failures.append)
    async with running(runtime):

        async def replayed() -> bool:
            assert not failures, failures
            assert runtime.supervisor is not None
            if not runtime.supervisor.status().loaded:
                return False
            return (await runtime.supervisor.client.status()).executed_height == 2

        await wait_until_async(replayed, 60, "the blocks recorded 9100 executed")
        answer = await runtime.query(json.dumps({"method": "get", "params": {"key": "k2-0"}}))
    assert json.loads(answer) == {"value": "v2"}
    assert not failures, failures


def _runaway_runtime(tmp_path: Path, store: BlockStore) -> tuple[ScoreRuntime, list[float | None]]:
    """A runtime of the test/loop SCORE whose invoke never returns, and the deadlines of the tries
    it makes that miss theirs."""
    runtime = _runtime(
        tmp_path,
        store,
        [],
        "test/loop",
        SCORE_STEP_LIMIT=2**31 - 1,  # the loop ends by the deadline only
        SCORE_INVOKE_TIMEOUT=0.25,
        SCORE_RESTART_BACKOFF_MAX=0.5,
    )
    assert runtime.supervisor is not None
    client = runtime.supervisor.client
    deadlines: list[float | None] = []
    invoke = client.invoke_block

    async def recorded_invoke(
        block: Block, timeout: float | None = None, commit_first: Block | None = None
    ) -> InvokeResult:
        try:
            return await invoke(block, timeout, commit_first=commit_first)
        except ScoreUnavailable as exc:  # a try that missed its deadline (not a restart's gap)
            if exc.deadline_exceeded:
                deadlines.append(timeout)
            raise

    client.invoke_block = recorded_invoke  # type: ignore[method-assign]
    return runtime, deadlines


@pytest.mark.timeout(120)
async def test_a_block_past_its_deadline_is_tried_with_doubled_deadlines_before_it_is_given_up(
    tmp_path: Path,
) -> None:
    """The invoke deadline is wall-clock time, which differs ~3x between machines; a block's work
    does not (the step limit bounds it). So each try of a block gets twice the deadline of the
    one before, and only a SCORE that misses all of them (here one that never returns) is given
    up, with results 9100 worded alike on every peer (the deadlines, which each peer's
    configuration sets, are in its status and log). Given up it stays, over a restart: the block
    is not tried again (it would hold execution for good) and later blocks get 9100."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    chain = ChainBuilder()
    runaway = Transaction.create_v1(CHANNEL, {"method": "run"}, 1, chain.signers[0])
    block = chain.block([runaway])
    qc = chain.certify(block)
    store.save_block(block, qc)
    runtime, deadlines = _runaway_runtime(tmp_path, store)
    async with running(runtime):
        await wait_until_async(_executed_to(store, 0), 60, "the runaway block given up")
    assert deadlines == [0.25, 0.5, 1.0]
    code, message, *_ = store.tx_result(runaway.hash)  # type: ignore[misc]
    given_up = (
        "SCORE did not finish block 0 in 3 tries, each with twice the deadline of the one before"
    )
    assert (code, message) == (9100, given_up)
    assert runtime.info().status == -1 and "within 0.25, 0.5 and 1 s" in runtime.info().message

    chain.advance(block, qc)
    later = Transaction.create_v1(CHANNEL, {"method": "run"}, 2, chain.signers[0])
    next_block = chain.block([later])
    store.save_block(next_block, chain.certify(next_block))
    restarted, tried_again = _runaway_runtime(tmp_path, store)  # the peer started again
    assert restarted.info().status == -1 and "SCORE_INVOKE_TIMEOUT" in restarted.info().message
    async with running(restarted):
        await wait_until_async(_executed_to(store, 1), 60, "the next block executed")
    assert tried_again == []
    code, message, *_ = store.tx_result(later.hash)  # type: ignore[misc]
    assert (code, message) == (9100, given_up)


ENDS_ITS_PROCESS = """
import os

from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        if transaction.data.get("method") == "exit":
            os._exit(int(transaction.data["status"]))
        self.db.put(b"last", str(block.height).encode())
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("status", [3, 0])
async def test_a_transaction_that_ends_its_score_process_is_given_up_like_a_runaway_one(
    tmp_path: Path, status: int
) -> None:
    """A transaction whose call ends the SCORE process (os._exit here; a crash in C alike) ends
    the block's tries as a missed deadline does: after MAX_TIMEOUTS_PER_BLOCK the SCORE is given
    up, with the results every peer records for it, and execution goes on. Before, such a block
    was tried again after every restart, for good, and no later block was executed; with
    os._exit(0) it still was, as long as a stop as asked exited with 0 too."""
    repository = tmp_path / "repo"
    _write_named_package(repository, "test/exits", "test.exits", ENDS_ITS_PROCESS)
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    chain = ChainBuilder()
    exits = Transaction.create_v1(
        CHANNEL, {"method": "exit", "status": status}, 1, chain.signers[0]
    )
    for height, data in enumerate(({"method": "set"}, None, {"method": "set"})):
        tx = (
            exits
            if data is None
            else Transaction.create_v1(CHANNEL, data, 10 + height, chain.signers[0])
        )
        block = chain.block([tx])
        qc = chain.certify(block)
        chain.advance(block, qc)
        store.save_block(block, qc)
    runtime = _runtime(
        tmp_path,
        store,
        [],
        "test/exits",
        DEFAULT_SCORE_REPOSITORY_PATH=str(repository),
        SCORE_RESTART_BACKOFF_MAX=0.5,
    )
    async with running(runtime):
        await wait_until_async(_executed_to(store, 2), 120, "execution past the exiting block")
        assert runtime.supervisor is not None
        tries = runtime.supervisor.restarts
    assert tries >= MAX_TIMEOUTS_PER_BLOCK, tries
    code, message, *_ = store.tx_result(exits.hash)  # type: ignore[misc]
    assert (code, message) == (
        9100,
        "SCORE did not finish block 1 in 3 tries, each with twice the deadline of the one before",
    )
    assert "or its process ended in the try" in runtime.info().message


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        (3, True),  # os._exit(3) in a transaction
        (1, True),  # an exception nothing caught
        (-signal.SIGSEGV, True),
        (-signal.SIGABRT, True),
        (-signal.SIGALRM, False),  # a query past the query limit: the query's doing
        (-signal.SIGKILL, False),  # the OOM killer, an operator (a missed deadline counts apart)
        (-signal.SIGTERM, False),
        (STORE_FAILED_EXIT, False),  # this machine's store or package files failed
        (STOPPED_EXIT, False),  # stopped as asked (SIGTERM)
        (0, True),  # os._exit(0) in a transaction: a normal stop exits with STOPPED_EXIT
    ],
)
async def test_only_a_crash_of_its_process_counts_against_a_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, counts: bool
) -> None:
    """A try of a block whose SCORE process ended counts towards giving the SCORE up only when
    the process crashed: not when a query past the query limit ended it (any client could then
    have one peer give its SCORE up for good, by queries queued before a block's tries), nor for
    this machine's reasons. e9df88e counted every end."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    runtime = _runtime(tmp_path, store, [])
    assert runtime.supervisor is not None
    await runtime.supervisor._note_exit(4321, status)
    assert await runtime._crashed(4321) is counts
    await runtime.supervisor._note_exit(1234, 3)  # another process's end says nothing of it
    monkeypatch.setattr(score_runtime_module, "PROCESS_END_WAIT", 0.2)
    assert await runtime._crashed(4321) is False


class HeldResults(BlockStore):
    """A block store whose first results write waits (in whatever thread makes it) until the
    test lets it go, or RELEASE_CAP seconds: `writing` is set while it waits, `written` after."""

    RELEASE_CAP = 10.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.writing, self.release, self.written = (threading.Event() for _ in range(3))

    def save_results(self, *args: Any) -> None:
        if not self.written.is_set():
            self.writing.set()
            self.release.wait(self.RELEASE_CAP)
        super().save_results(*args)
        self.written.set()


async def _while_writing(store: HeldResults) -> None:
    """Wait, on the event loop, until the held results write has started."""
    async with asyncio.timeout(60):
        while not store.writing.is_set():
            await asyncio.sleep(0.01)


@pytest.mark.timeout(120)
async def test_a_blocks_results_are_written_off_the_event_loop(tmp_path: Path) -> None:
    """Recording a block's results is a synced write: its disk sync held the event loop (every
    channel of the process) for its length, 1-10 ms a block and ~100 ms at worst on a busy disk.
    It runs in a thread now: while it is held, the event loop goes on (here, this test's own
    coroutine sees the write under way and lets it go; before, the loop stood still until the
    write gave up waiting, so the test saw it only once written)."""
    store = HeldResults(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    seen: list[m.BlockExecuted] = []
    runtime = _runtime(tmp_path, store, seen)
    async with running(runtime):
        await _while_writing(store)
        assert not store.written.is_set(), "the event loop stood still during the write"
        store.release.set()
        await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "execution of every block")
    assert [event.height for event in seen] == list(range(BLOCKS))


async def _cancelled_during_the_write(tmp_path: Path, store: HeldResults) -> ScoreRuntime:
    """A runtime over `store`, cancelled while its first results write is held."""
    _fill(store, ChainBuilder())
    runtime = _runtime(tmp_path, store, [])
    task = asyncio.create_task(runtime.run())
    try:
        await _while_writing(store)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return runtime


@pytest.mark.timeout(120)
async def test_a_runtime_stopped_during_a_results_write_waits_for_it(tmp_path: Path) -> None:
    """The results write goes on in its thread when the runtime is cancelled: `stop` returns
    only after it, so the store never closes under a write."""
    store = HeldResults(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    runtime = await _cancelled_during_the_write(tmp_path, store)
    stopping = asyncio.create_task(runtime.stop())
    await asyncio.wait({stopping}, timeout=1)  # decides only how a stop that does not wait fails
    assert not stopping.done() and not store.written.is_set()
    store.release.set()
    await stopping
    assert store.written.is_set()
    executed = store.executed()
    assert executed is not None and executed[0] == 0


@pytest.mark.timeout(120)
async def test_a_results_write_failing_after_its_runtime_stopped_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The write of a cancelled runtime goes on in its thread; when it fails, `stop` says so (the
    block is executed again at the next start) instead of the failure going unheard."""

    class FailingHeld(HeldResults):
        def save_results(self, *args: Any) -> None:
            self.writing.set()
            self.release.wait(self.RELEASE_CAP)
            raise OSError("disk gone")

    store = FailingHeld(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    runtime = await _cancelled_during_the_write(tmp_path, store)
    store.release.set()
    await runtime.stop()
    told = [r.getMessage() for r in caplog.records if "results were not recorded" in r.getMessage()]
    assert told and "disk gone" in told[0], told
    assert store.executed() is None


@pytest.mark.timeout(60)
async def test_an_answer_is_taken_only_from_a_state_lacking_at_most_the_block_being_committed(
    tmp_path: Path,
) -> None:
    """A query's answer carries the height of the state it read. One block behind the recorded
    ones is the block being committed as it read, and only then; else the answer came from a
    SCORE started again and not replayed (before: any state one block behind was taken, so on a
    chain that had executed only its genesis block a SCORE that had lost its state answered
    from the empty state: `{"value": null}`, balance 0)."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    runtime = _runtime(tmp_path, store, [])
    assert runtime._least_height() == (-1, -1)  # nothing recorded yet
    for height in range(3):
        store.save_results(height, [], b"\x01" * 32, execution.results_hash([]))
        assert runtime._least_height() == (height, height)  # a state lacking it is behind
        runtime._committing = height
        assert runtime._least_height() == (height - 1, height)  # unless it is being committed
        runtime._committing = None


@pytest.mark.timeout(120)
async def test_a_replay_after_a_failed_commit_that_meets_a_lost_block_stops_through_the_peer(
    tmp_path: Path,
) -> None:
    """A commit that fails (the SCORE process died after it executed the block) replays the
    recorded blocks into the SCORE started again; one the store lost is told to the peer, which
    stops the channel, as for the execution loop's other reads (before: the replays of a failed
    commit or a refused block ran outside that handling, and the store's error ended the
    runtime's task group, which the peer took for a failure to start)."""
    kv = LevelDBStore(tmp_path / "blocks")
    store = HeldResults(kv, CHANNEL)
    _fill(store, ChainBuilder())
    failures: list[Exception] = []
    runtime = _runtime(tmp_path, store, [], on_storage_error=failures.append)
    assert runtime.supervisor is not None
    task = asyncio.create_task(runtime.run())
    try:
        await _while_writing(store)  # block 0 executed, its results being recorded
        pid = runtime.supervisor.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the SCORE dies with block 0 staged, not committed
        lost = next(key for key, _ in kv.iterate(b"B/") if key[2:10] == (0).to_bytes(8, "big"))
        kv.delete(lost, sync=True)
        store._decoded.clear()  # nothing of block 0 kept decoded
        store.release.set()

        async def told() -> bool:
            if task.done():  # the runtime ended by the store's error, not through the peer
                task.result()
            return bool(failures)

        await wait_until_async(told, 60, "the lost block told to the peer")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runtime.stop()
    assert len(failures) == 1 and "block 0 is missing" in str(failures[0]), failures


@pytest.mark.timeout(120)
async def test_final_blocks_waiting_for_execution_commit_with_the_next_blocks_invoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer catching up has final blocks waiting: each block's commit goes with the next
    block's invoke, one SCORE call a block instead of two (a wiped peer executed ~3.6 ms a
    block, a third of it the commit's call); the last one, with none after it, is committed
    alone. The state is the same: every block's keys are read back."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    runtime = _runtime(tmp_path, store, [])
    assert runtime.supervisor is not None
    client = runtime.supervisor.client
    invoke, commit = client.invoke_block, client.commit_block
    calls: list[tuple[str, int, int | None]] = []

    async def counted_invoke(block: Block, timeout: Any = None, commit_first: Any = None) -> Any:
        calls.append(("invoke", block.height, commit_first and commit_first.height))
        return await invoke(block, timeout, commit_first=commit_first)

    async def counted_commit(height: int, block_hash: str) -> Any:
        calls.append(("commit", height, None))
        return await commit(height, block_hash)

    monkeypatch.setattr(client, "invoke_block", counted_invoke)
    monkeypatch.setattr(client, "commit_block", counted_commit)
    async with running(runtime):
        await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "execution of every block")
        for height in range(BLOCKS):
            params = json.dumps({"method": "get", "params": {"key": f"k{height}-1"}})
            assert json.loads(await runtime.query(params)) == {"value": f"v{height}"}
        status = await client.status()
    expected = [("invoke", 0, None)] + [("invoke", h, h - 1) for h in range(1, BLOCKS)]
    assert calls == [*expected, ("commit", BLOCKS - 1, None)]
    assert status.executed_height == BLOCKS - 1
    recorded = store.executed()
    assert recorded is not None and status.state_root == recorded[1]


@pytest.mark.timeout(120)
async def test_a_commit_waiting_for_a_block_that_times_out_goes_alone_on_the_next_try(
    tmp_path: Path,
) -> None:
    """Block 0's commit goes with block 1's invoke; block 1 misses its deadline: the next try
    commits block 0 in a call of its own, off block 1's deadline (a slow commit must not count
    against the next block on a peer catching up alone), and block 1 is given up as on every
    peer, block 0's state committed."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    chain = ChainBuilder()
    empty = chain.block([])
    qc = chain.certify(empty)
    chain.advance(empty, qc)
    store.save_block(empty, qc)
    runaway = Transaction.create_v1(CHANNEL, {"method": "run"}, 1, chain.signers[0])
    stuck = chain.block([runaway])
    store.save_block(stuck, chain.certify(stuck))
    runtime, deadlines = _runaway_runtime(tmp_path, store)
    assert runtime.supervisor is not None
    client = runtime.supervisor.client
    commit = client.commit_block
    commits: list[int] = []

    async def counted_commit(height: int, block_hash: str) -> Any:
        commits.append(height)
        return await commit(height, block_hash)

    client.commit_block = counted_commit  # type: ignore[method-assign]

    async def committed_block_0() -> bool:
        try:  # (its process is started again after the tries that missed their deadlines)
            return (await client.status()).executed_height == 0
        except ScoreUnavailable:
            return False

    async with running(runtime):
        await wait_until_async(_executed_to(store, 1), 60, "the runaway block given up")
        await wait_until_async(committed_block_0, 60, "block 0's state committed")
    assert deadlines == [0.25, 0.5, 1.0]
    assert commits == [0]  # once, alone, on the second try
    code, *_ = store.tx_result(runaway.hash)  # type: ignore[misc]
    assert code == 9100


async def test_a_waiting_commit_the_score_cannot_take_after_a_give_up_holds_nothing(
    tmp_path: Path,
) -> None:
    """The SCORE given up with a block's commit waiting: one try, which a SCORE down may fail;
    execution goes on (9100 results) and queries are not held. Before, a failed try replayed
    until the SCORE answered, and execution stood still (review)."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    runtime = _runtime(tmp_path, store, [])
    assert runtime.supervisor is not None
    tried: list[int] = []

    async def down(height: int, block_hash: str) -> Any:
        tried.append(height)
        raise ScoreUnavailable("SCORE commit: the process is not running")

    runtime.supervisor.client.commit_block = down  # type: ignore[method-assign]
    block = store.block_by_height(0)
    assert block is not None
    runtime._uncommitted = block
    runtime._state_current.clear()
    await asyncio.wait_for(runtime._commit_waiting(), 10)
    assert tried == [0] and runtime._uncommitted is None and runtime._state_current.is_set()
    await runtime.stop()


@pytest.mark.timeout(120)
async def test_a_score_killed_while_commits_go_with_the_next_invoke_ends_at_the_recorded_roots(
    tmp_path: Path,
) -> None:
    """kill -9 of the SCORE process while final blocks wait (each block's commit going with the
    next one's invoke): the block recorded and not yet committed is replayed into the process
    started again, and every block's state is there, at the roots the peer recorded."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    _fill(store, ChainBuilder())
    seen: list[m.BlockExecuted] = []
    killed: list[int] = []
    runtime = _runtime(tmp_path, store, seen)
    assert runtime.supervisor is not None
    supervisor = runtime.supervisor

    def kill_after_block_2(event: m.BlockExecuted) -> None:
        seen.append(event)
        if event.height == 2 and supervisor.pid is not None:  # its commit waits for block 3's
            killed.append(supervisor.pid)
            os.kill(supervisor.pid, signal.SIGKILL)

    runtime.on_executed = kill_after_block_2

    async def replayed_to_the_recorded_roots() -> bool:
        recorded = store.executed()
        try:
            status = await supervisor.client.status()
        except ScoreUnavailable:
            return False
        return (
            recorded is not None
            and status.executed_height == BLOCKS - 1 == recorded[0]
            and status.state_root == recorded[1]
        )

    async with running(runtime):
        await wait_until_async(_executed_to(store, BLOCKS - 1), 60, "execution of every block")
        await wait_until_async(
            replayed_to_the_recorded_roots, 60, "the state at the recorded roots"
        )
        for height in range(BLOCKS):
            params = json.dumps({"method": "get", "params": {"key": f"k{height}-0"}})
            assert json.loads(await runtime.query(params)) == {"value": f"v{height}"}
    assert len(killed) == 1 and supervisor.pid != killed[0]
    assert [event.height for event in seen] == list(range(BLOCKS))  # each recorded once


def _carrying(chain: ChainBuilder, state_height: int, roots: tuple[bytes, bytes]) -> Block:
    """The chain's next block (not saved) that carries `roots` as the state of `state_height`."""
    height = chain.height + 1
    return Block.create(
        channel=CHANNEL,
        height=height,
        round_=0,
        prev_hash=chain.prev_hash,
        prev_qc=chain.prev_qc,
        transactions=[],
        timestamp=BASE_TIME_US + height,
        leader=chain.signers[height % len(chain.signers)],
        next_leader=chain.signers[(height + 1) % len(chain.signers)].address,
        validators_hash=chain.validators.hash,
        state_root=roots[0],
        results_hash=roots[1],
        state_height=state_height,
    )


REFUSED = "state differs from the chain's from height {}, its answers would not be the chain's: ask"


async def test_a_state_that_differs_from_the_one_the_chain_carries_is_said_once_a_while(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A final block carries the roots of an earlier height, which its validators checked: where
    this peer recorded others, its results differ from theirs. That is logged at once and then at
    most every DIVERGED_WARN_S with a count; heights either side recorded unexecuted (9100) do
    not count."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    chain = ChainBuilder()
    _fill(store, chain)
    genesis = execution.GENESIS_STATE_ROOT
    mine = {0: (b"\x01" * 32, b"\x02" * 32), 1: (b"\x03" * 32, b"\x04" * 32)}
    mine[2] = (mine[1][0], b"\x05" * 32)  # recorded unexecuted: the root of the height before
    for height, (root, results) in mine.items():
        store.save_results(height, [], root, results)
    runtime = _runtime(tmp_path, store, [], "no/such")  # no SCORE process: none is asked here
    now = [1000.0]
    monkeypatch.setattr(score_runtime_module.time, "monotonic", lambda: now[0])
    other = (b"\x09" * 32, b"\x0a" * 32)

    def said(state_height: int, roots: tuple[bytes, bytes]) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger=score_runtime_module.log.name):
            runtime._compare_with_chain(_carrying(chain, state_height, roots))
        return [record.getMessage() for record in caplog.records]

    assert said(-1, other) == []  # carries no state
    assert said(1, mine[1]) == []  # the same
    assert said(2, other) == []  # this peer recorded height 2 unexecuted
    assert said(1, (mine[0][0], b"\x0b" * 32)) == []  # the chain's 1 is unexecuted
    assert said(3, other) == []  # not executed here yet
    (first,) = said(0, (genesis[:31] + b"\x00", mine[0][1]))
    assert f"channel {CHANNEL}: the state this peer executed to at height 0 differs" in first
    assert "no/such" in first and "DEFAULT_SCORE_REPOSITORY_PATH" in first
    assert runtime.info().message.endswith(
        "; this peer's state differs from the chain's from height 0"
    )
    for asked in (runtime.query("{}"), runtime.balance("hx" + "0" * 40)):  # not the chain's
        with pytest.raises(ScoreUnavailable, match=REFUSED.format(0)):
            await asked
    # a later block that agrees lifts nothing (an empty block agrees whatever the SCORE)
    assert said(1, mine[1]) == []
    with pytest.raises(ScoreUnavailable, match=REFUSED.format(0)):
        await runtime.query("{}")
    assert said(1, other) == []  # within DIVERGED_WARN_S
    now[0] += score_runtime_module.DIVERGED_WARN_S
    assert said(1, other) == [
        f"channel {CHANNEL}: this peer's state still differs from the chain's "
        "(at 2 heights so far, the latest 1)"
    ]
    assert said(1, other) == []


async def test_a_chain_whose_validators_stopped_executing_is_not_taken_for_a_divergence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The validators gave their SCORE up at height 2 (their blocks carry the root of height 1
    from there on) while this peer executes on: heights the chain recorded unexecuted are not
    counted, the first (its root is this peer's root before it) nor the later ones (review:
    this peer's root before them had moved on, and each was logged as a divergence)."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    chain = ChainBuilder()
    roots = [(bytes([n]) * 32, bytes([n + 100]) * 32) for n in range(1, 6)]
    carried = [None, roots[0], roots[1], (roots[1][0], b"\xee" * 32)]  # by blocks 0..3: frozen
    carried += [carried[-1]] * 2
    for height, state in enumerate(carried):
        block = _carrying(chain, height - 1, state) if state else chain.block()
        qc = chain.certify(block)
        chain.advance(block, qc)
        store.save_block(block, qc)
    for height in range(5):  # this peer executed every height: 0 and 1 as the validators did
        store.save_results(height, [], *roots[height])
    runtime = _runtime(tmp_path, store, [], "no/such")
    with caplog.at_level(logging.ERROR, logger=score_runtime_module.log.name):
        caplog.clear()
        for height in range(1, 6):
            block = store.block_by_height(height)
            assert block is not None
            runtime._compare_with_chain(block)
    assert [record.getMessage() for record in caplog.records] == []
    assert "differs" not in runtime.info().message


async def test_a_peer_started_again_with_a_state_that_differs_refuses_queries_at_once(
    tmp_path: Path,
) -> None:
    """What refuses queries lived in memory: a peer whose state differs, started again, answered
    from it until a next block came (review), on an idle channel for good. It compares with the
    newest final block as it starts."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    chain = ChainBuilder()
    roots = [(bytes([n]) * 32, bytes([n + 100]) * 32) for n in range(1, 4)]
    for height, state in enumerate([None, roots[0], roots[1]]):  # each carries the one before
        block = _carrying(chain, height - 1, state) if state else chain.block()
        qc = chain.certify(block)
        chain.advance(block, qc)
        store.save_block(block, qc)
    store.save_results(0, [], *roots[0])
    store.save_results(1, [], b"\x77" * 32, roots[1][1])  # this peer's state differs from here
    store.save_results(2, [], *roots[2])  # every final block executed: no block to come
    runtime = _runtime(tmp_path, store, [], "no/such")

    async def compared() -> bool:
        return "differs" in runtime.info().message

    async with running(runtime):
        await wait_until_async(compared, 30, "the comparison with the newest block")
        with pytest.raises(ScoreUnavailable, match=REFUSED.format(1)):
            await runtime.query("{}")


@pytest.mark.timeout(120)
async def test_a_score_process_slow_to_start_is_not_told_as_a_missing_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The replay at start waits SCORE_INVOKE_TIMEOUT at a time for the process to be ready; a
    process not ready by then (here a timeout far below a start's time; a machine starting
    many) was asked its status anyway and each try warned "SCORE replay waits: ... No such file
    or directory" (review: 25 of 40 channel workers, all of which then loaded). It is said only
    past READY_TOLD_AFTER_S, as what it is."""
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    runtime = _runtime(tmp_path, store, [], SCORE_INVOKE_TIMEOUT=0.01)
    assert runtime.supervisor is not None
    with caplog.at_level(logging.WARNING):
        async with running(runtime):

            async def loaded() -> bool:
                return runtime.supervisor is not None and runtime.supervisor.status().loaded

            # (the process takes far longer than 0.01 s to start: the replay waited meanwhile)
            await wait_until_async(loaded, 60, "the SCORE loaded")
    assert "replay waits" not in caplog.text, caplog.text


@pytest.mark.timeout(120)
async def test_a_score_process_long_not_ready_for_the_replay_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past READY_TOLD_AFTER_S (here made shorter than a start) the wait is said, as what it is."""
    monkeypatch.setattr(score_runtime_module, "READY_TOLD_AFTER_S", 0.001)
    store = BlockStore(LevelDBStore(tmp_path / "blocks"), CHANNEL)
    runtime = _runtime(tmp_path, store, [], SCORE_INVOKE_TIMEOUT=0.01)
    with caplog.at_level(logging.WARNING):
        async with running(runtime):

            async def said() -> bool:
                return "SCORE replay waits: its process is not ready after" in caplog.text

            await wait_until_async(said, 60, "the wait said")
    assert "No such file" not in caplog.text, caplog.text
