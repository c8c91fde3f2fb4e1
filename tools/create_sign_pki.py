#!/usr/bin/env python3
"""Make a peer's default signing key pair (secp256k1) and print its peer id.

    .venv/bin/python tools/create_sign_pki.py [password] [--out DIR] [--force]

Writes DIR/private.pem (PKCS#8, encrypted with the password when one is given; mode 0600) and
DIR/public.pem (SubjectPublicKeyInfo); DIR defaults to ./resources/default_pki/. The peer id is the
"hx" address of the public key. Existing files are kept unless --force is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from loopchain.types import certificates as pki  # noqa: E402
from loopchain.types.crypto import Signer  # noqa: E402

DEFAULT_OUT = Path("resources/default_pki")
PRIVATE_NAME = "private.pem"
PUBLIC_NAME = "public.pem"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="create_sign_pki.py", description="make a peer's secp256k1 signing key pair"
    )
    parser.add_argument("password", nargs="?", default="", help="encrypts the private key")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}/")
    parser.add_argument("--force", action="store_true", help="overwrite existing key files")
    return parser.parse_args(argv)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` with `mode`, atomically (temporary name, sync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def create_key_pair(out: Path, password: str, force: bool) -> str:
    """Write a new key pair under `out`; returns the peer id. FileExistsError unless `force`."""
    private_path, public_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        raise FileExistsError(f"already there: {', '.join(existing)}; pass --force to replace")
    out.mkdir(parents=True, exist_ok=True)
    signer = Signer.generate()
    write_file(private_path, pki.signing_key_to_pem(signer.secret_bytes(), password or None), 0o600)
    write_file(public_path, pki.signing_public_key_to_pem(signer.public_key), 0o644)
    return signer.address


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit code."""
    args = parse_args(argv)
    try:
        peer_id = create_key_pair(args.out, args.password, args.force)
    except FileExistsError as exc:
        print(f"create_sign_pki: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"create_sign_pki: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if not args.password:
        print(
            "create_sign_pki: warning: the private key is NOT encrypted; "
            "pass a password to encrypt it",
            file=sys.stderr,
        )
    print(f"private key: {args.out / PRIVATE_NAME}")
    print(f"public key:  {args.out / PUBLIC_NAME}")
    print(f"peer id: {peer_id}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
