"""A CA directory (CA certificate and key, the peer certificates it issued, its CRL) and the
RadioStation's certificate service over one.

Layout, shared by the RadioStation (its own CA lives in
{DEFAULT_STORAGE_PATH}/radiostation_{port}/ca/; `--cert DIR` names another) and
tools/certificate_util.py:

    ca.pem                                   CA certificate; its presence means the CA exists
    ca_key.pem                               CA key, PKCS#8 PEM, encrypted when a password is set
    ca.crl.pem                               CRL signed by the CA; absent while nothing is revoked
    peers/<peer id>/cert.pem                 the newest certificate issued to the peer
    peers/<peer id>/ca.pem                   a copy of ca.pem, so the folder can go to the peer as is
    peers/<peer id>/tls_key.pem              the peer's TLS key, only when certificate_util made it
    peers/<peer id>/issued/<serial hex>.pem  every certificate ever issued to the peer

Every file is written under a temporary name of its own (the RadioStation and certificate_util
writing at once never share one), synced and renamed, and its folder synced, as is a new folder
into its parent (durable.write_atomic): a crash or power cut leaves the old or the new. The
temporary files of a writer killed midway are swept (durable.sweep_leftovers) from the top folder
when the directory is opened, and from a peer's folders when it is issued a certificate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopchain.configure import Config, shown
from loopchain.durable import sweep_leftovers, write_atomic
from loopchain.lazy import lazy_module
from loopchain.types.crypto import verify

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from loopchain.types import certificates as pki
else:  # cryptography costs a process ~10 MB: a RadioStation without a CA never loads it
    pki = lazy_module("loopchain.types.certificates")

CA_VALID_DAYS = 3650
PEER_CERT_VALID_DAYS = 365  # validity of the peer certificates the RadioStation issues
MAX_PEER_CERTIFICATES = 10_000  # bound on the certificates one directory issues
CA_PASSWORD_ENV = "LOOPCHAIN_CA_KEY_PASSWORD"  # read by radiostation.py, never served as config
_PEER_ID = re.compile(r"hx[0-9a-f]{40}")
_SECRET_MODE = 0o600


class CertStoreError(Exception):
    """A CA directory or request that cannot be served as asked; the message says why."""


class NoCA(CertStoreError):
    """The directory holds no CA yet."""


class BadCertRequest(CertStoreError):
    """A malformed certificate request."""


@dataclass(frozen=True)
class IssuedCertificate:
    """One certificate the CA issued, with its state."""

    peer_id: str
    cert: x509.Certificate
    revoked: bool
    current: bool  # the newest one issued to its peer


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    try:
        write_atomic(path, data, mode)
    except OSError as exc:
        raise CertStoreError(f"cannot write {path}: {exc.strerror or exc}") from None


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    """A file's identity and change time; a folder's links count its subfolders too (a new one
    shows even within the clock tick of the last change)."""
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_ino, found.st_mtime_ns, found.st_size, found.st_nlink)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertStoreError(f"cannot read {path}: {exc.strerror or exc}") from None


def check_peer_id(peer_id: str) -> str:
    """`peer_id` when it looks like "hx" + 40 hex digits; CertStoreError otherwise."""
    if not _PEER_ID.fullmatch(peer_id):
        raise CertStoreError(f"{shown(peer_id)} is not a peer id (hx + 40 lowercase hex digits)")
    return peer_id


class CertificateDirectory:
    """A CA directory on disk (layout in the module docstring)."""

    def __init__(self, root: Path, password: pki.Password = None) -> None:
        self.root = root
        self._password = password
        sweep_leftovers(root)
        self._ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None

    @property
    def ca_path(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        return self.root / "ca_key.pem"

    @property
    def crl_path(self) -> Path:
        return self.root / "ca.crl.pem"

    def peer_dir(self, peer_id: str) -> Path:
        """The folder of one peer's certificates."""
        return self.root / "peers" / check_peer_id(peer_id)

    def has_ca(self) -> bool:
        """True when the directory holds a CA certificate."""
        return self.ca_path.is_file()

    def ca_certificate(self) -> x509.Certificate:
        """The CA certificate (no key needed); NoCA when there is none."""
        if self._ca is not None:
            return self._ca[0]
        if not self.has_ca():
            raise NoCA(f"no CA in {self.root} (no {self.ca_path.name})")
        try:
            cert = pki.certificate_from_pem(_read(self.ca_path))
        except pki.CertificateError as exc:
            raise CertStoreError(f"{self.ca_path} is corrupt: {exc}") from None
        if not pki.is_ca(cert):
            raise CertStoreError(f"{self.ca_path} is not a CA certificate")
        return cert

    def load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The CA certificate and key; NoCA, or CertStoreError for a wrong password or bad files."""
        if self._ca is None:
            cert = self.ca_certificate()
            if not self.ca_key_path.is_file():
                raise CertStoreError(f"the CA key {self.ca_key_path} is missing")
            try:
                key = pki.private_key_from_pem(_read(self.ca_key_path), self._password)
            except pki.CertificateError as exc:
                raise CertStoreError(f"cannot use the CA key {self.ca_key_path}: {exc}") from None
            if key.public_key() != cert.public_key():
                raise CertStoreError(f"{self.ca_key_path} does not belong to {self.ca_path}")
            self._ca = (cert, key)
        return self._ca

    def create_ca(self, common_name: str, valid_days: int) -> x509.Certificate:
        """Create the CA (key first, then certificate); refuses when one exists already."""
        if self.has_ca():
            raise CertStoreError(f"{self.root} already holds a CA; it is never replaced")
        try:
            cert, key = pki.create_ca(common_name, valid_days)
        except pki.CertificateError as exc:
            raise BadCertRequest(str(exc)) from None
        _write_atomic(self.ca_key_path, pki.private_key_to_pem(key, self._password), _SECRET_MODE)
        _write_atomic(self.ca_path, pki.certificate_to_pem(cert))
        self._ca = (cert, key)
        return cert

    def _issued_count(self) -> int:
        return sum(1 for _ in (self.root / "peers").glob("*/issued/*.pem"))

    def issue_peer(
        self,
        signing_public_key: bytes,
        tls_public_key: ec.EllipticCurvePublicKey,
        valid_days: int,
        tls_key_pem: bytes | None = None,
    ) -> x509.Certificate:
        """Issue and store a peer certificate (and its TLS key when given); BadCertRequest if bad."""
        ca_cert, ca_key = self.load_ca()
        if self._issued_count() >= MAX_PEER_CERTIFICATES:
            raise CertStoreError(f"{self.root} has issued {MAX_PEER_CERTIFICATES} certificates")
        try:
            cert = pki.issue_peer_certificate(
                ca_cert, ca_key, signing_public_key, tls_public_key, valid_days
            )
        except pki.CertificateError as exc:
            raise BadCertRequest(str(exc)) from None
        peer_id, _ = pki.peer_identity(cert)
        folder = self.peer_dir(peer_id)
        sweep_leftovers(folder)
        sweep_leftovers(folder / "issued")
        pem = pki.certificate_to_pem(cert)
        _write_atomic(folder / "issued" / f"{pki.serial_hex(cert.serial_number)}.pem", pem)
        if tls_key_pem is not None:
            _write_atomic(folder / "tls_key.pem", tls_key_pem, _SECRET_MODE)
        _write_atomic(folder / "ca.pem", pki.certificate_to_pem(ca_cert))
        _write_atomic(folder / "cert.pem", pem)
        return cert

    def revoked(self) -> dict[int, datetime]:
        """Serial -> revocation time from the CA's CRL (empty when there is none)."""
        if not self.crl_path.is_file():
            return {}
        try:
            crl = pki.crl_from_pem(_read(self.crl_path))
            return pki.crl_entries(crl, self.ca_certificate())
        except pki.CertificateError as exc:
            raise CertStoreError(f"{self.crl_path} is not usable: {exc}") from None

    def _load_issued(self, path: Path) -> x509.Certificate:
        try:
            return pki.certificate_from_pem(_read(path))
        except pki.CertificateError as exc:
            raise CertStoreError(f"{path} is corrupt: {exc}") from None

    def _current_serial(self, folder: Path) -> int | None:
        current = folder / "cert.pem"
        return self._load_issued(current).serial_number if current.is_file() else None

    def peer_certificates(self, peer_id: str | None = None) -> list[IssuedCertificate]:
        """Every certificate issued (to `peer_id` only, when given), by peer id then age."""
        peers = self.root / "peers"
        if peer_id is not None:
            folders = [self.peer_dir(peer_id)]
        else:
            folders = sorted(peers.iterdir()) if peers.is_dir() else []
        revoked = self.revoked()
        found = []
        for folder in folders:
            if not _PEER_ID.fullmatch(folder.name) or not folder.is_dir():
                continue
            current = self._current_serial(folder)
            certs = [self._load_issued(p) for p in sorted((folder / "issued").glob("*.pem"))]
            certs.sort(key=lambda c: (c.not_valid_before_utc, c.serial_number))
            for cert in certs:
                serial = cert.serial_number
                found.append(
                    IssuedCertificate(folder.name, cert, serial in revoked, serial == current)
                )
        return found

    def revoke_peer(self, peer_id: str, now: datetime | None = None) -> list[int]:
        """Revoke every certificate issued to `peer_id`; returns the serials newly revoked."""
        issued = self.peer_certificates(check_peer_id(peer_id))
        if not issued:
            raise CertStoreError(f"no certificate was issued to {peer_id} by {self.root}")
        ca_cert, ca_key = self.load_ca()
        entries = self.revoked()
        now = now or datetime.now(UTC)
        new = [c.cert.serial_number for c in issued if c.cert.serial_number not in entries]
        if new:
            entries.update(dict.fromkeys(new, now))
            _write_atomic(self.crl_path, pki.crl_to_pem(pki.create_crl(ca_cert, ca_key, entries)))
        return new


# -- the RadioStation's service


def _hex_field(body: Mapping[str, Any], name: str, size: int) -> bytes:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadCertRequest(f"field {name!r} must be a hex string of {size} bytes")
    text = value[2:] if value.startswith("0x") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise BadCertRequest(f"field {name!r} is not hex") from None
    if len(raw) != size:
        raise BadCertRequest(f"field {name!r} must be {size} bytes, got {len(raw)}")
    return raw


def parse_issue_request(body: Mapping[str, Any]) -> tuple[bytes, ec.EllipticCurvePublicKey]:
    """(secp256k1 key, P-256 TLS key) of a request, checked; BadCertRequest names what is wrong.

    The request proves possession of the signing key: `signature` is the 65-byte recoverable
    signature (hex) of `cert_request_digest(public_key, tls_public_key)` by that key.
    """
    signing_key = _hex_field(body, "public_key", 33)
    try:
        peer_id = pki.check_signing_public_key(signing_key)
    except pki.CertificateError as exc:
        raise BadCertRequest(f"field 'public_key': {exc}") from None
    pem = body.get("tls_public_key_pem")
    if not isinstance(pem, str) or not pem.strip():
        raise BadCertRequest("field 'tls_public_key_pem' must be a PEM public key (P-256)")
    try:
        tls_key = pki.check_tls_public_key(pki.public_key_from_pem(pem.encode("utf-8")))
    except pki.CertificateError as exc:
        raise BadCertRequest(f"field 'tls_public_key_pem': {exc}") from None
    signature = _hex_field(body, "signature", 65)
    if not verify(pki.cert_request_digest(signing_key, tls_key), signature, peer_id):
        raise BadCertRequest(
            f"field 'signature' is not {peer_id}'s signature of this request "
            "(sign cert_request_digest(public_key, tls public key) with the signing key)"
        )
    return signing_key, tls_key


class CertificateService:
    """The certificate APIs of a RadioStation over one CA directory."""

    def __init__(self, directory: CertificateDirectory, own: bool, common_name: str) -> None:
        self.directory = directory
        self.own = own  # its own directory: the operator's first peer issue creates the CA
        self.common_name = common_name

    def describe_state(self) -> str:
        """Load the CA if there is one (CertStoreError when unusable); a line for the log."""
        if not self.directory.has_ca():
            return f"no CA in {self.directory.root} yet; {self.how_to_create()}"
        cert, _ = self.directory.load_ca()
        serial, end = pki.serial_hex(cert.serial_number), cert.not_valid_after_utc
        return f"CA {cert.subject.rfc4514_string()} (serial {serial}, valid until {end:%Y-%m-%d})"

    def how_to_create(self) -> str:
        """How an operator creates the missing CA."""
        return (
            "create it with POST /api/v1/cert/issue/ca and the operator token "
            f"(Authorization: Bearer), or tools/certificate_util.py ca create --dir {self.directory.root}"
        )

    def _ca(self, create: bool) -> x509.Certificate:
        if create and not self.directory.has_ca():
            return self.directory.create_ca(self.common_name, CA_VALID_DAYS)
        if not self.directory.has_ca():
            raise NoCA(f"no CA in {self.directory.root}; {self.how_to_create()}")
        return self.directory.load_ca()[0]

    def list_ca(self) -> dict[str, Any]:
        """The CA certificate; NoCA while there is none (reading never creates it)."""
        return pki.describe_certificate(self._ca(create=False), "CA")

    def issue_ca(self) -> dict[str, Any]:
        """The CA certificate, created when missing (an existing CA is never replaced)."""
        return pki.describe_certificate(self._ca(create=True), "CA")

    def listing_state(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        """What says, at the cost of two stats, that `list_peers` may have changed: the
        revocation list, and the folder of peers' folders (a new peer's)."""
        directory = self.directory
        return tuple(_stat_key(p) for p in (directory.crl_path, directory.root / "peers"))

    def list_peers(self) -> list[dict[str, Any]]:
        """Every peer certificate issued, with its peer id and whether it is revoked or current."""
        if not self.directory.has_ca():
            return []
        return [
            {
                **pki.describe_certificate(c.cert, "PEER"),
                "peer_id": c.peer_id,
                "revoked": c.revoked,
                "current": c.current,
            }
            for c in self.directory.peer_certificates()
        ]

    def issue_peer(self, body: Mapping[str, Any], valid_days: int) -> dict[str, Any]:
        """Issue a certificate for a checked request (creating the RadioStation's own CA when
        missing; a given directory must hold one); BadCertRequest, NoCA or CertStoreError."""
        signing_key, tls_key = parse_issue_request(body)
        ca_cert = self._ca(create=self.own)
        cert = self.directory.issue_peer(signing_key, tls_key, valid_days)
        peer_id, _ = pki.peer_identity(cert)
        described = pki.describe_certificate(cert, "PEER")
        ca_pem = pki.certificate_to_pem(ca_cert).decode("ascii")
        return {**described, "peer_id": peer_id, "ca_cert_pem": ca_pem}


def own_directory(config: Config) -> Path:
    """The RadioStation's own CA directory under DEFAULT_STORAGE_PATH."""
    base = Path(config.DEFAULT_STORAGE_PATH) / f"radiostation_{config.PORT_RADIOSTATION}"
    return base / "ca"


def create_certificate_service(
    config: Config, cert_dir: str | None, password: pki.Password
) -> CertificateService:
    """The service over `cert_dir` (which must exist) or the RadioStation's own CA directory."""
    name = f"loopchain RadioStation {config.PORT_RADIOSTATION} CA"
    if cert_dir is None:
        return CertificateService(CertificateDirectory(own_directory(config), password), True, name)
    root = Path(cert_dir)
    if not root.is_dir():
        raise CertStoreError(f"--cert {cert_dir}: no such directory")
    return CertificateService(CertificateDirectory(root, password), False, name)
