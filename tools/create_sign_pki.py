#!/usr/bin/env python3
"""Make a peer's default signing key pair (secp256k1) and print its peer id.

    .venv/bin/python tools/create_sign_pki.py [--password-file FILE] [--out DIR] [--force]

Writes DIR/private.pem (PKCS#8, encrypted with the password when one is given; mode 0600) and
DIR/public.pem (SubjectPublicKeyInfo); DIR defaults to ./resources/default_pki/. The peer id is the
"hx" address of the public key. Existing files are kept unless --force is given.

The password comes from --password-file FILE (mode 0600), $LOOPCHAIN_KEY_PASSWORD, or a prompt
when stdin is a terminal (asked twice; empty: not encrypted). A password given as the old
positional argument still works, with a warning: every user of the machine sees command lines.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from loopchain.durable import write_atomic
from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer
from loopchain.types.passwords import (
    KEY_PASSWORD_ENV,
    PasswordError,
    choose_password,
    prompt_password,
)

DEFAULT_OUT = Path("resources/default_pki")
PRIVATE_NAME = "private.pem"
PUBLIC_NAME = "public.pem"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="create_sign_pki.py", description="make a peer's secp256k1 signing key pair"
    )
    parser.add_argument(
        "password",
        nargs="?",
        default="",
        help="encrypts the private key (deprecated: other users see command lines; use "
        f"--password-file or ${KEY_PASSWORD_ENV})",
    )
    parser.add_argument("--password-file", help="file (mode 0600) holding the password")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}/")
    parser.add_argument("--force", action="store_true", help="overwrite existing key files")
    return parser.parse_args(argv)


def check_free(out: Path, force: bool) -> None:
    """FileExistsError when a key file is already under `out` (and not `force`)."""
    existing = [str(p) for p in (out / PRIVATE_NAME, out / PUBLIC_NAME) if p.exists()]
    if existing and not force:
        raise FileExistsError(f"already there: {', '.join(existing)}; pass --force to replace")


def choose_key_password(args: argparse.Namespace) -> str:
    """The password: --password-file, the argument (with a warning), the environment, a prompt."""
    password = choose_password(
        file=args.password_file,
        argv_value=args.password,
        env=KEY_PASSWORD_ENV,
        warn=lambda text: print(f"create_sign_pki: warning: {text}", file=sys.stderr),
        argv_flag="the password argument",
        file_flag="--password-file",
    )
    if password is not None:
        source = "the password argument" if args.password else f"${KEY_PASSWORD_ENV}"
        pki.check_password_text(password, source)
    else:
        password = prompt_password(
            "password to encrypt the private key (empty: none)", confirm=True
        )
    return password or ""


def create_key_pair(out: Path, password: str, force: bool) -> str:
    """Write a new key pair under `out`; returns the peer id. FileExistsError unless `force`."""
    private_path, public_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    check_free(out, force)
    # a new folder is the owner's alone, whatever the umask (under 000 it was anyone's: review);
    # one that exists is left as its owner made it
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    signer = Signer.generate()
    private_pem = pki.signing_key_to_pem(signer.secret_bytes(), password or None)
    write_atomic(private_path, private_pem, 0o600, overwrite=force)
    write_atomic(
        public_path, pki.signing_public_key_to_pem(signer.public_key), 0o644, overwrite=force
    )
    return signer.address


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit code."""
    args = parse_args(argv)
    try:
        check_free(args.out, args.force)
        password = choose_key_password(args)
        peer_id = create_key_pair(args.out, password, args.force)
    except FileExistsError as exc:
        print(f"create_sign_pki: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (PasswordError, pki.CertificateError) as exc:
        print(f"create_sign_pki: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"create_sign_pki: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if not password:
        print(
            "create_sign_pki: warning: the private key is NOT encrypted; give a password in "
            f"${KEY_PASSWORD_ENV} or with --password-file FILE to encrypt it",
            file=sys.stderr,
        )
    print(f"private key: {args.out / PRIVATE_NAME}")
    print(f"public key:  {args.out / PUBLIC_NAME}")
    print(f"peer id: {peer_id}")
    # a peer signs with the key of its storage folder unless told otherwise (review: a user
    # made this key, listed its id in a channel, and ran a peer under another one)
    print(f"run a peer with it: ./peer.py -p PORT --private {args.out / PRIVATE_NAME}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
