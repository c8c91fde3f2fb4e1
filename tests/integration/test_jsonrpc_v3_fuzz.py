"""Any body sent to /api/v3 gets a JSON-RPC answer: HTTP 200 with a result or 400 with an error of
the spec's codes, the id echoed whenever the request had a valid one; never a 500, a hang, a v1
error shape or a traceback in the proxy's log (hypothesis, a fixed seed, against the real
rest_proxy.py and tests/integration/_fake_peer.py)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration._fake_peer import FakePeer, start_fake_peer
from tests.integration._proxy import ProxyProcess
from tools.procs import free_port_pair

CODES = {-32700, -32600, -32601, -32602, -32603, -31002, -31003, -31004}
METHODS = [
    "icx_getLastBlock",
    "icx_getBlockByHeight",
    "icx_getBlockByHash",
    "icx_getTransactionByHash",
    "icx_getTransactionResult",
    "icx_getNetworkInfo",
    "icx_getBlock",
    "icx_sendTransaction",
]
MAX_BODY = 4096

pytestmark = pytest.mark.asyncio(loop_scope="module")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
hex_texts = st.from_regex(r"(0x)?[0-9a-fA-F]{0,66}", fullmatch=True)
params = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "height": hex_texts | json_values,
            "hash": hex_texts,
            "txHash": hex_texts | st.just("0x" + "ab" * 32),
        },
    ),
)
requests = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2.0]) | json_values,
        "method": st.sampled_from(METHODS) | st.text(max_size=30) | json_values,
    },
    optional={
        "id": st.integers() | st.text(max_size=10) | st.none() | json_values,
        "params": params,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    requests.map(lambda value: json.dumps(value).encode()),
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def proxy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProxyProcess]:
    port = free_port_pair()
    fake = FakePeer()
    server, _ = await start_fake_peer(port, fake)
    for _ in range(3):
        fake.make_block()
    process = ProxyProcess(
        port,
        tmp_path_factory.mktemp("fuzz"),
        {"GRPC_TIMEOUT": 5.0, "REST_MAX_BODY_BYTES": MAX_BODY},
    )
    process.start()
    try:
        async with aiohttp.ClientSession() as session:
            await process.wait_ready(session)
        yield process
    finally:
        status = process.stop()
        await server.stop(None)
    assert status == 0, process.log_text()
    process.assert_clean_log()


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _expected_id(body: bytes) -> tuple[bool, Any]:
    """(True, id) when the body is a request object whose id must be echoed."""
    try:
        value = json.loads(body)
    except ValueError:
        return False, None
    if not isinstance(value, dict):
        return False, None
    request_id = value.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None):
        return False, None
    return True, request_id


def _check(url: str, body: bytes) -> None:
    status, answer = _post(url, body)
    assert status in (200, 400), (status, answer)
    assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0", answer
    assert ("result" in answer) != ("error" in answer), answer
    assert set(answer) == {"jsonrpc", "id", "result" if status == 200 else "error"}, answer
    if status == 400:
        error = answer["error"]
        assert error["code"] in CODES and isinstance(error["message"], str) and error["message"]
    echoes, request_id = _expected_id(body)
    beyond_limits = status == 400 and answer["error"]["code"] == -32700  # e.g. a lone surrogate
    if echoes and not beyond_limits:
        assert answer["id"] == request_id, (body, answer)


def _fuzz(url: str, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=bodies)
    def check(body: bytes) -> None:
        _check(url, body)

    check()


async def test_any_body_gets_a_json_rpc_answer(proxy: ProxyProcess) -> None:
    await asyncio.to_thread(_fuzz, proxy.base + "/api/v3", 300)  # the fake peer's loop stays free
    await asyncio.to_thread(_fuzz, proxy.base + "/api/v3d/loopchain_default", 100)
