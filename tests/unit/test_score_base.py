"""The contract-author API: ScoreBase defaults, JSON state helpers, views, purity of the module."""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import loopchain.blockchain
from loopchain.blockchain import score_base
from loopchain.blockchain.score_base import (
    BlockView,
    ScoreBase,
    ScoreContext,
    ScoreError,
    TransactionView,
)
from score.testkit import OWNER, MemoryBlocks, MemoryState

INFO = {"id": "acme/app", "version": "1", "main": "app"}


def make(score_class: type[ScoreBase] = ScoreBase) -> tuple[ScoreBase, MemoryState, MemoryBlocks]:
    state, blocks = MemoryState(), MemoryBlocks()
    context = ScoreContext(state, blocks, logging.getLogger("score.test"), dict(INFO))
    return score_class(context), state, blocks


def test_reexported_as_users_import_it() -> None:
    assert loopchain.blockchain.ScoreBase is ScoreBase
    assert "ScoreBase" in loopchain.blockchain.__all__


def test_defaults() -> None:
    score, state, blocks = make()
    assert (score.db, score.blocks, score.log.name) == (state, blocks, "score.test")
    block = blocks.add()
    assert score.invoke(TransactionView("00" * 32, {"x": 1}, OWNER, 5), block) is None
    with pytest.raises(ScoreError, match="does not answer queries"):
        score.query("{}")
    assert score.info() == INFO
    assert state.data == {}


def test_put_json_writes_canonical_bytes() -> None:
    score, state, _ = make()
    score.put_json("k", {"b": [1, "é"], "a": None, "c": True})
    assert state.data == {b"k": '{"a":null,"b":[1,"é"],"c":true}'.encode()}
    assert score.get_json("k") == {"a": None, "b": [1, "é"], "c": True}
    score.put_json("ключ", 10**40)
    assert state.data["ключ".encode()] == str(10**40).encode()


@pytest.mark.parametrize(
    ("value", "message"), [(1.5, "floats"), ({"x": [0.1]}, "floats"), ({1, 2}, "not a JSON value")]
)
def test_put_json_refuses_non_canonical_values(value: Any, message: str) -> None:
    score, state, _ = make()
    with pytest.raises(ScoreError, match=message):
        score.put_json("k", value)
    assert state.data == {}


def test_get_json_default_and_corrupt_state() -> None:
    score, state, _ = make()
    assert score.get_json("absent") is None
    assert score.get_json("absent", 7) == 7
    state.put(b"raw", b"\xff not json")
    with pytest.raises(ScoreError, match="state at 'raw' is not JSON"):
        score.get_json("raw")
    with pytest.raises(ScoreError, match="not valid Unicode"):
        score.get_json("\ud800")
    with pytest.raises(ScoreError, match="not valid Unicode"):
        score.put_json("\ud800", 1)


def test_views_are_frozen_and_blocks_readable() -> None:
    class Reader(ScoreBase):
        def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
            previous = self.blocks.block_by_height(block.height - 1)
            same = self.blocks.block_by_hash(block.block_hash)
            return {"code": 0, "message": f"{previous and previous.height}/{same == block}"}

        def query(self, params: str) -> str:
            last = self.blocks.last_block()
            return json.dumps({"height": last.height if last else None})

    score, _, blocks = make(Reader)
    assert score.query("{}") == '{"height": null}'
    blocks.add()
    block = blocks.add()
    transaction = TransactionView("ab" * 32, "data", OWNER, block.timestamp)
    assert score.invoke(transaction, block) == {"code": 0, "message": "0/True"}
    assert score.query("{}") == '{"height": 1}'
    with pytest.raises(dataclasses.FrozenInstanceError):
        block.height = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        transaction.sender = "hx0"  # type: ignore[misc]


def test_score_base_module_is_pure() -> None:
    tree = ast.parse(Path(score_base.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported, "no imports found: the check would be vacuous"
    forbidden = {"grpc", "plyvel", "asyncio", "aiohttp", "time", "random", "socket", "os"}
    assert imported & forbidden == set()
