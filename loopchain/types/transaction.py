"""Transactions.

A transaction is a signed body. The body's "version" decides how its hash is computed and who
signs it: version "1" is loopchain's peer-signed transaction (a peer wraps a client's JSON and signs
it with its own key); version "0x3" is an ICON JSON-RPC v3 transaction its sender signed: the body
is the params of icx_sendTransaction exactly as the client sent them, less "signature", and its
hash is SHA3-256 of "icx_sendTransaction." + their serialization (types/icon_tx.py). Both are
stored and sent as the canonical JSON {"body": ..., "signature": hex}.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from loopchain.types import canonical, icon_tx
from loopchain.types.canonical import EncodingError
from loopchain.types.crypto import Signer, recover_address, recover_public_key
from loopchain.types.hashing import sha3_256

V1 = "1"
V3 = icon_tx.TX_VERSION
# A transaction's data sits two levels down ({"body": {"data": ...}}), and every peer holds a whole
# transaction to canonical.MAX_DEPTH: data deeper than this would be refused by the others.
MAX_DATA_DEPTH = canonical.MAX_DEPTH - 2

_V1_FIELDS: dict[str, type | tuple[type, ...]] = {
    "version": str,
    "channel": str,
    "data": (dict, list, str, int, bool),
    "timestamp": int,
    "from": str,
}
_V1_KNOWN = frozenset(_V1_FIELDS)
_TX_FIELDS: dict[str, type | tuple[type, ...]] = {"body": dict, "signature": str}
# What holding a transaction costs in memory, estimated from its bytes (held_bytes): it keeps its
# body parsed, and each JSON array or object in it is a Python object of ~64 bytes, each string
# ~50 (its two quotes), each element a slot: a 60 KB body of empty lists held 1.3 MB (review)
HELD_OVERHEAD = 640  # the transaction's own objects (itself, its hash and signature, its bytes)
HELD_PER_CONTAINER = 128  # an empty list is 56 bytes, a dict of one entry 184
HELD_PER_QUOTE = 24
HELD_PER_COMMA = 24  # an element (a slot, and an integer or float of ~28 bytes)
HELD_PER_COLON = 32  # an object's entry
_TX_KNOWN = frozenset(_TX_FIELDS)


def tx_hash_of(body: dict[str, Any], *, checked: bool = False) -> bytes:
    """Hash of a transaction body, by its version (`checked`: the body came from canonical bytes,
    so it needs no walk for floats before it is encoded)."""
    version = body.get("version")
    if version == V1:
        encoded = canonical.encode_checked(body) if checked else canonical.encode(body)
        return sha3_256(b"loopchain.tx.v1." + encoded)
    if version == V3:
        return icon_tx.tx_hash(body)
    raise EncodingError(f"unsupported transaction version {version!r}")


@dataclass(frozen=True)
class Transaction:
    """A signed transaction; `hash` is derived from the body and checked on decode."""

    body: dict[str, Any]
    signature: bytes
    hash: bytes = field(compare=False)

    @classmethod
    def create_v1(
        cls, channel: str, data: Any, timestamp_us: int, signer: Signer, *, checked: bool = False
    ) -> Transaction:
        """A peer-signed transaction wrapping the client's JSON `data` (`checked`: `data` was
        already encoded canonically once, so nothing walks it again)."""
        body = {
            "version": V1,
            "channel": channel,
            "data": data,
            "timestamp": timestamp_us,
            "from": signer.address,
        }
        encoded_body = canonical.encode_checked(body) if checked else canonical.encode(body)
        digest = sha3_256(b"loopchain.tx.v1." + encoded_body)
        signature = signer.sign(digest)
        tx = cls(body=body, signature=signature, hash=digest)
        tx.__dict__["_signature_good"] = True  # made here: nothing to recover
        # canonical JSON of {"body": ..., "signature": ...} is its members' encodings in key order
        tx.__dict__["_encoded"] = b"".join(
            (b'{"body":', encoded_body, b',"signature":"', signature.hex().encode(), b'"}')
        )
        return tx

    @classmethod
    def from_icon(
        cls, checked: icon_tx.IconTransaction, *, signature_verified: bool = False
    ) -> Transaction:
        """A v3 transaction from checked params: the params as received, less "signature"
        (`signature_verified`: `checked` came from icon_tx.verify_send_params)."""
        body = {key: value for key, value in checked.params.items() if key != "signature"}
        tx = cls(body=body, signature=checked.signature, hash=checked.hash)
        tx.__dict__["_icon"] = checked  # checked once: icon() does not parse the params again
        if signature_verified:
            tx.__dict__["_signature_good"] = True
        return tx

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    @property
    def version(self) -> str:
        return str(self.body["version"])

    @property
    def channel(self) -> str:
        """The channel a v1 transaction names ("" for a v3 one: its body names none)."""
        return str(self.body.get("channel", ""))

    def belongs_to(self, channel: str) -> bool:
        """False only for a v1 transaction naming another channel (a v3 body names no channel,
        so one may go to any channel of its network)."""
        return self.body.get("version") != V1 or self.body["channel"] == channel

    def network_problem(self, nid: int) -> str | None:
        """Why this transaction is not for ICON network `nid` ("is for network 0x7, ..."): a v3
        one names its network and no channel, so one signed for a channel of another network
        would be replayed here; None for it, and for a v1 one (which names its channel)."""
        if self.body.get("version") == V1:
            return None
        try:
            stated = icon_tx.hex_int(self.body["nid"], "nid")
        except (icon_tx.InvalidTransaction, KeyError, TypeError):
            return "names no network id"
        return None if stated == nid else f"is for network {stated:#x}, this channel's is {nid:#x}"

    @functools.cached_property
    def timestamp(self) -> int:
        """Microseconds since the epoch, as the sender stated (a v3 one parsed once: a save, the
        filter and the window checks each ask for it)."""
        value = self.body["timestamp"]
        return value if isinstance(value, int) else int(value, 16)

    @property
    def sender(self) -> str:
        return str(self.body["from"])

    @property
    def data(self) -> Any:
        """The client's data (None for a v3 transaction without any)."""
        return self.body.get("data")

    def icon(self) -> icon_tx.IconTransaction:
        """The checked params of a v3 transaction, "signature" included (EncodingError for v1)."""
        if self.body.get("version") != V3:
            raise EncodingError(f"transaction {self.hash_hex} is not a v3 transaction")
        checked = self.__dict__.get("_icon")
        if checked is None:  # made by the constructor alone: check (and keep) it now
            known = self.hash if self.__dict__.get("_hash_known") else None
            checked = self.__dict__["_icon"] = _checked_icon(self.body, self.signature, known)
        return checked

    @property
    def signed_by(self) -> str:
        """ "peer" for a v1 transaction (its sender is the peer that took it from an unnamed
        client), "client" for one its sender signed itself."""
        return "peer" if self.body.get("version") == V1 else "client"

    def public_key(self) -> bytes:
        """The signer's compressed public key, recovered from the signature."""
        return recover_public_key(self.hash, self.signature)

    @property
    def signature_checked(self) -> bool:
        """Whether a good signature is known on this object: `verify_signature` recovers nothing."""
        return self.__dict__.get("_signature_good") is True

    def verify_signature(self) -> bool:
        """True when the signature was made by the body's "from" address. The answer is kept on
        the object, not in a process-wide memo: a pooled transaction is checked when it comes
        and again in every block that carries it (blocks take the pooled object itself), so only
        the first check recovers the key, and nothing outlives the transaction (a memo entry per
        transaction held ~55 MB per peer at its bound). A bad answer is kept too (the object is
        immutable): a forged relayed one checked ahead in turns is not recovered a second time."""
        known = self.__dict__.get("_signature_good")
        if known is not None:
            return bool(known)
        try:
            good = recover_address(self.hash, self.signature) == self.sender
        except ValueError:  # SignatureError: malformed
            good = False
        self.__dict__["_signature_good"] = good
        return good

    def to_json(self) -> dict[str, Any]:
        return {"body": self.body, "signature": self.signature.hex()}

    def encode(self) -> bytes:
        """Canonical bytes (stored and sent)."""
        return self._encoded

    @property
    def held_bytes(self) -> int:
        """The memory this transaction holds, estimated from its bytes by what they make when
        parsed (a pool is bounded by it: bounded by bytes, a pool of 64 MiB of bodies of empty
        lists held 1.4 GB). Mostly over (text with many commas, quotes or colons counts several
        times what it holds; any text not ASCII four times), at worst ~0.8 of it (a list of
        large integers)."""
        held = self.__dict__.get("_held")
        if held is None:
            raw = self._encoded
            held = self.__dict__["_held"] = (
                HELD_OVERHEAD
                # its bytes, and its text parsed again: one byte a character, or up to four
                # when any is not ASCII (Python keeps a string at its widest character's size:
                # one emoji in 60 KB of text held 240 KB, review)
                + (2 if raw.isascii() else 6) * len(raw)
                + HELD_PER_CONTAINER * (raw.count(b"{") + raw.count(b"["))
                + HELD_PER_QUOTE * raw.count(b'"')
                + HELD_PER_COMMA * raw.count(b",")
                + HELD_PER_COLON * raw.count(b":")
            )
        return int(held)

    @functools.cached_property
    def _encoded(self) -> bytes:
        # A transaction is immutable; pools and block checks ask for its bytes (and size) often.
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(
        cls,
        value: Any,
        *,
        checked: bool = False,
        trusted: bool = False,
        known_hash: bytes | None = None,
    ) -> Transaction:
        """From its JSON form. `checked`: parsed from canonical bytes, so its own bytes are re-made
        without a walk, and kept. `trusted`: parsed from bytes its own peer already checked (see
        `Block.decode_trusted`), so its bytes are not re-made, and its hash may be the
        `known_hash` the peer computed (a v3 transaction's params are then checked only when
        `icon()` asks for them, and not hashed again)."""
        obj = canonical.check_fields(value, _TX_FIELDS, _TX_KNOWN)
        body = obj["body"]
        signature = canonical.hex_to_bytes(obj["signature"], "signature", 65)
        version = body.get("version")
        if version == V1:
            canonical.check_fields(body, _V1_FIELDS, _V1_KNOWN)
        if trusted and known_hash is not None and version in (V1, V3):
            tx = cls(body=body, signature=signature, hash=known_hash)
            if version == V3:  # its shape only: the fields are parsed when icon() asks, not hashed
                _check_icon_shape(body)
                tx.__dict__["_hash_known"] = True
            return tx
        if version == V3:
            icon = _checked_icon(body, signature)
            tx = cls(body=body, signature=signature, hash=icon.hash)
            tx.__dict__["_icon"] = icon  # the SCORE's execution reads it without a re-parse
        else:
            tx = cls(
                body=body, signature=signature, hash=tx_hash_of(body, checked=checked or trusted)
            )
        if checked and not trusted:  # the limits are checked here, alone and inside a block
            tx.__dict__["_encoded"] = canonical.encode_within_limits(value)
        return tx

    @classmethod
    def decode(cls, raw: bytes) -> Transaction:
        """Parse canonical bytes; raises EncodingError on any malformed input."""
        tx = cls.from_json(canonical.decode(raw, limits=False), checked=True)
        tx.__dict__["_encoded"] = raw
        return tx


def _check_icon_shape(body: dict[str, Any]) -> None:
    """A stored v3 body's fields, without parsing or hashing them (EncodingError when wrong); its
    timestamp is read, as `timestamp` reads it, so that it cannot fail later."""
    try:
        icon_tx.check_stored_shape(body)
        icon_tx.hex_int(body["timestamp"], "timestamp")
    except icon_tx.InvalidTransaction as exc:
        raise EncodingError(f"v3 transaction refused: {exc.message}") from None


def _checked_icon(
    body: dict[str, Any], signature: bytes, known_hash: bytes | None = None
) -> icon_tx.IconTransaction:
    """A stored v3 body with its signature, checked as icx_sendTransaction checks params (and
    hashed, unless its hash is known: see icon_tx.parse_stored)."""
    try:
        return icon_tx.parse_stored(body, signature, known_hash)
    except icon_tx.InvalidTransaction as exc:
        raise EncodingError(f"v3 transaction refused: {exc.message}") from None
