"""ENABLE_REST_SSL: the real rest_proxy.py serving REST over TLS (1) and mutual TLS (2)."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopchain.p2p.grpc_util import TLS_PASSWORD_ENV
from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer
from tools.procs import REST_DIFF, ROOT, Proc, free_port_pair, wait_until


def _network_tls(storage: Path, port: int) -> Path:
    subprocess.run(
        [sys.executable, "tools/tls_network.py", "--storage", str(storage), "--peers", str(port)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return storage / f"peer_{port}" / "tls"


@pytest.fixture
def proxy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, Path]]:
    mode = request.param
    port = free_port_pair()
    tls = _network_tls(tmp_path / "storage", port)
    conf = tmp_path / "conf.json"
    conf.write_text(
        json.dumps({"DEFAULT_STORAGE_PATH": str(tmp_path / "storage"), "ENABLE_REST_SSL": mode})
    )
    proc = Proc(f"rest_{port}", ["rest_proxy.py", "-p", str(port), "-o", str(conf)], tmp_path)
    proc.start()
    wait_until(lambda: "REST proxy serving https" in proc.log_text(), 30, "the HTTPS proxy")
    try:
        yield port + REST_DIFF, tls
    finally:
        assert proc.stop() == 0
        proc.assert_clean_log()


def _get(url: str, context: ssl.SSLContext | None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _client(tls: Path, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    context.check_hostname = False  # the certificate names the peer id, not 127.0.0.1
    if with_certificate:
        context.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    return context


@pytest.mark.parametrize("proxy", [1], indirect=True)
def test_rest_over_tls_with_a_server_certificate(proxy: tuple[int, Path]) -> None:
    port, tls = proxy
    status, body = _get(f"https://127.0.0.1:{port}/api/v1/status/peer", _client(tls, False))
    assert status == 503 and body["response_code"] < 0  # TLS works; no peer behind it here
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP is not served
        _get(f"http://127.0.0.1:{port}/api/v1/status/peer", None)


@pytest.mark.parametrize("proxy", [2], indirect=True)
def test_mutual_tls_refuses_a_client_without_a_certificate(proxy: tuple[int, Path]) -> None:
    port, tls = proxy
    status, _ = _get(f"https://127.0.0.1:{port}/api/v1/status/peer", _client(tls, True))
    assert status == 503
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        _get(f"https://127.0.0.1:{port}/api/v1/status/peer", _client(tls, False))


def _client_of(storage: Path, folder: Path) -> tuple[ssl.SSLContext, int]:
    """A client context with a certificate of its own, issued by the network's CA; its serial."""
    ca_dir = storage / "ca"
    ca = pki.certificate_from_pem((ca_dir / "ca.pem").read_bytes())
    ca_key = pki.private_key_from_pem((ca_dir / "ca_key.pem").read_bytes())
    key = pki.generate_tls_key()
    cert = pki.issue_peer_certificate(ca, ca_key, Signer.generate().public_key, key.public_key(), 1)
    folder.mkdir()
    (folder / "cert.pem").write_bytes(pki.certificate_to_pem(cert))
    (folder / "key.pem").write_bytes(pki.private_key_to_pem(key))
    context = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    context.check_hostname = False
    context.load_cert_chain(str(folder / "cert.pem"), str(folder / "key.pem"))
    return context, cert.serial_number


def _revoke(tls: Path, url: str, client: ssl.SSLContext, serial: int) -> None:
    """List `serial` in the node's revoked.json and wait until `client` is refused for it."""
    (tls / "revoked.json").write_text(json.dumps([pki.serial_hex(serial)]))
    wait_until(lambda: _get(url, client)[0] == 403, 30, "the revocation to take effect")
    status, body = _get(url, client)
    assert status == 403
    assert (
        body["message"] == f"client certificate refused: revoked (serial {pki.serial_hex(serial)})"
    )


def _status_on(connection: http.client.HTTPSConnection) -> tuple[int, dict]:
    connection.request("GET", "/api/v1/status/peer")
    reply = connection.getresponse()
    return reply.status, json.loads(reply.read())


@pytest.mark.parametrize("proxy", [2], indirect=True)
def test_mutual_tls_refuses_a_client_once_its_certificate_is_revoked(
    proxy: tuple[int, Path], tmp_path: Path
) -> None:
    """The handshake checked only the CA: a holder of a revoked certificate kept full REST
    access (submissions the peer signs included). Each request is checked against the node's
    revocation lists, read again when they change, on a connection opened before too."""
    port, tls = proxy
    storage = tls.parent.parent
    revoked, revoked_serial = _client_of(storage, tmp_path / "revoked")
    other, _ = _client_of(storage, tmp_path / "other")
    url = f"https://127.0.0.1:{port}/api/v1/status/peer"
    assert _get(url, revoked)[0] == 503  # served (no peer behind it here)
    kept = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=revoked)
    assert _status_on(kept)[0] == 503
    _revoke(tls, url, revoked, revoked_serial)
    assert _status_on(kept)[0] == 403  # the connection opened before: refused, then closed
    kept.close()
    assert _get(url, other)[0] == 503  # another client is still served


@pytest.mark.parametrize("mode", [1, 2])
def test_the_radiostation_serves_its_rest_api_over_tls_too(tmp_path: Path, mode: int) -> None:
    """ENABLE_REST_SSL was taken by the RadioStation and not used: its REST API, whose writes
    carry the operator token, stayed plain HTTP (review). It serves HTTPS now with its own TLS
    files (those of its gRPC side), and with 2 only to clients with a certificate of the CA."""
    storage, port = tmp_path / "storage", free_port_pair()
    tool = ["tools/tls_network.py", "--storage", str(storage), "--radiostation", str(port)]
    subprocess.run(
        [sys.executable, *tool, "--peers", ""],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    tls = storage / f"radiostation_{port}" / "tls"
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"DEFAULT_STORAGE_PATH": str(storage), "ENABLE_REST_SSL": mode}))
    proc = Proc(f"rs_{port}", ["radiostation.py", "-p", str(port), "-o", str(conf)], tmp_path)
    proc.start()
    try:
        wait_until(lambda: "RadioStation listening" in proc.log_text(), 30, "the RadioStation")
        url = f"127.0.0.1:{port + REST_DIFF}/api/v1/peer/list"
        status, body = _get(f"https://{url}", _client(tls, True))
        assert status == 200 and body["response_code"] == 0, body
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP is not served
            _get(f"http://{url}", None)
        if mode == 2:
            with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
                _get(f"https://{url}", _client(tls, False))
    finally:
        assert proc.stop() == 0
    proc.assert_clean_log()


def test_a_radiostation_whose_rest_tls_files_are_missing_says_so_and_exits(
    tmp_path: Path,
) -> None:
    port = free_port_pair()
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"DEFAULT_STORAGE_PATH": str(tmp_path), "ENABLE_REST_SSL": 1}))
    proc = Proc(f"rs_{port}", ["radiostation.py", "-p", str(port), "-o", str(conf)], tmp_path)
    assert proc.run(30) == 2
    assert "ENABLE_REST_SSL 1: cannot load the certificate files" in proc.log_text()


def test_the_radiostation_refuses_a_revoked_client_over_mutual_tls(tmp_path: Path) -> None:
    """The RadioStation's REST API with ENABLE_REST_SSL 2 checked only the CA at the handshake:
    the holder of a revoked certificate kept reading it and, with the token, changing it
    (review). Each request is now checked against its revocation lists, as the peer's are."""
    storage, port = tmp_path / "storage", free_port_pair()
    tool = ["tools/tls_network.py", "--storage", str(storage), "--radiostation", str(port)]
    subprocess.run(
        [sys.executable, *tool, "--peers", ""], cwd=ROOT, check=True, capture_output=True
    )
    tls = storage / f"radiostation_{port}" / "tls"
    revoked, revoked_serial = _client_of(storage, tmp_path / "revoked")
    other, _ = _client_of(storage, tmp_path / "other")
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"DEFAULT_STORAGE_PATH": str(storage), "ENABLE_REST_SSL": 2}))
    proc = Proc(f"rs_{port}", ["radiostation.py", "-p", str(port), "-o", str(conf)], tmp_path)
    proc.start()
    try:
        wait_until(lambda: "RadioStation listening" in proc.log_text(), 30, "the RadioStation")
        url = f"https://127.0.0.1:{port + REST_DIFF}/api/v1/peer/list"
        assert _get(url, revoked)[0] == 200
        _revoke(tls, url, revoked, revoked_serial)
        assert _get(url, other)[0] == 200  # another client is still served
    finally:
        assert proc.stop() == 0
    proc.assert_clean_log()


def test_a_radiostation_whose_revocation_list_is_unusable_says_so_and_exits(
    tmp_path: Path,
) -> None:
    """With ENABLE_REST_SSL 2 its REST clients are checked against its revocation lists: one
    that cannot be used stops the start (exit 2) naming it, rather than serving unchecked."""
    storage, port = tmp_path / "storage", free_port_pair()
    tool = ["tools/tls_network.py", "--storage", str(storage), "--radiostation", str(port)]
    subprocess.run(
        [sys.executable, *tool, "--peers", ""], cwd=ROOT, check=True, capture_output=True
    )
    (storage / f"radiostation_{port}" / "tls" / "revoked.json").write_text("not json")
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"DEFAULT_STORAGE_PATH": str(storage), "ENABLE_REST_SSL": 2}))
    proc = Proc(f"rs_{port}", ["radiostation.py", "-p", str(port), "-o", str(conf)], tmp_path)
    assert proc.run(30) == 2
    assert "ENABLE_REST_SSL 2:" in proc.log_text() and "revoked.json" in proc.log_text()


def test_a_proxy_opens_an_encrypted_key_with_the_password_on_its_stdin(tmp_path: Path) -> None:
    """A peer hands its REST proxy the TLS key's password on stdin (--tls-password-stdin): in
    the proxy's environment any process of the user read it. Given there, the encrypted key
    opens and HTTPS is served; a wrong one is a configuration error, named."""
    port = free_port_pair()
    storage = tmp_path / "storage"
    env = {k: v for k, v in os.environ.items() if k != TLS_PASSWORD_ENV}
    subprocess.run(
        [sys.executable, "tools/tls_network.py", "--storage", str(storage), "--peers", str(port)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**env, TLS_PASSWORD_ENV: "rest-tls-pw"},
    )
    tls = storage / f"peer_{port}" / "tls"
    assert b"ENCRYPTED" in (tls / "key.pem").read_bytes()
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"DEFAULT_STORAGE_PATH": str(storage), "ENABLE_REST_SSL": 1}))
    command = [sys.executable, "rest_proxy.py", "-p", str(port), "-o", str(conf)]
    wrong = subprocess.run(
        [*command, "--tls-password-stdin"],
        cwd=ROOT,
        input=b"not-it\n",
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert wrong.returncode == 2 and b"cannot load the certificate files" in wrong.stderr
    proxy = subprocess.Popen(
        [*command, "--tls-password-stdin"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proxy.stdin is not None
        proxy.stdin.write(b"rest-tls-pw\n")
        proxy.stdin.close()
        url = f"https://127.0.0.1:{port + REST_DIFF}/api/v1/status/peer"

        def served() -> bool:
            try:
                return _get(url, _client(tls, False))[0] == 503  # no peer behind it here
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_until(served, 30, "the HTTPS proxy")
    finally:
        proxy.terminate()
        assert proxy.wait(30) == 0
