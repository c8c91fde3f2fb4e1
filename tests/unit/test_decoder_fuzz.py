"""Fuzzing of every decoder of bytes from outside a process: whatever comes in, the decoder
returns a value or raises the project's own EncodingError; nothing else escapes.

Each decoder is fed (a) arbitrary bytes, (b) a valid encoding with one node of its JSON replaced by
a hostile value (deep nesting, huge integers, lone surrogates, floats, wrong types), re-encoded
canonically, and (c) a valid encoding with a byte changed. The default suite runs a few hundred
inputs per decoder; `FUZZ_EXAMPLES=N ./run_test.sh -m slow tests/unit/test_decoder_fuzz.py` runs N per
decoder and strategy (a closing note's figures came from N=4200: 8 decoders, now 9, x 3 strategies).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopchain.blockchain.block_store import decode_proof
from loopchain.p2p.errors import RequestError
from loopchain.p2p.peer_service import _client_object
from loopchain.rest import formatting, icon_shapes
from loopchain.rest.errors import RestError
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer
from loopchain.types.hashing import sha3_256
from loopchain.types.icon_tx import make_params, sign_params, verify_send_params
from loopchain.types.transaction import Transaction
from loopchain.types.validators import Validator, ValidatorSet
from loopchain.types.vote import Complaint, QuorumCertificate, Vote

CHANNEL = "fuzz_channel"
SIGNERS = [Signer(bytes([i + 7]) * 32) for i in range(4)]
VALIDATORS = ValidatorSet(CHANNEL, 1, tuple(Validator(s.address) for s in SIGNERS)).signed_by(
    SIGNERS[0]
)
TX = Transaction.create_v1(CHANNEL, {"method": "put", "params": {"k": "v", "n": 5}}, 1, SIGNERS[0])
VOTE = Vote.create(CHANNEL, 1, 0, sha3_256(b"b"), SIGNERS[1])
QC = QuorumCertificate.from_votes([Vote.create(CHANNEL, 1, 0, sha3_256(b"b"), s) for s in SIGNERS])


def _block(transactions: list[Transaction]) -> Block:
    return Block.create(
        channel=CHANNEL,
        height=2,
        round_=1,
        prev_hash=sha3_256(b"b"),
        prev_qc=QC,
        transactions=transactions,
        timestamp=10,
        leader=SIGNERS[0],
        next_leader=SIGNERS[1].address,
        validators_hash=VALIDATORS.hash,
    )


BLOCK = _block([TX])
COMPLAINT = Complaint.create(CHANNEL, 3, QC, SIGNERS[2])
V3_TX = Transaction.from_icon(
    verify_send_params(
        sign_params(
            make_params(
                sender=SIGNERS[3].address,
                to=SIGNERS[2].address,
                step_limit=100_000,
                timestamp_us=1,
                nid=3,
                value=5,
                data_type="message",
                data="0x6869",
            ),
            SIGNERS[3],
        )
    )
)
V3_BLOCK = _block([TX, V3_TX])


def _proxy_block(raw: bytes) -> Any:
    """As the REST proxy takes a GetBlock reply (with the hashes its peer sent) and formats it for
    v1 and v3 clients: a block its peer sent garbled is a 502, never another error."""
    try:
        block = formatting.decode_block(raw, TX.hash + V3_TX.hash)
    except RestError as exc:
        raise EncodingError(exc.message) from None
    return (
        formatting.block_data_json(block),
        formatting.tx_data_json(block),
        icon_shapes.block_json(block, "0x3"),
    )


def _peer_block(raw: bytes, pooled: Any = None) -> Any:
    """As a peer takes a block from another: decoded, then hashed and encoded again (a block
    that decodes must be usable: reading its hash once raised on a header integer past the
    limits, killing the peer's task that read it)."""
    block = Block.decode(raw, pooled)
    header = block.header
    return (
        block.hash,
        block.encode(),
        header.prev_qc.encode() if header.prev_qc else None,
        header.prev_tc.encode() if header.prev_tc else None,
    )


def _client(raw: bytes) -> Any:
    try:
        return _client_object(raw.decode("utf-8", "surrogateescape"))
    except RequestError as exc:
        raise EncodingError(exc.message) from None


# name -> (decoder, a valid encoding)
DECODERS: dict[str, tuple[Callable[[bytes], Any], bytes]] = {
    "transaction": (Transaction.decode, TX.encode()),
    "block": (_peer_block, BLOCK.encode()),
    "block_pooled": (  # as a peer decodes a proposal whose transaction it holds
        lambda raw: _peer_block(raw, {TX.signature: TX}.get),
        BLOCK.encode(),
    ),
    "block_trusted": (
        lambda raw: Block.decode_trusted(raw, TX.hash),  # as the SCORE decodes InvokeBlock
        BLOCK.encode(),
    ),
    "block_proxy": (_proxy_block, V3_BLOCK.encode()),
    "vote": (Vote.decode, VOTE.encode()),
    "certificate": (QuorumCertificate.decode, QC.encode()),
    "complaint": (Complaint.decode, COMPLAINT.encode()),
    "validator_set": (ValidatorSet.decode, VALIDATORS.encode()),
    "canonical": (canonical.decode, TX.encode()),
    "client_json": (_client, b'{"data": {"x": [1, 2, "y"]}}'),
}

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
slow_or_default = pytest.mark.slow if EXAMPLES else lambda f: f
FUZZ = settings(
    max_examples=EXAMPLES or 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**70, max_value=10**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["\ud800", "a\udfffb", "", "0" * 64, "hx" + "0" * 40]),
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
) | st.integers(1, 3000).map(_nested)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(copy[path[0]], path[1:], new)
    return copy


def _encode_any(value: Any) -> bytes:
    """Bytes as a canonical encoder would write them, for values canonical JSON refuses too."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogatepass")
    except RecursionError:
        return b"[" * 5000 + b"]" * 5000


def _only_encoding_errors(decode: Callable[[bytes], Any], raw: bytes) -> None:
    try:
        decode(raw)
    except EncodingError:
        pass


@pytest.mark.parametrize("name", sorted(DECODERS))
@slow_or_default
@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes(name: str, raw: bytes) -> None:
    _only_encoding_errors(DECODERS[name][0], raw)


@pytest.mark.parametrize("name", sorted(DECODERS))
@slow_or_default
@FUZZ
@given(data=st.data(), new=hostile_values)
def test_one_node_replaced_by_a_hostile_value(name: str, data: st.DataObject, new: Any) -> None:
    decode, valid = DECODERS[name]
    value = json.loads(valid)
    path = data.draw(st.sampled_from(_paths(value)))
    _only_encoding_errors(decode, _encode_any(_replace(value, path, new)))


@pytest.mark.parametrize("name", sorted(DECODERS))
@slow_or_default
@FUZZ
@given(data=st.data())
def test_one_byte_changed(name: str, data: st.DataObject) -> None:
    decode, valid = DECODERS[name]
    index = data.draw(st.integers(0, len(valid) - 1))
    byte = data.draw(st.integers(0, 255))
    _only_encoding_errors(decode, valid[:index] + bytes([byte]) + valid[index + 1 :])


def test_the_valid_encodings_decode() -> None:
    for name, (decode, valid) in DECODERS.items():
        assert decode(valid) is not None, name


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100 + b"]" * 100,
        b'{"a":' + b"9" * 200 + b"}",
        b'"\\ud800"',
        b'{"a":1.5}',
        b'{"a":NaN}',
        b"\xff\xfe",
    ],
)
def test_limits_of_every_decoder(raw: bytes) -> None:
    """Nesting, integer length, lone surrogates, floats, constants and bad UTF-8 are refused by
    the generic decoder, with the project's error."""
    with pytest.raises(EncodingError):
        canonical.decode(raw)
    with pytest.raises(EncodingError):
        canonical.parse(raw, floats=b"1.5" not in raw)


def test_a_stored_proof_of_any_bytes_splits_without_error() -> None:
    for raw in (b"", b"\x00", b"\xff\xff\xff\xff", b"\x00\x00\x00\x02ab{}"):
        block, cert = decode_proof(raw)
        assert isinstance(block, bytes) and isinstance(cert, bytes)


@pytest.mark.parametrize(
    "path",
    [("header", "timestamp"), ("header", "round"), ("header", "leader"), ("header", "prev_qc")],
)
@pytest.mark.parametrize("name", ["block", "block_pooled"])
def test_a_block_header_past_the_limits_is_refused_when_decoded(
    name: str, path: tuple[str, ...]
) -> None:
    """A header field outside the canonical limits (an integer of 100 digits, a lone surrogate)
    is refused by the decoder, not left to raise when the block is hashed later."""
    value = json.loads(BLOCK.encode())
    hostile: Any = "\ud800" if path[-1] == "leader" else 10**100
    if path[-1] == "prev_qc":
        hostile = {**value["header"]["prev_qc"], "round": 10**100}
    with pytest.raises(EncodingError):
        Block.decode(_encode_any(_replace(value, path, hostile)))
    with pytest.raises(EncodingError):
        DECODERS[name][0](_encode_any(_replace(value, path, hostile)))
