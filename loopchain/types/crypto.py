"""secp256k1 signing with recoverable signatures; peer ids are addresses derived from public keys.

An address is "hx" + the last 20 bytes of SHA3-256 of the uncompressed public key (without its
0x04 prefix), as ICON derives it. A signature is 65 bytes (r, s, recovery id) over a 32-byte digest,
so a verifier recovers the public key and compares addresses; no separate key needs to travel.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coincurve import PublicKey

from loopchain.types.hashing import sha3_256

SIGNATURE_BYTES = 65


class SignatureError(ValueError):
    """A signature that is malformed or does not match its claimed signer."""


def _secp256k1() -> ModuleType:
    """coincurve, loaded on first use: the REST proxy and the SCORE process decode blocks but
    never sign or recover, and need not carry the library."""
    import coincurve

    return coincurve


def _address(uncompressed: bytes) -> str:
    return "hx" + sha3_256(uncompressed[1:])[-20:].hex()


def address_of(public_key: bytes) -> str:
    """The hx address of a (compressed or uncompressed) public key."""
    return _address(_secp256k1().PublicKey(public_key).format(compressed=False))


def recover_address(digest: bytes, signature: bytes) -> str:
    """Address of the key that made `signature` over `digest`; SignatureError if malformed."""
    return _address(_recover(digest, signature).format(compressed=False))


def recover_public_key(digest: bytes, signature: bytes) -> bytes:
    """Compressed public key that made `signature` over `digest`."""
    return bytes(_recover(digest, signature).format(compressed=True))


def _recover(digest: bytes, signature: bytes) -> PublicKey:
    if len(digest) != 32:
        raise SignatureError("a signed digest must be 32 bytes")
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"a signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        key: PublicKey = _secp256k1().PublicKey.from_signature_and_message(
            signature, digest, hasher=None
        )
        return key
    except Exception as exc:  # coincurve raises ValueError or its own errors
        raise SignatureError(f"signature does not verify: {exc}") from None


def verify(digest: bytes, signature: bytes, address: str) -> bool:
    """True when `signature` over `digest` was made by the key of `address`."""
    try:
        return recover_address(digest, signature) == address
    except SignatureError:
        return False


class Signer:
    """A private key that signs digests; its address is the node's peer id."""

    def __init__(self, secret: bytes) -> None:
        self._key = _secp256k1().PrivateKey(secret)
        self.public_key: bytes = self._key.public_key.format(compressed=True)
        self.address: str = address_of(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        """A new random key."""
        return cls(os.urandom(32))

    def sign(self, digest: bytes) -> bytes:
        """Recoverable signature (65 bytes) over a 32-byte digest."""
        if len(digest) != 32:
            raise SignatureError("a signed digest must be 32 bytes")
        return self._key.sign_recoverable(digest, hasher=None)

    def secret_bytes(self) -> bytes:
        """The raw private key (for persisting it)."""
        return self._key.secret


def load_pem_key(data: bytes, password: str | None) -> Signer:
    """A secp256k1 private key from PEM (PKCS#8 or SEC1, optionally password-protected)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(
            data, password=password.encode() if password else None
        )
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read the PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256k1":
        raise SignatureError("the PEM private key is not a secp256k1 key")
    return Signer(key.private_numbers().private_value.to_bytes(32, "big"))


def load_or_create_key(path: Path, password: str | None = None) -> Signer:
    """Load the private key at `path` (hex, or PEM with `password`), creating a hex key file
    (mode 0600) on first use."""
    if path.exists():
        raw = path.read_bytes()
        if raw.lstrip().startswith(b"-----BEGIN"):
            try:
                return load_pem_key(raw, password)
            except SignatureError as exc:
                raise SignatureError(f"key file {path}: {exc}") from None
        try:
            return Signer(bytes.fromhex(raw.decode().strip()))
        except ValueError as exc:
            raise SignatureError(f"key file {path} does not hold a valid private key") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    signer = Signer.generate()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(signer.secret_bytes().hex())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return signer
