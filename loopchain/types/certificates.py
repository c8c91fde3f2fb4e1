"""X.509 certificates of a channel's CA and its peers, binding each peer's secp256k1 signing key.

gRPC's TLS (BoringSSL) does not accept secp256k1, so CA and peer TLS keys are ECDSA P-256. A peer
certificate carries the peer's identity, all of it signed by the CA:
* subject CN = peer id ("hx…"); SubjectAlternativeName DNS name = peer id (a gRPC client pins the
  server it expects with the channel option `grpc.ssl_target_name_override` = peer id) and URI
  "loopchain:peer:<peer id>";
* a non-critical extension (PEER_KEY_OID) whose value is a DER OCTET STRING holding the 33-byte
  compressed secp256k1 public key; its address must equal the peer id, and blocks, votes and
  complaints of the peer verify against that key.
Revocation is an X.509 CRL signed by the CA. Pure functions: no file or network I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loopchain.types.crypto import address_of, not_utf8
from loopchain.types.hashing import sha3_256

PEER_KEY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.9999.1.1")
PEER_URI_PREFIX = "loopchain:peer:"
CLOCK_SKEW = timedelta(minutes=5)  # default validity starts this long before "now"
CERT_REQUEST_DOMAIN = b"loopchain/cert-request/v1\x00"
_PEER_ID = re.compile(r"hx[0-9a-f]{40}")
_DNS_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_OCTET_STRING_33 = bytes([0x04, 33])

Password = str | bytes | None


class CertificateError(ValueError):
    """A certificate, key or CRL that is malformed or does not meet loopchain's rules."""


# -- keys


def generate_tls_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 key (the curve gRPC's TLS accepts)."""
    return ec.generate_private_key(ec.SECP256R1())


def _check_curve(key: Any, curve: type[ec.EllipticCurve], what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{what} must be an EC key, got {type(key).__name__}")
    if not isinstance(key.curve, curve):
        raise CertificateError(f"{what} must be on curve {curve.name}, got {key.curve.name}")


def check_tls_public_key(key: Any) -> ec.EllipticCurvePublicKey:
    """`key` when it is an ECDSA P-256 public key; CertificateError otherwise."""
    _check_curve(key, ec.SECP256R1, "a TLS key (gRPC's TLS does not accept secp256k1)")
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError("a TLS public key is expected, not a private key")
    return key


def check_signing_public_key(public_key: bytes) -> str:
    """The peer id of a 33-byte compressed secp256k1 public key; CertificateError if malformed."""
    if not isinstance(public_key, bytes) or len(public_key) != 33:
        size = len(public_key) if isinstance(public_key, bytes) else type(public_key).__name__
        raise CertificateError(f"a signing public key must be 33 compressed bytes, got {size}")
    try:
        return address_of(public_key)
    except Exception as exc:  # coincurve raises ValueError or its own errors
        raise CertificateError(f"not a valid secp256k1 public key: {exc}") from None


def cert_request_digest(
    signing_public_key: bytes, tls_public_key: ec.EllipticCurvePublicKey
) -> bytes:
    """The digest a peer signs (secp256k1, recoverable) to ask for a certificate binding both keys."""
    tls_der = tls_public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha3_256(CERT_REQUEST_DOMAIN + signing_public_key + tls_der)


# -- issuing


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _start(not_before: datetime | None) -> datetime:
    return _utc(not_before) if not_before is not None else datetime.now(UTC) - CLOCK_SKEW


def _check_days(valid_days: int) -> None:
    if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
        raise CertificateError(f"valid_days must be a positive integer, got {valid_days!r}")


def create_ca(
    common_name: str, valid_days: int, *, not_before: datetime | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed P-256 CA certificate (issuing peer certificates only) and its key."""
    _check_days(valid_days)
    if not common_name.strip():
        raise CertificateError("a CA needs a non-empty common name")
    key = generate_tls_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _start(not_before)
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _check_ca_pair(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    if not is_ca(ca_cert):
        raise CertificateError(f"{ca_cert.subject.rfc4514_string()} is not a CA certificate")
    if ca_key.public_key() != ca_cert.public_key():
        raise CertificateError("the CA key does not belong to the CA certificate")


def is_ca(cert: x509.Certificate) -> bool:
    """True when `cert` says it is a CA (basic constraints)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _peer_extensions(
    peer_id: str, signing_public_key: bytes, extra_dns_names: Sequence[str]
) -> list[tuple[Any, bool]]:
    dns = [x509.DNSName(n) for n in (peer_id, *extra_dns_names)]
    names = [*dns, x509.UniformResourceIdentifier(PEER_URI_PREFIX + peer_id)]
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (usage, True),
        (x509.ExtendedKeyUsage(eku), False),
        (x509.SubjectAlternativeName(names), False),
        (x509.UnrecognizedExtension(PEER_KEY_OID, _OCTET_STRING_33 + signing_public_key), False),
    ]


def issue_peer_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    peer_signing_public_key: bytes,
    tls_public_key: ec.EllipticCurvePublicKey,
    valid_days: int,
    serial: int | None = None,
    *,
    not_before: datetime | None = None,
    extra_dns_names: Sequence[str] = (),
) -> x509.Certificate:
    """A CA-signed certificate for `tls_public_key` binding the peer's secp256k1 key and peer id.

    Its validity ends no later than the CA's own. `extra_dns_names` adds SAN DNS names after the
    peer id (e.g. the fixed server name of a RadioStation).
    """
    _check_days(valid_days)
    for name in extra_dns_names:
        if not _DNS_NAME.fullmatch(name):
            raise CertificateError(f"{name!r} is not a DNS name")
    _check_ca_pair(ca_cert, ca_key)
    peer_id = check_signing_public_key(peer_signing_public_key)
    check_tls_public_key(tls_public_key)
    start = _start(not_before)
    end = min(start + timedelta(days=valid_days), ca_cert.not_valid_after_utc)
    if end <= start:
        raise CertificateError(f"the CA expired on {_iso(ca_cert.not_valid_after_utc)}")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, peer_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(tls_public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
    )
    for extension, critical in _peer_extensions(peer_id, peer_signing_public_key, extra_dns_names):
        builder = builder.add_extension(extension, critical)
    return builder.sign(ca_key, hashes.SHA256())


# -- reading and verifying


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise CertificateError(f"subject has {len(names)} common names, expected one")
    return str(names[0].value)


def _alt_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("no SubjectAlternativeName extension") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris, san.get_values_for_type(x509.DNSName)


def _bound_key(cert: x509.Certificate) -> bytes:
    try:
        extension = cert.extensions.get_extension_for_oid(PEER_KEY_OID)
    except x509.ExtensionNotFound:
        raise CertificateError(f"no peer key extension {PEER_KEY_OID.dotted_string}") from None
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(raw) != 35 or not raw.startswith(_OCTET_STRING_33):
        raise CertificateError("the peer key extension is not an OCTET STRING of 33 bytes")
    return raw[2:]


def peer_identity(cert: x509.Certificate) -> tuple[str, bytes]:
    """(peer id, 33-byte secp256k1 public key) bound by a peer certificate; CertificateError if not.

    Checks CN == SAN URI == address of the bound key, that the SAN DNS names (if any) start with
    the peer id, and that it is no CA.
    """
    if is_ca(cert):
        raise CertificateError("it is a CA certificate")
    peer_id = _common_name(cert)
    if not _PEER_ID.fullmatch(peer_id):
        raise CertificateError(f"common name {peer_id!r} is not a peer id (hx + 40 hex digits)")
    uris, dns_names = _alt_names(cert)
    if uris != [PEER_URI_PREFIX + peer_id]:
        raise CertificateError(f"SAN URIs {uris} do not name {PEER_URI_PREFIX}{peer_id}")
    if dns_names and dns_names[0] != peer_id:
        raise CertificateError(f"SAN DNS names {dns_names} do not start with {peer_id}")
    public_key = _bound_key(cert)
    address = check_signing_public_key(public_key)
    if address != peer_id:
        raise CertificateError(f"the bound signing key is {address}'s, not {peer_id}'s")
    return peer_id, public_key


def _iso(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_problem(cert: x509.Certificate, now: datetime, what: str) -> str | None:
    """Why `cert` (named by `what`, "" or e.g. "CA certificate ") is not valid at `now`: expired
    or not yet valid, with the date; None when it is."""
    if now > cert.not_valid_after_utc:
        return f"{what}expired on {_iso(cert.not_valid_after_utc)}"
    if now < cert.not_valid_before_utc:
        return f"{what}not yet valid (valid from {_iso(cert.not_valid_before_utc)})"
    return None


EXPIRY_NOTICE_DAYS = 30  # a node warns this long before its certificate or its CA's expires


def expiry_notice(cert: x509.Certificate, now: datetime, what: str) -> str | None:
    """That `cert` (named by `what`, as `window_problem`), valid at `now`, expires within
    EXPIRY_NOTICE_DAYS, with the date and the days left; None otherwise."""
    left = cert.not_valid_after_utc - now
    if left <= timedelta(0) or left > timedelta(days=EXPIRY_NOTICE_DAYS):
        return None
    days = math.ceil(left / timedelta(days=1))  # (a certificate of 10 days: "in 10 days")
    return (
        f"{what}expires on {_iso(cert.not_valid_after_utc)} (within {days} day{'s' * (days > 1)})"
    )


def verify_peer_certificate(
    cert: x509.Certificate, ca_cert: x509.Certificate, now: datetime, revoked_serials: set[int]
) -> str | None:
    """None when `cert` is a valid peer certificate of `ca_cert` at `now`; else the reason why not.

    Reasons: "not issued by this CA (…)", "does not bind a peer id: …", "revoked (serial …)",
    "expired on …", "not yet valid (…)", "CA certificate expired on …".
    """
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        issuer, ca = cert.issuer.rfc4514_string(), ca_cert.subject.rfc4514_string()
        return f"not issued by this CA (issuer {issuer}; CA {ca})"
    try:
        peer_identity(cert)
    except CertificateError as exc:
        return f"does not bind a peer id: {exc}"
    if cert.serial_number in revoked_serials:
        return f"revoked (serial {serial_hex(cert.serial_number)})"
    now = _utc(now)
    return window_problem(cert, now, "") or window_problem(ca_cert, now, "CA certificate ")


def checked_peer(
    cert_pem: bytes, ca_cert: x509.Certificate, now: datetime, revoked_serials: Collection[int]
) -> tuple[str, datetime]:
    """The peer id a peer certificate (PEM) binds and when it expires, once it is found valid as
    verify_peer_certificate finds it; CertificateError with the reason when it is not."""
    cert = certificate_from_pem(cert_pem)
    problem = verify_peer_certificate(cert, ca_cert, now, set(revoked_serials))
    if problem is not None:
        raise CertificateError(problem)
    return peer_identity(cert)[0], cert.not_valid_after_utc


def checked_named(
    cert_pem: bytes,
    ca_cert: x509.Certificate,
    now: datetime,
    revoked_serials: Collection[int],
    name: str,
) -> tuple[str, datetime]:
    """`name` and when the certificate (PEM) expires, once it is found valid as
    verify_peer_certificate finds it and it states `name` among its DNS names (a server known by
    a name besides its peer id: the RadioStation's GRPC_SSL_SERVER_NAME_RADIOSTATION);
    CertificateError with the reason when not."""
    cert = certificate_from_pem(cert_pem)
    problem = verify_peer_certificate(cert, ca_cert, now, set(revoked_serials))
    if problem is None and name not in _alt_names(cert)[1]:
        problem = f"it does not name {name!r}"
    if problem is not None:
        raise CertificateError(problem)
    return name, cert.not_valid_after_utc


def serial_hex(serial: int) -> str:
    """A serial number as lowercase hex (as `openssl x509 -serial` shows it, without case)."""
    return format(serial, "x")


def describe_certificate(cert: x509.Certificate, cert_type: str) -> dict[str, Any]:
    """The RadioStation REST shape of a certificate."""
    return {
        "cert_type": cert_type,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial_number": serial_hex(cert.serial_number),
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "cert_pem": certificate_to_pem(cert).decode("ascii"),
    }


# -- revocation


def create_crl(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    revoked: Mapping[int, datetime],
    now: datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by the CA listing `revoked` (serial -> revocation time)."""
    _check_ca_pair(ca_cert, ca_key)
    now = _utc(now) if now is not None else datetime.now(UTC)
    next_update = max(ca_cert.not_valid_after_utc, now + timedelta(days=1))
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(len(revoked)), critical=False)
    )
    for serial, when in sorted(revoked.items()):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_utc(when))
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, hashes.SHA256())


def crl_entries(
    crl: x509.CertificateRevocationList, ca_cert: x509.Certificate
) -> dict[int, datetime]:
    """Serial -> revocation time of a CRL; CertificateError unless the CA signed it."""
    if crl.issuer != ca_cert.subject:
        raise CertificateError(f"the CRL was issued by {crl.issuer.rfc4514_string()}, not this CA")
    public_key = ca_cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(
        public_key
    ):
        raise CertificateError("the CRL's signature does not verify with the CA key")
    return {entry.serial_number: entry.revocation_date_utc for entry in crl}


def revoked_serials_from_bytes(data: bytes, ca_cert: x509.Certificate) -> set[int]:
    """Revoked serials from a JSON list of serials (ints or hex strings) or a CRL PEM of the CA."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return set(crl_entries(crl_from_pem(data), ca_cert))
    try:
        values = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CertificateError(f"revocation list is neither a CRL PEM nor JSON: {exc}") from None
    if not isinstance(values, list):
        raise CertificateError("a JSON revocation list must be a list of serial numbers")
    return {_serial_value(v) for v in values}


def _serial_value(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        try:
            return int(value.removeprefix("0x"), 16)
        except ValueError:
            pass
    raise CertificateError(f"{value!r} is not a serial number (positive int or hex string)")


# -- PEM


def check_password_text(password: Password, source: str = "the password") -> None:
    """CertificateError naming `source` when `password` is text that is not UTF-8 (undecodable
    bytes of the environment or the command line, which Python holds as lone surrogates); the
    message shows no part of the password."""
    if isinstance(password, str) and not_utf8(password):
        raise CertificateError(f"{source} is not UTF-8 text")


def _password_bytes(password: Password) -> bytes | None:
    if password is None or password in ("", b""):
        return None
    check_password_text(password)
    return password.encode("utf-8") if isinstance(password, str) else password


def certificate_to_pem(cert: x509.Certificate) -> bytes:
    """PEM text of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_from_pem(data: bytes) -> x509.Certificate:
    """The first certificate of PEM text; CertificateError when there is none."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None


def crl_to_pem(crl: x509.CertificateRevocationList) -> bytes:
    """PEM text of a CRL."""
    return crl.public_bytes(serialization.Encoding.PEM)


def crl_from_pem(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM text; CertificateError when malformed."""
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise CertificateError(f"not a PEM CRL: {exc}") from None


def private_key_to_pem(key: ec.EllipticCurvePrivateKey, password: Password = None) -> bytes:
    """PKCS#8 PEM of a private key, encrypted with `password` when one is given."""
    secret = _password_bytes(password)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def private_key_from_pem(data: bytes, password: Password = None) -> ec.EllipticCurvePrivateKey:
    """An EC private key from PEM; CertificateError naming a missing or wrong password."""
    secret = _password_bytes(password)
    try:
        key = serialization.load_pem_private_key(data, secret)
    except TypeError as exc:
        if secret is None:
            raise CertificateError("the private key is encrypted; a password is needed") from None
        raise CertificateError(f"the private key cannot be read with a password: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        if secret is not None and b"ENCRYPTED" in data:
            raise CertificateError("wrong password for the private key") from None
        raise CertificateError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"expected an EC private key, got {type(key).__name__}")
    return key


def public_key_to_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a public key."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(data: bytes, *, der: bool = False) -> ec.EllipticCurvePublicKey:
    """An EC public key from PEM (DER when `der`); CertificateError when malformed or not EC."""
    load = serialization.load_der_public_key if der else serialization.load_pem_public_key
    try:
        key = load(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"not a {'DER' if der else 'PEM'} public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError(f"expected an EC public key, got {type(key).__name__}")
    return key


# -- the peer's secp256k1 signing key as PEM (cryptography <-> the raw bytes coincurve uses)


def signing_key_to_pem(secret: bytes, password: Password = None) -> bytes:
    """PKCS#8 PEM of a 32-byte secp256k1 private key, encrypted when a password is given."""
    if len(secret) != 32:
        raise CertificateError(f"a secp256k1 private key is 32 bytes, got {len(secret)}")
    key = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256K1())
    return private_key_to_pem(key, password)


def signing_secret_from_pem(data: bytes, password: Password = None) -> bytes:
    """The 32-byte secp256k1 private key in PEM text; CertificateError when not one."""
    key = private_key_from_pem(data, password)
    _check_curve(key, ec.SECP256K1, "a signing key")
    return key.private_numbers().private_value.to_bytes(32, "big")


def signing_public_key_to_pem(public_key: bytes) -> bytes:
    """SubjectPublicKeyInfo PEM of a compressed (or uncompressed) secp256k1 public key."""
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), public_key)
    except ValueError as exc:
        raise CertificateError(f"not a secp256k1 public key: {exc}") from None
    return public_key_to_pem(key)


def signing_public_key_from_pem(data: bytes, *, der: bool = False) -> bytes:
    """The 33-byte compressed secp256k1 public key in PEM text (DER bytes when `der`);
    CertificateError when not one."""
    key = public_key_from_pem(data, der=der)
    _check_curve(key, ec.SECP256K1, "a signing key")
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
