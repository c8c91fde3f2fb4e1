"""Requests for fuzzing the gRPC services every outside caller reaches (the peer's PeerService,
the RadioStation's service): each method taken from the protobuf service descriptors, its request
built field by field from hostile values (chosen by the field's type and name), or raw bytes that
are not its message; a generic client that sends bytes exactly as drawn; the check every answer
must pass."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor as d
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from loopchain.protos import loopchain_pb2 as pb
from loopchain.types.crypto import Signer
from loopchain.types.icon_tx import make_params, sign_params
from loopchain.types.peer import identify_digest
from loopchain.types.transaction import Transaction
from tests.e2e._rest_fuzz import _BODIES
from tests.integration._rs_helpers import connect_request, heartbeat_request
from tests.unit.test_decoder_fuzz import (
    BLOCK,
    COMPLAINT,
    QC,
    TX,
    V3_TX,
    VALIDATORS,
    VOTE,
    _paths,
    _replace,
    hostile_values,
)

# the PeerService methods only other peers call: with TLS on, served only to a caller with a
# member's certificate, never on the peer's plain loopback port (kept for its REST proxy)
PEER_TO_PEER = frozenset({"AddTxBatch", "Deliver", "AddTxStream", "DeliverStream", "GetBlockRange"})
# What a call may end with besides OK: a precise refusal. UNIMPLEMENTED is expected of no method
# (every one of the descriptors is served); DEADLINE_EXCEEDED is a hang; UNKNOWN, INTERNAL and
# the rest are faults.
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
# gRPC's words when the caller could not read how its call ended (a trailer past the client's
# metadata limit: a refusal that quoted a long value in full); the refusal is lost to it
LOST_ANSWER = "Stream removed"
MAX_MESSAGE = 64 << 20  # the fuzzing client sends and takes messages up to this size
SHOW = 300  # characters of a request shown in a reproducer


def methods(service: str) -> list[d.MethodDescriptor]:
    """Every method of `service` (a service of proto/loopchain.proto), in declaration order."""
    return list(pb.DESCRIPTOR.services_by_name[service].methods)


def path_of(method: d.MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def message_class(descriptor: d.Descriptor) -> type[Message]:
    return GetMessageClass(descriptor)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ what the network knows


@dataclass
class Known:
    """Real names and values of the network under fuzz, drawn among hostile ones so that
    requests also reach past the first checks: its channels, a peer's id, target and (a thief's
    copy of) its key, a transaction and blocks it holds, and with TLS the key of the member whose
    certificate the fuzz calls with (an insider: registrations and heartbeats it signs are its
    own)."""

    channels: list[str]
    peer_id: str
    peer_target: str
    peer_signer: Signer
    rs_target: str
    tx_hashes: list[str] = field(default_factory=list)
    block_hashes: list[str] = field(default_factory=list)
    member_signer: Signer | None = None

    @property
    def signers(self) -> list[Signer]:
        """The real keys the fuzz holds: the peer's (a thief's copy), and the insider's own."""
        return [self.peer_signer, *([self.member_signer] if self.member_signer else [])]


# ------------------------------------------------------------------ hostile values by field

INT_BOUNDS = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [low, low + 1, -1, 0, 1, 2, 499, 500, 501, 1000, 1001, high - 1, high]
    now_us = int(time.time() * 1e6)
    edges += [now_us, now_us + 10**9, -now_us] if high > 2**40 else []
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]),
        st.integers(low, high),
        st.integers(-3, 100).filter(lambda n: low <= n <= high),
    )


# Unicode protobuf strings carry (valid UTF-8: a lone surrogate cannot be set on a str field and
# is sent as raw bytes instead, see raw_requests): controls, NUL, bidi overrides, BOM, combining
# marks, noncharacters, astral planes, a escaped surrogate in text.
ODD_TEXTS = [
    "",
    " ",
    "\x00",
    "\x00\x01\x7f",
    "\u202e\u2066abc",
    "\ufeff",
    "e\u0301\u0301\u0301",
    "\ufffe\uffff",
    "\U0010ffff",
    "\U0001f600" * 8,
    "\\ud800",
    "%00",
    "../../etc/passwd",
    "a" * 256,
    "a" * 257,
    "\n\r\t",
    "null",
]
_texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ODD_TEXTS),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
    st.builds(lambda n: "x" * n, st.sampled_from([1000, 65_536, 200_000])),
)


def _hex(raw: bytes) -> str:
    return raw.hex()


def hex_ids(known: list[str]) -> st.SearchStrategy[str]:
    """Hex ids as a client writes them: real ones, random ones, and ones nearly right."""
    random32 = st.binary(min_size=32, max_size=32).map(_hex)
    reals = st.sampled_from(known) if known else random32
    return st.one_of(
        reals,
        reals.map(lambda h: "0x" + h),
        reals.map(str.upper),
        random32,
        random32.map(lambda h: "0x" + h),
        st.binary(min_size=31, max_size=33).map(_hex),
        random32.map(lambda h: h[:-1]),
        random32.map(lambda h: h + "0"),
        st.sampled_from(
            ["", "0x", "zz" * 32, "0" * 64, "f" * 64, "0x" + "g" * 64, "hx" + "0" * 62]
        ),
        _texts,
    )


def addresses(known: Known) -> st.SearchStrategy[str]:
    """Peer ids and account addresses: real, random, nearly right."""
    random20 = st.binary(min_size=20, max_size=20).map(_hex)
    return st.one_of(
        st.just(known.peer_id),
        random20.map(lambda h: "hx" + h),
        random20.map(lambda h: "cx" + h),
        random20.map(lambda h: "HX" + h.upper()),
        random20.map(lambda h: "0x" + h),
        random20.map(lambda h: "hx" + h[:-1]),
        st.sampled_from(["", "hx", "hx" + "0" * 40, "cx" + "0" * 40]),
        _texts,
    )


# ports as text: digits of other scripts ("١٢" is 12 to int(), "²" is a digit to str.isdigit but
# no number to int()), signs, spaces, leading zeros, out of range
_ports = st.one_of(
    st.sampled_from(["\u00b2", "\u0661\u0662", "\uff11", "0", "65536", "+1", " 1", "00080", ""]),
    _texts,
)


def targets(known: Known) -> st.SearchStrategy[str]:
    """host:port targets: real ones, closed ports, odd hosts and gRPC target schemes."""
    return st.one_of(
        st.sampled_from([known.peer_target, known.rs_target]),
        st.integers(1, 65535).map(lambda p: f"127.0.0.1:{p}"),
        st.sampled_from(
            [
                "",
                "127.0.0.1",
                "127.0.0.1:0",
                "127.0.0.1:65536",
                "127.0.0.1:-1",
                ":7100",
                "[::1]:1",
                "localhost:1",
                "unix:/nonexistent:1",
                "unix-abstract:x:1",
                "dns:///x.invalid:1",
                "ipv4:1.2.3.4,5.6.7.8:1",
                "ipv6:[::1:1",
                "a\x00b:1",
                " :1",
                "%:1",
                "\u202e:1",
                "x.invalid:1",
                "a" * 250 + ":1",
            ]
        ),
        _texts.map(lambda t: t + ":1"),
        st.tuples(st.sampled_from(["127.0.0.1", "localhost", "a"]), _ports).map(":".join),
    )


def channels(known: Known) -> st.SearchStrategy[str]:
    """Channel names: served ones (and "", the default), unknown ones, hostile text."""
    return st.one_of(
        st.sampled_from(["", *known.channels]),
        st.sampled_from(["", *known.channels]),
        st.sampled_from(["nope", "loopchain_default ", "LOOPCHAIN_DEFAULT", "../x", "a" * 300]),
        _texts,
    )


def _dumps(value: Any) -> str:
    """JSON text of `value` (lone surrogates escaped, as JSON allows them), or a deep nesting
    where json cannot write it."""
    try:
        return json.dumps(value)
    except (RecursionError, ValueError):
        return "[" * 5000 + "]" * 5000


MALFORMED_JSON = [
    "",
    " ",
    "{",
    '{"a": 1,}',
    '{"a": 1, "a": 2}',
    "NaN",
    '{"data": Infinity}',
    '{"data": 1e999}',
    '{"data": 1.5}',
    "\ufeff{}",
    '{"data": "\\ud800"}',
    '{"data": "\\udc00\\ud800"}',
    "[" * 100_000,
    '{"data":' + "9" * 5000 + "}",
    "null",
    "[]",
    '"text"',
    "{}",
    '{"method": "icx_getBalance", "params": {"address": "hx' + "0" * 40 + '"}}',
    '{"method": "' + "m" * 1000 + '", "params": {}}',
]


def _hostile_node(valid: Any) -> st.SearchStrategy[Any]:
    """`valid` (a JSON value) with one node replaced by a hostile value."""
    return st.tuples(st.sampled_from(_paths(valid)), hostile_values).map(
        lambda pair: _replace(valid, pair[0], pair[1])
    )


def _icon_params(signer: Signer, nid: int) -> dict[str, Any]:
    params = make_params(
        sender=signer.address,
        to="hx" + "1" * 40,
        step_limit=100_000,
        timestamp_us=int(time.time() * 1e6),
        nid=nid,
        value=1,
        data_type="message",
        data="0x6869",
    )
    return sign_params(params, signer)


def json_texts(name: str, known: Known) -> st.SearchStrategy[str]:
    """Text of a *_json field: valid-looking JSON of its kind, with a node made hostile, or
    JSON that is malformed, or the REST fuzz's hostile bodies (as text)."""
    signer = Signer(b"\x11" * 32)
    if name == "params_json":  # a v3 transaction (CreateIconTx) or a query (Query)
        valid: list[Any] = [_icon_params(signer, 1), _icon_params(signer, 3)]
        valid.append({"method": "icx_getBalance", "params": {"address": signer.address}})
    else:  # a client's v1 transaction
        valid = [{"data": "x"}, {"data": {"method": "put", "params": {"k": "v"}}}]
    return st.one_of(
        st.sampled_from(valid).map(_dumps),
        st.sampled_from(valid).flatmap(_hostile_node).map(_dumps),
        hostile_values.map(_dumps),
        st.sampled_from(MALFORMED_JSON),
        _BODIES[True].map(lambda raw: raw.decode("utf-8", "replace")),
        _texts,
    )


def _domain_bytes(name: str, known: Known) -> list[bytes]:
    """Valid encodings of what a bytes field named `name` carries (some for the real channel)."""
    channel = known.channels[0]
    signer = Signer(b"\x22" * 32)
    own_tx = Transaction.create_v1(channel, {"fuzz": 1}, int(time.time() * 1e6), signer)
    return {
        "txs": [TX.encode(), V3_TX.encode(), own_tx.encode()],
        "proposal": [BLOCK.encode()],
        "vote": [VOTE.encode()],
        "certificate": [QC.encode()],
        "complaint": [COMPLAINT.encode()],
        "validator_set": [VALIDATORS.encode()],
    }.get(name, [TX.encode(), VOTE.encode()])


def _changed_byte(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
        lambda p: valid[: p[0]] + bytes([p[1]]) + valid[p[0] + 1 :]
    )


def _json_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    value = json.loads(valid)
    return _hostile_node(value).map(
        lambda v: _dumps(v).encode("utf-8", "surrogatepass")  # compact or not: refused
    )


def bytes_values(name: str, known: Known) -> st.SearchStrategy[bytes]:
    """Bytes of a field named `name`: its domain encodings (valid, with a node made hostile, a
    byte changed), keys and signatures (real, random, wrong lengths), random bytes, big ones."""
    common = [
        st.binary(max_size=200),
        st.sampled_from([b"", b"\x00", b"{}", b"[]", b"null", b"\xff" * 64]),
        st.sampled_from([1 << 16, (1 << 20) + 1]).map(lambda n: b"\x7b" * n),
    ]
    if name == "challenge":
        specific = [st.binary(min_size=32, max_size=32), st.binary(min_size=31, max_size=33)]
    elif name == "public_key":
        keys = [signer.public_key for signer in known.signers] + [Signer(b"\x33" * 32).public_key]
        specific = [st.sampled_from(keys), st.binary(min_size=33, max_size=33)]
        specific.append(st.binary(min_size=65, max_size=65).map(lambda b: b"\x04" + b[1:]))
    elif name == "signature":
        real = known.peer_signer.sign(identify_digest(b"\x00" * 32))
        specific = [st.just(real), st.binary(min_size=65, max_size=65), _changed_byte(real)]
    else:
        valids = _domain_bytes(name, known)
        specific = [st.sampled_from(valids)] * 2
        specific += [st.sampled_from(valids).flatmap(_json_bytes)] * 2
        specific += [st.sampled_from(valids).flatmap(_changed_byte)]
    return st.one_of(*specific, *common)


def field_values(
    message: d.Descriptor, f: d.FieldDescriptor, known: Known
) -> st.SearchStrategy[Any]:
    """Hostile values of one (non-repeated) field, chosen by its type and name."""
    kind = f.type
    if kind in INT_BOUNDS:
        return _ints(*INT_BOUNDS[kind])
    if kind == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == d.FieldDescriptor.TYPE_FLOAT else 64)
    if kind == d.FieldDescriptor.TYPE_ENUM:
        return st.integers(-(2**31), 2**31 - 1)
    if kind == d.FieldDescriptor.TYPE_BYTES:
        return bytes_values(f.name, known)
    if kind == d.FieldDescriptor.TYPE_MESSAGE:
        return messages(f.message_type, known)
    return string_values(f.name, known)


def string_values(name: str, known: Known) -> st.SearchStrategy[str]:
    """Hostile values of a string field, chosen by its name."""
    if name == "channel":
        return channels(known)
    if name.endswith("_json"):
        return json_texts(name, known)
    if name in ("tx_hash", "block_hash"):
        return hex_ids(known.tx_hashes if name == "tx_hash" else known.block_hashes)
    if name in ("address", "peer_id", "sender"):
        return addresses(known)
    if name == "target":
        return targets(known)
    return _texts


@st.composite
def _repeated(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> list[Any]:
    """A few values; now and then one value many times (past a per-call bound of 1,000)."""
    if draw(st.integers(0, 15)) == 0:
        return [draw(values)] * draw(st.sampled_from([1000, 1001]))
    return draw(st.lists(values, max_size=4))


@st.composite
def messages(draw: st.DrawFn, message: d.Descriptor, known: Known) -> Message:
    """A `message` with each field left unset or set to a hostile value (a oneof keeps the last
    member set)."""
    made = message_class(message)()
    for f in message.fields:
        if not draw(st.booleans()):
            continue
        values = field_values(message, f, known)
        if f.is_repeated:
            getattr(made, f.name).extend(draw(_repeated(values)))
        elif f.type == d.FieldDescriptor.TYPE_MESSAGE:
            getattr(made, f.name).CopyFrom(draw(values))
        else:
            setattr(made, f.name, draw(values))
    return made


# ------------------------------------------------------------------ signed requests

_FRESH = [Signer(bytes([i + 40]) * 32) for i in range(3)]


@st.composite
def signed_connect(draw: st.DrawFn, known: Known) -> pb.ConnectPeerRequest:
    """A registration signed by the key of its peer id (a fresh one, the real peer's: a thief's
    copy, or with TLS the insider's own) over hostile targets and group ids: it reaches the
    RadioStation's probe of the target, and its registry."""
    signer = draw(st.sampled_from([*known.signers, *_FRESH]))
    target = draw(targets(known))
    group_id = draw(st.one_of(st.just(""), _texts))
    if len(target) > 256 or len(group_id) > 256:
        target, group_id = target[:256], group_id[:256]
    return connect_request(signer, target, group_id)


@st.composite
def signed_heartbeat(draw: st.DrawFn, known: Known) -> pb.HeartbeatRequest:
    """A heartbeat signed by the key of its peer id (the real peer's, a thief's copy, the
    insider's own, or a fresh one) with hostile peer types, heights and timestamps (now and then
    its clock's now)."""
    signer = draw(st.sampled_from([*known.signers, *known.signers, *_FRESH]))
    channel = draw(st.sampled_from(["", *known.channels]))
    peer_type = draw(_ints(*INT_BOUNDS[d.FieldDescriptor.TYPE_INT32]))
    height = draw(_ints(*INT_BOUNDS[d.FieldDescriptor.TYPE_INT64]))
    stamp = draw(st.one_of(st.none(), _ints(*INT_BOUNDS[d.FieldDescriptor.TYPE_INT64])))
    return heartbeat_request(signer, channel, peer_type, height, stamp)


SIGNED: dict[str, Callable[[Known], st.SearchStrategy[Message]]] = {
    "/loopchain.RadioStation/ConnectPeer": signed_connect,
    "/loopchain.RadioStation/Heartbeat": signed_heartbeat,
}


# ------------------------------------------------------------------ raw bytes


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


BAD_UTF8 = [b"\xed\xa0\x80", b"a\xed\xbf\xbfb", b"\xff", b"\xc3\x28", b"\xc0\xaf"]


@st.composite
def raw_requests(draw: st.DrawFn, message: d.Descriptor, known: Known) -> bytes:
    """Bytes that are not (or only just are) a `message`: random bytes, a drawn message cut short
    or with a byte changed, a string field holding a lone surrogate or other bytes that are not
    UTF-8, a field of the wrong wire type, unknown fields."""
    valid = draw(messages(message, known)).SerializeToString()
    strings = [f.number for f in message.fields if f.type == d.FieldDescriptor.TYPE_STRING] or [1]
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(min_size=1, max_size=300))
    if kind == 1 and valid:
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == 2 and valid:
        return draw(_changed_byte(valid))
    if kind == 3:
        number = draw(st.sampled_from(strings))
        return valid + _length_delimited(number, draw(st.sampled_from(BAD_UTF8)))
    if kind == 4:
        number = draw(st.sampled_from([f.number for f in message.fields] or [1]))
        wire = draw(st.sampled_from([1, 3, 4, 5, 6, 7]))  # fixed64, groups, fixed32, invalid
        return valid + _varint(number << 3 | wire) + b"\x01\x02\x03\x04\x05\x06\x07\x08"
    number = draw(st.integers(100, 536_870_911))
    return valid + _length_delimited(number, draw(st.binary(max_size=50)))


# ------------------------------------------------------------------ calls and their answers


@dataclass
class Outcome:
    """How a call ended: its status, details, the replies' bytes, and how long it took."""

    code: grpc.StatusCode
    details: str
    replies: list[bytes]
    seconds: float


def call(
    channel: grpc.Channel, method: d.MethodDescriptor, requests: list[bytes], deadline: float
) -> Outcome:
    """Send `requests` (one for a unary method, several on a stream) as they are, bytes for
    bytes, within `deadline` seconds, and read every reply."""
    path = path_of(method)
    started = time.monotonic()
    replies: list[bytes] = []
    try:
        if method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(path)(iter(requests), timeout=deadline)
            replies.extend(stream)
        elif method.client_streaming:
            replies.append(channel.stream_unary(path)(iter(requests), timeout=deadline))
        elif method.server_streaming:
            replies.extend(channel.unary_stream(path)(requests[0], timeout=deadline))
        else:
            replies.append(channel.unary_unary(path)(requests[0], timeout=deadline))
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
        return Outcome(code, details, replies, time.monotonic() - started)
    return Outcome(grpc.StatusCode.OK, "", replies, time.monotonic() - started)


def problems(method: d.MethodDescriptor, outcome: Outcome, refused: bool = False) -> list[str]:
    """What is wrong with how a call ended: a status that is no precise refusal (UNKNOWN,
    INTERNAL, ...), a deadline passed (a hang), a reply that is not the method's message; with
    `refused` (a method the port must not serve), an answer at all."""
    if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return [f"no answer within its deadline ({outcome.seconds:.1f} s): {outcome.details}"]
    found = []
    if refused and outcome.code == grpc.StatusCode.OK:
        found.append("served, where it must be refused")
    if outcome.code != grpc.StatusCode.OK and outcome.code not in REFUSALS:
        found.append(f"{outcome.code.name}: {outcome.details[:200]}")
    elif outcome.details.startswith(LOST_ANSWER):
        found.append(f"the answer did not reach the caller: {outcome.details[:200]}")
    reply_class = message_class(method.output_type)
    for raw in outcome.replies:
        try:
            reply_class.FromString(raw)
        except DecodeError as exc:
            found.append(f"a reply that is no {method.output_type.name}: {exc}")
    return found


def describe(method: d.MethodDescriptor, requests: list[bytes | Message]) -> str:
    """A reproducer: the method and each request (as text when it is a message)."""
    shown = []
    for request in requests:
        if isinstance(request, Message):
            text = f"{type(request).__name__}({_short(str(request))})"
        else:
            text = f"raw {request[:SHOW]!r}" + ("..." if len(request) > SHOW else "")
        shown.append(text)
    return f"{method.containing_service.name}.{method.name} " + " | ".join(shown)


def _short(text: str) -> str:
    text = text.replace("\n", " ").strip()
    return text if len(text) <= SHOW else text[:SHOW] + "..."


def encoded(requests: list[bytes | Message]) -> list[bytes]:
    return [r if isinstance(r, bytes) else r.SerializeToString() for r in requests]


@st.composite
def requests_for(draw: st.DrawFn, method: d.MethodDescriptor, known: Known) -> list[Any]:
    """One request for a unary method, 1-4 on a stream: each a hostile message (a signed one
    where the method checks signatures), now and then raw bytes that are not its message."""
    message = method.input_type
    one: st.SearchStrategy[Any] = messages(message, known)
    signed = SIGNED.get(path_of(method))
    if signed is not None:
        one = st.one_of(one, signed(known))
    one = st.one_of(one, one, one, raw_requests(message, known))
    count = draw(st.integers(1, 4)) if method.client_streaming else 1
    return [draw(one) for _ in range(count)]


@dataclass(frozen=True)
class ClientTls:
    """A mutual-TLS client's material (PEM): the CA it trusts, its key and certificate."""

    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes


def channel_to(target: str, tls: ClientTls | None = None, server_name: str = "") -> grpc.Channel:
    """A channel to `target`, plain or (with `tls`) over mutual TLS to the server whose
    certificate names `server_name`."""
    options: list[tuple[str, str | int]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.enable_retries", 0),
    ]
    if tls is None:
        return grpc.insecure_channel(target, options)
    credentials = grpc.ssl_channel_credentials(tls.ca_pem, tls.key_pem, tls.cert_pem)
    options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options)
