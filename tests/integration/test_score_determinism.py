"""What a SCORE records for a block is alike in every SCORE process, whatever that process did
before: real SCORE processes run the same blocks, one of them started again in between, and their
results hashes are compared (results_hash is in the block every peer votes on)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from loopchain.scoreservice.client import ScoreUnavailable
from loopchain.scoreservice.supervisor import ScoreSupervisor
from loopchain.types.block import Block
from tests.integration._score_helpers import (
    READY_DEADLINE,
    Blocks,
    make_package,
    make_supervisor,
    running,
    score_config,
)
from tools.procs import wait_until_async

NAMED_OBJECTS = """
from loopchain.blockchain.score_base import ScoreBase, ScoreError


class Item:
    pass


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        op = transaction.data["op"]
        if op == "index":
            [Item()].index(Item())
        if op == "key":
            {}[Item()]
        if op == "path":
            raise ValueError(f"cannot use {__file__}")
        if op == "words":
            raise ScoreError("ratio must be 1 / 2: see https://example.com/docs, jump at 0x10")
        if op == "echo":
            raise ScoreError(f"unknown name {transaction.data['name']!r}")
        if op == "missing":
            open(transaction.data["name"])
        if op == "missing-own":
            open(__file__ + ".missing")
"""

LAZY_IMPORT = """
from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        from . import helper  # imported in a call, as SCORE code often does

        i = 0
        while i < transaction.data["n"]:
            i += 1
        return {"code": 0, "message": str(len(helper.TABLE))}
"""
HELPER = """
def square(i):
    return i * i


TABLE = []
for i in range(3000):
    TABLE.append(square(i))
"""


async def _results(supervisor: ScoreSupervisor, block: Block) -> tuple[list[Any], bytes]:
    staged = await supervisor.client.invoke_block(block)
    await supervisor.client.commit_block(block.height, block.hash.hex())
    return [(r.code, r.message) for r in staged.results], staged.results_hash


async def _restart(supervisor: ScoreSupervisor) -> None:
    """kill -9 the SCORE process, and wait for the one started again to be loaded."""
    pid = supervisor.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def back() -> bool:
        return supervisor.pid not in (None, pid) and await supervisor.wait_ready(0.1)

    await wait_until_async(back, READY_DEADLINE, "the SCORE process to be started again")


async def test_an_error_naming_an_object_or_a_path_is_recorded_alike_in_every_process(
    tmp_path: Path,
) -> None:
    """Two SCORE processes (two peers, their packages in different folders) record the same
    results for errors whose text names objects by address or the package's file, and the
    SCORE's own words as written. Before, the addresses differed between processes, so the
    results hashes differed and the chain halted."""
    chain = Blocks()
    block = chain.next({"op": "index"}, {"op": "key"}, {"op": "path"}, {"op": "words"})
    seen = []
    for peer in ("one", "two"):
        package = make_package(tmp_path / peer, "objects", NAMED_OBJECTS)
        async with running(make_supervisor(tmp_path / peer, score_config(), package)) as score:
            seen.append(await _results(score, block))
    (first, first_hash), (second, second_hash) = seen
    assert first == second and first_hash == second_hash, (first, second)
    assert "at 0x..." in first[0][1] and "at 0x..." in first[1][1], first
    assert first[2][1] == "ValueError: cannot use score_main.py", first[2]
    # the SCORE's own words stay as written (7ab676d shortened every absolute path in them)
    words = "ScoreError: ratio must be 1 / 2: see https://example.com/docs, jump at 0x10"
    assert first[3][1] == words, first[3]


async def test_a_clients_words_are_recorded_as_written_whatever_the_peers_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SCORE's message often repeats a client's input, which may name a folder of some peer:
    two SCORE processes whose temporary and home folders differ record it alike (before, each
    rewrote its own folders anywhere in the text: "/tmp/x" was "<tmp>/x" on one peer only, and
    the results hashes differed). The paths an exception states as its own fields, under the
    package, are still worded alike."""
    folders = [tmp_path / "tmp_one", tmp_path / "tmp_two"]
    packages = [make_package(tmp_path / peer, "objects", NAMED_OBJECTS) for peer in ("one", "two")]
    # ... and "/srv/pkg" in "/srv/pkg2" is no package folder
    names = [f"{folders[0]}/x", f"{folders[1]}/y", "/tmp/z", f"{packages[0].path}2"]
    block = Blocks().next(
        *({"op": "echo", "name": name} for name in names),
        {"op": "missing", "name": "/nonexistent-loopchain-test/x"},
        {"op": "missing", "name": f"{folders[0]}/y"},  # one peer's TMPDIR, a client's path
        {"op": "missing-own"},
    )
    seen = []
    for peer, folder, package in zip(("one", "two"), folders, packages, strict=True):
        folder.mkdir()
        monkeypatch.setenv("TMPDIR", str(folder))
        monkeypatch.setenv("HOME", str(folder))
        async with running(make_supervisor(tmp_path / peer, score_config(), package)) as score:
            seen.append(await _results(score, block))
    (first, first_hash), (second, second_hash) = seen
    assert first == second and first_hash == second_hash, (first, second)
    assert [message for _, message in first[: len(names)]] == [
        f"ScoreError: unknown name {name!r}" for name in names
    ]
    # the paths an exception states, by their last part (a client's, or this machine's)
    assert first[-3][1].endswith("No such file or directory: 'x'"), first[-3]
    assert first[-2][1].endswith("No such file or directory: 'y'"), first[-2]
    assert first[-1][1].endswith("No such file or directory: 'score_main.py.missing'"), first[-1]


async def test_a_module_imported_in_a_call_counts_the_same_steps_after_a_restart(
    tmp_path: Path,
) -> None:
    """A call importing a module of its package counts the same steps in a process that
    imported it before and in one started again since: the block after a kill -9 records what
    the same block records in a process that ran on. Before, the module's top level counted in
    the first call of each process only: the restarted one recorded "step limit exceeded"."""
    chain = Blocks()
    first, second = chain.next({"n": 0}), chain.next({"n": 7_000})
    config = score_config(SCORE_STEP_LIMIT=20_000)
    seen = []
    for restarted in (False, True):
        folder = tmp_path / ("restarted" if restarted else "ran_on")
        package = make_package(folder, "lazy", LAZY_IMPORT)
        (package.path / "helper.py").write_text(HELPER)
        async with running(make_supervisor(folder, config, package)) as score:
            await _results(score, first)
            if restarted:
                await _restart(score)
            seen.append(await _results(score, second))
    assert seen[0] == seen[1], seen
    assert seen[0][0] == [(0, "3000")], seen


@pytest.mark.parametrize("unreadable", ["score_main.py", "package.json"])
async def test_a_package_this_machine_cannot_read_for_a_while_is_loaded_once_it_can(
    tmp_path: Path, unreadable: str
) -> None:
    """A package whose main module this machine cannot read (a permission, an I/O error) is not
    the package's fault: the SCORE process ends and is started again until it can read it, and
    then loads and executes; no "not loaded" (9100) result is recorded meanwhile. Before, the
    SCORE stayed "not loaded" until its peer was started again, recording 9100 where the other
    peers recorded results."""
    package = make_package(tmp_path, "later", NAMED_OBJECTS)
    main = package.path / unreadable
    main.chmod(0)
    supervisor = make_supervisor(tmp_path, score_config(SCORE_RESTART_BACKOFF_MAX=0.5), package)
    async with running(supervisor, ready=False):

        async def started_again() -> bool:
            return supervisor.restarts >= 2

        await wait_until_async(started_again, READY_DEADLINE, "the SCORE process started again")
        assert supervisor.load_error is None
        assert "SCORE package unreadable" in supervisor.status().message
        main.chmod(0o644)
        assert await supervisor.wait_ready(READY_DEADLINE), supervisor.status()
        results, _ = await _results(supervisor, Blocks().next({"op": "none"}))
    assert results == [(0, "")]


IMPORTS_A_HELPER = """
from loopchain.blockchain.score_base import ScoreBase
from . import helper


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        return {"code": 0, "message": str(helper.X)}
"""

IMPORTS_IT_IN_A_CALL = """
from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        from . import helper

        return {"code": 0, "message": str(helper.X)}
"""


@pytest.mark.parametrize("when", ["load", "call"])
async def test_a_module_this_machine_cannot_read_for_a_while_is_not_the_packages_fault(
    tmp_path: Path, when: str
) -> None:
    """A module of the package other than its main one, which this machine cannot read (a
    permission, an I/O error), imported at load or in a call: the SCORE process ends and is
    started again until it can read it (no result recorded meanwhile), then executes. Before,
    the load failed for good ("not loaded", 9100) or the call recorded a 9000 result, on this
    peer only."""
    source = IMPORTS_A_HELPER if when == "load" else IMPORTS_IT_IN_A_CALL
    package = make_package(tmp_path, "helped", source)
    helper = package.path / "helper.py"
    helper.write_text("X = 7\n")
    helper.chmod(0)
    config = score_config(SCORE_RESTART_BACKOFF_MAX=0.5, SCORE_INVOKE_TIMEOUT=5.0)
    supervisor = make_supervisor(tmp_path, config, package)
    block = Blocks().next({"op": "x"})
    async with running(supervisor, ready=False):
        if when == "load":

            async def started_again() -> bool:
                return supervisor.restarts >= 2

            await wait_until_async(started_again, READY_DEADLINE, "the SCORE started again")
            assert supervisor.load_error is None
            assert "SCORE package unreadable" in supervisor.status().message
        else:
            assert await supervisor.wait_ready(READY_DEADLINE), supervisor.status()
            with pytest.raises(ScoreUnavailable):
                await supervisor.client.invoke_block(block)
            assert supervisor.load_error is None
        helper.chmod(0o644)

        async def loaded() -> bool:  # by a process started again
            return supervisor.restarts >= 1 and await supervisor.wait_ready(0.1)

        await wait_until_async(loaded, READY_DEADLINE, "the SCORE loaded again")
        results, _ = await _results(supervisor, block)
    assert results == [(0, "7")]


SLOW_TO_IMPORT = """
import time

time.sleep(2)  # a heavy import, or a cold disk, on this machine

from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        return {"code": 0, "message": "loaded"}
"""


async def test_a_package_slower_to_load_than_its_deadline_loads_with_a_longer_one(
    tmp_path: Path,
) -> None:
    """A load that runs out of time is given twice as long the next time (MAX_LOAD_DOUBLINGS).
    Before, each process started again had the same deadline: never ready, never 9100."""
    package = make_package(tmp_path, "slow", SLOW_TO_IMPORT)
    config = score_config(GRPC_TIMEOUT=1.0, SCORE_INVOKE_TIMEOUT=1.0, SCORE_RESTART_BACKOFF_MAX=0.5)
    supervisor = make_supervisor(tmp_path, config, package)
    async with running(supervisor, ready=False):
        assert await supervisor.wait_ready(READY_DEADLINE * 4), supervisor.status()
        assert supervisor.restarts >= 1  # the first load ran out of time
        results, _ = await _results(supervisor, Blocks().next({"op": "x"}))
    assert results == [(0, "loaded")]
