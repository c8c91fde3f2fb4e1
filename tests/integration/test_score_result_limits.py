"""A SCORE's misbehaviour in one transaction becomes that transaction's failure result on every
peer alike, never a block the SCORE cannot execute (retried for good: the chain stops) nor results
that differ by peer: real SCORE processes run by two peer runtimes (other folders, other
GRPC_MAX_MESSAGE_BYTES) over real LevelDB block stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loopchain.blockchain.block_store import BlockStore
from loopchain.blockchain.execution import (
    BLOCK_RESULTS_FULL,
    MAX_BLOCK_RESULTS_BYTES,
    MAX_RESULT_CODE,
    MIN_RESULT_CODE,
    SCORE_ERROR,
    SUCCESS,
)
from loopchain.configure import load_config
from loopchain.peer.score_runtime import ScoreRuntime
from loopchain.scoreservice.state import MAX_BLOCK_WRITE_BYTES, MAX_TX_WRITE_BYTES
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from tests.integration._score_helpers import write_package
from tests.integration._storage_helpers import CHANNEL, ChainBuilder
from tools.procs import wait_until_async

EXECUTION_DEADLINE = 90.0  # three small blocks and one of up to 64 MiB of writes, on a slow machine
MIB = 1024 * 1024

# Every op writes its own key first: a transaction that fails leaves no write behind.
SOURCE = r"""
import json

from loopchain.blockchain.score_base import ScoreBase, ScoreError


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        data = transaction.data
        op = data["op"]
        self.db.put(data["key"].encode(), op.encode())
        if op == "set":
            return None
        if op == "code_past_int32":
            return {"code": 2**31, "message": ""}
        if op == "code_below_int32":
            return {"code": -2**31 - 1, "message": ""}
        if op == "negative_code":
            return {"code": -1, "message": ""}
        if op == "lowest_code":
            return {"code": -2**31, "message": "the lowest"}
        if op == "surrogate_message":
            return {"code": 1, "message": "bad \ud800"}
        if op == "surrogate_raise":
            raise ScoreError("unknown \ud800 op")
        if op == "surrogate_event":
            self.emit_event("Seen(str)", ["\ud800"])
            return None
        if op == "big_events":  # control characters: six bytes each in JSON
            value = "\x01" * 4000
            for _ in range(64):
                self.emit_event("Big(str)", [], [value])
            return None
        if op == "shared_writes":  # one value, put at many keys
            value = b"x" * (1024 * 1024)
            for index in range(600):
                self.db.put(b"shared-%d" % index, value)
            return None
        if op == "fill_writes":
            value = b"y" * (1024 * 1024)
            for index in range(7):
                self.db.put(("%s-%d" % (data["key"], index)).encode(), value)
            return None
        raise ScoreError("unknown op " + op)

    def query(self, params):
        value = self.db.get(json.loads(params)["key"].encode())
        return json.dumps(None if value is None else value.decode())
"""


@dataclass(frozen=True)
class Expected:
    """What a transaction's result holds: its code, a part of its message, and whether its
    writes are kept."""

    code: int
    message: str = ""
    kept: bool = False


OK = Expected(SUCCESS, kept=True)
CODE_RANGE = f"a result code is {MIN_RESULT_CODE} to {MAX_RESULT_CODE}"
# op -> how many of them block 1 holds (between two good ones) and what each must record
CASES: dict[str, tuple[int, list[Expected]]] = {
    "code_past_int32": (1, [Expected(SCORE_ERROR, f"invoke returned code {2**31}; {CODE_RANGE}")]),
    "code_below_int32": (
        1,
        [Expected(SCORE_ERROR, f"invoke returned code {-(2**31) - 1}; {CODE_RANGE}")],
    ),
    # a v1 code within int32 is recorded as returned, its writes kept, as every version did
    "negative_code": (1, [Expected(-1, "", kept=True)]),
    "lowest_code": (1, [Expected(-(2**31), "the lowest", kept=True)]),
    "surrogate_message": (
        1,
        [Expected(SCORE_ERROR, "ValueError: invoke returned a message that is not valid Unicode")],
    ),
    "surrogate_raise": (1, [Expected(SCORE_ERROR, "ScoreError: unknown \\ud800 op")]),
    "surrogate_event": (
        1,
        [
            Expected(
                SCORE_ERROR, "event values must be valid Unicode text (a lone surrogate is not)"
            )
        ],
    ),
    # ~1.5 MB of results each: ten fit in the block's MAX_BLOCK_RESULTS_BYTES, the rest fail (and
    # the reply of twelve would not fit in a 4 MiB message)
    "big_events": (12, [OK] * 10 + [Expected(SCORE_ERROR, BLOCK_RESULTS_FULL)] * 2),
    "shared_writes": (
        1,
        [Expected(SCORE_ERROR, f"a transaction may write at most {MAX_TX_WRITE_BYTES} bytes")],
    ),
    # 7 MiB each: nine fit in the block's MAX_BLOCK_WRITE_BYTES, the tenth does not
    "fill_writes": (
        10,
        [OK] * 9 + [Expected(SCORE_ERROR, "block write limit: this transaction's writes would")],
    ),
}


def _tx(chain: ChainBuilder, data: dict[str, Any], number: int) -> Transaction:
    return Transaction.create_v1(CHANNEL, data, 1_000_000 + number, chain.signers[0])


def _blocks(op: str, count: int) -> list[tuple[Block, Any]]:
    """Blocks 0 and 2 of a good transaction; block 1 of `count` of `op` between two good ones;
    each with its certificate."""
    chain = ChainBuilder()
    good = [{"op": "set", "key": f"good-{n}"} for n in range(4)]
    bad = [{"op": op, "key": f"bad-{n}"} for n in range(count)]
    blocks = []
    for number, datas in enumerate([[good[0]], [good[1], *bad, good[2]], [good[3]]]):
        block = chain.block([_tx(chain, data, 100 * number + i) for i, data in enumerate(datas)])
        certificate = chain.certify(block)
        chain.advance(block, certificate)
        blocks.append((block, certificate))
    return blocks


def _store(root: Path, blocks: list[tuple[Block, Any]]) -> BlockStore:
    store = BlockStore(LevelDBStore(root / "blocks"), CHANNEL)
    for block, certificate in blocks:
        store.save_block(block, certificate)
    return store


def _runtime(root: Path, store: BlockStore, **settings: object) -> ScoreRuntime:
    write_package(root / "repo", "limits", SOURCE)
    config = load_config(
        environ={}, overrides={"DEFAULT_SCORE_REPOSITORY_PATH": str(root / "repo"), **settings}
    )
    return ScoreRuntime(
        config=config,
        channel=CHANNEL,
        store=store,
        package_name="test/limits",
        storage_dir=root / "channel",
        port=0,
        on_executed=lambda executed: None,
    )


@contextlib.asynccontextmanager
async def running(runtime: ScoreRuntime) -> AsyncIterator[None]:
    task = asyncio.create_task(runtime.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runtime.stop()


@dataclass(frozen=True)
class Outcome:
    executed: tuple[int, bytes, bytes]
    results: list[tuple[int, str]]  # (code, message) of each transaction of the three blocks
    bad_values: list[str | None]  # what each bad transaction's key holds after block 2


async def _execute(
    root: Path, blocks: list[tuple[Block, Any]], count: int, **settings: object
) -> Outcome:
    store = _store(root, blocks)
    runtime = _runtime(root, store, **settings)

    async def done() -> bool:
        executed = store.executed()
        return executed is not None and executed[0] == 2

    async with running(runtime):
        await wait_until_async(done, EXECUTION_DEADLINE, f"blocks 0 to 2 executed under {root}")
        values = [
            json.loads(await runtime.query(json.dumps({"key": f"bad-{n}"}))) for n in range(count)
        ]
    results = []
    for block, _ in blocks:
        for tx in block.transactions:
            result = store.tx_result(tx.hash)
            assert result is not None
            results.append((result[0], result[1]))
    executed = store.executed()
    assert executed is not None
    return Outcome(executed, results, values)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", sorted(CASES))
async def test_a_misbehaving_transaction_fails_alone_and_alike_on_every_peer(
    tmp_path: Path, op: str
) -> None:
    """Block 1 holds good transactions around the bad ones: each bad one records its precise
    failure (its writes discarded; a v1 code within int32, negative too, is recorded as returned
    with its writes kept, as every version did), the good ones succeed, block 2 executes, and
    two peers with other folders and message limits record the same results and roots (before:
    the SCORE raised building the reply or the results hash, or the reply passed the message
    limit, or the state root ran out of memory, and the block was tried again every 0.5 s for
    good; and a negative code failed its transaction with 9000, its writes dropped, where peers
    of the version before recorded the code and kept the writes)."""
    count, expected = CASES[op]
    blocks = _blocks(op, count)
    small, large = await asyncio.gather(
        _execute(tmp_path / "peer_7100", blocks, count, GRPC_MAX_MESSAGE_BYTES=4 * MIB),
        _execute(tmp_path / "peer_7200", blocks, count),
    )
    assert small == large
    results = small.results
    good = [results[0], results[1], results[-2], results[-1]]
    assert good == [(SUCCESS, "")] * 4, good
    for index, (want, (code, message), value) in enumerate(
        zip(expected, results[2:-2], small.bad_values, strict=True)
    ):
        assert code == want.code and want.message in message, (index, code, message)
        assert value == (op if want.kept else None), (index, value)


def test_the_cases_pass_the_bounds_they_are_named_for() -> None:
    """The big cases are sized against the bounds: ten of ~1.5 MB events fit in a block's
    results and twelve do not; nine of 7 MiB writes fit in a block's writes and ten do not."""
    event_bytes = 64 * (4000 * 6 + len('{"data":[""],"indexed":["Big(str)"]},'))
    assert 10 * event_bytes < MAX_BLOCK_RESULTS_BYTES < 11 * event_bytes
    assert 9 * 7 * MIB < MAX_BLOCK_WRITE_BYTES < 10 * 7 * MIB
    assert 600 * MIB > MAX_TX_WRITE_BYTES
