"""The connection bounds of the REST and gRPC ports: what a process may open lowers them."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from loopchain import http_site
from loopchain.p2p import grpc_util

CAP_UNDER_LIMITS = """
import json, resource, sys
from loopchain import http_site
from loopchain.p2p import grpc_util
soft, hard = (int(n) for n in sys.argv[1:3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
cap = grpc_util.connections_a_port if sys.argv[3] == "grpc" else http_site.connection_cap
caps = [cap(int(n)) for n in sys.argv[4:]]
print(json.dumps({"caps": caps, "limits": resource.getrlimit(resource.RLIMIT_NOFILE)}))
"""


def cap_under_limits(
    soft: int, hard: int, *configured: int, grpc: bool = False
) -> tuple[dict[str, Any], str]:
    """http_site.connection_cap (with `grpc`: grpc_util.connections_a_port) of each `configured`
    in a child process whose descriptor limits are (`soft`, `hard`) (a hard limit, once lowered,
    cannot be raised again): its answer, stderr."""
    _, ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    if ours != resource.RLIM_INFINITY and ours < hard:
        pytest.skip(f"this process may open only {ours} descriptors")
    args = [str(n) for n in (soft, hard, "grpc" if grpc else "rest", *configured)]
    done = subprocess.run(
        [sys.executable, "-c", CAP_UNDER_LIMITS, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_the_bound_leaves_descriptors_for_everything_else() -> None:
    """A process that may open 500 descriptors (soft limit 300) serves 500 less the reserve and
    the lingering refusals of 4,096 configured connections, its soft limit raised to 500, and
    says so; a bound within the limit is kept."""
    result, stderr = cap_under_limits(300, 500, 4096, 100, 1)
    others = http_site.RESERVED_FDS + http_site.LINGERING_REFUSALS_MAX
    assert result["caps"] == [500 - others, 100, 1]
    assert result["limits"] == [500, 500]
    assert f"at most {500 - others} REST connections (REST_MAX_CONNECTIONS is 4096)" in stderr


def test_the_soft_limit_is_raised_only_as_far_as_the_bound_needs() -> None:
    result, stderr = cap_under_limits(300, 5000, 1000)
    others = http_site.RESERVED_FDS + http_site.LINGERING_REFUSALS_MAX
    assert result == {"caps": [1000], "limits": [1000 + others, 5000]}
    assert "at most" not in stderr


def test_the_refusal_is_a_complete_http_answer() -> None:
    raw = http_site.refusal_response(b'{"message":"x"}')
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1" in head
    assert b"\r\nContent-Length: 15" in head and b"\r\nConnection: close" in head
    assert body == b'{"message":"x"}'


def test_grpc_connections_take_at_most_half_of_the_descriptors() -> None:
    """A port holds SERVER_MAX_CONNECTIONS connections when the process may open twice as many
    descriptors (its soft limit raised that far), else half of its limit: the other half stays
    for its stores, links and sockets (a flood of connections took them all)."""
    full = grpc_util.SERVER_MAX_CONNECTIONS
    result, stderr = cap_under_limits(300, 5000, 1, 2, grpc=True)
    assert result == {"caps": [full, full], "limits": [4 * full, 5000]}
    assert "at most" not in stderr
    result, stderr = cap_under_limits(300, 600, 1, 2, grpc=True)
    assert result == {"caps": [300, 150], "limits": [600, 600]}
    assert "at most 300 gRPC connections a port (512 wanted)" in stderr


async def test_a_large_body_alone_passes_the_receiving_budget_and_a_second_is_refused() -> None:
    """AnswerSender's receiving budget (here 20 KB): one large body is taken even past it (so no
    body is refused for good); while it is handled, a second large body is a 503 answered at
    once with its connection closed, and a small one passes."""
    release = asyncio.Event()

    async def echo_length(request: web.Request) -> web.Response:
        body = await request.read()
        if request.query.get("hold"):
            await release.wait()
        return web.Response(text=str(len(body)))

    def busy(request: web.Request, message: str) -> web.Response:
        return web.Response(status=503, text=message, headers={"Retry-After": "1"})

    sender = http_site.AnswerSender(20.0, 1 << 20, busy, 20_000, 512 * 1024)
    app = web.Application(middlewares=[sender.middleware()], client_max_size=512 * 1024)
    app.router.add_post("/", echo_length)
    large, small = b"x" * 100_000, b"y" * 1_000
    async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
        url = str(server.make_url("/"))
        async with session.post(url, data=large) as alone:
            assert (alone.status, await alone.text()) == (200, "100000")
        held = asyncio.create_task(session.post(url + "?hold=1", data=large))
        async with asyncio.timeout(30):
            while sender.receiving < len(large):  # the held one counted
                await asyncio.sleep(0.01)
        async with session.post(url, data=large) as refused:
            assert refused.status == 503 and refused.headers["Retry-After"] == "1"
            assert "bodies being received" in await refused.text()
            assert refused.headers["Connection"].lower() == "close"
        async with session.post(url, data=small) as passed:
            assert (passed.status, await passed.text()) == (200, "1000")
        release.set()
        async with await held as first:
            assert (first.status, await first.text()) == (200, "100000")
    assert sender.receiving == 0
