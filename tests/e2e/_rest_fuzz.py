"""Requests for fuzzing a REST API (the peer's; the RadioStation's reuses them): raw HTTP requests
made by hostile strategies, a raw HTTP/1.1 client that sends bytes exactly as drawn, and the checks
every answer must pass."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

ROUTES = [
    "/api/v1/transactions",
    "/api/v1/transactions/result",
    "/api/v1/query",
    "/api/v1/blocks",
    "/api/v1/status/peer",
    "/api/v1/status/score",
    "/api/v1/openapi.json",
]
QUERY_NAMES = ["channel", "hash", "height"]
SHOW = 240  # bytes of a body shown in a reproducer
# Families of hostile requests that can be left out (REST_FUZZ_EXCLUDE): "http" is malformed
# HTTP (raw bytes that are not ASCII in the request line, a request line over aiohttp's 8190
# bytes), "surrogates" is JSON bodies with lone surrogates (escaped, as JSON allows).
FAMILIES = ("http", "surrogates")
MAX_TARGET = 8100  # bytes of a well-formed request target (aiohttp takes request lines to 8190)


@dataclass
class RawRequest:
    """One HTTP request as bytes on the wire (less Host, Content-Length and Connection)."""

    method: str
    target: bytes  # path and query, not necessarily valid UTF-8
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    what: str = ""  # which hostile strategy made it
    # the header lines that frame the body instead of its true Content-Length (e.g. chunked, a
    # wrong length, none at all); the body is then sent exactly as it is
    framing: list[bytes] | None = None

    def wire(self, port: int) -> bytes:
        head = [b"%s %s HTTP/1.1" % (self.method.encode(), self.target)]
        head.append(b"Host: 127.0.0.1:%d" % port)
        head += [name + b": " + value for name, value in self.headers]
        if self.framing is None:
            head.append(b"Content-Length: %d" % len(self.body))
        else:
            head += self.framing
        head.append(b"Connection: close")
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body

    def describe(self) -> str:
        body = self.body[:SHOW] + (b"..." if len(self.body) > SHOW else b"")
        target = self.target[:SHOW] + (b"..." if len(self.target) > SHOW else b"")
        headers = {
            name.decode("latin-1"): value[:SHOW].decode("latin-1") for name, value in self.headers
        }
        framing = "" if self.framing is None else f" framing={self.framing!r}"
        return (
            f"[{self.what}] {self.method} {target!r} headers={headers}{framing} "
            f"body({len(self.body)} bytes)={body!r}"
        )


@dataclass
class Answer:
    """What came back: a status (None when nothing did), headers and the body."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str = ""


def send_raw(port: int, request: RawRequest, timeout: float) -> Answer:
    """Send `request` on a fresh connection and read the whole answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            try:
                sock.sendall(request.wire(port))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer (e.g. 413) before it reads everything
            response = http.client.HTTPResponse(sock, method=request.method)
            response.begin()
            body = response.read()
            return Answer(response.status, dict(response.getheaders()), body)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, {}, b"", f"{type(exc).__name__}: {exc}")


def problems(answer: Answer, method: str) -> list[str]:
    """What is wrong with an answer: a 5xx other than 503 with Retry-After, a non-2xx answer
    without the JSON error body (a HEAD answer has no body), no answer at all."""
    if answer.status is None:
        return [f"no answer: {answer.error}"]
    found = []
    if answer.status >= 500 and not (answer.status == 503 and "Retry-After" in answer.headers):
        found.append(f"server error {answer.status}")
    if not 200 <= answer.status < 300 and method != "HEAD":
        try:
            body = json.loads(answer.body)
        except ValueError:
            body = None
        if not (
            isinstance(body, dict)
            and type(body.get("response_code")) is int
            and body["response_code"] < 0
            and isinstance(body.get("message"), str)
        ):
            found.append(f"{answer.status} without the JSON error body")
    return found


# ------------------------------------------------------------------ hostile strategies

LONE_SURROGATE_UTF8 = [b"\xed\xa0\x80", b"\xed\xbf\xbf"]  # U+D800, U+DFFF as if UTF-8
NOT_UTF8 = [b"\xff", b"\xc3\x28", b"\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]
CONTENT_TYPES = [
    None,
    b"application/json",
    b"application/json; charset=latin-1",
    b"text/plain",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=xyz",
    b"application/octet-stream",
    b"\xff\xfe/json",
    b"",
]


def _percent(raw: bytes) -> bytes:
    return b"".join(b"%%%02X" % byte for byte in raw)


_SAFE_TEXTS = [
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(["", "loopchain_default", "nope", "0x", "-1", "00", "1e3", " ", "%", "\x00"]),
    st.just("\udbff\udc00"),  # a surrogate pair: one valid character when escaped in JSON
]
_SURROGATES = st.sampled_from(["\ud800", "a\udfff", "\udc00\ud800"])
_ints = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.builds(lambda k: 10**k, st.integers(min_value=18, max_value=4000)),
    st.builds(lambda k: -(10**k), st.integers(min_value=18, max_value=400)),
)


def _json_values(texts: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | _ints | st.floats() | texts,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
        max_leaves=30,
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # ASCII; a lone surrogate becomes an escape, NaN stays


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"data":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


_query_values = st.one_of(
    st.one_of(*_SAFE_TEXTS, _SURROGATES).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from(LONE_SURROGATE_UTF8 + NOT_UTF8),
    st.binary(max_size=30),
    st.sampled_from([b"ab" * 32, b"0x" + b"ab" * 32, b"AB" * 32, b"ab" * 33, b"1" * 19, b"-1"]),
    st.builds(lambda k: b"9" * k, st.integers(min_value=1, max_value=5000)),
)


@st.composite
def _target(draw: st.DrawFn, malformed: bool, routes: list[str], query_names: list[str]) -> bytes:
    path = draw(
        st.one_of(
            *[st.sampled_from(routes).map(str.encode)] * 4,
            st.sampled_from(routes).map(lambda p: p.encode() + b"/"),
            st.sampled_from(
                [b"/", b"//api/v1/blocks", b"/api/v1/../v1/blocks", b"/api/v1/%2e%2e", b"/api/v2"]
            ),
            st.binary(min_size=1, max_size=20).map(lambda b: b"/api/v1/" + _percent(b)),
        )
    )
    pairs = draw(st.lists(st.tuples(st.sampled_from(query_names), _query_values), max_size=4))
    raw = malformed and draw(st.integers(0, 3)) == 0  # else percent-encoded
    parts = [name.encode() + b"=" + (value if raw else _percent(value)) for name, value in pairs]
    lengths = [2000, 8050] + ([8190, 8200, 20000, 100000] if malformed else [])
    huge = draw(st.sampled_from([0] * 12 + lengths))
    if huge:
        parts.append(b"channel=" + b"c" * huge)
    target = path + (b"?" + b"&".join(parts) if parts else b"")
    target = target.replace(b" ", b"%20").replace(b"\r", b"%0D").replace(b"\n", b"%0A")
    if not malformed and len(target) > MAX_TARGET:  # keep within aiohttp's request line
        target = target[:MAX_TARGET]
        cut = target.rfind(b"%", -2)
        target = target[:cut] if cut >= 0 else target
    return target


def _bodies(surrogates: bool) -> st.SearchStrategy[bytes]:
    texts = st.one_of(*_SAFE_TEXTS, *([_SURROGATES] if surrogates else []))
    values = _json_values(texts)
    fixed = _FIXED_BODIES + (_SURROGATE_BODIES if surrogates else [])
    return st.one_of(
        values.map(_dumps),
        st.dictionaries(texts, values, max_size=4).map(_dumps),
        st.dictionaries(st.sampled_from(["data", "channel", "x"]), values).map(_dumps),
        st.lists(
            st.dictionaries(st.sampled_from(["data", "channel", "x"]), values), max_size=6
        ).map(_dumps),
        st.sampled_from(fixed),
        _SHAPED_BODIES,
    )


_SURROGATE_BODIES = [b'{"data": "\\ud800"}', b'{"channel": "\\udfff"}', b'[{"x": "\\udc00"}]']
_FIXED_BODIES = [
    b"",
    b"   ",
    b"{",
    b'{"data": NaN}',
    b'{"data": Infinity}',
    b'{"data": 1.5}',
    b'{"data": "\xed\xa0\x80"}',  # a surrogate written as UTF-8: not UTF-8
    b'{"a": 1, "a": 2}',
    b'\xef\xbb\xbf{"data": 1}',
    b'{"channel": 7}',
    b'{"channel": null, "data": 1}',
    b"[]",
    b"[1]",
    b"[" + b",".join([b'{"d":1}'] * 501) + b"]",
    b"[" + b",".join([b'{"d":1}'] * 500) + b"]",
    b"null",
    b'"text"',
]
_SHAPED_BODIES = st.one_of(
    st.builds(
        _nested, st.sampled_from([10, 63, 64, 65, 100, 990, 1000, 5000, 100000]), st.just("object")
    ),
    st.builds(_nested, st.sampled_from([64, 65, 1000, 100000]), st.just("array")),
    st.builds(
        lambda k: b'{"data":' + b"7" * k + b"}", st.sampled_from([19, 20, 80, 81, 4300, 4301])
    ),
    st.binary(max_size=200),
    st.builds(
        lambda size: b'{"data":"' + b"x" * size + b'"}',
        st.sampled_from([200_000, 524_000, 600_000]),
    ),
    st.tuples(st.sampled_from(NOT_UTF8), st.sampled_from([b'{"data":"', b"["])).map(
        lambda parts: parts[1] + parts[0] + b'"}'
    ),
)
_BODIES = {surrogates: _bodies(surrogates) for surrogates in (False, True)}


@st.composite
def hostile_requests(
    draw: st.DrawFn,
    exclude: frozenset[str] = frozenset(),
    routes: list[str] = ROUTES,
    query_names: list[str] = QUERY_NAMES,
) -> RawRequest:
    """A request outside what the OpenAPI document promises to take (less the families in
    `exclude`) to one of `routes` (the peer's by default), with query arguments of
    `query_names`."""
    method = draw(st.sampled_from(["GET"] * 4 + ["POST"] * 4 + ["PUT", "DELETE", "PATCH", "HEAD"]))
    target = draw(_target("http" not in exclude, routes, query_names))
    headers: list[tuple[bytes, bytes]] = []
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    with_body = method in ("POST", "PUT", "PATCH") or draw(st.booleans())
    body = draw(_BODIES["surrogates" not in exclude]) if with_body else b""
    return RawRequest(method, target, headers, body, what="hostile")
