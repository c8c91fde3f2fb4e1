"""score/testkit's Harness against the engine: the same package, run by a real SCORE process and by
the harness, loads (or fails to), fails transactions and ends in the same state alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loopchain.blockchain.execution import SCORE_ERROR, SUCCESS
from loopchain.blockchain.score_base import ScoreError
from loopchain.scoreservice.process import CONSTRUCTOR_READS
from loopchain.scoreservice.supervisor import ScoreSupervisor
from score.testkit import Harness
from tests.integration._score_helpers import (
    Blocks,
    make_package,
    make_supervisor,
    running,
    score_config,
)
from tools.procs import wait_until_async

# Its constructor reads the state (an owner it would remember) or a block
READS_IN_CONSTRUCTOR = """
from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def __init__(self, context):
        super().__init__(context)
        if context.package_info["id"] == "test.reads_state":
            self.owner = self.get_json("owner")
        else:
            self.start = context.blocks.last_block()

    def invoke(self, transaction, block):
        return None
"""

# Writes what a transaction says, then raises when it says so
WRITES = """
from loopchain.blockchain.score_base import ScoreBase, ScoreError


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        data = transaction.data
        self.db.put(data["key"].encode("latin-1"), data["value"].encode())
        if data.get("fail"):
            raise ScoreError("refused after writing")
        return None
"""

TRANSACTIONS: list[dict[str, Any]] = [
    {"key": "a", "value": "1"},
    {"key": "b", "value": "2", "fail": True},  # raises: its write is dropped
    {"key": "\x00reserved", "value": "3"},  # a key of the engine's: refused
    {"key": "a", "value": "4"},
]


@pytest.mark.parametrize("name", ["reads_state", "reads_blocks"])
async def test_a_constructor_that_reads_fails_to_load_in_both(tmp_path: Path, name: str) -> None:
    package = make_package(tmp_path, name, READS_IN_CONSTRUCTOR)
    supervisor = make_supervisor(tmp_path, score_config(), package)
    async with running(supervisor, ready=False):
        message = await wait_until_async(
            lambda: _load_error(supervisor), 30, "the load failure to be reported"
        )
    assert message == f"loading the SCORE failed: ScoreError: {CONSTRUCTOR_READS}"
    with pytest.raises(ScoreError) as refused:
        Harness(f"test/{name}", repository=tmp_path / "score")
    assert str(refused.value) == CONSTRUCTOR_READS


async def _load_error(supervisor: ScoreSupervisor) -> str | None:
    return supervisor.load_error


async def test_failed_transactions_keep_nothing_in_both(tmp_path: Path) -> None:
    package = make_package(tmp_path, "writes", WRITES)
    chain, engine = Blocks(), []
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        for height, data in enumerate(TRANSACTIONS):
            staged = await supervisor.client.invoke_block(chain.next(data))
            await supervisor.client.commit_block(height, "")
            [result] = staged.results
            engine.append((result.code, result.message, staged.state_root))

    harness = Harness("test/writes", repository=tmp_path / "score")
    testkit = []
    for data in TRANSACTIONS:
        try:
            harness.invoke(data)
        except Exception as exc:  # the engine's result message: "Type: message"
            testkit.append((SCORE_ERROR, f"{type(exc).__name__}: {exc}", harness.state.state_root))
        else:
            testkit.append((SUCCESS, "", harness.state.state_root))
    assert testkit == engine
    assert [code for code, _, _ in engine] == [SUCCESS, SCORE_ERROR, SCORE_ERROR, SUCCESS]
    assert "reserved for the engine" in engine[2][1]
    assert harness.state.data == {b"a": b"4"}


def test_a_harness_is_seeded_with_state_and_shows_its_blocks() -> None:
    """Tests written for the testkit before it ran on the engine's state keep a way to seed
    state (`seed`; a write to `state.data` now raises instead of changing nothing, as it
    silently did after 392ab77) and to read the blocks committed (`blocks`)."""
    kv = Harness("sample/kvstore")
    kv.seed(b"kv:seeded", b'"before"')
    answer = kv.query('{"method": "get", "params": {"key": "seeded"}}')
    assert json.loads(answer) == {"value": "before"}
    with pytest.raises(TypeError):
        kv.state.data[b"kv:other"] = b'"x"'  # type: ignore[index]
    assert kv.blocks.last_block() is None
    kv.invoke({"method": "set", "params": {"key": "k", "value": "v"}})
    last = kv.blocks.last_block()
    assert last is not None and last.height == 0
