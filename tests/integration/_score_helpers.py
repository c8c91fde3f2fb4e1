"""Helpers for SCORE process tests: tiny SCORE packages written on the fly and a running supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from loopchain.configure import Config, load_config
from loopchain.scoreservice.packages import ScorePackage, resolve_package
from loopchain.scoreservice.supervisor import ScoreSupervisor
from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from tests.integration._storage_helpers import BASE_TIME_US, CHANNEL, ChainBuilder

READY_DEADLINE = 30.0

# A key-value SCORE whose transactions say what to do; every failure mode a test needs is an op.
KV_SCORE = """
import json

from loopchain.blockchain.score_base import ScoreBase, ScoreError


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        data = transaction.data
        op = data["op"]
        if op == "set":
            self.db.put(data["key"].encode(), data["value"].encode())
        elif op == "delete":
            self.db.delete(data["key"].encode())
        elif op == "set_then_fail":
            self.db.put(data["key"].encode(), b"dirty")
            raise ScoreError("refused after writing")
        elif op == "divide":
            return {"code": 0, "message": str(1 // data["by"])}
        elif op == "loop":
            n = 0
            while True:
                n += 1
        elif op == "stubborn_loop":
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    pass
        elif op == "hog":
            chunks = []
            while True:
                chunks.append(bytearray(64 * 1024 * 1024))
        elif op == "sleep":
            import time
            time.sleep(data["seconds"])
        elif op == "remember_blocks":
            last = self.blocks.last_block()
            first = self.blocks.block_by_height(0)
            by_hash = self.blocks.block_by_hash(last.block_hash) if last else None
            record = {
                "current": [block.height, block.block_hash],
                "last": [last.height, last.block_hash] if last else None,
                "first": first.block_hash if first else None,
                "by_hash": by_hash.height if by_hash else None,
                "missing": self.blocks.block_by_height(block.height),
            }
            self.put_json("blocks", record)
        else:
            return {"code": 1, "message": "unknown op " + op}
        return None

    def query(self, params):
        request = json.loads(params)
        if request.get("op") == "write":
            self.db.put(b"k", b"v")
        if request.get("op") == "loop":
            while True:
                pass
        if request.get("op") == "raise":
            raise ScoreError("no such question")
        if request.get("op") == "json":
            return json.dumps(self.get_json(request["key"]))
        if request.get("op") == "repeat":
            return json.dumps("x" * request["size"])
        if request.get("op") == "echo":  # the text as it is, even a lone surrogate
            return request["text"]
        if request.get("op") == "grind":  # C work without steps, holding the GIL
            open("grinding", "w").close()
            return json.dumps(sum(range(request["n"])))
        if request.get("op") == "nap":  # wall time without steps
            import time

            time.sleep(request["seconds"])
            return "null"
        value = self.db.get(request["key"].encode())
        return json.dumps(None if value is None else value.decode())
"""


def write_package(
    repository: Path, name: str, source: str, *, version: str = "1.0", main: str = "score_main"
) -> None:
    """Write `repository/test/<name>` with a package.json and its main module."""
    folder = repository / "test" / name
    folder.mkdir(parents=True, exist_ok=True)
    info = {"id": f"test.{name}", "version": version, "main": main, "description": "test SCORE"}
    (folder / "package.json").write_text(json.dumps(info))
    (folder / f"{main}.py").write_text(textwrap.dedent(source))


def make_package(tmp_path: Path, name: str = "kv", source: str = KV_SCORE) -> ScorePackage:
    """Write and resolve a package the way the peer does."""
    repository = tmp_path / "score"
    write_package(repository, name, source)
    return resolve_package(
        repository, f"test/{name}", branch="master", allow_develop=False, work_dir=tmp_path / "work"
    )


def score_config(**overrides: Any) -> Config:
    """Defaults plus `overrides`, without the environment."""
    return load_config(environ={}, overrides=overrides)


def make_supervisor(
    tmp_path: Path,
    config: Config,
    package: ScorePackage | None,
    package_error: str | None = None,
    *,
    state: str = "state",
) -> ScoreSupervisor:
    return ScoreSupervisor(
        config, CHANNEL, tmp_path / f"{state}_cwd", tmp_path / state, package, package_error
    )


@contextlib.asynccontextmanager
async def running(
    supervisor: ScoreSupervisor, ready: bool = True
) -> AsyncIterator[ScoreSupervisor]:
    """Run the supervisor (waiting until its SCORE is loaded unless `ready` is False); stop it after."""
    task = asyncio.create_task(supervisor.run(), name="score-supervisor")
    try:
        if ready:
            assert await supervisor.wait_ready(READY_DEADLINE), supervisor.status()
        yield supervisor
    finally:
        await supervisor.stop()
        await asyncio.wait_for(task, 30)


class Blocks:
    """A chain of signed blocks whose transactions carry the given JSON data."""

    def __init__(self) -> None:
        self.builder = ChainBuilder()
        self._count = 0

    def tx(self, data: dict[str, Any]) -> Transaction:
        self._count += 1
        signer = self.builder.signers[0]
        return Transaction.create_v1(CHANNEL, data, BASE_TIME_US + self._count, signer)

    def next(self, *datas: dict[str, Any]) -> Block:
        """The next block of the chain, holding one transaction per data (the chain advances)."""
        block = self.builder.block([self.tx(d) for d in datas])
        self.builder.advance(block, self.builder.certify(block))
        return block


def set_op(key: str, value: str) -> dict[str, Any]:
    return {"op": "set", "key": key, "value": value}
