"""ENABLE_REST_SSL: the real rest_proxy.py serving REST over TLS (1) and mutual TLS (2)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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
