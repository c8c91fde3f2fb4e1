"""demotool.py tx against a peer (aiohttp on 127.0.0.1) that takes a first batch and refuses the
next, or never puts a transaction in a block: the hashes it took are printed before the error, so
the operator can look them up (they were lost with the error before)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tools.procs import ROOT

DEMOTOOL = ROOT / "tools" / "demotool.py"
TOOL_DEADLINE = 60.0


class BatchPeer:
    """Takes the first POST of transactions (a hash each), answers 503 to the later ones; every
    transaction stays in the pool (block_height -1)."""

    def __init__(self) -> None:
        self.posts = 0
        self.taken: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        self.posts += 1
        bodies = await request.json()
        if self.posts > 1:
            return web.json_response({"response_code": 503, "message": "busy"}, status=503)
        answers = []
        for _ in bodies:
            tx_hash = hashlib.sha256(str(len(self.taken)).encode()).hexdigest()
            self.taken.append(tx_hash)
            answers.append({"response_code": 0, "tx_hash": tx_hash})
        return web.json_response(answers)

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response({"response_code": 0, "block_height": -1})

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/api/v1/transactions", self._post)
        app.router.add_get("/api/v1/transactions", self._get)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"


@pytest.fixture
async def peer() -> AsyncIterator[BatchPeer]:
    server = BatchPeer()
    await server.start()
    try:
        yield server
    finally:
        if server._runner is not None:
            await server._runner.cleanup()


async def demotool(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DEMOTOOL),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), TOOL_DEADLINE)
    assert "Traceback" not in err.decode(), err.decode()
    return process.returncode or 0, out.decode(), err.decode()


def one_error(rc: int, err: str) -> str:
    assert rc == 1 and len(err.splitlines()) == 1, (rc, err)
    return err


async def test_a_refused_second_batch_keeps_the_first_batchs_hashes(peer: BatchPeer) -> None:
    rc, out, err = await demotool("-p", peer.url, "tx", "-n", "600")
    assert "HTTP 503" in one_error(rc, err)
    assert out.split() == peer.taken and len(peer.taken) == 500


async def test_the_json_form_too(peer: BatchPeer) -> None:
    rc, out, err = await demotool("-p", peer.url, "--json", "tx", "-n", "600")
    one_error(rc, err)
    assert [row["tx_hash"] for row in json.loads(out)] == peer.taken


@pytest.mark.parametrize("json_form", [False, True], ids=["text", "json"])
async def test_a_wait_that_times_out_prints_the_hashes(peer: BatchPeer, json_form: bool) -> None:
    form = ["--json"] if json_form else []
    rc, out, err = await demotool(
        "-p", peer.url, *form, "tx", "-n", "3", "--wait", "--wait-timeout", "0.5"
    )
    assert "not in a block after 0.5 s" in one_error(rc, err)
    rows: list[Any]
    if json_form:
        rows = [(r["tx_hash"], r["block_height"]) for r in json.loads(out)]
        assert rows == [(h, None) for h in peer.taken]
    else:
        rows = [line.split() for line in out.splitlines()]
        assert rows == [[h, "none"] for h in peer.taken]
