#!/usr/bin/env python3
"""A channel's CA and its peer certificates: an interactive menu, or the same as subcommands.

    .venv/bin/python tools/certificate_util.py [--dir D]            (the menu, driven by input())
    certificate_util.py ca create --dir D [--cn NAME] [--days N] [--password-file F]
    certificate_util.py ca show --dir D
    certificate_util.py peer issue --dir D --signing-key FILE [--key-password-file F] [--days N]
                                   [--password-file F]
    certificate_util.py peer list --dir D
    certificate_util.py peer revoke --dir D --peer-id hx... [--password-file F]

The CA key's password (set at `ca create`; needed to issue and revoke) comes from --password-file
FILE (mode 0600), $LOOPCHAIN_CA_KEY_PASSWORD (as radiostation.py reads it) or a prompt when stdin
is a terminal. `peer issue` reads the peer's secp256k1 key from PEM (public key, or private key
opened with the key password: --key-password-file FILE, $LOOPCHAIN_KEY_PASSWORD or a prompt),
makes the peer's P-256 TLS key (encrypted with the key password when there is one) and writes
D/peers/<peer id>/{cert.pem, tls_key.pem, ca.pem}. `peer revoke` adds every certificate of the
peer to the CA's CRL (D/ca.crl.pem); a node uses it as its revocation list (tls/ca.crl.pem).
--password P and --key-password P still work, with a warning: every user of the machine sees
command lines. The directory layout is the RadioStation's (`radiostation.py --cert D`).
Exit codes: 0 done, 1 refused or failed (the message says why), 2 usage error.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from loopchain.radiostation.certs import (
    CA_PASSWORD_ENV,
    CA_VALID_DAYS,
    PEER_CERT_VALID_DAYS,
    CertificateDirectory,
    CertStoreError,
    IssuedCertificate,
)
from loopchain.types import certificates as pki
from loopchain.types.crypto import SignatureError, Signer, is_der, load_pem_key
from loopchain.types.passwords import (
    KEY_PASSWORD_ENV,
    PasswordError,
    can_prompt,
    choose_password,
    prompt_password,
)

DEFAULT_DIR = Path("resources/ca")
DEFAULT_CN = "loopchain CA"
DEFAULT_SIGNING_KEY = Path("resources/default_pki/public.pem")
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM key file, with room to spare
LAST_NOT_AFTER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # X.509 time holds no later
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ToolErrors = (CertStoreError, pki.CertificateError, PasswordError)


class ToolError(Exception):
    """A failure of one operation, reported as one line."""


# -- operations (shared by the menu and the subcommands); each returns the lines to print


def ca_create(directory: CertificateDirectory, common_name: str, days: int) -> list[str]:
    """Create the directory's CA."""
    cert = directory.create_ca(common_name, days)
    if not _key_encrypted(directory):  # (create_sign_pki warns of its keys so: review)
        print(
            f"certificate_util: warning: the CA key {directory.ca_key_path} is NOT encrypted; "
            f"give a password (${CA_PASSWORD_ENV} or --password-file F) to encrypt it",
            file=sys.stderr,
        )
    return [
        f"created CA in {directory.root}",
        *describe_lines(pki.describe_certificate(cert, "CA")),
    ]


def ca_show(directory: CertificateDirectory) -> list[str]:
    """The CA certificate's fields and PEM."""
    described = pki.describe_certificate(directory.ca_certificate(), "CA")
    key_state = "encrypted" if _key_encrypted(directory) else "NOT encrypted"
    return [*describe_lines(described), f"key: {directory.ca_key_path} ({key_state})"]


def describe_lines(described: dict[str, object]) -> list[str]:
    """Lines of a described certificate, PEM last."""
    fields = ("cert_type", "subject", "issuer", "serial_number", "not_before", "not_after")
    return [*(f"{k}: {described[k]}" for k in fields), str(described["cert_pem"]).rstrip()]


def _key_encrypted(directory: CertificateDirectory) -> bool:
    try:
        return b"ENCRYPTED" in directory.ca_key_path.read_bytes()
    except OSError:
        return False


def read_signing_public_key(path: Path, password: str | None) -> bytes:
    """The 33-byte secp256k1 public key in a file holding the public or the private key in PEM,
    or the private key as a peer writes its key file without a password (hex) or loopchain's
    create_sign_pki.py wrote it (DER)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)  # (/dev/zero ran it out of memory)
    except OSError as exc:
        raise ToolError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ToolError(f"signing key {path} is longer than {MAX_KEY_FILE_BYTES} bytes")
    try:
        if is_der(data):
            return load_pem_key(data, password, der=True).public_key
        if b"-----BEGIN" not in data:  # (PEM may follow other text: openssl's Bag Attributes)
            return _from_hex(data, path).public_key
        if b"PRIVATE KEY" in data:
            return Signer(pki.signing_secret_from_pem(data, password)).public_key
        return pki.signing_public_key_from_pem(data)
    except (pki.CertificateError, SignatureError) as exc:
        raise ToolError(f"signing key {path}: {exc}") from None


def _from_hex(data: bytes, path: Path) -> Signer:
    """The private key a peer's key file holds in hex, written without a password."""
    try:
        return Signer.from_hex(data.decode("ascii", "replace"))
    except SignatureError as exc:
        raise ToolError(f"signing key {path} is neither PEM nor DER, and {exc}") from None


def peer_issue(
    directory: CertificateDirectory, signing_key: Path, key_password: str | None, days: int
) -> list[str]:
    """Make a TLS key and a certificate binding the signing key; write them under peers/<id>/."""
    public_key = read_signing_public_key(signing_key, key_password)
    tls_key = pki.generate_tls_key()
    tls_pem = pki.private_key_to_pem(tls_key, key_password)
    cert = directory.issue_peer(public_key, tls_key.public_key(), days, tls_key_pem=tls_pem)
    peer_id, _ = pki.peer_identity(cert)
    folder = directory.peer_dir(peer_id)
    return [
        f"issued certificate {pki.serial_hex(cert.serial_number)} to {peer_id}",
        f"not_after: {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        f"certificate: {folder / 'cert.pem'}",
        f"TLS key: {folder / 'tls_key.pem'}" + ("" if key_password else " (NOT encrypted)"),
        f"CA certificate: {folder / 'ca.pem'}",
    ]


def _status(issued: IssuedCertificate, directory: CertificateDirectory, revoked: set[int]) -> str:
    problem = pki.verify_peer_certificate(
        issued.cert, directory.ca_certificate(), datetime.now(UTC), revoked
    )
    return problem or "valid"


def peer_list(directory: CertificateDirectory) -> list[str]:
    """One line per certificate issued: peer id, serial, end of validity, status."""
    issued = directory.peer_certificates()
    if not issued:
        return [f"no peer certificates in {directory.root}"]
    revoked = set(directory.revoked())
    return [
        f"{c.peer_id}  serial={pki.serial_hex(c.cert.serial_number)}  "
        f"not_after={c.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}  "
        f"{_status(c, directory, revoked)}{'  (current)' if c.current else ''}"
        for c in issued
    ]


def peer_revoke(directory: CertificateDirectory, peer_id: str) -> list[str]:
    """Revoke every certificate issued to `peer_id`."""
    serials = directory.revoke_peer(peer_id.strip())
    if not serials:
        return [f"every certificate of {peer_id} was revoked already"]
    return [f"revoked {peer_id}: serial {pki.serial_hex(s)}" for s in serials]


# -- subcommands


def max_days() -> int:
    """The most days of validity a certificate made now can have: its notAfter (which starts
    CLOCK_SKEW before now) can hold no later moment than LAST_NOT_AFTER."""
    return (LAST_NOT_AFTER - (datetime.now(UTC) - pki.CLOCK_SKEW)).days


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if value > (most := max_days()):
        raise argparse.ArgumentTypeError(
            f"must be at most {most} (a certificate cannot end after "
            f"{LAST_NOT_AFTER:%Y-%m-%d}), got {value}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: subcommands, or none for the menu."""
    parser = argparse.ArgumentParser(prog="certificate_util.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dir", type=Path, help=f"CA directory (the menu's default: {DEFAULT_DIR})"
    )
    groups = parser.add_subparsers(dest="group")
    ca = groups.add_parser("ca", help="the CA").add_subparsers(dest="action", required=True)
    create = ca.add_parser("create", help="create the CA")
    create.add_argument("--cn", default=DEFAULT_CN, help="common name")
    create.add_argument("--days", type=_positive, default=CA_VALID_DAYS)
    show = ca.add_parser("show", help="show the CA certificate")
    peer = groups.add_parser("peer", help="peer certificates")
    actions = peer.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue", help="issue a peer certificate")
    issue.add_argument(
        "--signing-key",
        type=Path,
        required=True,
        help="the peer's key: PEM (public or private), or its key file (hex, DER)",
    )
    issue.add_argument(
        "--key-password-file", help="file (mode 0600): opens the signing key, encrypts the TLS key"
    )
    issue.add_argument(
        "--key-password", help=f"deprecated (visible to others): ${KEY_PASSWORD_ENV}"
    )
    issue.add_argument("--days", type=_positive, default=PEER_CERT_VALID_DAYS)
    listing = actions.add_parser("list", help="list peer certificates")
    revoke = actions.add_parser("revoke", help="revoke every certificate of a peer")
    revoke.add_argument("--peer-id", required=True)
    for sub in (create, issue, revoke):
        sub.add_argument("--password-file", help="file (mode 0600) holding the CA key's password")
        sub.add_argument("--password", help=f"deprecated (visible to others): ${CA_PASSWORD_ENV}")
    for sub in (create, show, issue, listing, revoke):  # (before the subcommand, or after it)
        sub.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help="CA directory")
    return parser


def _warn(text: str) -> None:
    print(f"certificate_util: warning: {text}", file=sys.stderr)


def ca_password(args: argparse.Namespace, *, creating: bool) -> str | None:
    """The CA key's password: --password-file, --password (warned), the environment, or a prompt
    (when creating, or when the CA key is encrypted)."""
    password = choose_password(
        file=getattr(args, "password_file", None),
        argv_value=getattr(args, "password", None),
        env=CA_PASSWORD_ENV,
        warn=_warn,
        argv_flag="--password",
        file_flag="--password-file",
    )
    if password is not None:
        argv_value = getattr(args, "password", None)
        pki.check_password_text(password, _source(argv_value, "--password", CA_PASSWORD_ENV))
        return password
    if creating:
        return prompt_password("password to encrypt the CA key (empty: none)", confirm=True)
    if _key_encrypted(CertificateDirectory(args.dir)):
        return prompt_password("CA key password")
    return None


def key_password(args: argparse.Namespace) -> str | None:
    """The signing key's password (it encrypts the TLS key too): --key-password-file,
    --key-password (warned), $LOOPCHAIN_KEY_PASSWORD, or a prompt when the signing key is an
    encrypted private key."""
    password = choose_password(
        file=args.key_password_file,
        argv_value=args.key_password,
        env=KEY_PASSWORD_ENV,
        warn=_warn,
        argv_flag="--key-password",
        file_flag="--key-password-file",
    )
    if password is not None:
        source = _source(args.key_password, "--key-password", KEY_PASSWORD_ENV)
        pki.check_password_text(password, source)
    elif can_prompt() and _is_encrypted_pem(args.signing_key):
        password = prompt_password(f"password of the signing key {args.signing_key}")
    return password


def _source(argv_value: str | None, argv_flag: str, env: str) -> str:
    """Where choose_password took a password that is not from a file (a password file is
    refused unless it is UTF-8): the command-line option or the environment variable."""
    return f"the password of {argv_flag}" if argv_value else f"${env}"


def _is_encrypted_pem(path: Path) -> bool:
    try:
        return b"ENCRYPTED" in path.read_bytes()
    except OSError:
        return False


def run_command(args: argparse.Namespace) -> list[str]:
    """Run one subcommand; returns its output lines."""
    needs_ca_key = (args.group, args.action) in (
        ("ca", "create"),
        ("peer", "issue"),
        ("peer", "revoke"),
    )
    password = ca_password(args, creating=args.action == "create") if needs_ca_key else None
    directory = CertificateDirectory(args.dir, password)
    match (args.group, args.action):
        case ("ca", "create"):
            return ca_create(directory, args.cn, args.days)
        case ("ca", "show"):
            return ca_show(directory)
        case ("peer", "issue"):
            return peer_issue(directory, args.signing_key, key_password(args), args.days)
        case ("peer", "list"):
            return peer_list(directory)
        case ("peer", "revoke"):
            return peer_revoke(directory, args.peer_id)
    raise ToolError(f"unknown command {args.group} {args.action}")


# -- the menu


def ask(prompt: str, default: str = "") -> str:
    """One answer from stdin (the default when empty); EOFError at the end of input."""
    shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
    answer = input(shown).strip()
    return answer or default


def ask_secret(prompt: str) -> str | None:
    """A password (hidden on a terminal); None when empty."""
    text = getpass.getpass(f"{prompt}: ") if sys.stdin.isatty() else input(f"{prompt}: ")
    return text or None


def ask_days(prompt: str, default: int) -> int:
    """A positive number of days; ToolError when it is not one."""
    text = ask(prompt, str(default))
    try:
        return _positive(text)
    except ValueError:
        raise ToolError(f"validity must be a positive number of days, got {text!r}") from None
    except argparse.ArgumentTypeError as exc:
        raise ToolError(f"validity in days {exc}") from None


def _with_ca_password(root: Path) -> CertificateDirectory:
    plain = CertificateDirectory(root)
    if _key_encrypted(plain):
        return CertificateDirectory(root, ask_secret("CA key password"))
    return plain


def _menu_create(root: Path) -> list[str]:
    common_name = ask("CA common name", DEFAULT_CN)
    days = ask_days("validity in days", CA_VALID_DAYS)
    password = ask_secret("CA key password (empty: not encrypted)")
    return ca_create(CertificateDirectory(root, password), common_name, days)


def _menu_issue(root: Path) -> list[str]:
    signing_key = Path(ask("peer signing key PEM (public or private)", str(DEFAULT_SIGNING_KEY)))
    key_password = ask_secret("signing key password, also encrypts the TLS key (empty: none)")
    days = ask_days("validity in days", PEER_CERT_VALID_DAYS)
    return peer_issue(_with_ca_password(root), signing_key, key_password, days)


def _menu_revoke(root: Path) -> list[str]:
    peer_id = ask("peer id to revoke")
    return peer_revoke(_with_ca_password(root), peer_id)


MENU: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
    "1": ("generate CA", _menu_create),
    "2": ("show CA", lambda root: ca_show(CertificateDirectory(root))),
    "3": ("generate peer certificate", _menu_issue),
    "4": ("list peer certificates", lambda root: peer_list(CertificateDirectory(root))),
    "5": ("revoke a peer certificate", _menu_revoke),
}


def run_menu(root: Path) -> int:
    """The interactive menu until "0"/"q" or the end of input."""
    print(f"loopchain certificate utility; CA directory {root}")
    while True:
        print("\n".join(f"  {k}. {label}" for k, (label, _) in MENU.items()) + "\n  0. quit")
        try:
            choice = ask("choice").lower()
        except EOFError:
            print()
            return EXIT_OK
        if choice in ("0", "q", "quit"):
            return EXIT_OK
        if choice not in MENU:
            print(f"unknown choice {choice!r}; pick 0-{len(MENU)}")
            continue
        try:
            print("\n".join(MENU[choice][1](root)))
        except EOFError:
            print()
            return EXIT_OK
        except (ToolError, *ToolErrors) as exc:
            print(f"error: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand, or the menu without one; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.group is None:
        return run_menu(args.dir or DEFAULT_DIR)
    if args.dir is None:  # a command acts on the CA it is told of, never on a default one
        parser.error("the following arguments are required: --dir")
    try:
        lines = run_command(args)
    except (ToolError, *ToolErrors) as exc:
        print(f"certificate_util: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(lines))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
