"""The real radiostation.py's REST port against requests HTTP itself refuses, bodies it cannot
decode, and inputs long enough to fill a message: every answer is the JSON error body, no log
holds a traceback or an ERROR line, no message echoes pages of what was sent, and every 503 says
when to ask again (faults the RadioStation REST fuzz found, tests/e2e/test_rs_rest_fuzz.py)."""

from __future__ import annotations

import json
import zlib

import pytest

from tests.integration._rs_helpers import RadioStationProcess, StartRS, call
from tests.integration._slow_clients import broken_chunk_after_head, status_and_body, until_closed
from tools.procs import error_lines

DEADLINE = 20.0


def raw_request(
    method: str,
    target: bytes,
    *head: bytes,
    body: bytes = b"",
    length: bool = True,
    close: bool = True,
) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method.encode(), target), b"Host: 127.0.0.1", *head]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def json_error(answer: bytes) -> tuple[int, dict[str, object]]:
    """The status and JSON body of an error answer (fails unless it is one)."""
    status, body = status_and_body(answer)
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert b"content-type: application/json" in head, answer[:400]
    value = json.loads(body)
    assert isinstance(value["response_code"], int) and value["response_code"] < 0, value
    assert isinstance(value["message"], str), value
    return status, value


def assert_quiet_log(rs: RadioStationProcess) -> None:
    log = rs.current_log()
    assert "Traceback" not in log and not error_lines(log), log[-3000:]


MALFORMED = [
    pytest.param(raw_request("GET", b"/api/v1/peer/list?" + b"a" * 9000), id="request-line-9000"),
    pytest.param(raw_request("GET", b"/api/v1/peer/list?\xff"), id="not-ascii-in-the-target"),
    pytest.param(
        raw_request("POST", b"/api/v1/conf", b"Content-Length: 1e3", length=False),
        id="content-length-1e3",
    ),
    pytest.param(
        raw_request("POST", b"/api/v1/conf", b"Content-Length: " + b"9" * 30, length=False),
        id="content-length-30-digits",
    ),
    pytest.param(
        raw_request(
            "POST",
            b"/api/v1/conf",
            b"Content-Length: 5",
            b"Transfer-Encoding: chunked",
            body=b"0\r\n\r\n",
            length=False,
        ),
        id="length-and-chunked",
    ),
    pytest.param(
        raw_request(
            "POST", b"/api/v1/conf", b"Transfer-Encoding: chunked", body=b"zz\r\n", length=False
        ),
        id="broken-chunk",
    ),
    pytest.param(
        raw_request("GET", b"/api/v1/peer/list", b"Authorization: Bearer " + b"x" * 9000),
        id="header-9000",
    ),
]


@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_requests_http_cannot_parse_are_answered_with_the_json_error_body(
    start_rs: StartRS, request_bytes: bytes
) -> None:
    """aiohttp answered these 400 in text/plain before its handlers ran."""
    rs = await start_rs()
    status, body = json_error(await until_closed(rs.rest_port, request_bytes, DEADLINE))
    assert (status, body["response_code"]) == (400, -6)
    assert str(body["message"]).startswith("malformed HTTP request: "), body
    assert_quiet_log(rs)


async def test_bodies_http_cannot_decode_are_400_and_one_warning(start_rs: StartRS) -> None:
    """A body not in its Content-Encoding was a 500 and a traceback (RequestPayloadError) where a
    handler read it, and an ERROR with a traceback where none did (aiohttp reads the rest of a
    body after the answer): now a 400 naming it, and one warning line."""
    rs = await start_rs()
    token = rs.operator()["Authorization"].encode()
    deflated = zlib.compress(b'{"name": "GRPC_TIMEOUT", "value": 2.0}')[:-4] + b"junk"
    bad = [b"Content-Encoding: deflate", b"Content-Type: application/json"]
    read = raw_request("POST", b"/api/v1/conf", b"Authorization: " + token, *bad, body=deflated)
    status, body = json_error(await until_closed(rs.rest_port, read, DEADLINE))
    assert (status, body["response_code"]) == (400, -6), body
    assert "the request body cannot be read" in str(body["message"]), body
    assert "deflate" in str(body["message"]), body
    gzipped = [b"Content-Encoding: gzip"]
    unread = [
        (raw_request("GET", b"/api/v1/peer/list", *gzipped, body=b"not gzip at all"), 200),
        (raw_request("POST", b"/api/v1/conf", *gzipped, body=b"not gzip at all"), 401),
        (raw_request("PUT", b"/api/v1/conf", *gzipped, body=b"not gzip at all"), 405),
    ]
    for request_bytes, expected in unread:
        answer = await until_closed(rs.rest_port, request_bytes, DEADLINE)
        assert status_and_body(answer)[0] == expected, answer[:400]
    # nor is the connection kept for another request: the rest of such a body is not read
    kept = raw_request("GET", b"/api/v1/peer/list", *gzipped, body=b"not gzip", close=False)
    answer = await until_closed(rs.rest_port, kept, DEADLINE)
    assert b"connection: close" in answer.partition(b"\r\n\r\n")[0].lower(), answer[:400]
    status, _, _ = await call("GET", f"{rs.rest}/api/v1/conf?name=GRPC_TIMEOUT")
    assert status == 200
    assert_quiet_log(rs)
    assert "refused a malformed HTTP request" in rs.current_log()


async def test_a_broken_chunk_after_the_head_is_400_at_once(start_rs: StartRS) -> None:
    """A chunk of the operator's write that HTTP cannot parse, arriving after the request's head,
    was answered 408 after REST_BODY_TIMEOUT (aiohttp's parser dropped the body being read and
    queued its error as the next request): now 400 naming it, at once, and the connection is
    closed without a second answer."""
    rs = await start_rs({"REST_BODY_TIMEOUT": 10.0})
    answer = await broken_chunk_after_head(rs.rest_port, "/api/v1/conf", rs.operator(), 30)
    status, body = json_error(answer)
    assert (status, body["response_code"]) == (400, -6), answer
    assert str(body["message"]).startswith("the request body cannot be read: "), body
    assert "chunk size" in str(body["message"]), body
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    status, _, _ = await call("GET", f"{rs.rest}/api/v1/conf?name=GRPC_TIMEOUT")
    assert status == 200
    assert_quiet_log(rs)


async def test_a_503_says_when_to_ask_again(start_rs: StartRS) -> None:
    """No leader yet: 503 (-5), with Retry-After as every 503 of the project's APIs."""
    rs = await start_rs()
    status, body, headers = await call("GET", f"{rs.rest}/api/v1/peer/leader")
    assert (status, body["response_code"]) == (503, -5), body
    assert headers.get("Retry-After") == "1", headers


LONG = "9" * 6000


async def test_messages_do_not_echo_pages_of_what_was_sent(start_rs: StartRS) -> None:
    """Refusals name what was sent, shortened: they echoed query values of 8 KB and body fields
    of 500 KB whole."""
    rs = await start_rs()
    operator = rs.operator()
    probes = [
        ("GET", f"/api/v1/peer/list?channel={LONG}", None, 404),
        ("GET", f"/api/v1/peer/status?peer_id={LONG}", None, 404),
        ("GET", f"/api/v1/conf?name={LONG}", None, 400),
        ("GET", f"/api/v1/{LONG}", None, 404),
        ("PUT", f"/api/v1/peer/list/{LONG}", None, 404),
        ("DELETE", f"/api/v1/peer?peer_id={LONG}", None, 404),
        ("DELETE", f"/api/v1/channel/peer?channel={LONG}&peer_id=x", None, 404),
        ("DELETE", f"/api/v1/channel/peer?channel=loopchain_default&peer_id={LONG}", None, 404),
        ("POST", "/api/v1/conf", {"name": "x" * 300_000, "value": 1}, 400),
        ("POST", "/api/v1/conf", {"name": "LOOPCHAIN_DEFAULT_CHANNEL", "value": LONG}, 400),
        ("POST", "/api/v1/channel/peer", {"channel": "x" * 300_000, "peer_id": "hx"}, 404),
        (
            "POST",
            "/api/v1/channel/peer",
            {"channel": "loopchain_default", "peer_target": "x" * 300_000},
            400,
        ),
        ("POST", "/api/v1/channel", {"channel": "c", "x" * 300_000: 1}, 400),
        ("POST", "/api/v1/channel", {"channel": "c", "groups": {"g" * 250: {"weight": 0}}}, 400),
    ]
    for method, path, value, expected in probes:
        data = None if value is None else json.dumps(value).encode()
        status, body, _ = await call(method, f"{rs.rest}{path}", data, operator)
        assert status == expected, (method, path[:80], status, str(body)[:300])
        assert len(body["message"]) < 400, (method, path[:80], len(body["message"]))
        assert "..." in body["message"], body  # it does show what was sent, shortened
