"""A fluentd forward-protocol receiver for tests: an asyncio TCP server on 127.0.0.1, on a thread
of its own, decoding Message, Forward, PackedForward and CompressedPackedForward entries with the
msgpack library and answering acks when a client asks (option "chunk").

`ForwardReceiver(read=False)` plays a collector that accepts connections but never reads them
(with a small receive buffer, so a sender's writes soon stall).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

import msgpack

MAX_BUFFER = 16 << 20  # bytes of one undecoded message a connection may hold
MAX_ENTRIES = 200_000  # entries kept; later ones are counted in `overflow`
EVENT_TIME_EXT = 0


@dataclass(frozen=True)
class Entry:
    """One received entry: its tag, time (seconds since the epoch) and record."""

    tag: str
    time: float
    record: dict[str, Any]


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EVENT_TIME_EXT and len(data) == 8:
        seconds, nanoseconds = struct.unpack(">II", data)
        return seconds + nanoseconds / 1e9
    return msgpack.ExtType(code, data)


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, ext_hook=_ext_hook, max_buffer_size=MAX_BUFFER)


class ProtocolError(ValueError):
    """A message that is not a forward-protocol message."""


def decode_message(message: Any) -> tuple[list[Entry], dict[str, Any]]:
    """The entries and the options of one forward-protocol message."""
    if not isinstance(message, list) or len(message) < 2 or not isinstance(message[0], str):
        raise ProtocolError(f"not a forward message: {message!r:.200}")
    tag, body = message[0], message[1]
    if isinstance(body, int | float):  # Message mode: [tag, time, record, option?]
        if len(message) < 3:
            raise ProtocolError("a Message-mode message without its record")
        pairs, option = [[body, message[2]]], message[3] if len(message) > 3 else {}
    elif isinstance(body, list):  # Forward mode: [tag, [[time, record], ...], option?]
        pairs, option = body, message[2] if len(message) > 2 else {}
    elif isinstance(body, bytes | str):  # PackedForward: [tag, msgpack stream, option?]
        option = message[2] if len(message) > 2 else {}
        raw = body.encode() if isinstance(body, str) else body
        if isinstance(option, dict) and option.get("compressed") == "gzip":
            raw = gzip.decompress(raw)
        unpacker = _unpacker()
        unpacker.feed(raw)
        pairs = list(unpacker)
    else:
        raise ProtocolError(f"unknown forward mode: {type(body).__name__}")
    if not isinstance(option, dict):
        raise ProtocolError(f"option is not a map: {option!r:.200}")
    entries = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], dict)):
            raise ProtocolError(f"not a [time, record] entry: {pair!r:.200}")
        entries.append(Entry(tag, float(pair[0]), pair[1]))
    return entries, option


class _Connection(asyncio.Protocol):
    def __init__(self, receiver: ForwardReceiver) -> None:
        self.receiver = receiver
        self.unpacker = _unpacker()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.receiver._opened(transport)
        if not self.receiver.read:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.unpacker.feed(data)
            for message in self.unpacker:
                entries, option = decode_message(message)
                self.receiver._add(entries)
                if "chunk" in option:
                    self.transport.write(msgpack.packb({"ack": option["chunk"]}))
        except (ValueError, msgpack.UnpackException, OSError, EOFError) as exc:
            self.receiver.errors.append(f"{type(exc).__name__}: {exc}")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.receiver._closed(self.transport)


class ForwardReceiver:
    """A forward-protocol server on 127.0.0.1 (a free port, or `port`) run on its own thread;
    use as a context manager. `read=False`: accept connections but never read from them."""

    def __init__(self, *, read: bool = True, port: int = 0, receive_buffer: int = 4096) -> None:
        self.read = read
        self.port = port
        self.receive_buffer = receive_buffer
        self.errors: list[str] = []
        self.connections = 0
        self.overflow = 0
        self._entries: list[Entry] = []
        self._lock = threading.Lock()
        self._transports: set[asyncio.Transport] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ForwardReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ForwardReceiver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if not self.read:  # inherited by accepted connections: a sender soon fills it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.bind(("127.0.0.1", self.port))
        self.port = int(sock.getsockname()[1])
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(sock), self._loop)
        future.result(timeout=10)
        return self

    async def _serve(self, sock: socket.socket) -> None:
        self._server = await self._loop.create_server(lambda: _Connection(self), sock=sock)

    def stop(self) -> None:
        """Close the server and every connection, and end the thread (bounded)."""
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        with contextlib.suppress(TimeoutError):
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._transports):
            transport.abort()

    def _opened(self, transport: asyncio.Transport) -> None:
        self._transports.add(transport)
        self.connections += 1

    def _closed(self, transport: asyncio.Transport) -> None:
        self._transports.discard(transport)

    def _add(self, entries: list[Entry]) -> None:
        with self._lock:
            room = MAX_ENTRIES - len(self._entries)
            self._entries.extend(entries[:room])
            self.overflow += max(0, len(entries) - room)

    @property
    def entries(self) -> list[Entry]:
        """A copy of the entries received so far, in arrival order."""
        with self._lock:
            return list(self._entries)

    def tagged(self, tag: str) -> list[Entry]:
        """The entries received with exactly this tag."""
        return [e for e in self.entries if e.tag == tag]
