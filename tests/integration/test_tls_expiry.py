"""A node says when its TLS certificate or its CA's expires soon (within EXPIRY_NOTICE_DAYS), at
start and once a day while it runs, and when one has expired: peer certificates are issued for a
year, and a network whose certificates were issued together stopped at once a year later, with
nothing said before (every handshake failed, and gRPC's own log named no certificate)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loopchain.configure import load_config
from loopchain.p2p import grpc_util
from loopchain.p2p.grpc_util import Tls, load_tls, log_certificate_notices, watch_certificates
from loopchain.peer.node import PeerNode, PeerOptions
from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer
from tools.procs import free_port_pair, hold_port, wait_until_async


def _tls_dir(tmp_path: Path, ca_days: int, cert_days: int) -> Path:
    """A node's TLS folder: a CA of `ca_days`, a certificate of `cert_days` and its key."""
    folder = tmp_path / "tls"
    folder.mkdir(parents=True)
    ca, ca_key = pki.create_ca("test CA", ca_days)
    tls_key = pki.generate_tls_key()
    cert = pki.issue_peer_certificate(
        ca, ca_key, Signer.generate().public_key, tls_key.public_key(), cert_days
    )
    (folder / "ca.pem").write_bytes(pki.certificate_to_pem(ca))
    (folder / "cert.pem").write_bytes(pki.certificate_to_pem(cert))
    (folder / "key.pem").write_bytes(pki.private_key_to_pem(tls_key))
    return folder


def _load(folder: Path, notices: bool = True) -> Tls:
    config = load_config(environ={}, overrides={"GRPC_SSL_TYPE": 2})
    tls = load_tls(config, folder, notices=notices)
    assert tls is not None
    return tls


def _said(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_a_certificate_expiring_within_the_notice_is_said_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _tls_dir(tmp_path, ca_days=3650, cert_days=10)
    with caplog.at_level(logging.WARNING, logger="loopchain.p2p.grpc_util"):
        tls = _load(folder)
    [said] = _said(caplog, logging.WARNING)
    end = pki.certificate_from_pem(tls.cert_pem).not_valid_after_utc
    assert said == (
        f"this node's TLS certificate {folder / 'cert.pem'} expires on "
        f"{end.strftime('%Y-%m-%dT%H:%M:%SZ')} (within 10 days): every TLS link of this node "
        "fails after that: issue it again (certificate_util.py peer issue) and restart this node "
        "with the new one before then"
    )
    # a channel worker reads the same files: its peer says it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="loopchain.p2p.grpc_util"):
        _load(folder, notices=False)
    assert not caplog.records


def test_a_ca_expiring_within_the_notice_is_said_and_far_ones_are_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="loopchain.p2p.grpc_util"):
        _load(_tls_dir(tmp_path / "far", ca_days=3650, cert_days=365))
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="loopchain.p2p.grpc_util"):
        _load(_tls_dir(tmp_path / "near", ca_days=20, cert_days=365))
    # the node's certificate ends with its CA (issued again, it would too): the CA's alone
    [said] = _said(caplog, logging.WARNING)
    assert said.startswith("the CA certificate expires on ")
    assert said.endswith(
        "(within 20 days): every certificate it issued fails after that: make a new CA, issue "
        "every node's certificate again and restart the nodes with them before then"
    )


def test_the_notice_counts_down_to_the_last_day_then_expired_is_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = _load(_tls_dir(tmp_path, ca_days=3650, cert_days=365))
    end = pki.certificate_from_pem(tls.cert_pem).not_valid_after_utc
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="loopchain.p2p.grpc_util"):
        for before in (timedelta(days=31), timedelta(days=30), timedelta(days=1, hours=1)):
            assert log_certificate_notices(tls, end - before) == (before <= timedelta(days=30))
        assert log_certificate_notices(tls, end - timedelta(hours=3)) == 1
        assert log_certificate_notices(tls, end + timedelta(seconds=1)) == 1
    warnings = _said(caplog, logging.WARNING)
    assert [w.split(" (within ")[1].split(")")[0] for w in warnings] == [
        "30 days",
        "2 days",
        "1 day",
    ]
    [error] = _said(caplog, logging.ERROR)
    assert "cert.pem expired on " in error
    assert error.endswith(
        "every TLS handshake with it fails: issue it again (certificate_util.py peer issue) and "
        "restart this node with the new one (if it should still be valid, this clock is ahead: "
        "set it right, NTP)"
    )


async def test_a_running_node_says_it_again_at_each_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = _load(_tls_dir(tmp_path, ca_days=3650, cert_days=365))
    end = pki.certificate_from_pem(tls.cert_pem).not_valid_after_utc
    moments = iter([end - timedelta(days=400), end - timedelta(days=5), end + timedelta(days=1)])
    last = end + timedelta(days=1)
    caplog.clear()
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="loopchain.p2p.grpc_util"):
        watch = asyncio.create_task(
            watch_certificates(tls, stop, every=0.01, clock=lambda: next(moments, last))
        )
        try:

            async def expired_said() -> bool:
                return bool(_said(caplog, logging.ERROR))

            await wait_until_async(expired_said, 10.0, "the expired certificate said")
        finally:
            stop.set()
            await asyncio.wait_for(watch, 10.0)  # it ends when the node stops
    assert [w for w in _said(caplog, logging.WARNING) if "(within 5 days)" in w]
    assert datetime.now(UTC) < end  # (the clock given, not this machine's)


async def test_a_peer_waiting_for_its_radiostation_says_it_at_each_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer whose RadioStation does not answer waits for it, days maybe: its certificates
    are watched from its start, not from its registration (review: a first-start peer waiting
    gave no notice after the one at start)."""
    monkeypatch.setattr(grpc_util, "CERTIFICATE_CHECK_S", 0.05)
    silent = hold_port(free_port_pair())  # bound, never listening: the RadioStation is down
    config = load_config(
        environ={},
        overrides={
            "GRPC_SSL_TYPE": 2,
            "DEFAULT_STORAGE_PATH": str(tmp_path),
            "RUN_REST_PROXY": False,
        },
    )
    target = f"127.0.0.1:{silent.getsockname()[1]}"
    node = PeerNode(config, PeerOptions(free_port_pair(), (target,), None, None, False))
    _tls_dir(node.root, ca_days=3650, cert_days=10)
    stop = asyncio.Event()

    def notices() -> list[str]:
        return [w for w in _said(caplog, logging.WARNING) if "(within 10 days)" in w]

    try:
        with caplog.at_level(logging.WARNING, logger="loopchain.p2p.grpc_util"):
            running = asyncio.create_task(node.run(stop))

            async def said_again() -> bool:
                assert not running.done(), running
                return len(notices()) >= 3

            await wait_until_async(said_again, 60.0, "the notice said again while registering")
            assert node.registration is None
        stop.set()
        async with asyncio.timeout(30.0):
            await running
    finally:
        stop.set()
        silent.close()
