"""The PKI for real: create_sign_pki.py and certificate_util.py as subprocesses (arguments and the
menu over stdin), the RadioStation's /api/v1/cert/* endpoints on the real radiostation.py, and
mutual TLS between gRPC endpoints with P-256 certificates of one CA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.radiostation.certs import CA_PASSWORD_ENV
from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer
from tests.integration._rs_helpers import RadioStationProcess, StartRS, get_json, post_raw
from tools.procs import ROOT, assert_clean_log, free_port_pair

CREATE_SIGN_PKI = ROOT / "tools" / "create_sign_pki.py"
CERTIFICATE_UTIL = ROOT / "tools" / "certificate_util.py"
TOOL_DEADLINE = 60.0
RPC_DEADLINE = 5.0


def run_tool(
    script: Path, *args: str, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool to its end (with a deadline); stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TOOL_DEADLINE,
        check=False,
    )


def peer_id_of(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("peer id: ")]
    assert len(lines) == 1, output
    return lines[0].removeprefix("peer id: ")


# -- create_sign_pki.py


def test_create_sign_pki_with_password_refuses_overwrite_and_forces(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    done = run_tool(CREATE_SIGN_PKI, "s3cret", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "NOT encrypted" not in done.stderr
    peer_id = peer_id_of(done.stdout)
    assert f"run a peer with it: ./peer.py -p PORT --private {out / 'private.pem'}" in done.stdout
    private = (out / "private.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in private
    assert (out / "private.pem").stat().st_mode & 0o777 == 0o600
    signer = Signer(pki.signing_secret_from_pem(private, "s3cret"))
    assert signer.address == peer_id
    public = pki.signing_public_key_from_pem((out / "public.pem").read_bytes())
    assert public == signer.public_key

    again = run_tool(CREATE_SIGN_PKI, "other", "--out", str(out), cwd=tmp_path)
    assert again.returncode == 1
    assert "pass --force to replace" in again.stderr and str(out / "private.pem") in again.stderr
    assert (out / "private.pem").read_bytes() == private

    forced = run_tool(CREATE_SIGN_PKI, "other", "--out", str(out), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert peer_id_of(forced.stdout) != peer_id
    assert Signer(pki.signing_secret_from_pem((out / "private.pem").read_bytes(), "other"))


def test_create_sign_pki_without_password_warns_and_uses_the_default_folder(
    tmp_path: Path,
) -> None:
    done = run_tool(CREATE_SIGN_PKI, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "NOT encrypted" in done.stderr
    private = (tmp_path / "resources" / "default_pki" / "private.pem").read_bytes()
    assert b"ENCRYPTED" not in private
    assert Signer(pki.signing_secret_from_pem(private)).address == peer_id_of(done.stdout)


# -- certificate_util.py


def make_signing_key(tmp_path: Path, password: str = "") -> tuple[Path, str]:
    out = tmp_path / "pki"
    args = [password] if password else []
    done = run_tool(CREATE_SIGN_PKI, *args, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return out, peer_id_of(done.stdout)


def util(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool(CERTIFICATE_UTIL, *args, cwd=tmp_path)


def test_certificate_util_subcommands(tmp_path: Path) -> None:
    keys, peer_id = make_signing_key(tmp_path, "kpw")
    ca_dir = str(tmp_path / "ca")
    created = util(
        tmp_path, "ca", "create", "--dir", ca_dir, "--cn", "chan CA", "--password", "cpw"
    )
    assert created.returncode == 0, created.stderr
    assert "subject: CN=chan CA" in created.stdout
    twice = util(tmp_path, "ca", "create", "--dir", ca_dir)
    assert twice.returncode == 1 and "already holds a CA" in twice.stderr
    shown = util(tmp_path, "ca", "show", "--dir", ca_dir)
    assert shown.returncode == 0 and "(encrypted)" in shown.stdout, shown.stderr
    ca_cert = pki.certificate_from_pem((tmp_path / "ca" / "ca.pem").read_bytes())

    signing = str(keys / "private.pem")
    no_ca_password = util(
        tmp_path,
        "peer",
        "issue",
        "--dir",
        ca_dir,
        "--signing-key",
        signing,
        "--key-password",
        "kpw",
    )
    assert no_ca_password.returncode == 1
    assert "the private key is encrypted; a password is needed" in no_ca_password.stderr
    issue_args = ["--signing-key", signing, "--key-password", "kpw", "--password", "cpw"]
    issued = util(tmp_path, "peer", "issue", "--dir", ca_dir, "--days", "30", *issue_args)
    assert issued.returncode == 0, issued.stderr
    folder = tmp_path / "ca" / "peers" / peer_id
    cert = pki.certificate_from_pem((folder / "cert.pem").read_bytes())
    assert pki.verify_peer_certificate(cert, ca_cert, datetime.now(UTC), set()) is None
    assert pki.peer_identity(cert)[0] == peer_id
    tls_key = pki.private_key_from_pem((folder / "tls_key.pem").read_bytes(), "kpw")
    assert tls_key.public_key() == cert.public_key()
    assert (folder / "ca.pem").read_bytes() == (tmp_path / "ca" / "ca.pem").read_bytes()

    listed = util(tmp_path, "peer", "list", "--dir", ca_dir)
    assert listed.returncode == 0 and f"{peer_id}  serial=" in listed.stdout
    assert "valid  (current)" in listed.stdout
    revoked = util(
        tmp_path, "peer", "revoke", "--dir", ca_dir, "--peer-id", peer_id, "--password", "cpw"
    )
    assert revoked.returncode == 0, revoked.stderr
    assert f"serial {pki.serial_hex(cert.serial_number)}" in revoked.stdout
    after = util(tmp_path, "peer", "list", "--dir", ca_dir)
    assert f"revoked (serial {pki.serial_hex(cert.serial_number)})" in after.stdout
    crl = pki.crl_from_pem((tmp_path / "ca" / "ca.crl.pem").read_bytes())
    assert set(pki.crl_entries(crl, ca_cert)) == {cert.serial_number}

    bad_id = util(tmp_path, "peer", "revoke", "--dir", ca_dir, "--peer-id", "hx12")
    assert bad_id.returncode == 1 and "'hx12' is not a peer id" in bad_id.stderr
    usage = util(tmp_path, "peer", "issue", "--dir", ca_dir, "--days", "0", "--signing-key", "x")
    assert usage.returncode == 2 and "must be at least 1" in usage.stderr


@pytest.mark.parametrize("form", ["hex", "0x-hex", "der", "pem-after-text"])
def test_a_peers_key_file_is_a_signing_key(tmp_path: Path, form: str) -> None:
    """A peer keeps its key in hex without a password (./localnet.sh, deploy/), and loopchain's
    create_sign_pki.py wrote DER: `peer issue` refused both as "not a PEM public key" (operator
    review). The certificate binds the key's peer id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    signer = Signer.generate()
    key = tmp_path / "peer_key"
    if form == "der":
        private = ec.derive_private_key(
            int.from_bytes(signer.secret_bytes(), "big"), ec.SECP256K1()
        )
        key.write_bytes(
            private.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif form == "pem-after-text":  # as `openssl pkcs12 -nodes` writes it (review)
        private = ec.derive_private_key(
            int.from_bytes(signer.secret_bytes(), "big"), ec.SECP256K1()
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key.write_bytes(b"Bag Attributes\n    localKeyID: 01 02\n" + pem)
    else:
        key.write_text(("0x" if form == "0x-hex" else "") + signer.secret_bytes().hex() + "\n")
    assert util(tmp_path, "ca", "create", "--dir", "ca").returncode == 0
    done = util(tmp_path, "peer", "issue", "--dir", "ca", "--signing-key", str(key))
    assert done.returncode == 0, done.stderr
    cert = pki.certificate_from_pem(
        (tmp_path / "ca/peers" / signer.address / "cert.pem").read_bytes()
    )
    assert pki.peer_identity(cert)[0] == signer.address


def test_dir_is_taken_before_the_subcommand_too_and_never_defaulted(tmp_path: Path) -> None:
    """`--dir ca ca create` said "required: --dir" (the top-level --dir was the menu's alone:
    operator review); a command without any --dir still acts on no default folder."""
    before = util(tmp_path, "--dir", "ca", "ca", "create")
    assert before.returncode == 0 and (tmp_path / "ca" / "ca.pem").exists(), before.stderr
    shown = util(tmp_path, "--dir", "ca", "ca", "show")
    assert shown.returncode == 0 and "cert_type: CA" in shown.stdout, shown.stderr
    none = util(tmp_path, "ca", "create")
    assert none.returncode == 2 and "required: --dir" in none.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "secret-looking-text-" + "ab" * 30,
            "is neither PEM nor DER, and not a private key in hex",
        ),
        ("0" * 64, "is neither PEM nor DER, and not a valid secp256k1 private key"),
        ("f" * 64, "is neither PEM nor DER, and not a valid secp256k1 private key"),
    ],
    ids=["not-hex", "zero", "past-the-order"],
)
def test_a_signing_key_that_is_no_key_is_named_never_quoted(
    tmp_path: Path, text: str, said: str
) -> None:
    key = tmp_path / "peer_key"
    key.write_text(text + "\n")
    assert util(tmp_path, "ca", "create", "--dir", "ca").returncode == 0
    done = util(tmp_path, "peer", "issue", "--dir", "ca", "--signing-key", str(key))
    assert done.returncode == 1
    assert f"signing key {key} {said}" in done.stderr
    assert text not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("key", ["/dev/zero", "big.pem"])
def test_a_signing_key_file_longer_than_a_key_is_refused_unread(tmp_path: Path, key: str) -> None:
    """/dev/zero as --signing-key ran the tool out of memory (a MemoryError traceback, review)."""
    if key == "big.pem":
        (tmp_path / key).write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 100_000)
    created = util(tmp_path, "ca", "create", "--dir", "ca")
    assert created.returncode == 0, created.stderr
    assert "warning: the CA key" in created.stderr and "is NOT encrypted" in created.stderr
    done = util(tmp_path, "peer", "issue", "--dir", "ca", "--signing-key", key)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().endswith(f"signing key {key} is longer than 65536 bytes")
    assert "Traceback" not in done.stderr


def test_certificate_util_menu_over_stdin(tmp_path: Path) -> None:
    keys, peer_id = make_signing_key(tmp_path)
    answers = [
        "2",  # show CA: none yet, an error and the menu again
        "1",
        "menu CA",
        "100",
        "",  # generate CA without a password
        "2",
        "7",  # unknown choice
        "3",
        str(keys / "public.pem"),
        "",
        "20",  # generate peer certificate, TLS key unencrypted, 20 days
        "4",
        "5",
        peer_id,  # revoke
        "4",
        "0",
    ]
    done = run_tool(
        CERTIFICATE_UTIL, "--dir", "menu_ca", cwd=tmp_path, stdin="\n".join(answers) + "\n"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "error: no CA in menu_ca" in out
    assert "created CA in menu_ca" in out and "subject: CN=menu CA" in out
    assert "key: menu_ca/ca_key.pem (NOT encrypted)" in out
    assert "unknown choice '7'" in out
    assert f"to {peer_id}" in out and "(NOT encrypted)" in out
    assert out.count(f"{peer_id}  serial=") == 2
    assert "valid  (current)" in out and "revoked (serial " in out
    ca_cert = pki.certificate_from_pem((tmp_path / "menu_ca" / "ca.pem").read_bytes())
    days = (ca_cert.not_valid_after_utc - ca_cert.not_valid_before_utc).days
    assert days == 100
    cert = pki.certificate_from_pem(
        (tmp_path / "menu_ca" / "peers" / peer_id / "cert.pem").read_bytes()
    )
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 20


def test_certificate_util_menu_ends_cleanly_at_end_of_input(tmp_path: Path) -> None:
    done = run_tool(CERTIFICATE_UTIL, "--dir", "d", cwd=tmp_path, stdin="1\nhalf")
    assert done.returncode == 0, done.stderr
    assert_clean_log(done.stderr, "certificate_util.py")
    assert not (tmp_path / "d" / "ca.pem").exists()


def test_certificate_util_bounds_days_by_what_a_certificate_can_hold(tmp_path: Path) -> None:
    """A validity past 9999-12-31 (what an X.509 time holds) is a usage error of one line, from
    the subcommands and the menu alike; one ending before it is made."""
    for args in (["ca", "create"], ["peer", "issue", "--signing-key", "x"]):
        done = util(tmp_path, *args, "--dir", "big", "--days", "99999999")
        assert done.returncode == 2, done.stderr
        assert "must be at most" in done.stderr and "9999-12-31" in done.stderr
        assert_clean_log(done.stderr, "certificate_util.py")
    assert not (tmp_path / "big").exists()
    menu = run_tool(CERTIFICATE_UTIL, "--dir", "m", cwd=tmp_path, stdin="1\nmenu CA\n99999999\n0\n")
    assert menu.returncode == 0, menu.stderr
    assert "error: validity in days must be at most" in menu.stdout
    assert_clean_log(menu.stdout + menu.stderr, "certificate_util.py")
    assert not (tmp_path / "m" / "ca.pem").exists()
    long = util(tmp_path, "ca", "create", "--dir", "long", "--days", "2900000")
    assert long.returncode == 0, long.stderr
    ca_cert = pki.certificate_from_pem((tmp_path / "long" / "ca.pem").read_bytes())
    assert 9900 < ca_cert.not_valid_after_utc.year <= 9999


# a password of bytes that are not UTF-8 (Python holds them as lone surrogates): no part of it
# may be shown, neither its readable characters nor an escape of its others
NOT_UTF8_PASSWORD = b"Qz7\xffWv\xfe"
PASSWORD_TRACES = ("Qz7", "Wv", "\\xff", "\\xfe", "udcff", "udcfe", "\udcff", "\ufffd")


def run_with_env(
    script: Path, *args: str, cwd: Path, env: dict[str, bytes]
) -> subprocess.CompletedProcess[str]:
    """Run a tool with environment variables given as bytes (os.environb: no UTF-8 needed)."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env={**os.environb, **{name.encode(): value for name, value in env.items()}},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=TOOL_DEADLINE,
        check=False,
    )


def assert_refused_without_the_password(done: subprocess.CompletedProcess[str], name: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert_clean_log(done.stderr, name)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "is not UTF-8 text" in done.stderr
    for trace in PASSWORD_TRACES:
        assert trace not in done.stdout + done.stderr, trace


def test_passwords_that_are_not_utf8_are_refused_without_showing_them(tmp_path: Path) -> None:
    keys, _ = make_signing_key(tmp_path, "kpw")
    made = run_tool(
        CERTIFICATE_UTIL, "ca", "create", "--dir", "ca", "--password", "cpw", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    issue = ["peer", "issue", "--dir", "ca", "--signing-key", str(keys / "private.pem")]
    bad_ca = {CA_PASSWORD_ENV: NOT_UTF8_PASSWORD, "LOOPCHAIN_KEY_PASSWORD": b"kpw"}
    bad_key = {CA_PASSWORD_ENV: b"cpw", "LOOPCHAIN_KEY_PASSWORD": NOT_UTF8_PASSWORD}
    for env, source in ((bad_ca, CA_PASSWORD_ENV), (bad_key, "LOOPCHAIN_KEY_PASSWORD")):
        done = run_with_env(CERTIFICATE_UTIL, *issue, cwd=tmp_path, env=env)
        assert_refused_without_the_password(done, "certificate_util.py")
        assert f"${source} is not UTF-8 text" in done.stderr
    assert not (tmp_path / "ca" / "peers").exists()
    create = ["ca", "create", "--dir", "ca2"]
    done = run_with_env(CERTIFICATE_UTIL, *create, cwd=tmp_path, env=bad_ca)
    assert_refused_without_the_password(done, "certificate_util.py")
    assert not (tmp_path / "ca2").exists()
    done = run_with_env(CREATE_SIGN_PKI, "--out", "k", cwd=tmp_path, env=bad_key)
    assert_refused_without_the_password(done, "create_sign_pki.py")
    assert not (tmp_path / "k").exists()


# -- the RadioStation's certificate endpoints


def issue_body(signer: Signer, tls_public: Any = None) -> dict[str, str]:
    tls = tls_public or pki.generate_tls_key().public_key()
    digest = pki.cert_request_digest(signer.public_key, tls)
    return {
        "public_key": signer.public_key.hex(),
        "tls_public_key_pem": pki.public_key_to_pem(tls).decode(),
        "signature": signer.sign(digest).hex(),
    }


async def post(url: str, body: Any, rs: RadioStationProcess) -> tuple[int, dict[str, Any]]:
    """POST `body` as JSON with the operator token of `rs`."""
    return await post_raw(url, json.dumps(body).encode(), rs.operator())


async def test_own_ca_is_created_by_the_operator_and_issues_peers(start_rs: StartRS) -> None:
    rs = await start_rs()
    cert_api = f"{rs.rest}/api/v1/cert"
    status, peers = await get_json(f"{cert_api}/list/peer")
    assert (status, peers) == (200, {"response_code": 0, "data": []})
    for path in ("list/ca", "issue/ca"):  # reading never creates the CA
        status, missing = await get_json(f"{cert_api}/{path}")
        assert (status, missing["response_code"]) == (404, -4), missing
        assert "create it with POST /api/v1/cert/issue/ca" in missing["message"]
    status, created = await post(f"{cert_api}/issue/ca", {}, rs)
    assert status == 200 and created["response_code"] == 0, created
    status, listed = await get_json(f"{cert_api}/list/ca")
    assert status == 200 and listed["response_code"] == 0, listed
    ca = listed["data"]
    assert created["data"] == ca
    assert set(ca) >= {"cert_type", "subject", "issuer", "serial_number", "not_after", "cert_pem"}
    assert ca["cert_type"] == "CA" and ca["subject"] == ca["issuer"]
    assert (await get_json(f"{cert_api}/issue/ca"))[1]["data"] == ca
    assert (await post(f"{cert_api}/issue/ca", {}, rs))[1]["data"] == ca  # never replaced
    ca_cert = pki.certificate_from_pem(ca["cert_pem"].encode())

    signer = Signer.generate()
    status, issued = await post(f"{cert_api}/issue/peer", issue_body(signer), rs)
    assert status == 200 and issued["response_code"] == 0, issued
    data = issued["data"]
    assert data["cert_type"] == "PEER" and data["peer_id"] == signer.address
    assert data["ca_cert_pem"] == ca["cert_pem"] and data["issuer"] == ca["subject"]
    cert = pki.certificate_from_pem(data["cert_pem"].encode())
    assert pki.verify_peer_certificate(cert, ca_cert, datetime.now(UTC), set()) is None
    assert pki.peer_identity(cert) == (signer.address, signer.public_key)

    status, peers = await get_json(f"{cert_api}/list/peer")
    assert status == 200 and [p["peer_id"] for p in peers["data"]] == [signer.address]
    assert peers["data"][0]["serial_number"] == data["serial_number"]
    assert peers["data"][0]["revoked"] is False

    # the CA survives a restart
    assert await rs.terminate() == 0
    rs.start()
    await rs.wait_ready()
    assert (await get_json(f"{cert_api}/list/ca"))[1]["data"] == ca
    assert len((await get_json(f"{cert_api}/list/peer"))[1]["data"]) == 1


async def test_malformed_issue_requests_get_precise_minus_6(start_rs: StartRS) -> None:
    rs = await start_rs()
    url = f"{rs.rest}/api/v1/cert/issue/peer"
    signer, other = Signer.generate(), Signer.generate()
    good = issue_body(signer)
    k1_pem = pki.signing_public_key_to_pem(signer.public_key).decode()
    cases: list[tuple[Any, str]] = [
        ([1, 2], "request body must be a JSON object, not list"),
        ({**good, "public_key": "abc"}, "field 'public_key' is not hex"),
        ({**good, "public_key": "02" * 20}, "field 'public_key' must be 33 bytes, got 20"),
        ({**good, "tls_public_key_pem": None}, "field 'tls_public_key_pem' must be a PEM"),
        ({**good, "tls_public_key_pem": k1_pem}, "gRPC's TLS does not accept secp256k1"),
        ({k: v for k, v in good.items() if k != "signature"}, "field 'signature' must be a hex"),
        (
            {**good, "signature": issue_body(other)["signature"]},
            f"not {signer.address}'s signature",
        ),
    ]
    for body, message in cases:
        status, answer = await post(url, body, rs)
        assert status == 400, answer
        assert answer["response_code"] == -6 and message in answer["message"], answer
    status, answer = await post_raw(url, b"{not json", rs.operator())
    assert status == 400 and "not valid JSON" in answer["message"]
    status, answer = await get_json(url)
    assert status == 405 and answer["response_code"] == -999
    status, answer = await get_json(f"{rs.rest}/api/v1/cert/list/nothing")
    assert status == 404 and answer["response_code"] == -999
    assert (await get_json(f"{rs.rest}/api/v1/cert/list/peer"))[1]["data"] == []


async def test_cert_dir_made_by_the_tool_is_used_with_its_password(
    start_rs: StartRS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, peer_id = make_signing_key(tmp_path)
    ca_dir = tmp_path / "channel_ca"
    created = util(
        tmp_path, "ca", "create", "--dir", str(ca_dir), "--cn", "ops CA", "--password", "pw"
    )
    assert created.returncode == 0, created.stderr
    issued = util(
        tmp_path,
        "peer",
        "issue",
        "--dir",
        str(ca_dir),
        "--signing-key",
        str(keys / "public.pem"),
        "--password",
        "pw",
    )
    assert issued.returncode == 0, issued.stderr
    monkeypatch.setenv(CA_PASSWORD_ENV, "pw")
    rs = await start_rs(extra=("--cert", str(ca_dir)))
    assert "certificates: CA CN=ops CA" in rs.logs()
    cert_api = f"{rs.rest}/api/v1/cert"
    ca = (await get_json(f"{cert_api}/list/ca"))[1]["data"]
    assert ca["cert_pem"].encode() == (ca_dir / "ca.pem").read_bytes()
    signer = Signer.generate()
    status, answer = await post(f"{cert_api}/issue/peer", issue_body(signer), rs)
    assert status == 200, answer
    assert (ca_dir / "peers" / signer.address / "cert.pem").is_file()
    listed = {p["peer_id"]: p for p in (await get_json(f"{cert_api}/list/peer"))[1]["data"]}
    assert listed[peer_id]["revoked"] is False  # the listing the station keeps a copy of

    revoked = util(
        tmp_path, "peer", "revoke", "--dir", str(ca_dir), "--peer-id", peer_id, "--password", "pw"
    )
    assert revoked.returncode == 0, revoked.stderr
    peers = {p["peer_id"]: p for p in (await get_json(f"{cert_api}/list/peer"))[1]["data"]}
    assert set(peers) == {peer_id, signer.address}
    assert peers[peer_id]["revoked"] is True and peers[signer.address]["revoked"] is False


async def test_empty_cert_dir_has_no_ca_until_issue_ca(start_rs: StartRS, tmp_path: Path) -> None:
    ca_dir = tmp_path / "empty_ca"
    ca_dir.mkdir()
    rs = await start_rs(extra=("--cert", str(ca_dir)))
    cert_api = f"{rs.rest}/api/v1/cert"
    status, answer = await get_json(f"{cert_api}/list/ca")
    assert status == 404 and answer["response_code"] == -4
    assert "create it with POST /api/v1/cert/issue/ca" in answer["message"]
    status, answer = await post(f"{cert_api}/issue/peer", issue_body(Signer.generate()), rs)
    assert status == 404 and answer["response_code"] == -4
    assert (await get_json(f"{cert_api}/issue/ca"))[0] == 404
    assert list(ca_dir.iterdir()) == []
    status, created = await post(f"{cert_api}/issue/ca", {}, rs)
    assert status == 200 and created["data"]["cert_type"] == "CA"
    assert (ca_dir / "ca.pem").read_text() == created["data"]["cert_pem"]
    assert (await get_json(f"{cert_api}/list/ca"))[1]["data"] == created["data"]


async def test_unusable_cert_dir_stops_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"DEFAULT_STORAGE_PATH": str(tmp_path / "s")}
    rs = RadioStationProcess(tmp_path, free_port_pair(), config)
    missing = tmp_path / "missing"
    code, logs = await rs.run_to_exit("--cert", str(missing))
    assert code == 2 and f"--cert {missing}: no such directory" in logs, logs

    ca_dir = tmp_path / "locked"
    created = util(tmp_path, "ca", "create", "--dir", str(ca_dir), "--password", "right")
    assert created.returncode == 0, created.stderr
    monkeypatch.setenv(CA_PASSWORD_ENV, "wrong")
    code, logs = await rs.run_to_exit("--cert", str(ca_dir))
    assert code == 1 and "wrong password for the private key" in logs, logs
    assert_clean_log(logs, "radiostation")


# -- mutual TLS with gRPC: the chosen curve works


def tls_identity(ca_cert: Any, ca_key: Any) -> tuple[str, bytes, bytes]:
    """(peer id, TLS key PEM, certificate PEM) of a new peer of the CA."""
    signer = Signer.generate()
    tls_key = pki.generate_tls_key()
    cert = pki.issue_peer_certificate(ca_cert, ca_key, signer.public_key, tls_key.public_key(), 1)
    return signer.address, pki.private_key_to_pem(tls_key), pki.certificate_to_pem(cert)


async def test_grpc_mutual_tls_accepts_the_same_ca_and_refuses_another() -> None:
    ca_cert, ca_key = pki.create_ca("channel CA", 1)
    other_ca, other_key = pki.create_ca("stranger CA", 1)
    server_id, server_key, server_cert = tls_identity(ca_cert, ca_key)
    client_id, client_key, client_cert = tls_identity(ca_cert, ca_key)
    _, stranger_key, stranger_cert = tls_identity(other_ca, other_key)
    ca_pem = pki.certificate_to_pem(ca_cert)
    seen: list[str] = []

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        pem = context.auth_context()["x509_pem_cert"][0]
        seen.append(pki.peer_identity(pki.certificate_from_pem(pem))[0])
        return request

    handler = grpc.method_handlers_generic_handler(
        "pki.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(server_key, server_cert)], root_certificates=ca_pem, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()

    async def call(key: bytes, cert: bytes, server_name: str) -> bytes | grpc.StatusCode:
        channel_credentials = grpc.ssl_channel_credentials(ca_pem, key, cert)
        options = [("grpc.ssl_target_name_override", server_name)]
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}", channel_credentials, options=options
        ) as channel:
            try:
                return bytes(
                    await channel.unary_unary("/pki.Echo/Echo")(b"ping", timeout=RPC_DEADLINE)
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    try:
        assert await call(client_key, client_cert, server_id) == b"ping"
        assert seen == [client_id]
        assert await call(stranger_key, stranger_cert, server_id) == grpc.StatusCode.UNAVAILABLE
        assert await call(client_key, client_cert, client_id) == grpc.StatusCode.UNAVAILABLE
        assert seen == [client_id]
    finally:
        await server.stop(None)


def test_tools_are_executable() -> None:
    assert os.access(CREATE_SIGN_PKI, os.X_OK) and os.access(CERTIFICATE_UTIL, os.X_OK)
