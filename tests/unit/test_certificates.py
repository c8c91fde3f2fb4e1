"""Certificates of a channel's CA and its peers: issuing, binding, verifying, revoking, PEM, and
the CA directory the RadioStation and tools/certificate_util.py share."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loopchain.radiostation import certs
from loopchain.radiostation.certs import (
    BadCertRequest,
    CertificateDirectory,
    CertificateService,
    CertStoreError,
    NoCA,
    parse_issue_request,
)
from loopchain.types import certificates as pki
from loopchain.types.certificates import CertificateError
from loopchain.types.crypto import Signer

NOW = datetime.now(UTC)
CA_CERT, CA_KEY = pki.create_ca("test CA", 120, not_before=NOW - timedelta(days=60))
OTHER_CA_CERT, OTHER_CA_KEY = pki.create_ca("other CA", 30)
SIGNER = Signer(bytes([7]) * 32)
TLS_KEY = pki.generate_tls_key()


def issue(signer: Signer = SIGNER, **kwargs: object) -> x509.Certificate:
    params: dict[str, object] = {"valid_days": 10, **kwargs}
    return pki.issue_peer_certificate(
        CA_CERT,
        CA_KEY,
        signer.public_key,
        TLS_KEY.public_key(),
        **params,  # type: ignore[arg-type]
    )


def check(
    cert: x509.Certificate, revoked: set[int] | None = None, now: datetime | None = None
) -> str | None:
    """Verify against the test CA at `now`, by default the moment of the check (certificates
    issued during a slow run start at their issue time, not at this module's import)."""
    when = now if now is not None else datetime.now(UTC)
    return pki.verify_peer_certificate(cert, CA_CERT, when, revoked or set())


def hand_made(
    common_name: str, extensions: list[tuple[x509.ExtensionType, bool]]
) -> x509.Certificate:
    """A certificate signed by the test CA with whatever subject and extensions a test wants."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(CA_CERT.subject)
        .public_key(TLS_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(CA_KEY, hashes.SHA256())


def binding(peer_id: str, key: bytes) -> list[tuple[x509.ExtensionType, bool]]:
    san = x509.SubjectAlternativeName(
        [x509.DNSName(peer_id), x509.UniformResourceIdentifier(pki.PEER_URI_PREFIX + peer_id)]
    )
    return [(san, False), (x509.UnrecognizedExtension(pki.PEER_KEY_OID, b"\x04\x21" + key), False)]


# -- the CA


def test_ca_is_a_self_signed_p256_ca() -> None:
    assert pki.is_ca(CA_CERT)
    CA_CERT.verify_directly_issued_by(CA_CERT)
    key = CA_CERT.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    assert CA_CERT.subject.rfc4514_string() == "CN=test CA"
    assert CA_CERT.not_valid_before_utc <= NOW <= CA_CERT.not_valid_after_utc
    days = (CA_CERT.not_valid_after_utc - CA_CERT.not_valid_before_utc).days
    assert days == 120


@pytest.mark.parametrize(
    ("name", "days", "message"),
    [(" ", 10, "non-empty common name"), ("ca", 0, "positive integer"), ("ca", True, "positive")],
)
def test_create_ca_refuses_bad_arguments(name: str, days: int, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        pki.create_ca(name, days)


# -- issuing and the identity a certificate binds


def test_peer_certificate_binds_the_signing_key_and_peer_id() -> None:
    cert = issue()
    assert pki.peer_identity(cert) == (SIGNER.address, SIGNER.public_key)
    assert cert.subject.rfc4514_string() == f"CN={SIGNER.address}"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [SIGNER.address]
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [f"loopchain:peer:{SIGNER.address}"]
    extension = cert.extensions.get_extension_for_oid(pki.PEER_KEY_OID)
    assert not extension.critical
    assert cert.public_key() == TLS_KEY.public_key()
    assert not pki.is_ca(cert)
    assert check(cert) is None


def test_extra_dns_names_follow_the_peer_id() -> None:
    cert = issue(extra_dns_names=["loopchain-radiostation"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [SIGNER.address, "loopchain-radiostation"]
    assert check(cert) is None
    with pytest.raises(CertificateError, match="is not a DNS name"):
        issue(extra_dns_names=["bad name!"])


def test_serial_is_random_or_given() -> None:
    assert issue().serial_number != issue().serial_number
    assert issue(serial=4242).serial_number == 4242


def test_validity_ends_no_later_than_the_ca() -> None:
    cert = issue(valid_days=3650)
    assert cert.not_valid_after_utc == CA_CERT.not_valid_after_utc


def test_issue_refuses_a_secp256k1_tls_key() -> None:
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(CertificateError, match=r"secp256r1.*got secp256k1"):
        pki.issue_peer_certificate(CA_CERT, CA_KEY, SIGNER.public_key, k1, 10)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (b"\x02" * 32, "33 compressed bytes, got 32"),
        (b"\x05" + b"\x01" * 32, "not a valid secp256k1 public key"),
    ],
)
def test_issue_refuses_a_malformed_signing_key(key: bytes, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        pki.issue_peer_certificate(CA_CERT, CA_KEY, key, TLS_KEY.public_key(), 10)


def test_issue_refuses_a_non_ca_or_a_foreign_ca_key() -> None:
    peer_cert = issue()
    with pytest.raises(CertificateError, match="is not a CA certificate"):
        pki.issue_peer_certificate(peer_cert, CA_KEY, SIGNER.public_key, TLS_KEY.public_key(), 1)
    with pytest.raises(CertificateError, match="does not belong to the CA certificate"):
        pki.issue_peer_certificate(
            CA_CERT, OTHER_CA_KEY, SIGNER.public_key, TLS_KEY.public_key(), 1
        )


# -- every reason a certificate is refused


def test_expired_certificate_is_refused_with_its_end() -> None:
    cert = issue(valid_days=5, not_before=NOW - timedelta(days=20))
    end = (NOW - timedelta(days=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert check(cert) == f"expired on {end}"
    assert check(cert, now=NOW - timedelta(days=17)) is None


def test_certificate_from_the_future_is_not_yet_valid() -> None:
    cert = issue(not_before=NOW + timedelta(days=2))
    problem = check(cert)
    assert problem is not None and problem.startswith("not yet valid (valid from ")


def test_certificate_of_another_ca_is_refused() -> None:
    cert = pki.issue_peer_certificate(
        OTHER_CA_CERT, OTHER_CA_KEY, SIGNER.public_key, TLS_KEY.public_key(), 10
    )
    assert check(cert) == "not issued by this CA (issuer CN=other CA; CA CN=test CA)"


def test_revoked_certificate_is_refused_with_its_serial() -> None:
    cert = issue(serial=0xABC123)
    assert check(cert, revoked={0xABC123}) == "revoked (serial abc123)"
    assert check(cert, revoked={0xABC124}) is None


def test_a_checked_peer_is_its_peer_id_and_expiry_or_the_reason_it_is_refused() -> None:
    """What a caller's, a member server's and the RadioStation's caller check share."""
    cert = issue(serial=0xABC123)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    now = datetime.now(UTC)
    assert pki.checked_peer(pem, CA_CERT, now, frozenset()) == (
        SIGNER.address,
        cert.not_valid_after_utc,
    )
    with pytest.raises(pki.CertificateError, match=r"^revoked \(serial abc123\)$"):
        pki.checked_peer(pem, CA_CERT, now, frozenset({0xABC123}))
    with pytest.raises(pki.CertificateError, match="expired on"):
        pki.checked_peer(pem, CA_CERT, cert.not_valid_after_utc + timedelta(seconds=1), ())
    with pytest.raises(pki.CertificateError, match="not a PEM certificate"):
        pki.checked_peer(b"garbage", CA_CERT, now, ())


def test_tampered_common_name_breaks_the_signature_and_the_binding() -> None:
    cert = issue()
    other = Signer(bytes([8]) * 32).address
    der = cert.public_bytes(serialization.Encoding.DER)
    tampered = x509.load_der_x509_certificate(
        der.replace(SIGNER.address.encode(), other.encode(), 1)
    )
    assert tampered.subject.rfc4514_string() == f"CN={other}"
    problem = check(tampered)
    assert problem is not None and problem.startswith("not issued by this CA")
    with pytest.raises(CertificateError, match=r"SAN URIs .* do not name"):
        pki.peer_identity(tampered)


def test_ca_signed_certificate_whose_key_is_not_the_peer_ids_does_not_bind() -> None:
    other = Signer(bytes([9]) * 32)
    cert = hand_made(other.address, binding(other.address, SIGNER.public_key))
    assert check(cert) == (
        f"does not bind a peer id: the bound signing key is {SIGNER.address}'s, "
        f"not {other.address}'s"
    )


@pytest.mark.parametrize(
    ("name", "extensions", "reason"),
    [
        ("not-a-peer", [], "common name 'not-a-peer' is not a peer id"),
        (SIGNER.address, [], "no SubjectAlternativeName extension"),
        (SIGNER.address, "san only", "no peer key extension 1.3.6.1.4.1.57264.9999.1.1"),
        (SIGNER.address, "short key", "not an OCTET STRING of 33 bytes"),
        (SIGNER.address, "other dns", "do not start with"),
    ],
)
def test_certificates_missing_parts_of_the_binding_do_not_bind(
    name: str, extensions: object, reason: str
) -> None:
    full = binding(SIGNER.address, SIGNER.public_key)
    chosen: list[tuple[x509.ExtensionType, bool]] = {
        "san only": full[:1],
        "short key": [
            full[0],
            (x509.UnrecognizedExtension(pki.PEER_KEY_OID, b"\x04\x01\x02"), False),
        ],
        "other dns": [
            (
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("example.com"),
                        x509.UniformResourceIdentifier(pki.PEER_URI_PREFIX + SIGNER.address),
                    ]
                ),
                False,
            ),
            full[1],
        ],
    }.get(str(extensions), [])
    problem = check(hand_made(name, chosen))
    assert problem is not None and problem.startswith("does not bind a peer id: ")
    assert reason in problem


def test_a_ca_certificate_is_no_peer_certificate() -> None:
    assert check(CA_CERT) == "does not bind a peer id: it is a CA certificate"
    with pytest.raises(CertificateError, match="it is a CA certificate"):
        pki.peer_identity(CA_CERT)


def test_expired_ca_is_named() -> None:
    cert = issue()
    expired_ca = (
        x509.CertificateBuilder()
        .subject_name(CA_CERT.subject)
        .issuer_name(CA_CERT.subject)
        .public_key(CA_KEY.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=9))
        .not_valid_after(NOW - timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(CA_KEY, hashes.SHA256())
    )
    problem = pki.verify_peer_certificate(cert, expired_ca, datetime.now(UTC), set())
    assert problem is not None and problem.startswith("CA certificate expired on")
    with pytest.raises(CertificateError, match="the CA expired on"):
        pki.issue_peer_certificate(expired_ca, CA_KEY, SIGNER.public_key, TLS_KEY.public_key(), 5)


# -- revocation lists


def test_crl_round_trip_and_foreign_crl_refused() -> None:
    revoked = {5: NOW.replace(microsecond=0), 0xFFEE: NOW.replace(microsecond=0)}
    crl = pki.crl_from_pem(pki.crl_to_pem(pki.create_crl(CA_CERT, CA_KEY, revoked)))
    assert pki.crl_entries(crl, CA_CERT) == revoked
    foreign = pki.create_crl(OTHER_CA_CERT, OTHER_CA_KEY, revoked)
    with pytest.raises(CertificateError, match="issued by CN=other CA"):
        pki.crl_entries(foreign, CA_CERT)
    same_name_ca, same_name_key = pki.create_ca("test CA", 30)
    forged = pki.create_crl(same_name_ca, same_name_key, {})
    with pytest.raises(CertificateError, match="signature does not verify"):
        pki.crl_entries(forged, CA_CERT)


def test_revoked_serials_from_json_or_crl() -> None:
    assert pki.revoked_serials_from_bytes(b'[1, "0xff", "a0"]', CA_CERT) == {1, 255, 160}
    crl_pem = pki.crl_to_pem(pki.create_crl(CA_CERT, CA_KEY, {77: NOW}))
    assert pki.revoked_serials_from_bytes(crl_pem, CA_CERT) == {77}
    for bad, message in [
        (b'{"a": 1}', "must be a list"),
        (b"[-3]", "is not a serial number"),
        (b"[true]", "is not a serial number"),
        (b"nonsense", "neither a CRL PEM nor JSON"),
    ]:
        with pytest.raises(CertificateError, match=message):
            pki.revoked_serials_from_bytes(bad, CA_CERT)


# -- PEM and keys


def test_private_key_pem_with_and_without_password() -> None:
    plain = pki.private_key_to_pem(TLS_KEY)
    assert b"ENCRYPTED" not in plain
    assert pki.private_key_from_pem(plain).private_numbers() == TLS_KEY.private_numbers()
    locked = pki.private_key_to_pem(TLS_KEY, "secret")
    assert b"ENCRYPTED PRIVATE KEY" in locked
    assert (
        pki.private_key_from_pem(locked, b"secret").private_numbers() == TLS_KEY.private_numbers()
    )
    with pytest.raises(CertificateError, match="wrong password"):
        pki.private_key_from_pem(locked, "guess")
    with pytest.raises(CertificateError, match="encrypted; a password is needed"):
        pki.private_key_from_pem(locked)
    with pytest.raises(CertificateError, match="cannot be read with a password"):
        pki.private_key_from_pem(plain, "secret")
    with pytest.raises(CertificateError, match="not a PEM private key"):
        pki.private_key_from_pem(b"garbage")


def test_certificate_and_public_key_pem() -> None:
    cert = issue()
    assert pki.certificate_from_pem(pki.certificate_to_pem(cert)) == cert
    public = TLS_KEY.public_key()
    assert pki.public_key_from_pem(pki.public_key_to_pem(public)) == public
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        pki.certificate_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertificateError, match="not a PEM public key"):
        pki.public_key_from_pem(b"nope")
    with pytest.raises(CertificateError, match="not a PEM CRL"):
        pki.crl_from_pem(b"nope")


def test_signing_key_pem_round_trip_keeps_the_peer_id() -> None:
    pem = pki.signing_key_to_pem(SIGNER.secret_bytes(), "pw")
    assert Signer(pki.signing_secret_from_pem(pem, "pw")).address == SIGNER.address
    public_pem = pki.signing_public_key_to_pem(SIGNER.public_key)
    assert pki.signing_public_key_from_pem(public_pem) == SIGNER.public_key
    with pytest.raises(CertificateError, match="signing key must be on curve secp256k1"):
        pki.signing_secret_from_pem(pki.private_key_to_pem(TLS_KEY))
    with pytest.raises(CertificateError, match="signing key must be on curve secp256k1"):
        pki.signing_public_key_from_pem(pki.public_key_to_pem(TLS_KEY.public_key()))
    with pytest.raises(CertificateError, match="32 bytes, got 31"):
        pki.signing_key_to_pem(b"\x01" * 31)
    with pytest.raises(CertificateError, match="not a secp256k1 public key"):
        pki.signing_public_key_to_pem(b"\x02" + b"\xff" * 32)


def test_cert_request_digest_covers_both_keys() -> None:
    other_tls = pki.generate_tls_key().public_key()
    other_signer = Signer(bytes([3]) * 32)
    digest = pki.cert_request_digest(SIGNER.public_key, TLS_KEY.public_key())
    assert len(digest) == 32
    assert digest != pki.cert_request_digest(SIGNER.public_key, other_tls)
    assert digest != pki.cert_request_digest(other_signer.public_key, TLS_KEY.public_key())


def test_describe_certificate_has_the_rest_fields() -> None:
    described = pki.describe_certificate(issue(serial=255), "PEER")
    assert described["cert_type"] == "PEER"
    assert described["subject"] == f"CN={SIGNER.address}"
    assert described["issuer"] == "CN=test CA"
    assert described["serial_number"] == "ff"
    assert str(described["not_after"]).endswith("Z")
    assert str(described["cert_pem"]).startswith("-----BEGIN CERTIFICATE-----")


# -- the CA directory and the RadioStation's request checks


def test_directory_creates_once_and_reopens_with_the_password(tmp_path: Path) -> None:
    directory = CertificateDirectory(tmp_path, "pw")
    with pytest.raises(NoCA, match="no CA in"):
        directory.ca_certificate()
    cert = directory.create_ca("dir CA", 5)
    assert (tmp_path / "ca_key.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(CertStoreError, match="already holds a CA; it is never replaced"):
        directory.create_ca("again", 5)
    assert CertificateDirectory(tmp_path, "pw").load_ca()[0] == cert
    with pytest.raises(CertStoreError, match="wrong password"):
        CertificateDirectory(tmp_path, "nope").load_ca()
    (tmp_path / "ca.pem").write_text("broken")
    with pytest.raises(CertStoreError, match=r"ca\.pem is corrupt"):
        CertificateDirectory(tmp_path, "pw").load_ca()


def test_directory_issues_lists_and_revokes(tmp_path: Path) -> None:
    directory = CertificateDirectory(tmp_path)
    directory.create_ca("dir CA", 30)
    first = directory.issue_peer(SIGNER.public_key, TLS_KEY.public_key(), 10, tls_key_pem=b"key")
    second = directory.issue_peer(SIGNER.public_key, TLS_KEY.public_key(), 10)
    folder = tmp_path / "peers" / SIGNER.address
    assert (folder / "tls_key.pem").read_bytes() == b"key"
    assert (folder / "ca.pem").read_bytes() == (tmp_path / "ca.pem").read_bytes()
    assert pki.certificate_from_pem((folder / "cert.pem").read_bytes()) == second
    listed = directory.peer_certificates()
    assert [c.cert for c in listed] == sorted(
        [first, second], key=lambda c: (c.not_valid_before_utc, c.serial_number)
    )
    assert [c.current for c in listed].count(True) == 1
    assert not any(c.revoked for c in listed)
    revoked = directory.revoke_peer(SIGNER.address)
    assert sorted(revoked) == sorted([first.serial_number, second.serial_number])
    assert directory.revoke_peer(SIGNER.address) == []
    assert all(c.revoked for c in directory.peer_certificates())
    with pytest.raises(CertStoreError, match="no certificate was issued to"):
        directory.revoke_peer(Signer(bytes([4]) * 32).address)
    with pytest.raises(CertStoreError, match="is not a peer id"):
        directory.revoke_peer("../etc")


def test_directory_bounds_the_certificates_it_issues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certs, "MAX_PEER_CERTIFICATES", 2)
    directory = CertificateDirectory(tmp_path)
    directory.create_ca("dir CA", 30)
    for _ in range(2):
        directory.issue_peer(SIGNER.public_key, TLS_KEY.public_key(), 10)
    with pytest.raises(CertStoreError, match="has issued 2 certificates"):
        directory.issue_peer(SIGNER.public_key, TLS_KEY.public_key(), 10)


def test_directory_writes_are_durable_and_never_share_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is synced under a temporary name of its own, renamed, and its folder synced
    after the rename; each new folder is synced into its parent. A temporary file another
    writer (certificate_util, at the same time) has under the old shared name is not touched."""
    events: list[tuple[str, str, str]] = []
    real_fsync, real_replace, real_mkdir = os.fsync, os.replace, os.mkdir

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    def mkdir(path: str | os.PathLike[str], mode: int = 0o777) -> None:
        real_mkdir(path, mode)
        events.append(("mkdir", str(path), ""))

    root = tmp_path / "ca"
    root.mkdir()
    theirs = root / "ca.pem.tmp"
    theirs.write_bytes(b"another writer's certificate, half written")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)
    directory = CertificateDirectory(root)
    directory.create_ca("dir CA", 30)
    directory.issue_peer(SIGNER.public_key, TLS_KEY.public_key(), 10, tls_key_pem=b"key")
    monkeypatch.undo()
    assert theirs.read_bytes() == b"another writer's certificate, half written"

    def after(index: int, kind: str, path: Path) -> bool:
        return (kind, str(path), "") in events[index + 1 :]

    renames = [
        (i, Path(src), Path(dst)) for i, (kind, src, dst) in enumerate(events) if kind == "replace"
    ]
    folder = root / "peers" / SIGNER.address
    written = {dst for _, _, dst in renames}
    assert {root / "ca.pem", root / "ca_key.pem", folder / "cert.pem", folder / "ca.pem"} <= written
    assert folder / "tls_key.pem" in written and any(p.parent == folder / "issued" for p in written)
    for i, src, dst in renames:
        assert ("fsync", str(src), "") in events[:i], f"{src} renamed unsynced"
        assert after(i, "fsync", dst.parent), f"{dst.parent} not synced after {dst.name}"
        assert src.parent == dst.parent and not src.exists()
    made = [(i, Path(path)) for i, (kind, path, _) in enumerate(events) if kind == "mkdir"]
    assert {path for _, path in made} == {root / "peers", folder, folder / "issued"}
    for i, path in made:
        assert after(i, "fsync", path.parent), f"new folder {path} not synced into its parent"


def request(signer: Signer = SIGNER, /, **changes: object) -> dict[str, object]:
    tls = TLS_KEY.public_key()
    body: dict[str, object] = {
        "public_key": signer.public_key.hex(),
        "tls_public_key_pem": pki.public_key_to_pem(tls).decode(),
        "signature": signer.sign(pki.cert_request_digest(signer.public_key, tls)).hex(),
    }
    body.update(changes)
    return body


def test_issue_request_is_checked_field_by_field() -> None:
    key, tls = parse_issue_request(request())
    assert key == SIGNER.public_key and tls == TLS_KEY.public_key()
    k1_pem = pki.signing_public_key_to_pem(SIGNER.public_key).decode()
    other = Signer(bytes([5]) * 32)
    cases: list[tuple[dict[str, object], str]] = [
        ({"public_key": 5}, "field 'public_key' must be a hex string of 33 bytes"),
        ({"public_key": "zz"}, "field 'public_key' is not hex"),
        ({"public_key": "02" * 32}, "field 'public_key' must be 33 bytes, got 32"),
        ({"public_key": "05" * 33}, "field 'public_key': not a valid secp256k1 public key"),
        ({"tls_public_key_pem": ""}, "field 'tls_public_key_pem' must be a PEM public key"),
        ({"tls_public_key_pem": "junk"}, "field 'tls_public_key_pem': not a PEM public key"),
        ({"tls_public_key_pem": k1_pem}, "gRPC's TLS does not accept secp256k1"),
        ({"signature": "00" * 64}, "field 'signature' must be 65 bytes, got 64"),
        ({"signature": request(other)["signature"]}, f"is not {SIGNER.address}'s signature"),
    ]
    for change, message in cases:
        with pytest.raises(BadCertRequest, match=re.escape(message)):
            parse_issue_request(request(**change))


def test_service_creates_its_own_ca_but_not_in_a_given_directory(tmp_path: Path) -> None:
    own = CertificateService(CertificateDirectory(tmp_path / "own"), True, "own CA")
    assert own.list_peers() == []
    with pytest.raises(NoCA, match="create it with POST /api/v1/cert/issue/ca"):
        own.list_ca()  # reading never creates the CA
    assert not (tmp_path / "own").exists()
    assert own.issue_peer(request(), 10)["issuer"] == "CN=own CA"  # the operator's first issue
    assert own.list_ca()["subject"] == "CN=own CA"
    given = CertificateService(CertificateDirectory(tmp_path / "given"), False, "x")
    with pytest.raises(NoCA, match="create it with POST /api/v1/cert/issue/ca"):
        given.list_ca()
    with pytest.raises(NoCA):
        given.issue_peer(request(), 10)
    with pytest.raises(BadCertRequest):
        given.issue_peer(request(signature="00"), 10)
    created = given.issue_ca()
    assert given.issue_ca() == created == given.list_ca()
    issued = given.issue_peer(request(), 10)
    assert issued["peer_id"] == SIGNER.address and issued["ca_cert_pem"] == created["cert_pem"]
    listed = given.list_peers()
    assert [p["serial_number"] for p in listed] == [issued["serial_number"]]
    assert listed[0]["revoked"] is False and listed[0]["current"] is True
    assert json.loads(json.dumps(listed)) == listed
