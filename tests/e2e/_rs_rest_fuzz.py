"""Requests for fuzzing the RadioStation's REST API (port + 1900): every route with its own method
and others, with and without the operator token, hostile values in the path, the query and each
field of a JSON body (wrong JSON types, odd Unicode, '..', NUL, very long), whole hostile bodies
and malformed HTTP from tests.e2e._rest_fuzz, and odd framing (chunked, wrong or absurd
Content-Length, compressed bodies); the checks an answer must pass beside _rest_fuzz.problems, and
a snapshot of what a request may change (files, configuration, channels, registered peers)."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from loopchain.configure import DEFAULTS
from loopchain.durable import is_write_in_progress
from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer
from tests.e2e._rest_fuzz import (
    _BODIES,
    CONTENT_TYPES,
    RawRequest,
    _json_values,
    _percent,
    _query_values,
    hostile_requests,
)
from tools.procs import http


@dataclass(frozen=True)
class Route:
    """One route of the RadioStation's REST app: its method and path, the query arguments and body
    fields it reads, and whether it changes state (then only the operator may call it)."""

    method: str
    path: str
    queries: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    write: bool = False


CONF_FIELDS = ("name", "value")
CERT_FIELDS = ("public_key", "tls_public_key_pem", "signature")
CHANNEL_FIELDS = ("channel", "score_package", "peers", "groups", "score_settings", "genesis_data")
MEMBER_FIELDS = ("channel", "peer_id", "peer_target", "weight", "group_id", "role")
ROUTES = [
    Route("GET", "/api/v1/peer/list", ("channel",)),
    Route("GET", "/api/v1/peer/leader", ("channel",)),
    Route("GET", "/api/v1/peer/status", ("peer_id", "group_id", "channel")),
    Route("GET", "/api/v1/peer/status-list", ("channel",)),
    Route("GET", "/api/v1/conf", ("name",)),
    Route("POST", "/api/v1/conf", fields=CONF_FIELDS, write=True),
    Route("GET", "/api/v1/cert/list/ca"),
    Route("GET", "/api/v1/cert/list/peer"),
    Route("GET", "/api/v1/cert/issue/ca"),
    Route("POST", "/api/v1/cert/issue/ca", write=True),
    Route("POST", "/api/v1/cert/issue/peer", fields=CERT_FIELDS, write=True),
    Route("DELETE", "/api/v1/peer", ("peer_id",), write=True),
    Route("GET", "/metrics"),
    Route("GET", "/api/v1/channel/data"),
    Route("POST", "/api/v1/channel", fields=CHANNEL_FIELDS, write=True),
    Route("POST", "/api/v1/channel/peer", fields=MEMBER_FIELDS, write=True),
    Route("DELETE", "/api/v1/channel/peer", ("channel", "peer_id", "peer_target"), write=True),
]
BY_KEY = {(r.method, r.path): r for r in ROUTES}
PATHS = sorted({r.path for r in ROUTES})
QUERY_NAMES = sorted({q for r in ROUTES for q in r.queries})
MALFORMED_HTTP = "malformed HTTP request"  # what HTTP itself refuses, before any route
MAX_MESSAGE_CHARS = 1000  # a precise message names the problem; it does not echo 500 KB back
# a refusal of one hostile field names it, or one of these that the field is checked with
RELATED = {
    "public_key": ("signature",),
    "tls_public_key_pem": ("signature",),
    "value": (),  # conf: the message names the key (checked apart)
    "peers": ("peer_id", "peer_target", "weight", "group_id", "role", "groups"),
    "groups": ("peers",),
    "channel": ("channel",),
}


@dataclass
class Known:
    """What the network under fuzz holds, drawn among hostile values so that requests reach past
    the first checks: its channel, its peer, the operator token, a key to ask certificates for."""

    channel: str
    peer_id: str
    peer_target: str
    token: str
    rs_dir: Path  # the RadioStation's storage folder (registry, token, key, CA)
    channel_file: Path
    cert_signer: Signer = field(default_factory=lambda: Signer.generate())
    cert_body: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tls = pki.generate_tls_key().public_key()
        self.cert_body = {
            "public_key": self.cert_signer.public_key.hex(),
            "tls_public_key_pem": pki.public_key_to_pem(tls).decode(),
            "signature": self.cert_signer.sign(
                pki.cert_request_digest(self.cert_signer.public_key, tls)
            ).hex(),
        }


@dataclass
class RsRequest:
    """A drawn request and what the fuzz knows of it: the route it names exactly (None when its
    method or path is no route's), whether it carries the operator's token as the RadioStation
    reads it, the body fields given hostile values, and whether it is framed and encoded as a
    plain JSON request (else HTTP itself may refuse it first)."""

    raw: RawRequest
    route: Route | None
    authorized: bool
    mutated: tuple[str, ...] = ()
    body: dict[str, Any] | None = None  # the JSON object sent, when the body is one
    plain: bool = True


# ------------------------------------------------------------------ hostile values

ODD_TEXTS = [
    "",
    " ",
    "..",
    "../..",
    "../../../etc/passwd",
    "/",
    "\x00",
    "a\x00b",
    "\u202eevil",  # right-to-left override
    "\u200b",  # zero-width space
    "e\u0301",  # a combining accent
    "\ufeff",
    "\U0001f600",
    "ＬＯＯＰＣＨＡＩＮ",  # fullwidth
    "loopchain_default ",
    "LOOPCHAIN_DEFAULT",
    "%00",
    "%2e%2e",
    "\r\nX-Injected: 1",
    "hx" + "0" * 40,
    "hx" + "A" * 40,
    "hx" + "0" * 39,
    "0x" + "ab" * 33,
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "unix:/tmp/x:1",
    "dns:///x:1",
    "[::1]:7100",
    "a:²",
    "x" * 65,
    "x" * 10_000,
    "ü" * 100_000,
]
_texts = st.one_of(st.sampled_from(ODD_TEXTS), st.text(max_size=30))
_VALUES = _json_values(_texts)
_SURROGATE_VALUES = st.sampled_from(["\ud800", "a\udfff", "\udc00\ud800"])
EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63, 2**64, 10**79, 10**80, 10**300, 10**999]
_edge_ints = st.one_of(st.sampled_from(EDGE_INTS), st.sampled_from([True, False, 1.0, 1.5, 1e308]))
_entry_edges = st.fixed_dictionaries(
    {},
    optional={
        "peer_id": st.sampled_from(["hx" + "4" * 40, "", "hx", *ODD_TEXTS[-3:]]),
        "peer_target": st.sampled_from(["127.0.0.1:7100", "[::1]:1", *ODD_TEXTS[-3:]]),
        "weight": _edge_ints,
        "group_id": st.sampled_from(["g", "x" * 257, *ODD_TEXTS]),
        "role": st.sampled_from(["auditor", "Validator", "", "observer"]),
    },
)
# values of the right JSON type that are still hostile, by field name
FIELD_EDGES: dict[str, st.SearchStrategy[Any]] = {
    "weight": _edge_ints,
    "value": st.one_of(_edge_ints, st.sampled_from(ODD_TEXTS)),
    "peers": st.lists(_entry_edges, min_size=1, max_size=3),
    "groups": st.dictionaries(
        st.sampled_from(["g", "", "x" * 300, "\x00"]),
        st.fixed_dictionaries({"weight": _edge_ints}),
        max_size=2,
    ),
    "score_settings": st.sampled_from(
        [{"id": "x"}, {"a": 10**80}, {"a": 1.5}, {"a": "x" * 17000}, {"": {"": {}}}]
    ),
    "genesis_data": st.sampled_from(
        [
            {"accounts": []},
            {"accounts": [{"name": "a", "address": "hx" + "0" * 40, "balance": "0x" + "f" * 65}]},
            {"accounts": [{"name": "", "address": "hx" + "0" * 40, "balance": "0x1"}]},
            {"accounts": [{"name": "a", "address": "hx" + "0" * 40, "balance": "1"}]},
            {"message": "x" * 100_000},
        ]
    ),
}
_TEXT_EDGES = st.sampled_from(ODD_TEXTS)


def _one_in(n: int, draw: st.DrawFn) -> bool:
    """True about once in `n` draws (hypothesis draws small integers far more often than others,
    so `integers(0, n - 1) == 0` would be true much more often)."""
    return bool(draw(st.sampled_from([False] * (n - 1) + [True])))


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(bytes.hex)


FUZZ_PEER_IDS = ["hx" + digit * 40 for digit in "123"]  # listed and unlisted again by the fuzz


def _peer_ids(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(known.peer_id),
        st.sampled_from(FUZZ_PEER_IDS),
        st.uuids().map(lambda u: "hx" + u.hex + u.hex[:8]),  # hardly ever drawn twice
    )


def _channels(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(known.channel),
        st.integers(0, 40).map(lambda n: f"fuzz_{n}"),
        st.sampled_from(["a" * 64, "a" * 65, "-x", ".x", "x.y-z_0"]),
    )


def _valid_value(name: str) -> st.SearchStrategy[Any]:
    """Values of the type of configuration key `name` (not always in its range)."""
    default = DEFAULTS.get(name)
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.one_of(st.just(default), st.integers(-1, 10**6))
    if isinstance(default, float):
        return st.one_of(st.just(default), st.floats(-1, 1e5, allow_nan=False))
    if isinstance(default, str):
        return st.one_of(st.just(default), _texts)
    return _VALUES


# what a body of the right shape may still carry: packages no peer can load, weights no
# validator set can hold
PACKAGES = ["loopchain/default", "sample/token", "../x", "a/b/c", "x" * 300 + "/y", "a\x00/b"]
WEIGHTS = [1, 2**31 - 1, 2**31, 10**90, 10**90]


@st.composite
def _valid_body(draw: st.DrawFn, route: Route, known: Known, edgy: bool = False) -> dict[str, Any]:
    """A body that the route takes (or refuses only for a reason of state, e.g. a peer listed
    already); with `edgy`, its package or weight may be one of PACKAGES or WEIGHTS."""
    packages, weights = (PACKAGES, WEIGHTS) if edgy else (PACKAGES[:2], WEIGHTS[:2])
    if route.fields == CONF_FIELDS:
        name = draw(st.sampled_from(sorted(DEFAULTS)))
        return {"name": name, "value": draw(_valid_value(name))}
    if route.fields == CERT_FIELDS:
        return dict(known.cert_body)
    if route.fields == CHANNEL_FIELDS:  # a new channel (a name taken is refused, and said so)
        body: dict[str, Any] = {"channel": draw(st.uuids().map(lambda u: f"fuzz_{u.hex[:12]}"))}
        if draw(st.booleans()):
            body["score_package"] = draw(st.sampled_from(packages))
        if draw(st.booleans()):
            body["peers"] = [{"peer_id": draw(_peer_ids(known))}]
        return body
    entry: dict[str, Any] = {"channel": draw(st.sampled_from([known.channel] * 3 + ["fuzz_0"]))}
    live = st.just(known.peer_id)  # its weight and role reach the validator set peers take
    entry["peer_id"] = draw(st.one_of(live, live, _peer_ids(known)))
    if draw(st.booleans()):
        entry["peer_target"] = f"127.0.0.1:{draw(st.integers(1, 65535))}"
    if not _one_in(4, draw):
        entry["weight"] = draw(st.sampled_from(weights))
    if draw(st.booleans()):
        entry["role"] = draw(st.sampled_from(["validator", "auditor"]))
    return entry


@st.composite
def _built_body(
    draw: st.DrawFn, route: Route, known: Known, surrogates: bool
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A valid body with 0-2 of its fields given hostile values, one left out at times, an unknown
    field at times; (the body, the fields made hostile)."""
    body = draw(_valid_body(route, known))
    values = st.one_of(_VALUES, _SURROGATE_VALUES) if surrogates else _VALUES
    count = draw(st.sampled_from([0, 1, 1, 1, 2]))
    mutated = draw(
        st.lists(st.sampled_from(route.fields), min_size=count, max_size=count, unique=True)
    )
    for name in mutated:
        edges = FIELD_EDGES.get(name, _TEXT_EDGES)
        body[name] = draw(st.one_of(values, edges, edges))
    if body and _one_in(6, draw):
        gone = draw(st.sampled_from(sorted(body)))
        del body[gone]
        mutated.append(gone)
    if _one_in(8, draw):
        body[draw(_texts)] = draw(values)
        mutated.append("?")  # an unknown field: which one the message names is not checked
    return body, tuple(mutated)


def _query(draw: st.DrawFn, route: Route, known: Known) -> bytes:
    """Query arguments of the route with real and hostile values (percent-encoded)."""
    pairs: list[tuple[str, bytes]] = []
    for name in route.queries:
        if _one_in(4, draw):
            continue
        real = {
            "channel": known.channel,
            "peer_id": draw(_peer_ids(known)),
            "peer_target": known.peer_target,
            "name": draw(st.sampled_from(sorted(DEFAULTS))),
            "group_id": "",
        }[name]
        value = draw(
            st.one_of(
                st.just(real.encode()),
                st.sampled_from(ODD_TEXTS[:-1]).map(lambda t: t.encode("utf-8", "surrogatepass")),
                _query_values,
            )
        )
        pairs.append((name, value))
    if _one_in(10, draw) and pairs:  # an argument twice
        pairs.append((pairs[0][0], draw(_query_values)))
    return b"&".join(name.encode() + b"=" + _percent(value) for name, value in pairs)


_PATH_VARIANTS = [
    lambda p: p + b"/",
    lambda p: b"/" + p,
    lambda p: p.replace(b"/v1/", b"/v1/../v1/"),
    lambda p: p.replace(b"/v1/", b"/v1/%2e%2e/v1/"),
    lambda p: p + b"%00",
    lambda p: p + b"/%C3%BC",
    lambda p: p.upper(),
    lambda p: p + b"/" + b"a" * 7000,
    lambda p: p.replace(b"/api/", b"/api%2F"),
]


@st.composite
def _auth(draw: st.DrawFn, known: Known) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Authorization header(s) and whether the RadioStation should take them as the operator's."""
    token = known.token.encode()
    kind = draw(st.sampled_from(["token"] * 6 + ["none"] * 2 + ["wrong", "odd"]))
    if kind == "token":
        return [(b"Authorization", b"Bearer " + token)], True
    if kind == "none":
        return [], False
    if kind == "wrong":
        last = b"B" if token.endswith(b"A") else b"A"
        return [(b"Authorization", b"Bearer " + token[:-1] + last)], False
    odd: list[tuple[list[tuple[bytes, bytes]], bool]] = [
        ([(b"Authorization", b"bearer " + token)], True),
        ([(b"Authorization", b"Bearer   " + token + b"  ")], True),
        ([(b"Authorization", b"Basic " + token)], False),
        ([(b"Authorization", b"Bearer")], False),
        ([(b"Authorization", b"Bearer " + token + b"\xff")], False),
        ([(b"Authorization", b"Bearer " + token), (b"Authorization", b"Bearer x")], True),
        ([(b"Authorization", b"Bearer x"), (b"Authorization", b"Bearer " + token)], False),
        ([(b"Authorization", b"Bearer " + b"x" * 9000)], False),
        ([(b"authorization", b"Bearer " + token)], True),
    ]
    return draw(st.sampled_from(odd))


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@st.composite
def _framing(draw: st.DrawFn, body: bytes) -> tuple[list[bytes] | None, bytes, list[bytes], bool]:
    """(framing lines, the body as sent, extra headers, whether the framing is plain)."""
    kind = draw(
        st.sampled_from(
            ["length"] * 24
            + ["chunked", "chunked", "bad-chunks", "absurd-length", "both", "none", "short"]
            + ["gzip", "bad-gzip", "bad-deflate", "br"]
        )
    )
    if kind == "length":
        return None, body, [], True
    if kind == "chunked":
        return [b"Transfer-Encoding: chunked"], _chunked(body, draw(st.integers(1, 64))), [], True
    if kind == "bad-chunks":
        raw = draw(st.sampled_from([b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nab\r\n0\r\n\r\n", b"-1\r\n"]))
        return [b"Transfer-Encoding: chunked"], raw, [], False
    if kind == "absurd-length":
        length = draw(st.sampled_from([b"-1", b"abc", b"1e3", b"9" * 30, b"2147483648", b"0x10"]))
        return [b"Content-Length: " + length], body, [], False
    if kind == "both":
        framing = [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
        return framing, body, [], False
    if kind == "none":
        return [], body, [], False
    if kind == "short":  # announces more than it sends (and keeps the connection open)
        return [b"Content-Length: %d" % (len(body) + 100)], body, [], False
    if kind == "gzip":
        return None, gzip.compress(body), [b"gzip"], True
    if kind == "bad-gzip":
        return None, body[:40] or b"x", [b"gzip"], False
    if kind == "bad-deflate":
        return None, zlib.compress(body)[:-5] + b"junk", [b"deflate"], False
    return None, body, [b"br"], False


@st.composite
def rs_requests(draw: st.DrawFn, known: Known, exclude: frozenset[str]) -> RsRequest:
    """A request to the RadioStation's REST port (see the module doc)."""
    surrogates = "surrogates" not in exclude
    if _one_in(6, draw):  # _rest_fuzz's hostile requests, aimed at these routes
        raw = draw(hostile_requests(exclude, PATHS, QUERY_NAMES))
        headers, authorized = draw(_auth(known))
        raw.headers += headers
        route = BY_KEY.get((raw.method, raw.target.partition(b"?")[0].decode("latin-1")))
        raw.what = "hostile"
        return RsRequest(raw, route, authorized, plain=False)
    route = draw(st.sampled_from(ROUTES))
    if route.write and route.fields and _one_in(3, draw):
        return draw(_clean_write(route, known))
    method = route.method
    if _one_in(5, draw):
        others = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "FOO", "get", "TRACE"]
        method = draw(st.sampled_from(others))
    path = route.path.encode()
    if _one_in(10, draw):
        path = draw(st.sampled_from(_PATH_VARIANTS))(path)
    query = _query(draw, route, known)
    target = path + (b"?" + query if query else b"")
    headers, authorized = draw(_auth(known))
    content_type = draw(st.sampled_from([b"application/json"] * 6 + CONTENT_TYPES))
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    body: dict[str, Any] | None = None
    mutated: tuple[str, ...] = ()
    if route.fields and not _one_in(5, draw):
        body, mutated = draw(_built_body(route, known, surrogates))
        raw_body = json.dumps(body).encode()
    elif route.fields or _one_in(6, draw):
        raw_body = draw(_BODIES[surrogates])
    else:
        raw_body = b""
    framing, sent, encoding, plain = draw(_framing(raw_body))
    headers += [(b"Content-Encoding", e) for e in encoding]
    exact = method == route.method and path == route.path.encode()
    raw = RawRequest(method, target, headers, sent, "built", framing)
    return RsRequest(raw, route if exact else None, authorized, mutated, body, plain)


@st.composite
def _clean_write(draw: st.DrawFn, route: Route, known: Known) -> RsRequest:
    """The operator's write as its route takes it, its body of the right shape (whose values may
    still be ones no channel should hold: PACKAGES, WEIGHTS): most such writes succeed, and what
    they made is checked."""
    body = draw(_valid_body(route, known, edgy=True))
    headers = [(b"Authorization", f"Bearer {known.token}".encode())]
    headers.append((b"Content-Type", b"application/json"))
    raw = RawRequest(route.method, route.path.encode(), headers, json.dumps(body).encode(), "clean")
    return RsRequest(raw, route, True, (), body, True)


# ------------------------------------------------------------------ what a request may change


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        return f"unreadable: {exc}"


def _get(url: str) -> Any:
    status, body = http("GET", url, timeout=20)
    return body if status == 200 else {"status": status, "body": body}


def snapshot(rest: str, known: Known) -> dict[str, Any]:
    """What the RadioStation holds and serves that a request could change: its files (registry,
    token, key, CA and certificates), the channel file, the configuration, the channels and the
    registered peers. A write under way (its temporary file) is not state: the RadioStation's
    own writes (a peer registering again) may be caught midway."""
    files = {
        str(p.relative_to(known.rs_dir)): _digest(p)
        for p in sorted(known.rs_dir.rglob("*"))
        if p.is_file() and not is_write_in_progress(p.name)
    }
    files["channel_manage_data.json"] = (
        _digest(known.channel_file) if known.channel_file.exists() else "absent"
    )
    listed = _get(f"{rest}/api/v1/peer/list")
    peers = (
        sorted(
            (p["peer_id"], p["target"], p["order"], p["group_id"])
            for p in listed["data"]["registered_peer_list"]
        )
        if "data" in listed
        else listed
    )
    return {
        "files": files,
        "conf": _get(f"{rest}/api/v1/conf"),
        "channels": _get(f"{rest}/api/v1/channel/data"),
        "peers": peers,
    }


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two snapshots, named briefly."""
    found = []
    for key in ("files", "conf", "channels", "peers"):
        if before[key] == after[key]:
            continue
        if isinstance(before[key], dict) and isinstance(after[key], dict):
            names = sorted(
                k
                for k in set(before[key]) | set(after[key])
                if before[key].get(k) != after[key].get(k)
            )
            found.append(f"{key}: {names[:6]}")
        else:
            found.append(f"{key}")
    if before["conf"] != after["conf"] and "data" in before["conf"] and "data" in after["conf"]:
        old = {e["name"]: e["value"] for e in before["conf"]["data"]}
        new = {e["name"]: e["value"] for e in after["conf"]["data"]}
        found.append(f"conf keys {sorted(k for k in old if old[k] != new.get(k))[:6]}")
    return found


# ------------------------------------------------------------------ checks of an answer


def message_of(body: bytes) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return ""
    return value.get("message", "") if isinstance(value, dict) else ""


def refusal_problems(request: RsRequest, status: int, body: bytes) -> list[str]:
    """What is wrong with an answer beyond _rest_fuzz.problems: a message that echoes pages of
    input; a plain write without the token answered other than 401/403; a refusal of a plain write
    with it, one field of its body hostile, that does not name that field."""
    route = request.route
    found: list[str] = []
    message = message_of(body)
    if len(message) > MAX_MESSAGE_CHARS:
        found.append(f"a message of {len(message)} characters")
    if route is None or not route.write or not request.plain:
        return found
    if not request.authorized:
        if status not in (401, 403) and not message_of(body).startswith(MALFORMED_HTTP):
            found.append(f"a write without the operator token answered {status}")
        return found
    if status < 400 or status >= 500 or message.startswith(MALFORMED_HTTP):
        return found
    # refusals of the whole body (not JSON, a lone surrogate, a number too long, anything
    # else than an object) and of what the state forbids come before any field is looked at
    whole = message.startswith(("request body", "the request body")) or "exists already" in message
    named = request.mutated
    if len(named) == 1 and named[0] != "?" and request.body is not None and status == 400:
        name = named[0]
        words = (name, *RELATED.get(name, ()))
        if name == "value":
            words = (str(request.body.get("name")),)
        value = request.body.get(name)
        if isinstance(value, str) and value:  # or it shows the value itself
            words = (*words, repr(value)[1:20])
        if not whole and not any(word in message for word in words):
            found.append(f"a refusal of hostile field {name!r} that does not name it")
    return found
