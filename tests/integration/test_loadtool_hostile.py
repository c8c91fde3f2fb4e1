"""tools/loadtool.py against hostile peers on 127.0.0.1 (an aiohttp REST API, a gRPC PeerService):
new blocks are fetched by height, several at once, and must join up to the tip; a chain whose
blocks are not at the heights asked or do not join is refused, a far tip is read a bounded number
of blocks; the tool ends at its duration and drain and counts what went wrong."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web

from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos.loopchain_pb2_grpc import (
    PeerServiceServicer,
    add_PeerServiceServicer_to_server,
)
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from tests._exec import python_after
from tools import loadtool, rest_client
from tools.loadtool import BlockInfo, GrpcTransport, LoadError, RestTransport
from tools.procs import ROOT

LOADTOOL = ROOT / "tools" / "loadtool.py"
TOOL_DEADLINE = 60.0  # a loadtool that hangs is killed after this and the test fails
HASH_A, HASH_B, HASH_C = "aa" * 32, "bb" * 32, "cc" * 32

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RestPeer:
    """An aiohttp REST API answering what each test sets per path; counts the requests."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.counted: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.counted[request.path] += 1
        handler = self.handlers.get(request.path)
        if handler is None:
            return web.json_response({"response_code": 404, "message": "no"}, status=404)
        return await handler(request)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def rest_peer() -> AsyncIterator[RestPeer]:
    peer = RestPeer()
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


def answer(body: Any, status: int = 200, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return handler


def block_reply(height: Any, block_hash: str, prev_hash: str) -> dict[str, Any]:
    data = {"height": height, "prev_block_hash": prev_hash}
    return {
        "response_code": 0,
        "block_hash": block_hash,
        "block_data_json": data,
        "tx_data_json": [],
    }


async def run_loadtool(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(LOADTOOL),
        *args,
        env=None if env is None else {**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TOOL_DEADLINE)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"loadtool {args} still ran after {TOOL_DEADLINE} s") from None
    return process.returncode or 0, out.decode(), err.decode()


# ------------------------------------------------------------------ fetching new blocks (REST)


def chain_reply(request: web.Request) -> dict[str, Any]:
    """A block of a chain whose hashes are their heights, in decimal, by hash or by height."""
    height = int(request.query.get("height") or request.query["hash"])
    return block_reply(height, str(height), str(height - 1))


async def chain_block(request: web.Request) -> web.StreamResponse:
    return web.json_response(chain_reply(request))


def chain_tip(height: int) -> BlockInfo:
    return BlockInfo(height, str(height), str(height - 1), ())


async def rest_fetch(
    peer: RestPeer, tip: BlockInfo, seen: int, stop: asyncio.Event | None = None
) -> list[BlockInfo]:
    transport = RestTransport(peer.url, "", 5.0, 2)
    try:
        return await asyncio.wait_for(transport.new_blocks(tip, seen, stop), TOOL_DEADLINE)
    finally:
        await transport.close()


async def rest_refusal(peer: RestPeer, tip: BlockInfo, seen: int) -> LoadError:
    with pytest.raises(LoadError) as refused:
        await rest_fetch(peer, tip, seen)
    return refused.value


async def test_a_block_at_another_height_than_asked_is_a_bad_chain(rest_peer: RestPeer) -> None:
    rest_peer.handlers["/api/v1/blocks"] = answer(block_reply(7, HASH_B, HASH_B))
    refused = await rest_refusal(rest_peer, BlockInfo(7, HASH_C, HASH_B, ()), 5)
    assert (refused.kind, str(refused)) == ("bad chain", "bad chain: asked height 6, got 7")
    assert rest_peer.counted["/api/v1/blocks"] == 1


async def test_a_block_below_the_tip_that_is_not_its_parent_is_a_bad_chain(
    rest_peer: RestPeer,
) -> None:
    rest_peer.handlers["/api/v1/blocks"] = answer(block_reply(6, HASH_A, HASH_B))
    refused = await rest_refusal(rest_peer, BlockInfo(7, HASH_C, HASH_B, ()), 5)
    assert refused.kind == "bad chain"
    assert f"height 7 names parent {HASH_B}, the block at height 6 is {HASH_A}" in str(refused)


async def test_blocks_that_do_not_join_are_a_bad_chain(rest_peer: RestPeer) -> None:
    async def blocks(request: web.Request) -> web.StreamResponse:
        reply = chain_reply(request)
        if reply["block_hash"] == "8":
            reply["block_data_json"]["prev_block_hash"] = "6"
        return web.json_response(reply)

    rest_peer.handlers["/api/v1/blocks"] = blocks
    refused = await rest_refusal(rest_peer, chain_tip(10), 2)
    assert refused.kind == "bad chain"
    assert "height 8 names parent 6, the block at height 7 is 7" in str(refused)


@pytest.mark.parametrize("empty", [True, False], ids=["empty-block", "404"])
async def test_no_block_below_the_tip_is_an_error(rest_peer: RestPeer, empty: bool) -> None:
    """A peer that has no block at a height below its tip (a proxy's other peer, behind): the
    poll fails, and the next one asks again (its blocks are not skipped)."""

    async def blocks(request: web.Request) -> web.StreamResponse:
        if request.query["height"] != "8":
            return await chain_block(request)
        if empty:  # the shape of the last block of an empty chain
            no_block = {"response_code": 0, "block_hash": "", "block_data_json": {"height": -1}}
            return web.json_response(no_block)
        refusal = {"response_code": 404, "message": "there is no block with height 8"}
        return web.json_response(refusal, status=404)

    rest_peer.handlers["/api/v1/blocks"] = blocks
    refused = await rest_refusal(rest_peer, chain_tip(10), 2)
    if empty:
        assert str(refused) == "bad chain: no block at height 8, below the tip at 10"
    else:
        assert refused.kind == "http 404 (404)"


async def test_new_blocks_are_fetched_by_height_and_join_up_to_the_tip(
    rest_peer: RestPeer,
) -> None:
    rest_peer.handlers["/api/v1/blocks"] = chain_block
    found = await rest_fetch(rest_peer, chain_tip(40), 2)
    assert [(b.height, b.block_hash, b.prev_hash) for b in found] == [
        (h, str(h), str(h - 1)) for h in range(3, 41)
    ]
    assert rest_peer.counted["/api/v1/blocks"] == 37
    assert await rest_fetch(rest_peer, chain_tip(40), 40) == []


async def test_a_far_tip_is_fetched_at_most_max_walk_blocks(rest_peer: RestPeer) -> None:
    asked: list[int] = []

    async def blocks(request: web.Request) -> web.StreamResponse:
        asked.append(int(request.query["height"]))
        return await chain_block(request)

    rest_peer.handlers["/api/v1/blocks"] = blocks
    tip_height = 10**12
    found = await rest_fetch(rest_peer, chain_tip(tip_height), 5)
    newest = list(range(tip_height - loadtool.MAX_WALK + 1, tip_height + 1))
    assert [b.height for b in found] == newest
    assert sorted(asked) == newest[:-1]  # each once: MAX_WALK - 1 requests


async def test_a_fetch_ends_when_the_run_stops(rest_peer: RestPeer) -> None:
    stop = asyncio.Event()
    stop_at = loadtool.MAX_FETCHES + 4  # past the first MAX_FETCHES asked for at once

    async def blocks(request: web.Request) -> web.StreamResponse:
        if rest_peer.counted["/api/v1/blocks"] == stop_at:
            stop.set()  # Ctrl-C twice while the fetch goes on
        return await chain_block(request)

    rest_peer.handlers["/api/v1/blocks"] = blocks
    found = await rest_fetch(rest_peer, chain_tip(500), 5, stop)
    asked = rest_peer.counted["/api/v1/blocks"]
    # that one, and those in flight with it, no other: the newest, joined up to the tip
    assert stop_at <= asked < stop_at + loadtool.MAX_FETCHES
    assert [b.height for b in found] == list(range(500 - asked, 501))


async def test_the_fetches_of_new_blocks_overlap(rest_peer: RestPeer) -> None:
    """Each block costs a round trip: MAX_FETCHES are asked for at once (one at a time, a
    watcher far from its peer fell behind the chain), and no more."""
    in_flight = most = 0
    all_asked = asyncio.Event()

    async def blocks(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == loadtool.MAX_FETCHES:
            all_asked.set()
        await all_asked.wait()  # the first answers wait until MAX_FETCHES are asked for
        in_flight -= 1
        return await chain_block(request)

    rest_peer.handlers["/api/v1/blocks"] = blocks
    found = await rest_fetch(rest_peer, chain_tip(100), 0)
    assert [b.height for b in found] == list(range(1, 101))
    assert most == loadtool.MAX_FETCHES


@pytest.mark.parametrize("hostile", ["never-down", "not-joining"])
async def test_loadtool_ends_against_a_chain_that_never_goes_down(
    rest_peer: RestPeer, hostile: str
) -> None:
    """The reviewer's case: the tip moves from height 5 to 7 and every block below it says
    height 7 (never-down), or is at height 6 but is not the tip's parent (not-joining)."""
    statuses = iter([HASH_A])

    async def status(request: web.Request) -> web.StreamResponse:
        named = next(statuses, HASH_C)
        return web.json_response({"response_code": 0, "block_hash": named})

    async def blocks(request: web.Request) -> web.StreamResponse:
        if "hash" in request.query:  # the tip, named by the status
            first = request.query["hash"] == HASH_A
            return web.json_response(block_reply(5 if first else 7, request.query["hash"], HASH_B))
        if hostile == "never-down":
            return web.json_response(block_reply(7, HASH_B, HASH_B))
        return web.json_response(block_reply(int(request.query["height"]), HASH_A, HASH_B))

    rest_peer.handlers["/api/v1/status/peer"] = status
    rest_peer.handlers["/api/v1/blocks"] = blocks
    rest_peer.handlers["/api/v1/transactions"] = answer({"response_code": 0, "tx_hash": "ab" * 32})
    rc, out, err = await run_loadtool(
        "-p", rest_peer.url, "-m", "1s", "--drain", "1", "--timeout", "2", "--rate", "5", "--json"
    )
    assert "Traceback" not in err, err
    assert rc == 0, err
    assert json.loads(out)["errors"].get("chain poll: bad chain", 0) >= 1, out


# ------------------------------------------------------------------ fetching new blocks (gRPC)


class HostileBlocks(PeerServiceServicer):
    """GetBlock: the last block is `tip`; any other height is answered by `at`."""

    def __init__(self, tip: Block, at: Callable[[int], bytes], hold: bool = False) -> None:
        self.tip = tip
        self.at = at
        self.asked: list[int] = []
        self.in_flight = self.most = 0
        # `hold`: the first answers wait until MAX_FETCHES are asked for (on a slow machine the
        # fetches, each answered at once, need not overlap)
        self.all_asked = asyncio.Event()
        if not hold:
            self.all_asked.set()

    async def GetBlock(self, request: pb.GetBlockRequest, context: Any) -> pb.BlockReply:
        if request.height < 0:
            return pb.BlockReply(block=self.tip.encode())
        self.asked.append(request.height)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight == loadtool.MAX_FETCHES:
            self.all_asked.set()
        await self.all_asked.wait()
        self.in_flight -= 1
        return pb.BlockReply(block=self.at(request.height))


def make_block(height: int, prev_hash: bytes = b"\x01" * 32) -> Block:
    signer = Signer.generate()
    return Block.create(
        channel="loopchain_default",
        height=height,
        round_=0,
        prev_hash=prev_hash,
        prev_qc=None,
        transactions=[],
        timestamp=1,
        leader=signer,
        next_leader=signer.address,
        validators_hash=b"\x02" * 32,
    )


def make_chain(low: int, high: int) -> dict[int, Block]:
    """Blocks at heights low..high, each the parent of the one above it."""
    chain: dict[int, Block] = {}
    prev_hash = b"\x01" * 32
    for height in range(low, high + 1):
        chain[height] = make_block(height, prev_hash)
        prev_hash = chain[height].hash
    return chain


async def grpc_walk(servicer: HostileBlocks, seen: int) -> list[BlockInfo]:
    server = grpc.aio.server()
    add_PeerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    transport = GrpcTransport(f"127.0.0.1:{port}", "", 5.0)
    try:
        tip = await transport.last_block()
        assert tip is not None
        return await asyncio.wait_for(transport.new_blocks(tip, seen), TOOL_DEADLINE)
    finally:
        await transport.close()
        await server.stop(None)


async def test_grpc_a_far_tip_is_fetched_at_most_max_walk_blocks_at_once() -> None:
    tip_height = 10**12
    chain = make_chain(tip_height - loadtool.MAX_WALK - 5, tip_height)
    servicer = HostileBlocks(chain[tip_height], lambda height: chain[height].encode(), hold=True)
    found = await grpc_walk(servicer, 5)
    newest = list(range(tip_height - loadtool.MAX_WALK + 1, tip_height + 1))
    assert [(b.height, b.block_hash) for b in found] == [(h, chain[h].hash.hex()) for h in newest]
    assert sorted(servicer.asked) == newest[:-1]
    assert servicer.most == loadtool.MAX_FETCHES


async def test_grpc_a_block_at_another_height_is_a_bad_chain() -> None:
    other = make_block(3).encode()
    servicer = HostileBlocks(make_block(10), lambda height: other)
    with pytest.raises(LoadError) as refused:
        await grpc_walk(servicer, 5)
    assert refused.value.kind == "bad chain"
    assert str(refused.value).endswith(", got 3")
    assert set(servicer.asked) <= {6, 7, 8, 9}


async def test_grpc_no_block_below_the_tip_is_a_bad_chain() -> None:
    chain = make_chain(1, 10)
    servicer = HostileBlocks(chain[10], lambda h: b"" if h == 7 else chain[h].encode())
    with pytest.raises(LoadError) as refused:
        await grpc_walk(servicer, 0)
    assert str(refused.value) == "bad chain: no block at height 7, below the tip at 10"


async def test_grpc_blocks_that_do_not_join_are_a_bad_chain() -> None:
    chain = make_chain(1, 10)
    # at the height asked, a child of the block at 5, but not the parent of the block at 7
    stranger = make_block(6, chain[5].hash)
    servicer = HostileBlocks(chain[10], lambda h: (stranger if h == 6 else chain[h]).encode())
    with pytest.raises(LoadError) as refused:
        await grpc_walk(servicer, 0)
    assert refused.value.kind == "bad chain"
    assert f"the block at height 6 is {stranger.hash.hex()}" in str(refused.value)


# ------------------------------------------------------------------ Retry-After and error pages


async def transport_error(
    peer: RestPeer, call: Callable[[RestTransport], Awaitable[Any]]
) -> LoadError:
    transport = RestTransport(peer.url, "", 5.0, 2)
    try:
        with pytest.raises(LoadError) as refused:
            await asyncio.wait_for(call(transport), TOOL_DEADLINE)
    finally:
        await transport.close()
    return refused.value


async def html_503(request: web.Request) -> web.StreamResponse:
    """A proxy's error page: HTML, with a Retry-After."""
    page = "<html>busy</html>"
    return web.Response(
        status=503, text=page, content_type="text/html", headers={"Retry-After": "1"}
    )


async def test_an_error_page_is_classified_by_its_status(rest_peer: RestPeer) -> None:
    rest_peer.handlers["/api/v1/transactions"] = html_503
    refused = await transport_error(rest_peer, lambda t: t.create_tx({"x": 1}))
    assert (refused.kind, refused.retry_after) == ("http 503", 1.0)


async def test_a_json_refusal_carries_its_retry_after(rest_peer: RestPeer) -> None:
    busy = {"response_code": 503, "message": "busy"}
    rest_peer.handlers["/api/v1/transactions"] = answer(busy, 503, **{"Retry-After": "2"})
    refused = await transport_error(rest_peer, lambda t: t.create_tx({"x": 1}))
    assert (refused.kind, refused.retry_after) == ("http 503 (503)", 2.0)


def test_the_backoff_follows_retry_after_within_its_cap() -> None:
    far = loadtool.time.monotonic() + 3600
    assert loadtool._backoff(LoadError("timeout"), far) == loadtool.ERROR_BACKOFF
    assert loadtool._backoff(LoadError("http 503", retry_after=1.5), far) == 1.5
    assert loadtool._backoff(LoadError("x", retry_after=1e9), far) == loadtool.RETRY_AFTER_CAP
    assert loadtool._backoff(LoadError("x", retry_after=3.0), 0.0) == 0.0  # sending has ended


@pytest.mark.parametrize("json_body", [True, False], ids=["json", "html"])
async def test_loadtool_waits_as_retry_after_asks(rest_peer: RestPeer, json_body: bool) -> None:
    busy = {"response_code": 503, "message": "busy"}
    rest_peer.handlers["/api/v1/transactions"] = (
        answer(busy, 503, **{"Retry-After": "1"}) if json_body else html_503
    )
    rest_peer.handlers["/api/v1/status/peer"] = answer({"response_code": 0, "block_hash": None})
    rc, out, err = await run_loadtool("-p", rest_peer.url, "-m", "2s", "--drain", "0", "--json")
    assert "Traceback" not in err and rc == 1, err  # nothing acknowledged
    errors = json.loads(out)["errors"]
    kind = "http 503 (503)" if json_body else "http 503"
    # 1 s apart over 2 s of sending (at 0.05 s apart it was dozens, whatever the machine's speed)
    assert set(errors) == {kind} and 1 <= errors[kind] <= 4, errors
    assert rest_peer.counted["/api/v1/transactions"] == errors[kind]


# ------------------------------------------------------------------ replies of unexpected shapes


@pytest.mark.parametrize(
    "reply",
    [
        {"response_code": 0},
        {"response_code": 0, "tx_hash": None},
        {"response_code": 0, "tx_hash": 7},
    ],
    ids=["no-hash", "null-hash", "number-hash"],
)
async def test_a_reply_without_a_hash_is_a_bad_reply(rest_peer: RestPeer, reply: Any) -> None:
    rest_peer.handlers["/api/v1/transactions"] = answer(reply)
    refused = await transport_error(rest_peer, lambda t: t.create_tx({"x": 1}))
    assert refused.kind == "bad reply"


@pytest.mark.parametrize("height", ["five", 5.5, True, float("inf"), [5]])
async def test_a_block_height_that_is_not_an_integer(rest_peer: RestPeer, height: Any) -> None:
    rest_peer.handlers["/api/v1/status/peer"] = answer({"response_code": 0, "block_hash": HASH_A})
    rest_peer.handlers["/api/v1/blocks"] = answer(block_reply(height, HASH_A, HASH_B))
    refused = await transport_error(rest_peer, lambda t: t.last_block())
    assert refused.kind == "bad reply"


async def test_a_repeated_hash_is_an_error_not_an_acknowledgement(rest_peer: RestPeer) -> None:
    rest_peer.handlers["/api/v1/transactions"] = answer({"response_code": 0, "tx_hash": "ab" * 32})
    rest_peer.handlers["/api/v1/status/peer"] = answer({"response_code": 0, "block_hash": None})
    rc, out, err = await run_loadtool(
        "-p", rest_peer.url, "-m", "1s", "--drain", "0", "--rate", "10", "--json"
    )
    assert "Traceback" not in err and rc == 0, err
    summary = json.loads(out)
    assert summary["submitted"] == 1, summary
    assert summary["errors"]["repeated hash"] == rest_peer.counted["/api/v1/transactions"] - 1


async def test_loadtool_counts_replies_without_a_hash(rest_peer: RestPeer) -> None:
    rest_peer.handlers["/api/v1/transactions"] = answer({"response_code": 0})
    rest_peer.handlers["/api/v1/status/peer"] = answer({"response_code": 0, "block_hash": None})
    rc, out, err = await run_loadtool(
        "-p", rest_peer.url, "-m", "1s", "--drain", "0", "--rate", "10", "--json"
    )
    assert "Traceback" not in err, err
    summary = json.loads(out)
    assert rc == 1 and summary["submitted"] == 0 and set(summary["errors"]) == {"bad reply"}


# ------------------------------------------------------------------ a bound on a reply's size


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_reply_larger_than_the_cap_is_refused(
    rest_peer: RestPeer, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    monkeypatch.setattr(loadtool, "MAX_REPLY_BYTES", 1000)
    big = json.dumps({"response_code": 0, "block_hash": None, "pad": "x" * 5000}).encode()

    async def status(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=big, content_type="application/json")
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(big), 500):
            await response.write(big[start : start + 500])
        await response.write_eof()
        return response

    rest_peer.handlers["/api/v1/status/peer"] = status
    refused = await transport_error(rest_peer, lambda t: t.last_block())
    assert refused.kind == "reply too large"


async def test_a_reply_of_more_objects_than_a_node_sends_is_a_bad_reply(
    rest_peer: RestPeer,
) -> None:
    """Found before the parse (a node answering "[{},{},...]" had 80 connections parse it)."""
    many = "[" + "{}," * rest_client.MAX_REPLY_CONTAINERS + "{}]"

    async def status(_request: web.Request) -> web.Response:
        return web.Response(text=many, content_type="application/json")

    rest_peer.handlers["/api/v1/status/peer"] = status
    refused = await transport_error(rest_peer, lambda t: t.last_block())
    assert refused.kind == "bad reply"


# ------------------------------------------------------------------ Ctrl-C before sending starts


@pytest.mark.parametrize(("mode", "first_path"), [("0", b"/api/v1/status/peer"), ("2", b"/api/v3")])
async def test_ctrl_c_before_sending_starts_ends_with_one_line_and_130(
    mode: str, first_path: bytes
) -> None:
    """A Ctrl-C while the tool waits for its first answer (-t 0: the first status call; -t 2:
    funding) ends it with status 130 and one line, not a KeyboardInterrupt traceback."""
    asked = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        request_line = await reader.readline()
        if first_path in request_line:
            asked.set()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # as from a terminal: a process started with SIGINT ignored (as the suite's worker may be,
    # and background jobs are) keeps ignoring it, and Python then takes no Ctrl-C
    process = await asyncio.create_subprocess_exec(
        *python_after(
            "import signal; signal.signal(signal.SIGINT, signal.SIG_DFL)",
            str(LOADTOOL),
            *("-p", f"http://127.0.0.1:{port}", "-t", mode, "-m", "1s", "--timeout", "300"),
        ),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(asked.wait(), TOOL_DEADLINE)
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), TOOL_DEADLINE)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert process.returncode == 130, err.decode()
    assert "Traceback" not in err.decode() and out == b""
    assert err.decode().splitlines() == ["loadtool: interrupted before sending began"]


# ------------------------------------------------------------------ -t 2: the funding key


@pytest.mark.parametrize("source", ["file", "environment"])
async def test_the_funding_key_is_taken_from_a_file_or_the_environment(
    rest_peer: RestPeer, tmp_path: Path, source: str
) -> None:
    """-t 2 funds its clients from the key of --key-file or $LOOPCHAIN_LOADTOOL_KEY, which never
    appears on its command line; here the peer refuses the funding transfer it signed. The
    transfer is for the channel's network, as the peer states it (no --nid)."""
    funder = Signer(bytes(range(1, 33)))
    senders: list[str] = []
    nids: list[str] = []

    async def refuse(request: web.Request) -> web.StreamResponse:
        call = await request.json()
        if call["method"] == "icx_getNetworkInfo":
            return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"nid": "0x7"}})
        senders.append(call["params"]["from"])
        nids.append(call["params"]["nid"])
        return web.json_response({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000}})

    rest_peer.handlers["/api/v3"] = refuse
    args = ["-p", rest_peer.url, "-t", "2", "-m", "1s", "--timeout", "10"]
    env = {}
    if source == "file":
        key_file = tmp_path / "funding_key"
        key_file.write_text(funder.secret_bytes().hex() + "\n")
        key_file.chmod(0o600)
        args += ["--key-file", str(key_file)]
    else:
        env[loadtool.KEY_ENV] = funder.secret_bytes().hex()
    code, out, err = await run_loadtool(*args, env=env)
    assert senders == [funder.address] and nids == ["0x7"], err
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("loadtool: cannot read the chain")
