"""Tests that attack (issue 9): hostile input from outside against one real network.

A RadioStation and four peers in listed mode (ENABLE_CHANNEL_AUTH, each peer listed by its id) run
sample/token, owned by the first peer. Every probe sends something hostile from outside — over the
peers' REST, the RadioStation's REST, gRPC to a peer or to the RadioStation — and asserts the precise
refusal (status, response_code, message words, and the warning the code logs where it logs one) and
that it changed nothing. The last test asserts the network is unharmed: every process alive, the
validator set as it was, a fresh transaction final on every peer, pools empty, heights equal, no
traceback in any log.

Requests that break HTTP framing itself (request lines over aiohttp's limit) go to a standalone
rest_proxy.py with a log of its own, whose probes check that log.

A probe that exposes a defect is marked xfail(strict=True) with the defect and a reproducer in its
reason: when the defect is fixed the probe passes, the strict mark fails, and the mark goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.safe_text import MAX_DETAILS_BYTES
from loopchain.types import certificates as pki
from loopchain.types.block import Block
from loopchain.types.crypto import Signer, load_or_create_key
from loopchain.types.peer import connect_digest
from loopchain.types.transaction import Transaction
from loopchain.types.vote import Complaint, QuorumCertificate, Vote
from tests.e2e._hostile import (
    CHANNEL,
    DEADLINE,
    PEERS,
    LogMark,
    Target,
    TlsTarget,
    answer,
    assert_refused,
    children,
    impostor,
    peer_call,
    post,
    rpc_refusal,
    rs_call,
    send,
    start_lone_proxy,
    start_target,
    start_tls_target,
    submit,
    validator_view,
    wait_final,
    wait_result,
    wait_settled,
)
from tools.procs import Proc, assert_clean_log, free_port_pair, wait_until

SUPPLY = 1_000_000_000  # initial_supply of score/sample/token/package.json
ALICE = "hx" + "a1" * 20
FIRST_PAYMENT = 100  # the owner's first transfer to ALICE, made when the network starts
SECRET_ENV = "LOOPCHAIN_TLS_KEY_PASSWORD"  # a key password in the peers' environment
SECRET = "hostile-suite-sentinel-password"
MAX_TX_BYTES = 64 * 1024
MAX_BODY = 512 * 1024  # REST_MAX_BODY_BYTES
MAX_BATCH = 1000  # relayed transactions in one AddTxBatch
# the warnings a peer may write for one call of many refused items: refusals are logged
# rate-limited (a burst of 20 lines at most for each kind), never a line an item
FEW_LINES = 50
MAX_WARNING_CHARS = 1000  # a warning that echoes what a caller sent shows it shortened
# a flood: refused calls of one kind, a few at a time, each answered; a node logs a burst of
# their warnings and REFUSAL_LINES_A_SECOND more a second (RefusalLog), never a line a call
FLOOD = 300
FLOOD_AT_ONCE = 10
REFUSAL_LINES_A_SECOND = 20
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
FAIL, NOT_FOUND_CODE, INVALID_PARAMS, PEER_UNKNOWN, TIMEOUT = (
    -1,
    -4,
    -6,
    -800,
    -900,
)  # response codes
SCORE_ERROR = 9000


# ------------------------------------------------------------------ the network


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The attacked network, with the token's supply credited to its owner (first transfer final);
    stopped at the end, when every node must exit cleanly without a traceback in its log."""
    workdir = tmp_path_factory.mktemp("hostile")
    t: Target | None = None
    try:
        with _peer_environment(SECRET_ENV, SECRET):  # a key password the SCOREs must not see
            t = start_target(workdir)
        first = submit(t, t.owner_port, _transfer(ALICE, FIRST_PAYMENT))
        wait_final(t, [first])
        assert wait_result(t, first)["code"] == 0
        t.baseline = validator_view(t)
        yield t
    finally:
        if t is not None:
            for proc in t.extra:
                proc.stop()
            t.net.stop_and_check()


@contextlib.contextmanager
def _peer_environment(name: str, value: str) -> Iterator[None]:
    """`name`=`value` in the environment of the processes started inside."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@pytest.fixture(scope="module")
def tls_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsTarget]:
    """The small mutual-TLS network, started on first use; checked like the main one at the end."""
    tls = start_tls_target(tmp_path_factory.mktemp("hostile_tls"))
    try:
        yield tls
    finally:
        tls.net.stop_and_check()


@pytest.fixture(scope="module")
def lone_proxy(target: Target) -> tuple[Proc, str]:
    """A standalone rest_proxy.py for the second peer (its own port and log)."""
    return start_lone_proxy(target, target.ports[1])


def _transfer(to: str, value: int) -> dict[str, Any]:
    return {"method": "transfer", "params": {"to": to, "value": value}}


def _stranger_port(target: Target) -> int:
    """A peer that is not the token's owner (the one most probes go to)."""
    return target.ports[1]


def _flooded_port(target: Target) -> int:
    """The peer the probes that flood it with refused input go to: its refusals are logged
    rate-limited, so the warnings other probes wait for would be held back for a while."""
    return target.ports[3]


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _assert_few_warnings(mark: LogMark, port: int | None, seconds: float) -> None:
    """The log of `port` (None: the RadioStation) got a burst of warnings since `mark`, and a few
    more a second of the `seconds` a flood took: not a line a refused call."""
    warnings = [line for line in mark.new_lines(port) if "WARNING" in line]
    allowed = FEW_LINES + REFUSAL_LINES_A_SECOND * seconds
    assert len(warnings) <= allowed, (
        f"{len(warnings)} warnings, {allowed:.0f} allowed",
        warnings[:3],
    )


def _wait_reported_refusal(
    mark: LogMark, port: int | None, refuse_one: Callable[[], object], *words: str
) -> str:
    """After a flood: one more refused call at a time until a warning holding `words` reports the
    refusals that were not logged (the node still serves, and counts what it left out)."""

    def reported() -> str | None:
        refuse_one()
        for line in mark.new_lines(port):
            if "WARNING" in line and "more refusals not logged" in line:
                if all(word in line for word in words):
                    return line
        return None

    return wait_until(reported, 10, f"a warning with {words} counting the refusals not logged")


def _tip(target: Target, port: int) -> tuple[Block, QuorumCertificate]:
    reply = peer_call(port, "GetBlock", pb.GetBlockRequest(channel=CHANNEL, height=-1))
    return Block.decode(reply.block), QuorumCertificate.decode(reply.certificate)


# ------------------------------------------------------------------ 1. peer REST: bodies

TX, QUERY = "/api/v1/transactions", "/api/v1/query"
BODY_PROBES = [
    # (id, path, body, content type, status, response code, words of the message)
    (
        "surrogate-in-data-tx",
        TX,
        b'{"data":"\\ud800"}',
        None,
        400,
        -6,
        ["lone surrogate", "$.data"],
    ),
    (
        "surrogate-in-channel-tx",
        TX,
        b'{"channel":"\\ud800","data":"x"}',
        None,
        400,
        -6,
        ["lone surrogate", "$.channel"],
    ),
    ("surrogate-in-data-query", QUERY, b'{"data":"\\udfff"}', None, 400, -6, ["lone surrogate"]),
    (
        "surrogate-in-channel-query",
        QUERY,
        b'{"channel":"a\\ud800","method":"total_supply"}',
        None,
        400,
        -6,
        ["lone surrogate", "$.channel"],
    ),
    ("surrogate-as-key-tx", TX, b'{"\\udc00":1}', None, 400, -6, ["lone surrogate"]),
    ("nested-900-tx", TX, b'{"data":' + _deep(900) + b"}", None, 400, -6, ["64 levels"]),
    # 900: deep enough to pass any limit of ours but 64, and parsed by json at any stack depth the
    # proxy's handlers reach (at 977 the middlewares' frames made json.loads give up first)
    ("nested-900-query", QUERY, b'{"data":' + _deep(900) + b"}", None, 400, -6, ["64 levels"]),
    ("nested-100000-tx", TX, _deep(100_000), None, 400, -6, ["nested too deeply"]),
    ("nested-100000-query", QUERY, _deep(100_000), None, 400, -6, ["nested too deeply"]),
    ("digits-400-tx", TX, b'{"data":' + b"9" * 400 + b"}", None, 400, -6, ["80 digits"]),
    ("digits-400-query", QUERY, b'{"v":-' + b"1" * 400 + b"}", None, 400, -6, ["80 digits"]),
    ("digits-5000-tx", TX, b'{"data":' + b"7" * 5000 + b"}", None, 400, -6, ["4300 digits"]),
    ("digits-5000-query", QUERY, b'{"v":' + b"7" * 5000 + b"}", None, 400, -6, ["4300 digits"]),
    ("nan-tx", TX, b'{"data":NaN}', None, 400, -6, ["NaN is not JSON"]),
    ("infinity-query", QUERY, b'{"v":-Infinity}', None, 400, -6, ["Infinity is not JSON"]),
    ("float-data-tx", TX, b'{"data":1.5}', None, 400, -6, ["floats are not allowed"]),
    ("not-utf8-tx", TX, b'{"data":"\xff\xfe"}', None, 400, -6, ["not UTF-8"]),
    ("not-utf8-query", QUERY, b'{"v":"\xc3\x28"}', None, 400, -6, ["not UTF-8"]),
    ("cesu-surrogate-tx", TX, b'{"data":"\xed\xa0\x80"}', None, 400, -6, ["not UTF-8"]),
    ("oversized-tx", TX, b'{"data":"' + b"a" * (MAX_BODY + 1) + b'"}', None, 413, -6, ["limit"]),
    ("oversized-query", QUERY, b'{"v":"' + b"a" * (MAX_BODY + 1) + b'"}', None, 413, -6, ["limit"]),
    (
        "array-of-501-tx",
        TX,
        json.dumps([{"data": i} for i in range(501)]).encode(),
        None,
        400,
        -6,
        ["REST_MAX_INFLIGHT", "got 501"],
    ),
    ("empty-array-tx", TX, b"[]", None, 400, -6, ["got 0"]),
    (
        "array-with-a-non-object-tx",
        TX,
        b'[{"data":1},"two"]',
        None,
        400,
        -6,
        ["transaction 1 of the array", "a string"],
    ),
    (
        "over-MAX_TX_BYTES-tx",
        TX,
        json.dumps({"data": "a" * (MAX_TX_BYTES + 10)}).encode(),
        None,
        400,
        -6,
        ["limit 65536"],
    ),
    ("empty-body-tx", TX, b"", None, 400, -6, ["empty"]),
    ("string-body-tx", TX, b'"hello"', None, 400, -6, ["must be a JSON object", "a string"]),
    ("channel-a-number-tx", TX, b'{"channel":7,"data":1}', None, 400, -6, ["must be a string"]),
    (
        "channel-of-10000-chars-tx",
        TX,
        json.dumps({"channel": "c" * 10_000, "data": 1}).encode(),
        None,
        400,
        -6,
        ["not a channel name", "128"],
    ),
    (
        "channel-with-a-newline-query",
        QUERY,
        b'{"channel":"a\\nb"}',
        None,
        400,
        -6,
        ["not a channel name"],
    ),
    ("unknown-channel-tx", TX, b'{"channel":"nosuch","data":1}', None, 404, -4, ["not served"]),
    ("unknown-channel-query", QUERY, b'{"channel":"nosuch"}', None, 404, -4, ["not served"]),
    (
        "form-urlencoded-tx",
        TX,
        b"data=hello&channel=x",
        "application/x-www-form-urlencoded",
        400,
        -6,
        ["malformed JSON"],
    ),
    (
        "multipart-tx",
        TX,
        b'--xyz\r\nContent-Disposition: form-data; name="data"\r\n\r\nhello\r\n--xyz--\r\n',
        "multipart/form-data; boundary=xyz",
        400,
        -6,
        ["malformed JSON"],
    ),
    (
        "octet-stream-query",
        QUERY,
        bytes(range(256)),
        "application/octet-stream",
        400,
        -6,
        ["not UTF-8"],
    ),
    ("xml-tx", TX, b"<tx><data>1</data></tx>", "application/xml", 400, -6, ["malformed JSON"]),
]


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "code", "words"),
    [pytest.param(*probe[1:], id=probe[0]) for probe in BODY_PROBES],
)
def test_peer_rest_refuses_hostile_bodies(
    target: Target,
    path: str,
    body: bytes,
    content_type: str | None,
    status: int,
    code: int,
    words: list[str],
) -> None:
    port = _stranger_port(target)
    pooled = target.status(port)["tx_pool_size"]
    reply = post(target.rest(port), path, body, content_type or "application/json")
    assert_refused(reply, status, code, *words)
    if path == TX:  # nothing was pooled (the network is idle while the probes run)
        assert target.status(port)["tx_pool_size"] <= pooled


# ------------------------------------------------------------------ 2. peer REST: query strings

H64 = "ab" * 32
GET_PROBES = [
    # (id, method, path and query, status, response code, words)
    ("pct-surrogate-channel-status", "GET", "/api/v1/status/peer?channel=%ED%A0%80", 404, -4,
     ["not served"]),
    ("pct-surrogate-channel-tx", "GET", f"/api/v1/transactions?channel=%ED%B0%80&hash={H64}", 404,
     -4, ["not served"]),
    ("pct-nul-channel", "GET", "/api/v1/blocks?channel=%00", 400, -6, ["not a channel name"]),
    ("channel-of-200-chars", "GET", "/api/v1/status/score?channel=" + "c" * 200, 400, -6,
     ["not a channel name"]),
    ("unknown-channel", "GET", "/api/v1/blocks?channel=nosuch", 404, -4, ["not served"]),
    ("hash-not-hex", "GET", "/api/v1/transactions?hash=zz", 400, -6, ["not a hash"]),
    ("hash-65-digits", "GET", f"/api/v1/transactions/result?hash={H64}a", 400, -6, ["not a hash"]),
    ("hash-pct-surrogate", "GET", "/api/v1/transactions?hash=%ED%A0%80", 400, -6, ["not a hash"]),
    ("hash-missing", "GET", "/api/v1/transactions", 400, -6, ["missing"]),
    ("hash-unknown-tx", "GET", f"/api/v1/transactions/result?hash={H64}", 404, -4, ["not found"]),
    ("hash-unknown-block", "GET", f"/api/v1/blocks?hash={'cd' * 32}", 404, -4, ["not found"]),
    ("height-negative", "GET", "/api/v1/blocks?height=-1", 400, -6, ["not a non-negative"]),
    ("height-30-digits", "GET", "/api/v1/blocks?height=" + "9" * 30, 400, -6,
     ["not a non-negative"]),
    ("height-exponent", "GET", "/api/v1/blocks?height=1e3", 400, -6, ["not a non-negative"]),
    ("height-beyond-tip", "GET", "/api/v1/blocks?height=" + "9" * 18, 404, -4, ["not found"]),
    ("hash-and-height", "GET", f"/api/v1/blocks?height=0&hash={H64}", 400, -6, ["either"]),
    ("unknown-route", "GET", "/api/v1/../../etc/passwd", 404, -999, ["unknown route"]),
    ("wrong-method", "PUT", "/api/v1/transactions", 405, -999, ["not allowed"]),
    ("delete-blocks", "DELETE", "/api/v1/blocks", 405, -999, ["not allowed"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "words"),
    [pytest.param(*probe[1:], id=probe[0]) for probe in GET_PROBES],
)
def test_peer_rest_refuses_hostile_query_strings(
    target: Target, method: str, path: str, status: int, code: int, words: list[str]
) -> None:
    assert_refused(send(target.rest(_stranger_port(target)), method, path), status, code, *words)


# ------------------------------------------------------------------ 3. HTTP framing (a lone proxy)

FRAMING_PROBES = [
    pytest.param(b"/api/v1/status/peer?x=" + b"q" * 100_000, id="query-string-of-100KB"),
    pytest.param(b"/api/v1/status/peer?channel=" + b"c" * 10_000, id="channel-of-10000-chars"),
]


@pytest.mark.parametrize("path", FRAMING_PROBES)
def test_request_line_too_long_is_refused_4xx(lone_proxy: tuple[Proc, str], path: bytes) -> None:
    proc, base = lone_proxy
    logged = len(proc.log_text())
    reply = send(base, "GET", path)
    assert reply.status in (400, 414, 431), str(reply)
    assert proc.alive and send(base, "GET", "/api/v1/status/peer").status == 200
    # one warning line, never a traceback: such requests cannot flood the log

    def warned() -> str | None:
        new = proc.log_text()[logged:]
        return new if "malformed HTTP request" in new else None

    new = wait_until(warned, 10, "the proxy's warning about the malformed request")
    assert_clean_log(new, proc.name, proc.log_path)


@pytest.mark.parametrize("path", FRAMING_PROBES)
def test_request_line_too_long_gets_the_json_error(
    lone_proxy: tuple[Proc, str], path: bytes
) -> None:
    _, base = lone_proxy
    reply = send(base, "GET", path)
    assert_refused(reply, reply.status, INVALID_PARAMS)


def test_a_malformed_http_request_is_answered_in_both_error_shapes(
    lone_proxy: tuple[Proc, str],
) -> None:
    """HTTP that cannot be parsed (a header over 8 KiB, a broken chunk) leaves its path unknown:
    the answer carries v1's error and a JSON-RPC one, so that ICON's SDK on /api/v3 reads
    `error` (it raised KeyError on the v1 shape alone: review)."""
    _, base = lone_proxy
    replies = [
        send(base, "POST", "/api/v3", b"{}", {"X-Big": "a" * 20_000}),
        send(
            base,
            "POST",
            "/api/v3",
            b"zz\r\n{}\r\n0\r\n\r\n",
            {"Transfer-Encoding": "chunked"},
        ),
    ]
    for reply in replies:
        assert reply.status == 400, str(reply)
        assert reply.body["response_code"] == INVALID_PARAMS, str(reply)
        error = reply.body["error"]
        assert error["code"] == -32600, str(reply)
        assert error["message"].startswith("malformed HTTP request: "), str(reply)
        assert reply.body["jsonrpc"] == "2.0" and reply.body["id"] is None, str(reply)


# ------------------------------------------------------------------ 4. RadioStation REST


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _conf_value(target: Target, name: str) -> Any:
    reply = send(target.net.rs_rest, "GET", f"/api/v1/conf?name={name}")
    assert reply.status == 200, str(reply)
    return reply.body["data"][0]["value"]


def test_conf_write_without_token_is_401_and_logged(target: Target) -> None:
    mark = LogMark.now(target)
    body = b'{"name":"HEARTBEAT_TIMEOUT","value":0.001}'
    reply = post(target.net.rs_rest, "/api/v1/conf", body)
    assert_refused(reply, 401, FAIL, "Authorization: Bearer")
    assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer"), str(reply)
    mark.wait_warning(None, "POST /api/v1/conf refused", "no operator token")
    assert _conf_value(target, "HEARTBEAT_TIMEOUT") == 10.0


def test_conf_write_with_a_wrong_token_is_403_and_logged(target: Target) -> None:
    mark = LogMark.now(target)
    body = b'{"name":"ENABLE_CHANNEL_AUTH","value":false}'
    reply = post(target.net.rs_rest, "/api/v1/conf", body, **_bearer("x" * 43))
    assert_refused(reply, 403, FAIL, "not the operator token")
    mark.wait_warning(None, "POST /api/v1/conf refused", "a wrong operator token")
    assert _conf_value(target, "ENABLE_CHANNEL_AUTH") is True


CONF_PROBES = [
    # (raw body, words of the message): every one is sent with the operator token
    pytest.param(
        b'{"name":"HEARTBEAT_TIMEOUT","value":0.001}',
        ["HEARTBEAT_TIMEOUT", "twice", "HEARTBEAT_INTERVAL"],
        id="heartbeat-timeout-0.001",
    ),
    pytest.param(b'{"name":"HEARTBEAT_TIMEOUT","value":NaN}', ["NaN"], id="heartbeat-timeout-NaN"),
    pytest.param(
        b'{"name":"HEARTBEAT_TIMEOUT","value":Infinity}', ["Infinity"], id="heartbeat-timeout-inf"
    ),
    pytest.param(
        b'{"name":"HEARTBEAT_TIMEOUT","value":-1}', ["must be above 0"], id="heartbeat-timeout--1"
    ),
    pytest.param(
        b'{"name":"HEARTBEAT_TIMEOUT","value":' + b"9" * 400 + b"}",
        ["400 digits"],
        id="heartbeat-timeout-400-digits",
    ),
    pytest.param(
        b'{"name":"HEARTBEAT_TIMEOUT","value":1e400}',
        ["out of range"],
        id="heartbeat-timeout-1e400",
    ),
    pytest.param(
        b'{"name":"HEARTBEAT_TIMEOUT","value":' + b"9" * 5000 + b"}",
        ["digits"],
        id="heartbeat-timeout-5000-digits",
    ),
    pytest.param(
        b'{"name":"HEARTBEAT_TIMEOUT","value":"\\ud800"}',
        ["lone surrogate"],
        id="heartbeat-timeout-surrogate",
    ),
    pytest.param(
        b'{"name":"ENABLE_CHANNEL_AUTH","value":false}',
        ["read once at start"],
        id="enable-channel-auth-flip",
    ),
    pytest.param(
        b'{"name":"RADIOSTATION_CHECK_TARGETS","value":false}',
        ["read once at start"],
        id="check-targets-off",
    ),
    pytest.param(
        b'{"name":"VOTING_RATIO","value":0.5}', ["VOTING_RATIO", "2/3"], id="voting-ratio-0.5"
    ),
    pytest.param(b'{"name":"NO_SUCH_KEY","value":1}', ["NO_SUCH_KEY"], id="unknown-key"),
    pytest.param(
        b'{"name":"HEARTBEAT_TIMEOUT"}', ["value: missing", "HEARTBEAT_TIMEOUT"], id="no-value"
    ),
    pytest.param(_deep(100_000), ["nested too deeply"], id="nested-100000"),
    pytest.param(b'["HEARTBEAT_TIMEOUT",1]', ["must be a JSON object"], id="an-array"),
    pytest.param(b'{"name":"HEARTBEAT_TIMEOUT","value":\xff}', ["not UTF-8"], id="not-utf8"),
]


@pytest.mark.parametrize(("body", "words"), CONF_PROBES)
def test_conf_write_with_the_token_refuses_bad_values(
    target: Target, body: bytes, words: list[str]
) -> None:
    rs = target.net.rs_rest
    before = {n: _conf_value(target, n) for n in ("HEARTBEAT_TIMEOUT", "ENABLE_CHANNEL_AUTH")}
    reply = post(rs, "/api/v1/conf", body, **_bearer(target.token()))
    try:
        assert_refused(reply, 400, INVALID_PARAMS, *words)
    finally:
        if reply.status == 200:  # a defect let it through: put the value back for the others
            value = json.dumps({"name": "HEARTBEAT_TIMEOUT", "value": before["HEARTBEAT_TIMEOUT"]})
            post(rs, "/api/v1/conf", value.encode(), **_bearer(target.token()))
    assert {n: _conf_value(target, n) for n in before} == before


def test_conf_body_over_the_limit_is_413_even_with_the_token(target: Target) -> None:
    body = b'{"name":"X","value":"' + b"a" * (MAX_BODY + 1) + b'"}'
    reply = post(target.net.rs_rest, "/api/v1/conf", body, **_bearer(target.token()))
    assert_refused(reply, 413, INVALID_PARAMS, "larger than")


def test_get_cert_issue_ca_creates_nothing(target: Target) -> None:
    rs = target.net.rs_rest
    for path in ("/api/v1/cert/issue/ca", "/api/v1/cert/list/ca", "/api/v1/cert/issue/ca"):
        assert_refused(send(rs, "GET", path), 404, NOT_FOUND_CODE, "no CA", "POST")
    assert not (target.rs_dir / "ca").exists(), sorted(p.name for p in target.rs_dir.iterdir())


RS_WRITES_WITHOUT_TOKEN = [
    # (method, path, body)
    pytest.param("POST", "/api/v1/cert/issue/ca", b"", id="issue-ca"),
    pytest.param(
        "POST",
        "/api/v1/cert/issue/peer",
        b'{"public_key":"02","tls_public_key_pem":"x","signature":"00"}',
        id="issue-peer-certificate",
    ),
    pytest.param("DELETE", "/api/v1/peer?peer_id={victim}", b"", id="remove-a-peer"),
]


@pytest.mark.parametrize("token", [None, "wrong"], ids=["no-token", "wrong-token"])
@pytest.mark.parametrize(("method", "path", "body"), RS_WRITES_WITHOUT_TOKEN)
def test_radiostation_writes_need_the_operator_token(
    target: Target, method: str, path: str, body: bytes, token: str | None
) -> None:
    mark = LogMark.now(target)
    path = path.format(victim=target.ids[target.ports[3]])
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers.update(_bearer(token * 11))
    reply = send(target.net.rs_rest, method, path, body, headers)
    if token is None:
        assert_refused(reply, 401, FAIL, "Authorization: Bearer")
        mark.wait_warning(None, f"{method} {path.partition('?')[0]} refused", "no operator token")
    else:
        assert_refused(reply, 403, FAIL, "not the operator token")
        mark.wait_warning(None, "refused", "a wrong operator token")
    assert not (target.rs_dir / "ca").exists()
    assert validator_view(target) == target.baseline


def test_removing_an_unknown_peer_with_the_token_changes_nothing(target: Target) -> None:
    path = "/api/v1/peer?peer_id=hx" + "0" * 40
    reply = send(target.net.rs_rest, "DELETE", path, b"", _bearer(target.token()))
    assert_refused(reply, 404, PEER_UNKNOWN, "not registered")
    assert validator_view(target) == target.baseline


def test_a_flood_of_refused_radiostation_writes_leaves_a_few_log_lines(target: Target) -> None:
    """Writes without the operator token or with a wrong one, many at once: each is refused, but
    the RadioStation's log gets a burst of their warnings, not a line each."""
    body = b'{"name":"HEARTBEAT_TIMEOUT","value":0.001}'

    def refused_write(token: str | None) -> int:
        headers = {"Content-Type": "application/json", **(_bearer(token) if token else {})}
        return send(target.net.rs_rest, "POST", "/api/v1/conf", body, headers).status

    mark = LogMark.now(target)
    began = time.monotonic()
    with ThreadPoolExecutor(FLOOD_AT_ONCE) as pool:
        statuses = list(pool.map(refused_write, [None, "x" * 43] * (FLOOD // 2)))
    seconds = time.monotonic() - began
    assert statuses == [401, 403] * (FLOOD // 2), sorted(set(statuses))
    _assert_few_warnings(mark, None, seconds)
    _wait_reported_refusal(
        mark, None, lambda: refused_write(None), "POST /api/v1/conf refused", "no operator token"
    )
    assert _conf_value(target, "HEARTBEAT_TIMEOUT") == 10.0


@pytest.mark.parametrize(
    ("path", "status", "code", "words"),
    [
        pytest.param("/api/v1/peer/list?channel=nosuch", 404, -4, ["unknown channel"], id="list"),
        pytest.param("/api/v1/peer/leader?channel=%ED%A0%80", 404, -4, ["unknown"], id="leader"),
        pytest.param("/api/v1/peer/status", 400, -6, ["peer_id"], id="status-no-peer-id"),
        pytest.param(
            "/api/v1/peer/status?peer_id=hx" + "1" * 40, 404, -800, ["not registered"], id="status"
        ),
        pytest.param(
            "/api/v1/conf?name=NO_SUCH", 400, -6, ["unknown configuration key"], id="conf"
        ),
    ],
)
def test_radiostation_rest_refuses_bad_queries(
    target: Target, path: str, status: int, code: int, words: list[str]
) -> None:
    assert_refused(send(target.net.rs_rest, "GET", path), status, code, *words)


# ------------------------------------------------------------------ 5. gRPC to a peer: client calls

CREATE_TX_PROBES = [
    # (data_json, words of the details)
    pytest.param('{"a":' + "[" * 900 + "]" * 900 + "}", ["64 levels"], id="nested-900"),
    pytest.param("[" * 100_000 + "]" * 100_000, ["nested too deeply"], id="nested-100000"),
    pytest.param('{"a":' + "9" * 5000 + "}", ["4300 digits"], id="digits-5000"),
    pytest.param('{"a":-' + "9" * 400 + "}", ["80 digits"], id="digits-400"),
    pytest.param('{"a":"\\ud800"}', ["lone surrogate"], id="lone-surrogate"),
    pytest.param('{"a":NaN}', ["NaN is not JSON"], id="nan"),
    pytest.param('{"a":1.5}', ["floats are not allowed"], id="float"),
    pytest.param("[1,2]", ["must be a JSON object"], id="an-array"),
    pytest.param("", ["not valid JSON"], id="empty"),
    pytest.param(json.dumps({"a": "x" * MAX_TX_BYTES}), ["limit 65536"], id="over-MAX_TX_BYTES"),
]


@pytest.mark.parametrize(("data_json", "words"), CREATE_TX_PROBES)
def test_create_tx_refuses_hostile_json_as_invalid_argument(
    target: Target, data_json: str, words: list[str]
) -> None:
    request = pb.CreateTxRequest(channel=CHANNEL, data_json=data_json)
    error = rpc_refusal(peer_call, _stranger_port(target), "CreateTx", request)
    assert error.code() == INVALID, (error.code(), error.details())
    for word in words:
        assert word in error.details(), (word, error.details())


def test_create_tx_batch_of_1001_is_invalid_argument(target: Target) -> None:
    request = pb.CreateTxBatchRequest(channel=CHANNEL, data_json=['{"a":1}'] * 1001)
    error = rpc_refusal(peer_call, _stranger_port(target), "CreateTxBatch", request)
    assert (
        error.code() == INVALID and "1001 transactions in one call, limit 1000" in error.details()
    )


def test_create_tx_batch_refuses_each_bad_item_alone(target: Target) -> None:
    items = ['{"data":"good batch item"}', '{"a":"\\udfff"}', "[" * 5000 + "]" * 5000]
    request = pb.CreateTxBatchRequest(channel=CHANNEL, data_json=items)
    reply = peer_call(_stranger_port(target), "CreateTxBatch", request)
    good, surrogate, deep = reply.results
    assert good.code == 0 and len(good.tx_hash) == 64, reply
    for bad in (surrogate, deep):
        assert bad.code == INVALID.value[0] and not bad.tx_hash, reply
    assert "lone surrogate" in surrogate.message and "nest" in deep.message, reply
    wait_final(target, [good.tx_hash])


def test_query_batch_of_1001_is_invalid_argument(target: Target) -> None:
    request = pb.QueryBatchRequest(channel=CHANNEL, params_json=['{"method":"ping"}'] * 1001)
    error = rpc_refusal(peer_call, _stranger_port(target), "QueryBatch", request)
    assert error.code() == INVALID and "1001 queries in one call, limit 1000" in error.details()
    request = pb.QueryBatchRequest(channel="nosuch", params_json=['{"method":"ping"}'])
    error = rpc_refusal(peer_call, _stranger_port(target), "QueryBatch", request)
    assert error.code() == NOT_FOUND and "not served" in error.details(), error.details()


def test_query_batch_refuses_each_bad_query_alone(target: Target) -> None:
    """Each query of a batch is answered as Query answers it alone: the good ones by the SCORE,
    the hostile ones refused in their own results."""
    supply = json.dumps({"method": "total_supply"})
    items = [
        supply,
        '{"v":' + "[" * 3000 + "]" * 3000 + "}",
        '{"v":' + "1" * 5000 + "}",
        json.dumps({"method": "m" * 100_000}),
        supply,
    ]
    port = _stranger_port(target)
    reply = peer_call(port, "QueryBatch", pb.QueryBatchRequest(channel=CHANNEL, params_json=items))
    alone = peer_call(port, "Query", pb.QueryRequest(channel=CHANNEL, params_json=supply))
    first, nested, digits, method, last = reply.results
    assert first.code == last.code == 0, reply
    assert first.response_json == last.response_json == alone.response_json != "", reply
    for bad in (nested, digits, method):
        assert bad.code == INVALID.value[0] and not bad.response_json, reply
    assert "query is not valid JSON" in nested.message and "nested too deeply" in nested.message
    assert "4300 digits" in digits.message, digits.message
    assert "unknown query method 'mmm" in method.message, method.message
    assert len(method.message.encode()) <= MAX_DETAILS_BYTES  # bounded as a call's refusal is


LOOKUP_BATCHES = {"GetTxBatch": "GetTx", "GetTxResultBatch": "GetTxResult"}  # and their twins


@pytest.mark.parametrize("method", list(LOOKUP_BATCHES))
def test_a_lookup_batch_of_1001_or_of_an_unknown_channel_is_refused_whole(
    target: Target, method: str
) -> None:
    request = pb.TxLookupBatchRequest(channel=CHANNEL, tx_hashes=["ab" * 32] * 1001)
    error = rpc_refusal(peer_call, _stranger_port(target), method, request)
    assert error.code() == INVALID, (error.code(), error.details())
    assert "1001 transaction hashes in one call, limit 1000" in error.details()
    request = pb.TxLookupBatchRequest(channel="nosuch", tx_hashes=["ab" * 32])
    error = rpc_refusal(peer_call, _stranger_port(target), method, request)
    assert error.code() == NOT_FOUND and "not served" in error.details(), error.details()


@pytest.mark.parametrize("method", list(LOOKUP_BATCHES))
def test_a_lookup_batch_answers_each_hash_as_its_one_call_twin(target: Target, method: str) -> None:
    """Each hash of a batch is answered as GetTx (GetTxResult) answers it alone: a known
    transaction, an unknown one and a malformed hash refused in their own entries (bounded)."""
    port = _stranger_port(target)
    created = peer_call(
        port, "CreateTx", pb.CreateTxRequest(channel=CHANNEL, data_json='{"data":"looked up"}')
    )
    lookup = pb.GetTxRequest(channel=CHANNEL, tx_hash=created.tx_hash)
    wait_until(
        lambda: peer_call(port, "GetTxResult", lookup).executed, 30, "the transaction executed"
    )
    hashes = [created.tx_hash, "cd" * 32, "x" * 100_000, "0x" + created.tx_hash]
    request = pb.TxLookupBatchRequest(channel=CHANNEL, tx_hashes=hashes)
    reply = peer_call(port, method, request)
    known, unknown, malformed, prefixed = reply.results
    alone = peer_call(port, LOOKUP_BATCHES[method], lookup)
    answer = "tx" if method == "GetTxBatch" else "result"
    assert known.code == prefixed.code == 0, reply
    assert getattr(known, answer) == getattr(prefixed, answer) == alone, reply
    assert unknown.code == NOT_FOUND.value[0] and "cd" * 32 in unknown.message, reply
    assert malformed.code == INVALID.value[0] and "64 hex characters" in malformed.message
    assert len(malformed.message.encode()) <= MAX_DETAILS_BYTES  # bounded as a call's refusal is
    assert not unknown.HasField(answer) and not malformed.HasField(answer), reply


def test_a_balance_batch_answers_each_address_as_get_balance_and_is_bounded(
    target: Target,
) -> None:
    port = _stranger_port(target)
    over = pb.BalanceBatchRequest(channel=CHANNEL, addresses=["hx" + "0" * 40] * 1001)
    error = rpc_refusal(peer_call, port, "GetBalanceBatch", over)
    assert error.code() == INVALID and "1001 addresses in one call, limit 1000" in error.details()
    unknown = pb.BalanceBatchRequest(channel="nosuch", addresses=["hx" + "0" * 40])
    error = rpc_refusal(peer_call, port, "GetBalanceBatch", unknown)
    assert error.code() == NOT_FOUND and "not served" in error.details(), error.details()
    good = "hx" + "ab" * 20
    asked = [good, "hx123", "x" * 100_000, good]
    reply = peer_call(
        port, "GetBalanceBatch", pb.BalanceBatchRequest(channel=CHANNEL, addresses=asked)
    )
    first, short, huge, again = reply.results
    alone = peer_call(port, "GetBalance", pb.BalanceRequest(channel=CHANNEL, address=good))
    assert first.code == again.code == 0 and first.balance == again.balance == alone, reply
    for bad in (short, huge):
        assert bad.code == INVALID.value[0] and not bad.HasField("balance"), reply
        assert "'address' must be" in bad.message, bad.message
    assert len(huge.message.encode()) <= MAX_DETAILS_BYTES  # bounded as a call's refusal is


def _tx_stream(port: int, requests: list[bytes]) -> list[pb.CreateTxBatchReply]:
    """The replies of the peer's CreateTxStream to `requests` (raw messages, as any stranger may
    write them)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = channel.stream_stream(
            "/loopchain.PeerService/CreateTxStream",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.CreateTxBatchReply.FromString,
        )
        return list(stream(iter(requests), timeout=DEADLINE))


def test_create_tx_stream_refuses_bad_batches_alone_and_ends_on_a_malformed_message(
    target: Target,
) -> None:
    port = _stranger_port(target)
    batches = [
        pb.CreateTxBatchRequest(channel=CHANNEL, data_json=['{"a":1}'] * 1001),
        pb.CreateTxBatchRequest(channel="nosuch", data_json=['{"a":1}']),
        pb.CreateTxBatchRequest(channel=CHANNEL, data_json=['{"data":"streamed"}', "[1]"]),
    ]
    over, unknown, mixed = _tx_stream(port, [b.SerializeToString() for b in batches])
    assert over.code == INVALID.value[0] and not over.results, over
    assert "1001 transactions in one call, limit 1000" in over.message, over
    assert unknown.code == NOT_FOUND.value[0] and not unknown.results, unknown
    good, array = mixed.results
    assert mixed.code == 0 and good.code == 0 and len(good.tx_hash) == 64, mixed
    assert array.code == INVALID.value[0] and "must be a JSON object" in array.message, mixed
    wait_final(target, [good.tx_hash])

    error = rpc_refusal(_tx_stream, port, [batches[2].SerializeToString(), b"\xff\x01garbage"])
    assert error.code() == INVALID and "malformed request" in error.details(), error


@pytest.mark.parametrize(
    ("method", "request_", "code", "words"),
    [
        pytest.param(
            "CreateTx",
            pb.CreateTxRequest(channel="nosuch", data_json='{"a":1}'),
            NOT_FOUND,
            ["not served"],
            id="create-tx-unknown-channel",
        ),
        pytest.param(
            "Query",
            pb.QueryRequest(channel=CHANNEL, params_json='{"v":' + "[" * 3000 + "]" * 3000 + "}"),
            INVALID,
            ["query is not valid JSON", "nested too deeply"],
            id="query-nested",
        ),
        pytest.param(
            "Query",
            pb.QueryRequest(channel=CHANNEL, params_json='{"v":' + "1" * 5000 + "}"),
            INVALID,
            ["4300 digits"],
            id="query-digits-5000",
        ),
        pytest.param(
            "GetTx",
            pb.GetTxRequest(channel=CHANNEL, tx_hash="0x" + "g" * 64),
            INVALID,
            ["64 hex"],
            id="get-tx-bad-hash",
        ),
        pytest.param(
            "GetBlock",
            pb.GetBlockRequest(channel=CHANNEL, block_hash="ab" * 31),
            INVALID,
            ["64 hex"],
            id="get-block-short-hash",
        ),
        pytest.param(
            "GetBlock",
            pb.GetBlockRequest(channel=CHANNEL, height=2**62),
            NOT_FOUND,
            ["not found"],
            id="get-block-huge-height",
        ),
        pytest.param(
            "Identify",
            pb.IdentifyRequest(challenge=b"c" * 31),
            INVALID,
            ["challenge must be 32 bytes"],
            id="identify-31-bytes",
        ),
        pytest.param(
            "Identify",
            pb.IdentifyRequest(challenge=b"c" * 1_000_000),
            INVALID,
            ["challenge must be 32 bytes"],
            id="identify-1MB",
        ),
        # refusals quoting a long value: the caller gets the refusal, not gRPC's "Stream removed"
        # for a trailer past its metadata limit (16 KiB), once the quote is bounded
        pytest.param(
            "GetStatus",
            pb.ChannelRequest(channel="\U0001f600" * 50_000),
            NOT_FOUND,
            ["not served", "characters)..."],
            id="get-status-200KB-channel",
        ),
        pytest.param(
            "GetTx",
            pb.GetTxRequest(channel=CHANNEL, tx_hash="0x" + "%" * 100_000),
            INVALID,
            ["64 hex"],
            id="get-tx-100KB-hash",
        ),
        pytest.param(
            "Query",
            pb.QueryRequest(channel=CHANNEL, params_json=json.dumps({"method": "m" * 100_000})),
            INVALID,
            ["unknown query method 'mmm"],
            id="query-100KB-method-name",
        ),
    ],
)
def test_peer_grpc_refuses_bad_requests(
    target: Target, method: str, request_: Any, code: grpc.StatusCode, words: list[str]
) -> None:
    error = rpc_refusal(peer_call, _stranger_port(target), method, request_)
    assert error.code() == code, (error.code(), error.details())
    for word in words:
        assert word in error.details(), (word, error.details())
    assert len(error.details().encode()) <= 4096, error.details()


@pytest.mark.parametrize(
    "path",
    [
        "/loopchain.PeerService/CreateTx",
        "/loopchain.PeerService/GetStatus",
        "/loopchain.PeerService/Deliver",
        "/loopchain.PeerService/AddTxStream",
        "/loopchain.RadioStation/ConnectPeer",
    ],
)
def test_bytes_that_are_not_the_message_are_invalid_argument(target: Target, path: str) -> None:
    garbage = b"\xff\xff\xff\x0f not protobuf"
    if path.startswith("/loopchain.RadioStation/"):
        address = target.rs_target
    else:
        address = f"127.0.0.1:{_stranger_port(target)}"
    with grpc.insecure_channel(address) as channel:
        if path.endswith("Stream"):
            error = rpc_refusal(channel.stream_unary(path), iter([garbage]), DEADLINE)
        else:
            error = rpc_refusal(channel.unary_unary(path), garbage, DEADLINE)
    assert error.code() == INVALID, (error.code(), error.details())
    assert error.details().startswith("malformed request: DecodeError"), error.details()


# ------------------------------------------------------------------ 6. gRPC to a peer: Deliver


def _vote_bytes(target: Target) -> bytes:
    tip, _ = _tip(target, target.owner_port)
    return Vote.create(CHANNEL, tip.height, tip.header.round, tip.hash, Signer.generate()).encode()


def _complaint_bytes(target: Target) -> bytes:
    _, qc = _tip(target, target.owner_port)
    return Complaint.create(CHANNEL, qc.round + 1, qc, Signer.generate()).encode()


def _block_bytes(target: Target) -> bytes:
    tip, _ = _tip(target, target.owner_port)
    return tip.encode()


def _certificate_bytes(target: Target) -> bytes:
    _, qc = _tip(target, target.owner_port)
    return qc.encode()


def _huge_height_block(target: Target) -> bytes:
    raw = _block_bytes(target)
    return raw.replace(b'"height":', b'"height":' + b"9" * 5000 + b',"x":', 1)


def _deep_block(target: Target) -> bytes:
    raw = _block_bytes(target)
    return raw.replace(b'"validator_update":null', b'"validator_update":' + _deep(900), 1)


def _spaced(raw: bytes) -> bytes:
    return raw.replace(b",", b", ", 1)


MALFORMED = [
    # (id, oneof field, bytes maker, words)
    pytest.param(
        "proposal", lambda t: os.urandom(300), ["malformed message"], id="proposal-random"
    ),
    pytest.param(
        "proposal", lambda t: _block_bytes(t)[:-9], ["malformed message"], id="proposal-truncated"
    ),
    pytest.param(
        "proposal", _huge_height_block, ["malformed message", "digits"], id="proposal-5000-digits"
    ),
    pytest.param("proposal", _deep_block, ["malformed message"], id="proposal-nested-900"),
    pytest.param(
        "proposal", lambda t: _deep(100_000), ["malformed message"], id="proposal-nested-100000"
    ),
    pytest.param("proposal", lambda t: b"{}", ["malformed message"], id="proposal-empty-object"),
    pytest.param("vote", lambda t: os.urandom(200), ["malformed message"], id="vote-random"),
    pytest.param("vote", lambda t: _vote_bytes(t)[:-7], ["malformed message"], id="vote-truncated"),
    pytest.param(
        "vote", lambda t: _spaced(_vote_bytes(t)), ["canonical form"], id="vote-not-canonical"
    ),
    pytest.param(
        "vote",
        lambda t: _vote_bytes(t).replace(b'"height":', b'"height":-' + b"1" * 400 + b',"h":', 1),
        ["malformed message"],
        id="vote-400-digits",
    ),
    pytest.param(
        "certificate", lambda t: os.urandom(100), ["malformed message"], id="certificate-random"
    ),
    pytest.param(
        "certificate",
        lambda t: _certificate_bytes(t)[: len(_certificate_bytes(t)) // 2],
        ["malformed message"],
        id="certificate-truncated",
    ),
    pytest.param(
        "complaint", lambda t: os.urandom(64), ["malformed message"], id="complaint-random"
    ),
    pytest.param(
        "complaint",
        lambda t: _complaint_bytes(t)[:50],
        ["malformed message"],
        id="complaint-truncated",
    ),
    pytest.param(
        "complaint",
        lambda t: _complaint_bytes(t).replace(b'"voter":"hx', b'"voter":"\\ud800hx', 1),
        ["malformed message"],
        id="complaint-lone-surrogate",
    ),
    pytest.param(None, lambda t: b"", ["unsupported consensus message"], id="no-body"),
]


@pytest.mark.parametrize(("kind", "make", "words"), MALFORMED)
def test_deliver_refuses_malformed_messages_as_invalid_argument(
    target: Target, kind: str | None, make: Any, words: list[str]
) -> None:
    port = _stranger_port(target)
    message = pb.ConsensusMessage(channel=CHANNEL, sender=target.ids[target.ports[2]])
    if kind is not None:
        setattr(message, kind, make(target))
    error = rpc_refusal(peer_call, port, "Deliver", message)
    assert error.code() == INVALID, (error.code(), error.details())
    for word in words:
        assert word in error.details(), (word, error.details())


def _stranger_block(target: Target, *, claim_leader: bool) -> tuple[Block, Signer]:
    """A well-formed next block signed by a key outside the validator set (naming itself, or the
    real leader of the next round, as its leader). Made once no block is on its way, so that the
    peer it goes to is still at the tip it extends when it arrives."""
    wait_settled(target)
    tip, qc = _tip(target, _stranger_port(target))
    stranger = Signer.generate()
    block = Block.create(
        channel=CHANNEL,
        height=tip.height + 1,
        round_=qc.round + 1,
        prev_hash=tip.hash,
        prev_qc=qc,
        transactions=[
            Transaction.create_v1(CHANNEL, {"stolen": 1}, time.time_ns() // 1000, stranger)
        ],
        timestamp=time.time_ns() // 1000,
        leader=stranger,
        next_leader=stranger.address,
        validators_hash=tip.header.next_validators_hash,
        state_root=tip.header.state_root,
        results_hash=tip.header.results_hash,
        state_height=tip.header.state_height,
    )
    if claim_leader:
        header = dataclasses.replace(
            block.header, leader=target.status(target.owner_port)["leader_id"]
        )
        block = Block(header, block.transactions, None, stranger.sign(header.hash))
    return block, stranger


@pytest.mark.parametrize(
    ("claim_leader", "why"),
    [(False, "but the leader is"), (True, "not signed by its leader")],
    ids=["as-itself", "as-the-leader"],
)
def test_deliver_of_a_block_signed_by_a_non_validator_is_rejected_and_logged(
    target: Target, claim_leader: bool, why: str
) -> None:
    port = _stranger_port(target)
    block, stranger = _stranger_block(target, claim_leader=claim_leader)
    mark = LogMark.now(target)
    message = pb.ConsensusMessage(channel=CHANNEL, sender=stranger.address, proposal=block.encode())
    try:
        ack = peer_call(port, "Deliver", message)
    except grpc.RpcError as exc:
        assert exc.code() == INVALID, (exc.code(), exc.details())
    else:
        assert ack.code == 0, ack
        mark.wait_warning(port, f"rejected block {block.height}", why)
    lookup = pb.GetBlockRequest(channel=CHANNEL, block_hash=block.hash.hex())
    assert rpc_refusal(peer_call, port, "GetBlock", lookup).code() == NOT_FOUND
    tx = pb.GetTxRequest(channel=CHANNEL, tx_hash=block.transactions[0].hash_hex)
    assert rpc_refusal(peer_call, port, "GetTx", tx).code() == NOT_FOUND


def test_deliver_of_a_non_validators_complaint_is_rejected_and_logged(target: Target) -> None:
    port = _stranger_port(target)
    _, qc = _tip(target, port)
    stranger = Signer.generate()
    complaint = Complaint.create(CHANNEL, 1_000_000, qc, stranger)
    mark = LogMark.now(target)
    message = pb.ConsensusMessage(channel=CHANNEL, complaint=complaint.encode())
    assert peer_call(port, "Deliver", message).code == 0
    mark.wait_warning(port, f"complaint from {stranger.address}, who is not a validator")
    assert target.status(port)["round"] < 1_000_000


def test_deliver_of_non_validators_votes_and_certificate_changes_nothing(target: Target) -> None:
    port = _stranger_port(target)
    tip, _ = _tip(target, port)
    strangers = [Signer.generate() for _ in range(PEERS)]
    fake_hash = os.urandom(32)
    votes = [Vote.create(CHANNEL, tip.height + 1, 10**6, fake_hash, s) for s in strangers]
    for vote in votes:  # votes for a block nobody proposed, at a far round
        message = pb.ConsensusMessage(channel=CHANNEL, vote=vote.encode())
        assert peer_call(port, "Deliver", message).code == 0
    # a "quorum certificate" of the strangers' votes for the tip's own hash and height
    forged = [Vote.create(CHANNEL, tip.height, 10**6, tip.hash, s) for s in strangers]
    qc = QuorumCertificate.from_votes(forged)
    message = pb.ConsensusMessage(channel=CHANNEL, certificate=qc.encode())
    try:
        peer_call(port, "Deliver", message)
    except grpc.RpcError as exc:
        assert exc.code() == INVALID, (exc.code(), exc.details())
    assert target.status(port)["round"] < 10**6
    at_tip = peer_call(port, "GetBlock", pb.GetBlockRequest(channel=CHANNEL, height=tip.height))
    assert Block.decode(at_tip.block).hash == tip.hash


def test_deliver_of_another_channels_vote_is_invalid_argument_and_logged(target: Target) -> None:
    port = _stranger_port(target)
    tip, _ = _tip(target, port)
    vote = Vote.create(
        "other", tip.height, tip.header.round, tip.hash, target.signer(target.ports[2])
    )
    mark = LogMark.now(target)
    message = pb.ConsensusMessage(channel=CHANNEL, vote=vote.encode())
    error = rpc_refusal(peer_call, port, "Deliver", message)
    assert error.code() == INVALID and "belongs to channel 'other'" in error.details(), error
    mark.wait_warning(port, "refused a vote of channel other")


def test_a_stream_of_refused_consensus_messages_leaves_a_few_log_lines(target: Target) -> None:
    """Each message of a stream is judged alone (another channel's vote refused, a non-validator's
    complaint rejected), but the log gets a few lines of them, not one a message."""
    port = _flooded_port(target)
    tip, qc = _tip(target, port)
    other = Vote.create("other", tip.height, tip.header.round, tip.hash, Signer.generate())
    messages = []
    for _ in range(100):  # one of each in turn (the first lines show both, the rest are counted)
        complaint = Complaint.create(CHANNEL, 1_000_000, qc, Signer.generate())
        messages.append(pb.ConsensusMessage(channel=CHANNEL, vote=other.encode()))
        messages.append(pb.ConsensusMessage(channel=CHANNEL, complaint=complaint.encode()))
    mark = LogMark.now(target)
    ack = peer_call(port, "DeliverStream", iter(messages))
    assert ack.message.startswith("100 handled, 100 refused"), ack
    mark.wait_warning(port, "refused a vote of channel other")
    mark.wait_warning(port, "who is not a validator")
    warnings = [line for line in mark.new_lines(port) if "WARNING" in line]
    assert len(warnings) <= FEW_LINES, warnings[:5]


# ------------------------------------------------------------------ 7. gRPC to a peer: AddTxBatch


def _relayed(data: Any, *, age: float = 0.0, channel: str = CHANNEL) -> Transaction:
    """A transaction a stranger signs itself, as if relayed by a member."""
    stamp = time.time_ns() // 1000 - int(age * 1_000_000)
    return Transaction.create_v1(channel, data, stamp, Signer.generate())


def _forged(target: Target) -> Transaction:
    """A transaction whose sender is a real peer but whose signature is a stranger's."""
    tx = _relayed({"forged": True})
    body = {**tx.body, "from": target.ids[target.ports[2]]}
    return Transaction.from_json({"body": body, "signature": tx.signature.hex()})


DROPPED = [
    # (id, transaction maker, words of the warning)
    pytest.param(
        lambda t: _relayed({"x": "a" * 1_100_000}), ["transaction is 11"], id="tx-of-1.1MB"
    ),
    pytest.param(lambda t: _relayed({"x": 1}, age=86_400), ["s old", "window"], id="a-day-old"),
    pytest.param(lambda t: _relayed({"x": 2}, age=-86_400), ["in the future"], id="a-day-ahead"),
    pytest.param(_forged, ["signature is not its sender's"], id="forged-signature"),
    pytest.param(lambda t: _relayed({"x": 3}, channel="other"), ["belongs to channel"], id="other"),
    pytest.param(lambda t: _relayed({"x": 4}), ["not a party of the channel"], id="stranger-v1"),
]


@pytest.mark.parametrize(("make", "words"), DROPPED)
def test_add_tx_batch_drops_what_no_block_may_hold_and_the_chain_goes_on(
    target: Target, make: Any, words: list[str]
) -> None:
    port = _stranger_port(target)
    tx = make(target)
    mark = LogMark.now(target)
    ack = peer_call(port, "AddTxBatch", pb.TxBatch(channel=CHANNEL, txs=[tx.encode()]))
    assert ack.code == 0, ack
    mark.wait_warning(port, "dropped relayed transaction", tx.hash_hex, *words)
    lookup = pb.GetTxRequest(channel=CHANNEL, tx_hash=tx.hash_hex)
    assert rpc_refusal(peer_call, port, "GetTx", lookup).code() == NOT_FOUND
    # the poison that once halted the chain: a fresh transaction still becomes final everywhere
    wait_final(target, [submit(target, target.ports[2], {"after": words[0]})])
    assert target.status(port)["tx_pool_size"] == 0


def test_a_batch_of_a_thousand_dropped_transactions_leaves_a_few_log_lines(
    target: Target,
) -> None:
    port = _flooded_port(target)
    txs = [_relayed({"n": n}, channel="other").encode() for n in range(MAX_BATCH)]
    mark = LogMark.now(target)
    ack = peer_call(port, "AddTxBatch", pb.TxBatch(channel=CHANNEL, txs=txs))
    assert ack.code == 0, ack
    mark.wait_warning(port, "dropped relayed transaction", "belongs to channel 'other'")
    warnings = [line for line in mark.new_lines(port) if "WARNING" in line]
    assert len(warnings) <= FEW_LINES, warnings[:5]


@pytest.mark.parametrize(
    ("txs", "words"),
    [
        pytest.param(
            lambda: [_relayed({"n": 1}).encode()] * 1001, ["1001", "limit 1000"], id="1001"
        ),
        pytest.param(lambda: [os.urandom(100)], ["malformed message"], id="random-bytes"),
        pytest.param(
            lambda: [_relayed({"n": 2}).encode()[:-3]], ["malformed message"], id="truncated"
        ),
        pytest.param(
            lambda: [_relayed({"n": 3}).encode().replace(b'"n":3', b'"n":' + b"3" * 5000)],
            ["malformed message"],
            id="digits-5000",
        ),
    ],
)
def test_add_tx_batch_refuses_malformed_batches(target: Target, txs: Any, words: list[str]) -> None:
    request = pb.TxBatch(channel=CHANNEL, txs=txs())
    error = rpc_refusal(peer_call, _stranger_port(target), "AddTxBatch", request)
    assert error.code() == INVALID, (error.code(), error.details())
    for word in words:
        assert word in error.details(), (word, error.details())


@pytest.mark.parametrize(
    ("from_height", "max_blocks"),
    [(0, 2**31 - 1), (-(2**63), -5), (2**63 - 1, 2**31 - 1), (-1, 0)],
    ids=["all-from-0", "negative", "beyond-the-tip", "zero"],
)
def test_get_block_range_replies_are_bounded(
    target: Target, from_height: int, max_blocks: int
) -> None:
    port = _stranger_port(target)
    request = pb.BlockRangeRequest(channel=CHANNEL, from_height=from_height, max_blocks=max_blocks)
    reply = peer_call(port, "GetBlockRange", request)
    tip = target.status(port)["block_height"]
    assert reply.tip_height <= tip and len(reply.blocks) <= min(500, tip + 1), len(reply.blocks)
    assert reply.ByteSize() <= 32 << 20
    heights = [Block.decode(b.block).height for b in reply.blocks]
    assert heights == list(range(max(0, from_height), max(0, from_height) + len(heights)))


# ------------------------------------------------------------------ 8. gRPC to the RadioStation


def _connect(
    signer: Signer,
    address: str,
    *,
    key: bytes | None = None,
    group: str = "",
    by: Signer | None = None,
    signature: bytes | None = None,
) -> pb.ConnectPeerRequest:
    """A registration of `signer`'s id at `address` (its key and signature unless given)."""
    digest = connect_digest(signer.address, address, group)
    return pb.ConnectPeerRequest(
        peer_id=signer.address,
        target=address,
        group_id=group,
        public_key=signer.public_key if key is None else key,
        signature=(by or signer).sign(digest) if signature is None else signature,
    )


def _dead_target(target: Target) -> str:
    return f"127.0.0.1:{free_port_pair(target.net.taken)}"


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_fresh_keys_with_dead_targets_do_not_become_validators(
    target: Target, attempt: int
) -> None:
    # refused as not listed before its target is dialled: an id refused anyway has the
    # RadioStation dial no address of its choosing, nor hold a call while it does
    newcomer = Signer.generate()
    mark = LogMark.now(target)
    reply = rs_call(target, "ConnectPeer", _connect(newcomer, _dead_target(target)))
    assert reply.code == PEER_UNKNOWN and "is not listed in any channel" in reply.message, reply
    assert not reply.channels and not reply.radiostation_public_key, reply
    mark.wait_warning(None, f"refused registration of {newcomer.address}", "not listed")
    assert validator_view(target) == target.baseline


def test_a_key_that_answers_at_its_target_but_is_not_listed_is_refused(target: Target) -> None:
    newcomer = Signer.generate()
    mark = LogMark.now(target)
    with impostor(newcomer, target.net.taken) as address:
        reply = rs_call(target, "ConnectPeer", _connect(newcomer, address))
    assert reply.code == PEER_UNKNOWN and "is not listed in any channel" in reply.message, reply
    assert not reply.channels, reply
    mark.wait_warning(None, f"refused registration of {newcomer.address}", "not listed")
    assert validator_view(target) == target.baseline


def test_a_real_peers_registration_moved_to_a_dead_target_is_refused(target: Target) -> None:
    victim = target.ports[2]
    thief_copy = target.signer(victim)  # even signed with the peer's own key
    mark = LogMark.now(target)
    reply = rs_call(target, "ConnectPeer", _connect(thief_copy, _dead_target(target)))
    assert reply.code == TIMEOUT and "did not prove the key" in reply.message, reply
    mark.wait_warning(None, f"refused registration of {thief_copy.address}")
    registered = dict(validator_view(target)["registered"])
    assert registered[target.ids[victim]] == f"127.0.0.1:{victim}"
    assert validator_view(target) == target.baseline


def test_a_replayed_registration_changes_nothing(target: Target) -> None:
    victim = target.ports[3]
    replay = _connect(target.signer(victim), f"127.0.0.1:{victim}")  # as the peer itself sent it
    reply = rs_call(target, "ConnectPeer", replay)
    assert reply.code == 0, reply  # the target proved the key afresh: the same peer, nothing new
    assert validator_view(target) == target.baseline


def _a_long_peer_id(signer: Signer, address: str) -> pb.ConnectPeerRequest:
    request = _connect(signer, address)
    request.peer_id = "hx" + "0" * 200_000
    return request


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(
            lambda s, a: _connect(s, a, key=b"\x02" + b"\xff" * 32),
            ["not a valid secp256k1 key"],
            id="malformed-public-key",
        ),
        pytest.param(
            lambda s, a: _connect(s, a, key=b""), ["not a valid secp256k1 key"], id="no-public-key"
        ),
        pytest.param(
            lambda s, a: _connect(s, a, by=Signer.generate()),
            ["signature was not made by the key"],
            id="signed-by-another-key",
        ),
        pytest.param(
            lambda s, a: _connect(s, a, key=Signer.generate().public_key),
            ["public_key belongs to"],
            id="key-of-another-id",
        ),
        pytest.param(
            lambda s, a: _connect(s, a, signature=b"\x01" * 10),
            ["signature is invalid"],
            id="short-signature",
        ),
        pytest.param(lambda s, a: _connect(s, "no-port"), ["host:port"], id="target-without-port"),
        pytest.param(lambda s, a: _connect(s, "h:99999"), ["host:port"], id="target-port-99999"),
        pytest.param(lambda s, a: _connect(s, a, group="g" * 1000), ["longer than"], id="group"),
        pytest.param(_a_long_peer_id, ["peer_id is longer than"], id="peer-id-of-200000-chars"),
    ],
)
def test_malformed_registrations_are_refused(target: Target, make: Any, words: list[str]) -> None:
    newcomer = Signer.generate()
    mark = LogMark.now(target)
    reply = rs_call(target, "ConnectPeer", make(newcomer, _dead_target(target)))
    assert reply.code == FAIL, reply
    for word in words:
        assert word in reply.message, (word, reply)
    line = mark.wait_warning(None, "refused registration of", words[0])
    assert len(line) <= MAX_WARNING_CHARS, line[:300]  # what a caller sent is echoed shortened
    assert validator_view(target) == target.baseline


def test_a_heartbeat_in_a_real_peers_name_is_refused(target: Target) -> None:
    victim = target.ids[target.ports[3]]
    mark = LogMark.now(target)
    request = pb.HeartbeatRequest(peer_id=victim, channel=CHANNEL, peer_type=1, block_height=10**12)
    reply = rs_call(target, "Heartbeat", request)
    assert reply.code == FAIL and "not signed" in reply.message, reply
    mark.wait_warning(None, "refused a heartbeat", victim)


@pytest.mark.parametrize("channel", ["nosuch", "\n" * 10_000 + "\U0001f600" * 50_000])
def test_radiostation_grpc_refuses_unknown_channels(target: Target, channel: str) -> None:
    error = rpc_refusal(rs_call, target, "GetPeerList", pb.ChannelRequest(channel=channel))
    assert error.code() == NOT_FOUND and "unknown channel" in error.details(), error
    assert "\n" not in error.details() and len(error.details().encode()) <= 4096, error


def _rs_flood(target: Target, method: str, request: Any) -> tuple[list[Any], float]:
    """FLOOD calls of RadioStation.`method` with `request`, FLOOD_AT_ONCE at a time on one
    channel: their replies and the seconds they took."""
    replies = []
    began = time.monotonic()
    with grpc.insecure_channel(target.rs_target) as channel:
        call = getattr(pb_grpc.RadioStationStub(channel), method)
        for _ in range(FLOOD // FLOOD_AT_ONCE):
            pending = [call.future(request, timeout=DEADLINE) for _ in range(FLOOD_AT_ONCE)]
            replies += [future.result() for future in pending]
    return replies, time.monotonic() - began


def test_a_flood_of_refused_registrations_leaves_a_few_log_lines(target: Target) -> None:
    """Registrations signed by another key than their id's: each is refused, but the
    RadioStation's log gets a burst of their warnings, not a line each."""
    newcomer = Signer.generate()
    request = _connect(newcomer, _dead_target(target), by=Signer.generate())
    mark = LogMark.now(target)
    replies, seconds = _rs_flood(target, "ConnectPeer", request)
    assert {(r.code, "was not made by the key" in r.message) for r in replies} == {(FAIL, True)}
    _assert_few_warnings(mark, None, seconds)
    _wait_reported_refusal(
        mark,
        None,
        lambda: rs_call(target, "ConnectPeer", request),
        f"refused registration of '{newcomer.address}'",
    )
    assert validator_view(target) == target.baseline


def test_a_flood_of_refused_heartbeats_leaves_a_few_log_lines(target: Target) -> None:
    """Unsigned heartbeats in a real peer's name: each is refused, but the RadioStation's log
    gets a burst of their warnings, not a line each."""
    victim = target.ids[target.ports[3]]
    request = pb.HeartbeatRequest(peer_id=victim, channel=CHANNEL, peer_type=1, block_height=10**12)
    mark = LogMark.now(target)
    replies, seconds = _rs_flood(target, "Heartbeat", request)
    assert {(r.code, "not signed" in r.message) for r in replies} == {(FAIL, True)}
    _assert_few_warnings(mark, None, seconds)
    _wait_reported_refusal(
        mark, None, lambda: rs_call(target, "Heartbeat", request), "refused a heartbeat", victim
    )
    assert validator_view(target) == target.baseline


# ------------------------------------------------------------------ 9. who sent it


@pytest.mark.parametrize(
    ("index", "data"),
    [
        pytest.param(1, {"method": "mint", "params": {"value": 1}}, id="mint"),
        pytest.param(2, _transfer(ALICE, 1), id="transfer"),
        pytest.param(3, {"method": "mint", "params": {"value": 10**9, "to": ALICE}}, id="mint-to"),
    ],
)
def test_an_anonymous_client_moves_no_tokens_through_a_peer_that_is_not_the_owner(
    target: Target, index: int, data: dict[str, Any]
) -> None:
    port = target.ports[index]
    tx_hash = submit(target, port, data)
    wait_final(target, [tx_hash])
    result = wait_result(target, tx_hash)
    assert result["code"] == SCORE_ERROR, result
    assert "signed this transaction for a client" in result.get("message", ""), result
    for peer in target.ports:
        assert answer(target, peer, "total_supply") == {"total_supply": SUPPLY}
        balances = {
            a: answer(target, peer, "balance_of", address=a)["balance"]
            for a in (target.owner, ALICE, target.ids[port])
        }
        assert balances == {
            target.owner: SUPPLY - FIRST_PAYMENT,
            ALICE: FIRST_PAYMENT,
            target.ids[port]: 0,
        }, (peer, balances)


# ------------------------------------------------------------------ 10. a SCORE and its peer's secrets


def test_the_score_process_sees_no_secret_of_its_peer(target: Target) -> None:
    port = _stranger_port(target)
    peer = target.net.peers[port].popen
    assert peer is not None
    scores = children(peer.pid, "loopchain.scoreservice.process")
    assert len(scores) == 1, scores
    pid = scores[0]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {entry.partition(b"=")[0].decode() for entry in environ if entry}
    assert SECRET_ENV not in names and not any(SECRET.encode() in e for e in environ), names
    assert not {n for n in names if n.startswith("LOOPCHAIN")}, names
    cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    assert stat.S_IMODE(cwd.stat().st_mode) == 0o700 and not (cwd / "peer_key").exists(), cwd
    assert Path.cwd() != cwd != Path(__file__).resolve().parents[2]
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    socket_path = Path(args[args.index(b"--socket") + 1].decode())
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700, socket_path
    suffix = socket_path.parent.name.rpartition("-")[2]
    assert len(suffix) >= 16, socket_path  # an unguessable directory name


def test_the_rest_proxy_is_handed_the_tls_password_outside_its_environment(
    target: Target,
) -> None:
    """Another process of the user (a SCORE of another channel) read the TLS key's password from
    the peer's REST proxy's /proc environ: the proxy is handed it on stdin (review)."""
    peer = target.net.peers[_stranger_port(target)].popen
    assert peer is not None
    proxies = children(peer.pid, "rest_proxy.py")
    assert len(proxies) == 1, proxies
    environ = Path(f"/proc/{proxies[0]}/environ").read_bytes().split(b"\0")
    assert not any(SECRET.encode() in e for e in environ)
    args = Path(f"/proc/{proxies[0]}/cmdline").read_bytes().split(b"\0")
    assert b"--tls-password-stdin" in args and not any(SECRET.encode() in a for a in args)


# ------------------------------------------------------------------ 11. mutual TLS


@pytest.mark.parametrize(
    ("method", "make"),
    [
        pytest.param(
            "Deliver",
            lambda t: pb.ConsensusMessage(
                channel=CHANNEL,
                vote=Vote.create(CHANNEL, 0, 0, b"\x01" * 32, Signer.generate()).encode(),
            ),
            id="deliver",
        ),
        pytest.param(
            "AddTxBatch",
            lambda t: pb.TxBatch(channel=CHANNEL, txs=[_relayed({"via": "inner port"}).encode()]),
            id="add-tx-batch",
        ),
        pytest.param(
            "GetBlockRange",
            lambda t: pb.BlockRangeRequest(channel=CHANNEL, from_height=0, max_blocks=10),
            id="get-block-range",
        ),
        pytest.param(  # a stream is refused whole, at its start, for who opens it
            "AddTxStream",
            lambda t: iter([pb.TxBatch(channel=CHANNEL, txs=[_relayed({"via": "s"}).encode()])]),
            id="add-tx-stream",
        ),
        pytest.param(
            "DeliverStream",
            lambda t: iter([pb.ConsensusMessage(channel=CHANNEL, complaint=b"{}")]),
            id="deliver-stream",
        ),
    ],
)
def test_tls_peer_serves_no_peer_to_peer_method_on_its_plain_inner_port(
    tls_target: TlsTarget, method: str, make: Any
) -> None:
    logged = len(tls_target.log())
    error = rpc_refusal(tls_target.inner_call, method, make(tls_target))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (error.code(), error.details())
    assert "only over mutual TLS" in error.details(), error.details()

    def warned() -> bool:
        new = tls_target.log()[logged:].splitlines()
        return any(
            "WARNING" in n and "refused a peer-to-peer call on the local port" in n for n in new
        )

    wait_until(warned, 10, "the TLS peer's warning about the local caller")
    # what the REST proxy needs is still served there
    status = tls_target.inner_call("GetStatus", pb.ChannelRequest(channel=CHANNEL))
    assert status.validator_count == 1


def test_tls_peer_refuses_a_plain_client_on_its_public_port(tls_target: TlsTarget) -> None:
    request = pb.GetBlockRequest(channel=CHANNEL, height=-1)
    error = rpc_refusal(peer_call, tls_target.port, "GetBlock", request)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())


def test_tls_peer_refuses_a_certificate_of_a_self_made_ca(tls_target: TlsTarget) -> None:
    tls_dir = tls_target.net.peer_dir(tls_target.port) / "tls"
    rogue_ca, rogue_key = pki.create_ca("self-made CA", 1)
    tls_key = pki.generate_tls_key()
    thief = load_or_create_key(tls_target.net.peer_dir(tls_target.port) / "peer_key")
    cert = pki.issue_peer_certificate(
        rogue_ca, rogue_key, thief.public_key, tls_key.public_key(), 1
    )
    credentials = grpc.ssl_channel_credentials(
        (tls_dir / "ca.pem").read_bytes(),
        pki.private_key_to_pem(tls_key),
        pki.certificate_to_pem(cert),
    )
    options = [("grpc.ssl_target_name_override", tls_target.peer_id)]
    request = pb.TxBatch(channel=CHANNEL, txs=[_relayed({"rogue": 1}).encode()])
    with grpc.secure_channel(f"127.0.0.1:{tls_target.port}", credentials, options) as channel:
        error = rpc_refusal(pb_grpc.PeerServiceStub(channel).AddTxBatch, request, DEADLINE)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())


def test_tls_radiostation_refuses_a_plain_registration(tls_target: TlsTarget) -> None:
    newcomer = Signer.generate()
    request = _connect(newcomer, f"127.0.0.1:{tls_target.port}")
    with grpc.insecure_channel(f"127.0.0.1:{tls_target.net.rs_port}") as channel:
        stub = pb_grpc.RadioStationStub(channel)
        error = rpc_refusal(stub.ConnectPeer, request, DEADLINE)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())


# ------------------------------------------------------------------ 12. afterwards


def test_zz_the_network_is_unharmed(target: Target) -> None:
    """Runs last: every process alive, the validator set as it was, a fresh transaction from each
    peer final on every peer, every pool empty, all peers at one height, no traceback."""
    dead = [p.name for p in target.net.procs if not p.alive]
    assert not dead, f"processes died: {dead} (see {target.net.workdir})"
    assert validator_view(target) == target.baseline
    fresh = [submit(target, port, {"data": f"after the probes {port}"}) for port in target.ports]
    wait_final(target, fresh)
    wait_settled(target)
    target.net.assert_clean_logs()
