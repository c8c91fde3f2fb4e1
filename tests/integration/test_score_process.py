"""The real SCORE process run by ScoreSupervisor, with tiny SCORE packages written by each test."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from loopchain.blockchain.execution import SCORE_ERROR, SUCCESS, next_state_root, results_hash
from loopchain.protos import score_pb2 as pb
from loopchain.scoreservice import (
    ENGINE_FAILED_EXIT,
    MAX_QUERIES,
    STOPPED_EXIT,
    STORE_FAILED_EXIT,
)
from loopchain.scoreservice.client import ScoreClient, ScoreRejected, ScoreUnavailable
from loopchain.scoreservice.process import QUERY_TURN_S
from loopchain.scoreservice.supervisor import ScoreSupervisor
from loopchain.types import canonical
from loopchain.types.hashing import EMPTY_ROOT
from tests.integration._score_helpers import (
    READY_DEADLINE,
    Blocks,
    make_package,
    make_supervisor,
    running,
    score_config,
    set_op,
)
from tests.integration._storage_helpers import CHANNEL
from tools.procs import ROOT, Proc, wait_until_async


async def test_invoke_commit_and_roots_survive_a_restart(tmp_path: Path) -> None:
    package, config, chain = make_package(tmp_path), score_config(), Blocks()
    block0 = chain.next(set_op("a", "1"), set_op("b", "2"))
    block1 = chain.next({"op": "delete", "key": "a"}, {"op": "remember_blocks"})
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        client = supervisor.client
        assert supervisor.status().executed_height == -1
        assert supervisor.status().state_root == EMPTY_ROOT
        staged = await client.invoke_block(block0)
        root0 = next_state_root(EMPTY_ROOT, {b"a": b"1", b"b": b"2"})
        assert [r.code for r in staged.results] == [SUCCESS, SUCCESS]
        assert staged.height == 0 and staged.state_root == root0
        assert staged.results_hash == results_hash(staged.results)
        assert await client.query('{"key": "a"}') == "null"  # staged, not committed
        status = await client.commit_block(0, block0.hash.hex())
        assert (status.executed_height, status.state_root) == (0, root0)
        assert await client.query('{"key": "a"}') == '"1"'
        staged1 = await client.invoke_block(block1)
        await client.commit_block(1, block1.hash.hex())
        before = supervisor.status()
    blocks_record = {
        "current": [1, block1.hash.hex()],
        "last": [0, block0.hash.hex()],
        "first": block0.hash.hex(),
        "by_hash": 0,
        "missing": None,
    }
    writes1 = {b"a": None, b"blocks": canonical.encode(blocks_record)}
    assert staged1.state_root == next_state_root(root0, writes1)
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        after = supervisor.status()
        assert after.executed_height == 1
        assert (after.state_root, after.results_hash) == (before.state_root, staged1.results_hash)
        assert after.state_root == staged1.state_root
        assert await supervisor.client.query('{"key": "a"}') == "null"
        assert await supervisor.client.query('{"key": "b"}') == '"2"'
        block2 = chain.next({"op": "remember_blocks"})
        await supervisor.client.invoke_block(block2)
        await supervisor.client.commit_block(2, block2.hash.hex())
        record = json.loads(await supervisor.client.query('{"op": "json", "key": "blocks"}'))
        assert record["last"] == [1, block1.hash.hex()]  # read from the store after the restart
        assert record["first"] == block0.hash.hex() and record["by_hash"] == 1


async def test_a_raising_transaction_fails_alone(tmp_path: Path) -> None:
    package, chain = make_package(tmp_path), Blocks()
    block = chain.next(
        set_op("a", "1"),
        {"op": "set_then_fail", "key": "b"},
        {"op": "divide", "by": 0},
        {"op": "nonsense"},
        set_op("c", "3"),
    )
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        staged = await supervisor.client.invoke_block(block)
        codes = [r.code for r in staged.results]
        assert codes == [SUCCESS, SCORE_ERROR, SCORE_ERROR, 1, SUCCESS]
        assert staged.results[1].message == "ScoreError: refused after writing"
        assert staged.results[2].message == "ZeroDivisionError: integer division or modulo by zero"
        assert staged.results[3].message == "unknown op nonsense"
        assert [r.tx_hash for r in staged.results] == [tx.hash_hex for tx in block.transactions]
        assert staged.state_root == next_state_root(EMPTY_ROOT, {b"a": b"1", b"c": b"3"})
        await supervisor.client.commit_block(0, block.hash.hex())
        assert await supervisor.client.query('{"key": "b"}') == "null"
        assert await supervisor.client.query('{"key": "c"}') == '"3"'


FAULTY_EXCEPTIONS_SCORE = """
import json
from pathlib import Path
from loopchain.blockchain.score_base import ScoreBase, ScoreError

HERE = Path(__file__).parent

class ConfigMissing(OSError):
    @property
    def filename(self):  # a bug: the attribute is never set
        return self.where.path

class Code(int):
    def __hash__(self):  # SCORE code: the engine must not run it
        raise RuntimeError("hashed")

def template(name):
    try:
        return (HERE / "templates" / f"{name}.json").read_text()
    except OSError:
        raise ScoreError(f"no template {name[:10]}")

class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        op = transaction.data["op"]
        if op == "faulty":
            raise ConfigMissing("no config")
        if op == "denied":  # as this machine failing to read the package would say
            raise PermissionError(13, "denied", __file__)
        if op == "code":
            failure = OSError("odd")
            failure.errno = Code(13)
            failure.filename = __file__
            raise failure
        if op == "template":
            template(transaction.data["name"])
        self.db.put(b"last", op.encode())

    def query(self, params):
        return json.dumps(template(json.loads(params)["name"]))
"""


async def test_what_a_scores_exception_or_a_clients_input_makes_it_raise_fails_it_alone(
    tmp_path: Path,
) -> None:
    """A SCORE exception whose `filename` property raises (its str() aside, the engine reads
    only what the built-in types store), a package file read with a client's name too long
    for the file system (every peer's error alike, not this machine failing to read its
    package), a PermissionError the SCORE raises itself naming a package file this machine
    reads, and an errno of the SCORE's own type (never hashed), fail their transaction or query
    alone; the process goes on. Before, the first
    failed the whole call uncounted (the block tried for good) and the second ended the process
    as a disk failure (exit 75), from a block or any client's query (review)."""
    package, chain = make_package(tmp_path, "faulty", FAULTY_EXCEPTIONS_SCORE), Blocks()
    block = chain.next(
        {"op": "faulty"},
        {"op": "template", "name": "n" * 300},
        {"op": "denied"},
        {"op": "code"},
        {"op": "after"},
    )
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        pid = supervisor.pid
        staged = await supervisor.client.invoke_block(block)
        assert [(r.code, r.message) for r in staged.results] == [
            (SCORE_ERROR, "ConfigMissing: no config"),
            (SCORE_ERROR, "ScoreError: no template nnnnnnnnnn"),
            (SCORE_ERROR, "PermissionError: [Errno 13] denied: 'score_main.py'"),
            (SCORE_ERROR, "OSError: [Errno 13] None: 'score_main.py'"),
            (SUCCESS, ""),
        ]
        with pytest.raises(ScoreRejected, match="no template nnnnnnnnnn"):
            await supervisor.client.query(json.dumps({"name": "n" * 300}))
        await supervisor.client.commit_block(0, block.hash.hex())
        assert supervisor.pid == pid and supervisor.restarts == 0


@pytest.mark.parametrize(
    ("breakage", "status"),
    [("None", ENGINE_FAILED_EXIT), ("out_of_memory", STORE_FAILED_EXIT)],
    ids=["engine-failure", "engine-out-of-memory"],
)
async def test_a_block_whose_execution_fails_in_the_engine_ends_the_process_as_a_crash(
    tmp_path: Path, breakage: str, status: int
) -> None:
    """A failure of the engine itself while it executes a block (here a SCORE that breaks an
    engine module: no transaction's result, no store failure) ends the process with
    ENGINE_FAILED_EXIT, a crash its peer counts against the block's tries; before, the call
    failed UNKNOWN, uncounted, and the block was tried for good (review). The engine out of
    memory is this machine's state, not the block's: ended as a store failure, not counted."""
    source = (
        "from loopchain.blockchain.score_base import ScoreBase\n"
        "def out_of_memory(*args, **kwargs):\n"
        "    raise MemoryError()\n"
        "class UserScore(ScoreBase):\n"
        "    def invoke(self, transaction, block):\n"
        "        import sys\n"
        f"        sys.modules['__main__'].TxResult = {breakage}  # the engine runs as __main__\n"
    )
    package, chain = make_package(tmp_path, "breaker", source), Blocks()
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        pid = supervisor.pid
        assert pid is not None
        with pytest.raises(ScoreUnavailable):
            await supervisor.client.invoke_block(chain.next({"op": "any"}))
        assert await supervisor.exit_status(pid, READY_DEADLINE) == status


async def test_the_step_limit_stops_loops_deterministically(tmp_path: Path) -> None:
    package, config = make_package(tmp_path), score_config(SCORE_STEP_LIMIT=20_000)
    chain = Blocks()
    block = chain.next({"op": "loop"}, {"op": "stubborn_loop"}, set_op("x", "1"))
    outcomes = []
    for run in ("first", "second"):
        async with running(make_supervisor(tmp_path, config, package, state=run)) as supervisor:
            started = time.monotonic()
            outcomes.append(await supervisor.client.invoke_block(block))
            assert time.monotonic() - started < config.SCORE_INVOKE_TIMEOUT
            assert supervisor.restarts == 0
    first, second = outcomes
    assert [(r.code, r.message) for r in first.results] == [
        (SCORE_ERROR, "step limit exceeded"),
        (SCORE_ERROR, "step limit exceeded"),
        (SUCCESS, ""),
    ]
    assert first == second
    assert first.state_root == next_state_root(EMPTY_ROOT, {b"x": b"1"})


async def test_a_memory_hog_fails_or_restarts_the_process(tmp_path: Path) -> None:
    package, chain = make_package(tmp_path), Blocks()
    config = score_config(SCORE_MEMORY_LIMIT_MB=512)
    block = chain.next({"op": "hog"}, set_op("after", "1"))
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        try:
            staged = await supervisor.client.invoke_block(block)
        except ScoreUnavailable:
            assert await supervisor.wait_ready(READY_DEADLINE)
            assert supervisor.restarts >= 1
            return
        assert [(r.code, r.message) for r in staged.results] == [
            (SCORE_ERROR, "memory limit exceeded"),
            (SUCCESS, ""),
        ]
        await supervisor.client.commit_block(0, block.hash.hex())
        assert await supervisor.client.query('{"key": "after"}') == '"1"'


async def test_a_query_out_of_memory_gives_back_what_it_allocated(tmp_path: Path) -> None:
    source = (ROOT / "score" / "test" / "memory" / "memory_score.py").read_text()
    package = make_package(tmp_path, "memory", source)
    # a deadline far beyond the time to reach the memory limit, even on a slow, busy machine
    config = score_config(SCORE_QUERY_TIMEOUT=60.0, SCORE_INVOKE_TIMEOUT=120.0)
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        pid = supervisor.pid
        assert pid is not None
        before = _address_space_kb(pid)
        for _ in range(3):
            with pytest.raises(ScoreRejected, match="query failed: memory limit exceeded"):
                await supervisor.client.query('{"method": "allocate"}')
        # nothing holds the SCORE's frames (a 64 MiB chunk each) once the query has failed
        assert _address_space_kb(pid) < before + 32 * 1024
        assert await supervisor.client.query('{"echo": 1}') == '{"echo": 1}'
        assert supervisor.pid == pid


def _address_space_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmSize:")).split()[1])


async def test_kill_9_restarts_at_the_committed_state(tmp_path: Path) -> None:
    package, chain = make_package(tmp_path), Blocks()
    block0, block1 = chain.next(set_op("a", "1")), chain.next(set_op("a", "2"))
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        client = supervisor.client
        await client.invoke_block(block0)
        committed = await client.commit_block(0, block0.hash.hex())
        staged = await client.invoke_block(block1)  # staged only: lost with the process
        pid = supervisor.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_until_async(
            lambda: _reloaded(supervisor, pid), READY_DEADLINE, "the restarted SCORE"
        )
        status = await client.status()
        assert (status.executed_height, status.state_root) == (0, committed.state_root)
        assert status.results_hash == committed.results_hash
        with pytest.raises(ScoreRejected, match="nothing is staged"):
            await client.commit_block(1, block1.hash.hex())
        again = await client.invoke_block(block1)
        assert again == staged
        assert (await client.commit_block(1, block1.hash.hex())).executed_height == 1
        assert await client.query('{"key": "a"}') == '"2"'


async def _reloaded(supervisor: object, old_pid: int) -> bool:
    from loopchain.scoreservice.supervisor import ScoreSupervisor

    assert isinstance(supervisor, ScoreSupervisor)
    return supervisor.pid not in (None, old_pid) and await supervisor.wait_ready(0.05)


# Starts a process in invoke: it stays in the SCORE process's group, deaf to SIGTERM, holding the
# process's descriptors (its state store, its socket); the transaction's message is its pid.
# posix_spawn, not os.fork: a fork of this threaded process crashes in the child now and then
# (SIGSEGV before its first line, ~1 in 10 here), which would make the test flaky
FORK_SCORE = """
import os

from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        child = os.posix_spawn("/bin/sh", ["sh", "-c", "trap '' TERM; exec sleep 600"], {})
        return {"code": 0, "message": str(child)}
"""


def _process_start(pid: int) -> str | None:
    """The start time of the live (not zombie) process `pid`, or None when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


async def test_what_a_score_started_ends_with_its_kill_restart_and_stop(tmp_path: Path) -> None:
    package, block = make_package(tmp_path, "fork", FORK_SCORE), Blocks().next({"op": "fork"})
    forked: dict[int, str] = {}

    async def fork(supervisor: ScoreSupervisor) -> int:
        staged = await supervisor.client.invoke_block(block)  # staged only: invoked again later
        assert [r.code for r in staged.results] == [SUCCESS], staged.results
        child = int(staged.results[0].message)
        start = _process_start(child)
        assert start is not None and child != supervisor.pid
        forked[child] = start
        return child

    async def ended(child: int) -> None:
        async def gone() -> bool:
            return _process_start(child) != forked[child]

        await wait_until_async(gone, READY_DEADLINE, f"the SCORE's child {child} to end")

    try:
        async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
            # 1. killed (as when an invoke misses its deadline)
            pid, child = supervisor.pid, await fork(supervisor)
            assert pid is not None
            supervisor.kill()
            await ended(child)
            await wait_until_async(lambda: _reloaded(supervisor, pid), READY_DEADLINE, "a restart")
            # 2. the SCORE process dies (killed from outside) and is started again
            pid, child = supervisor.pid, await fork(supervisor)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await wait_until_async(lambda: _reloaded(supervisor, pid), READY_DEADLINE, "a restart")
            await ended(child)
            # 3. stopped with the peer
            child = await fork(supervisor)
        await ended(child)
    finally:
        for child, start in forked.items():
            if _process_start(child) == start:
                os.kill(child, signal.SIGKILL)


async def test_an_invoke_past_its_deadline_kills_and_restarts_the_process(tmp_path: Path) -> None:
    package, chain = make_package(tmp_path), Blocks()
    config = score_config(SCORE_INVOKE_TIMEOUT=1.0)
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        pid = supervisor.pid
        assert pid is not None
        stuck = chain.next(
            {"op": "sleep", "seconds": 60}
        )  # no Python lines run: only the deadline helps
        started = time.monotonic()
        with pytest.raises(ScoreUnavailable, match="deadline"):
            await supervisor.client.invoke_block(stuck)
        assert time.monotonic() - started < 5
        await wait_until_async(lambda: _reloaded(supervisor, pid), READY_DEADLINE, "a restart")
        assert supervisor.status().executed_height == -1


async def test_a_query_stuck_in_c_work_ends_its_process_before_a_block_meets_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One line of C work runs no steps and holds the GIL: the block behind such a query met its
    deadline, which counts towards giving the SCORE up on this peer alone (any client could
    have one peer record 9100 where the others execute). The process ends at the query limit
    instead, and the block is executed once it is started again."""
    package, chain = make_package(tmp_path), Blocks()
    config = score_config(SCORE_QUERY_TIMEOUT=1.0, SCORE_INVOKE_TIMEOUT=8.0)
    block = chain.next(set_op("k", "v"))
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        pid = supervisor.pid
        assert pid is not None
        stuck = asyncio.create_task(
            supervisor.client.query('{"op": "grind", "n": 1000000000000000}')
        )
        marker = tmp_path / "state_cwd" / "grinding"

        async def grinding() -> bool:
            return marker.exists()

        await wait_until_async(grinding, READY_DEADLINE, "the query to start its C work")
        with pytest.raises(ScoreUnavailable) as raised:
            await supervisor.client.invoke_block(block)
        assert not raised.value.deadline_exceeded, raised.value
        with pytest.raises(ScoreUnavailable):
            await stuck
        await wait_until_async(lambda: _reloaded(supervisor, pid), READY_DEADLINE, "a restart")
        staged = await supervisor.client.invoke_block(block)
        assert [r.code for r in staged.results] == [SUCCESS]
    said = [(r.name, r.getMessage()) for r in caplog.records]
    # its stacks, logged a line a record and labelled, then why it ended (before: its stderr)
    dumped = said.index((OUTPUT, "Current thread 0x" + _thread_id(said) + _MOST_RECENT))
    ended = next(n for n, (_, m) in enumerate(said) if "a query call ran past 1 s" in m)
    assert dumped < ended
    assert any(m.strip().startswith('File "') and "in query" in m for n, m in said if n == OUTPUT)


OUTPUT = f"[score:{CHANNEL}] output"
_MOST_RECENT = " (most recent call first):"


def _thread_id(said: list[tuple[str, str]]) -> str:
    """The id of the thread a stack dump (faulthandler's) says was current."""
    for name, message in said:
        if name == OUTPUT and message.startswith("Current thread 0x"):
            return message.removeprefix("Current thread 0x").removesuffix(_MOST_RECENT)
    raise AssertionError(f"no stack dump among {len(said)} records")


LOGGING_SCORE = """
from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def __init__(self, context):
        super().__init__(context)
        self.log.info("quiet start")
        self.log.warning("loud start %s", "\\nforged")
        print("printed start", flush=True)

    def invoke(self, transaction, block):
        return None

    def query(self, params):
        return "null"
"""


@pytest.mark.parametrize("level", ["WARNING", "INFO"])
async def test_a_scores_records_are_logged_by_its_peer_at_its_level_named_by_channel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, level: str
) -> None:
    """The SCORE process logged to its stderr alone, at INFO whatever the peer's level (-d
    aside), in UTC, without its channel: its lines were in no LOG_FILE_PATH and could not be told
    apart. Now its supervisor logs them as its own records, and it logs from the level its
    supervisor logs at (the root logger's: -d's DEBUG or LOOPCHAIN_LOG_LEVEL; here pytest's)."""
    caplog.set_level(level)
    package = make_package(tmp_path, "loud", LOGGING_SCORE)
    config = score_config(LOOPCHAIN_LOG_LEVEL="ERROR")  # not what it is told: -d may be given
    before = time.time()
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        assert supervisor.pid is not None
        told = Path(f"/proc/{supervisor.pid}/cmdline").read_bytes().split(b"\0")
        assert told[told.index(b"--log-level") + 1] == level.encode()
    said = {(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.created >= before}
    assert (
        f"[score:{CHANNEL}] loopchain.score.test.loud",
        "WARNING",
        "loud start \\nforged",
    ) in said
    assert (OUTPUT, "WARNING", "printed start") in said
    quiet = (f"[score:{CHANNEL}] loopchain.score.test.loud", "INFO", "quiet start")
    assert (quiet in said) is (level == "INFO")
    serving = [n for n, _, m in said if "serving on unix" in m]
    assert serving == ([f"[score:{CHANNEL}] loopchain.score"] if level == "INFO" else [])


async def test_queries_are_answered_read_only_within_their_deadline(tmp_path: Path) -> None:
    package, chain = make_package(tmp_path), Blocks()
    config = score_config(SCORE_STEP_LIMIT=50_000, SCORE_QUERY_TIMEOUT=2.0)
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        client = supervisor.client
        block = chain.next(set_op("k", "v1"))
        await client.invoke_block(block)
        await client.commit_block(0, block.hash.hex())
        started = time.monotonic()
        assert await client.query('{"key": "k"}') == '"v1"'
        assert await client.query('{"key": "unknown"}') == "null"
        with pytest.raises(ScoreRejected, match="ScoreError: no such question"):
            await client.query('{"op": "raise"}')
        with pytest.raises(ScoreRejected, match="read-only"):
            await client.query('{"op": "write", "key": "k"}')
        with pytest.raises(ScoreRejected, match="step limit exceeded"):
            await client.query('{"op": "loop"}')
        with pytest.raises(ScoreRejected, match="JSONDecodeError"):
            await client.query("not json")
        assert time.monotonic() - started < config.SCORE_QUERY_TIMEOUT * 3
        assert await client.query('{"key": "k"}') == '"v1"'


async def test_concurrent_queries_share_calls_and_each_hears_its_own_answer(
    tmp_path: Path,
) -> None:
    """Queries asked while one is in flight go together in the next calls; a query that fails
    fails alone."""
    package, chain = make_package(tmp_path), Blocks()
    config = score_config(
        SCORE_STEP_LIMIT=50_000, SCORE_QUERY_TIMEOUT=60.0, SCORE_INVOKE_TIMEOUT=120.0
    )
    expected: dict[str, str | tuple[type[Exception], str]] = {
        '{"key": "k"}': '"v1"',
        '{"key": "unknown"}': "null",
        '{"op": "raise"}': (ScoreRejected, "ScoreError: no such question"),
        '{"op": "write", "key": "k"}': (ScoreRejected, "read-only"),
        "not json": (ScoreRejected, "JSONDecodeError"),
    }  # all quick: a call's turn (QUERY_TURN_S) answers many of them on a slow machine too
    asked = list(expected) * 30
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        client = supervisor.client
        block = chain.next(set_op("k", "v1"))
        await client.invoke_block(block)
        await client.commit_block(0, block.hash.hex())
        calls = client.query_calls
        answers = await asyncio.gather(*(client.query(q) for q in asked), return_exceptions=True)
        # at most MAX_QUERIES a call, and as many as a call's turn answers (QUERY_TURN_S)
        made = client.query_calls - calls
        assert 1 + math.ceil((len(asked) - 1) / MAX_QUERIES) <= made < len(asked) // 4
        for query, answer in zip(asked, answers, strict=True):
            wanted = expected[query]
            if isinstance(wanted, str):
                assert answer == wanted, (query, answer)
            else:
                assert isinstance(answer, wanted[0]) and wanted[1] in str(answer), (query, answer)
        assert await client.query('{"key": "k"}') == '"v1"'  # the state was not written


async def test_answers_that_would_pass_the_message_limit_go_in_later_calls(
    tmp_path: Path,
) -> None:
    """A reply holds the answers that fit in a message; the queries past them are asked again,
    and an answer larger than a message is refused alone."""
    limit = 256 * 1024
    package = make_package(tmp_path)
    config = score_config(
        GRPC_MAX_MESSAGE_BYTES=limit, SCORE_QUERY_TIMEOUT=60.0, SCORE_INVOKE_TIMEOUT=120.0
    )
    sizes = [100_000] * 3 + [2 * limit] + [100_000] * 3 + [10]
    async with running(make_supervisor(tmp_path, config, package)) as supervisor:
        client = supervisor.client
        calls = client.query_calls
        answers = await asyncio.gather(
            *(client.query(json.dumps({"op": "repeat", "size": n})) for n in sizes),
            return_exceptions=True,
        )
        for size, answer in zip(sizes, answers, strict=True):
            if size > limit:
                assert isinstance(answer, ScoreRejected), answer
                assert "larger than a reply may be" in str(answer), answer
            else:
                assert answer == json.dumps("x" * size), (size, str(answer)[:200])
        # the first alone, then at most two answers of 100 KB a reply
        assert client.query_calls - calls >= 4
        too_many = pb.ScoreQueryRequest(queries=['{"key": "k"}'] * (MAX_QUERIES + 1))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client._stub.Query(too_many, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"limit {MAX_QUERIES}" in (refused.value.details() or "")


async def test_a_call_of_slow_queries_answers_one_turn_of_them_and_the_rest_are_asked_again(
    tmp_path: Path,
) -> None:
    """Queries that take longer than a call's turn (QUERY_TURN_S) are answered one a call, so
    that the SCORE's one runner, which executes blocks too, is never held by a batch for longer
    than by one query; the quick ones asked with them still share calls."""
    package = make_package(tmp_path)
    nap = json.dumps({"op": "nap", "seconds": max(4 * QUERY_TURN_S, 0.2)})
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        client = supervisor.client
        calls = client.query_calls
        answers = await asyncio.gather(*(client.query(nap) for _ in range(4)))
        assert answers == ["null"] * 4
        assert client.query_calls - calls == 4  # before: 2 (the first alone, three together)
        calls = client.query_calls
        quick = await asyncio.gather(*(client.query('{"key": "k"}') for _ in range(20)))
        assert quick == ["null"] * 20 and client.query_calls - calls < 10


async def test_an_answer_that_is_not_valid_text_is_refused_alone(tmp_path: Path) -> None:
    """A SCORE answer protobuf cannot carry (a lone surrogate) is refused as that query's own
    failure; the queries sharing its call are answered."""
    package = make_package(tmp_path)
    texts = ["A", "B", "\ud800", "C", "D"]
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        client = supervisor.client
        answers = await asyncio.gather(
            *(client.query(json.dumps({"op": "echo", "text": t})) for t in texts),
            return_exceptions=True,
        )
        assert answers[:2] == ["A", "B"] and answers[3:] == ["C", "D"], answers
        refused = answers[2]
        assert isinstance(refused, ScoreRejected), refused
        assert "not valid UTF-8" in str(refused), refused


async def test_a_package_that_did_not_resolve_starts_no_process(tmp_path: Path) -> None:
    supervisor = make_supervisor(tmp_path, score_config(), None, "SCORE package 'x/y' not found")
    async with running(supervisor, ready=False):
        assert not await supervisor.wait_ready(0.5)
        status = supervisor.status()
        assert (status.status, status.message) == (-1, "SCORE package 'x/y' not found")
        assert supervisor.pid is None
        with pytest.raises(ScoreUnavailable):
            await supervisor.client.status()


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("x = 1 // 0\n", "ZeroDivisionError: integer division or modulo by zero"),
        ("class Other:\n    pass\n", "no UserScore class"),
        (
            "from loopchain.blockchain.score_base import ScoreBase\n"
            "class UserScore(ScoreBase):\n"
            "    def __init__(self, context):\n"
            "        while True:\n"
            "            pass\n",
            "step limit exceeded",
        ),
        (
            "from loopchain.blockchain.score_base import ScoreBase\n"
            "class UserScore(ScoreBase):\n"
            "    def __init__(self, context):\n"
            "        super().__init__(context)\n"
            "        self.db.put(b'k', b'v')\n",
            "constructor cannot read state or blocks",
        ),
        # what a constructor could read depends on the height this peer's SCORE process starts
        # at: refused at every height, so that loading succeeds or fails alike on every peer
        (
            "from loopchain.blockchain.score_base import ScoreBase\n"
            "class UserScore(ScoreBase):\n"
            "    def __init__(self, context):\n"
            "        super().__init__(context)\n"
            "        self.total = self.get_json('total', 0)\n",
            "constructor cannot read state or blocks",
        ),
        (
            "from loopchain.blockchain.score_base import ScoreBase\n"
            "class UserScore(ScoreBase):\n"
            "    def __init__(self, context):\n"
            "        super().__init__(context)\n"
            "        self.start = context.blocks.last_block()\n",
            "constructor cannot read state or blocks",
        ),
        # its exception's str() fails (SCORE code): described without it, the process not
        # loaded again and again for good (review)
        (
            "from loopchain.blockchain.score_base import ScoreBase\n"
            "class SettingsError(Exception):\n"
            "    def __str__(self):\n"
            "        return f'bad setting {self.setting}'\n"
            "class UserScore(ScoreBase):\n"
            "    def __init__(self, context):\n"
            "        super().__init__(context)\n"
            "        raise SettingsError()\n",
            "SettingsError: (message unavailable)",
        ),
    ],
)
async def test_a_bad_package_reports_status_minus_one(
    tmp_path: Path, source: str, reason: str
) -> None:
    package, chain = make_package(tmp_path, "bad", source), Blocks()
    config = score_config(SCORE_STEP_LIMIT=10_000)
    async with running(make_supervisor(tmp_path, config, package), ready=False) as supervisor:
        status = await wait_until_async(
            lambda: _failed_status(supervisor), READY_DEADLINE, "the load failure"
        )
        assert reason in status.message and status.message.startswith("loading the SCORE failed")
        pid = supervisor.pid
        assert pid is not None  # the process keeps serving Status
        answered = await supervisor.client.status()
        assert answered.status == -1 and reason in answered.message
        with pytest.raises(ScoreUnavailable, match="SCORE not loaded"):
            await supervisor.client.invoke_block(chain.next())
        assert supervisor.pid == pid and supervisor.restarts == 0
        assert supervisor.load_error == status.message


async def _failed_status(supervisor: object) -> object:
    from loopchain.scoreservice.supervisor import ScoreSupervisor

    assert isinstance(supervisor, ScoreSupervisor)
    status = supervisor.status()
    return status if status.message.startswith("loading the SCORE failed") else None


async def test_requests_that_do_not_fit_are_rejected(tmp_path: Path) -> None:
    package, chain = make_package(tmp_path), Blocks()
    block0 = chain.next(set_op("a", "1"))
    block1 = chain.next(set_op("a", "2"))
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        client = supervisor.client
        with pytest.raises(ScoreRejected, match="block height 1 is not the next height 0"):
            await client.invoke_block(block1)
        other = Blocks()
        other.builder.channel = "other_channel"
        with pytest.raises(ScoreRejected, match="this SCORE serves"):
            await client.invoke_block(other.next())
        await client.invoke_block(block0)
        with pytest.raises(ScoreRejected, match="is staged"):
            await client.commit_block(0, "ab" * 32)
        await client.rollback_block(0)
        with pytest.raises(ScoreRejected, match="nothing is staged"):
            await client.commit_block(0, block0.hash.hex())
        staged = await client.invoke_block(block0)
        first = await client.commit_block(0, block0.hash.hex())
        again = await client.commit_block(0, block0.hash.hex())  # a retried commit is answered
        assert first == again and first.state_root == staged.state_root
        with pytest.raises(ScoreRejected, match="block height 0 is not the next height 1"):
            await client.invoke_block(block0)


async def test_the_score_hashes_a_block_sent_without_hashes_and_refuses_a_wrong_count(
    tmp_path: Path,
) -> None:
    """A peer sends its transactions' hashes with the block; one that sends none (an older peer)
    is answered all the same, and a count that does not match is a malformed block."""
    package, chain = make_package(tmp_path), Blocks()
    block0 = chain.next(set_op("a", "1"), set_op("b", "2"))
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        stub = supervisor.client._stub  # the raw call, as a peer of either kind makes it
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.InvokeBlock(
                pb.InvokeRequest(block=block0.encode(), tx_hashes=bytes(32)), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "1 transaction hashes for 2 transactions" in (refused.value.details() or "")
        reply = await stub.InvokeBlock(pb.InvokeRequest(block=block0.encode()), timeout=10)
        assert [r.tx_hash for r in reply.results] == [tx.hash_hex for tx in block0.transactions]
        assert [r.code for r in reply.results] == [SUCCESS, SUCCESS]


async def test_the_client_reports_a_missing_process_as_unavailable(tmp_path: Path) -> None:
    client = ScoreClient(tmp_path / "nobody.sock", score_config(GRPC_TIMEOUT=1.0))
    try:
        with pytest.raises(ScoreUnavailable):
            await client.status()
        with pytest.raises(ScoreUnavailable):
            await client.invoke_block(Blocks().next())
    finally:
        await client.close()


async def test_sigterm_exits_with_the_status_of_a_stop_as_asked(tmp_path: Path) -> None:
    """SIGTERM ends the process with STOPPED_EXIT, not 0: a SCORE calling os._exit(0) in a
    transaction ends it with 0, and that end counts against the block's tries."""
    socket_path = tmp_path / "direct.sock"
    args = ["-m", "loopchain.scoreservice.process", "--socket", str(socket_path)]
    process = Proc("score_process", args, tmp_path).start()
    client = ScoreClient(socket_path, score_config(GRPC_TIMEOUT=1.0))
    try:
        status = await wait_until_async(_answered(client), READY_DEADLINE, "the SCORE process")
        assert status.status == -1 and status.message == "waiting for Load"
        with pytest.raises(ScoreUnavailable, match="SCORE not loaded: waiting for Load"):
            await client.query("{}")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == STOPPED_EXIT
        process.assert_clean_log()
        assert not socket_path.exists()
    finally:
        await client.close()
        if process.alive:
            process.kill9()


def _answered(client: ScoreClient):  # type: ignore[no-untyped-def]
    async def attempt() -> object:
        try:
            return await client.status()
        except ScoreUnavailable:
            return None

    return attempt
