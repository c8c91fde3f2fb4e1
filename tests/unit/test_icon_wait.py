"""icx_waitTransactionResult and icx_sendTransactionAndWait's wait (IconMethods._wait): what its
polls meet, alone (the reader is not asked: the result lookup is a stand-in); and the proxy's
refusal of a block read for want of a turn, which monitors and waits make again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from loopchain.configure import load_config
from loopchain.rest.errors import ProxyBusy
from loopchain.rest.handlers import MAX_BLOCK_READS, PeerApi
from loopchain.rest.icon_methods import Call, IconMethods
from loopchain.rest.icon_peer import BusyError
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError

pytestmark = pytest.mark.asyncio

TX = "ab" * 32


def methods_answering(*answers: Any) -> IconMethods:
    """IconMethods whose result lookups answer (or raise) `answers` in turn."""
    reader = SimpleNamespace(stopping=asyncio.Event())  # a proxy that is not stopping
    methods = IconMethods(reader=reader, nid="0x3")  # type: ignore[arg-type]
    queue = list(answers)

    async def result(call: Call, tx_hash: str) -> Any:
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    methods._result = result  # type: ignore[method-assign]
    return methods


# the proxy's own refusal of a poll for want of room (REST_MAX_INFLIGHT, block read turns)
BUSY = BusyError(JsonRpcCode.INTERNAL_ERROR, "the peer is busy", {"retryAfter": 1})


async def test_a_poll_meeting_an_overload_waits_on() -> None:
    """A transaction taken, then a poll refused busy: it was answered -32603 (retryAfter), and
    the client sending it again as told heard it is known (review). It is waited for."""
    pending = JsonRpcError(JsonRpcCode.PENDING, "in the pool")
    methods = methods_answering(pending, BUSY, BUSY, {"status": "0x1"})
    assert await methods._wait(Call("", wait_ms=5_000), TX) == {"status": "0x1"}


async def test_a_wait_busy_to_its_end_is_minus_31006_with_the_hash() -> None:
    methods = methods_answering(*([BUSY] * 1000))
    with pytest.raises(JsonRpcError) as ended:
        await methods._wait(Call("", wait_ms=100), TX)
    assert ended.value.code == JsonRpcCode.TIMEOUT and ended.value.data == "0x" + TX


async def test_another_error_ends_the_wait_at_once() -> None:
    unknown = JsonRpcError(JsonRpcCode.NOT_FOUND, "not known")
    methods = methods_answering(unknown)
    with pytest.raises(JsonRpcError) as ended:
        await methods._wait(Call("", wait_ms=5_000), TX)
    assert ended.value is unknown


async def test_a_block_read_refused_for_want_of_a_turn_is_the_proxys_busy_refusal() -> None:
    """It was a plain 503 RestError: a websocket monitor (which makes a refused busy read again)
    was closed with -32603 once 16 block reads were in flight (review)."""
    api = PeerApi(load_config(environ={}, overrides={"GRPC_TIMEOUT": 0.2}), "127.0.0.1:1")
    for _ in range(MAX_BLOCK_READS):
        await api._block_reads.acquire()
    with pytest.raises(ProxyBusy, match="block reads are in flight"):
        async with api._block_read_turn():
            pass
