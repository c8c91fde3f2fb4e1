"""ICON's websocket monitors (spec: icon-jsonrpc-v3.md, "Websocket monitor"), as iconsdk's
`IconService.monitor()` uses them: `GET /api/v3/<channel>/block` and `/api/v3/<channel>/event`.

The client sends one JSON request: `height` ("0x…", default: the next block), and event filters
either as `eventFilters: [{event, addr?, indexed?, data?}]` or one filter flattened to the top level;
`logs: true` adds the matching event logs, `progressInterval` (event monitor) a `{"progress": "0x…"}`
after that many blocks without a notification. The server answers `{"code": 0}`, or a non-zero code
(-32602 bad request, -32603 the peer cannot be read) and a `message`, then closes. Then:
* block monitor: `{"hash", "height"}` for every final block from `height` on; with filters, a
  block holding a matching event also carries `indexes` (per filter, the matching transactions'
  indexes) and `events` (per filter and transaction, the matching events' indexes), as goloop's;
* event monitor: `{"hash", "height", "index", "events"[, "logs"]}` for every transaction whose
  result holds a matching event (results are read once the block is executed).
`{"keepalive": "0x1"}` from the client is ignored; the request may come in a text or a binary
frame. A path whose channel cannot be a channel name is answered as v3 answers it (400,
-32602). A proxy serves at most MAX_MONITORS at once (503 with Retry-After beyond), at most
MAX_MONITORS_PER_CLIENT to one client (an address; an IPv6 host's /64), 429 with Retry-After
beyond; every read of the peer has the proxy's gRPC deadline, and a monitor that cannot read the peer says so
(`{"code": -32603, "message"}`) and closes. What monitors read of the peer is read once for all
of them (_SharedReads): a block at a height, and once it is executed the events of its
transactions, looked up SHARED_LOOKUPS at a time (so in few batch calls). A client must take each message within
REST_SEND_TIMEOUT, else its connection is dropped, and answer the server's pings (every
HEARTBEAT_S) within half of it, else it is closed: one that reads nothing, or is gone without a
word, would hold its monitor for good. Its own pings are answered within the same deadline, and
past FRAME_BURST frames at once (FRAMES_PER_S a second) it is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from loopchain.configure import RefusalLog
from loopchain.http_site import CLIENT_RECHECK
from loopchain.rates import TokenBucket
from loopchain.rest.errors import json_response
from loopchain.rest.icon_methods import height_param
from loopchain.rest.icon_peer import BusyError, FoundResult, PeerReader
from loopchain.rest.jsonrpc import failure, path_channel
from loopchain.sources import host_source
from loopchain.types.codes import ResponseCode, error_body
from loopchain.types.icon_address import channel_score_address
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)

MONITOR_PATHS = ("/api/v3/{channel}/block", "/api/v3/{channel}/event")
MAX_MONITORS = 64
MAX_MONITORS_PER_CLIENT = 8  # of MAX_MONITORS, to one client address
MAX_FILTERS = 32
MAX_REQUEST_BYTES = 64 * 1024
RETRY_AFTER_S = 5
REQUEST_WAIT = 30.0  # seconds for the client's request after the upgrade
STOPPING = "the REST proxy is stopping"  # a monitor's close message (1001) as it stops
HEARTBEAT_S = 30.0  # a ping every this many seconds; a client answering none in half is closed
FRAME_BURST, FRAMES_PER_S = 20, 5  # what a client may send (keepalives, pings) at once, a second
TOO_MANY_FRAMES = b"too many frames"
T = TypeVar("T")
POLL_FIRST, POLL_MAX = 0.05, 0.5  # seconds between looks for the next block or its results
SHARED_READS = 8  # blocks and blocks' events kept for every monitor (the newest read)
SHARED_LOOKUPS = 64  # calls to the peer all monitors together make at once (see Monitors)
_HEX = re.compile(r"0x[0-9a-fA-F]{1,8}")


@dataclass(frozen=True)
class EventFilter:
    """Events whose signature is `event` (and from `addr`, and with these values; None: any)."""

    event: str
    addr: str | None
    indexed: tuple[str | None, ...]
    data: tuple[str | None, ...]

    def matches(self, score: str, indexed: tuple[str, ...], data: tuple[str, ...]) -> bool:
        if not indexed or indexed[0] != self.event or (self.addr and self.addr != score):
            return False
        return _values_match(self.indexed, indexed[1:]) and _values_match(self.data, data)


def _values_match(wanted: tuple[str | None, ...], have: tuple[str, ...]) -> bool:
    if len(wanted) > len(have):
        return False
    return all(w is None or w == h for w, h in zip(wanted, have, strict=False))


@dataclass(frozen=True)
class MonitorRequest:
    height: int | None
    filters: tuple[EventFilter, ...]
    logs: bool
    progress_interval: int


def _bad(message: str) -> JsonRpcError:
    return JsonRpcError(JsonRpcCode.INVALID_PARAMS, message)


def _values(value: Any, name: str) -> tuple[str | None, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
        raise _bad(f"{name} must be a list of strings or nulls")
    return tuple(value)


def parse_filter(value: Any) -> EventFilter:
    """One event filter; JsonRpcError -32602 naming what is wrong."""
    if not isinstance(value, dict):
        raise _bad("an event filter must be an object")
    unknown = sorted(set(value) - {"event", "addr", "indexed", "data"})
    if unknown:
        raise _bad(f"unknown event filter field {unknown[0]!r}")
    event, addr = value.get("event"), value.get("addr")
    if not isinstance(event, str) or not event:
        raise _bad("an event filter needs 'event', the event's signature")
    if addr is not None and not isinstance(addr, str):
        raise _bad("an event filter's 'addr' must be a string")
    return EventFilter(
        event, addr, _values(value.get("indexed"), "indexed"), _values(value.get("data"), "data")
    )


def parse_request(raw: str, kind: str) -> MonitorRequest:
    """The client's monitor request; JsonRpcError -32602 when it is not one."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise _bad(f"the request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested beyond the interpreter's limit
        raise _bad("the request is not JSON (or nested too deeply)") from None
    if not isinstance(value, dict):
        raise _bad("the request must be a JSON object")
    height = value.get("height")
    if height is not None and not isinstance(height, str):
        raise _bad("'height' must be a string such as \"0x1a\"")
    filters: list[EventFilter] = []
    if "eventFilters" in value:
        listed = value["eventFilters"]
        if not isinstance(listed, list):
            raise _bad("'eventFilters' must be a list")
        filters = [parse_filter(item) for item in listed]
    if "event" in value:  # one filter, flattened to the top level
        flat = {k: value[k] for k in ("event", "addr", "indexed", "data") if k in value}
        filters.append(parse_filter(flat))
    if len(filters) > MAX_FILTERS:
        raise _bad(f"at most {MAX_FILTERS} event filters")
    if kind == "event" and not filters:
        raise _bad("an event monitor needs an event filter")
    interval = value.get("progressInterval", 0)
    if isinstance(interval, str):
        interval = int(interval, 16) if _HEX.fullmatch(interval) else -1
    if isinstance(interval, bool) or not isinstance(interval, int) or not 0 <= interval <= 10**6:
        raise _bad("'progressInterval' must be a number of blocks")
    logs = value.get("logs", False)
    if not isinstance(logs, bool):
        logs = logs in ("0x1", "true")
    return MonitorRequest(
        height_param(height) if height is not None else None, tuple(filters), logs, interval
    )


def _frame_rate() -> TokenBucket:
    """What a client may send: FRAME_BURST frames at once, FRAMES_PER_S a second."""
    return TokenBucket(FRAMES_PER_S, FRAME_BURST, asyncio.get_running_loop().time())


async def _take_frame(
    ws: web.WebSocketResponse, incoming: Any, rate: TokenBucket, send_timeout: float
) -> bool:
    """Count `incoming` (a frame other than the request) and answer a ping within
    `send_timeout` (else _Stalled); False once the client sent too many, the socket closed 1008."""
    try:
        async with asyncio.timeout(send_timeout):
            if rate.available(asyncio.get_running_loop().time()) < 1:
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=TOO_MANY_FRAMES)
                return False
            rate.take()
            if incoming.type is WSMsgType.PING:
                await ws.pong(incoming.data)
    except TimeoutError:
        raise _Stalled() from None
    return True


async def _drain(ws: web.WebSocketResponse, send_timeout: float, rate: TokenBucket) -> None:
    """Read what the client sends until it closes: its pings answered, each pong taken within
    `send_timeout` as every message is (else _Stalled), the rest ignored (keepalives). Past
    FRAME_BURST frames at once and FRAMES_PER_S a second, it is closed (1008). aiohttp's own
    answer to a ping waited on the client with no deadline: one sending pings and reading
    nothing held its monitor, and the peer's polls, for as long as it stayed (review)."""
    async for incoming in ws:
        if incoming.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return
        if not await _take_frame(ws, incoming, rate, send_timeout):
            return


class _Stalled(Exception):
    """The client took none of a message within the send deadline."""


def _refusal(message: str, status: int) -> web.Response:
    refused = json_response(error_body(ResponseCode.FAIL, message), status)
    refused.headers["Retry-After"] = str(RETRY_AFTER_S)
    return refused


@dataclass
class _Read:
    """A read of the peer shared by the monitors asking for it."""

    task: asyncio.Task[Any]
    askers: int = 0


class _SharedReads:
    """What monitors read of the peer, read once for all of them: a final block at a height, and
    the events of a block's transactions once it is executed. Before, each monitor read each block
    itself and looked up the results of its transactions one after another: an event monitor took
    a round trip to the peer per transaction, fell behind a loaded chain for good, and 64 of them
    read each block's results 64 times.

    The SHARED_READS newest reads are kept (the monitors following the chain ask for the same
    block); a read that failed or found no block yet is not kept, and one whose askers all left
    is cancelled (the events of a block the SCORE never executes are not waited for forever).

    All of them make at most `calls` calls to the peer at once, and a call the proxy
    refuses as busy is made again after a pause: each block's read made 64 at once, so seven
    monitors on seven busy blocks took the proxy's REST_MAX_INFLIGHT whole, refusing other
    clients, and a monitor whose call was refused was closed (review)."""

    def __init__(self, reader: PeerReader, calls: int = SHARED_LOOKUPS) -> None:
        self._reader = reader
        self._kept: OrderedDict[Hashable, _Read] = OrderedDict()
        self._calls = asyncio.Semaphore(calls)

    async def block(self, channel: str, height: int) -> Any:
        """The final block at `height`, or None while there is none."""
        return await self._once(
            ("block", channel, height),
            lambda: self._patiently(lambda: self._reader.block(channel, height=height)),
        )

    async def _patiently(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, one of the calls allowed at once, made again while the proxy refuses it as
        busy (its own refusal for want of room; the peer's failures end the read)."""
        pause = POLL_FIRST
        while True:
            async with self._calls:
                with contextlib.suppress(BusyError):
                    return await call()
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def events(self, channel: str, block: Any) -> tuple[tuple[Any, ...], ...]:
        """The events of each transaction of `block`, once it is executed."""
        events: tuple[tuple[Any, ...], ...] = await self._once(
            ("events", channel, block.hash), lambda: self._read_events(channel, block)
        )
        return events

    async def _once(self, key: Hashable, read: Callable[[], Awaitable[Any]]) -> Any:
        shared = self._kept.get(key)
        if shared is None:
            shared = _Read(asyncio.ensure_future(read()))
            self._kept[key] = shared
            shared.task.add_done_callback(lambda task: self._settled(key, task))
            while len(self._kept) > SHARED_READS:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
        shared.askers += 1
        try:
            return await asyncio.shield(shared.task)  # (one asker leaving ends it for no other)
        finally:
            shared.askers -= 1
            if not shared.askers and not shared.task.done():  # the last asker left: it ends
                self._forget(key, shared.task)
                shared.task.cancel()

    def _settled(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None or task.result() is None:
            self._forget(key, task)  # read again by the next asker

    def _forget(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        shared = self._kept.get(key)
        if shared is not None and shared.task is task:
            del self._kept[key]

    async def _read_events(self, channel: str, block: Any) -> tuple[tuple[Any, ...], ...]:
        hashes = [tx.hash_hex for tx in block.transactions]
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(hashes), SHARED_LOOKUPS):
            chunk = [
                asyncio.ensure_future(self._events(channel, tx_hash))
                for tx_hash in hashes[start : start + SHARED_LOOKUPS]
            ]
            try:
                found.extend(await asyncio.gather(*chunk))
            finally:  # the first failure (-32603) ends the rest
                for task in chunk:
                    task.cancel()
        return tuple(found)

    async def _events(self, channel: str, tx_hash: str) -> tuple[Any, ...]:
        """A final transaction's events, once its block is executed."""
        pause = POLL_FIRST
        while True:
            found = await self._patiently(lambda: self._reader.result(channel, tx_hash))
            if isinstance(found, FoundResult) and found.outcome is not None:
                return found.outcome.events
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)


class Monitors:
    """The websocket monitors of one REST proxy, reading its peer through `reader`; each message
    is taken by its client within `send_timeout` seconds (REST_SEND_TIMEOUT), else its
    connection is dropped. They make at most SHARED_LOOKUPS calls to the peer at once, and at
    most a quarter of the proxy's `max_inflight` (REST_MAX_INFLIGHT): the rest is its other
    clients'."""

    def __init__(self, reader: PeerReader, send_timeout: float, max_inflight: int) -> None:
        self._reader = reader
        self._shared = _SharedReads(reader, max(1, min(SHARED_LOOKUPS, max_inflight // 4)))
        self._send_timeout = send_timeout
        self._open = 0
        self._by_client: Counter[str] = Counter()  # monitors open, by client (host_source)

    def routes(self) -> list[web.RouteDef]:
        return [web.get(MONITOR_PATHS[0], self.block), web.get(MONITOR_PATHS[1], self.event)]

    async def block(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "block")

    async def event(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "event")

    async def _serve(self, request: web.Request, kind: str) -> web.StreamResponse:
        try:
            channel = path_channel(request)
        except JsonRpcError as exc:
            return failure(None, exc)
        client = host_source(request.remote or "")  # an IPv6 host's /64 counts as one
        if self._open >= MAX_MONITORS:
            message = f"this proxy serves {MAX_MONITORS} monitors at once; try again shortly"
            return _refusal(message, 503)
        if self._by_client[client] >= MAX_MONITORS_PER_CLIENT:
            message = f"this proxy serves {MAX_MONITORS_PER_CLIENT} monitors to one client at once"
            return _refusal(message, 429)
        ws = web.WebSocketResponse(
            max_msg_size=MAX_REQUEST_BYTES, heartbeat=HEARTBEAT_S, autoping=False
        )
        await ws.prepare(request)
        self._open += 1
        self._by_client[client] += 1
        try:
            ended = await self._unless_stopping(
                self._run(ws, channel, kind, request.get(CLIENT_RECHECK))
            )
            async with asyncio.timeout(self._send_timeout):
                if ended:
                    await ws.close()
                else:
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=STOPPING.encode())
        except (_Stalled, TimeoutError):
            log.debug(
                "dropped the monitor of %s: it took no message for %g s",
                request.remote,
                self._send_timeout,
            )
            if request.transport is not None:
                request.transport.abort()  # (a close would wait for the client to read)
        finally:
            self._open -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]
        return ws

    async def _unless_stopping(self, monitor: Awaitable[None]) -> bool:
        """Run `monitor` until it ends (True; what it raised is raised) or the proxy stops
        (False: it is cancelled). A monitor open held the proxy's stop until it was killed
        (lifecycle review)."""
        task = asyncio.ensure_future(monitor)
        stopping = asyncio.ensure_future(self._reader.stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return False
        task.result()
        return True

    async def _send(self, ws: web.WebSocketResponse, item: dict[str, Any]) -> None:
        """Send `item`; _Stalled when the client has not taken it within the send deadline."""
        try:
            async with asyncio.timeout(self._send_timeout):
                await ws.send_json(item)
        except TimeoutError:
            raise _Stalled() from None

    async def _run(
        self,
        ws: web.WebSocketResponse,
        channel: str,
        kind: str,
        recheck: Callable[[], str | None] | None,
    ) -> None:
        rate = _frame_rate()  # before its request too (review: 2 million pings in 5 s answered)
        try:
            async with asyncio.timeout(REQUEST_WAIT):
                message = await ws.receive()
                while message.type in (WSMsgType.PING, WSMsgType.PONG):  # before its request
                    if not await _take_frame(ws, message, rate, self._send_timeout):
                        return
                    message = await ws.receive()
        except TimeoutError:
            await self._send(ws, {"code": JsonRpcCode.INVALID_REQUEST, "message": "no request"})
            return
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return  # closed or failed before asking anything
        raw = message.data
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        try:
            spec = parse_request(raw, kind)
            facts = await self._reader.chain_facts(channel)
        except JsonRpcError as exc:
            await self._send(ws, {"code": exc.code, "message": exc.message})
            return
        await self._send(ws, {"code": 0})
        score = channel_score_address(facts.channel)
        start = spec.height if spec.height is not None else facts.height + 1
        notifier = asyncio.create_task(self._notify(ws, channel, kind, spec, score, start, recheck))
        receiver = asyncio.create_task(_drain(ws, self._send_timeout, rate))
        done: set[asyncio.Task[None]] = set()
        try:
            done, _ = await asyncio.wait({notifier, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # (also when the monitor itself is cancelled: its client left)
            for task in (notifier, receiver):
                task.cancel()
            await asyncio.gather(notifier, receiver, return_exceptions=True)
        if receiver in done and not receiver.cancelled():
            if isinstance(receiver.exception(), _Stalled):
                raise _Stalled()
        if notifier in done and not notifier.cancelled():
            error = notifier.exception()
            if isinstance(error, _Stalled):
                raise error
            if isinstance(error, JsonRpcError) and not ws.closed:
                await self._send(ws, {"code": error.code, "message": error.message})
            elif error is not None:
                log.error("monitor of %s failed", channel, exc_info=error)

    async def _notify(
        self,
        ws: web.WebSocketResponse,
        channel: str,
        kind: str,
        spec: MonitorRequest,
        score: str,
        height: int,
        recheck: Callable[[], str | None] | None = None,
    ) -> None:
        """The notes of each block from `height` on, while its client's certificate is not
        refused (`recheck`, ENABLE_REST_SSL 2: a monitor is one request, checked once, and one
        opened before its client's certificate was revoked went on streaming, review)."""
        quiet = 0
        while not ws.closed:
            block = await self._wait_block(ws, channel, height)
            if block is None:
                return  # the socket closed meanwhile
            problem = recheck() if recheck is not None else None
            if problem is not None:
                REFUSALS.refused(
                    "closed a monitor of %s: client certificate refused: %s", channel, problem
                )
                reason = f"client certificate refused: {problem}"[:120]
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode())
                return
            note = await self._notes(channel, kind, spec, score, block)
            for item in note:
                await self._send(ws, item)
            quiet = 0 if note else quiet + 1
            if spec.progress_interval and quiet >= spec.progress_interval:
                await self._send(ws, {"progress": hex(height + 1)})
                quiet = 0
            height += 1

    async def _wait_block(self, ws: web.WebSocketResponse, channel: str, height: int) -> Any:
        """The block at `height` once the peer has it; None once the socket is closed (the peer
        is not read for a monitor nobody can hear)."""
        pause = POLL_FIRST
        while not ws.closed:
            block = await self._shared.block(channel, height)
            if block is not None:
                return block
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)
        return None

    async def _notes(
        self, channel: str, kind: str, spec: MonitorRequest, score: str, block: Any
    ) -> list[dict[str, Any]]:
        head = {"hash": "0x" + block.hash.hex(), "height": hex(block.height)}
        if kind == "block" and not spec.filters:
            return [head]
        matches = []  # (tx index, per filter: the matching event indexes, the events)
        for index, events in enumerate(await self._shared.events(channel, block)):
            per_filter = [
                [j for j, e in enumerate(events) if f.matches(score, e.indexed, e.data)]
                for f in spec.filters
            ]
            if any(per_filter):
                matches.append((index, per_filter, events))
        if kind == "block":
            if not matches:
                return [head]
            count = len(spec.filters)
            indexes = [[hex(i) for i, pf, _ in matches if pf[k]] for k in range(count)]
            found = [
                [[hex(j) for j in pf[k]] for _, pf, _ in matches if pf[k]] for k in range(count)
            ]
            return [{**head, "indexes": indexes, "events": found}]
        notes = []
        for index, per_filter, events in matches:
            chosen = sorted({j for found in per_filter for j in found})
            note = {**head, "index": hex(index), "events": [hex(j) for j in chosen]}
            if spec.logs:
                note["logs"] = [
                    {
                        "scoreAddress": score,
                        "indexed": list(events[j].indexed),
                        "data": list(events[j].data),
                    }
                    for j in chosen
                ]
            notes.append(note)
        return notes
