"""Passwords of the key tools never need a command line: create_sign_pki.py and certificate_util.py
as subprocesses take them from the environment, from a file of mode 0600 or from a prompt on a
terminal; a password still given as an argument works, with a warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopchain.configure import load_config
from loopchain.p2p.grpc_util import TLS_PASSWORD_ENV, load_tls
from loopchain.radiostation.certs import CA_PASSWORD_ENV
from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer
from loopchain.types.passwords import KEY_PASSWORD_ENV
from tests._tty import run_on_tty
from tools.procs import ROOT

CREATE_SIGN_PKI = ROOT / "tools" / "create_sign_pki.py"
CERTIFICATE_UTIL = ROOT / "tools" / "certificate_util.py"
TLS_NETWORK = ROOT / "tools" / "tls_network.py"
TOOL_DEADLINE = 60.0
ARGV_WARNING = "is visible to every user of this machine"


def _env(**extra: str) -> dict[str, str]:
    secret = (KEY_PASSWORD_ENV, CA_PASSWORD_ENV, TLS_PASSWORD_ENV)
    env = {k: v for k, v in os.environ.items() if k not in secret}
    return {**env, **extra}


def run(
    script: Path, *args: str, cwd: Path, umask: int = -1, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a tool to its end with stdin not a terminal (under `umask` when given); stdout and
    stderr as text."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TOOL_DEADLINE,
        check=False,
        umask=umask,
    )


def _secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def _peer_id(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("peer id: "))[9:].strip()


def _private_key_password(out: Path, password: str) -> str:
    """The peer id of out/private.pem opened with `password` (which must open it)."""
    data = (out / "private.pem").read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (out / "private.pem").stat().st_mode & 0o777 == 0o600
    return Signer(pki.signing_secret_from_pem(data, password)).address


def test_create_sign_pki_takes_its_password_from_the_environment_or_a_file(
    tmp_path: Path,
) -> None:
    done = run(CREATE_SIGN_PKI, "--out", "env", cwd=tmp_path, **{KEY_PASSWORD_ENV: "from-env"})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert _private_key_password(tmp_path / "env", "from-env") == _peer_id(done.stdout)

    password_file = _secret_file(tmp_path / "pw", "from-file")
    done = run(
        CREATE_SIGN_PKI, "--out", "file", "--password-file", str(password_file), cwd=tmp_path
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert _private_key_password(tmp_path / "file", "from-file") == _peer_id(done.stdout)

    password_file.chmod(0o640)
    done = run(
        CREATE_SIGN_PKI, "--out", "open", "--password-file", str(password_file), cwd=tmp_path
    )
    assert done.returncode == 1
    assert f"password file {password_file} has mode 0640" in done.stderr
    assert not (tmp_path / "open").exists()

    done = run(CREATE_SIGN_PKI, "from-argv", "--out", "argv", cwd=tmp_path)
    assert done.returncode == 0 and ARGV_WARNING in done.stderr, done.stderr
    assert "--password-file" in done.stderr and "NOT encrypted" not in done.stderr
    assert _private_key_password(tmp_path / "argv", "from-argv") == _peer_id(done.stdout)


def test_create_sign_pki_asks_twice_on_a_terminal(tmp_path: Path) -> None:
    argv = [sys.executable, str(CREATE_SIGN_PKI), "--out", "typed"]
    answers = [("password to encrypt the private key", "typed pw"), ("again", "typed pw")]
    done = run_on_tty(argv, answers, env=_env(), cwd=str(tmp_path))
    assert done.exit_code == 0, done.output
    assert "typed pw" not in done.output  # not echoed
    assert _private_key_password(tmp_path / "typed", "typed pw") == _peer_id(done.output)

    mismatch = [("password to encrypt the private key", "one"), ("again", "two")]
    argv = [sys.executable, str(CREATE_SIGN_PKI), "--out", "differ"]
    done = run_on_tty(argv, mismatch, env=_env(), cwd=str(tmp_path))
    assert done.exit_code == 1 and "the two passwords differ" in done.output
    assert not (tmp_path / "differ").exists()


def test_certificate_util_takes_both_passwords_without_a_command_line(tmp_path: Path) -> None:
    key_pw, ca_pw = "signing-key-pw", "ca-key-pw"
    done = run(CREATE_SIGN_PKI, "--out", "pki", cwd=tmp_path, **{KEY_PASSWORD_ENV: key_pw})
    assert done.returncode == 0, done.stderr
    peer_id = _peer_id(done.stdout)
    signing = str(tmp_path / "pki" / "private.pem")
    ca_env = {CA_PASSWORD_ENV: ca_pw}

    created = run(CERTIFICATE_UTIL, "ca", "create", "--dir", "ca", cwd=tmp_path, **ca_env)
    assert created.returncode == 0 and created.stderr == "", created.stderr
    assert b"ENCRYPTED" in (tmp_path / "ca" / "ca_key.pem").read_bytes()
    assert pki.private_key_from_pem((tmp_path / "ca" / "ca_key.pem").read_bytes(), ca_pw)

    # both passwords from the environment
    issue = ["peer", "issue", "--dir", "ca", "--signing-key", signing]
    issued = run(CERTIFICATE_UTIL, *issue, cwd=tmp_path, **ca_env, **{KEY_PASSWORD_ENV: key_pw})
    assert issued.returncode == 0 and issued.stderr == "", issued.stderr
    tls_key = (tmp_path / "ca" / "peers" / peer_id / "tls_key.pem").read_bytes()
    assert b"ENCRYPTED" in tls_key and pki.private_key_from_pem(tls_key, key_pw)

    # both from files; a file others can read is refused
    key_file = _secret_file(tmp_path / "key_pw", key_pw)
    ca_file = _secret_file(tmp_path / "ca_pw", ca_pw)
    files = ["--key-password-file", str(key_file), "--password-file", str(ca_file)]
    issued = run(CERTIFICATE_UTIL, *issue, *files, cwd=tmp_path)
    assert issued.returncode == 0 and issued.stderr == "", issued.stderr
    ca_file.chmod(0o644)
    refused = run(CERTIFICATE_UTIL, *issue, *files, cwd=tmp_path)
    assert refused.returncode == 1 and f"password file {ca_file} has mode 0644" in refused.stderr

    # the old arguments work, warned about
    argv = ["--key-password", key_pw, "--password", ca_pw]
    issued = run(CERTIFICATE_UTIL, *issue, *argv, cwd=tmp_path)
    assert issued.returncode == 0, issued.stderr
    assert issued.stderr.count(ARGV_WARNING) == 2, issued.stderr

    # revoke with the CA password typed at the terminal
    command = [sys.executable, str(CERTIFICATE_UTIL), "peer", "revoke", "--dir", "ca"]
    done = run_on_tty(
        [*command, "--peer-id", peer_id],
        [("CA key password", ca_pw)],
        env=_env(),
        cwd=str(tmp_path),
    )
    assert done.exit_code == 0 and f"revoked {peer_id}" in done.output, done.output
    ca_cert = pki.certificate_from_pem((tmp_path / "ca" / "ca.pem").read_bytes())
    crl = pki.crl_from_pem((tmp_path / "ca" / "ca.crl.pem").read_bytes())
    assert len(pki.crl_entries(crl, ca_cert)) == 3  # the three certificates issued above


def test_tls_network_encrypts_new_keys_with_the_passwords_the_nodes_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "storage"
    passwords = {KEY_PASSWORD_ENV: "peer-pw", TLS_PASSWORD_ENV: "tls-pw"}
    args = ["--storage", str(storage), "--radiostation", "7102", "--peers", "7100"]
    done = run(TLS_NETWORK, *args, cwd=tmp_path, **passwords)
    assert done.returncode == 0, done.stderr
    peer_dir = storage / "peer_7100"
    peer_key = (peer_dir / "peer_key").read_bytes()
    assert peer_key.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    address = Signer(pki.signing_secret_from_pem(peer_key, "peer-pw")).address
    assert f"peer 7100: {address}" in done.stdout
    for private in (peer_dir / "peer_key", peer_dir / "tls" / "key.pem"):
        assert private.stat().st_mode & 0o777 == 0o600, private
    assert b"ENCRYPTED" in (peer_dir / "tls" / "key.pem").read_bytes()
    # the node opens its TLS key with the same variable; without it, it refuses
    config = load_config(environ={}, overrides={"GRPC_SSL_TYPE": 2})
    monkeypatch.setenv(TLS_PASSWORD_ENV, "tls-pw")
    tls = load_tls(config, peer_dir / "tls")
    assert tls is not None and b"ENCRYPTED" not in tls.key_pem
    monkeypatch.delenv(TLS_PASSWORD_ENV)
    with pytest.raises(OSError, match="cannot read the TLS private key"):
        load_tls(config, peer_dir / "tls")
    # run again: the encrypted key is kept (the same peer id), certificates are issued anew
    again = run(TLS_NETWORK, *args, cwd=tmp_path, **passwords)
    assert again.returncode == 0 and f"peer 7100: {address}" in again.stdout, again.stderr


def test_tls_network_names_a_ca_it_cannot_use_and_writes_each_file_whole(tmp_path: Path) -> None:
    """A CA certificate a kill or a power cut left empty beside its key (written in place, it
    could be), or another CA's beside it, is named with what to do, not a traceback on every
    later run; each file is replaced whole (no temporary left beside it)."""
    storage = tmp_path / "storage"
    args = ["--storage", str(storage), "--radiostation", "7102", "--peers", "7100"]
    assert run(TLS_NETWORK, *args, cwd=tmp_path).returncode == 0
    written = sorted(p.name for p in storage.rglob("*") if p.is_file())
    assert not [name for name in written if name.endswith(".tmp")], written
    ca_dir = storage / "ca"
    (ca_dir / "ca.pem").write_bytes(b"")
    done = run(TLS_NETWORK, *args, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"the CA in {ca_dir} cannot be used" in done.stderr, done.stderr
    assert "move that folder aside" in done.stderr, done.stderr
    ca_dir.rename(tmp_path / "old_ca")
    again = run(TLS_NETWORK, *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (ca_dir / "ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    # a CA certificate beside another CA's key (a kill between a new CA's two writes) is named
    # too: certificates issued by that key would not chain to the ca.pem the nodes are given
    other, _ = pki.create_ca("another CA", 1)
    (ca_dir / "ca.pem").write_bytes(pki.certificate_to_pem(other))
    mismatched = run(TLS_NETWORK, *args, cwd=tmp_path)
    assert mismatched.returncode == 1, mismatched.stderr
    assert "ca.pem is not the certificate of ca_key.pem" in mismatched.stderr, mismatched.stderr


def test_tls_network_names_a_damaged_peer_key(tmp_path: Path) -> None:
    """A peer key it cannot read (damaged, or under another password) is named, not a
    traceback (review)."""
    storage = tmp_path / "storage"
    args = ["--storage", str(storage), "--radiostation", "7102", "--peers", "7100"]
    assert run(TLS_NETWORK, *args, cwd=tmp_path).returncode == 0
    key = storage / "peer_7100" / "peer_key"
    key.write_text("garbage\n")
    done = run(TLS_NETWORK, *args, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"tls_network: key file {key} does not hold a valid private key" in done.stderr


@pytest.mark.parametrize("where", ["file", "file/below"])
def test_tls_network_names_a_storage_it_cannot_write_in_one_line(
    tmp_path: Path, where: str
) -> None:
    """A file as --storage, or below one, was a FileExistsError or NotADirectoryError traceback
    (review)."""
    (tmp_path / "file").write_text("not a folder")
    args = ["--storage", str(tmp_path / where), "--peers", "7100"]
    done = run(TLS_NETWORK, *args, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"tls_network: {tmp_path / 'file'}"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_create_sign_pki_makes_a_new_folder_its_owners_alone(tmp_path: Path, umask: int) -> None:
    """Under umask 000 the folder holding private.pem was anyone's (review); one that exists
    keeps the mode its owner gave it."""
    out = tmp_path / "keys"
    password = {KEY_PASSWORD_ENV: "pw"}
    done = run(CREATE_SIGN_PKI, "--out", str(out), cwd=tmp_path, umask=umask, **password)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o700
    assert (out / "private.pem").stat().st_mode & 0o777 == 0o600
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    again = run(CREATE_SIGN_PKI, "--out", str(shared), cwd=tmp_path, **password)
    assert again.returncode == 0, again.stderr
    assert shared.stat().st_mode & 0o777 == 0o755
