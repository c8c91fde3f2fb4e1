"""secp256k1 signing with recoverable signatures; peer ids are addresses derived from public keys.

An address is "hx" + the last 20 bytes of SHA3-256 of the uncompressed public key (without its
0x04 prefix), as ICON derives it. A signature is 65 bytes (r, s, recovery id) over a 32-byte digest,
so a verifier recovers the public key and compares addresses; no separate key needs to travel.

A node keeps its key in a file of mode 0600 (a more open file is refused): PKCS#8 PEM encrypted
with a password, or, on a development network without a password, the key in hex (a file in the
older hex form keeps loading).
"""

from __future__ import annotations

import enum
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coincurve import PublicKey

from loopchain.durable import make_directories, sweep_leftovers, write_atomic
from loopchain.types.hashing import sha3_256
from loopchain.types.passwords import KEY_PASSWORD_ENV, OWNER_ONLY, access_problem

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


class SignatureMemo:
    """Signatures already found good, bounded (oldest forgotten first). A vote is checked when it
    arrives and again in the certificate that gathers it, which the next block carries too, each
    time as a new object. Recovery is the dearest step. Only good signatures are remembered, so a
    forged one costs its sender a recovery every time. Keys hold the digest, so signatures over
    different kinds of object never collide. (A transaction keeps its good answer on itself:
    blocks carry the very objects the pool checked.)"""

    def __init__(self, size: int) -> None:
        self.size = size
        self._good: OrderedDict[tuple[bytes, bytes, str], None] = OrderedDict()

    def remember(self, digest: bytes, signature: bytes, address: str) -> None:
        """Record a signature known to be good (one this process made itself)."""
        self._good[(digest, signature, address)] = None
        if len(self._good) > self.size:
            self._good.popitem(last=False)

    def recovers_to(self, digest: bytes, signature: bytes, address: str) -> bool:
        """True when `signature` over `digest` recovers to `address`; SignatureError when the
        signature is malformed."""
        if (digest, signature, address) in self._good:
            return True
        good = recover_address(digest, signature) == address
        if good:
            self.remember(digest, signature, address)
        return good

    def check(self, digest: bytes, signature: bytes, address: str) -> bool:
        """True when `signature` over `digest` recovers to `address` (False when malformed)."""
        try:
            return self.recovers_to(digest, signature, address)
        except ValueError:
            return False


SIGNATURES = SignatureMemo(1 << 13)  # votes of the last blocks: ~420 bytes each


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

    @classmethod
    def from_hex(cls, text: str) -> Signer:
        """The private key written in hex (64 digits, "0x" allowed); SignatureError saying why
        not, never quoting `text` (a key)."""
        digits = text.strip().removeprefix("0x")
        try:
            if len(digits) != 64:
                raise ValueError(len(digits))
            secret = bytes.fromhex(digits)
        except ValueError:
            raise SignatureError("not a private key in hex (64 digits)") from None
        try:
            return cls(secret)
        except ValueError:  # zero, or not below the curve's order
            raise SignatureError("not a valid secp256k1 private key") from None


def not_utf8(text: str) -> bool:
    """`text` holds lone surrogates, the only text UTF-8 cannot encode (undecodable bytes of the
    environment or the command line); looked for without encoding, so that no UnicodeEncodeError,
    which would hold the whole text (a password), is ever made."""
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _password_bytes(password: str) -> bytes:
    if not_utf8(password):
        raise SignatureError("the key password is not UTF-8 text")
    return password.encode()


def load_pem_key(data: bytes, password: str | None, *, der: bool = False) -> Signer:
    """A secp256k1 private key from PEM (PKCS#8 or SEC1, optionally password-protected), or from
    DER when `der` (as loopchain's create_sign_pki.py wrote it: encrypted PKCS#8)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    kind = "DER" if der else "PEM"
    load = serialization.load_der_private_key if der else serialization.load_pem_private_key
    try:
        key = load(data, password=_password_bytes(password) if password else None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read the {kind} private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256k1":
        raise SignatureError(f"the {kind} private key is not a secp256k1 key")
    return Signer(key.private_numbers().private_value.to_bytes(32, "big"))


def encrypted_pem(signer: Signer, password: str) -> bytes:
    """The key as PKCS#8 PEM encrypted with `password` (cryptography's best available scheme)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not password:
        raise SignatureError("an encrypted key needs a non-empty password")
    key = ec.derive_private_key(int.from_bytes(signer.secret_bytes(), "big"), ec.SECP256K1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(_password_bytes(password)),
    )


class KeyProtection(enum.Enum):
    """How a key file keeps its key."""

    ENCRYPTED = "encrypted PEM"
    PLAIN_PEM = "unencrypted PEM"
    PLAIN_HEX = "unencrypted hex"
    ENCRYPTED_DER = "encrypted DER"
    PLAIN_DER = "unencrypted DER"


@dataclass(frozen=True)
class KeyFile:
    """A key file opened by open_key_file: its key, how it is kept and whether it was just made."""

    path: Path
    signer: Signer
    protection: KeyProtection
    created: bool


def _is_pem(raw: bytes) -> bool:
    return raw.lstrip().startswith(b"-----BEGIN")


def is_der(raw: bytes) -> bool:
    """DER (an ASN.1 SEQUENCE with a length byte, never text: a hex key may begin with the
    character "0", 0x30 too): loopchain's create_sign_pki.py wrote private.der so."""
    return raw[:1] == b"\x30" and len(raw) > 2 and not raw.strip().isascii()


def _is_encrypted_pem(raw: bytes) -> bool:
    # PKCS#8 "BEGIN ENCRYPTED PRIVATE KEY", or a traditional PEM's "Proc-Type: 4,ENCRYPTED"
    return _is_pem(raw) and b"ENCRYPTED" in raw


def key_file_is_encrypted(path: Path) -> bool:
    """True when `path` exists and holds an encrypted PEM or DER key (its password is needed to
    load it)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(4096)
    except OSError:
        return False
    if is_der(raw):
        try:
            load_pem_key(raw, None, der=True)
        except SignatureError as exc:
            return "encrypted" in str(exc)
        return False
    return _is_encrypted_pem(raw)


def open_key_file(path: Path, password: str | None = None) -> KeyFile:
    """Load the private key at `path`, or create it (mode 0600) on first use.

    A new key is written as PKCS#8 PEM encrypted with `password`, or as hex when there is no
    password (a development network). An existing file may hold hex, PEM or encrypted PEM (which
    needs `password`); a file group or others may access is refused. Temporary files of writes
    killed midway are swept from its folder first (durable.sweep_leftovers).
    """
    sweep_leftovers(path.parent)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _create_key_file(path, password)
    except OSError as exc:
        raise SignatureError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    problem = access_problem(path, "key file")
    if problem is not None:
        raise SignatureError(problem)
    if _is_encrypted_pem(raw):
        if not password:
            raise SignatureError(
                f"key file {path} is encrypted: give its password in ${KEY_PASSWORD_ENV} or a "
                "password file (or type it when a terminal asks)"
            )
        return KeyFile(path, _load_pem(path, raw, password), KeyProtection.ENCRYPTED, False)
    if _is_pem(raw):
        return KeyFile(path, _load_pem(path, raw, None), KeyProtection.PLAIN_PEM, False)
    if is_der(raw):
        return _open_der(path, raw, password)
    try:
        signer = Signer(bytes.fromhex(raw.decode().strip()))
    except ValueError as exc:
        raise SignatureError(f"key file {path} does not hold a valid private key") from exc
    return KeyFile(path, signer, KeyProtection.PLAIN_HEX, False)


def _open_der(path: Path, raw: bytes, password: str | None) -> KeyFile:
    """The DER key file at `path`: PKCS#8 encrypted with `password` (as loopchain's
    create_sign_pki.py wrote private.der), or unencrypted."""
    try:
        signer = load_pem_key(raw, None, der=True)
    except SignatureError as plain_failed:
        if not password:
            raise SignatureError(
                f"key file {path}: {plain_failed} (if it is encrypted, give its password in "
                f"${KEY_PASSWORD_ENV} or a password file)"
            ) from None
        try:
            signer = load_pem_key(raw, password, der=True)
        except SignatureError as exc:
            raise SignatureError(f"key file {path}: {exc} (wrong password?)") from None
        return KeyFile(path, signer, KeyProtection.ENCRYPTED_DER, False)
    return KeyFile(path, signer, KeyProtection.PLAIN_DER, False)


def _load_pem(path: Path, raw: bytes, password: str | None) -> Signer:
    try:
        return load_pem_key(raw, password)
    except SignatureError as exc:
        wrong = " (wrong password?)" if password else ""
        raise SignatureError(f"key file {path}: {exc}{wrong}") from None


def _create_key_file(path: Path, password: str | None) -> KeyFile:
    signer = Signer.generate()
    if password:
        data, protection = encrypted_pem(signer, password), KeyProtection.ENCRYPTED
    else:
        data, protection = signer.secret_bytes().hex().encode(), KeyProtection.PLAIN_HEX
    make_directories(path.parent)  # each new folder synced: a power cut keeps the key's path
    write_private_file(path, data)
    return KeyFile(path, signer, protection, True)


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600, atomically and durably (durable.write_atomic)."""
    write_atomic(path, data, OWNER_ONLY)


def load_or_create_key(path: Path, password: str | None = None) -> Signer:
    """The key of open_key_file(path, password)."""
    return open_key_file(path, password).signer
