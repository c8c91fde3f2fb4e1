"""Idle HTTP/2 clients holding a gRPC port's connections (a flood any host can make without TLS)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from loopchain import fds

# a client's HTTP/2 start: the preface and an empty SETTINGS frame
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


@contextlib.contextmanager
def flood(port: int, count: int) -> Iterator[None]:
    """`count` idle HTTP/2 clients of 127.0.0.1:`port`, each sending an HTTP/2 start and then
    nothing, closed at the end (those the server closes at accept are closed here too)."""
    needed = 2 * count + 512  # the clients, and the server's ends when it runs in this process
    soft = fds.raise_soft_limit(needed)
    if soft is not None and soft < needed:
        pytest.skip(f"a flood of {count} connections needs {needed} file descriptors, not {soft}")
    clients: list[socket.socket] = []
    try:
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            clients.append(client)
            with contextlib.suppress(OSError):  # closed at accept already
                client.sendall(HTTP2_PREFACE)
        yield
    finally:
        for client in clients:
            client.close()
