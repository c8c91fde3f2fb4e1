"""Key files at rest (encrypted PKCS#8 PEM, mode 0600, older hex files) and password sources
(environment, a file of mode 0600, never needed on a command line)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from loopchain.types import certificates as pki
from loopchain.types.crypto import (
    KeyProtection,
    SignatureError,
    Signer,
    key_file_is_encrypted,
    load_or_create_key,
    open_key_file,
)
from loopchain.types.passwords import (
    KEY_PASSWORD_ENV,
    PasswordError,
    choose_password,
    prompt_password,
    read_password_file,
)
from tests._syncs import record_syncs


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)
    return path


# -- key files


def test_a_new_key_with_a_password_is_encrypted_pkcs8_of_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "peer" / "peer_key"
    created = open_key_file(path, "pw")
    assert created.created and created.protection is KeyProtection.ENCRYPTED
    raw = path.read_bytes()
    assert raw.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert created.signer.secret_bytes().hex().encode() not in raw
    assert _mode(path) == 0o600
    assert key_file_is_encrypted(path)
    assert pki.signing_secret_from_pem(raw, "pw") == created.signer.secret_bytes()
    again = open_key_file(path, "pw")
    assert not again.created and again.signer.address == created.signer.address
    with pytest.raises(SignatureError, match=r"peer_key: .*wrong password"):
        open_key_file(path, "other")
    with pytest.raises(
        SignatureError, match=f"is encrypted: give its password in \\${KEY_PASSWORD_ENV}"
    ):
        open_key_file(path)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_without_a_password_a_new_key_is_hex_and_older_files_keep_loading(tmp_path: Path) -> None:
    path = tmp_path / "peer_key"
    created = open_key_file(path)
    assert created.protection is KeyProtection.PLAIN_HEX and _mode(path) == 0o600
    assert bytes.fromhex(path.read_text()) == created.signer.secret_bytes()
    assert not key_file_is_encrypted(path)
    # an older hex file loads with or without a password (which is then unused)
    for password in (None, "pw"):
        loaded = open_key_file(path, password)
        assert loaded.protection is KeyProtection.PLAIN_HEX and not loaded.created
        assert loaded.signer.address == created.signer.address
    # so does an unencrypted PEM
    signer = Signer.generate()
    pem = _private(tmp_path / "plain.pem", pki.signing_key_to_pem(signer.secret_bytes()))
    loaded = open_key_file(pem, "pw")
    assert loaded.protection is KeyProtection.PLAIN_PEM and loaded.signer.address == signer.address
    assert load_or_create_key(pem).address == signer.address


def _der_pair(signer: Signer, password: str | None) -> tuple[bytes, bytes]:
    """(private, public) DER as loopchain's create_sign_pki.py wrote them: the private key
    encrypted PKCS#8 (or plain, without a password), the public one SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.derive_private_key(int.from_bytes(signer.secret_bytes(), "big"), ec.SECP256K1())
    encryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    private = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, encryption
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def test_loopchains_der_key_files_load_encrypted_or_not(tmp_path: Path) -> None:
    """loopchain's create_sign_pki.py wrote private.der (encrypted PKCS#8 DER) and public.der:
    a peer given them (--private, --public) loads them; they were refused as "no valid private
    key" (review)."""
    from loopchain.peer.node import _check_public_key

    signer = Signer.generate()
    private, public = _der_pair(signer, "test")
    path = _private(tmp_path / "private.der", private)
    assert key_file_is_encrypted(path)  # its password is asked for, as for encrypted PEM
    loaded = open_key_file(path, "test")
    assert loaded.protection is KeyProtection.ENCRYPTED_DER
    assert loaded.signer.address == signer.address
    with pytest.raises(SignatureError, match=r"private.der: .*wrong password"):
        open_key_file(path, "other")
    with pytest.raises(SignatureError, match="if it is encrypted, give its password in"):
        open_key_file(path)
    # a hex key whose text begins with "0" (0x30, as DER does) is still a hex key
    zero = next(s for s in iter(Signer.generate, None) if s.secret_bytes().hex()[0] == "0")
    hex_path = _private(tmp_path / "zero_key", zero.secret_bytes().hex())
    assert not key_file_is_encrypted(hex_path)
    assert open_key_file(hex_path).signer.address == zero.address
    plain = _private(tmp_path / "plain.der", _der_pair(signer, None)[0])
    assert open_key_file(plain).protection is KeyProtection.PLAIN_DER
    assert not key_file_is_encrypted(plain)
    public_path = tmp_path / "public.der"
    public_path.write_bytes(public)
    _check_public_key(public_path, loaded.signer, path)  # its own: taken
    public_path.write_text(loaded.signer.public_key.hex())  # hex, "02…" or "03…": not DER
    _check_public_key(public_path, loaded.signer, path)
    public_path.write_bytes(_der_pair(Signer.generate(), None)[1])
    with pytest.raises(SystemExit, match="is not the public key"):
        _check_public_key(public_path, loaded.signer, path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_a_key_file_group_or_others_may_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "peer_key"
    address = open_key_file(path, "pw").signer.address
    path.chmod(mode)
    with pytest.raises(SignatureError) as refused:
        open_key_file(path, "pw")
    assert str(refused.value) == (
        f"key file {path} has mode {mode:04o}: group or others can access it; "
        f"run `chmod 600 {path}`"
    )
    path.chmod(0o400)  # read-only for its owner is fine
    assert open_key_file(path, "pw").signer.address == address


def test_a_leftover_temporary_file_never_lends_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "peer_key"
    leftover = tmp_path / "peer_key.tmp"
    leftover.write_text("half a key")
    leftover.chmod(0o666)
    open_key_file(path, "pw")  # a temporary file of its own: the leftover is never reused
    assert _mode(path) == 0o600 and leftover.read_text() == "half a key"


def test_a_file_that_holds_no_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="does not hold a valid private key"):
        open_key_file(_private(tmp_path / "k", "not hex"))
    with pytest.raises(SignatureError, match="cannot read key file"):
        open_key_file(tmp_path)  # a directory


# -- password sources


def test_a_password_file_gives_its_first_line_and_must_be_private(tmp_path: Path) -> None:
    path = _private(tmp_path / "pw", "s3cret word\nignored\n")
    assert read_password_file(path) == "s3cret word"
    assert read_password_file(_private(tmp_path / "crlf", b"pw\r\n")) == "pw"
    path.chmod(0o644)
    with pytest.raises(PasswordError, match=r"password file .* has mode 0644.*chmod 600"):
        read_password_file(path)
    for name, data in (("empty", b""), ("blank", b"\n"), ("binary", b"\xff\xfe")):
        with pytest.raises(PasswordError, match=f"password file .*{name}"):
            read_password_file(_private(tmp_path / name, data))
    with pytest.raises(PasswordError, match="cannot read password file"):
        read_password_file(tmp_path / "missing")
    with pytest.raises(PasswordError, match="longer than"):
        read_password_file(_private(tmp_path / "long", b"x" * 5000))


def test_choose_password_prefers_the_file_then_the_command_line_then_the_environment(
    tmp_path: Path,
) -> None:
    warnings: list[str] = []
    file = _private(tmp_path / "pw", "from-file\n")
    environ = {KEY_PASSWORD_ENV: "from-env"}

    def choose(file: Path | None, argv: str | None, env: dict[str, str]) -> str | None:
        return choose_password(
            file=file,
            argv_value=argv,
            env=KEY_PASSWORD_ENV,
            warn=warnings.append,
            argv_flag="-a",
            file_flag="--key-password-file",
            environ=env,
        )

    assert choose(file, "from-argv", environ) == "from-file" and warnings == []
    assert choose(None, "from-argv", environ) == "from-argv"
    assert warnings == [
        "a password on the command line (-a) is visible to every user of this machine "
        f"(ps, /proc/<pid>/cmdline); give it in ${KEY_PASSWORD_ENV} or with "
        "--key-password-file FILE (mode 0600) instead"
    ]
    assert choose(None, None, environ) == "from-env"
    assert choose(None, "", {KEY_PASSWORD_ENV: ""}) is None
    assert choose(None, None, {}) is None


def test_no_prompt_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    with open(os.devnull) as devnull:
        monkeypatch.setattr(sys, "stdin", devnull)
        assert prompt_password("password") is None


def test_a_password_that_is_not_utf8_is_refused_without_showing_it(tmp_path: Path) -> None:
    """A key password of undecodable bytes (Python holds them as lone surrogates) is refused in
    one line that shows no part of it, for a new key and for an existing encrypted one. Before,
    it was a UnicodeEncodeError traceback quoting the password's character."""
    bad = "secret\udcff"
    with pytest.raises(SignatureError, match="not UTF-8") as made:
        open_key_file(tmp_path / "new_key", bad)
    assert "secret" not in str(made.value) and "\\udcff" not in repr(made.value)
    chain, error = [], made.value.__context__  # what a traceback would print with it
    while error is not None:
        chain.append(error)
        error = error.__context__
    assert not any(isinstance(e, UnicodeError) for e in chain), chain
    path = tmp_path / "peer_key"
    open_key_file(path, "pw")
    with pytest.raises(SignatureError, match="not UTF-8") as opened:
        open_key_file(path, bad)
    assert "secret" not in str(opened.value), opened.value


def test_a_key_made_in_new_folders_syncs_each_of_them_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer's key made where its folders did not exist yet synced the key's folder only: a
    power cut could lose the upper folders' names, and the peer came back with a new id."""
    synced = record_syncs(monkeypatch)
    path = tmp_path / "storage" / "peer_7100" / "keys" / "key.pem"
    made = load_or_create_key(path)
    assert {tmp_path, tmp_path / "storage", tmp_path / "storage" / "peer_7100"} <= set(synced)
    assert path.parent in synced
    assert load_or_create_key(path).address == made.address
