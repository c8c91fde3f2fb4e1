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


async def until_closed(port: int, sent: bytes, deadline: float) -> bytes:
    """Connect to 127.0.0.1:`port`, send `sent`, and read until the server closes the
    connection (AssertionError after `deadline` s): everything it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if sent:
            writer.write(sent)
            await writer.drain()
        try:
            async with asyncio.timeout(deadline):
                return await reader.read()  # to the end of the stream
        except TimeoutError:
            raise AssertionError(
                f"the server at port {port} kept a connection open {deadline} s after {sent[:40]!r}"
            ) from None
    finally:
        writer.close()


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    """The status code and body of one HTTP/1.1 response."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
