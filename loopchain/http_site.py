"""What the REST proxy and the RadioStation's REST share in serving aiohttp: a bound on the
connections open at once (LimitedSite), a bound on request heads (MAX_HEAD_BYTES), a deadline on
request bodies (read_within) and an error at once for one HTTP cannot parse (_BodyErrorsToTheBody),
a bound on answers waiting for clients
that do not read them (AnswerSender), and the JSON error body for requests HTTP itself cannot
parse (answer_malformed_http_in_json).

Every open connection holds a file descriptor. Without a bound, clients that open connections
faster than the keep-alive deadline closes them (or simply thousands of them) use every descriptor
the process may open, and then the process cannot open anything else either: a REST proxy could no
longer reconnect to its peer, nor the RadioStation write its files. Beyond `max_connections`, a new
connection is answered 503 with Retry-After at once and closed; the connections already open are
served as before.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import ssl
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import hdrs, web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_request import BaseRequest

from loopchain import fds
from loopchain.configure import Config, ConfigError, RefusalLog

log = logging.getLogger(__name__)
REFUSALS = RefusalLog(log)

# descriptors kept for everything else the process opens (its gRPC channels, logs, epoll, pipes)
RESERVED_FDS = 64
REFUSAL_LINGER_S = 2.0  # how long a refused connection may take to read the answer and close
# refused connections left to read their answer at once; more are closed as soon as it is written
# (a client that sent its request first may then see the connection reset instead)
LINGERING_REFUSALS_MAX = 32
TOO_MANY_CONNECTIONS = (
    "too many connections are open to this server (REST_MAX_CONNECTIONS); try again shortly"
)


def connection_cap(configured: int, beside: int = 0) -> int:
    """`configured`, or fewer when the process may not open that many descriptors besides
    RESERVED_FDS, the refusals lingering and `beside` (another server's connections; its soft
    limit is first raised as far as that needs, up to the hard one, as servers do)."""
    others = RESERVED_FDS + LINGERING_REFUSALS_MAX + beside
    soft = fds.raise_soft_limit(configured + others)
    if soft is None:
        return configured
    cap = max(1, min(configured, soft - others))
    if cap < configured:
        log.warning(
            "at most %d REST connections (REST_MAX_CONNECTIONS is %d): this process may open only "
            "%d file descriptors",
            cap,
            configured,
            soft,
        )
    return cap


def refusal_response(body: bytes) -> bytes:
    """The raw HTTP answer to a connection beyond the bound (body: JSON)."""
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def answer_malformed_http_in_json(response_code: int, jsonrpc_code: int | None = None) -> None:
    """Make aiohttp answer a request it cannot even parse (a request line over 8 KiB, a raw
    control byte in the target, a broken header, an absurd Content-Length, a broken chunk; a
    head over MAX_HEAD_BYTES, 431) with
    the APIs' JSON error body, {"response_code": `response_code`, "message": "malformed HTTP
    request: ..."}, instead of its plain text: clients parse one error shape. With
    `jsonrpc_code` (a server of JSON-RPC paths too) the body also carries a JSON-RPC error of
    that code: the path of a request HTTP cannot parse is unknown, and ICON's SDK, which reads
    `error` from any answer that is not a success, raised KeyError on the other shape (review).
    Installed once per process (the REST proxy's and the RadioStation's main)."""
    original = web_protocol.RequestHandler.handle_error
    if getattr(original, "json_errors", False):
        return

    def handle_error(
        self: web_protocol.RequestHandler,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HeadTooLarge):
            status = exc.code  # (aiohttp answers every error of its parser 400)
        response = original(self, request, status, exc, message)
        if not isinstance(exc, HttpProcessingError) or not 400 <= status < 500:
            return response
        text = f"malformed HTTP request: {exc.message if exc.message else exc}"[:300]
        fields: dict[str, object] = {"response_code": response_code, "message": text}
        if jsonrpc_code is not None:
            error = {"code": jsonrpc_code, "message": text}
            fields = {"jsonrpc": "2.0", "id": None, "error": error, **fields}
        body = json.dumps(fields).encode()
        answer = web.Response(
            body=body, status=status, content_type="application/json", charset="utf-8"
        )
        answer.force_close()
        return answer

    handle_error.json_errors = True  # type: ignore[attr-defined]
    web_protocol.RequestHandler.handle_error = handle_error  # type: ignore[method-assign]


class BodyTimeout(Exception):
    """A request body that did not arrive in full within REST_BODY_TIMEOUT (its message says)."""


class MalformedBody(Exception):
    """A request body HTTP cannot decode: a Content-Encoding (gzip, deflate) its bytes are not in,
    a broken chunk (its message says)."""


_Answer = TypeVar("_Answer", bound=web.StreamResponse)


class ClientLeft(Exception):
    """The client closed its connection before its request's body arrived in full: no one is
    left to answer (see `client_left`; before, each was an ERROR with a traceback)."""


def client_left(request: web.BaseRequest, response: _Answer) -> _Answer:
    """`response`, an error no one will read, to a request whose client left before its body
    arrived in full: logged at debug (a client going away is no fault), the connection closed."""
    log.debug(
        "%s %s from %s: the client left before its request body arrived in full",
        request.method,
        request.path[:100],
        request.remote,
    )
    response.force_close()
    return response


async def read_within(request: web.Request, seconds: float) -> bytes:
    """The request's body (kept for later reads of it), BodyTimeout when it has not arrived in
    full within `seconds`: a client that sends a head and withholds the body holds no handler.
    A body that has arrived in full (most do, with their head) is read without a timer.
    MalformedBody when its bytes cannot be decoded or its chunks parsed (aiohttp raises its own
    error, a 500 if let through; see _BodyErrorsToTheBody); ClientLeft when the client went away
    before sending it all."""
    try:
        if request.content.is_eof():
            return await request.read()
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive in full within {seconds:g} s (REST_BODY_TIMEOUT)"
        ) from None
    except (web_protocol.RequestPayloadError, HttpProcessingError) as exc:
        # (aiohttp's Python parser hands a broken chunk's own TransferEncodingError to the body)
        raise MalformedBody(f"the request body cannot be read: {_reason(exc)}") from None
    except ConnectionError:
        raise ClientLeft("the client left before its request body arrived in full") from None


def close_if_body_unread(
    request: web.BaseRequest, response: web.StreamResponse
) -> web.StreamResponse:
    """`response`, made to close the connection when the request's body was not read to its end
    (one refused unread, one still arriving, one HTTP could not decode): the client must not send
    its next request on a connection whose rest of a body the server discards or fails on."""
    if not request.content.is_eof() and not response.prepared:
        response.force_close()
    return response


def _reason(exc: BaseException) -> str:
    """What HTTP found wrong, in one line (aiohttp's message, without its status)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else exc
    text = cause.message if isinstance(cause, HttpProcessingError) else str(cause)
    return " ".join(str(text).split())[:200]


class _Refusal(asyncio.Protocol):
    """Answers the connection with `response`, ends its side, and closes once the client has
    closed its own or REFUSAL_LINGER_S has passed (closing with a request still unread would
    reset the connection before the client reads the answer); when `lingering` already holds
    LINGERING_REFUSALS_MAX, closes at once. What the client sends is dropped."""

    def __init__(self, response: bytes, lingering: set[_Refusal]) -> None:
        self.response = response
        self.lingering = lingering
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.response)
        if len(self.lingering) >= LINGERING_REFUSALS_MAX:
            transport.close()
            return
        self.lingering.add(self)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lingering.discard(self)
        if self.timer is not None:
            self.timer.cancel()


# What a request head (its request line and headers) may hold, about nginx's default (4 buffers
# of 8 KiB): once more than this has come without the head's end, it is answered 431 and its
# connection closed. aiohttp bounds only a line (8190 bytes) and the headers' count (128): a head
# of ~1 MB was taken, and 1,000 connections each withholding the end of one held 1.9 GB of a proxy.
MAX_HEAD_BYTES = 32 * 1024
# A connection's bytes go to its parser this many at once, and a head's are counted by these
# steps (one read may hold a request, its body and much of the next head): a head of up to
# MAX_HEAD_BYTES + HEAD_STEP may pass, and a connection holds no more of one.
HEAD_STEP = 8 * 1024


# how long a request head may take from its first byte (a head comes in one packet or a few)
HEAD_DEADLINE_S = 15.0
_HEAD_LATE_BODY = json.dumps(  # -900: ResponseCode.TIMEOUT, as a body's 408 says (types sits above)
    {"response_code": -900, "message": "the request head did not arrive within the deadline"}
).encode()
_HEAD_LATE = (
    "HTTP/1.1 408 Request Timeout\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    f"Content-Length: {len(_HEAD_LATE_BODY)}\r\n"
    "Connection: close\r\n\r\n"
).encode("ascii") + _HEAD_LATE_BODY


class HeadTooLarge(HttpProcessingError):
    """A request head larger than MAX_HEAD_BYTES (answered 431: answer_malformed_http_in_json)."""

    code = 431

    def __init__(self) -> None:
        super().__init__(
            message=f"the request head (request line and headers) is larger than "
            f"{MAX_HEAD_BYTES} bytes"
        )


def _head_deadline(
    loop: asyncio.AbstractEventLoop, parser: _BodyErrorsToTheBody
) -> asyncio.TimerHandle:
    """`parser`'s head deadline, HEAD_DEADLINE_S from now. The timer holds the parser weakly:
    a connection gone is not kept until then (one connecting and closing in a loop held 27,000
    handlers, 80 MB, review)."""
    return loop.call_later(HEAD_DEADLINE_S, _head_late, weakref.ref(parser))


def _head_late(parser: weakref.ref[_BodyErrorsToTheBody]) -> None:
    alive = parser()
    if alive is not None:
        alive._head_late()


class _BodyErrorsToTheBody:
    """Stands for a connection's HTTP parser: refuses a request head larger than MAX_HEAD_BYTES
    (HeadTooLarge, raised as the parser's own errors are), and hands an error that parser finds
    inside a request's body (a chunk size that is not hex) to that body, as a RequestPayloadError
    its reader gets at once (read_within: MalformedBody, a 400), then raises it as the parser did.
    aiohttp's C parser drops the body it was filling without ending it and its connection queues
    the error as the next request, answered only after the handler: the handler reading the body
    waited until REST_BODY_TIMEOUT (a 408). Its Python parser hands such an error to the body
    itself; then there is nothing to do here. Everything else is the parser's own."""

    __slots__ = (
        "__weakref__",
        "_body",
        "_connection",
        "_head_bytes",
        "_late",
        "_parser",
        "_spoken",
    )

    def __init__(self, parser: Any, connection: Any = None) -> None:
        self._parser = parser
        self._connection = connection  # aiohttp's handler of the connection (its transport)
        self._body: Any = None  # the body of the last request parsed, until it ends
        self._head_bytes = 0  # bytes fed outside a body since the last request was parsed
        self._late: asyncio.TimerHandle | None = None  # HEAD_DEADLINE_S from a head's first part
        self._spoken = False  # a request came on the connection

    def await_first(self) -> None:
        """Give the connection's first head HEAD_DEADLINE_S from now, its start: one that never
        sent a byte was kept for the keep-alive time, 75 s (review: one client held every slot
        of a proxy so). Between requests a connection keeps its keep-alive time."""
        self._late = _head_deadline(asyncio.get_running_loop(), self)

    def feed_data(self, data: bytes) -> tuple[list[Any], bool, bytes]:
        """The requests `data` completes, in HEAD_STEP steps (at least one: b"" resumes a
        paused parser), as aiohttp's parsers answer: (messages, upgraded, the bytes after an
        upgrade)."""
        messages: list[Any] = []
        offset = 0
        while True:
            step = data[offset : offset + HEAD_STEP]
            offset += len(step)
            try:
                found, upgraded, tail = self._feed(step)
            except HeadTooLarge as exc:
                if not messages:
                    raise
                # answered after the requests before it, as aiohttp queues its parser's errors
                error = web_protocol._ErrInfo(status=exc.code, exc=exc, message=exc.message)
                return [*messages, (error, EMPTY_PAYLOAD)], False, b""
            messages.extend(found)
            if upgraded:
                return messages, True, tail + data[offset:]
            if offset >= len(data):
                return messages, False, b""

    def _feed(self, data: bytes) -> Any:
        if self._body is None:  # a head (or the bytes before one)
            self._head_bytes += len(data)
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            body, self._body = self._body, None
            if body is not None and not body.is_eof() and body.exception() is None:
                failure = web_protocol.RequestPayloadError(exc.message or str(exc))
                failure.__cause__ = exc
                body.set_exception(failure)
            raise
        for _, payload in messages:
            self._body = payload
        if self._body is not None and self._body.is_eof():
            self._body = None
        if messages:
            self._head_bytes = 0
            self._spoken = True
            if self._late is not None:
                self._late.cancel()
                self._late = None
        elif self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge()
        elif self._head_bytes and self._late is None and self._connection is not None:
            # a head left incomplete by what came (a whole one, as most are, arms nothing)
            loop = asyncio.get_running_loop()
            self._late = _head_deadline(loop, self)
        return messages, upgraded, tail

    def _head_late(self) -> None:
        """A head begun HEAD_DEADLINE_S ago is not in: answered 408 and closed (aiohttp bounds
        it only by its keep-alive time, REST_KEEPALIVE_TIMEOUT, 75 s: a client trickling a byte a
        few seconds held a connection that long; a review held every one of a proxy's so)."""
        self._late = None
        if getattr(self._connection, "_request_in_progress", False):  # (aiohttp's own)
            # a pipelined head behind a request being answered: the 408 was written over that
            # answer (review); its time runs once the answer is out
            loop = asyncio.get_running_loop()
            self._late = _head_deadline(loop, self)
            return
        transport = getattr(self._connection, "transport", None)
        begun = self._head_bytes or not self._spoken
        if transport is None or not begun or transport.is_closing():
            return
        transport.write(_HEAD_LATE)
        transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


# how long a TLS connection has for its handshake: asyncio's default is 60 s, and until its end a
# connection was neither counted against the site's bound nor refused (aiohttp counts it once
# connected), so silent connections took every descriptor (a review held 1,000 with a bound of 40)
TLS_HANDSHAKE_S = 10.0


class _TlsConnection(asyncio.Protocol):
    """A connection to a TLS site, counted (LimitedSite.handshaking) from its accept until its
    handshake ends, which TLS_HANDSHAKE_S bounds; then every event goes to the handler
    `connect()` makes (aiohttp's, for this connection). What came before the handler was made
    (data sent with the handshake's last flight) is handed to it first, in order."""

    def __init__(self, site: LimitedSite, connect: Callable[[], asyncio.Protocol]) -> None:
        self._site = site
        self._connect = connect
        self._inner: asyncio.Protocol | None = None
        self._early: list[Callable[[asyncio.Protocol], object]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._site.handshaking += 1
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self._site.upgrades.add(task)
        task.add_done_callback(self._site.upgrades.discard)

    async def _handshake(self, raw: asyncio.BaseTransport) -> None:
        assert self._site.ssl_context is not None
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                raw,  # type: ignore[arg-type]
                self,
                self._site.ssl_context,
                server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_S,
            )
        except Exception as exc:  # refused, reset or silent: the client's doing
            log.debug("TLS handshake failed: %s", exc)
            raw.abort()  # type: ignore[attr-defined]
            return
        finally:
            self._site.handshaking -= 1
        if tls is None:  # the connection went away meanwhile
            return
        inner = self._inner = self._connect()
        inner.connection_made(tls)
        for event in self._early:
            event(inner)
        self._early.clear()

    def _event(self, event: Callable[[asyncio.Protocol], object]) -> None:
        if self._inner is not None:
            event(self._inner)
        else:
            self._early.append(event)

    def data_received(self, data: bytes) -> None:
        self._event(lambda inner: inner.data_received(data))

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        self._early.append(lambda inner: inner.eof_received())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._event(lambda inner: inner.connection_lost(exc))

    def pause_writing(self) -> None:
        self._event(lambda inner: inner.pause_writing())

    def resume_writing(self) -> None:
        self._event(lambda inner: inner.resume_writing())


class _Dropped(asyncio.Protocol):
    """A TLS connection past the site's bound: closed at once, before any handshake (a 503 would
    take one)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


def _http_connection(server: Any) -> asyncio.BaseProtocol:
    """A new connection of `server` (aiohttp's RequestHandler), its parser in
    _BodyErrorsToTheBody."""
    connection = server()
    parser = connection._parser = _BodyErrorsToTheBody(connection._parser, connection)
    parser.await_first()
    return connection


class LimitedSite:
    """Serves a set-up `web.AppRunner` on host:port, at most `max_connections` connections at
    once (see the module doc). `close` stops listening, then cleans the runner up (which closes
    the connections)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        refusal_body: bytes,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.response = refusal_response(refusal_body)
        self.ssl_context = ssl_context
        self.refused = 0  # connections answered 503 (with TLS: closed) since the start
        self.handshaking = 0  # TLS connections accepted whose handshake has not ended
        self.upgrades: set[asyncio.Task[None]] = set()  # their handshakes
        self.unmade = 0  # connections whose protocol is made, not yet connected (see start)
        self._lingering: set[_Refusal] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (OSError when the port cannot be had)."""
        server = self.runner.server
        if server is None:
            raise RuntimeError("set the runner up before starting its site")

        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) + self.handshaking + self.unmade >= self.max_connections:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning(
                        "%d REST connections open (REST_MAX_CONNECTIONS): new ones are %s "
                        "(%d so far)",
                        self.max_connections,
                        "closed" if self.ssl_context else "answered 503",
                        self.refused,
                    )
                if self.ssl_context is not None:
                    return _Dropped()
                return _Refusal(self.response, self._lingering)
            # counted from its protocol's making: asyncio makes the protocols of a burst of
            # accepted connections before connecting any, and aiohttp counts a connection
            # connected (a burst of 120 found a bound of 20 free each time, review). Its
            # transport, made next, schedules connection_made right after this
            self.unmade += 1
            loop.call_soon(self._made)
            if self.ssl_context is not None:  # counted from here, not from its handshake's end
                return _TlsConnection(self, lambda: _http_connection(server))  # type: ignore[arg-type,return-value]
            return _http_connection(server)

        self._server = await loop.create_server(
            protocol, self.host, self.port, reuse_address=True, backlog=128
        )

    def _made(self) -> None:
        self.unmade -= 1

    async def close(self) -> None:
        """Stop accepting connections, then close the application and its connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self.upgrades):
            task.cancel()
        await self.runner.cleanup()


# Answers up to this size are sent whatever AnswerSender's budget holds: a status check or an
# error gets through while slow clients hold the budget (4,096 connections hold 64 MiB at most).
SMALL_ANSWER_BYTES = 16 * 1024
# Request bodies up to this size are taken whatever AnswerSender's receiving budget holds (a
# transaction, a query): only large ones (batches, channel data) need room in it.
SMALL_BODY_BYTES = 16 * 1024


class _SendWatch:
    """Drops (aborts) `transport` when it holds bytes of an answer that its client took none of
    since the last check, one check every `seconds`."""

    __slots__ = ("dropped", "handle", "last", "seconds", "transport")

    def __init__(
        self, transport: asyncio.Transport, seconds: float, dropped: Callable[[int], None]
    ) -> None:
        self.transport = transport
        self.seconds = seconds
        self.dropped = dropped
        self.last = 0
        self.handle = asyncio.get_running_loop().call_later(seconds, self._check)

    def _check(self) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        pending = transport.get_write_buffer_size()
        if pending and pending >= self.last > 0:
            transport.abort()  # the answer's write ends (ConnectionError) and frees its bytes
            self.dropped(pending)
            return
        self.last = pending
        self.handle = asyncio.get_running_loop().call_later(self.seconds, self._check)

    def cancel(self) -> None:
        self.handle.cancel()


class AnswerSender:
    """A middleware (the outermost) that bounds what requests and answers hold of the server.

    Request bodies being received and handled hold at most `max_receiving_bytes`: a body of up
    to SMALL_BODY_BYTES (a transaction) always passes, and so does one alone; beyond, a request
    is answered `busy(request, message)`, a 503 with Retry-After, its body unread and its connection
    closed. It writes each answer itself, so that a client that does not read cannot hold it in
    this process for good: a connection whose client takes none of its answer for
    `send_timeout` seconds is dropped (checked every `send_timeout` seconds: within twice that),
    and answers written but not yet taken hold at most `max_sending_bytes` (beyond that, an
    answer larger than SMALL_ANSWER_BYTES is replaced by `busy(request, message)`). Without them, 300
    clients pipelining GETs of a 1 MB block and reading nothing held 1.25 GB of a REST proxy,
    and kept it; 2,000 connections sending 500 KB bodies took it to 931 MB."""

    def __init__(
        self,
        send_timeout: float,
        max_sending_bytes: int,
        busy: Callable[[web.Request, str], web.StreamResponse],
        max_receiving_bytes: int = 1 << 62,
        max_body_bytes: int = 1 << 62,
    ) -> None:
        self.send_timeout = send_timeout
        self.max_sending_bytes = max_sending_bytes
        self.max_receiving_bytes = max_receiving_bytes
        self.max_body_bytes = max_body_bytes
        self.busy = busy
        self.sending = 0  # bytes of answers being written now
        self.receiving = 0  # bytes of request bodies being received or handled now
        self.dropped = 0  # connections dropped since the start
        self.refused = 0  # requests and answers refused with 503 since the start

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def send(request: web.Request, handler: Any) -> web.StreamResponse:
            incoming = self._body_bytes(request)
            others = self.receiving  # bodies of other requests (one alone always passes)
            self.receiving += incoming
            try:
                if incoming and others and self.receiving > self.max_receiving_bytes:
                    response = self._refuse_body(request, incoming)
                else:
                    response = await handler(request)
                return await self._write(request, response)
            finally:
                self.receiving -= incoming

        return send

    def _body_bytes(self, request: web.Request) -> int:
        """What the request's body holds of the receiving budget: its length, or the body limit
        when it comes in chunks or encoded (aiohttp inflates a gzip body up to the limit: 529
        bytes on the wire held 500 KB, review); 0 for none, a small one, or one over the limit
        (refused unread)."""
        if not request.body_exists:
            return 0
        length = request.content_length
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if length is None or encoding not in ("", "identity"):
            return self.max_body_bytes
        return length if SMALL_BODY_BYTES < length <= self.max_body_bytes else 0

    async def _write(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse:
        transport = request.transport
        if response.prepared or transport is None or not isinstance(response, web.Response):
            return response  # an answer its handler streams (a file, a monitor) writes itself
        body = response.body
        size = len(body) if isinstance(body, (bytes, bytearray)) else 0
        if size > SMALL_ANSWER_BYTES and self.sending + size > self.max_sending_bytes:
            response, size = self._refuse_answer(request, size), 0
        self.sending += size
        watch = _SendWatch(transport, self.send_timeout, lambda n: self._drop(request, n))
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            pass  # the client left or was dropped: aiohttp meets the same and goes on
        finally:
            watch.cancel()
            self.sending -= size
            # aiohttp keeps a keep-alive connection's last request and answer (locals of its
            # connection loop) until the next request comes or the connection ends: without
            # their bodies they hold a few hundred bytes, not up to a block or a body limit
            # (256 idle clients that had read a ~1 MB block held ~600 MB of a proxy)
            if isinstance(response, web.Response):
                response.body = None
            request._read_bytes = None  # the body aiohttp read and keeps (no public way)
        return response

    def _refuse_body(self, request: web.Request, size: int) -> web.StreamResponse:
        response = self._busy(
            request,
            f"request bodies being received fill this server's {self.max_receiving_bytes} "
            f"bytes; this one ({size} bytes) is not read; try again shortly",
        )
        response.force_close()  # its body is not read: the connection cannot go on
        return response

    def _refuse_answer(self, request: web.Request, size: int) -> web.StreamResponse:
        return self._busy(
            request,
            f"answers waiting for their clients fill this server's {self.max_sending_bytes} "
            f"bytes; this one ({size} bytes) is not sent; try again shortly",
        )

    def _busy(self, request: web.Request, message: str) -> web.StreamResponse:
        self.refused += 1
        # overload is normal traffic: at debug, as the REST proxy logs its other 503s
        log.debug(
            "%s %s from %s: 503 %s", request.method, request.path[:100], request.remote, message
        )
        return self.busy(request, message)

    def _drop(self, request: web.Request, pending: int) -> None:
        self.dropped += 1
        REFUSALS.refused(
            "dropped the connection of %s (%s %s): it took none of its answer for %g s "
            "(%d bytes unsent)",
            request.remote,
            request.method,
            request.path[:100],
            self.send_timeout,
            pending,
        )


def answer_sender(
    config: Config, busy: Callable[[web.Request, str], web.StreamResponse]
) -> AnswerSender:
    """The AnswerSender of a REST server configured by REST_SEND_TIMEOUT, REST_MAX_SENDING_MB,
    REST_MAX_RECEIVING_MB and REST_MAX_BODY_BYTES."""
    return AnswerSender(
        float(config.REST_SEND_TIMEOUT),
        int(config.REST_MAX_SENDING_MB) << 20,
        busy,
        int(config.REST_MAX_RECEIVING_MB) << 20,
        int(config.REST_MAX_BODY_BYTES),
    )


def rest_tls_context(
    config: Config, folder: Path, password: str | None = None
) -> ssl.SSLContext | None:
    """TLS for a REST API from ENABLE_REST_SSL: 0 none, 1 server certificate, 2 mutual (clients
    present a certificate of the node's CA). The files are the node's gRPC ones
    (GRPC_SSL_CERT_PATH, GRPC_SSL_KEY_PATH, GRPC_SSL_CA_CERT_PATH), by default cert.pem, key.pem
    and ca.pem in `folder`, the key's `password` (when not given, LOOPCHAIN_TLS_KEY_PASSWORD);
    ConfigError when they cannot be used."""
    mode = int(config.ENABLE_REST_SSL)
    if mode == 0:
        return None
    if mode not in (1, 2):
        raise ConfigError(f"ENABLE_REST_SSL {mode} must be 0 (none), 1 (server) or 2 (mutual)")

    def path(key: str, name: str) -> str:
        return str(config[key] or folder / name)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(
            path("GRPC_SSL_CERT_PATH", "cert.pem"),
            path("GRPC_SSL_KEY_PATH", "key.pem"),
            password=password or os.environ.get("LOOPCHAIN_TLS_KEY_PASSWORD") or None,
        )
        if mode == 2:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(path("GRPC_SSL_CA_CERT_PATH", "ca.pem"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ENABLE_REST_SSL {mode}: cannot load the certificate files: {exc}"
        ) from None
    return context


# a request of a client RevokedClients checked holds, under this key, the check made again: why
# its certificate is refused now (None: it is not), for a request that lasts (a websocket monitor)
CLIENT_RECHECK: web.RequestKey[Callable[[], str | None]] = web.RequestKey(
    "loopchain.client_recheck"
)


class RevokedClients:
    """ENABLE_REST_SSL 2: refuses a request whose client certificate the node's revocation lists
    name (`revoked()`: the serials they name now, read again when a list changes, as the gRPC
    side checks its callers), answered by `refuse(request, why)` and the connection closed. The TLS
    handshake checks only the CA: a holder of a revoked certificate kept full REST access. A
    certificate's serial is read once (a bounded cache)."""

    CACHE = 256

    def __init__(
        self,
        revoked: Callable[[], frozenset[int]],
        refuse: Callable[[web.Request, str], web.StreamResponse],
    ) -> None:
        self._revoked = revoked
        self._refuse = refuse
        self._serials: dict[bytes, int | None] = {}

    def problem(self, request: web.Request) -> str | None:
        """Why the request's client certificate is refused; None when it is not."""
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:  # the connection is gone (or is not TLS): nothing to serve
            return "the connection has no client certificate"
        der = ssl_object.getpeercert(binary_form=True)
        if not der:  # CERT_REQUIRED makes the handshake fail first
            return "the connection has no client certificate"
        serial = self._serial(der)
        if serial is None:
            return "the client certificate cannot be read"
        if serial in self._revoked():
            return f"revoked (serial {serial:x})"
        return None

    def _serial(self, der: bytes) -> int | None:
        if der in self._serials:
            return self._serials[der]
        from cryptography import x509  # only mutual TLS loads it

        try:
            serial: int | None = x509.load_der_x509_certificate(der).serial_number
        except ValueError:
            serial = None
        if len(self._serials) >= self.CACHE:
            self._serials.clear()
        self._serials[der] = serial
        return serial

    def middleware(self) -> Any:
        """The middleware refusing requests of revoked clients before anything else runs."""

        @web.middleware
        async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
            problem = self.problem(request)
            if problem is None:
                recheck: Callable[[], str | None] = functools.partial(self.problem, request)
                request[CLIENT_RECHECK] = recheck
                return await handler(request)
            REFUSALS.refused(
                "refused %s %s from %s: client certificate refused: %s",
                request.method,
                request.path[:100],
                request.remote,
                problem,
            )
            response = self._refuse(request, f"client certificate refused: {problem}")
            response.force_close()  # the client's other requests on it go the same way
            return response

        return middleware
