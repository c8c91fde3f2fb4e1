"""Revocation lists of a node's TLS: a JSON list of serials and the CA's CRL in PEM (as
tools/certificate_util.py writes ca.crl.pem), the CRL checked against the CA's signature; and a real
peer over mutual TLS refusing a caller whose certificate its CRL revokes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from loopchain.configure import Config, load_config
from loopchain.p2p import grpc_util
from loopchain.p2p.grpc_util import load_tls
from loopchain.p2p.radiostation_client import RadioStations, RadioStationUnreachable
from loopchain.peer.node import PeerNode, PeerOptions
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos.loopchain_pb2_grpc import (
    PeerServiceStub,
    RadioStationServicer,
    RadioStationStub,
    add_RadioStationServicer_to_server,
)
from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer, load_or_create_key
from loopchain.types.hashing import sha3_256
from tools.procs import INNER_DIFF, TlsNetwork, free_port_pair, get, wait_until
from tools.tls_network import RADIOSTATION_NAME

DEADLINE = 5.0


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str = "test CA") -> Ca:
        return cls(*pki.create_ca(name, 30))

    def issue(self, signer: Signer) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        tls_key = pki.generate_tls_key()
        cert = pki.issue_peer_certificate(
            self.cert, self.key, signer.public_key, tls_key.public_key(), 10
        )
        return cert, tls_key

    def crl_pem(self, *serials: int) -> bytes:
        now = datetime.now(UTC)
        return pki.crl_to_pem(pki.create_crl(self.cert, self.key, dict.fromkeys(serials, now)))


def _tls_dir(tmp_path: Path, ca: Ca) -> Path:
    """A node's TLS folder: the CA, and a certificate and key of its own."""
    folder = tmp_path / "tls"
    folder.mkdir()
    cert, key = ca.issue(Signer.generate())
    (folder / "ca.pem").write_bytes(pki.certificate_to_pem(ca.cert))
    (folder / "cert.pem").write_bytes(pki.certificate_to_pem(cert))
    (folder / "key.pem").write_bytes(pki.private_key_to_pem(key))
    return folder


def _config(**overrides: Any) -> Config:
    return load_config(environ={}, overrides={"GRPC_SSL_TYPE": 2, **overrides})


def _revoked(folder: Path, **overrides: Any) -> frozenset[int]:
    tls = load_tls(_config(**overrides), folder)
    assert tls is not None
    return tls.revoked


def test_json_and_crl_revocation_lists_in_the_tls_folder(tmp_path: Path) -> None:
    ca = Ca.create()
    folder = _tls_dir(tmp_path, ca)
    assert _revoked(folder) == frozenset()
    (folder / "revoked.json").write_text(json.dumps([5, "0xff", "a0"]))
    assert _revoked(folder) == {5, 255, 160}
    (folder / "ca.crl.pem").write_bytes(ca.crl_pem(77, 78))
    assert _revoked(folder) == {5, 255, 160, 77, 78}  # both lists count
    (folder / "revoked.json").unlink()
    assert _revoked(folder) == {77, 78}


def test_a_configured_revocation_list_may_be_json_or_a_crl(tmp_path: Path) -> None:
    ca = Ca.create()
    folder = _tls_dir(tmp_path, ca)
    (folder / "revoked.json").write_text("[1]")  # not used when a path is configured
    crl = tmp_path / "elsewhere.crl"
    crl.write_bytes(ca.crl_pem(1234))
    assert _revoked(folder, GRPC_SSL_REVOKED_PATH=str(crl)) == {1234}
    listed = tmp_path / "list.json"
    listed.write_text('["4d2"]')
    assert _revoked(folder, GRPC_SSL_REVOKED_PATH=str(listed)) == {1234}
    with pytest.raises(OSError, match=r"cannot read the revocation list .*missing"):
        _revoked(folder, GRPC_SSL_REVOKED_PATH=str(tmp_path / "missing"))


def test_a_crl_the_ca_did_not_sign_is_refused(tmp_path: Path) -> None:
    ca = Ca.create()
    folder = _tls_dir(tmp_path, ca)
    crl_path = folder / "ca.crl.pem"
    crl_path.write_bytes(Ca.create("another CA").crl_pem(9))
    with pytest.raises(OSError, match="the CRL was issued by CN=another CA, not this CA"):
        _revoked(folder)
    same_name = Ca.create("test CA")  # same issuer name, another key
    crl_path.write_bytes(same_name.crl_pem(9))
    with pytest.raises(OSError, match="the CRL's signature does not verify with the CA key"):
        _revoked(folder)
    crl_path.write_bytes(b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    with pytest.raises(OSError, match=f"cannot use the revocation list {crl_path}: not a PEM CRL"):
        _revoked(folder)
    crl_path.write_text("{")
    with pytest.raises(OSError, match="neither a CRL PEM nor JSON"):
        _revoked(folder)


def test_a_served_crl_is_installed_only_when_its_ca_signed_it_and_it_is_newer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a RadioStation serves cannot forge revocations (another CA's CRL) nor roll them back
    (an older or the same CRL); a newer one of the CA replaces the node's, and a damaged one."""
    monkeypatch.setattr(grpc_util, "REVOCATION_RECHECK_S", 0.0)
    ca = Ca.create()
    folder = _tls_dir(tmp_path, ca)
    tls = load_tls(_config(), folder)
    assert tls is not None and tls.revoked == frozenset()
    start = datetime.now(UTC) - timedelta(hours=1)

    def crl(*serials: int, at: datetime, of: Ca = ca) -> bytes:
        signed = pki.create_crl(of.cert, of.key, dict.fromkeys(serials, at), now=at)
        return pki.crl_to_pem(signed)

    first = crl(5, at=start)
    assert grpc_util.install_crl(folder, first, tls.ca_pem) == 1
    assert tls.revoked == {5}
    for refused, why in (
        (crl(5, 6, at=start + timedelta(minutes=1), of=Ca.create("another CA")), "not this CA"),
        (crl(at=start - timedelta(minutes=1)), "not after this node's"),
        (crl(7, at=start), "not after this node's"),
        (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "not a PEM CRL"),
    ):
        with pytest.raises(grpc_util.CrlRefused, match=why):
            grpc_util.install_crl(folder, refused, tls.ca_pem)
        assert (folder / "ca.crl.pem").read_bytes() == first
    assert tls.revoked == {5}
    newer = crl(5, 6, at=start + timedelta(minutes=2))
    assert grpc_util.install_crl(folder, newer, tls.ca_pem) == 2
    assert tls.revoked == {5, 6}
    (folder / "ca.crl.pem").write_bytes(b"damaged")
    assert grpc_util.install_crl(folder, crl(9, at=start), tls.ca_pem) == 1
    assert tls.revoked == {9}
    # text around the CRL (which the PEM reader skips) is not written: a revocation list that
    # is not one alone stopped the node at its next start (review)
    latest = crl(9, 10, at=start + timedelta(minutes=3))
    assert grpc_util.install_crl(folder, b"[1, 2]\n" + latest + b"more", tls.ca_pem) == 2
    assert (folder / "ca.crl.pem").read_bytes() == latest
    assert tls.revoked == {9, 10}
    reloaded = load_tls(_config(), folder)
    assert reloaded is not None and reloaded.revoked == {9, 10}
    # what a node holds (and a RadioStation serves, by digest) is the CRL alone, as written
    # here: a file with other line ends has the same digest as the peers' copies
    (folder / "ca.crl.pem").write_bytes(latest.replace(b"\n", b"\r\n"))
    assert tls.revoked == {9, 10}
    assert tls.revocations is not None and tls.revocations.crl_pem == latest


def test_a_tls_key_that_is_not_the_certificates_is_refused_at_start(tmp_path: Path) -> None:
    """A re-issue cut short (the new key written, not yet its certificate) left a pair every
    handshake failed with, and an error that did not say why."""
    ca = Ca.create()
    folder = _tls_dir(tmp_path, ca)
    (folder / "key.pem").write_bytes(pki.private_key_to_pem(pki.generate_tls_key()))
    with pytest.raises(OSError, match=r"the TLS private key .*key\.pem does not belong to"):
        load_tls(_config(), folder)
    (folder / "cert.pem").write_text("not a certificate")
    with pytest.raises(OSError, match=r"cannot read the TLS certificate .*cert\.pem"):
        load_tls(_config(), folder)


def test_revocation_lists_are_read_again_when_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A revocation took effect only once the node restarted; now when a list changes. A list
    that cannot be used leaves the revocations read before in force."""
    monkeypatch.setattr(grpc_util, "REVOCATION_RECHECK_S", 0.0)
    ca = Ca.create()
    folder = _tls_dir(tmp_path, ca)
    tls = load_tls(_config(), folder)
    assert tls is not None and tls.revoked == frozenset()
    crl = folder / "ca.crl.pem"
    crl.write_bytes(ca.crl_pem(41))
    assert tls.revoked == {41}
    (folder / "revoked.json").write_text("[7]")
    assert tls.revoked == {41, 7}
    first = tls.revoked
    assert tls.revoked is first  # the same set while nothing changes
    crl.write_bytes(Ca.create("another CA").crl_pem(99))
    assert tls.revoked == {41, 7}
    assert "the CRL was issued by CN=another CA, not this CA" in caplog.text
    assert "the revocations read before stay in force" in caplog.text
    crl.write_bytes(ca.crl_pem(41, 42))
    assert tls.revoked == {41, 42, 7}
    crl.unlink()
    assert tls.revoked == {7}


def test_a_configured_revocation_list_that_goes_away_leaves_its_revocations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_util, "REVOCATION_RECHECK_S", 0.0)
    ca = Ca.create()
    folder = _tls_dir(tmp_path, ca)
    listed = tmp_path / "list.json"
    listed.write_text("[3]")
    tls = load_tls(_config(GRPC_SSL_REVOKED_PATH=str(listed)), folder)
    assert tls is not None and tls.revoked == {3}
    listed.unlink()
    assert tls.revoked == {3}
    listed.write_text("[3, 4]")
    assert tls.revoked == {3, 4}


# -- a real peer over mutual TLS


@dataclass(frozen=True)
class Identity:
    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes

    def call(self, port: int, server_id: str, method: str, request: Any) -> Any:
        credentials = grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)
        options = [("grpc.ssl_target_name_override", server_id)]
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
            return getattr(PeerServiceStub(channel), method)(request, timeout=DEADLINE)

    def call_radiostation(self, port: int, method: str, request: Any) -> Any:
        credentials = grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)
        options = [("grpc.ssl_target_name_override", RADIOSTATION_NAME)]
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
            return getattr(RadioStationStub(channel), method)(request, timeout=DEADLINE)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[TlsNetwork]:
    net = TlsNetwork(tmp_path, {"RUN_REST_PROXY": False})
    try:
        yield net
    finally:
        net.stop_and_check()


def test_a_peer_refuses_a_caller_its_crl_revokes(network: TlsNetwork) -> None:
    port = network.new_peer_port()
    peer_id = network.issue_tls([port])[port]
    tls_dir = network.peer_dir(port) / "tls"
    ca_pem = (network.ca_dir / "ca.pem").read_bytes()
    ca = Ca(
        pki.certificate_from_pem(ca_pem),
        pki.private_key_from_pem((network.ca_dir / "ca_key.pem").read_bytes()),
    )
    signer = load_or_create_key(network.peer_dir(port) / "peer_key")
    identities = []
    for _ in range(2):  # two more certificates of the peer's own key: the first is revoked
        cert, key = ca.issue(signer)
        identities.append(
            (
                cert.serial_number,
                Identity(ca_pem, pki.private_key_to_pem(key), pki.certificate_to_pem(cert)),
            )
        )
    (revoked_serial, revoked), (_, valid) = identities
    (tls_dir / "ca.crl.pem").write_bytes(ca.crl_pem(revoked_serial))
    network.start_radiostation()
    network.start_peer(port, wait=False)
    request = pb.ChannelRequest(channel="loopchain_default")
    status = wait_until(lambda: _answer(valid, port, peer_id, request), 40, "the peer over TLS")
    assert status.block_height >= -1
    with pytest.raises(grpc.RpcError) as refused:
        revoked.call(port, peer_id, "GetStatus", request)
    error = refused.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert f"certificate refused: revoked (serial {pki.serial_hex(revoked_serial)})" in (
        error.details() or ""
    )
    assert valid.call(port, peer_id, "GetStatus", request).peer_id == peer_id  # still served
    log = network.peers[port]
    wait_until(
        lambda: "refused a caller's certificate: revoked" in log.log_text(),
        10,
        "the peer's warning",
    )
    # revoked while the peer runs (its certificate checked and remembered by then): refused
    # once the peer reads its list again, without a restart
    valid_serial = identities[1][0]
    (tls_dir / "ca.crl.pem").write_bytes(ca.crl_pem(revoked_serial, valid_serial))
    wait_until(lambda: _refused(valid, port, peer_id, request), 30, "the revocation to take effect")
    assert "revocation lists changed: 2 serials revoked (1 before)" in log.log_text()


def test_a_crl_put_in_the_radiostations_tls_folder_reaches_the_peers(network: TlsNetwork) -> None:
    """One copy of the CA's CRL, into the RadioStation's TLS folder, revokes a certificate on
    every peer: each fetches it (its digest comes with the heartbeat answers), checks that its
    CA signed it and that it is newer than its own, and installs it. Before, a peer not given
    the file by hand kept taking the revoked certificate."""
    port = network.new_peer_port()
    peer_id = network.issue_tls([port])[port]
    ca = Ca(
        pki.certificate_from_pem((network.ca_dir / "ca.pem").read_bytes()),
        pki.private_key_from_pem((network.ca_dir / "ca_key.pem").read_bytes()),
    )
    ca_pem = pki.certificate_to_pem(ca.cert)
    signer = load_or_create_key(network.peer_dir(port) / "peer_key")
    cert, key = ca.issue(signer)
    caller = Identity(ca_pem, pki.private_key_to_pem(key), pki.certificate_to_pem(cert))
    network.start_radiostation()
    network.start_peer(port, wait=False)
    request = pb.ChannelRequest(channel="loopchain_default")
    wait_until(lambda: _answer(caller, port, peer_id, request), 40, "the peer over TLS")
    (network.rs_dir / "tls" / "ca.crl.pem").write_bytes(ca.crl_pem(cert.serial_number))
    wait_until(lambda: _refused(caller, port, peer_id, request), 30, "the peer to take the CRL")
    installed = (network.peer_dir(port) / "tls" / "ca.crl.pem").read_bytes()
    assert installed == (network.rs_dir / "tls" / "ca.crl.pem").read_bytes()
    log = network.peers[port].log_text()
    assert "installed the CRL the RadioStation serves: 1 certificates revoked" in log


def test_a_peer_serves_its_metrics_to_no_other_node(network: TlsNetwork) -> None:
    """Metrics cover every channel of a peer: a node with a certificate of the CA, a party of
    none of them, read them all. They are served on the local port only (its REST proxy's)."""
    port = network.new_peer_port()
    peer_id = network.issue_tls([port])[port]
    ca_pem = (network.ca_dir / "ca.pem").read_bytes()
    ca = Ca(
        pki.certificate_from_pem(ca_pem),
        pki.private_key_from_pem((network.ca_dir / "ca_key.pem").read_bytes()),
    )
    cert, key = ca.issue(Signer.generate())  # a stranger to every channel
    stranger = Identity(ca_pem, pki.private_key_to_pem(key), pki.certificate_to_pem(cert))
    network.start_radiostation()
    network.start_peer(port, wait=False)
    request = pb.ChannelRequest(channel="loopchain_default")
    wait_until(lambda: _refused(stranger, port, peer_id, request), 40, "the peer over TLS")
    with pytest.raises(grpc.RpcError) as refused:
        stranger.call(port, peer_id, "GetMetrics", pb.MetricsRequest())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
    assert "metrics are served on the local port" in (refused.value.details() or "")
    local = port + int(_config().PORT_DIFF_INNER_SERVICE)
    with grpc.insecure_channel(f"127.0.0.1:{local}") as channel:
        reply = PeerServiceStub(channel).GetMetrics(pb.MetricsRequest(), timeout=DEADLINE)
    assert b"loopchain" in reply.text


def _answer(identity: Identity, port: int, peer_id: str, request: Any) -> Any:
    try:
        return identity.call(port, peer_id, "GetStatus", request)
    except grpc.RpcError:
        return None


def _refused(identity: Identity, port: int, peer_id: str, request: Any) -> bool:
    try:
        identity.call(port, peer_id, "GetStatus", request)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.PERMISSION_DENIED
    return False


# -- a revoked member is sent nothing, and the RadioStation lists it connected no more

ALPHA = "alpha"


def _local(port: int, method: str, request: Any) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port + INNER_DIFF}") as channel:
        return getattr(PeerServiceStub(channel), method)(request, timeout=DEADLINE)


def _final_on(port: int, tx_hash: str) -> bool:
    try:
        return (
            _local(port, "GetTx", pb.GetTxRequest(channel=ALPHA, tx_hash=tx_hash)).block_height >= 0
        )
    except grpc.RpcError:
        return False


def _tls_identity(tls_dir: Path) -> Identity:
    return Identity(*((tls_dir / name).read_bytes() for name in ("ca.pem", "key.pem", "cert.pem")))


def _status_at_radiostation(net: TlsNetwork, peer_id: str) -> int:
    peers = get(f"{net.rs_rest}/api/v1/peer/list?channel={ALPHA}")["data"]["registered_peer_list"]
    return next(int(p["status"]) for p in peers if p["peer_id"] == peer_id)


def test_a_revoked_member_is_sent_nothing_and_listed_connected_no_more(tmp_path: Path) -> None:
    """Peers refused a revoked member's own calls but kept pushing it every proposal,
    certificate and transaction over their links to it, and the RadioStation kept it listed as
    connected (its heartbeats taken): it went on receiving its channel's blocks."""
    config = {
        "ENABLE_CHANNEL_AUTH": True,
        "LOOPCHAIN_DEFAULT_CHANNEL": ALPHA,
        "RUN_REST_PROXY": False,
        "CHANNEL_WORKERS": "never",
    }
    net = TlsNetwork(tmp_path, config)
    try:
        a, d = net.new_peer_port(), net.new_peer_port()
        ids = net.issue_tls([a, d])
        members = [{"peer_id": ids[a]}, {"peer_id": ids[d], "role": "auditor"}]
        (tmp_path / "channel_manage_data.json").write_text(json.dumps({ALPHA: {"peers": members}}))
        net.start_radiostation()
        net.start_peer(a, wait=False)
        net.start_peer(d, wait=False)
        tx1 = wait_until(
            lambda: _answer_of(a, "CreateTx", pb.CreateTxRequest(channel=ALPHA, data_json="{}")),
            90,
            "A to take a transaction",
        ).tx_hash
        wait_until(lambda: _final_on(d, tx1), 60, "the first transaction final on D")
        wait_until(lambda: _status_at_radiostation(net, ids[d]) == 1, 30, "D listed connected")
        # D's certificate is revoked on A and at the RadioStation
        d_tls = net.peer_dir(d) / "tls"
        serial = pki.certificate_from_pem((d_tls / "cert.pem").read_bytes()).serial_number
        revoked = json.dumps([pki.serial_hex(serial)])
        (net.peer_dir(a) / "tls" / "revoked.json").write_text(revoked)
        (net.rs_dir / "tls" / "revoked.json").write_text(revoked)
        request = pb.ChannelRequest(channel=ALPHA)
        d_identity = _tls_identity(d_tls)
        wait_until(lambda: _refused(d_identity, a, ids[a], request), 30, "A to refuse D's calls")
        # A's list is read again by now: what A sends after it goes to D no more
        tx2 = _local(a, "CreateTx", pb.CreateTxRequest(channel=ALPHA, data_json='{"n": 2}')).tx_hash
        wait_until(lambda: _final_on(a, tx2), 60, "the second transaction final on A")
        log = net.peers[a]
        wait_until(
            lambda: f"sending nothing to peer {ids[d]}" in log.log_text(), 30, "A to stop sending"
        )
        assert f"its certificate is refused: revoked (serial {pki.serial_hex(serial)})" in (
            log.log_text()
        )
        tx3 = _local(a, "CreateTx", pb.CreateTxRequest(channel=ALPHA, data_json='{"n": 3}')).tx_hash
        wait_until(lambda: _final_on(a, tx3), 60, "the third transaction final on A")
        assert not _final_on(d, tx2) and not _final_on(d, tx3)
        # the RadioStation: D's heartbeats are refused, it is listed connected no more, and
        # its peer lists are refused
        wait_until(lambda: _status_at_radiostation(net, ids[d]) != 1, 30, "D listed not connected")
        with pytest.raises(grpc.RpcError) as refused:
            d_identity.call_radiostation(net.rs_port, "GetPeerList", request)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
        assert "certificate refused: revoked" in (refused.value.details() or "")
        assert _status_at_radiostation(net, ids[a]) == 1  # A is still listed connected
    finally:
        net.stop_and_check()


def _answer_of(port: int, method: str, request: Any) -> Any:
    try:
        return _local(port, method, request)
    except grpc.RpcError:
        return None


@pytest.mark.parametrize("which", ["certificate", "CA"])
def test_a_certificate_not_yet_valid_by_this_clock_is_an_error_naming_it_and_the_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, which: str
) -> None:
    """A node whose certificate (or CA) starts after this machine's clock starts, saying so at
    ERROR with the date and the clock; TLS alone said only "certificate is not yet valid" in
    gRPC's log, naming neither (review: a peer 10 minutes behind waited for its RadioStation for
    good). A node whose certificates are valid says nothing."""
    later = datetime.now(UTC) + timedelta(minutes=10)
    ca = Ca(*pki.create_ca("test CA", 30, not_before=later if which == "CA" else None))
    folder = _tls_dir(tmp_path, ca)
    caplog.set_level(logging.ERROR, logger="loopchain.p2p.grpc_util")
    if which == "certificate":
        key = pki.generate_tls_key()
        late = pki.issue_peer_certificate(
            ca.cert, ca.key, Signer.generate().public_key, key.public_key(), 10, not_before=later
        )
        (folder / "cert.pem").write_bytes(pki.certificate_to_pem(late))
        (folder / "key.pem").write_bytes(pki.private_key_to_pem(key))
    assert load_tls(_config(), folder) is not None  # it starts: a clock set right makes it work
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    named = "this node's TLS certificate" if which == "certificate" else "the CA certificate"
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{named} ") and "not yet valid (valid from" in errors[0]
    assert "by this machine's clock" in errors[0] and "set it right (NTP)" in errors[0]


def test_valid_certificates_load_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="loopchain.p2p.grpc_util")
    assert load_tls(_config(), _tls_dir(tmp_path, Ca.create())) is not None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class _Served:
    """The RadioStation as a peer's revocation following sees it: the digest its heartbeats
    name, and the CRL it serves (or why it does not answer)."""

    def __init__(self, pem: bytes | Exception) -> None:
        self.pem = pem
        self.revocations_digest = sha3_256(pem) if isinstance(pem, bytes) else b"\x01" * 32
        self.fetched = 0

    async def revocations(self) -> bytes:
        self.fetched += 1
        if isinstance(self.pem, Exception):
            raise self.pem
        return self.pem


async def test_a_served_crl_not_fetched_refused_or_not_written_is_tried_again_only_when_worth_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer follows the CRL its RadioStation serves: one it could not fetch, or could not
    write, is fetched again at the next heartbeat; one it refuses (another CA's) only once the
    digest the RadioStation names changes; one installed is in force, and not fetched again."""
    ca = Ca.create()
    config = load_config(
        environ={}, overrides={"GRPC_SSL_TYPE": 2, "DEFAULT_STORAGE_PATH": str(tmp_path)}
    )
    node = PeerNode(config, PeerOptions(7100, ("127.0.0.1:7102",), None, None, False))
    node.root.mkdir(parents=True)
    folder = _tls_dir(node.root, ca)
    node.tls = load_tls(config, folder)
    assert node.tls is not None and node.tls.revocations is not None

    async def beats(served: _Served, count: int = 2) -> int:
        for _ in range(count):
            await node._follow_revocations(served)  # type: ignore[arg-type]
        return served.fetched

    with caplog.at_level(logging.DEBUG, logger="loopchain.peer.node"):
        assert await beats(_Served(RadioStationUnreachable("down"))) == 2
        assert "revocations not fetched: down" in caplog.text
        assert await beats(_Served(Ca.create("another CA").crl_pem(5))) == 1
        assert "is not installed" in caplog.text and "not this CA" in caplog.text
        (folder / "ca.crl.pem").mkdir()  # a folder in the file's place: the write fails
        assert await beats(_Served(ca.crl_pem(5))) == 2
        assert "could not be written" in caplog.text
        (folder / "ca.crl.pem").rmdir()
        served = _Served(ca.crl_pem(5))
        assert await beats(served, 3) == 1
        assert "1 certificates revoked" in caplog.text
    assert (folder / "ca.crl.pem").read_bytes() == served.pem
    assert load_tls(config, folder).revoked == {5}  # type: ignore[union-attr]


class _Station(RadioStationServicer):
    """Registers every caller (signed by `signer`, granting no channel)."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    async def ConnectPeer(self, request: pb.ConnectPeerRequest, context: Any) -> Any:
        return pb.ConnectPeerReply(code=0, order=1, radiostation_public_key=self.signer.public_key)


@pytest.mark.asyncio
async def test_a_radiostation_whose_certificate_is_revoked_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC checks the RadioStation's certificate against the CA and its name, never against
    the revocation lists: a RadioStation whose certificate was revoked was still taken (its
    grants, its member lists, its key as the issuer at a peer's next start)."""
    monkeypatch.setattr(grpc_util, "REVOCATION_RECHECK_S", 0.0)
    ca = Ca.create()
    station = Signer.generate()
    tls_key = pki.generate_tls_key()
    cert = pki.issue_peer_certificate(
        ca.cert,
        ca.key,
        station.public_key,
        tls_key.public_key(),
        10,
        extra_dns_names=(RADIOSTATION_NAME,),
    )
    served = grpc_util.Tls(
        pki.certificate_to_pem(ca.cert),
        pki.certificate_to_pem(cert),
        pki.private_key_to_pem(tls_key),
    )
    folder = _tls_dir(tmp_path, ca)
    tls = load_tls(_config(), folder)
    assert tls is not None
    port = free_port_pair()
    server = grpc_util.create_server(_config())
    add_RadioStationServicer_to_server(_Station(station), server)
    grpc_util.bind(server, "127.0.0.1", port, served)
    await server.start()
    stations = RadioStations([f"127.0.0.1:{port}"], _config(), tls)
    try:
        peer = Signer.generate()
        registration = await stations.connect(peer, "127.0.0.1:7100")
        assert registration.radiostation_address == station.address
        (folder / "revoked.json").write_text(json.dumps([cert.serial_number]))
        with pytest.raises(RadioStationUnreachable, match="certificate is refused: revoked"):
            await stations.connect(peer, "127.0.0.1:7100")
        (folder / "revoked.json").write_text("[]")  # taken again once the lists change
        assert (await stations.connect(peer, "127.0.0.1:7100")).order == 1
    finally:
        await stations.close()
        await server.stop(grace=0)
