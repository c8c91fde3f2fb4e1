"""ICON v3 transactions: the spec's vectors, escaping, every refusal, signatures, properties."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from loopchain.types import canonical
from loopchain.types.crypto import Signer
from loopchain.types.hashing import sha3_256
from loopchain.types.icon_tx import (
    MAX_HEX_DIGITS,
    MAX_PARAMS_DEPTH,
    SECP256K1_ORDER,
    TIMESTAMP_WINDOW_US,
    IconTransaction,
    InvalidTransaction,
    check_nid,
    check_timestamp,
    make_params,
    parse_send_params,
    parse_stored,
    serialize,
    sign_params,
    tx_hash,
    verify_send_params,
)
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError, score_error_code
from loopchain.types.transaction import MAX_DATA_DEPTH

SETTINGS = settings(max_examples=80, deadline=None)

# -- the spec's test vector (icon-jsonrpc-v3.md, "Transaction v3")
SDK_KEY = bytes.fromhex("592eb276d534e2c41a2d9356c0ab262dc233d87e4dd71ce705ec130a8d27ff0c")
SDK_ADDRESS = "hxe7af5fcfd8dfc67530a01a0e403882687528dfcb"
TO = "hx5bfdb090f43a808005ffc27c25b213145e80b7cd"
SCORE = "cx" + "ab" * 20
VECTOR_TEXT = (
    "icx_sendTransaction.from.hxe7af5fcfd8dfc67530a01a0e403882687528dfcb.nid.0x3.nonce.0x1"
    ".stepLimit.0x186a0.timestamp.0x60a24181e4000.to.hx5bfdb090f43a808005ffc27c25b213145e80b7cd"
    ".value.0xde0b6b3a7640000.version.0x3"
)
VECTOR_HASH = "0x56e96f170c1c4a7d5ce80342c711364713e9fe7d476799a7806e802fd1e70499"
VECTOR_SIGNATURE = (
    "55+HFZI2glRJ7S/mSaaAOLG6ozoJCQQtjFAzXL25Pud96o2Vg5RixIfhx6OJH2stXoBUDh8qMXs2ewXW1di/0wA="
)
SDK_SIGNER = Signer(SDK_KEY)
OTHER_SIGNER = Signer(bytes([7]) * 32)
NOW_US = 1_700_000_000_000_000


def vector_params() -> dict[str, Any]:
    """The spec's transfer, signed, as the SDK sends it."""
    return {
        "version": "0x3",
        "from": SDK_ADDRESS,
        "to": TO,
        "stepLimit": "0x186a0",
        "timestamp": "0x60a24181e4000",
        "nid": "0x3",
        "value": "0xde0b6b3a7640000",
        "nonce": "0x1",
        "signature": VECTOR_SIGNATURE,
    }


def call_params(signer: Signer = SDK_SIGNER, **data: Any) -> dict[str, Any]:
    unsigned = make_params(
        sender=signer.address,
        to=SCORE,
        step_limit=2_000_000,
        timestamp_us=NOW_US,
        nid=3,
        data_type="call",
        data={"method": "transfer", "params": {"to": TO, "amount": "0x10"}, **data},
    )
    return sign_params(unsigned, signer)


def refusal(params: Any) -> InvalidTransaction:
    with pytest.raises(InvalidTransaction) as info:
        verify_send_params(params)
    assert info.value.code == JsonRpcCode.INVALID_PARAMS == -32602
    return info.value


# -- the vector


def test_the_sdk_key_has_the_spec_address() -> None:
    assert SDK_SIGNER.address == SDK_ADDRESS


def test_the_spec_vector_serializes_and_hashes_byte_for_byte() -> None:
    params = vector_params()
    assert serialize(params) == VECTOR_TEXT
    assert tx_hash(params) == sha3_256(VECTOR_TEXT.encode()) == bytes.fromhex(VECTOR_HASH[2:])
    tx = verify_send_params(params)
    assert tx.tx_hash == VECTOR_HASH
    assert (tx.sender, tx.to, tx.value, tx.step_limit) == (SDK_ADDRESS, TO, 10**18, 100_000)
    assert (tx.timestamp, tx.nid, tx.nonce, tx.data_type) == (1_700_000_000_000_000, 3, 1, None)


def test_make_params_and_sign_params_reproduce_the_spec_signature() -> None:
    unsigned = make_params(
        sender=SDK_ADDRESS,
        to=TO,
        value=10**18,
        step_limit=100_000,
        nid=3,
        nonce=1,
        timestamp_us=1_700_000_000_000_000,
    )
    assert "signature" not in unsigned
    signed = sign_params(unsigned, SDK_SIGNER)  # RFC 6979: the same key and digest, same bytes
    assert signed == vector_params()
    assert "signature" not in unsigned  # a copy is signed


def test_the_spec_nesting_and_escaping_case() -> None:
    params = {
        "name": "a.b{c}[d]\\e",
        "amount": "0x10",
        "flag": "0x1",
        "raw": "0x0102",
        "items": ["x", "0x2", None, {"k": "v"}],
    }
    text = serialize({"data": {"method": "m", "params": params}})
    assert (
        "params.{amount.0x10.flag.0x1.items.[x.0x2.\\0.{k.v}].name.a\\.b\\{c\\}\\[d\\]\\\\e.raw.0x0102}"
        in text
    )


# -- serialization details


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("plain", "plain"),
        (".", "\\."),
        ("\\", "\\\\"),
        ("{}[]", "\\{\\}\\[\\]"),
        ("\\.", "\\\\\\."),
        ("é ☃ \n", "é ☃ \n"),
        (None, "\\0"),
        ("\\0", "\\\\0"),  # the text \0 is not null
        ([], "[]"),
        ({}, "{}"),
        ([[None], ["a.b"]], "[[\\0].[a\\.b]]"),
        ({"b": "1", "a": {"c": []}}, "{a.{c.[]}.b.1}"),
        (True, "True"),  # str() of anything else, as the SDK does (parse refuses such data)
        (16, "16"),
    ],
)
def test_values_are_encoded_as_the_spec_says(value: Any, encoded: str) -> None:
    assert serialize({"k": value}) == "icx_sendTransaction.k." + encoded


def test_keys_are_sorted_by_code_point_and_never_escaped() -> None:
    assert serialize({"b": "x", "B": "y", "a.b": "z"}) == "icx_sendTransaction.B.y.a.b.z.b.x"


def test_signature_and_tx_hash_are_left_out_only_at_the_top() -> None:
    params = vector_params()
    with_hash = {**params, "txHash": VECTOR_HASH}
    assert serialize(with_hash) == serialize(params) == VECTOR_TEXT
    nested = {"data": {"signature": "s", "txHash": "h"}}
    assert serialize(nested) == "icx_sendTransaction.data.{signature.s.txHash.h}"


def test_the_spec_format_has_collisions_that_parse_refuses() -> None:
    # Keys are not escaped, and a list of one empty string is written as the empty list: two
    # different contents, one hash (one signature). Data holding either form is refused, so a
    # relayer cannot swap one for the other under the sender's signature.
    assert serialize({"l": [""]}) == serialize({"l": []})
    assert serialize({"a.b": "c", "d": "e"}) == serialize({"a": "b", "c.d": "e"})
    call = {"method": "m", "params": {"l": []}}
    verify_send_params(with_data("call", call))
    swapped = with_data("call", call)
    swapped["data"] = {"method": "m", "params": {"l": [""]}}
    assert tx_hash(swapped) == parse_send_params(with_data("call", call)).hash
    assert refusal(swapped).field == "data"


def test_what_is_hashed_is_what_was_received() -> None:
    leading_zero = sign_params({**vector_params(), "nonce": "0x01"}, SDK_SIGNER)
    tx = verify_send_params(leading_zero)
    assert tx.params is leading_zero
    assert tx.nonce == 1
    assert "nonce.0x01." in serialize(tx.params)
    assert tx.hash == tx_hash(leading_zero) != bytes.fromhex(VECTOR_HASH[2:])


# -- refusals


@pytest.mark.parametrize(
    "name", ["version", "from", "to", "stepLimit", "timestamp", "nid", "signature"]
)
def test_a_missing_required_field_is_named(name: str) -> None:
    params = vector_params()
    del params[name]
    error = refusal(params)
    assert error.field == name and f"missing field '{name}'" in error.message


@pytest.mark.parametrize("name", ["value", "nonce"])
def test_value_and_nonce_are_optional(name: str) -> None:
    params = vector_params()
    del params[name]
    tx = verify_send_params(sign_params(params, SDK_SIGNER))
    assert (tx.value, tx.nonce) == ((0, 1) if name == "value" else (10**18, None))


@pytest.mark.parametrize("name", ["txHash", "message", "fee", "stepPrice"])
def test_unknown_fields_are_refused(name: str) -> None:
    error = refusal({**vector_params(), name: "0x1"})
    assert error.field == name and "unknown fields" in error.message


@pytest.mark.parametrize("params", [None, [], "tx", 3])
def test_params_must_be_an_object(params: Any) -> None:
    assert "must be an object" in refusal(params).message


@pytest.mark.parametrize("name", ["version", "from", "to", "stepLimit", "nid", "value"])
@pytest.mark.parametrize("value", [3, None, True, ["0x3"]])
def test_top_level_values_must_be_strings(name: str, value: Any) -> None:
    error = refusal({**vector_params(), name: value})
    assert error.field == name and "must be a string" in error.message


@pytest.mark.parametrize("version", ["0x03", "3", "0x2", "0X3", ""])
def test_only_version_0x3(version: str) -> None:
    assert refusal({**vector_params(), "version": version}).field == "version"


BAD_HEX = ["0X10", "0xA", "10", "0x", "-0x1", "0x-1", " 0x1", "0x1 ", "0x1\n", "0xg", "0x１"]


@pytest.mark.parametrize("name", ["stepLimit", "timestamp", "nid", "value", "nonce"])
@pytest.mark.parametrize("text", [*BAD_HEX, "0x" + "1" * (MAX_HEX_DIGITS + 1)])
def test_bad_hex_integers_are_refused(name: str, text: str) -> None:
    error = refusal({**vector_params(), name: text})
    assert error.field == name and "lowercase hex digits" in error.message


def test_the_widest_hex_integer_is_taken() -> None:
    widest = "0x" + "f" * MAX_HEX_DIGITS
    tx = verify_send_params(sign_params({**vector_params(), "value": widest}, SDK_SIGNER))
    assert tx.value == 2**256 - 1
    assert len(str(tx.value)) <= canonical.MAX_INT_DIGITS


BAD_ADDRESSES = [
    "hx" + "a" * 39,
    "hx" + "a" * 41,
    "hx" + "A" * 40,
    "HX" + "a" * 40,
    "0x" + "a" * 40,
    "a" * 42,
    "hx" + "g" * 40,
    "",
]


@pytest.mark.parametrize("address", [*BAD_ADDRESSES, SCORE])
def test_from_must_be_an_account_address(address: str) -> None:
    assert refusal({**vector_params(), "from": address}).field == "from"


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_to_must_be_an_address(address: str) -> None:
    assert refusal({**vector_params(), "to": address}).field == "to"


def test_to_may_be_a_contract_including_the_deploy_address() -> None:
    for to in (SCORE, "cx" + "0" * 40):
        params = sign_params({**vector_params(), "to": to}, SDK_SIGNER)
        assert verify_send_params(params).to == to


def with_data(data_type: str | None, data: Any, *, sign: bool = True) -> dict[str, Any]:
    params = vector_params()
    if data_type is not None:
        params["dataType"] = data_type
    if data is not ...:
        params["data"] = data
    return sign_params(params, SDK_SIGNER) if sign else params


GOOD_DATA = [
    ("call", {"method": "transfer"}),
    ("call", {"method": "transfer", "params": {"to": TO, "list": ["0x1", None, {"a": "b"}]}}),
    ("deploy", {"contentType": "application/zip", "content": "0x504b0304"}),
    ("deploy", {"contentType": "application/java", "content": "0x00", "params": {"n": "0x1"}}),
    ("message", "0x48656c6c6f"),
    ("message", "not hex, still a message"),
    ("deposit", {"action": "add"}),
    ("deposit", {"action": "withdraw", "id": "0x" + "1" * 64, "amount": "0x10"}),
]


@pytest.mark.parametrize(("data_type", "data"), GOOD_DATA)
def test_each_data_type_is_taken(data_type: str, data: Any) -> None:
    tx = verify_send_params(with_data(data_type, data))
    assert tx.data_type == data_type and tx.data == data


BAD_DATA = [
    ("transfer", {"method": "m"}, "dataType", "must be one of call, deploy, message, deposit"),
    ("Call", {"method": "m"}, "dataType", "must be one of"),
    (None, {"method": "m"}, "dataType", "'data' needs a 'dataType'"),
    ("call", ..., "data", "a call transaction needs 'data'"),
    ("call", None, "data", "must be an object"),
    ("call", "m", "data", "must be an object"),
    ("call", {}, "data", "needs a non-empty string 'method'"),
    ("call", {"method": ""}, "data", "needs a non-empty string 'method'"),
    ("call", {"method": None}, "data", "needs a non-empty string 'method'"),
    ("call", {"method": "m", "extra": "x"}, "data", "unknown fields ['extra']"),
    ("call", {"method": "m", "params": ["x"]}, "data", "'data.params' of a call"),
    ("call", {"method": "m", "params": {"n": 1}}, "data", "not int (at $.params.n)"),
    ("call", {"method": "m", "params": {"b": True}}, "data", "not bool (at $.params.b)"),
    ("call", {"method": "m", "params": {"f": 1.5}}, "data", "floats are not allowed"),
    ("call", {"method": "m", "params": {"l": ["a", 2]}}, "data", "not int (at $.params.l[1])"),
    ("call", {"method": "m", "params": {"a.b": "c"}}, "data", "keys may not hold"),
    ("call", {"method": "m", "params": {"x": {"[": "c"}}}, "data", "(key '[') (at $.params.x)"),
    ("call", {"method": "m", "params": {"l": [""]}}, "data", "it is hashed as [] (at $.params.l)"),
    ("call", {"method": "m", "params": {"l": [[""], "x"]}}, "data", "(at $.params.l[0])"),
    ("call", {"method": "m", "params": {"s": "\ud800"}}, "data", "lone surrogate"),
    ("deploy", {"contentType": "application/zip"}, "data", "non-empty string 'content'"),
    ("deploy", {"contentType": "a", "content": "504b"}, "data", "lowercase hex bytes"),
    ("deploy", {"contentType": "a", "content": "0x504"}, "data", "lowercase hex bytes"),
    ("deploy", {"contentType": "a", "content": "0x"}, "data", "lowercase hex bytes"),
    ("deploy", {"contentType": "a", "content": "0xABCD"}, "data", "lowercase hex bytes"),
    ("message", {"text": "hi"}, "data", "must be a string"),
    ("message", None, "data", "must be a string"),
    ("deposit", {"action": "steal"}, "data", "add or withdraw"),
    ("deposit", {"action": "withdraw", "id": "0x1"}, "data", "'data.id'"),
    ("deposit", {"action": "withdraw", "id": {"x": "y"}}, "data", "'data.id'"),
    ("deposit", {"action": "add", "amount": "10"}, "data", "lowercase hex digits"),
    ("deposit", {"action": "add", "amount": None}, "data", "'data.amount'"),
    ("deposit", {"action": "add", "term": "0x1"}, "data", "unknown fields ['term']"),
]


@pytest.mark.parametrize(("data_type", "data", "name", "message"), BAD_DATA)
def test_bad_data_is_refused(data_type: str | None, data: Any, name: str, message: str) -> None:
    error = refusal(with_data(data_type, data, sign=False))  # refused before its signature
    assert error.field == name and message in error.message


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def test_data_may_nest_as_deep_as_a_stored_transaction_allows() -> None:
    assert MAX_PARAMS_DEPTH - 1 == MAX_DATA_DEPTH  # the room a v1 transaction's data has
    # {"method", "params": {"p": [[...]]}}: data, params and the value each take a level
    deepest = {"method": "m", "params": {"p": nested(MAX_PARAMS_DEPTH - 3)}}
    params = with_data("call", deepest)
    verify_send_params(params)
    canonical.check_value({"body": params, "signature": "x"})  # a peer holding it takes it
    too_deep = {"method": "m", "params": {"p": nested(MAX_PARAMS_DEPTH - 2)}}
    error = refusal(with_data("call", too_deep))
    assert error.field == "data" and "levels of nesting" in error.message


# -- signatures

BAD_SIGNATURES = [
    VECTOR_SIGNATURE.rstrip("="),  # no padding
    VECTOR_SIGNATURE[:-2] + "B=",  # non-canonical trailing bits: the same bytes, another text
    VECTOR_SIGNATURE.replace("+", "-").replace("/", "_"),  # url-safe alphabet
    "A" * 88,  # 66 bytes
    base64.b64encode(bytes(64)).decode(),
    base64.b64encode(bytes(66)).decode(),
    "!" * 88,
    VECTOR_SIGNATURE[:40] + " " + VECTOR_SIGNATURE[41:],
    "0x" + "00" * 65,
    "",
]


@pytest.mark.parametrize("signature", BAD_SIGNATURES)
def test_malformed_signatures_are_refused(signature: str) -> None:
    error = refusal({**vector_params(), "signature": signature})
    assert error.field == "signature" and "must be base64 of 65 bytes" in error.message


@pytest.mark.parametrize("recid", [2, 3, 27])
def test_recovery_ids_other_than_0_and_1_are_refused(recid: int) -> None:
    raw = bytearray(base64.b64decode(VECTOR_SIGNATURE))
    raw[64] = recid
    error = refusal({**vector_params(), "signature": base64.b64encode(raw).decode()})
    assert error.field == "signature" and "recovery id must be 0 or 1" in error.message


def test_a_signatures_high_s_form_is_refused_from_a_client_and_read_when_stored() -> None:
    """(r, n - s) with the other recovery id recovers the same key: one transaction (its hash
    leaves the signature out) would have two encodings. A client's is taken in the low form
    only; a stored one (a chain may hold either) is read as it is."""
    raw = base64.b64decode(VECTOR_SIGNATURE)
    s = int.from_bytes(raw[32:64], "big")
    assert s <= SECP256K1_ORDER // 2  # libsecp256k1's
    high = raw[:32] + (SECP256K1_ORDER - s).to_bytes(32, "big") + bytes([raw[64] ^ 1])
    params = {**vector_params(), "signature": base64.b64encode(high).decode()}
    error = refusal(params)
    assert error.field == "signature" and "low-s form" in error.message
    body = {k: v for k, v in params.items() if k != "signature"}
    stored = parse_stored(body, high)
    assert stored.signer_address() == SDK_ADDRESS


def test_a_signature_by_another_key_is_refused() -> None:
    params = sign_params(vector_params(), OTHER_SIGNER)
    tx = parse_send_params(params)  # well formed ...
    assert tx.signer_address() == OTHER_SIGNER.address
    error = refusal(params)  # ... but not by "from"
    assert error.field == "signature"
    assert f"made by {OTHER_SIGNER.address}, not by 'from' {SDK_ADDRESS}" in error.message


def test_a_signature_that_recovers_no_key_is_refused() -> None:
    raw = bytes(64) + b"\x00"  # r = s = 0
    error = refusal({**vector_params(), "signature": base64.b64encode(raw).decode()})
    assert error.field == "signature" and "does not verify" in error.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("value", "0xde0b6b3a7640001"),
        ("to", "hx" + "0" * 40),
        ("nid", "0x1"),
        ("nonce", "0x01"),  # the same number, written otherwise: another hash
        ("timestamp", "0x60a24181e4001"),
        ("stepLimit", "0x186a1"),
    ],
)
def test_a_tampered_field_changes_the_hash_and_fails_the_signature(name: str, value: str) -> None:
    tampered = {**vector_params(), name: value}
    tx = parse_send_params(tampered)
    assert tx.tx_hash != VECTOR_HASH
    assert tx.signer_address() != SDK_ADDRESS
    assert refusal(tampered).field == "signature"


def test_tampered_data_fails_the_signature() -> None:
    params = call_params()
    params["data"] = copy.deepcopy(params["data"])
    params["data"]["params"]["amount"] = "0x11"
    assert refusal(params).field == "signature"


def test_a_fresh_key_signs_a_call_that_verifies() -> None:
    signer = Signer.generate()
    params = call_params(signer)
    tx = verify_send_params(params)
    assert tx.sender == signer.address and tx.data_type == "call"
    assert tx.data == {"method": "transfer", "params": {"to": TO, "amount": "0x10"}}
    assert tx == parse_send_params(copy.deepcopy(params))  # equal by hash and signature
    assert tx.hash == sha3_256(serialize(params).encode())


def test_sign_params_ignores_a_signature_already_there() -> None:
    resigned = sign_params({**vector_params(), "signature": "old"}, SDK_SIGNER)
    assert resigned["signature"] == VECTOR_SIGNATURE


def stored_form(params: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The body and signature bytes a stored transaction keeps of `params`."""
    body = {key: value for key, value in params.items() if key != "signature"}
    return body, base64.b64decode(params["signature"])


@pytest.mark.parametrize("params", [vector_params(), call_params()])
def test_a_stored_transaction_parses_as_its_params_do(params: dict[str, Any]) -> None:
    sent = parse_send_params(copy.deepcopy(params))
    stored = parse_stored(*stored_form(params))
    assert stored == sent and stored.params == sent.params == params
    assert (stored.sender, stored.to, stored.value, stored.step_limit, stored.nonce) == (
        sent.sender,
        sent.to,
        sent.value,
        sent.step_limit,
        sent.nonce,
    )
    assert (stored.data_type, stored.data, stored.timestamp) == (
        sent.data_type,
        sent.data,
        sent.timestamp,
    )
    # its own peer's hash is taken as given: it is not taken again
    assert parse_stored(*stored_form(params), known_hash=b"h" * 32).hash == b"h" * 32


def test_a_stored_transaction_is_refused_as_its_params_would_be() -> None:
    body, signature = stored_form(vector_params())
    for bad_body, bad_signature, text in (
        ({**body, "signature": VECTOR_SIGNATURE}, signature, "'signature' or 'txHash'"),
        ({**body, "txHash": VECTOR_HASH}, signature, "'signature' or 'txHash'"),
        ({**body, "memo": "x"}, signature, "unknown fields"),
        ({**body, "to": "hx12"}, signature, "'to' must be"),
        ({**body, "nid": "0x03x"}, signature, "'nid' must be"),
        (body, signature[:64], "must be 65 bytes, got 64"),
        (body, signature[:64] + b"\x02", "recovery id must be 0 or 1, got 2"),
    ):
        with pytest.raises(InvalidTransaction, match=text):
            parse_stored(bad_body, bad_signature)


# -- admission checks that take the node's settings and clock


def test_check_nid() -> None:
    tx = verify_send_params(vector_params())
    check_nid(tx, 3)
    with pytest.raises(InvalidTransaction, match=r"'nid' is 0x3, this network is 0x1") as info:
        check_nid(tx, 1)
    assert info.value.code == -32602 and info.value.field == "nid"


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (0, True),
        (TIMESTAMP_WINDOW_US, True),
        (-TIMESTAMP_WINDOW_US, True),
        (TIMESTAMP_WINDOW_US + 1, False),
        (-TIMESTAMP_WINDOW_US - 1, False),
    ],
)
def test_check_timestamp(offset: int, ok: bool) -> None:
    tx = verify_send_params(vector_params())
    if ok:
        check_timestamp(tx, tx.timestamp + offset)
        return
    with pytest.raises(InvalidTransaction, match="more than 900 s") as info:
        check_timestamp(tx, tx.timestamp + offset)
    assert info.value.field == "timestamp"


def test_json_rpc_errors() -> None:
    assert score_error_code(3) == -30003
    assert JsonRpcError(JsonRpcCode.TIMEOUT, "t", "0x1").to_json() == {
        "code": -31006,
        "message": "t",
        "data": "0x1",
    }
    assert InvalidTransaction("bad").to_json() == {"code": -32602, "message": "bad"}
    assert isinstance(InvalidTransaction("bad"), JsonRpcError)


# -- properties


def unescape(text: str) -> tuple[Any, str]:
    """Parse one encoded value off the front of `text` (keys hold no special character); the
    rest after it."""
    if text[:2] in ("{}", "[]"):  # "[]" is also the spec's [""], which parse refuses
        return ({} if text[0] == "{" else []), text[2:]
    if text[:1] in ("{", "["):
        is_object, parts, rest = text[0] == "{", [], text[1:]
        while True:  # items (or key.value pairs) split by "."
            if is_object:
                key, _, rest = rest.partition(".")
                parts.append(key)
            item, rest = unescape(rest)
            parts.append(item)
            if not rest.startswith("."):
                break
            rest = rest[1:]
        assert rest[:1] == ("}" if is_object else "]")
        value = dict(zip(parts[::2], parts[1::2], strict=True)) if is_object else parts
        return value, rest[1:]
    if text.startswith("\\0"):
        return None, text[2:]
    chars: list[str] = []
    index = 0
    while index < len(text) and text[index] not in ".{}[]":
        if text[index] == "\\":
            index += 1
        chars.append(text[index])
        index += 1
    return "".join(chars), text[index:]


keys = st.text(st.characters(exclude_characters="\\{}[].", codec="utf-8"), max_size=6)
special_text = st.text(st.sampled_from(list("ab.{}[]\\0 é")), max_size=12) | st.text(
    st.characters(codec="utf-8"), max_size=12
)
data_values = st.recursive(
    st.none() | special_text,
    lambda inner: (
        st.lists(inner, max_size=4).filter(lambda items: items != [""])
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(st.dictionaries(keys, data_values, min_size=1, max_size=5))
def test_serialization_parses_back_to_the_value(value: dict[str, Any]) -> None:
    text = serialize({"data": value})
    prefix = "icx_sendTransaction.data."
    assert text.startswith(prefix)
    parsed, rest = unescape(text[len(prefix) :])
    assert rest == "" and parsed == value  # so two values parse takes never share a text
    verify_send_params(with_data("call", {"method": "m", "params": value}))  # parse takes it


@SETTINGS
@given(st.dictionaries(keys, data_values, max_size=6), st.randoms(use_true_random=False))
def test_serialization_ignores_key_order(value: dict[str, Any], rng: Any) -> None:
    items = list(value.items())
    rng.shuffle(items)
    assert serialize(dict(items)) == serialize(value)
    assert tx_hash(dict(items)) == tx_hash(value)


@SETTINGS
@given(
    st.dictionaries(keys, data_values, max_size=4),
    st.integers(0, 2**256 - 1),
    st.integers(0, 2**63),
    st.one_of(st.none(), st.integers(0, 2**64)),
)
def test_signed_calls_verify_and_keep_their_params(
    call: dict[str, Any], value: int, timestamp: int, nonce: int | None
) -> None:
    data = {"method": "m", "params": call}
    unsigned = make_params(
        sender=SDK_ADDRESS,
        to=SCORE,
        step_limit=1,
        timestamp_us=timestamp,
        nid=1,
        value=value,
        nonce=nonce,
        data_type="call",
        data=data,
    )
    params = sign_params(unsigned, SDK_SIGNER)
    kept = copy.deepcopy(params)
    tx = verify_send_params(params)
    assert isinstance(tx, IconTransaction)
    assert (tx.value, tx.timestamp, tx.nonce, tx.data) == (value, timestamp, nonce, data)
    assert params == kept  # nothing was changed in what was received


@SETTINGS
@given(st.sampled_from(["stepLimit", "timestamp", "nid", "value", "nonce"]), st.integers(1, 60))
def test_leading_zeros_are_accepted_and_hashed_as_written(name: str, zeros: int) -> None:
    params = vector_params()
    written = "0x" + "0" * zeros + params[name][2:]
    assume(len(written) - 2 <= MAX_HEX_DIGITS)
    changed = sign_params({**params, name: written}, SDK_SIGNER)
    tx = verify_send_params(changed)
    assert f".{name}.{written}." in serialize(changed) + "."
    assert tx.tx_hash != VECTOR_HASH
