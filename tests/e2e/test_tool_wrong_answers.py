"""demotool.py and gtool.py against a node answering JSON of an unexpected shape (a missing key, a
wrong type): one line on stderr and exit 1 (in the menu: one line and the menu comes back), never a
traceback. The node is a real aiohttp server on 127.0.0.1 that answers what each test sets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests._tty import run_on_tty
from tools.procs import ROOT, run_tool

DEMOTOOL = ROOT / "tools" / "demotool.py"
GTOOL = ROOT / "tools" / "gtool.py"
STARTUP_DEADLINE = 30.0


class WrongNode:
    """An HTTP server in a thread of its own answering `answers[path]` (JSON, HTTP 200) to a GET,
    404 to anything else."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        if request.path not in self.answers:
            return web.json_response({"message": "not here"}, status=404)
        return web.json_response(self.answers[request.path])

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def __enter__(self) -> WrongNode:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(STARTUP_DEADLINE)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            cleanup.result(STARTUP_DEADLINE)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STARTUP_DEADLINE)
        self._loop.close()


@pytest.fixture
def node() -> Iterator[WrongNode]:
    with WrongNode() as server:
        yield server


def assert_one_line_and_exit_1(done: subprocess.CompletedProcess[str], tool: str, who: str) -> str:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{tool}: unexpected answer from {who}: "), lines[0]
    return lines[0]


PEER_STATUS_SHAPES = [
    pytest.param({"/api/v1/status/peer": [1, 2], "/api/v1/status/score": [3]}, id="lists"),
    pytest.param({"/api/v1/status/peer": {}, "/api/v1/status/score": "text"}, id="score-text"),
]
BLOCK_SHAPES = [
    pytest.param({"block_data_json": [1, 2]}, id="block-data-list"),
    pytest.param({"block_data_json": {"height": "ten"}}, id="height-not-a-number"),
    pytest.param({"block_data_json": {"height": float("inf")}}, id="height-infinite"),
    pytest.param({"block_data_json": {"height": 1, "tx_count": None}}, id="tx-count-null"),
    pytest.param({"block_data_json": {"height": 1}, "tx_data_json": 5}, id="txs-a-number"),
]
PEER_LIST_SHAPES = [
    pytest.param({"data": {}}, id="no-peer-list"),
    pytest.param({"data": [1]}, id="data-list"),
    pytest.param(
        {
            "data": {
                "registered_peer_count": 1,
                "connected_peer_count": 1,
                "registered_peer_list": [{"peer_type": 1}],
            }
        },
        id="peer-without-id",
    ),
    pytest.param(
        {
            "data": {
                "registered_peer_count": 1,
                "connected_peer_count": 1,
                "registered_peer_list": ["hx00"],
            }
        },
        id="peer-a-string",
    ),
]


@pytest.mark.parametrize("answers", PEER_STATUS_SHAPES)
def test_demotool_status(node: WrongNode, tmp_path: Path, answers: dict[str, Any]) -> None:
    node.answers.update(answers)
    done = run_tool(DEMOTOOL, "-p", node.url, "status", cwd=tmp_path)
    assert_one_line_and_exit_1(done, "demotool", "the peer")


@pytest.mark.parametrize("block", BLOCK_SHAPES)
@pytest.mark.parametrize("args", [["blocks"], ["blocks", "--from", "0", "--to", "1"]])
def test_demotool_blocks(
    node: WrongNode, tmp_path: Path, block: dict[str, Any], args: list[str]
) -> None:
    node.answers["/api/v1/blocks"] = block
    done = run_tool(DEMOTOOL, "-p", node.url, *args, cwd=tmp_path)
    assert_one_line_and_exit_1(done, "demotool", "the peer")


def test_demotool_find_with_an_infinite_height(node: WrongNode, tmp_path: Path) -> None:
    node.answers["/api/v1/transactions"] = {"block_height": float("inf")}  # JSON 1e999
    node.answers["/api/v1/transactions/result"] = {"response": {"code": 0}}
    done = run_tool(DEMOTOOL, "-p", node.url, "find", "ab" * 32, cwd=tmp_path)
    assert_one_line_and_exit_1(done, "demotool", "the peer")


@pytest.mark.parametrize("peer_list", PEER_LIST_SHAPES)
def test_gtool_status(node: WrongNode, tmp_path: Path, peer_list: dict[str, Any]) -> None:
    node.answers["/api/v1/channel/data"] = {"data": {"kofia": {"peers": []}}}
    node.answers["/api/v1/peer/list"] = peer_list
    done = run_tool(GTOOL, "-r", node.url, "status", cwd=tmp_path)
    assert_one_line_and_exit_1(done, "gtool", "the RadioStation")


def test_the_missing_key_is_named(node: WrongNode, tmp_path: Path) -> None:
    node.answers["/api/v1/channel/data"] = {"data": {"kofia": {"peers": []}}}
    node.answers["/api/v1/peer/list"] = {"data": {}}
    done = run_tool(GTOOL, "-r", node.url, "status", cwd=tmp_path)
    line = assert_one_line_and_exit_1(done, "gtool", "the RadioStation")
    assert "'registered_peer_list'" in line


def test_the_menu_shows_one_line_and_comes_back(node: WrongNode, tmp_path: Path) -> None:
    node.answers["/api/v1/status/peer"] = [1]
    node.answers["/api/v1/status/score"] = [2]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, str(DEMOTOOL), "-p", node.url]
    answers = [("select", "3"), ("select", "3"), ("select", "0")]  # peer status twice, quit
    done = run_on_tty(argv, answers, env=env, cwd=str(tmp_path), deadline=60)
    assert done.exit_code == 0, done.output
    assert done.output.count("error: unexpected answer from the peer: ") == 2, done.output
    assert "Traceback" not in done.output


ESCAPES = "\x1b[2J\x1b]0;owned\x07"  # clear the screen, set the terminal's title


def test_a_nodes_words_do_not_drive_the_terminal(node: WrongNode, tmp_path: Path) -> None:
    """A node's strings were printed as they came: its escape sequences cleared the screen and
    set the title (review). Control characters are shown escaped, in answers and in errors."""
    node.answers["/api/v1/status/peer"] = {"status": ESCAPES, "peer_id": "hx" + "0" * 40}
    node.answers["/api/v1/status/score"] = {"id": "x", "version": "1"}
    done = run_tool(DEMOTOOL, "-p", node.url, "status", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout, done.stdout
    assert "\\x1b[2J\\x1b]0;owned\\x07" in done.stdout, done.stdout
    node.answers.clear()  # now every answer is a 404 whose message the error repeats
    node.answers["/api/v1/blocks"] = {"message": ESCAPES}
    failed = run_tool(DEMOTOOL, "-p", node.url, "blocks", "--from", "0", "--to", "0", cwd=tmp_path)
    assert "\x1b" not in failed.stderr + failed.stdout, failed.stderr
