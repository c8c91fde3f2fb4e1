"""Checks a peer's registration request: its id is its key's address and it signed the request."""

from __future__ import annotations

from loopchain.configure import shown
from loopchain.sources import is_target
from loopchain.types.crypto import SignatureError, address_of, recover_public_key
from loopchain.types.peer import connect_digest

MAX_FIELD_CHARS = 256


class AdmissionError(ValueError):
    """A registration request that is malformed or not signed by the peer id's key."""


def _check_fields(peer_id: str, target: str, group_id: str) -> None:
    if not peer_id:
        raise AdmissionError("peer_id is empty")
    if not is_target(target):
        raise AdmissionError(f"target must be 'host:port', got {shown(target)}")
    for name, value in (("peer_id", peer_id), ("target", target), ("group_id", group_id)):
        if len(value) > MAX_FIELD_CHARS:
            raise AdmissionError(f"{name} is longer than {MAX_FIELD_CHARS} characters")


def verify_connect(
    peer_id: str, target: str, group_id: str, public_key: bytes, signature: bytes
) -> bytes:
    """The peer's compressed public key, after checking the request; AdmissionError otherwise."""
    _check_fields(peer_id, target, group_id)
    try:
        key_address = address_of(public_key)
    except Exception as exc:  # coincurve rejects malformed keys with several error types
        raise AdmissionError(f"public_key is not a valid secp256k1 key: {exc}") from None
    if key_address != peer_id:
        raise AdmissionError(f"public_key belongs to {key_address}, not to peer_id {peer_id}")
    try:
        signer_key = recover_public_key(connect_digest(peer_id, target, group_id), signature)
    except SignatureError as exc:
        raise AdmissionError(f"signature is invalid: {exc}") from None
    if address_of(signer_key) != peer_id:
        raise AdmissionError(f"signature was not made by the key of peer_id {peer_id}")
    return signer_key
