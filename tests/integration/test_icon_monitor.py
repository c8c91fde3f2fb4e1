"""ICON's websocket monitors (loopchain/rest/icon_monitor.py): the request's parsing and the event
filter as pure functions, then `GET /api/v3/<channel>/block` and `/event` of the real REST proxy
application (create_app, served in this process on 127.0.0.1) against a PeerService on 127.0.0.1
(tests/integration/_fake_peer.py, extended here with event logs per transaction and a GetBlock that
can be held), read with aiohttp's websocket client."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import WSCloseCode, WSMsgType, web
from iconsdk.exception import JSONRPCException
from iconsdk.icon_service import IconService
from iconsdk.monitor import BlockMonitorSpec, EventMonitorSpec
from iconsdk.monitor import EventFilter as SdkFilter
from iconsdk.providers.http_provider import HTTPProvider

from loopchain.configure import load_config
from loopchain.http_site import CLIENT_RECHECK
from loopchain.protos import loopchain_pb2 as pb
from loopchain.rest import icon_monitor
from loopchain.rest.app import create_app
from loopchain.rest.icon_monitor import (
    MAX_FILTERS,
    MAX_REQUEST_BYTES,
    SHARED_LOOKUPS,
    EventFilter,
    Monitors,
    parse_filter,
    parse_request,
)
from loopchain.rest.icon_peer import BusyError
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.icon_address import channel_score_address
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError
from loopchain.types.transaction import Transaction
from tests.integration._fake_peer import DEFAULT_CHANNEL, FakePeer, start_fake_peer
from tests.integration._proxy import ProxyProcess
from tools.procs import ROOT, free_port_pair, wait_until_async

GRPC_TIMEOUT = 2.0
RECEIVE_S = 10.0  # a message that should come long before this did not
OTHER_CHANNEL = "kofia_1"
GENESIS_CHANNEL = "genesis_channel"  # no block until the test that watches its genesis
SCORE = channel_score_address(DEFAULT_CHANNEL)
OTHER_SCORE = channel_score_address(OTHER_CHANNEL)
TRANSFER = "Transfer(Address,Address,int)"
APPROVAL = "Approval(Address,Address,int)"
ALICE, BOB, CAROL = "hx" + "a1" * 20, "hx" + "b0" * 20, "hx" + "c2" * 20

aio = pytest.mark.asyncio(loop_scope="module")


def transfer(src: str, dst: str, value: int) -> dict[str, list[str]]:
    return {"indexed": [TRANSFER, src, dst], "data": [hex(value)]}


def approval(owner: str, spender: str, value: int) -> dict[str, list[str]]:
    return {"indexed": [APPROVAL, owner, spender], "data": [hex(value)]}


# ---------------------------------------------------------------- the request, pure


def request(value: Any, kind: str = "block") -> icon_monitor.MonitorRequest:
    return parse_request(json.dumps(value), kind)


def test_an_empty_block_request_starts_at_the_next_block_without_filters():
    assert request({}) == icon_monitor.MonitorRequest(None, (), False, 0)


def test_the_sdks_event_request_with_one_filter_flattened():
    sdk = EventMonitorSpec(0x1A, SdkFilter(TRANSFER, SCORE, 2, None, BOB, "0x5"), True, 7)
    raw = json.dumps(sdk.get_request())
    assert json.loads(raw)["event"] == TRANSFER  # the SDK flattens one filter
    assert parse_request(raw, "event") == icon_monitor.MonitorRequest(
        0x1A, (EventFilter(TRANSFER, SCORE, (None, BOB), ("0x5",)),), True, 7
    )


def test_the_sdks_block_request_with_a_list_of_filters():
    filters = [SdkFilter(TRANSFER, None, 1, ALICE), SdkFilter(APPROVAL, SCORE, 0)]
    raw = json.dumps(BlockMonitorSpec(0, filters).get_request())
    assert "eventFilters" in json.loads(raw)
    assert parse_request(raw, "block") == icon_monitor.MonitorRequest(
        0,
        (EventFilter(TRANSFER, None, (ALICE,), ()), EventFilter(APPROVAL, SCORE, (), ())),
        False,
        0,
    )


@pytest.mark.parametrize(
    ("value", "logs", "interval"),
    [
        ({"logs": True}, True, 0),
        ({"logs": "0x1"}, True, 0),
        ({"logs": "0x0"}, False, 0),
        ({"logs": False}, False, 0),
        ({"progressInterval": 5}, False, 5),
        ({"progressInterval": "0x5"}, False, 5),
        ({"progressInterval": "0x0"}, False, 0),
        ({"progressInterval": 10**6}, False, 10**6),
    ],
)
def test_logs_and_progress_interval_in_either_form(value, logs, interval):
    parsed = request({"event": TRANSFER, **value}, "event")
    assert (parsed.logs, parsed.progress_interval) == (logs, interval)


def test_listed_and_flattened_filters_are_both_taken_up_to_the_limit():
    listed = [{"event": f"E{i}()"} for i in range(MAX_FILTERS - 1)]
    parsed = request({"height": "0x0A", "eventFilters": listed, "event": TRANSFER, "addr": SCORE})
    assert parsed.height == 10
    assert [f.event for f in parsed.filters] == [f"E{i}()" for i in range(MAX_FILTERS - 1)] + [
        TRANSFER
    ]
    assert parsed.filters[-1] == EventFilter(TRANSFER, SCORE, (), ())
    wildcards = request({"event": TRANSFER, "indexed": [None, BOB], "data": [None]})
    assert wildcards.filters == (EventFilter(TRANSFER, None, (None, BOB), (None,)),)


def _too_many(listed: int, flat: bool) -> dict[str, Any]:
    value: dict[str, Any] = {"eventFilters": [{"event": "E()"}] * listed}
    if flat:
        value["event"] = "F()"
    return value


@pytest.mark.parametrize(
    ("raw", "kind", "text"),
    [
        ("{not json", "block", "not JSON"),
        ("[]", "block", "must be a JSON object"),
        ('"0x1"', "block", "must be a JSON object"),
        ("null", "block", "must be a JSON object"),
        ('{"height": 26}', "block", "'height' must be a string"),
        ('{"height": "26"}', "block", "not a block height"),
        ('{"height": "0x"}', "block", "not a block height"),
        ('{"height": "-0x1"}', "block", "not a block height"),
        ('{"height": "0x8000000000000000"}', "block", "not a block height"),
        ('{"eventFilters": {"event": "E()"}}', "block", "'eventFilters' must be a list"),
        ('{"eventFilters": null}', "event", "'eventFilters' must be a list"),
        ('{"eventFilters": [1]}', "block", "must be an object"),
        ('{"eventFilters": [{}]}', "block", "needs 'event'"),
        ('{"eventFilters": [{"event": ""}]}', "block", "needs 'event'"),
        ('{"eventFilters": [{"event": 5}]}', "block", "needs 'event'"),
        ('{"event": null}', "event", "needs 'event'"),
        ('{"eventFilters": [{"event": "E()", "topic": "x"}]}', "block", "field 'topic'"),
        ('{"event": "E()", "addr": 5}', "event", "'addr' must be a string"),
        ('{"event": "E()", "indexed": [1]}', "event", "indexed must be a list"),
        ('{"event": "E()", "indexed": "0x1"}', "event", "indexed must be a list"),
        ('{"event": "E()", "data": [true]}', "event", "data must be a list"),
        ('{"event": "E()", "data": {"a": "b"}}', "event", "data must be a list"),
        (json.dumps(_too_many(MAX_FILTERS + 1, False)), "block", f"at most {MAX_FILTERS}"),
        (json.dumps(_too_many(MAX_FILTERS, True)), "event", f"at most {MAX_FILTERS}"),
        ("{}", "event", "needs an event filter"),
        ('{"eventFilters": []}', "event", "needs an event filter"),
        ('{"addr": "cx00", "height": "0x1"}', "event", "needs an event filter"),
        ('{"event": "E()", "progressInterval": -1}', "event", "'progressInterval'"),
        ('{"event": "E()", "progressInterval": 1.5}', "event", "'progressInterval'"),
        ('{"event": "E()", "progressInterval": true}', "event", "'progressInterval'"),
        ('{"event": "E()", "progressInterval": "5"}', "event", "'progressInterval'"),
        ('{"event": "E()", "progressInterval": "0x"}', "event", "'progressInterval'"),
        ('{"event": "E()", "progressInterval": "0x-1"}', "event", "'progressInterval'"),
        ('{"event": "E()", "progressInterval": 1000001}', "event", "'progressInterval'"),
        ('{"event": "E()", "progressInterval": null}', "event", "'progressInterval'"),
        ('{"pad": "' + "x" * MAX_REQUEST_BYTES + '"}', "block", f"{MAX_REQUEST_BYTES} bytes"),
    ],
)
def test_a_malformed_request_is_invalid_params_naming_the_problem(raw, kind, text):
    with pytest.raises(JsonRpcError) as caught:
        parse_request(raw, kind)
    assert caught.value.code == -32602
    assert text in caught.value.message


@pytest.mark.parametrize("interval", ["0xzz", "0x²", "0x1g"])
def test_a_progress_interval_with_letters_that_are_not_hex_is_invalid_params(interval):
    with pytest.raises(JsonRpcError) as caught:
        request({"event": "E()", "progressInterval": interval}, "event")
    assert caught.value.code == -32602 and "'progressInterval'" in caught.value.message


NESTED = ["[" * 3000 + "]" * 3000, '{"a":' * 3000 + "1" + "}" * 3000]
PARSE_IN_A_PROCESS = """
import json, sys
from loopchain.rest.icon_monitor import parse_request
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError
try:
    parse_request(sys.stdin.read(), "block")
    print(json.dumps({"parsed": True}))
except JsonRpcError as exc:
    print(json.dumps({"code": exc.code, "message": exc.message}))
except BaseException as exc:
    print(json.dumps({"raised": type(exc).__name__}))
"""


@pytest.mark.parametrize("raw", NESTED, ids=["array", "object"])
def test_a_deeply_nested_request_is_invalid_params(raw):
    """In a process of its own, with Python's default recursion limit as rest_proxy.py has it
    (this one has 100000: py_ecc, imported by iconsdk, raises it)."""
    assert len(raw) < MAX_REQUEST_BYTES
    done = subprocess.run(
        [sys.executable, "-c", PARSE_IN_A_PROCESS],
        input=raw,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    answer = json.loads(done.stdout)
    assert answer.get("code") == -32602, answer


def test_parse_filter_alone():
    assert parse_filter({"event": TRANSFER, "addr": None, "indexed": None}) == EventFilter(
        TRANSFER, None, (), ()
    )
    with pytest.raises(JsonRpcError, match="must be an object"):
        parse_filter([TRANSFER])


# ---------------------------------------------------------------- the filter, pure


def matches(f: EventFilter, score: str, event: dict[str, list[str]]) -> bool:
    return f.matches(score, tuple(event["indexed"]), tuple(event["data"]))


@pytest.mark.parametrize(
    ("flt", "score", "event", "expected"),
    [
        (EventFilter(TRANSFER, None, (), ()), SCORE, transfer(ALICE, BOB, 1), True),
        (EventFilter(TRANSFER, None, (), ()), SCORE, approval(ALICE, BOB, 1), False),
        (EventFilter("Transfer", None, (), ()), SCORE, transfer(ALICE, BOB, 1), False),
        (EventFilter(TRANSFER, SCORE, (), ()), SCORE, transfer(ALICE, BOB, 1), True),
        (EventFilter(TRANSFER, OTHER_SCORE, (), ()), SCORE, transfer(ALICE, BOB, 1), False),
        (EventFilter(TRANSFER, "", (), ()), SCORE, transfer(ALICE, BOB, 1), True),
        (EventFilter(TRANSFER, None, (ALICE,), ()), SCORE, transfer(ALICE, BOB, 1), True),
        (EventFilter(TRANSFER, None, (BOB,), ()), SCORE, transfer(ALICE, BOB, 1), False),
        (EventFilter(TRANSFER, None, (None, BOB), ()), SCORE, transfer(ALICE, BOB, 1), True),
        (EventFilter(TRANSFER, None, (None, CAROL), ()), SCORE, transfer(ALICE, BOB, 1), False),
        (EventFilter(TRANSFER, None, (None, None), ()), SCORE, transfer(ALICE, BOB, 1), True),
        # more indexed values wanted than the event has, even as wildcards
        (
            EventFilter(TRANSFER, None, (None, None, None), ()),
            SCORE,
            transfer(ALICE, BOB, 1),
            False,
        ),
        (EventFilter(TRANSFER, None, (), ("0x1",)), SCORE, transfer(ALICE, BOB, 1), True),
        (EventFilter(TRANSFER, None, (), ("0x2",)), SCORE, transfer(ALICE, BOB, 1), False),
        (EventFilter(TRANSFER, None, (), (None,)), SCORE, transfer(ALICE, BOB, 1), True),
        (EventFilter(TRANSFER, None, (), (None, None)), SCORE, transfer(ALICE, BOB, 1), False),
        # indexed values are compared with indexed values, data with data
        (EventFilter(TRANSFER, None, ("0x1",), ()), SCORE, transfer(ALICE, BOB, 1), False),
        (EventFilter(TRANSFER, None, (), (ALICE,)), SCORE, transfer(ALICE, BOB, 1), False),
        (EventFilter(TRANSFER, None, (ALICE, BOB), ("0x1",)), SCORE, transfer(ALICE, BOB, 1), True),
        (EventFilter(TRANSFER, None, (), ()), SCORE, {"indexed": [], "data": [TRANSFER]}, False),
    ],
)
def test_event_filter_matches(flt, score, event, expected):
    assert matches(flt, score, event) is expected


# ---------------------------------------------------------------- the proxy and its peer


class EventPeer(FakePeer):
    """The fake peer with event logs in its results (`events`, by transaction hash) and a
    GetBlock that waits while `hold` is an unset Event."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        super().__init__(channels=channels)
        self.events: dict[str, list[dict[str, list[str]]]] = {}
        self.hold: asyncio.Event | None = None
        self.results_hold: asyncio.Event | None = None  # GetTxResult waits while it is unset
        self._serial = 0

    async def GetTxResult(self, request: pb.GetTxRequest, context: Any) -> pb.TxResultReply:
        if self.results_hold is not None:
            await self.results_hold.wait()
        reply = await super().GetTxResult(request, context)
        if reply.executed and self.events.get(request.tx_hash):
            reply.events_json = canonical.encode(self.events[request.tx_hash]).decode()
        return reply

    async def GetBlock(self, request: pb.GetBlockRequest, context: Any) -> pb.BlockReply:
        if self.hold is not None:
            await self.hold.wait()
        return await super().GetBlock(request, context)

    def add_block(
        self, *txs_events: list[dict[str, list[str]]], channel: str = DEFAULT_CHANNEL
    ) -> Block:
        """A new block of one transaction per argument, each with those events."""
        chain = self.chains[channel]
        for events in txs_events:
            self._serial += 1
            tx = Transaction.create_v1(chain.name, {"n": self._serial}, self._serial, self.signer)
            chain.pool[tx.hash_hex] = tx
            self.events[tx.hash_hex] = events
        return self.make_block(channel)

    def polls(self, method: str, **fields: Any) -> int:
        return sum(
            1
            for name, req in list(self.calls)
            if name == method and all(getattr(req, k) == v for k, v in fields.items())
        )


@dataclass
class Proxy:
    """create_app served on 127.0.0.1 (a free port) in this process, in front of its fake peer."""

    peer: EventPeer
    server: grpc.aio.Server
    runner: web.AppRunner
    base: str
    monitors: Monitors
    peer_target: str

    def url(self, kind: str, channel: str = DEFAULT_CHANNEL) -> str:
        return f"{self.base}/api/v3/{channel}/{kind}"

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.server.stop(None)


def monitors_of(app: web.Application) -> Monitors:
    """The app's Monitors, through the handler of its block route."""
    for route in app.router.routes():
        if route.resource is not None and route.resource.canonical == icon_monitor.MONITOR_PATHS[0]:
            owner = getattr(route.handler, "__self__", None)
            if isinstance(owner, Monitors):
                return owner
    raise AssertionError("no monitor route in the app")


async def start_proxy(peer: EventPeer, client_check: Any = None, **settings: Any) -> Proxy:
    port = free_port_pair()
    server, _ = await start_fake_peer(port, peer)
    config = load_config(environ={}, overrides={"GRPC_TIMEOUT": GRPC_TIMEOUT, **settings})
    app = create_app(config, f"127.0.0.1:{port}", client_check=client_check)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, rest_port = runner.addresses[0][:2]
    base = f"http://{host}:{rest_port}"
    return Proxy(peer, server, runner, base, monitors_of(app), f"127.0.0.1:{port}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared() -> AsyncIterator[Proxy]:
    proxy = await start_proxy(EventPeer((DEFAULT_CHANNEL, OTHER_CHANNEL, GENESIS_CHANNEL)))
    proxy.peer.add_block([])  # a genesis block
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(shared: Proxy) -> AsyncIterator[Proxy]:
    yield shared
    peer = shared.peer
    if peer.hold is not None:
        peer.hold.set()
        peer.hold = None
    peer.clear_failures()
    peer.score = True
    for chain in peer.chains.values():
        chain.executed_height = None
    # every monitor a test opened is over once the test is
    await wait_open(shared.monitors, 0, "the test's monitors to end")


async def wait_open(monitors: Monitors, count: int, what: str) -> None:
    """Until the proxy has `count` monitors open."""

    async def reached() -> bool:
        return monitors._open == count

    await wait_until_async(reached, RECEIVE_S, what)


@pytest.fixture(autouse=True)
def no_errors_logged(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """The proxy logs no error (no traceback) while a test runs (xfail tests aside)."""
    yield
    if request.node.get_closest_marker("xfail") is None:
        records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
        errors = [r for r in records if r.levelno >= logging.ERROR]
        assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next JSON message from the server (within RECEIVE_S)."""
    message = await ws.receive(timeout=RECEIVE_S)
    assert message.type == WSMsgType.TEXT, message
    value = json.loads(message.data)
    assert isinstance(value, dict), value
    return value


async def assert_closes(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The server closes the socket next (no further message)."""
    message = await ws.receive(timeout=RECEIVE_S)
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), message


async def open_monitor(
    session: aiohttp.ClientSession, url: str, value: Any
) -> aiohttp.ClientWebSocketResponse:
    """A monitor the server accepted ({"code": 0})."""
    ws = await session.ws_connect(url)
    await ws.send_str(json.dumps(value))
    assert await receive(ws) == {"code": 0}
    return ws


def head(block: Block) -> dict[str, str]:
    return {"hash": "0x" + block.hash.hex(), "height": hex(block.height)}


def tip(peer: EventPeer, channel: str = DEFAULT_CHANNEL) -> int:
    return len(peer.chains[channel].blocks) - 1


# ---------------------------------------------------------------- the block monitor


@aio
async def test_a_block_monitor_sees_every_block_from_its_height_in_order(session, proxy):
    peer = proxy.peer
    old = [peer.add_block([]) for _ in range(3)]
    start = old[0].height
    ws = await open_monitor(session, proxy.url("block"), {"height": hex(start)})
    try:
        for block in old:
            assert await receive(ws) == head(block)
        assert proxy.monitors._open == 1
        new = [peer.add_block([], []) for _ in range(2)]  # appended while it watches
        for block in new:
            assert await receive(ws) == head(block)
    finally:
        await ws.close()


@aio
async def test_the_sdks_block_request_and_its_default_height_the_next_block(session, proxy):
    peer = proxy.peer
    last = peer.add_block([])
    sdk = BlockMonitorSpec(None, [])  # no height: from the next block
    ws = await open_monitor(session, proxy.url("block"), sdk.get_request())
    try:
        block = peer.add_block([])
        assert block.height == last.height + 1
        assert await receive(ws) == head(block)  # not the block that was last before
    finally:
        await ws.close()


@aio
async def test_a_block_monitor_of_an_empty_chain_starts_at_its_genesis(session, proxy):
    peer = proxy.peer
    assert peer.chains[GENESIS_CHANNEL].blocks == []
    ws = await open_monitor(session, proxy.url("block", GENESIS_CHANNEL), {})
    try:
        genesis = peer.add_block([], channel=GENESIS_CHANNEL)
        assert await receive(ws) == head(genesis) and genesis.height == 0
        after = peer.add_block([], channel=GENESIS_CHANNEL)
        assert await receive(ws) == head(after)
    finally:
        await ws.close()


@aio
async def test_a_block_monitor_with_filters_sees_the_matching_blocks_with_indexes(session, proxy):
    """Every block is notified (as goloop's monitor does); one holding a matching event also
    carries, per filter, the matching transactions' indexes and their events' indexes."""
    peer = proxy.peer
    filters = [{"event": TRANSFER}, {"event": APPROVAL, "indexed": [ALICE]}]
    ws = await open_monitor(
        session, proxy.url("block"), {"height": hex(tip(peer) + 1), "eventFilters": filters}
    )
    try:
        plain = peer.add_block([], [approval(BOB, ALICE, 1)])  # no match: the block alone
        assert await receive(ws) == head(plain)
        both = peer.add_block(
            [],
            [transfer(ALICE, BOB, 1)],
            [approval(ALICE, BOB, 2), transfer(BOB, CAROL, 3), transfer(ALICE, CAROL, 4)],
        )
        assert await receive(ws) == {
            **head(both),
            "indexes": [["0x1", "0x2"], ["0x2"]],
            "events": [[["0x0"], ["0x1", "0x2"]], [["0x0"]]],
        }
        plain = peer.add_block([approval(BOB, ALICE, 5)])
        assert await receive(ws) == head(plain)
        second = peer.add_block([], [approval(ALICE, CAROL, 6)])
        assert await receive(ws) == {
            **head(second),
            "indexes": [[], ["0x1"]],
            "events": [[], [["0x0"]]],
        }
    finally:
        await ws.close()


@aio
async def test_the_sdks_block_request_with_one_filter_flattened(session, proxy):
    peer = proxy.peer
    sdk = BlockMonitorSpec(tip(peer) + 1, SdkFilter(TRANSFER, SCORE, 0))
    ws = await open_monitor(session, proxy.url("block"), sdk.get_request())
    try:
        plain = peer.add_block([approval(ALICE, BOB, 1)])
        assert await receive(ws) == head(plain)
        block = peer.add_block([transfer(ALICE, BOB, 1)])
        assert await receive(ws) == {**head(block), "indexes": [["0x0"]], "events": [[["0x0"]]]}
    finally:
        await ws.close()


# ---------------------------------------------------------------- the event monitor


@aio
async def test_an_event_monitor_sees_only_matching_transactions_with_their_logs(session, proxy):
    peer = proxy.peer
    sdk = EventMonitorSpec(tip(peer) + 1, SdkFilter(TRANSFER, None, 2, None, BOB), logs=True)
    ws = await open_monitor(session, proxy.url("event"), sdk.get_request())
    try:
        mixed = [approval(ALICE, BOB, 1), transfer(CAROL, BOB, 2), transfer(ALICE, BOB, 3)]
        first = peer.add_block([transfer(ALICE, BOB, 9)], [transfer(ALICE, CAROL, 1)], [], mixed)
        assert await receive(ws) == {
            **head(first),
            "index": "0x0",
            "events": ["0x0"],
            "logs": [{"scoreAddress": SCORE, **transfer(ALICE, BOB, 9)}],
        }
        assert await receive(ws) == {
            **head(first),
            "index": "0x3",
            "events": ["0x1", "0x2"],
            "logs": [
                {"scoreAddress": SCORE, **transfer(CAROL, BOB, 2)},
                {"scoreAddress": SCORE, **transfer(ALICE, BOB, 3)},
            ],
        }
        peer.add_block([transfer(BOB, ALICE, 1)], [approval(ALICE, BOB, 1)])  # nothing
        later = peer.add_block([], [transfer(CAROL, BOB, 7)])
        note = await receive(ws)
        assert (note["height"], note["index"]) == (hex(later.height), "0x1")
    finally:
        await ws.close()


@aio
async def test_an_event_monitor_without_logs_and_with_several_filters(session, proxy):
    peer = proxy.peer
    filters = [
        {"event": APPROVAL, "addr": OTHER_SCORE},  # another SCORE's: never here
        {"event": TRANSFER, "addr": SCORE, "data": ["0x7"]},
        {"event": APPROVAL, "indexed": [None, CAROL]},
    ]
    ws = await open_monitor(
        session, proxy.url("event"), {"height": hex(tip(peer) + 1), "eventFilters": filters}
    )
    try:
        block = peer.add_block(
            [approval(ALICE, BOB, 1)],
            [transfer(ALICE, BOB, 7), approval(ALICE, CAROL, 1), transfer(ALICE, BOB, 8)],
        )
        assert await receive(ws) == {**head(block), "index": "0x1", "events": ["0x0", "0x1"]}
        last = peer.add_block([approval(BOB, CAROL, 3)])
        assert await receive(ws) == {**head(last), "index": "0x0", "events": ["0x0"]}
    finally:
        await ws.close()


@aio
async def test_a_block_not_executed_yet_is_notified_once_it_is(session, proxy):
    peer = proxy.peer
    chain = peer.chains[DEFAULT_CHANNEL]
    chain.executed_height = tip(peer)
    ws = await open_monitor(session, proxy.url("event"), {"event": TRANSFER})
    try:
        block = peer.add_block([transfer(ALICE, BOB, 1)])
        tx_hash = block.transactions[0].hash_hex

        async def polled_twice() -> bool:
            return peer.polls("GetTxResult", tx_hash=tx_hash) >= 2

        await wait_until_async(polled_twice, RECEIVE_S, "the monitor to wait for the result")
        chain.executed_height = None
        assert await receive(ws) == {**head(block), "index": "0x0", "events": ["0x0"]}
    finally:
        await ws.close()


@aio
async def test_monitors_read_a_block_and_its_results_once_for_all_of_them(session, proxy):
    """Eight event monitors of a block of 200 transactions: the peer is asked for the block once
    and for each result once, in a few batch calls. Before, each monitor read the block and
    looked up its transactions' results one after another: 8 block reads, 1,600 lookups and a
    batch call per transaction, so an event monitor fell behind a loaded chain for good."""
    peer = proxy.peer
    count, monitors = 200, 8
    height = tip(peer) + 1
    wanted = {"height": hex(height), "event": TRANSFER}
    sockets = [await open_monitor(session, proxy.url("event"), wanted) for _ in range(monitors)]
    try:
        peer.calls.clear()
        lookups, batches = peer.counted["GetTxResult"], peer.counted["GetTxResultBatch"]
        block = peer.add_block(*([transfer(ALICE, BOB, n)] for n in range(count)))
        assert block.height == height
        for ws in sockets:
            notes = [await receive(ws) for _ in range(count)]
            assert [n["index"] for n in notes] == [hex(i) for i in range(count)]
        assert peer.polls("GetBlock", height=height) == 1
        assert peer.counted["GetTxResult"] - lookups == count
        assert peer.counted["GetTxResultBatch"] - batches <= 2 * count // SHARED_LOOKUPS + 2
    finally:
        for ws in sockets:
            await ws.close()


@aio
async def test_monitors_take_at_most_a_quarter_of_the_proxys_calls(session):
    """Monitors of four blocks of 30 transactions each, their results slow to come: they hold at
    most a quarter of REST_MAX_INFLIGHT (40) calls to the peer, and another client is answered
    meanwhile; every monitor hears its events once the results come. Before, each block's read
    made 64 calls at once: the monitors took the proxy's calls whole, other clients were refused
    busy, and the monitors whose calls were refused were closed with -32603 (review)."""
    peer = EventPeer((DEFAULT_CHANNEL,))
    peer.add_block([])
    proxy = await start_proxy(peer, REST_MAX_INFLIGHT=40)
    sockets = []
    try:
        peer.results_hold = asyncio.Event()
        blocks = [peer.add_block(*([transfer(ALICE, BOB, n)] for n in range(30))) for _ in range(4)]
        for block in blocks:
            wanted = {"height": hex(block.height), "event": TRANSFER}
            sockets.append(await open_monitor(session, proxy.url("event"), wanted))
        inflight = proxy.monitors._reader._api._inflight  # the proxy's calls, by kind

        async def calls_out() -> bool:
            return inflight[False] >= 10

        await wait_until_async(calls_out, RECEIVE_S, "the monitors' calls to the peer out")
        call = {"jsonrpc": "2.0", "id": 1, "method": "icx_getLastBlock"}
        answers = await asyncio.gather(
            *(session.post(f"{proxy.base}/api/v3", json=call) for _ in range(20))
        )
        for answer in answers:
            body = await answer.json()
            assert "result" in body, body  # not "the peer is busy"
        assert inflight[False] == 10  # a quarter of 40, the others waiting their turn
        peer.results_hold.set()
        for ws in sockets:
            notes = [await receive(ws) for _ in range(30)]
            assert [n["index"] for n in notes] == [hex(i) for i in range(30)]
    finally:
        for ws in sockets:
            await ws.close()
        if peer.results_hold is not None:
            peer.results_hold.set()
        await proxy.stop()


@aio
async def test_the_sdk_hears_an_answer_the_proxy_cannot_send_now_as_a_json_rpc_error():
    """An answer past what the proxy may hold unsent (REST_MAX_SENDING_MB) is refused as busy
    before any handler's shape is known: on /api/v3 in the JSON-RPC shape, which ICON's SDK
    raises as JSONRPCException with when to try again. The v1 body it had made the SDK raise
    KeyError('error') (review)."""
    peer = EventPeer((DEFAULT_CHANNEL,))
    peer.add_block([])
    chain = peer.chains[DEFAULT_CHANNEL]
    for n in range(40):  # a block of ~1.2 MB: its answer alone is past 1 MiB
        tx = Transaction.create_v1(DEFAULT_CHANNEL, {"n": n, "f": "f" * 30_000}, n + 1, peer.signer)
        chain.pool[tx.hash_hex] = tx
    block = peer.make_block(DEFAULT_CHANNEL)
    proxy = await start_proxy(peer, REST_MAX_SENDING_MB=1)
    try:
        sdk = IconService(HTTPProvider(proxy.base, 3, {"timeout": 30}))
        with pytest.raises(JSONRPCException) as refused:
            await asyncio.to_thread(sdk.get_block, block.height)
        message, code, data = refused.value.args
        assert code == JsonRpcCode.INTERNAL_ERROR and "try again shortly" in message, message
        assert data == {"retryAfter": 1}
        assert await asyncio.to_thread(sdk.get_block, 0)  # a small answer still goes
    finally:
        await proxy.stop()


class _BusyReader:
    """A PeerReader whose first `busy` result lookups the proxy refuses as busy."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.asked = 0

    async def result(self, channel: str, tx_hash: str) -> Any:
        self.asked += 1
        if self.asked <= self.busy:
            raise BusyError(JsonRpcCode.INTERNAL_ERROR, "the peer is busy", {"retryAfter": 1})
        if self.asked == self.busy + 1:  # the peer's own failure, 503 too: not tried again
            raise JsonRpcError(JsonRpcCode.INTERNAL_ERROR, "the peer failed", {"retryAfter": 1})
        return None


@aio
async def test_a_monitors_call_refused_as_busy_is_made_again():
    """A shared read's call the proxy refuses as busy (its own refusal for want of room) is made
    again after a pause, not the end of every monitor reading it; the peer's failure ends the
    read (its monitors are told -32603)."""
    reader = _BusyReader(busy=2)
    shared = icon_monitor._SharedReads(reader, calls=1)  # type: ignore[arg-type]
    with pytest.raises(JsonRpcError, match="the peer failed"):
        await shared._events(DEFAULT_CHANNEL, "0x" + "ab" * 32)
    assert reader.asked == 3


@aio
async def test_a_shared_read_ends_when_its_last_monitor_leaves(session, proxy):
    """Two monitors wait for the results of a block not executed yet, then leave: the shared
    read waiting for them ends with them, and is not kept (nobody would hear its answer)."""
    peer = proxy.peer
    peer.chains[DEFAULT_CHANNEL].executed_height = tip(peer)
    wanted = {"height": hex(tip(peer) + 1), "event": TRANSFER}
    sockets = [await open_monitor(session, proxy.url("event"), wanted) for _ in range(2)]
    block = peer.add_block([transfer(ALICE, BOB, 1)])
    tx_hash = block.transactions[0].hash_hex

    async def polled_twice() -> bool:
        return peer.polls("GetTxResult", tx_hash=tx_hash) >= 2

    await wait_until_async(polled_twice, RECEIVE_S, "the monitors to wait for the result")
    shared = proxy.monitors._shared
    read = ("events", DEFAULT_CHANNEL, block.hash)
    assert read in shared._kept
    for ws in sockets:
        await ws.close()

    async def ended() -> bool:
        reading = [t for t in asyncio.all_tasks() if "_read_events" in t.get_coro().__qualname__]
        return not monitor_tasks() and not reading and read not in shared._kept

    await wait_until_async(ended, RECEIVE_S, "the shared read to end with its monitors")


@aio
async def test_progress_after_the_interval_of_quiet_blocks(session, proxy):
    peer = proxy.peer
    start = tip(peer) + 1
    sdk = EventMonitorSpec(start, SdkFilter(TRANSFER, None, 0), progress_interval=3)
    ws = await open_monitor(session, proxy.url("event"), sdk.get_request())
    try:
        quiet = [peer.add_block([approval(ALICE, BOB, 1)]) for _ in range(3)]
        assert await receive(ws) == {"progress": hex(quiet[-1].height + 1)}
        hit = peer.add_block([transfer(ALICE, BOB, 1)])
        assert await receive(ws) == {**head(hit), "index": "0x0", "events": ["0x0"]}
        for _ in range(2):
            peer.add_block([])  # two quiet blocks: no progress yet
        again = peer.add_block([transfer(ALICE, BOB, 2)])
        assert await receive(ws) == {**head(again), "index": "0x0", "events": ["0x0"]}
        quiet = [peer.add_block([]) for _ in range(3)]
        assert await receive(ws) == {"progress": hex(quiet[-1].height + 1)}
    finally:
        await ws.close()


# ---------------------------------------------------------------- refusals and endings


@aio
@pytest.mark.parametrize(
    ("kind", "raw", "text"),
    [
        ("block", "{not json", "not JSON"),
        ("block", '{"height": "12"}', "not a block height"),
        ("block", '{"eventFilters": [{"event": "E()", "topic": "x"}]}', "field 'topic'"),
        ("event", '{"height": "0x1"}', "needs an event filter"),
        ("event", '{"event": "E()", "progressInterval": -3}', "'progressInterval'"),
    ],
)
async def test_a_malformed_request_is_answered_minus_32602_and_closed(
    session, proxy, kind, raw, text
):
    async with session.ws_connect(proxy.url(kind)) as ws:
        await ws.send_str(raw)
        answer = await receive(ws)
        assert answer["code"] == -32602 and text in answer["message"], answer
        assert set(answer) == {"code", "message"}
        await assert_closes(ws)


@aio
async def test_an_unknown_channel_is_refused_naming_it(session, proxy):
    for kind, value in (("block", {}), ("event", {"event": TRANSFER})):
        async with session.ws_connect(proxy.url(kind, "nochannel")) as ws:
            await ws.send_str(json.dumps(value))
            answer = await receive(ws)
            assert answer["code"] == -32602 and "'nochannel'" in answer["message"], answer
            await assert_closes(ws)


@aio
async def test_a_peer_that_cannot_be_read_at_the_request_is_minus_32603(session, proxy):
    proxy.peer.fail("GetStatus", grpc.StatusCode.UNAVAILABLE, "down")
    async with session.ws_connect(proxy.url("block")) as ws:
        await ws.send_str("{}")
        answer = await receive(ws)
        assert answer["code"] == -32603 and "unreachable" in answer["message"], answer
        await assert_closes(ws)


@aio
@pytest.mark.parametrize("method", ["GetBlock", "GetTxResult"])
async def test_a_peer_failing_mid_monitor_is_minus_32603_then_closed(session, proxy, method):
    peer = proxy.peer
    kind, value = ("block", {}) if method == "GetBlock" else ("event", {"event": TRANSFER})
    ws = await open_monitor(session, proxy.url(kind), value)
    try:
        first = peer.add_block([transfer(ALICE, BOB, 1)])
        note = await receive(ws)
        assert (note["hash"], note["height"]) == (head(first)["hash"], head(first)["height"])
        peer.fail(method, grpc.StatusCode.UNAVAILABLE, "down")
        peer.add_block([transfer(ALICE, BOB, 2)])
        answer = await receive(ws)
        # a whole call that failed: "is unreachable (down)"; a lookup refused in its entry: the
        # peer's own words
        assert answer["code"] == -32603 and "down" in answer["message"], answer
        await assert_closes(ws)
    finally:
        await ws.close()


@aio
async def test_a_peer_that_hangs_mid_monitor_is_minus_32603_within_the_deadline(session, proxy):
    peer = proxy.peer
    ws = await open_monitor(session, proxy.url("block"), {})
    try:
        peer.hold = asyncio.Event()
        peer.add_block([])  # never read: GetBlock hangs
        answer = await receive(ws)
        assert answer["code"] == -32603 and f"within {GRPC_TIMEOUT:g} s" in answer["message"]
        await assert_closes(ws)
    finally:
        await ws.close()


@aio
async def test_a_stopped_peer_ends_the_monitor_with_minus_32603(session, proxy):
    own = await start_proxy(EventPeer((DEFAULT_CHANNEL,)))
    try:
        ws = await open_monitor(session, own.url("block"), {})
        try:
            block = own.peer.add_block([])
            assert await receive(ws) == head(block)
            await own.server.stop(None)
            answer = await receive(ws)
            assert answer["code"] == -32603, answer
            assert f"the peer at {own.peer_target}" in answer["message"], answer
            await assert_closes(ws)
        finally:
            await ws.close()
        await wait_open(own.monitors, 0, "the monitor to end")
    finally:
        await own.stop()


@aio
async def test_keepalives_are_ignored(session, proxy):
    peer = proxy.peer
    ws = await open_monitor(session, proxy.url("block"), {})
    try:
        await ws.send_str('{"keepalive":"0x1"}')
        block = peer.add_block([])
        assert await receive(ws) == head(block)  # no answer to the keepalive, no end
        for _ in range(3):
            await ws.send_str('{"keepalive":"0x1"}')
        block = peer.add_block([])
        assert await receive(ws) == head(block)
    finally:
        await ws.close()


def monitor_tasks() -> list[asyncio.Task[Any]]:
    names = ("Monitors._notify", "_drain")
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ in names]


@aio
async def test_the_client_closing_ends_the_monitor(session, proxy):
    peer = proxy.peer
    ws = await open_monitor(session, proxy.url("event"), {"event": TRANSFER})
    block = peer.add_block([transfer(ALICE, BOB, 1)])
    assert (await receive(ws))["hash"] == head(block)["hash"]
    assert proxy.monitors._open == 1 and len(monitor_tasks()) == 2
    await ws.close()

    async def ended() -> bool:
        return proxy.monitors._open == 0 and not monitor_tasks()

    await wait_until_async(ended, RECEIVE_S, "the monitor and its tasks to end")


@aio
async def test_a_client_leaving_before_its_request_frees_the_monitor(session, proxy):
    ws = await session.ws_connect(proxy.url("block"))

    await wait_open(proxy.monitors, 1, "the monitor to open")
    await ws.close()
    await wait_open(proxy.monitors, 0, "the monitor to end")


@aio
async def test_a_client_that_sends_no_request_is_answered_and_closed(session, proxy, monkeypatch):
    monkeypatch.setattr(icon_monitor, "REQUEST_WAIT", 0.2)
    async with session.ws_connect(proxy.url("block")) as ws:
        assert await receive(ws) == {"code": -32600, "message": "no request"}
        await assert_closes(ws)


@aio
async def test_a_request_over_the_size_limit_closes_the_socket(session, proxy):
    async with session.ws_connect(proxy.url("block")) as ws:
        await ws.send_str(json.dumps({"pad": "x" * MAX_REQUEST_BYTES}))
        await assert_closes(ws)
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


@aio
async def test_monitors_beyond_the_limit_are_refused_with_503(session, proxy, monkeypatch):
    monkeypatch.setattr(icon_monitor, "MAX_MONITORS", 2)
    kept = [await open_monitor(session, proxy.url("block"), {}) for _ in range(2)]
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(proxy.url("event"))
        assert refused.value.status == 503
        await kept.pop().close()
        await wait_open(proxy.monitors, 1, "one monitor to end")
        kept.append(await open_monitor(session, proxy.url("event"), {"event": TRANSFER}))
    finally:
        for ws in kept:
            await ws.close()


@aio
async def test_monitors_opened_at_once_are_held_to_the_limit(session, proxy, monkeypatch):
    monkeypatch.setattr(icon_monitor, "MAX_MONITORS", 2)
    tries = await asyncio.gather(
        *(session.ws_connect(proxy.url("block")) for _ in range(5)), return_exceptions=True
    )
    opened = [t for t in tries if isinstance(t, aiohttp.ClientWebSocketResponse)]
    try:
        refused = [t for t in tries if isinstance(t, aiohttp.WSServerHandshakeError)]
        assert len(opened) == 2 and len(refused) == 3, tries
        assert {e.status for e in refused} == {503}
    finally:
        for ws in opened:
            await ws.close()


@aio
async def test_the_503_beyond_the_limit_says_when_to_retry(session, proxy, monkeypatch):
    monkeypatch.setattr(icon_monitor, "MAX_MONITORS", 0)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(proxy.url("block"))
    assert refused.value.status == 503
    headers = refused.value.headers or {}
    assert headers.get("Retry-After") == "5", dict(headers)


class RawClient:
    """A websocket client on a bare socket, to leave without a closing handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, base: str, path: str, receive_buffer: int = 0) -> RawClient:
        """Connected and upgraded (with `receive_buffer`: the socket's SO_RCVBUF)."""
        host, port = base.removeprefix("http://").split(":")
        sock = socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECEIVE_S)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        return cls(reader, writer)

    def send_text(self, text: str) -> None:
        payload, mask = text.encode(), b"\x11\x22\x33\x44"
        assert len(payload) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def read_text(self) -> str:
        first, size = await asyncio.wait_for(self.reader.readexactly(2), RECEIVE_S)
        assert first == 0x81 and size < 126, (first, size)
        return (await self.reader.readexactly(size)).decode()

    def abort(self) -> None:
        self.writer.transport.abort()


@aio
async def test_a_client_vanishing_mid_stream_ends_the_monitor_quietly(proxy):
    peer = proxy.peer
    for _ in range(100):
        peer.add_block([], channel=OTHER_CHANNEL)
    client = await RawClient.connect(proxy.base, f"/api/v3/{OTHER_CHANNEL}/block")
    client.send_text('{"height": "0x0"}')
    assert json.loads(await client.read_text()) == {"code": 0}
    assert json.loads(await client.read_text())["height"] == "0x0"
    client.abort()  # no closing handshake, while blocks are being sent

    async def ended() -> bool:
        return proxy.monitors._open == 0 and not monitor_tasks()

    await wait_until_async(ended, RECEIVE_S, "the monitor and its tasks to end")


@aio
@pytest.mark.parametrize(
    "raw",
    ['{"event": "E()", "progressInterval": "0xzz"}', '{"event": "E()", "progressInterval": "0x²"}'],
)
async def test_a_request_parse_request_chokes_on_is_still_answered_minus_32602(session, proxy, raw):
    async with session.ws_connect(proxy.url("event")) as ws:
        await ws.send_str(raw)
        answer = await receive(ws)
        assert answer["code"] == -32602, answer


@aio
async def test_a_request_in_a_binary_frame_is_answered(session, proxy):
    async with session.ws_connect(proxy.url("block")) as ws:
        await ws.send_bytes(b"{}")
        answer = await receive(ws)
        assert "code" in answer, answer


@aio
async def test_a_deeply_nested_request_to_rest_proxy_is_answered_minus_32602(session, tmp_path):
    port = free_port_pair()
    server, _ = await start_fake_peer(port, EventPeer((DEFAULT_CHANNEL,)))
    process = ProxyProcess(port, tmp_path, {"GRPC_TIMEOUT": GRPC_TIMEOUT})
    process.start()
    try:
        await process.wait_ready(session)
        async with session.ws_connect(f"{process.base}/api/v3/{DEFAULT_CHANNEL}/block") as ws:
            await ws.send_str(NESTED[0])
            answer = await receive(ws)
            assert answer["code"] == -32602, answer
    finally:
        status = process.stop()
        await server.stop(None)
    assert status == 0, process.log_text()
    process.assert_clean_log()


@aio
@pytest.mark.parametrize("channel", ["a%00b", "a%09b", "x" * 300])
async def test_a_path_whose_channel_is_no_channel_name_is_answered_as_v3_answers_it(
    session, proxy, channel
):
    """The channel of a monitor's path is checked first, as /api/v3/<channel> checks it: 400 and
    its -32602 error, the websocket refused. Before, the monitor was opened and the name sent on
    to the peer."""
    call = {"jsonrpc": "2.0", "id": None, "method": "icx_getLastBlock"}
    async with session.post(f"{proxy.base}/api/v3/{channel}", json=call) as resp:
        v3 = resp.status, await resp.json()
    assert v3[0] == 400 and v3[1]["error"]["code"] == -32602, v3
    for kind in ("block", "event"):
        async with session.get(proxy.url(kind, channel)) as resp:
            assert (resp.status, await resp.json()) == v3
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(proxy.url(kind, channel))
        assert refused.value.status == 400


@aio
async def test_one_client_address_is_served_at_most_its_share_of_monitors(session, proxy):
    """Of MAX_MONITORS, one client address has at most MAX_MONITORS_PER_CLIENT: beyond, 429 with
    Retry-After; once one of its monitors ends, it may open another. Before, one client could
    take all 64 (and, reading nothing, hold them for good)."""
    share = icon_monitor.MAX_MONITORS_PER_CLIENT
    kept = [await open_monitor(session, proxy.url("block"), {}) for _ in range(share)]
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(proxy.url("event"))
        assert refused.value.status == 429
        assert (refused.value.headers or {}).get("Retry-After") == "5"
        await kept.pop().close()
        await wait_open(proxy.monitors, share - 1, "one monitor to end")
        kept.append(await open_monitor(session, proxy.url("event"), {"event": TRANSFER}))
    finally:
        for ws in kept:
            await ws.close()


@pytest_asyncio.fixture(loop_scope="module")
async def quick() -> AsyncIterator[Proxy]:
    """A proxy of its own whose clients must take each message within 1 s."""
    proxy = await start_proxy(EventPeer((DEFAULT_CHANNEL,)), REST_SEND_TIMEOUT=1.0)
    proxy.peer.add_block([])
    try:
        yield proxy
    finally:
        await proxy.stop()


@aio
async def test_a_client_that_reads_nothing_is_dropped_after_the_send_deadline(quick, caplog):
    """An event monitor with logs from height 0 of a chain of large events whose client reads
    nothing (a small receive buffer): once a message waits REST_SEND_TIMEOUT for the client to
    take it, the connection is dropped and the monitor ends. Before, its send waited for good,
    holding the monitor."""
    caplog.set_level(logging.DEBUG, icon_monitor.__name__)
    large = {"indexed": [TRANSFER, ALICE, BOB], "data": ["0x" + "ab" * 16_000]}
    for _ in range(300):  # ~10 MB of notes in all: more than the sockets' buffers hold
        quick.peer.add_block([large])
    client = await RawClient.connect(quick.base, f"/api/v3/{DEFAULT_CHANNEL}/event", 4096)
    client.send_text(json.dumps({"height": "0x0", "event": TRANSFER, "logs": True}))
    assert json.loads(await client.read_text()) == {"code": 0}  # and never read again
    try:
        await wait_open(quick.monitors, 1, "the monitor to open")

        async def ended() -> bool:
            return quick.monitors._open == 0 and not monitor_tasks()

        await wait_until_async(ended, 60, "the monitor of a client reading nothing to end")
        assert "it took no message for 1 s" in caplog.text  # (not its pings unanswered)
    finally:
        client.abort()


@aio
async def test_a_client_that_answers_no_ping_is_closed(session, quick, monkeypatch):
    """The proxy pings a monitor's client every HEARTBEAT_S; one that answers no ping within half
    of it is closed and its monitor ends. Before, a client gone without a word (or never
    answering) held its monitor while no block came."""
    monkeypatch.setattr(icon_monitor, "HEARTBEAT_S", 1.0)
    ws = await session.ws_connect(quick.url("block"), autoping=False)
    await ws.send_str("{}")
    assert await receive(ws) == {"code": 0}
    seen = []
    while not ws.closed:
        message = await ws.receive(timeout=RECEIVE_S)
        seen.append(message.type)
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            break
    assert seen[0] == WSMsgType.PING, seen
    await wait_open(quick.monitors, 0, "the monitor to end")


async def _closed_for_a_ping_flood(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Send 3 x FRAME_BURST pings at once: the monitor closes 1008 before answering them all."""
    for n in range(3 * icon_monitor.FRAME_BURST):
        await ws.ping(str(n).encode())
    kinds = []
    while True:
        message = await ws.receive(timeout=RECEIVE_S)
        kinds.append(message.type)
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            break
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION, kinds
    assert kinds.count(WSMsgType.PONG) < 3 * icon_monitor.FRAME_BURST


@aio
async def test_pings_are_answered_and_a_client_sending_too_many_frames_is_closed(session, proxy):
    """aiohttp answered a client's pings itself, waiting on the client with no deadline: one
    sending pings and reading nothing held its monitor (and the proxy's polls of the peer) for
    as long as it stayed. Pings are answered as messages are, within the send deadline, and a
    client sending more than FRAME_BURST frames at once (FRAMES_PER_S a second) is closed 1008."""
    ws = await session.ws_connect(proxy.url("block"), autoping=False)
    try:
        await ws.ping(b"before its request")
        answer = await ws.receive(timeout=RECEIVE_S)
        assert (answer.type, answer.data) == (WSMsgType.PONG, b"before its request")
        await ws.send_str("{}")
        assert await receive(ws) == {"code": 0}
        await ws.ping(b"one")
        answer = await ws.receive(timeout=RECEIVE_S)
        assert (answer.type, answer.data) == (WSMsgType.PONG, b"one")
        await _closed_for_a_ping_flood(ws)
    finally:
        await ws.close()
    await wait_open(proxy.monitors, 0, "the monitor to end")


@aio
async def test_a_client_sending_too_many_frames_before_its_request_is_closed(session, proxy):
    """Before its request a monitor answered every ping for REQUEST_WAIT (30 s), however many:
    4 sockets had 2 million answered in 5 s, 6 CPU-seconds of the proxy (review). The frames
    before the request count as those after it."""
    ws = await session.ws_connect(proxy.url("block"), autoping=False)
    try:
        await _closed_for_a_ping_flood(ws)
    finally:
        await ws.close()
    await wait_open(proxy.monitors, 0, "the monitor to end")


@aio
async def test_a_monitor_closes_once_its_clients_certificate_is_refused(session):
    """ENABLE_REST_SSL 2 checks a client's certificate at each request (RevokedClients, which
    leaves the check made again in the request): a monitor is one request, and one opened
    before its client's certificate was revoked went on streaming the channel's blocks."""
    refused: list[str | None] = [None]

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        request[CLIENT_RECHECK] = lambda: refused[0]
        return await handler(request)

    proxy = await start_proxy(EventPeer((DEFAULT_CHANNEL,)), client_check=check)
    peer = proxy.peer
    peer.add_block([])
    try:
        ws = await open_monitor(session, proxy.url("block"), {})
        block = peer.add_block([])
        assert await receive(ws) == head(block)
        refused[0] = "revoked (serial 1f)"
        peer.add_block([])
        message = await ws.receive(timeout=RECEIVE_S)
        assert message.type == WSMsgType.CLOSE, message
        assert message.data == WSCloseCode.POLICY_VIOLATION
        assert message.extra == "client certificate refused: revoked (serial 1f)"
        await ws.close()
        await wait_open(proxy.monitors, 0, "the monitor to end")
    finally:
        await proxy.stop()


@aio
async def test_monitors_are_closed_going_away_as_the_proxy_stops(session):
    """The proxy stopping (its runner's cleanup, as SIGTERM starts it) closes its monitors at
    once, 1001 with its reason, one before its request too: a monitor open held the stop for its
    whole shutdown time, and the real proxy was killed meanwhile (lifecycle review)."""
    alone = await start_proxy(EventPeer((DEFAULT_CHANNEL,)))
    alone.peer.add_block([])
    stopping: asyncio.Task[None] | None = None
    try:
        watching = await open_monitor(session, alone.url("block"), {"height": "0x1"})
        silent = await session.ws_connect(alone.url("event"))  # no request yet
        await wait_open(alone.monitors, 2, "both monitors")
        stopping = asyncio.create_task(alone.runner.cleanup())
        for ws in (watching, silent):
            message = await ws.receive(timeout=RECEIVE_S)
            assert message.type == WSMsgType.CLOSE, message
            assert message.data == WSCloseCode.GOING_AWAY, message
            assert message.extra == icon_monitor.STOPPING, message
        await asyncio.wait_for(stopping, RECEIVE_S)
    finally:
        if stopping is None:
            await alone.runner.cleanup()
        await alone.server.stop(None)
