"""ICON JSON-RPC v3 transactions: the params of `icx_sendTransaction`, checked, hashed and verified.

What is hashed (spec: icon-jsonrpc-v3.md, "Transaction v3"): SHA3-256 of the UTF-8 string
"icx_sendTransaction." + body(params without "signature" and "txHash"), where
* body(d) = ".".join(key + "." + enc(d[key]) for key in sorted(d)); keys are never escaped;
* enc(dict) = "{" + body + "}", enc(list) = "[" + ".".join(enc(x)) + "]", enc(None) = "\\0";
  any other value is str(value) with each of \\ { } [ ] . escaped by a backslash.
Only the top level drops "signature" and "txHash"; a key of that name inside `data` is hashed.
This is iconsdk 2.6's serializer (which drops only "signature" from a v3 transaction, but never
puts a "txHash" in one) and ICON loopchain's, which drops both.

Two contents can share that text: a key holding "." (keys are not escaped) and [""] (written as
[]). Data holding either is refused, so one hash (one signature) stands for one content.

The params are kept exactly as received (the dict itself): "0x01" stays "0x01", nothing is
re-normalised, so the hash any client computed over what it sent is the hash here.

Accepted (each refusal raises InvalidTransaction, JSON-RPC -32602, naming the field):
* version "0x3"; from "hx" + 40 lowercase hex; to "hx"/"cx" + 40 lowercase hex;
* stepLimit, timestamp (µs), nid, and optional value, nonce: "0x" + 1..64 lowercase hex digits
  (leading zeros allowed and hashed as sent; no sign, no upper case: ICON's own node schema);
* dataType "call" | "deploy" | "message" | "deposit", present exactly when data is;
  call {method, params?}, deploy {contentType, content "0x"+bytes, params?}, message a string,
  deposit {action "add"|"withdraw", id?, amount?}; inside data only strings, objects, arrays and
  null (the SDK sends nothing else, and str() of a number or boolean is not the same text in
  every SDK), nested at most MAX_PARAMS_DEPTH - 1 levels (so a block may carry it);
* signature: base64 (padded, canonical) of r‖s‖recid, 65 bytes, recid 0 or 1;
* no other field (a client's own "txHash" is refused: the node makes it).
Sizes beyond these are bounded by the request body and MAX_TX_BYTES upstream.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import SIGNATURE_BYTES, SignatureError, Signer, recover_address
from loopchain.types.hashing import sha3_256
from loopchain.types.jsonrpc import JsonRpcCode, JsonRpcError

TX_VERSION = "0x3"
HASH_PREFIX = "icx_sendTransaction."
NOT_HASHED = frozenset({"signature", "txHash"})
REQUIRED_FIELDS = ("version", "from", "to", "stepLimit", "timestamp", "nid", "signature")
INT_FIELDS = ("stepLimit", "timestamp", "nid", "value", "nonce")
KNOWN_FIELDS = frozenset((*REQUIRED_FIELDS, "value", "nonce", "dataType", "data"))
DATA_TYPES = ("call", "deploy", "message", "deposit")
MAX_HEX_DIGITS = 64  # 256 bits: as an integer well within canonical.MAX_INT_DIGITS
# The params may sit one level inside a stored transaction, which peers hold to canonical.MAX_DEPTH.
MAX_PARAMS_DEPTH = canonical.MAX_DEPTH - 1
SIGNATURE_CHARS = 88  # base64 of 65 bytes, padded
TIMESTAMP_WINDOW_US = 15 * 60 * 1_000_000  # ICON's window around the node's clock

_HEX_INT = re.compile(rf"0x[0-9a-f]{{1,{MAX_HEX_DIGITS}}}")
_HEX_BYTES = re.compile(r"0x(?:[0-9a-f]{2})+")
_HASH = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"(hx|cx)[0-9a-f]{40}")
_SPECIALS = frozenset("\\{}[].")  # escaped in values; a key holding one would be ambiguous
_DATA_KEYS = {
    "call": frozenset({"method", "params"}),
    "deploy": frozenset({"contentType", "content", "params"}),
    "deposit": frozenset({"action", "id", "amount"}),
}


class InvalidTransaction(JsonRpcError):
    """Params that are not a valid v3 transaction (JSON-RPC -32602); `field` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(JsonRpcCode.INVALID_PARAMS, message)
        self.field = field


# -- hashing


def _escape(text: str) -> str:
    if text.isalnum():  # hex numbers and addresses, most values: no special character in them
        return text
    # The backslash first, so the ones added after are not doubled; six replaces of short text
    # are faster than one str.translate.
    return (
        text.replace("\\", "\\\\")
        .replace(".", "\\.")
        .replace("{", "\\{")
        .replace("}", "\\}")
        .replace("[", "\\[")
        .replace("]", "\\]")
    )


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, dict):
        return "{" + _body(value) + "}"
    if isinstance(value, list):
        return "[" + ".".join([_encode(item) for item in value]) + "]"
    if value is None:
        return "\\0"
    return _escape(str(value))


def _body(obj: dict[str, Any]) -> str:
    return ".".join([key + "." + _encode(obj[key]) for key in sorted(obj)])


def serialize(params: dict[str, Any]) -> str:
    """The text a v3 transaction's hash is taken of: "icx_sendTransaction." + the params' body."""
    if NOT_HASHED.isdisjoint(params):
        return HASH_PREFIX + _body(params)
    return HASH_PREFIX + _body({k: v for k, v in params.items() if k not in NOT_HASHED})


def tx_hash(params: dict[str, Any]) -> bytes:
    """SHA3-256 of serialize(params) in UTF-8: the digest that is signed and the txHash."""
    return sha3_256(serialize(params).encode("utf-8"))


# -- checking the params


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 48 else text[:45] + "..."


def hex_int(text: str, name: str) -> int:
    """The value of a T_INT field: "0x" and 1 to 64 lowercase hex digits."""
    if not _HEX_INT.fullmatch(text):
        raise InvalidTransaction(
            f"{name!r} must be '0x' and 1 to {MAX_HEX_DIGITS} lowercase hex digits, "
            f"got {_quote(text)}",
            name,
        )
    return int(text, 16)


def check_address(text: str, name: str, *, eoa: bool = False) -> str:
    """An address: "hx" (an account) or, unless `eoa`, "cx" (a contract) + 40 lowercase hex."""
    match = _ADDRESS.fullmatch(text)
    if match is None or (eoa and match.group(1) != "hx"):
        kind = "'hx'" if eoa else "'hx' or 'cx'"
        raise InvalidTransaction(
            f"{name!r} must be {kind} and 40 lowercase hex digits, got {_quote(text)}", name
        )
    return text


# secp256k1's group order: a signature (r, s) verifies as (r, n - s) too, with the other recovery
# id; libsecp256k1 (iconsdk's signer, and this node's) makes only the low form (s <= n / 2)
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def decode_signature(text: str) -> bytes:
    """The 65 bytes (r, s, recovery id 0 or 1) of a padded, canonical base64 signature, s in its
    low form: a client's transaction is taken with one signature only (the hash leaves the
    signature out, so its other form made a second encoding of one transaction, review). A
    stored or relayed one is read as it is (a chain may hold either form)."""
    raw = None
    if len(text) == SIGNATURE_CHARS:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != SIGNATURE_BYTES or base64.b64encode(raw).decode() != text:
        raise InvalidTransaction(
            f"'signature' must be base64 of {SIGNATURE_BYTES} bytes ({SIGNATURE_CHARS} characters, "
            f"padded), got {_quote(text)}",
            "signature",
        )
    raw = _recoverable(raw)
    if int.from_bytes(raw[32:64], "big") > SECP256K1_ORDER // 2:
        raise InvalidTransaction(
            "'signature' is not in its low-s form (s > n / 2): sign with libsecp256k1, as "
            "iconsdk does",
            "signature",
        )
    return raw


def _recoverable(raw: bytes) -> bytes:
    """`raw` if it is 65 bytes ending in a recovery id 0 or 1 (InvalidTransaction otherwise)."""
    if len(raw) != SIGNATURE_BYTES:
        raise InvalidTransaction(
            f"'signature' must be {SIGNATURE_BYTES} bytes, got {len(raw)}", "signature"
        )
    if raw[64] > 1:
        raise InvalidTransaction(
            f"'signature' recovery id must be 0 or 1, got {raw[64]}", "signature"
        )
    return raw


def _signature_bytes(signature: str | bytes) -> bytes:
    """The 65 bytes of a signature as sent (decode_signature) or as stored, checked alike."""
    return decode_signature(signature) if isinstance(signature, str) else _recoverable(signature)


def _data_problem(problem: str, path: str) -> InvalidTransaction:
    where = path if len(path) <= 60 else path[:57] + "..."
    return InvalidTransaction(f"'data' {problem} (at {where})", "data")


def _check_values(value: Any, path: str) -> None:
    # Depth is already bounded by canonical.check_value, so this recursion is too.
    if isinstance(value, dict):
        for key, item in value.items():
            if _SPECIALS.intersection(key):
                raise _data_problem(f"keys may not hold any of \\ {{ }} [ ] . (key {key!r})", path)
            _check_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        if value == [""]:
            raise _data_problem('may not hold [""]: it is hashed as []', path)
        for index, item in enumerate(value):
            _check_values(item, f"{path}[{index}]")
    elif value is not None and not isinstance(value, str):
        kind = type(value).__name__
        raise _data_problem(f"may hold only strings, objects, arrays and null, not {kind}", path)


def _check_fields(data: dict[str, Any], data_type: str, required: tuple[str, ...]) -> None:
    unknown = data.keys() - _DATA_KEYS[data_type]
    if unknown:
        raise InvalidTransaction(
            f"'data' of a {data_type} transaction has unknown fields {sorted(unknown)[:5]}", "data"
        )
    for name in required:
        if not isinstance(data.get(name), str) or not data[name]:
            raise InvalidTransaction(
                f"'data' of a {data_type} transaction needs a non-empty string {name!r}", "data"
            )
    if "params" in data and not isinstance(data["params"], dict):
        raise InvalidTransaction(
            f"'data.params' of a {data_type} transaction must be an object", "data"
        )


def _check_object_data(data: dict[str, Any], data_type: str) -> None:
    if data_type == "call":
        _check_fields(data, data_type, ("method",))
    elif data_type == "deploy":
        _check_fields(data, data_type, ("contentType", "content"))
        if not _HEX_BYTES.fullmatch(data["content"]):
            raise InvalidTransaction("'data.content' must be '0x' and lowercase hex bytes", "data")
    else:  # deposit
        _check_fields(data, data_type, ("action",))
        if data["action"] not in ("add", "withdraw"):
            raise InvalidTransaction("'data.action' of a deposit must be add or withdraw", "data")
        deposit_id, amount = data.get("id", "0x" + "0" * 64), data.get("amount", "0x0")
        if not isinstance(deposit_id, str) or not _HASH.fullmatch(deposit_id):
            raise InvalidTransaction("'data.id' of a deposit must be '0x' and 64 hex", "data")
        if not isinstance(amount, str) or not _HEX_INT.fullmatch(amount):
            raise InvalidTransaction(
                "'data.amount' of a deposit must be '0x' and lowercase hex digits", "data"
            )


def _check_data(params: dict[str, Any]) -> str | None:
    data_type = params.get("dataType")
    if data_type is None:
        if "data" in params:
            raise InvalidTransaction("'data' needs a 'dataType'", "dataType")
        return None
    if data_type not in DATA_TYPES:
        raise InvalidTransaction(
            f"'dataType' must be one of {', '.join(DATA_TYPES)}, got {_quote(data_type)}",
            "dataType",
        )
    if "data" not in params:
        raise InvalidTransaction(f"a {data_type} transaction needs 'data'", "data")
    data = params["data"]
    try:
        canonical.check_value(data, max_depth=MAX_PARAMS_DEPTH - 1)
    except EncodingError as exc:
        raise InvalidTransaction(f"'data': {exc}", "data") from None
    _check_values(data, "$")
    if data_type == "message":
        if not isinstance(data, str):
            raise InvalidTransaction("'data' of a message transaction must be a string", "data")
    elif isinstance(data, dict):
        _check_object_data(data, data_type)
    else:
        raise InvalidTransaction(f"'data' of a {data_type} transaction must be an object", "data")
    return data_type


def check_shape(params: Any) -> dict[str, Any]:
    """The params as an object of known fields, the required ones present, every value but data a
    string, version 0x3 (InvalidTransaction otherwise); nothing parsed or hashed."""
    if not isinstance(params, dict):
        raise InvalidTransaction("params must be an object")
    unknown = params.keys() - KNOWN_FIELDS
    if unknown:
        names = sorted(str(name) for name in unknown)[:5]
        raise InvalidTransaction(f"unknown fields {names} in a v3 transaction", names[0])
    for name in REQUIRED_FIELDS:
        if name not in params:
            raise InvalidTransaction(f"missing field {name!r}", name)
    for name, value in params.items():
        if name != "data" and type(value) is not str:
            raise InvalidTransaction(f"{name!r} must be a string, got {type(value).__name__}", name)
    if params["version"] != TX_VERSION:
        raise InvalidTransaction(
            f"'version' must be {TX_VERSION!r}, got {_quote(params['version'])}", "version"
        )
    return params


def check_estimate_params(params: dict[str, Any]) -> str | None:
    """The params of debug_estimateStep (a transaction without stepLimit and signature, every
    field optional) checked as a transaction's fields are, each one given: strings but data,
    version 0x3, addresses, integers, and data as its dataType wants (InvalidTransaction
    otherwise); its dataType. An estimate of what the node would refuse is no estimate."""
    for name, value in params.items():
        if name != "data" and type(value) is not str:
            raise InvalidTransaction(f"{name!r} must be a string, got {type(value).__name__}", name)
    if "version" in params and params["version"] != TX_VERSION:
        raise InvalidTransaction(
            f"'version' must be {TX_VERSION!r}, got {_quote(params['version'])}", "version"
        )
    if "from" in params:
        check_address(params["from"], "from", eoa=True)
    if "to" in params:
        check_address(params["to"], "to")
    for name in INT_FIELDS:
        if name in params:
            hex_int(params[name], name)
    return _check_data(params)


# -- the transaction


@dataclass(frozen=True, slots=True)
class IconTransaction:
    """A checked v3 transaction: the params exactly as received (not to be mutated), their
    hash, and the fields read from them; two are equal when hash and signature are."""

    params: dict[str, Any] = field(compare=False, repr=False)
    hash: bytes
    signature: bytes
    sender: str = field(compare=False)
    to: str = field(compare=False)
    value: int = field(compare=False)
    step_limit: int = field(compare=False)
    timestamp: int = field(compare=False)
    nid: int = field(compare=False)
    nonce: int | None = field(compare=False)
    data_type: str | None = field(compare=False)

    @property
    def tx_hash(self) -> str:
        """The txHash as the API writes it: "0x" + 64 hex."""
        return "0x" + self.hash.hex()

    @property
    def data(self) -> Any:
        """The `data` as received (None when absent)."""
        return self.params.get("data")

    def signer_address(self) -> str:
        """The address of the key that made the signature (InvalidTransaction if none does)."""
        try:
            return recover_address(self.hash, self.signature)
        except SignatureError as exc:
            raise InvalidTransaction(str(exc), "signature") from None

    def verify_signature(self) -> None:
        """Raise InvalidTransaction unless the signature was made by the key of `from`."""
        signer = self.signer_address()
        if signer != self.sender:
            raise InvalidTransaction(
                f"'signature' was made by {signer}, not by 'from' {self.sender}", "signature"
            )


def parse_send_params(params: Any) -> IconTransaction:
    """Check the params of icx_sendTransaction and hash them as received (signature unchecked)."""
    # 1. an object of known fields, the required ones present, every value but data a string
    params = check_shape(params)
    # 2. each field's format, 3. the hash of exactly what was received
    return _parsed(params, params["signature"], params, None)


def parse_stored(
    body: dict[str, Any], signature: bytes, known_hash: bytes | None = None
) -> IconTransaction:
    """A stored v3 transaction: its params less "signature" (`body`) and the signature's 65
    bytes, checked as parse_send_params checks params. Hashed, unless `known_hash` is given: the
    hash its own peer took of these very params (a transaction decoded from bytes that peer
    checked)."""
    params = _stored_params(body, base64.b64encode(signature).decode("ascii"))
    return _parsed(params, signature, body, known_hash)


def check_stored_shape(body: dict[str, Any]) -> None:
    """Raise InvalidTransaction unless `body` has the shape of a stored v3 transaction's: that
    of its params (check_shape) less "signature"."""
    _stored_params(body, "")


def _stored_params(body: dict[str, Any], signature: str) -> dict[str, Any]:
    if not NOT_HASHED.isdisjoint(body):  # would be left out of the hash
        raise InvalidTransaction("a v3 transaction body holds 'signature' or 'txHash'")
    return check_shape({**body, "signature": signature})


def _parsed(
    params: dict[str, Any],
    signature: str | bytes,
    hashed: dict[str, Any],
    known_hash: bytes | None,
) -> IconTransaction:
    """The checked transaction of params whose shape is checked: each field's format, then the
    signature (as sent, or its bytes), and the hash of `hashed` unless it is known: the params
    themselves, or a stored body (the same less "signature", which the hash leaves out)."""
    sender = check_address(params["from"], "from", eoa=True)
    to = check_address(params["to"], "to")
    ints = {name: hex_int(params[name], name) for name in INT_FIELDS if name in params}
    data_type = _check_data(params)
    return IconTransaction(
        params=params,
        signature=_signature_bytes(signature),
        hash=tx_hash(hashed) if known_hash is None else known_hash,
        sender=sender,
        to=to,
        value=ints.get("value", 0),
        step_limit=ints["stepLimit"],
        timestamp=ints["timestamp"],
        nid=ints["nid"],
        nonce=ints.get("nonce"),
        data_type=data_type,
    )


def verify_send_params(params: Any) -> IconTransaction:
    """parse_send_params, then check that the signature was made by `from`."""
    tx = parse_send_params(params)
    tx.verify_signature()
    return tx


def check_nid(tx: IconTransaction, nid: int) -> None:
    """Raise InvalidTransaction unless the transaction is for network `nid`."""
    if tx.nid != nid:
        raise InvalidTransaction(f"'nid' is {tx.nid:#x}, this network is {nid:#x}", "nid")


def check_timestamp(tx: IconTransaction, now_us: int, window_us: int = TIMESTAMP_WINDOW_US) -> None:
    """Raise InvalidTransaction unless the timestamp is within `window_us` of `now_us`."""
    if abs(tx.timestamp - now_us) > window_us:
        raise InvalidTransaction(
            f"'timestamp' {tx.timestamp} µs is more than {window_us // 1_000_000} s from the "
            f"node's clock ({now_us} µs)",
            "timestamp",
        )


# -- making transactions (tests, load tools)


def make_params(
    *,
    sender: str,
    to: str,
    step_limit: int,
    timestamp_us: int,
    nid: int = 1,
    value: int | None = None,
    nonce: int | None = None,
    data_type: str | None = None,
    data: Any = None,
) -> dict[str, Any]:
    """Unsigned params as iconsdk writes them: integers as hex(), optional fields only if given."""
    params: dict[str, Any] = {
        "version": TX_VERSION,
        "from": sender,
        "to": to,
        "stepLimit": hex(step_limit),
        "timestamp": hex(timestamp_us),
        "nid": hex(nid),
    }
    if value is not None:
        params["value"] = hex(value)
    if nonce is not None:
        params["nonce"] = hex(nonce)
    if data_type is not None:
        params["dataType"] = data_type
    if data is not None:
        params["data"] = data
    return params


def sign_params(params: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """A copy of `params` with the "signature" iconsdk would add: base64 of the recoverable
    signature over tx_hash(params) (any "signature" or "txHash" already there is not hashed)."""
    signed = dict(params)
    signed["signature"] = base64.b64encode(signer.sign(tx_hash(params))).decode("ascii")
    return signed
