#!/usr/bin/env python3
"""Prepare mutual-TLS material for a local network: one CA, and for the RadioStation and each peer
its signing key (its id) and a P-256 TLS certificate binding that id, where the nodes look for them.

    tools/tls_network.py --storage DIR --radiostation 7102 --peers 7100,7200,7300,7400

writes DIR/ca/{ca.pem,ca_key.pem}, DIR/radiostation_7102/{radiostation_key,tls/...} and
DIR/peer_<port>/{peer_key,tls/{ca.pem,cert.pem,key.pem}}. Existing keys are kept (so peer ids stay);
certificates are issued anew. Run the nodes with GRPC_SSL_TYPE 2 and DEFAULT_STORAGE_PATH DIR.

New peer keys are encrypted with $LOOPCHAIN_KEY_PASSWORD and the TLS keys with
$LOOPCHAIN_TLS_KEY_PASSWORD when they are set (the nodes read the same variables); without them
the keys are written unencrypted, as a development network needs. Private files get mode 0600.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import os
import sys
from pathlib import Path

from loopchain.durable import write_atomic
from loopchain.p2p.grpc_util import TLS_PASSWORD_ENV
from loopchain.types import certificates
from loopchain.types.crypto import SignatureError, Signer, load_or_create_key, write_private_file
from loopchain.types.passwords import KEY_PASSWORD_ENV

VALID_DAYS = 365
RADIOSTATION_NAME = "loopchain-radiostation"


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Replace `path` with `data` at once and durably (mode 0600 when `private`, else 0644): a
    file written in place was left empty by a kill or a power cut, and an empty CA certificate
    beside its key failed every later run, `./localnet.sh --tls` too (review)."""
    if private:
        write_private_file(path, data)  # a fresh file of mode 0600, whatever was there
        return
    write_atomic(path, data, 0o644)


def _env_password(name: str) -> str | None:
    return os.environ.get(name) or None


def load_or_create_ca(directory: Path) -> tuple[bytes, object]:
    """The CA certificate PEM and key of `directory`, created on first use."""
    cert_path, key_path = directory / "ca.pem", directory / "ca_key.pem"
    if cert_path.exists() and key_path.exists():
        try:
            cert_pem = cert_path.read_bytes()
            cert = certificates.certificate_from_pem(cert_pem)
            key = certificates.private_key_from_pem(key_path.read_bytes())
            if cert.public_key() != key.public_key():  # a kill between a new CA's two writes
                raise certificates.CertificateError("ca.pem is not the certificate of ca_key.pem")
            return cert_pem, key
        except (OSError, certificates.CertificateError) as exc:
            raise SystemExit(
                f"tls_network: the CA in {directory} cannot be used ({exc}); move that folder "
                "aside to make a new CA (every node's certificate is then issued by it)"
            ) from None
    cert, key = certificates.create_ca("loopchain local CA", VALID_DAYS)
    # the key first: a certificate is written only beside its key (a CA certificate alone
    # is made again with its key on the next run)
    _write(key_path, certificates.private_key_to_pem(key), private=True)
    _write(cert_path, certificates.certificate_to_pem(cert))
    return cert_path.read_bytes(), key


def issue(
    node_dir: Path, signer: Signer, ca_pem: bytes, ca_key: object, extra: tuple[str, ...] = ()
) -> str:
    """Write node_dir/tls/{ca,cert,key}.pem for `signer`; returns its peer id."""
    tls_key = certificates.generate_tls_key()
    cert = certificates.issue_peer_certificate(
        certificates.certificate_from_pem(ca_pem),
        ca_key,  # type: ignore[arg-type]
        signer.public_key,
        tls_key.public_key(),
        VALID_DAYS,
        extra_dns_names=extra,
    )
    _write(node_dir / "tls" / "ca.pem", ca_pem)
    # a kill between these two leaves a key beside another's certificate: the node says so at
    # start, and the next run of this tool (each ./localnet.sh --tls) issues both again
    tls_pem = certificates.private_key_to_pem(tls_key, _env_password(TLS_PASSWORD_ENV))
    _write(node_dir / "tls" / "key.pem", tls_pem, private=True)
    _write(node_dir / "tls" / "cert.pem", certificates.certificate_to_pem(cert))
    return signer.address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="DEFAULT_STORAGE_PATH of the network")
    parser.add_argument("--radiostation", type=int, default=7102, help="RadioStation gRPC port")
    parser.add_argument(
        "--peers", default="7100,7200,7300,7400", help="peer ports, comma-separated"
    )
    args = parser.parse_args(argv)
    storage = Path(args.storage)
    try:
        ports = [int(p) for p in args.peers.split(",") if p]
    except ValueError:
        parser.error(f"--peers must list port numbers, got {args.peers!r}")
    try:
        return _issue_all(storage, args.radiostation, ports)
    except SignatureError as exc:  # a key file damaged, or its password not the one given
        raise SystemExit(f"tls_network: {exc}") from None
    except certificates.CertificateError as exc:  # a CA's files damaged
        raise SystemExit(f"tls_network: {exc}") from None
    except OSError as exc:  # --storage unwritable, a file where a folder goes (review)
        where = f"{exc.filename}: " if exc.filename else ""
        raise SystemExit(f"tls_network: {where}{exc.strerror or exc}") from None


def _issue_all(storage: Path, radiostation: int, ports: list[int]) -> int:
    ca_pem, ca_key = load_or_create_ca(storage / "ca")
    rs_dir = storage / f"radiostation_{radiostation}"
    rs_signer = load_or_create_key(rs_dir / "radiostation_key")
    issue(rs_dir, rs_signer, ca_pem, ca_key, (RADIOSTATION_NAME,))
    print(f"radiostation {radiostation}: {rs_signer.address}")
    for port in ports:
        peer_dir = storage / f"peer_{port}"
        signer = load_or_create_key(peer_dir / "peer_key", _env_password(KEY_PASSWORD_ENV))
        peer_id = issue(peer_dir, signer, ca_pem, ca_key)
        print(f"peer {port}: {peer_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
