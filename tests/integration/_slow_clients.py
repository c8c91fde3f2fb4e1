"""Clients that open a connection and then send too little: nothing, half a request head, or a
head with a body that never comes. What a server answers them shows its deadlines."""

from __future__ import annotations

import asyncio

SILENT = b""
HALF_HEAD = b"GET /api/v1/status/peer HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: unfinished


def withheld_body(path: str, headers: dict[str, str] | None = None) -> bytes:
    """A POST head announcing 100 bytes of body, and the first 5 of them."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append("Content-Length: 100")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b'{"a":'


async def until_closed(port: int, sent: bytes, deadline: float, *, go_on: bytes = b"") -> bytes:
    """Connect to 127.0.0.1:`port`, send `sent` (and, with `go_on`, once the server has answered
    100 Continue, `go_on`), and read until the server closes the connection (AssertionError after
    `deadline` s): everything it answered (after its 100)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(deadline):
            writer.write(sent)
            await writer.drain()
            if go_on:
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 100 "), head
                writer.write(go_on)
                await writer.drain()
            return await reader.read()  # to the end of the stream
    except TimeoutError:
        raise AssertionError(
            f"the server at port {port} kept a connection open {deadline} s after {sent[:40]!r}"
        ) from None
    finally:
        writer.close()


async def broken_chunk_after_head(
    port: int, path: str, headers: dict[str, str], deadline: float
) -> bytes:
    """POST `path` announcing a chunked body (Expect: 100-continue) and, once the server has said
    to go on (it has parsed the head: a handler reads the body), a chunk whose size is not hex;
    everything the server answers after its 100 until it closes the connection."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += ["Transfer-Encoding: chunked", "Expect: 100-continue"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return await until_closed(port, head, deadline, go_on=b"zz\r\n")


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    """The status code and body of one HTTP/1.1 response."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get_request(path: str, *, close: bool) -> bytes:
    """A GET of `path`, asking the server to close the connection after it or to keep it."""
    connection = "close" if close else "keep-alive"
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a Content-Length: (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(head.split(b" ", 2)[1]), await reader.readexactly(length)


async def held_connection(
    port: int, path: str, deadline: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to 127.0.0.1:`port` whose GET of `path` was answered 200 and that is kept
    open; a connection answered otherwise (a server at its connection bound) is closed and another
    tried, until `deadline` s have passed (AssertionError)."""
    answers: list[int] = []
    async with asyncio.timeout(deadline):
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request(path, close=False))
            await writer.drain()
            try:
                status, _ = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                status = 0
            if status == 200:
                return reader, writer
            answers.append(status)
            writer.close()
            await asyncio.sleep(0.05)  # polling interval, not a synchronisation
    raise AssertionError(f"no connection to port {port} was answered 200: {answers[-5:]}")


async def leave_midway(port: int, sent: bytes, deadline: float) -> None:
    """Connect to 127.0.0.1:`port`, send `sent` (a head and part of its body), close, and wait
    until the server has closed its side of that connection too (it is gone from the kernel's
    table, /proc/net/tcp): the server has met the client's leaving (AssertionError after
    `deadline` s)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    ours = writer.get_extra_info("sockname")[1]
    writer.write(sent)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    server_side = f":{port:04X} 0100007F:{ours:04X} "
    async with asyncio.timeout(deadline):
        while True:
            with open("/proc/net/tcp") as table:
                if not any(server_side in line for line in table):
                    return
            await asyncio.sleep(0.05)  # polling interval, not a synchronisation
