"""The real rest_proxy.py process against a PeerService on 127.0.0.1 (tests/integration/_fake_peer.py)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from loopchain.configure import load_config
from loopchain.rest.app import PEER_API, create_app
from loopchain.rest.jsonrpc import outer_error
from loopchain.types.codes import ResponseCode
from loopchain.types.jsonrpc import JsonRpcCode
from tests.integration._fake_peer import DEFAULT_CHANNEL, FakePeer, start_fake_peer
from tests.integration._proxy import ProxyProcess, proxy_in_front_of
from tests.integration._slow_clients import (
    HALF_HEAD,
    SILENT,
    broken_chunk_after_head,
    get_request,
    held_connection,
    read_response,
    status_and_body,
    until_closed,
    withheld_body,
)
from tools.bench import read_anon_kb
from tools.procs import (
    REST_DIFF,
    Proc,
    assert_clean_log,
    free_port_pair,
    hold_port,
    wait_until_async,
)

REPO = Path(__file__).resolve().parents[2]
PROXY = REPO / "rest_proxy.py"
GRPC_TIMEOUT = 3.0  # generous: the machine is shared; the hang test waits this long
MAX_BODY = 64 * 1024
OTHER_CHANNEL = "kofia_1"
EMPTY_CHANNEL = "empty_channel"

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def network(
    session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[FakePeer, ProxyProcess]]:
    fake = FakePeer(channels=(DEFAULT_CHANNEL, OTHER_CHANNEL, EMPTY_CHANNEL))
    conf = {"GRPC_TIMEOUT": GRPC_TIMEOUT, "REST_MAX_BODY_BYTES": MAX_BODY}
    async with proxy_in_front_of(fake, tmp_path_factory.mktemp("proxy"), conf, session) as proxy:
        try:
            yield fake, proxy
        finally:
            fake.release_queries.set()  # a held query would keep the proxy from stopping


@pytest_asyncio.fixture(loop_scope="module")
async def peer(network: tuple[FakePeer, ProxyProcess]) -> AsyncIterator[FakePeer]:
    fake = network[0]
    yield fake
    fake.clear_failures()
    fake.score = True


@pytest.fixture
def base(network: tuple[FakePeer, ProxyProcess]) -> str:
    return network[1].base


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with session.request(method, url, **kwargs) as resp:
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert isinstance(body["response_code"], int)
    return resp.status, body


def assert_error(status: int, body: dict[str, Any], http: int, code: int, text: str) -> None:
    assert (status, body["response_code"]) == (http, code), body
    assert text in body["message"], body


def last_call(fake: FakePeer, method: str) -> Any:
    return next(req for name, req in reversed(fake.calls) if name == method)


# ---------------------------------------------------------------- transactions


async def test_create_tx_forwards_compact_body_and_returns_hash(session, base, peer):
    status, body = await call(
        session, "POST", base + "/api/v1/transactions", data=b'{ "data" : "hello" }'
    )
    assert status == 200
    assert body["response_code"] == 0 and body["more_info"] == ""
    assert body["tx_hash"] in peer.chains[DEFAULT_CHANNEL].pool
    request = last_call(peer, "CreateTx")
    assert (request.channel, request.data_json) == ("", '{"data":"hello"}')


async def test_create_tx_takes_an_array_and_answers_each_in_order(session, base, peer):
    items = [{"data": "a"}, {"data": "b", "channel": OTHER_CHANNEL}, {"channel": "nope"}]
    status, body = await call_list(session, base + "/api/v1/transactions", items)
    assert status == 200 and len(body) == 3
    assert body[0]["response_code"] == 0 and len(body[0]["tx_hash"]) == 64
    assert body[1]["response_code"] == 0
    assert peer.chains[OTHER_CHANNEL].pool[body[1]["tx_hash"]].data["data"] == "b"
    assert body[2]["response_code"] == ResponseCode.NOT_FOUND and "'nope'" in body[2]["message"]
    assert body[0]["tx_hash"] in peer.chains[DEFAULT_CHANNEL].pool


async def submission_counters(session: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """(calls carrying submissions, submissions they carried) from the proxy's /metrics."""
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return (
        values["loopchain_rest_submission_calls_total"],
        values["loopchain_rest_submissions_sent_total"],
    )


async def test_concurrent_submissions_are_coalesced_into_batched_calls(session, base, peer):
    """40 submissions at once reach the peer in fewer calls; the proxy's metrics count the calls
    and what they carried."""
    before = sum(name == "CreateTxBatch" for name, _ in peer.calls)
    calls_before, sent_before = await submission_counters(session, base)
    replies = await asyncio.gather(
        *(call(session, "POST", base + "/api/v1/transactions", json={"n": n}) for n in range(40))
    )
    assert {status for status, _ in replies} == {200}
    hashes = {body["tx_hash"] for _, body in replies}
    assert len(hashes) == 40 and hashes <= set(peer.chains[DEFAULT_CHANNEL].pool)
    batches = sum(name == "CreateTxBatch" for name, _ in peer.calls) - before
    assert 1 <= batches < 40
    calls_after, sent_after = await submission_counters(session, base)
    assert (calls_after - calls_before, sent_after - sent_before) == (batches, 40)


async def call_list(
    session: aiohttp.ClientSession, url: str, items: list[Any]
) -> tuple[int, list[dict[str, Any]]]:
    async with session.post(url, json=items) as resp:
        return resp.status, await resp.json()


async def test_create_tx_channel_field_selects_channel(session, base, peer):
    payload = {"channel": OTHER_CHANNEL, "data": {"n": 1}}
    status, body = await call(session, "POST", base + "/api/v1/transactions", json=payload)
    assert status == 200
    assert body["tx_hash"] in peer.chains[OTHER_CHANNEL].pool
    assert last_call(peer, "CreateTx").channel == OTHER_CHANNEL


async def test_create_tx_unknown_channel_is_not_found(session, base, peer):
    payload = {"channel": "nope", "data": 1}
    status, body = await call(session, "POST", base + "/api/v1/transactions", json=payload)
    assert_error(status, body, 404, ResponseCode.NOT_FOUND, "'nope'")


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b'{"data": ', "malformed JSON"),
        (b"[1, 2]", "transaction 0 of the array must be a JSON object, got a number"),
        (b"[]", "an array of transactions holds 1 to 256 (the smaller of 500 and REST_MAX_"),
        # more than REST_MAX_INFLIGHT (256) could never be taken at once: not a 503 to retry
        (b"[" + b"{}," * 256 + b"{}]", "holds 1 to 256 (the smaller of 500 and REST_MAX_INFLIGHT"),
        (b"[" + b"{}," * 500 + b"{}]", "REST_MAX_INFLIGHT 256), got 501"),
        (b'"hello"', "must be a JSON object, got a string"),
        (b"42", "must be a JSON object, got a number"),
        (b"null", "must be a JSON object, got null"),
        (b"", "body is empty"),
        (b"   ", "body is empty"),
        (b'{"data": NaN}', "NaN is not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"channel": 5}', "channel field must be a string"),
        (b"[" * 5000 + b"]" * 5000, "malformed JSON"),
        (b'{"data": "\\ud800"}', "lone surrogate) (at $.data)"),
        (b'{"channel": "\\udfff"}', "lone surrogate) (at $.channel)"),
        (b'{"data": ' + b"9" * 400 + b"}", "limited to 80 digits"),
        (b'{"data": ' + b"[" * 100 + b"]" * 100 + b"}", "levels of nesting"),
    ],
)
async def test_create_tx_rejects_bad_bodies(session, base, peer, raw, text):
    status, body = await call(session, "POST", base + "/api/v1/transactions", data=raw)
    assert_error(status, body, 400, ResponseCode.INVALID_PARAMS, text)


@pytest.mark.parametrize("path", ["/api/v1/transactions", "/api/v1/query", "/api/v3"])
async def test_bodies_http_cannot_decode_are_400_not_500(session, base, peer, path):
    """A body not in its Content-Encoding: aiohttp's RequestPayloadError was a 500 (and -32603 on
    JSON-RPC) with a traceback; now a 400 naming it (the module's end checks the log)."""
    headers = {"Content-Encoding": "deflate", "Content-Type": "application/json"}
    async with session.post(base + path, data=b"not deflate", headers=headers) as resp:
        status, body = resp.status, await resp.json()
    if path == "/api/v3":
        assert body["error"]["code"] == -32700, body
        assert "the request body cannot be read" in body["error"]["message"], body
    else:
        assert_error(status, body, 400, ResponseCode.INVALID_PARAMS, "cannot be read")


async def test_cross_site_writes_are_refused_and_same_origin_ones_taken(session, base, peer):
    url = base + "/api/v1/transactions"
    before = len(peer.calls)
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        status, body = await call(
            session, "POST", url, data=b'{"data": 1}', headers={"Origin": origin}
        )
        assert_error(status, body, 403, ResponseCode.FAIL, "cross-site request")
    # a name rebound to this node's address (DNS rebinding): the browser sends it as Host too
    rebound = {"Origin": "http://attacker.example:80", "Host": "attacker.example:80"}
    status, body = await call(session, "POST", url, data=b'{"data": 1}', headers=rebound)
    assert_error(status, body, 403, ResponseCode.FAIL, "by IP address or localhost")
    assert len(peer.calls) == before  # nothing reached the peer
    same = base.removesuffix("/")  # the page served by this proxy itself
    status, body = await call(session, "POST", url, json={"data": 2}, headers={"Origin": same})
    assert status == 200 and body["response_code"] == 0, body
    local = same.replace("127.0.0.1", "localhost")  # the same page, by the loopback's name
    headers = {"Origin": local, "Host": local.removeprefix("http://")}
    status, body = await call(session, "POST", url, json={"data": 3}, headers=headers)
    assert status == 200 and body["response_code"] == 0, body
    status, body = await call(
        session, "GET", base + "/api/v1/status/peer", headers={"Origin": "http://evil.example"}
    )
    assert status == 200  # reads are not refused


async def test_create_tx_rejects_what_the_peer_finds_invalid(session, base, peer):
    payload = {"data": 1.5}  # canonical JSON has no floats; the peer says so
    status, body = await call(session, "POST", base + "/api/v1/transactions", json=payload)
    assert_error(status, body, 400, ResponseCode.INVALID_PARAMS, "floats")


async def test_oversized_body_is_413(session, base, peer):
    raw = b'{"data": "' + b"x" * (MAX_BODY + 10) + b'"}'
    status, body = await call(session, "POST", base + "/api/v1/transactions", data=raw)
    assert_error(status, body, 413, ResponseCode.INVALID_PARAMS, f"{MAX_BODY} bytes")


async def test_oversized_chunked_body_is_413(session, base, peer):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": "'
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    status, body = await call(session, "POST", base + "/api/v1/transactions", data=chunks())
    assert_error(status, body, 413, ResponseCode.INVALID_PARAMS, f"{MAX_BODY} bytes")


async def _create_tx(session: aiohttp.ClientSession, base: str, payload: Any) -> str:
    status, body = await call(session, "POST", base + "/api/v1/transactions", json=payload)
    assert status == 200, body
    return str(body["tx_hash"])


async def test_get_tx_from_pool_then_from_block(session, base, peer):
    payload = {"jsonrpc": "2.0", "method": "greet", "params": {"to": "you"}}
    tx_hash = await _create_tx(session, base, payload)
    status, body = await call(session, "GET", base + f"/api/v1/transactions?hash={tx_hash}")
    assert status == 200
    assert body["data"] == payload and body["more_info"] == "" and body["block_height"] == -1
    assert body["meta"] == {
        "peer_id": peer.signer.address,
        "score_id": "loopchain/default",
        "score_version": "0.1.0",
        "channel_name": DEFAULT_CHANNEL,
    }
    tx = peer.chains[DEFAULT_CHANNEL].pool[tx_hash]
    assert base64.b64decode(body["signature"]) == tx.signature
    assert base64.b64decode(body["public_key"]) == peer.signer.public_key
    block = peer.make_block()
    status, body = await call(session, "GET", base + f"/api/v1/transactions?hash={tx_hash}")
    assert (status, body["block_height"]) == (200, block.height)


async def test_get_tx_in_other_channel(session, base, peer):
    tx_hash = await _create_tx(session, base, {"channel": OTHER_CHANNEL, "data": "x"})
    url = base + f"/api/v1/transactions?hash={tx_hash}&channel={OTHER_CHANNEL}"
    status, body = await call(session, "GET", url)
    assert (status, body["meta"]["channel_name"]) == (200, OTHER_CHANNEL)
    status, body = await call(session, "GET", base + f"/api/v1/transactions?hash={tx_hash}")
    assert_error(status, body, 404, ResponseCode.NOT_FOUND, tx_hash)


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("", "'hash' is missing"),
        ("?hash=", "'hash' is missing"),
        ("?hash=xyz", "expected 64 hex digits"),
        ("?hash=" + "g" * 64, "expected 64 hex digits"),
        ("?hash=" + "a" * 63, "expected 64 hex digits"),
    ],
)
async def test_get_tx_rejects_bad_hashes(session, base, peer, query, text):
    status, body = await call(session, "GET", base + "/api/v1/transactions" + query)
    assert_error(status, body, 400, ResponseCode.INVALID_PARAMS, text)


async def test_get_tx_unknown_hash_is_not_found(session, base, peer):
    status, body = await call(session, "GET", base + "/api/v1/transactions?hash=" + "ab" * 32)
    assert_error(status, body, 404, ResponseCode.NOT_FOUND, "ab" * 32)


async def test_tx_result_before_and_after_block(session, base, peer):
    tx_hash = await _create_tx(session, base, {"data": "result me"})
    url = base + f"/api/v1/transactions/result?hash={tx_hash}"
    status, body = await call(session, "GET", url)
    assert (status, body) == (
        200,
        {"response_code": 0, "response": {"code": 2, "message": "not invoked yet"}},
    )
    peer.make_block()
    status, body = await call(session, "GET", url)
    assert (status, body) == (200, {"response_code": 0, "response": {"code": 0}})


async def test_tx_result_errors(session, base, peer):
    url = base + "/api/v1/transactions/result?hash=" + "cd" * 32
    status, body = await call(session, "GET", url)
    assert_error(status, body, 404, ResponseCode.NOT_FOUND, "cd" * 32)
    status, body = await call(session, "GET", base + "/api/v1/transactions/result?hash=1")
    assert_error(status, body, 400, ResponseCode.INVALID_PARAMS, "64 hex digits")
    peer.score = False
    status, body = await call(session, "GET", url)
    assert_error(status, body, 501, ResponseCode.FAIL, "SCORE service lands")


class HeldLookups(FakePeer):
    """A fake peer holding its GetTxResultBatch and GetTxBatch calls until `release` is set;
    `batches` has the hashes each call carried, by method, and `with_tx` whether each
    GetTxResultBatch call asked for the transactions too."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.batches: dict[str, list[list[str]]] = {"GetTxResultBatch": [], "GetTxBatch": []}
        self.with_tx: list[bool] = []

    async def GetTxResultBatch(self, request: Any, context: Any) -> Any:
        self.batches["GetTxResultBatch"].append(list(request.tx_hashes))
        self.with_tx.append(request.with_tx)
        await self.release.wait()
        return await super().GetTxResultBatch(request, context)

    async def GetTxBatch(self, request: Any, context: Any) -> Any:
        self.batches["GetTxBatch"].append(list(request.tx_hashes))
        await self.release.wait()
        return await super().GetTxBatch(request, context)


# (route, the peer method its lookups go in): the v1 route's path, or the v3 method
LOOKUPS = {
    "v1-result": ("/api/v1/transactions/result", "GetTxResultBatch"),
    "v3-result": ("icx_getTransactionResult", "GetTxResultBatch"),
    "v1-tx": ("/api/v1/transactions", "GetTxBatch"),
    "v3-tx": ("icx_getTransactionByHash", "GetTxBatch"),
}


async def _lookup(session: aiohttp.ClientSession, base: str, route: str, tx_hash: str) -> Any:
    """A transaction (or its result) through a v1 route, or a v3 method (its JSON-RPC answer);
    a refusal for a busy proxy (a probe below held a slot) is asked again, as a client would."""
    while True:
        if route.startswith("icx_"):
            request = {"jsonrpc": "2.0", "id": 1, "method": route}
            request["params"] = {"txHash": "0x" + tx_hash}
            async with session.post(base + "/api/v3", json=request) as resp:
                body = await resp.json()
            if "busy" not in body.get("error", {}).get("message", ""):
                return resp.status, body
        else:
            status, body = await call(session, "GET", f"{base}{route}?hash={tx_hash}")
            if status != 503:
                return status, body


@pytest.mark.parametrize("kind", list(LOOKUPS))
async def test_concurrent_lookups_are_coalesced_into_batched_calls(session, tmp_path, kind):
    """Lookups of transactions or their results that arrive while one is in flight go together
    in the next GetTxBatch or GetTxResultBatch call, each answered its own, an unknown
    transaction its own not found. (Known to have arrived: with REST_MAX_INFLIGHT = 31 held by
    them, a read is refused.)"""
    route, method = LOOKUPS[kind]
    fake = HeldLookups()
    conf = {"GRPC_TIMEOUT": 60.0, "REST_MAX_INFLIGHT": 31}
    async with proxy_in_front_of(fake, tmp_path, conf, session) as proxy:
        try:
            hashes = [await _create_tx(session, proxy.base, {"n": n}) for n in range(30)]
            fake.make_block()
            unknown = "cd" * 32
            first = asyncio.ensure_future(_lookup(session, proxy.base, route, hashes[0]))

            async def in_flight() -> bool:
                return len(fake.batches[method]) == 1

            await wait_until_async(in_flight, 30, "the first lookup to reach the peer")
            asked = [*hashes[1:], unknown]
            queued = [asyncio.ensure_future(_lookup(session, proxy.base, route, h)) for h in asked]

            async def all_queued() -> bool:
                status, _ = await call(session, "GET", proxy.base + "/api/v1/blocks")
                return status == 503

            await wait_until_async(all_queued, 30, "30 lookups to wait in the proxy")
            fake.release.set()
            answers = await asyncio.wait_for(asyncio.gather(first, *queued), 30)
            *found, missing = answers
            for tx_hash, (status, body) in zip(hashes, found, strict=True):
                assert status == 200, body
                if kind == "v1-result":
                    assert body == {"response_code": 0, "response": {"code": 0}}
                elif kind == "v1-tx":
                    assert body["block_height"] == 0, body
                else:
                    assert body["result"]["txHash"] == "0x" + tx_hash, body
            if route.startswith("icx_"):
                assert missing[1]["error"]["code"] == -31004, missing  # not found
                assert unknown in missing[1]["error"]["message"], missing
            else:
                assert_error(*missing, 404, ResponseCode.NOT_FOUND, unknown)
            assert [len(batch) for batch in fake.batches[method]] == [1, 30]
            assert sorted(fake.batches[method][1]) == sorted(asked)
            if kind == "v3-result":  # a receipt's transaction comes with its result: one lookup
                assert fake.batches["GetTxBatch"] == [] and fake.with_tx == [True, True]
            elif kind == "v1-result":  # a v1 result names no transaction: none is read for it
                assert fake.with_tx == [False, False]
        finally:
            fake.release.set()


# ---------------------------------------------------------------- query


async def test_query_passes_body_verbatim(session, base, peer):
    raw = '{"method": "get_balance",  "params": {"address": "hx00"}}'
    status, body = await call(session, "POST", base + "/api/v1/query", data=raw.encode())
    assert status == 200
    assert body == {"response_code": 0, "response": {"echo": json.loads(raw)}}
    request = last_call(peer, "Query")
    assert (request.channel, request.params_json) == ("", raw)


async def test_concurrent_queries_are_coalesced_into_batched_calls(session, tmp_path):
    """Queries that arrive while one is in flight go together in the next call, each answered
    its own answer, and are not counted as submissions. (Known to have arrived: with
    REST_MAX_INFLIGHT = 31 held by them, a read is refused.)"""
    fake = FakePeer()
    conf = {"GRPC_TIMEOUT": 60.0, "REST_MAX_INFLIGHT": 31}
    async with proxy_in_front_of(fake, tmp_path, conf, session) as proxy:
        url = proxy.base + "/api/v1/query"
        try:
            submissions = await submission_counters(session, proxy.base)
            hanging = asyncio.ensure_future(call(session, "POST", url, json={"hang": True}))

            async def in_flight() -> bool:
                return sum(name == "QueryBatch" for name, _ in fake.calls) == 1

            await wait_until_async(in_flight, 30, "the first query to reach the peer")

            async def query(n: int) -> tuple[int, Any]:
                while True:  # a 503 (a probe below held a slot) is sent again, as a client would
                    status, body = await call(session, "POST", url, json={"n": n})
                    if status != 503:
                        return status, body

            queued = [asyncio.ensure_future(query(n)) for n in range(30)]

            async def all_queued() -> bool:
                status, _ = await call(session, "GET", proxy.base + "/api/v1/blocks")
                return status == 503

            await wait_until_async(all_queued, 30, "30 queries to wait in the proxy")
            fake.release_queries.set()
            assert (await hanging)[0] == 200
            for n, (status, body) in enumerate(await asyncio.wait_for(asyncio.gather(*queued), 30)):
                assert (status, body) == (200, {"response_code": 0, "response": {"echo": {"n": n}}})
            assert sum(name == "QueryBatch" for name, _ in fake.calls) == 2
            assert await submission_counters(session, proxy.base) == submissions
        finally:
            fake.release_queries.set()


async def test_query_channel_field_and_errors(session, base, peer):
    status, body = await call(
        session, "POST", base + "/api/v1/query", json={"channel": "nope", "method": "m"}
    )
    assert_error(status, body, 404, ResponseCode.NOT_FOUND, "'nope'")
    status, body = await call(session, "POST", base + "/api/v1/query", data=b"{oops")
    assert_error(status, body, 400, ResponseCode.INVALID_PARAMS, "malformed JSON")
    peer.score = False
    status, body = await call(session, "POST", base + "/api/v1/query", json={"method": "m"})
    assert_error(status, body, 501, ResponseCode.FAIL, "SCORE service lands")


async def test_query_past_the_deadline_is_504(session, base, peer):
    probes = peer.counted["GetStatus"]
    started = time.monotonic()
    status, body = await call(session, "POST", base + "/api/v1/query", json={"hang": True})
    assert_error(status, body, 504, ResponseCode.TIMEOUT, f"within {GRPC_TIMEOUT:g} s")
    assert time.monotonic() - started < GRPC_TIMEOUT + 5

    async def probed() -> bool:  # the query's call ran out of time too: the proxy probes
        return peer.counted["GetStatus"] > probes

    # (the client hears the 504 when its own wait ends, a moment before the call's deadline:
    # waiting for the probe keeps it from meeting the next test's stalled peer)
    await wait_until_async(probed, 30, "the proxy's probe after the call's deadline")
    # a peer slow on one call answers the proxy's probe: the next call is not refused
    status, body = await call(session, "GET", base + "/api/v1/status/peer")
    assert (status, body["response_code"]) == (200, 0), body


async def test_a_stalled_peer_is_refused_at_once_until_it_answers_again(session, base, peer):
    """A peer that answers nothing (the connection open, as a stopped process keeps it): the call
    in flight runs out of time (504), the proxy's probe gets no answer either, and from then on
    calls are refused as unreachable without waiting (503 with Retry-After) until it answers."""
    peer.stall()
    try:
        status, body = await call(session, "POST", base + "/api/v1/transactions", json={"d": 1})
        assert_error(status, body, 504, ResponseCode.TIMEOUT, f"within {GRPC_TIMEOUT:g} s")

        async def refused_at_once() -> tuple[int, dict[str, Any], str | None] | None:
            async with session.post(base + "/api/v1/transactions", json={"d": 2}) as resp:
                answer = resp.status, await resp.json(), resp.headers.get("Retry-After")
            return answer if answer[0] == 503 else None

        status, body, retry_after = await wait_until_async(
            refused_at_once, 60, "a submission refused because the peer is stalled"
        )
        assert_error(status, body, 503, ResponseCode.FAIL, "answered nothing")
        assert "unreachable" in body["message"] and retry_after == "1"
        status, body = await call(session, "GET", base + "/api/v1/status/peer")
        assert_error(status, body, 503, ResponseCode.FAIL, "refused until it answers again")
    finally:
        peer.go_on()

    async def answers() -> bool:
        status, _ = await call(session, "GET", base + "/api/v1/status/peer")
        return status == 200

    await wait_until_async(answers, 60, "the proxy to call the peer again once it answers")
    status, body = await call(session, "POST", base + "/api/v1/transactions", json={"d": 3})
    assert (status, body["response_code"]) == (200, 0), body
    peer.chains[DEFAULT_CHANNEL].pool.clear()  # the submissions held meanwhile went through


# ---------------------------------------------------------------- blocks


async def test_last_block_of_empty_chain(session, base, peer):
    status, body = await call(session, "GET", base + f"/api/v1/blocks?channel={EMPTY_CHANNEL}")
    assert (status, body) == (
        200,
        {"response_code": 0, "block_hash": "", "block_data_json": {"height": -1}},
    )


async def test_last_block_and_block_by_hash_and_height(session, base, peer):
    tx_hash = await _create_tx(session, base, {"data": {"k": "v"}})
    block = peer.make_block()
    status, body = await call(session, "GET", base + "/api/v1/blocks")
    assert status == 200 and "tx_data_json" not in body
    header = block.header
    assert body["block_hash"] == block.hash.hex()
    assert body["block_data_json"] == {
        "prev_block_hash": header.prev_hash.hex(),
        "merkle_tree_root_hash": header.tx_root.hex(),
        "time_stamp": header.timestamp,
        "height": block.height,
        "peer_id": peer.signer.address,
        "round": 0,
        "next_leader": peer.signer.address,
        "block_hash": block.hash.hex(),
        "state_root": header.state_root.hex(),
        "tx_count": 1,
    }
    status, by_hash = await call(session, "GET", base + f"/api/v1/blocks?hash={block.hash.hex()}")
    assert status == 200
    assert by_hash["block_data_json"] == body["block_data_json"]
    tx = block.transactions[0]
    assert by_hash["tx_data_json"] == [
        {
            "tx_hash": tx_hash,
            "timestamp": tx.timestamp,
            "data_string": json.dumps({"data": {"k": "v"}}),
            "peer_id": peer.signer.address,
        }
    ]
    status, by_height = await call(session, "GET", base + f"/api/v1/blocks?height={block.height}")
    assert (status, by_height) == (200, by_hash)
    peer.sends_tx_hashes = False  # a peer of an earlier version: the proxy hashes them itself
    status, hashed_here = await call(
        session, "GET", base + f"/api/v1/blocks?hash={block.hash.hex()}"
    )
    assert (status, hashed_here) == (200, by_hash)


@pytest.mark.parametrize("api", ["v1", "v3"])
async def test_a_poll_of_an_unchanged_last_block_is_answered_without_the_block(
    session, tmp_path, api
):
    """The last block, asked again while it is still the last, is not sent by the peer again
    (GetBlockRequest.unless_hash): the proxy answers what it answered; once another block is
    the last, that one is answered. Each channel keeps its own."""
    fake = FakePeer(channels=(DEFAULT_CHANNEL, OTHER_CHANNEL))
    async with proxy_in_front_of(fake, tmp_path, {}, session) as proxy:

        async def last(channel: str = "") -> Any:
            if api == "v1":
                suffix = f"?channel={channel}" if channel else ""
                status, body = await call(session, "GET", f"{proxy.base}/api/v1/blocks{suffix}")
                assert status == 200, body
                return body
            url = f"{proxy.base}/api/v3" + (f"/{channel}" if channel else "")
            request = {"jsonrpc": "2.0", "id": 1, "method": "icx_getLastBlock"}
            async with session.post(url, json=request) as resp:
                body = await resp.json()
            assert resp.status == 200, body
            return body["result"]

        def hash_of(answer: Any) -> str:
            return answer["block_hash"].removeprefix("0x")

        first = fake.make_block()
        answers = [await last() for _ in range(3)]
        assert hash_of(answers[0]) == first.hash.hex() and answers == [answers[0]] * 3
        assert fake.unchanged_blocks == 2  # the second and third: no block sent
        other = fake.make_block(OTHER_CHANNEL)
        assert hash_of(await last(OTHER_CHANNEL)) == other.hash.hex()
        second = fake.make_block()
        assert hash_of(await last()) == second.hash.hex()  # another block: sent, answered
        assert hash_of(await last()) == second.hash.hex()
        assert hash_of(await last(OTHER_CHANNEL)) == other.hash.hex()
        assert fake.unchanged_blocks == 4


async def test_genesis_block_has_empty_prev_hash(session, base, peer):
    if not peer.chains[DEFAULT_CHANNEL].blocks:
        peer.make_block()
    status, body = await call(session, "GET", base + "/api/v1/blocks?height=0")
    assert (status, body["block_data_json"]["prev_block_hash"]) == (200, "")


@pytest.mark.parametrize(
    ("query", "http", "code", "text"),
    [
        ("?hash=" + "ee" * 32, 404, ResponseCode.NOT_FOUND, "ee" * 32),
        ("?height=999999", 404, ResponseCode.NOT_FOUND, "height 999999"),
        ("?hash=zz", 400, ResponseCode.INVALID_PARAMS, "64 hex digits"),
        ("?height=-1", 400, ResponseCode.INVALID_PARAMS, "non-negative integer"),
        ("?height=abc", 400, ResponseCode.INVALID_PARAMS, "non-negative integer"),
        ("?height=0&hash=" + "ee" * 32, 400, ResponseCode.INVALID_PARAMS, "not both"),
        ("?channel=nope", 404, ResponseCode.NOT_FOUND, "'nope'"),
    ],
)
async def test_block_errors(session, base, peer, query, http, code, text):
    status, body = await call(session, "GET", base + "/api/v1/blocks" + query)
    assert_error(status, body, http, code, text)


# ---------------------------------------------------------------- status


async def test_status_peer(session, base, peer):
    status, body = await call(session, "GET", base + "/api/v1/status/peer")
    assert status == 200
    chain = peer.chains[DEFAULT_CHANNEL]
    assert body["status"] == "Service is online: 1" and body["peer_type"] == "1"
    assert body["peer_id"] == peer.signer.address
    assert body["block_height"] == len(chain.blocks) - 1
    assert body["channel"] == DEFAULT_CHANNEL
    status, body = await call(session, "GET", base + f"/api/v1/status/peer?channel={OTHER_CHANNEL}")
    assert (status, body["channel"]) == (200, OTHER_CHANNEL)
    status, body = await call(session, "GET", base + "/api/v1/status/peer?channel=nope")
    assert_error(status, body, 404, ResponseCode.NOT_FOUND, "'nope'")


async def test_status_score(session, base, peer):
    status, body = await call(session, "GET", base + "/api/v1/status/score")
    assert (status, body) == (
        200,
        {
            "response_code": 0,
            "id": "loopchain/default",
            "version": "0.1.0",
            "all_version": ["0.1.0", "0.0.9"],
            "status": 0,
        },
    )
    peer.score = False
    status, body = await call(session, "GET", base + "/api/v1/status/score")
    assert_error(status, body, 501, ResponseCode.FAIL, "not running")


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("code", "http", "response_code"),
    [
        (grpc.StatusCode.NOT_FOUND, 404, ResponseCode.NOT_FOUND),
        (grpc.StatusCode.INVALID_ARGUMENT, 400, ResponseCode.INVALID_PARAMS),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, ResponseCode.TIMEOUT),
        (grpc.StatusCode.UNAVAILABLE, 503, ResponseCode.FAIL),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 503, ResponseCode.FAIL),
        (grpc.StatusCode.FAILED_PRECONDITION, 503, ResponseCode.NO_LEADER),
        (grpc.StatusCode.UNIMPLEMENTED, 501, ResponseCode.FAIL),
        (grpc.StatusCode.INTERNAL, 502, ResponseCode.FAIL),
    ],
)
async def test_grpc_status_mapping(session, base, peer, code, http, response_code):
    details = f"peer says {code.name.lower()}"
    peer.fail("CreateTx", code, details)
    async with session.post(base + "/api/v1/transactions", json={"d": 1}) as resp:
        status, body = resp.status, await resp.json()
        # every 503 (overload, unreachable, no leader) tells the client when to try again
        assert resp.headers.get("Retry-After") == ("1" if http == 503 else None)
    assert_error(status, body, http, response_code, details)
    peer.fail("GetStatus", code, details)
    status, body = await call(session, "GET", base + "/api/v1/status/peer")
    assert_error(status, body, http, response_code, details)
    # lookups: the whole batch call, and the lookup alone in its entry
    for method, path in (
        ("GetTxBatch", "/api/v1/transactions"),
        ("GetTx", "/api/v1/transactions"),
        ("GetTxResultBatch", "/api/v1/transactions/result"),
        ("GetTxResult", "/api/v1/transactions/result"),
    ):
        peer.clear_failures()
        peer.fail(method, code, details)
        status, body = await call(session, "GET", f"{base}{path}?hash={'ab' * 32}")
        assert_error(status, body, http, response_code, details)


async def test_unknown_route_and_method(session, base, peer):
    status, body = await call(session, "GET", base + "/api/v1/nothing/here")
    assert_error(status, body, 404, ResponseCode.UNKNOWN_MESSAGE, "GET /api/v1/nothing/here")
    status, body = await call(session, "DELETE", base + "/api/v1/blocks")
    assert_error(status, body, 405, ResponseCode.UNKNOWN_MESSAGE, "DELETE is not allowed")


async def test_refusals_before_any_handler_are_in_the_json_rpc_shape_on_its_paths(session, base):
    """A route or method refused by the server itself, on a JSON-RPC path, is answered in the
    JSON-RPC shape (ICON's SDK reads `error` from any answer that is not a success: the v1 body
    made it raise KeyError, review); the v1 paths keep theirs."""
    async with session.get(base + "/api/v3") as resp:
        status, body = resp.status, await resp.json()
    assert status == 400 and body["jsonrpc"] == "2.0" and body["id"] is None, body
    assert body["error"]["code"] == JsonRpcCode.INVALID_REQUEST, body
    assert "method GET is not allowed on /api/v3" in body["error"]["message"], body
    async with session.post(base + "/api/v3/a/b/c", json={}) as resp:
        status, body = resp.status, await resp.json()
    assert status == 400 and body["error"]["code"] == JsonRpcCode.METHOD_NOT_FOUND, body
    assert "unknown route POST /api/v3/a/b/c" in body["error"]["message"], body


async def test_an_overload_refused_before_any_handler_says_when_to_try_again_in_either_shape() -> (
    None
):
    """The answer sender's and the connection bound's overload (503) on a JSON-RPC path: -32603
    with retryAfter and the Retry-After header, as the proxy's own overload errors are."""
    for path, v3 in (("/api/v3", True), ("/api/v3d/c", True), ("/api/v1/blocks", False)):
        response = outer_error(make_mocked_request("POST", path), 503, "busy: try again shortly")
        assert response.headers["Retry-After"] == "1", path
        body = json.loads(cast(bytes, response.body))
        if v3:
            assert response.status == 400, path
            error = body["error"]
            assert (error["code"], error["data"]) == (-32603, {"retryAfter": 1}), body
        else:
            assert response.status == 503 and body["response_code"] == ResponseCode.FAIL, body


# ---------------------------------------------------------------- process behaviour


async def test_peer_down_answers_503_and_recovers(session, tmp_path):
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path, {"GRPC_TIMEOUT": GRPC_TIMEOUT})
    proxy.start()
    try:
        await proxy.wait_ready(session)
        status, _ = await call(session, "GET", proxy.base + "/api/v1/status/peer")
        assert status == 200
        await server.stop(None)
        status, body = await call(session, "GET", proxy.base + "/api/v1/status/peer")
        assert_error(
            status, body, 503, ResponseCode.FAIL, f"peer at 127.0.0.1:{port} is unreachable"
        )
        server, _ = await start_fake_peer(port, fake)

        async def serves_again() -> bool:
            status, _ = await call(session, "GET", proxy.base + "/api/v1/status/peer")
            return status == 200

        await wait_until_async(serves_again, 15, "the proxy to reach the peer again")
    finally:
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


async def test_a_query_waiting_to_be_sent_behind_a_slow_one_is_503_not_a_timeout(session, tmp_path):
    """Reads wait behind the call in flight as transactions do (review: a query, or a result
    poll, queued behind a slow one timed out, 504 -900, where a busy peer is a 503)."""
    fake = FakePeer()
    conf = {"GRPC_TIMEOUT": 8.0}
    async with proxy_in_front_of(fake, tmp_path, conf, session) as proxy:
        url = proxy.base + "/api/v1/query"
        try:
            held = asyncio.ensure_future(call(session, "POST", url, json={"hang": True}))

            async def in_flight() -> bool:
                return any(name.startswith("Query") for name, _ in fake.calls)

            await wait_until_async(in_flight, 30, "the first query to reach the peer")
            async with session.post(url, json={"d": 1}) as resp:
                assert resp.status == 503, await resp.text()
                assert resp.headers["Retry-After"] == "1"
                body = await resp.json()
            assert_error(503, body, 503, ResponseCode.FAIL, "was not sent")
            fake.release_queries.set()
            status, body = await held
            assert status == 200, body
        finally:
            fake.release_queries.set()


async def test_a_transaction_waiting_to_be_sent_behind_a_slow_call_is_503_not_a_timeout(
    session, tmp_path
):
    """A peer slow to answer a batch of transactions: one that arrives meanwhile waits behind
    it at most half the deadline (SEND_WAIT_SHARE), then is refused 503 with Retry-After, never
    sent (so sending it again makes no second transaction), instead of waiting for the slow
    call and then its own (twice the deadline: clients gave up first). The slow one, sent,
    waits for its answer."""
    fake = FakePeer()
    conf = {"GRPC_TIMEOUT": 8.0}  # the refusal comes after 4 s: the held call has 4 s left
    async with proxy_in_front_of(fake, tmp_path, conf, session) as proxy:
        url = proxy.base + "/api/v1/transactions"
        try:
            held = asyncio.ensure_future(call(session, "POST", url, json={"hang": True}))

            async def in_flight() -> bool:
                return sum(name == "CreateTx" for name, _ in fake.calls) == 1

            await wait_until_async(in_flight, 30, "the first transaction to reach the peer")
            async with session.post(url, json={"d": 1}) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "1"
                body = await resp.json()
            assert_error(503, body, 503, ResponseCode.FAIL, "was not sent")
            fake.release_queries.set()
            status, body = await held
            assert (status, body["response_code"]) == (200, 0), body
            assert sum(name == "CreateTx" for name, _ in fake.calls) == 1  # {"d": 1}: never
        finally:
            fake.release_queries.set()


async def test_calls_beyond_the_in_flight_limit_are_503_at_once_each_kind_apart(session, tmp_path):
    """Submissions and the other calls (reads, queries, status) each hold at most
    REST_MAX_INFLIGHT calls: one more of a kind is 503 at once, before the peer, while the other
    kind is still answered (a flood of transactions leaves status checks and readers theirs)."""
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path, {"GRPC_TIMEOUT": 60.0, "REST_MAX_INFLIGHT": 2})
    proxy.start()

    def count(method: str) -> int:
        return sum(name == method for name, _ in fake.calls)

    def counted(method: str, expected: int) -> Callable[[], Awaitable[bool]]:
        async def reached() -> bool:
            return count(method) == expected

        return reached

    try:
        await proxy.wait_ready(session)
        hanging_txs = asyncio.gather(
            *(
                call(session, "POST", proxy.base + "/api/v1/transactions", json=tx)
                for tx in ({"hang": True, "n": 1}, {"hang": True, "n": 2})
            )
        )
        # both hold their slots from the start: the first reaches the peer, the other waits
        await wait_until_async(counted("CreateTx", 1), 30, "a submission to reach the peer")
        async with session.post(proxy.base + "/api/v1/transactions", json={"d": 1}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            body = await resp.json()
        assert_error(503, body, 503, ResponseCode.FAIL, "2 submissions in flight")
        assert count("CreateTx") == 1  # refused before the peer
        status, _ = await call(session, "GET", proxy.base + "/api/v1/blocks")
        assert status == 200  # reads have slots of their own

        hanging_queries = [
            asyncio.ensure_future(call(session, "POST", proxy.base + "/api/v1/query", json=q))
            for q in ({"hang": True, "n": 1}, {"hang": True, "n": 2})
        ]
        # both hold their slots from the start: the first reaches the peer, the other waits
        await wait_until_async(counted("Query", 1), 30, "a query to reach the peer")
        blocks_read = count("GetBlock")
        status, body = await call(session, "GET", proxy.base + "/api/v1/blocks")
        assert_error(status, body, 503, ResponseCode.FAIL, "2 calls in flight")
        assert count("GetBlock") == blocks_read  # refused before the peer

        fake.release_queries.set()
        assert [status for status, _ in await asyncio.gather(*hanging_queries)] == [200, 200]
        assert [(status, body["response_code"]) for status, body in await hanging_txs] == [
            (200, 0),
            (200, 0),
        ]
        status, _ = await call(session, "POST", proxy.base + "/api/v1/transactions", json={"d": 2})
        assert status == 200
        status, _ = await call(session, "GET", proxy.base + "/api/v1/blocks")
        assert status == 200
    finally:
        fake.release_queries.set()
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


async def test_an_array_in_flight_holds_a_quarter_of_the_submission_slots_at_most(session):
    """An array's transactions go to the peer in batched calls: one of 256 held every
    submission slot while in flight, and every single submission of the proxy was refused
    (review). It holds REST_MAX_INFLIGHT / 4 at most (the proxy in this process, to see its
    slots)."""
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    config = load_config(environ={}, overrides={"GRPC_TIMEOUT": 60.0, "REST_MAX_INFLIGHT": 8})
    app = create_app(config, f"127.0.0.1:{port}")
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, rest_port = runner.addresses[0][:2]
    api = app[PEER_API]
    try:
        url = f"http://{host}:{rest_port}/api/v1/transactions"
        hanging = asyncio.ensure_future(
            call_list(session, url, [{"hang": True, "n": n} for n in range(8)])
        )

        async def reached() -> bool:
            return any(name.startswith("CreateTx") for name, _ in fake.calls)

        await wait_until_async(reached, 30, "the array to reach the peer")
        assert api._inflight[True] == 2  # 8 // 4 of the submission slots
        fake.release_queries.set()
        status, results = await hanging
        assert status == 200 and [r["response_code"] for r in results] == [0] * 8
        assert api._inflight[True] == 0
    finally:
        fake.release_queries.set()
        await runner.cleanup()
        await server.stop(None)


async def test_connections_that_send_too_little_are_closed_within_their_deadlines(
    session, tmp_path
):
    """A connection that sends no request, or half a request head, is closed after
    REST_KEEPALIVE_TIMEOUT; a request whose body never arrives in full is answered after
    REST_BODY_TIMEOUT (v1: 408, JSON-RPC: -32600) and closed; nothing reaches the peer and the
    proxy goes on answering."""
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    config = {"REST_KEEPALIVE_TIMEOUT": 1.0, "REST_BODY_TIMEOUT": 1.0}
    proxy = ProxyProcess(port, tmp_path, config)
    proxy.start()
    try:
        await proxy.wait_ready(session)
        rest_port = port + REST_DIFF
        silent, half_head, withheld, withheld_v3 = await asyncio.gather(
            until_closed(rest_port, SILENT, 30),
            until_closed(rest_port, HALF_HEAD, 30),
            until_closed(rest_port, withheld_body("/api/v1/transactions"), 30),
            until_closed(rest_port, withheld_body("/api/v3"), 30),
        )
        assert silent == b"" and half_head == b""
        status, body = status_and_body(withheld)
        assert status == 408, withheld
        assert_error(status, json.loads(body), 408, ResponseCode.TIMEOUT, "REST_BODY_TIMEOUT")
        status, body = status_and_body(withheld_v3)  # in JSON-RPC's own shape
        error = json.loads(body)["error"]
        assert status == 400 and error["code"] == -32600, withheld_v3
        assert "REST_BODY_TIMEOUT" in error["message"]
        assert not any(name == "CreateTx" for name, _ in fake.calls)
        status, _ = await call(session, "GET", proxy.base + "/api/v1/status/peer")
        assert status == 200
    finally:
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


async def test_a_broken_chunk_after_the_head_is_400_at_once(session, tmp_path):
    """A chunk HTTP cannot parse, arriving after the request's head, was answered 408 after
    REST_BODY_TIMEOUT (aiohttp's parser dropped the body being read and queued its error as the
    next request): now 400 naming it at once (v1: -6; JSON-RPC: its parse error), the connection
    closed without a second answer; nothing reaches the peer."""
    fake = FakePeer()
    conf = {"REST_BODY_TIMEOUT": 10.0}
    async with proxy_in_front_of(fake, tmp_path, conf, session) as proxy:
        rest_port = int(proxy.base.rpartition(":")[2])
        v1, v3 = await asyncio.gather(
            broken_chunk_after_head(rest_port, "/api/v1/transactions", {}, 30),
            broken_chunk_after_head(rest_port, "/api/v3", {}, 30),
        )
        status, body = status_and_body(v1)
        assert_error(status, json.loads(body), 400, ResponseCode.INVALID_PARAMS, "chunk size")
        assert "the request body cannot be read" in json.loads(body)["message"]
        status, body = status_and_body(v3)
        error = json.loads(body)["error"]
        assert status == 400 and error["code"] == -32700 and "chunk size" in error["message"], v3
        assert v1.count(b"HTTP/1.1 ") == v3.count(b"HTTP/1.1 ") == 1, (v1, v3)
        assert not any(name == "CreateTx" for name, _ in fake.calls)
        status, _ = await call(session, "POST", proxy.base + "/api/v1/transactions", json={"a": 1})
        assert status == 200


async def test_connections_beyond_rest_max_connections_are_answered_503(tmp_path):
    """With REST_MAX_CONNECTIONS connections open, a new one is answered 503 with Retry-After in
    the API's JSON and closed, without reaching the peer; the open ones are still served, and once
    one closes a new connection is served again."""
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path, {"REST_MAX_CONNECTIONS": 2})
    proxy.start()
    held: list[asyncio.StreamWriter] = []
    try:
        async with aiohttp.ClientSession() as ready:  # its connection closes with it
            await proxy.wait_ready(ready)
        rest_port = port + REST_DIFF
        first = await held_connection(rest_port, "/api/v1/status/peer", 30)
        second = await held_connection(rest_port, "/api/v1/status/peer", 30)
        held = [first[1], second[1]]
        calls_before = len(fake.calls)
        refused = await until_closed(rest_port, get_request("/api/v1/status/peer", close=True), 30)
        status, body = status_and_body(refused)
        assert status == 503 and b"\r\nRetry-After: 1\r\n" in refused, refused
        assert_error(status, json.loads(body), 503, ResponseCode.FAIL, "REST_MAX_CONNECTIONS")
        assert len(fake.calls) == calls_before  # the refused one reached nothing
        reader, writer = first
        writer.write(get_request("/api/v1/status/peer", close=False))
        assert (await asyncio.wait_for(read_response(reader), 20))[0] == 200
        second[1].close()
        third = await held_connection(rest_port, "/api/v1/status/peer", 30)
        held.append(third[1])
    finally:
        for writer in held:
            writer.close()
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0


async def run_proxy(
    log_dir: Path, *args: str, env: dict[str, str] | None = None, python: str = sys.executable
) -> tuple[int, str, str]:
    """Run `python ARGS` (rest_proxy.py) to completion; (exit status, stdout, stderr)."""
    proc = Proc("proxy_run", list(args), log_dir, env=env, python=python, stderr_apart=True)
    status = await asyncio.to_thread(proc.run, 60)
    return status, proc.log_text(), proc.err_text()


async def test_unknown_config_key_exits_2(tmp_path):
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"NO_SUCH_KEY": 1}))
    status, _, err = await run_proxy(
        tmp_path, str(PROXY), "-p", str(free_port_pair()), "-o", str(conf)
    )
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "NO_SUCH_KEY" in lines[0], err


async def test_bad_environment_value_exits_2(tmp_path):
    env = dict(os.environ, GRPC_TIMEOUT="soon")
    status, _, err = await run_proxy(tmp_path, str(PROXY), "-p", str(free_port_pair()), env=env)
    assert status == 2
    assert "GRPC_TIMEOUT" in err
    assert_clean_log(err, "rest_proxy.py")


async def test_port_in_use_exits_1(tmp_path):
    port = free_port_pair()
    with hold_port(port + REST_DIFF):
        status, _, err = await run_proxy(tmp_path, str(PROXY), "-p", str(port))
    assert status == 1
    assert f"cannot listen on 127.0.0.1:{port + REST_DIFF}" in err
    assert_clean_log(err, "rest_proxy.py")


async def test_reexecs_into_the_venv_from_another_python(tmp_path):
    """Started by a Python outside the venv (no aiohttp there), the script still runs."""
    venv_bin = str(REPO / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/")}
    status, out, err = await run_proxy(tmp_path, "-I", str(PROXY), "-h", env=env, python="python3")
    assert status == 0, err
    assert "PEER_PORT+1900" in out


# ---------------------------------------------------------------- clients that do not read


def _reader_that_never_reads(port: int, path: str, requests: int) -> socket.socket:
    """A connection that sends `requests` pipelined GETs of `path` and reads none of the
    answers (a receive buffer of 4 KiB: the answers stay with the server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() * requests)
    return sock


async def _big_block(session: aiohttp.ClientSession, base: str, fake: FakePeer) -> str:
    """The path of a block of 16 transactions of ~60 KB each (its answer ~1 MB)."""
    for n in range(16):
        body = json.dumps({"blob": "x" * 60_000, "n": n}).encode()
        status, _ = await call(session, "POST", base + "/api/v1/transactions", data=body)
        assert status == 200
    block = fake.make_block()
    return f"/api/v1/blocks?height={block.height}"


@pytest.mark.parametrize(("method", "held_kb"), [("GET", 960), ("POST", 480)])
async def test_idle_keep_alive_connections_do_not_hold_their_last_request_or_answer(
    tmp_path: Path, method: str, held_kb: int
) -> None:
    """64 keep-alive connections each GET a ~1 MB block (or POST a ~480 KB transaction), one
    after another, read their answers and stay open: the proxy holds what they sent and what it
    answered only while it answers. Before, aiohttp kept each connection's last request body and
    answer until its next request or the keep-alive timeout (here 75 MB, or 33 MB, more
    resident; 256 clients reading a block held ~600 MB of a proxy, 4,096 could hold GBs)."""
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path)
    proxy.start()
    body = json.dumps({"blob": "y" * 480_000}).encode()
    count = 64
    try:
        async with aiohttp.ClientSession() as setup:
            await proxy.wait_ready(setup)
            path = await _big_block(setup, proxy.base, fake)
        connections = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for _ in range(count + 1)
        ]
        try:

            async def once(session: aiohttp.ClientSession) -> int:
                if method == "GET":
                    async with session.get(proxy.base + path) as resp:
                        assert resp.status == 200 and len(await resp.read()) > 900_000
                else:
                    async with session.post(proxy.base + "/api/v1/transactions", data=body) as r:
                        assert r.status == 200, await r.text()
                anon = read_anon_kb(proxy.pid)
                assert anon is not None
                return anon

            before = await once(connections[0])  # the buffers of one answer exist
            for session in connections[1:]:
                after = await once(session)
            # a third of what the connections' last requests or answers would hold
            assert after - before < count * held_kb / 3, f"{after - before} kB more resident"
        finally:
            for session in connections:
                await session.close()
    finally:
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


async def test_what_a_burst_of_posts_freed_goes_back_to_the_system(tmp_path: Path) -> None:
    """64 clients at once posting ~480 KB transactions: once they are done, the proxy gives back
    to the system what it freed (past MEMORY_GIVE_BACK_MB, looked at every 10 s). Before, glibc
    kept it below the chunks still in use: 256 such clients left a proxy at 604 MB for good.
    The threshold is 4 MB here, not the default 32: how much a burst frees depends on how many
    bodies the machine holds at once, which a slower one makes fewer."""
    port = free_port_pair()
    server, _ = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path, {"MEMORY_GIVE_BACK_MB": 4})
    proxy.start()
    body = json.dumps({"blob": "y" * 480_000}).encode()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await proxy.wait_ready(session)
            start = read_anon_kb(proxy.pid)
            assert start is not None

            async def client() -> None:
                for _ in range(4):
                    async with session.post(proxy.base + "/api/v1/transactions", data=body) as r:
                        assert r.status in (200, 503), await r.text()

            await asyncio.gather(*(client() for _ in range(64)))
            peak = read_anon_kb(proxy.pid)
            assert peak is not None

            async def given_back() -> bool:
                anon = read_anon_kb(proxy.pid)
                return anon is not None and anon - start < 16_000

            await wait_until_async(
                given_back, 60, f"the burst's memory given back (peak {peak} kB)"
            )
    finally:
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


def _large_post_head(length: int) -> bytes:
    """The head of a POST of a transaction announcing a `length`-byte body, and its first byte."""
    return (
        "POST /api/v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{"
    ).encode()


async def test_large_bodies_being_received_hold_the_receiving_budget_only(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Two 500 KB bodies still arriving fill REST_MAX_RECEIVING_MB (1): a third large body is
    answered 503 with Retry-After at once, unread, and its connection closed; a transaction (a
    small body) is served meanwhile; once the two are gone a large body is taken again. Before,
    every body was read whatever the others held: 2,000 connections sending 500 KB bodies took a
    proxy to 930 MB (each handled body is held two or three times: bytes, text, parsed)."""
    port = free_port_pair()
    server, _ = await start_fake_peer(port)
    conf = {"REST_MAX_RECEIVING_MB": 1, "REST_BODY_TIMEOUT": 300.0}
    proxy = ProxyProcess(port, tmp_path, conf)
    proxy.start()
    rest = port + REST_DIFF
    head = _large_post_head(500_000)
    holders: list[asyncio.StreamWriter] = []
    try:
        await proxy.wait_ready(session)

        async def refused_large() -> tuple[bytes, bytes] | None:
            reader, writer = await asyncio.open_connection("127.0.0.1", rest)
            writer.write(head)
            await writer.drain()
            try:
                async with asyncio.timeout(2):  # how long to look, not a synchronisation
                    answer_head = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                holders.append(writer)  # taken, its body awaited: it holds room too
                return None
            length = int(answer_head.lower().partition(b"content-length:")[2].split()[0])
            answer_body = await reader.readexactly(length)
            writer.close()
            return answer_head.lower(), answer_body

        answer_head, body = await wait_until_async(refused_large, 120, "a large body refused")
        assert answer_head.startswith(b"http/1.1 503"), answer_head
        assert b"retry-after: 1" in answer_head and b"connection: close" in answer_head
        assert_error(503, json.loads(body), 503, ResponseCode.FAIL, "bodies being received")
        assert len(holders) >= 2
        small = json.dumps({"n": 1}).encode()
        status, reply = await call(session, "POST", proxy.base + "/api/v1/transactions", data=small)
        assert status == 200, reply
        large = json.dumps({"blob": "x" * 100_000}).encode()
        status, reply = await call(session, "POST", proxy.base + "/api/v1/transactions", data=large)
        assert_error(status, reply, 503, ResponseCode.FAIL, "bodies being received")
        for writer in holders:
            writer.close()

        async def large_taken() -> bool:
            url = proxy.base + "/api/v1/transactions"
            async with session.post(url, data=large) as resp:
                return resp.status == 200

        await wait_until_async(large_taken, 60, "a large body taken once the holders left")
    finally:
        for writer in holders:
            writer.close()
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


async def test_compressed_bodies_hold_the_receiving_budget_as_inflated(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A gzip body of 529 bytes inflates to 500 KB: it was charged its length on the wire (no
    room at all, a small body), so 300 such connections withholding their last bytes took a
    proxy to 365 MB where plain ones were refused 503 (review). An encoded body holds the body
    limit of the budget, as a chunked one does: with two arriving, a third is refused at once."""
    port = free_port_pair()
    server, _ = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path, {"REST_MAX_RECEIVING_MB": 1, "REST_BODY_TIMEOUT": 300.0})
    proxy.start()
    body = gzip.compress(json.dumps({"blob": "x" * 500_000}).encode())
    head = (
        "POST /api/v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    holders: list[asyncio.StreamWriter] = []
    try:
        await proxy.wait_ready(session)

        async def refused() -> bytes | None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port + REST_DIFF)
            writer.write(head + body[:-8])  # its last bytes withheld
            await writer.drain()
            try:
                async with asyncio.timeout(2):  # how long to look, not a synchronisation
                    answer = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                holders.append(writer)  # taken, its rest awaited: it holds room
                return None
            writer.close()
            return answer.lower()

        answer = await wait_until_async(refused, 120, "an encoded body refused")
        assert answer.startswith(b"http/1.1 503") and b"retry-after: 1" in answer, answer
        assert len(holders) == 2
    finally:
        for writer in holders:
            writer.close()
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0


@pytest.mark.parametrize(
    ("path", "route"),
    [("/api/v1/transactions", "/api/v1/transactions"), ("/api/v3", "/api/v3")],
)
async def test_a_client_that_leaves_midway_through_its_body_is_no_error(
    session: aiohttp.ClientSession, tmp_path: Path, path: str, route: str
) -> None:
    """A client that sends a head and part of its body, then closes its connection: the proxy
    ends the request, counts it (499, client closed: no one to read an answer) and logs no
    error. Before, it logged an ERROR with a traceback ("unexpected error ...
    ConnectionResetError") and counted a 500."""
    port = free_port_pair()
    server, _ = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path)
    proxy.start()
    try:
        await proxy.wait_ready(session)
        _, writer = await asyncio.open_connection("127.0.0.1", port + REST_DIFF)
        writer.write(withheld_body(path))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        async def counted() -> dict[str, float] | None:
            async with session.get(proxy.base + "/metrics") as resp:
                text = await resp.text()
            found = {
                sample.labels["status"]: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "loopchain_rest_requests_total"
                and sample.labels.get("route") == route
            }
            return found or None

        assert await wait_until_async(counted, 60, "the request counted") == {"499": 1.0}
    finally:
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


async def test_clients_that_read_nothing_are_dropped_and_hold_the_answers_budget_only(
    session, tmp_path
):
    """Eight connections pipelining GETs of a 1 MB block and reading nothing: while their answers
    fill REST_MAX_SENDING_MB, a big answer is a 503 with Retry-After (a small one is served);
    a connection that took none of its answer for REST_SEND_TIMEOUT is dropped, and then the
    block is served again. Before, such connections held their answers for good (300 of them
    held 1.25 GB of a proxy)."""
    port = free_port_pair()
    server, fake = await start_fake_peer(port)
    proxy = ProxyProcess(port, tmp_path, {"REST_SEND_TIMEOUT": 5.0, "REST_MAX_SENDING_MB": 2})
    proxy.start()
    slow: list[socket.socket] = []
    try:
        await proxy.wait_ready(session)
        path = await _big_block(session, proxy.base, fake)
        async with session.get(proxy.base + path) as resp:
            assert resp.status == 200 and len(await resp.read()) > 900_000
        slow = [_reader_that_never_reads(port + REST_DIFF, path, 20) for _ in range(8)]

        async def refused_for_the_budget() -> dict[str, Any] | None:
            async with session.get(proxy.base + path) as resp:
                if resp.status != 503:
                    return None
                assert resp.headers["Retry-After"] == "1"
                body = await resp.json()
            status, small = await call(session, "GET", proxy.base + "/api/v1/status/peer")
            assert status == 200, small
            return body

        body = await wait_until_async(refused_for_the_budget, 60, "a 503 for the budget")
        assert_error(503, body, 503, ResponseCode.FAIL, "answers waiting for their clients")

        async def served_again() -> bool:
            async with session.get(proxy.base + path) as resp:
                return resp.status == 200 and len(await resp.read()) > 900_000

        await wait_until_async(served_again, 120, "the block served again")

        # the two connections that held the budget (two ~0.96 MB answers fit in 2 MiB, a third
        # does not) are both dropped, the others got their 503s; the second drop may come just
        # after the first freed room enough for the block to be served again
        async def both_holders_dropped() -> bool:
            return proxy.log_text().count("it took none of its answer for 5 s") >= 2

        await wait_until_async(both_holders_dropped, 60, "both holders of the budget dropped")
    finally:
        for sock in slow:
            sock.close()
        exit_status = proxy.stop()
        await server.stop(None)
    assert exit_status == 0
    proxy.assert_clean_log()


def _async(condition: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def check() -> Any:
        return condition()

    return check


async def test_block_reads_to_the_peer_are_bounded_and_the_rest_wait_for_a_turn(session, tmp_path):
    """24 block reads at once while the peer holds every call: 16 (MAX_BLOCK_READS) reach it, the
    others wait for a turn (each block is ~1 MB while it is received and rendered: 256 at once
    took a proxy to 1.1 GB); once the peer answers, all 24 are served. A proxy of its own with a
    long GRPC_TIMEOUT: no held call ends by its deadline however slow the machine."""
    fake = FakePeer()
    fake.make_block()
    async with proxy_in_front_of(fake, tmp_path, {"GRPC_TIMEOUT": 120.0}, session) as proxy:
        path = proxy.base + "/api/v1/blocks?height=0"
        fake.stall()
        try:
            reads = [asyncio.ensure_future(call(session, "GET", path)) for _ in range(24)]

            def block_calls() -> int:
                return sum(1 for name, _ in fake.calls if name == "GetBlock")

            await wait_until_async(_async(lambda: block_calls() >= 16), 60, "16 block reads")
            status_read = asyncio.ensure_future(
                call(session, "GET", proxy.base + "/api/v1/status/peer")
            )
            await wait_until_async(
                _async(lambda: fake.calls[-1][0] == "GetStatus"), 60, "a later call at the peer"
            )
            assert block_calls() == 16
        finally:
            fake.go_on()
        answers = await asyncio.gather(*reads, status_read)
        assert [status for status, _ in answers] == [200] * 25
        assert block_calls() == 24


async def test_a_block_read_that_gets_no_turn_within_half_the_deadline_is_a_503(session, tmp_path):
    """48 block reads while the peer holds every call (GRPC_TIMEOUT 8 s): 16 (MAX_BLOCK_READS)
    reach the peer; the other 32 wait for a turn half the deadline (TURN_WAIT_SHARE), then are
    answered 503 with Retry-After, while the 16 are still held: not left to wait for a turn and
    then their own call (twice the deadline: clients give up first). Released, the 16 are served."""
    fake = FakePeer()
    fake.make_block()
    conf = {"GRPC_TIMEOUT": 8.0}  # the refusals come after 4 s: the held calls have 4 s left
    async with proxy_in_front_of(fake, tmp_path, conf, session) as proxy:
        path = proxy.base + "/api/v1/blocks?height=0"

        async def read() -> tuple[int, str, dict[str, Any]]:
            async with session.get(path) as resp:
                return resp.status, resp.headers.get("Retry-After", ""), await resp.json()

        fake.stall()
        try:
            reads = [asyncio.ensure_future(read()) for _ in range(48)]
            await wait_until_async(
                _async(lambda: sum(read.done() for read in reads) >= 32), 60, "32 refusals"
            )
            refused = [read.result() for read in reads if read.done()]
            assert sum(1 for name, _ in fake.calls if name == "GetBlock") == 16
        finally:
            fake.go_on()
        for status, retry_after, body in refused:
            assert_error(status, body, 503, ResponseCode.FAIL, "block reads are in flight")
            assert retry_after == "1", body
        answers = await asyncio.gather(*reads)
        assert len(refused) == 32
        assert sorted(status for status, _, _ in answers) == [200] * 16 + [503] * 32


async def test_a_wait_whose_client_hung_up_ends_and_asks_the_peer_no_more(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A client asks icx_waitTransactionResult for a pooled transaction with a minute's wait
    (Icon-Options: timeout=60000) and hangs up: the proxy ends the wait (counted 499, client
    closed) and asks the peer no more about that transaction. Before, aiohttp ran the handler on
    and the proxy polled the peer for the whole minute after its client had gone, with no
    connection left to bound such waits."""
    fake = FakePeer()
    async with proxy_in_front_of(fake, tmp_path, {}, session) as proxy:
        hashes = []
        for n in range(2):
            _, submitted = await call(
                session, "POST", proxy.base + "/api/v1/transactions", json={"data": n}
            )
            hashes.append("0x" + submitted["tx_hash"])
        left, other = hashes  # both pooled, never in a block: their waits poll the peer

        def lookups() -> int:
            return sum(
                1
                for name, request in list(fake.calls)
                if name == "GetTxResultBatch" and left[2:] in request.tx_hashes
            )

        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "icx_waitTransactionResult",
                "params": {"txHash": left},
            }
        ).encode()
        port = int(proxy.base.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/v3 HTTP/1.1\r\nHost: x\r\nIcon-Options: timeout=60000\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await wait_until_async(_async(lambda: lookups() >= 2), 30, "the wait to poll the peer")
        writer.close()
        await writer.wait_closed()

        async def client_closed() -> bool:
            async with session.get(proxy.base + "/metrics") as resp:
                text = await resp.text()
            return any(
                sample.name == "loopchain_rest_requests_total"
                and sample.labels.get("route") == "/api/v3"
                and sample.labels.get("status") == "499"
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            )

        await wait_until_async(client_closed, 30, "the proxy to end the wait of the client gone")
        before = lookups()
        # another client's wait of 1 s: the one that left would have polled the peer meanwhile
        options = {"Icon-Options": "timeout=1000"}
        payload = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "icx_waitTransactionResult",
            "params": {"txHash": other},
        }
        async with session.post(proxy.base + "/api/v3", json=payload, headers=options) as resp:
            answer = await resp.json()
        assert answer["error"]["code"] == -31006, answer
        assert lookups() <= before + 1  # (a call already made when the wait ended may arrive)


class OneChannelHangs(FakePeer):
    """A peer whose one channel's worker process stopped answering (SIGSTOP): calls of the
    channels in `held` wait (the connection open), those of the others are answered."""

    def __init__(self) -> None:
        super().__init__(channels=(DEFAULT_CHANNEL, OTHER_CHANNEL))
        self.held: set[str] = set()
        self.released = asyncio.Event()

    async def _enter(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        if (getattr(request, "channel", "") or self.default_channel) in self.held:
            await self.released.wait()
        await super()._enter(method, request, context)


async def test_a_channel_that_answers_nothing_is_refused_alone_the_others_served(session, tmp_path):
    """The peer's default channel answers nothing (its worker stopped) while another channel
    answers: the submission in flight runs out of time, answered 504 saying it may have been
    taken, and from then on only the default channel's calls are refused (503); the other
    channel's are served. Before, the proxy probed the peer as a whole in its default channel,
    and refused every channel's calls."""
    fake = OneChannelHangs()
    async with proxy_in_front_of(fake, tmp_path, {"GRPC_TIMEOUT": GRPC_TIMEOUT}, session) as proxy:
        base = proxy.base
        fake.held.add(DEFAULT_CHANNEL)
        try:
            status, body = await call(session, "POST", base + "/api/v1/transactions", json={"d": 1})
            assert_error(status, body, 504, ResponseCode.TIMEOUT, "is unknown")
            assert "look them up before sending them again" in body["message"]

            async def refused() -> dict[str, Any] | None:
                status, body = await call(session, "GET", base + "/api/v1/status/peer")
                return body if status == 503 else None

            refusal = await wait_until_async(refused, 60, "the default channel refused")
            other = f"?channel={OTHER_CHANNEL}"
            status, body = await call(session, "GET", base + "/api/v1/status/peer" + other)
            assert status == 200, body
            tx = {"d": 2, "channel": OTHER_CHANNEL}
            status, body = await call(session, "POST", base + "/api/v1/transactions", json=tx)
            assert (status, body["response_code"]) == (200, 0), body
            assert "(it has answered nothing for" in refusal["message"]
            assert refusal["message"].endswith("(in its default channel))"), refusal
        finally:
            fake.released.set()

        async def answers() -> bool:
            status, _ = await call(session, "GET", base + "/api/v1/status/peer")
            return status == 200

        await wait_until_async(answers, 60, "the default channel served again")
