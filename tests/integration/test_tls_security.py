"""Mutual-TLS security of real nodes: a RadioStation and three peers as processes, attacked over
real gRPC from this test with certificates it issues (or steals from the nodes' storage).

Channel "alpha": A and B validate. Channel "beta": A and B validate, C audits (C is a party of beta
only). A trusts the network's CA and has one extra certificate of C's revoked (its tls/revoked.json).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.p2p.grpc_util import STREAM_ACCEPTED
from loopchain.p2p.worker_link import CALLER_KEY
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos.loopchain_pb2_grpc import PeerServiceStub, RadioStationStub
from loopchain.types import certificates as pki
from loopchain.types.block import Block
from loopchain.types.codes import ResponseCode
from loopchain.types.crypto import Signer, load_or_create_key
from loopchain.types.icon_tx import make_params, sign_params, verify_send_params
from loopchain.types.peer import connect_digest
from loopchain.types.transaction import Transaction
from loopchain.types.vote import QuorumCertificate, Vote
from tools.procs import INNER_DIFF, TlsNetwork, error_lines, get, wait_until
from tools.tls_network import RADIOSTATION_NAME

ALPHA, BETA = "alpha", "beta"
PAYER = Signer(bytes(31) + b"\x07")  # funded at beta's genesis
RS_NAME = "loopchain-radiostation"
DEADLINE = 5.0  # seconds, every gRPC call of this test
# a flood: refused calls of one kind, a few at a time, each answered; a node logs a burst of
# their warnings and REFUSAL_LINES_A_SECOND more a second (RefusalLog), never a line a call
FLOOD = 300
FLOOD_AT_ONCE = 10
FEW_LINES = 50
REFUSAL_LINES_A_SECOND = 20
# A serves two channels, each in a worker process: the callers A's port finds are judged there
CONFIG = {
    "ENABLE_CHANNEL_AUTH": True,
    "LOOPCHAIN_DEFAULT_CHANNEL": ALPHA,
    "RUN_REST_PROXY": False,
    "CHANNEL_WORKERS": "always",
}


# ------------------------------------------------------------------ TLS material


@dataclass(frozen=True)
class Identity:
    """A client's TLS material: the CA it trusts, its key and certificate (PEM)."""

    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes

    @classmethod
    def of_node(cls, tls_dir: Path) -> Identity:
        """The material a node keeps in its tls/ directory (as a thief would copy it)."""
        return cls(*((tls_dir / n).read_bytes() for n in ("ca.pem", "key.pem", "cert.pem")))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)


def issue(
    ca_pem: bytes,
    ca_key_pem: bytes,
    signing_key: bytes,
    *,
    trust: bytes | None = None,
    not_before: datetime | None = None,
    days: int = 1,
) -> tuple[Identity, int]:
    """A new certificate of the CA for the secp256k1 key `signing_key`; (identity, serial)."""
    ca_cert = pki.certificate_from_pem(ca_pem)
    ca_key = pki.private_key_from_pem(ca_key_pem)
    tls_key = pki.generate_tls_key()
    cert = pki.issue_peer_certificate(
        ca_cert, ca_key, signing_key, tls_key.public_key(), days, not_before=not_before
    )
    identity = Identity(
        trust or ca_pem, pki.private_key_to_pem(tls_key), pki.certificate_to_pem(cert)
    )
    return identity, cert.serial_number


# ------------------------------------------------------------------ the network


@dataclass
class SecNet:
    """The running network, its parties, and the certificates the tests attack with."""

    net: TlsNetwork
    ports: dict[str, int]
    revoked_c: Identity  # C's certificate whose serial A's revoked.json lists
    spare_target: str  # listed in beta, never registered

    def port(self, name: str) -> int:
        return self.ports[name]

    def peer_id(self, name: str) -> str:
        return self.net.peer_ids[self.ports[name]]

    def identity(self, name: str) -> Identity:
        return Identity.of_node(self.net.peer_dir(self.ports[name]) / "tls")

    def signer(self, name: str) -> Signer:
        return load_or_create_key(self.net.peer_dir(self.ports[name]) / "peer_key")

    def log(self, name: str) -> str:
        return self.net.peers[self.ports[name]].log_text()


def tls_call(port: int, server_id: str, identity: Identity, method: str, request: Any) -> Any:
    """Call PeerService.`method` on 127.0.0.1:`port` over mutual TLS, pinning `server_id`."""
    options = [("grpc.ssl_target_name_override", server_id)]
    with grpc.secure_channel(f"127.0.0.1:{port}", identity.credentials(), options) as channel:
        return getattr(PeerServiceStub(channel), method)(request, timeout=DEADLINE)


def local_call(port: int, method: str, request: Any) -> Any:
    """Call PeerService.`method` on the peer's plain loopback port (as its REST proxy does)."""
    with grpc.insecure_channel(f"127.0.0.1:{port + INNER_DIFF}") as channel:
        return getattr(PeerServiceStub(channel), method)(request, timeout=DEADLINE)


def refusal(call: Any, *args: Any) -> grpc.RpcError:
    """The error a gRPC call must end with."""
    with pytest.raises(grpc.RpcError) as refused:
        call(*args)
    return refused.value


def _channel_file(ports: dict[str, int], ids: dict[int, str], spare: str) -> dict[str, Any]:
    def peer(name: str, role: str = "validator") -> dict[str, str]:
        port = ports[name]
        return {"peer_id": ids[port], "peer_target": f"127.0.0.1:{port}", "role": role}

    spare_auditor = {"peer_id": ids[int(spare.rpartition(":")[2])], "role": "auditor"}
    return {
        ALPHA: {"peers": [peer("A"), peer("B")]},
        BETA: {
            "peers": [peer("A"), peer("B"), peer("C", "auditor"), spare_auditor],
            "genesis_data": {
                "accounts": [
                    {"name": "payer", "address": PAYER.address, "balance": "0xde0b6b3a7640000"}
                ]
            },
        },
    }


def _ready(sec: SecNet) -> bool:
    for channel, names in ((ALPHA, "AB"), (BETA, "ABC")):
        for name in names:
            status = local_call(sec.port(name), "GetStatus", pb.ChannelRequest(channel=channel))
            if status.validator_count != 2 or status.audience_count != len(names) - 1:
                return False
    return True


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecNet]:
    """The network, started once; one block final in each channel; logs checked at the end."""
    net = TlsNetwork(tmp_path_factory.mktemp("tls_security"), CONFIG)
    try:
        ports = {name: net.new_peer_port() for name in "ABC"}
        spare = f"127.0.0.1:{net.new_peer_port()}"
        ids = net.issue_tls([*ports.values(), int(spare.rpartition(":")[2])])
        (net.workdir / "channel_manage_data.json").write_text(
            json.dumps(_channel_file(ports, ids, spare))
        )
        c_key = load_or_create_key(net.peer_dir(ports["C"]) / "peer_key").public_key
        ca_pem, ca_key = ((net.ca_dir / n).read_bytes() for n in ("ca.pem", "ca_key.pem"))
        revoked, serial = issue(ca_pem, ca_key, c_key)
        (net.peer_dir(ports["A"]) / "tls" / "revoked.json").write_text(
            json.dumps([pki.serial_hex(serial)])
        )
        sec = SecNet(net, ports, revoked, spare)
        net.start_radiostation()
        for port in ports.values():
            net.start_peer(port, wait=False)
        wait_until(_no_rpc_error(lambda: _ready(sec)), 60, "A and B in alpha, A, B and C in beta")
        for channel in (ALPHA, BETA):
            _final_tx(sec, channel, "ABC" if channel == BETA else "AB", f"first of {channel}")
        yield sec
    finally:
        net.stop_and_check()


def _final_tx(sec: SecNet, channel: str, names: str, data: str) -> str:
    """Post a transaction to A in `channel` and wait until it is final on every peer of `names`."""
    request = pb.CreateTxRequest(channel=channel, data_json=json.dumps({"data": data}))
    tx_hash = str(local_call(sec.port("A"), "CreateTx", request).tx_hash)

    def final() -> bool:
        found = pb.GetTxRequest(channel=channel, tx_hash=tx_hash)
        return all(local_call(sec.port(n), "GetTx", found).block_height >= 0 for n in names)

    wait_until(_no_rpc_error(final), 30, f"tx {tx_hash} final in {channel} on {names}")
    return tx_hash


def _no_rpc_error(condition: Any) -> Any:
    def polled() -> Any:
        try:
            return condition()
        except grpc.RpcError:
            return None

    return polled


def _log_has(sec: SecNet, name: str, text: str) -> bool:
    return any(text in line and "WARNING" in line for line in sec.log(name).splitlines())


# ------------------------------------------------------------------ handshake refusals


def test_certificate_of_another_ca_is_refused_at_the_handshake(sec: SecNet) -> None:
    rogue_ca, rogue_key = pki.create_ca("self-made CA", 1)
    ca_pem = sec.identity("C").ca_pem
    self_made, _ = issue(
        pki.certificate_to_pem(rogue_ca),
        pki.private_key_to_pem(rogue_key),
        sec.signer("B").public_key,  # even claiming a real party's id and key
        trust=ca_pem,
    )
    request = pb.GetBlockRequest(channel=ALPHA, height=0)
    error = refusal(tls_call, sec.port("A"), sec.peer_id("A"), self_made, "GetBlock", request)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    # A writes no line for a refused handshake (gRPC's own, below ERROR, let anyone fill its
    # disk: test_log_volume); a node whose certificate is wrong says so itself (its own at start,
    # the server's it reads before sending: grpc_util, server_certs)
    # the party's own certificate passes the same handshake
    reply = tls_call(sec.port("A"), sec.peer_id("A"), sec.identity("B"), "GetBlock", request)
    assert Block.decode(reply.block).height == 0


def test_client_pinning_another_peer_id_refuses_the_server(sec: SecNet) -> None:
    request = pb.GetBlockRequest(channel=ALPHA, height=0)
    b = sec.identity("B")
    error = refusal(tls_call, sec.port("A"), sec.peer_id("B"), b, "GetBlock", request)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error


def test_expired_certificate_is_refused(sec: SecNet) -> None:
    ca_pem = sec.identity("C").ca_pem
    ca_key = (sec.net.ca_dir / "ca_key.pem").read_bytes()
    long_ago = datetime.now(UTC) - timedelta(days=30)
    expired, _ = issue(ca_pem, ca_key, sec.signer("C").public_key, not_before=long_ago, days=1)
    assert pki.certificate_from_pem(expired.cert_pem).not_valid_after_utc < datetime.now(UTC)
    request = pb.GetBlockRequest(channel=BETA, height=0)
    error = refusal(tls_call, sec.port("A"), sec.peer_id("A"), expired, "GetBlock", request)
    if error.code() == grpc.StatusCode.PERMISSION_DENIED:
        assert "expired" in error.details(), error
    else:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error  # (no line in A's log)


# ------------------------------------------------------------------ refusals by the peer service


def test_revoked_certificate_is_denied_with_a_clear_message(sec: SecNet) -> None:
    a, a_id = sec.port("A"), sec.peer_id("A")
    request = pb.GetBlockRequest(channel=BETA, height=0)
    error = refusal(tls_call, a, a_id, sec.revoked_c, "GetBlock", request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert "revoked" in error.details() and "certificate refused" in error.details(), error
    wait_until(
        lambda: _log_has(sec, "A", "refused a caller's certificate: revoked"), 10, "A's warning"
    )
    # C's valid certificate is served the same block
    reply = tls_call(a, a_id, sec.identity("C"), "GetBlock", request)
    assert Block.decode(reply.block).header.channel == BETA


def test_party_of_beta_only_gets_nothing_of_alpha(sec: SecNet) -> None:
    a, a_id, c_id = sec.port("A"), sec.peer_id("A"), sec.peer_id("C")
    c = sec.identity("C")
    tx_hash = _final_tx(sec, ALPHA, "AB", "alpha secret")
    vote = Vote.create(ALPHA, 0, 0, b"\x01" * 32, sec.signer("C"))
    calls = {
        "GetBlockRange": pb.BlockRangeRequest(channel=ALPHA, from_height=0, max_blocks=10),
        "GetBlock": pb.GetBlockRequest(channel=ALPHA, height=0),
        "GetTx": pb.GetTxRequest(channel=ALPHA, tx_hash=tx_hash),
        "GetTxResult": pb.GetTxRequest(channel=ALPHA, tx_hash=tx_hash),
        "GetTxResultBatch": pb.TxLookupBatchRequest(channel=ALPHA, tx_hashes=[tx_hash]),
        "GetTxBatch": pb.TxLookupBatchRequest(channel=ALPHA, tx_hashes=[tx_hash]),
        "GetBalanceBatch": pb.BalanceBatchRequest(channel=ALPHA, addresses=["hx" + "0" * 40]),
        "QueryBatch": pb.QueryBatchRequest(channel=ALPHA, params_json=['{"method": "m"}']),
        "GetStatus": pb.ChannelRequest(channel=ALPHA),
        "Deliver": pb.ConsensusMessage(channel=ALPHA, sender=c_id, vote=vote.encode()),
        "CreateTx": pb.CreateTxRequest(channel=ALPHA, data_json='{"data": "from C"}'),
    }
    for method, request in calls.items():
        error = refusal(tls_call, a, a_id, c, method, request)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (method, error)
        assert f"peer {c_id} is not a party" in error.details(), (method, error)
    # C naming B in the metadata A gives its workers is still C: A names the caller itself
    claimed = ((CALLER_KEY, sec.peer_id("B")),)
    options = [("grpc.ssl_target_name_override", a_id)]
    with grpc.secure_channel(f"127.0.0.1:{a}", c.credentials(), options) as channel:
        stub = PeerServiceStub(channel)
        for method, request in (("GetStatus", calls["GetStatus"]), ("Deliver", calls["Deliver"])):
            error = refusal(
                lambda m=method, r=request: getattr(stub, m)(r, timeout=DEADLINE, metadata=claimed)
            )
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (method, error)
            assert f"peer {c_id} is not a party" in error.details(), (method, error)
    # on a link's stream each message is judged by itself, here by the worker of alpha on A (A
    # serves two channels, each in a worker): C's alpha vote is passed on, refused there, skipped
    streamed = iter([calls["Deliver"]] * 2)
    acked = tls_call(a, a_id, c, "DeliverStream", streamed).message
    assert acked == "0 handled, 0 refused, 2 passed to the channel's worker", acked
    wait_until(
        lambda: _log_has(sec, "A", f"refused peer {c_id}: not a party of channel alpha"),
        10,
        "A's warning about C",
    )
    # the same caller is served its own channel, and the tx is still A's and B's only
    reply = tls_call(a, a_id, c, "GetBlockRange", pb.BlockRangeRequest(channel=BETA, max_blocks=5))
    assert reply.blocks and all(Block.decode(b.block).header.channel == BETA for b in reply.blocks)
    found = local_call(a, "GetTx", pb.GetTxRequest(channel=ALPHA, tx_hash=tx_hash))
    assert found.block_height >= 0
    assert not (sec.net.peer_dir(sec.port("C")) / ALPHA).exists(), "C stored something of alpha"


def _peer_list(sec: SecNet, identity: Identity, channel: str) -> Any:
    options = [("grpc.ssl_target_name_override", RADIOSTATION_NAME)]
    address = f"127.0.0.1:{sec.net.rs_port}"
    with grpc.secure_channel(address, identity.credentials(), options) as rs:
        request = pb.ChannelRequest(channel=channel)
        return RadioStationStub(rs).GetPeerList(request, timeout=DEADLINE)


def test_the_radiostation_lists_a_channel_to_its_parties_only(sec: SecNet) -> None:
    """A review had any peer the CA certified read every channel's members, their addresses and
    keys, and its validator set (SCORE settings, genesis accounts) from the RadioStation."""
    ca_pem, ca_key = ((sec.net.ca_dir / n).read_bytes() for n in ("ca.pem", "ca_key.pem"))
    stranger, _ = issue(ca_pem, ca_key, Signer.generate().public_key)
    spare_port = int(sec.spare_target.rpartition(":")[2])
    spare = Identity.of_node(sec.net.peer_dir(spare_port) / "tls")  # listed, never registered
    for caller, channels in ((sec.identity("C"), [BETA]), (spare, [BETA]), (stranger, [])):
        for channel in (ALPHA, BETA):
            if channel in channels:
                assert _peer_list(sec, caller, channel).channel == channel
                continue
            error = refusal(_peer_list, sec, caller, channel)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (channel, error)
            assert "is not a party of channel" in error.details(), (channel, error)
    listed = _peer_list(sec, sec.identity("A"), ALPHA)
    assert {p.peer_id for p in listed.peers} == {sec.peer_id("A"), sec.peer_id("B")}


def test_a_certified_peer_holds_the_link_streams_a_peer_of_its_channels_may_need(
    sec: SecNet,
) -> None:
    """A peer the CA certified may hold the link streams a peer needs of the channels this one
    serves (A serves two: a link from each of its workers and its main process, four streams
    each: 12), where it held LINK_STREAMS_A_PEER (128) whatever it was a party of: four such
    peers of no channel here held all 512 (review). Its next stream is refused RESOURCE_EXHAUSTED
    (a sender falls back to calls); another peer's links are unaffected."""
    a, a_id = sec.port("A"), sec.peer_id("A")
    ca_pem, ca_key = ((sec.net.ca_dir / n).read_bytes() for n in ("ca.pem", "ca_key.pem"))
    stranger, _ = issue(ca_pem, ca_key, Signer.generate().public_key)
    allowed = 4 * (2 + 1)

    async def open_streams() -> tuple[list[bool], grpc.StatusCode | None, str]:
        options = [("grpc.ssl_target_name_override", a_id)]
        credentials = stranger.credentials()
        async with grpc.aio.secure_channel(f"127.0.0.1:{a}", credentials, options) as channel:
            stub = PeerServiceStub(channel)
            streams = [stub.DeliverStream(timeout=30) for _ in range(allowed + 1)]
            taken = [STREAM_ACCEPTED in tuple(await s.initial_metadata() or ()) for s in streams]
            refused = streams[taken.index(False)] if False in taken else streams[-1]
            code, details = await refused.code(), await refused.details()
            for stream in streams:
                stream.cancel()
            return taken, code, details

    taken, code, details = asyncio.run(open_streams())
    assert sorted(taken) == [False] + [True] * allowed, taken  # one refused, whichever came last
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert f"limit {allowed}" in details, details
    _final_tx(sec, ALPHA, "AB", "after the stranger's streams")


def test_an_auditor_gives_its_channel_no_transaction_through_another_peer(sec: SecNet) -> None:
    """C audits beta: its own REST takes no transaction. Through A it made its own v1
    transaction final by relaying it, and had A sign one for it by CreateTx (review). Both are
    refused now; the same relay by B, a validator, is taken."""
    a, a_id, c_id = sec.port("A"), sec.peer_id("A"), sec.peer_id("C")
    c = sec.identity("C")
    now = time.time_ns() // 1000
    submissions = {
        "CreateTx": pb.CreateTxRequest(channel=BETA, data_json='{"data": "by an auditor"}'),
        "CreateTxBatch": pb.CreateTxBatchRequest(channel=BETA, data_json=['{"data": "x"}']),
        "CreateIconTx": pb.IconTxRequest(channel=BETA, params_json="{}"),
        "CreateIconTxBatch": pb.IconTxBatchRequest(channel=BETA, params_json=["{}"]),
    }
    for method, request in submissions.items():
        error = refusal(tls_call, a, a_id, c, method, request)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (method, error)
        assert f"peer {c_id} audits this channel" in error.details(), (method, error)
    by_c = Transaction.create_v1(BETA, {"relayed by": "the auditor"}, now, sec.signer("C"))
    by_b = Transaction.create_v1(BETA, {"relayed by": "a validator"}, now, sec.signer("B"))
    tls_call(a, a_id, c, "AddTxBatch", pb.TxBatch(channel=BETA, txs=[by_c.encode()]))
    tls_call(
        a, a_id, sec.identity("B"), "AddTxBatch", pb.TxBatch(channel=BETA, txs=[by_b.encode()])
    )

    def final(tx: Transaction) -> bool:
        found = local_call(a, "GetTx", pb.GetTxRequest(channel=BETA, tx_hash=tx.hash_hex))
        return bool(found.block_height >= 0)

    wait_until(_no_rpc_error(lambda: final(by_b)), 30, "the validator's relayed tx final")
    error = refusal(local_call, a, "GetTx", pb.GetTxRequest(channel=BETA, tx_hash=by_c.hash_hex))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error  # neither pooled nor in a block
    # nor an ICON v3 one (a funded account's, its operator's say) through A (review); by B, it is
    by_c3, by_b3 = (_transfer(now + i, sec) for i in (1, 2))
    tls_call(a, a_id, c, "AddTxBatch", pb.TxBatch(channel=BETA, txs=[by_c3.encode()]))
    tls_call(
        a, a_id, sec.identity("B"), "AddTxBatch", pb.TxBatch(channel=BETA, txs=[by_b3.encode()])
    )
    wait_until(_no_rpc_error(lambda: final(by_b3)), 30, "the validator's relayed v3 tx final")
    error = refusal(local_call, a, "GetTx", pb.GetTxRequest(channel=BETA, tx_hash=by_c3.hash_hex))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error
    assert _log_has(sec, "A", f"dropped 1 v3 transactions peer {c_id} relayed: it takes none")


def _transfer(timestamp_us: int, sec: SecNet) -> Transaction:
    """A 1-loop ICON transfer of PAYER's (funded at beta's genesis) on beta's network."""
    status = local_call(sec.port("A"), "GetStatus", pb.ChannelRequest(channel=BETA))
    params = make_params(
        sender=PAYER.address,
        to="hx" + "1" * 40,
        step_limit=100_000,
        timestamp_us=timestamp_us,
        nid=int(status.nid, 16),
        value=1,
    )
    return Transaction.from_icon(verify_send_params(sign_params(params, PAYER)))


def test_the_local_port_serves_the_proxy_but_no_peer_to_peer_method(sec: SecNet) -> None:
    a, b_id = sec.port("A"), sec.peer_id("B")
    vote = Vote.create(ALPHA, 0, 0, b"\x01" * 32, sec.signer("B"))
    tx = Transaction.create_v1(
        ALPHA, {"via": "local port"}, time.time_ns() // 1000, sec.signer("B")
    )
    calls = {
        "GetBlockRange": pb.BlockRangeRequest(channel=ALPHA, from_height=0, max_blocks=10),
        "Deliver": pb.ConsensusMessage(channel=ALPHA, sender=b_id, vote=vote.encode()),
        "AddTxBatch": pb.TxBatch(channel=ALPHA, txs=[tx.encode()]),
    }
    for method, request in calls.items():
        error = refusal(local_call, a, method, request)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (method, error)
        assert "only over mutual TLS" in error.details(), (method, error)
    assert local_call(a, "GetStatus", pb.ChannelRequest(channel=ALPHA)).block_height >= 0
    wait_until(
        lambda: _log_has(sec, "A", "refused a peer-to-peer call on the local port"),
        10,
        "A's warning about the local caller",
    )
    found = refusal(local_call, a, "GetTx", pb.GetTxRequest(channel=ALPHA, tx_hash=tx.hash_hex))
    assert found.code() == grpc.StatusCode.NOT_FOUND  # the relayed transaction was not taken


def test_peer_outside_a_channel_answers_not_served(sec: SecNet) -> None:
    c, c_id = sec.port("C"), sec.peer_id("C")
    requests = {
        "GetBlock": pb.GetBlockRequest(channel=ALPHA, height=0),
        "GetStatus": pb.ChannelRequest(channel=ALPHA),
        "CreateTx": pb.CreateTxRequest(channel=ALPHA, data_json='{"data": "x"}'),
    }
    range_request = pb.BlockRangeRequest(channel=ALPHA, from_height=0, max_blocks=1)
    error = refusal(tls_call, c, c_id, sec.identity("A"), "GetBlockRange", range_request)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error  # (not served on the local port)
    for method, request in requests.items():
        for call, args in (
            (local_call, (c, method, request)),  # a local client (REST proxy, tools)
            (tls_call, (c, c_id, sec.identity("A"), method, request)),  # a party of alpha
        ):
            error = refusal(call, *args)
            assert error.code() == grpc.StatusCode.NOT_FOUND, (method, error)
            assert "channel 'alpha' is not served by this peer" in error.details(), error
    status = local_call(c, "GetStatus", pb.ChannelRequest(channel=BETA))
    assert status.channel == BETA and status.validator_count == 2


FLOODS = [
    # (who calls A: "local" on its plain loopback port, else a certificate; method, request,
    # words of A's warning)
    pytest.param(
        "local",
        "GetBlockRange",
        pb.BlockRangeRequest(channel=ALPHA, from_height=0, max_blocks=1),
        ["refused a peer-to-peer call on the local port"],
        id="peer-to-peer-on-the-local-port",
    ),
    pytest.param(
        "C",
        "GetStatus",
        pb.ChannelRequest(channel=ALPHA),
        ["refused peer", "not a party of channel alpha"],
        id="non-party",
    ),
    pytest.param(
        "revoked",
        "GetBlock",
        pb.GetBlockRequest(channel=BETA, height=0),
        ["refused a caller's certificate: revoked"],
        id="revoked-certificate",
    ),
]


def _channel_to_a(sec: SecNet, who: str) -> grpc.Channel:
    a = sec.port("A")
    if who == "local":
        return grpc.insecure_channel(f"127.0.0.1:{a + INNER_DIFF}")
    identity = sec.revoked_c if who == "revoked" else sec.identity(who)
    options = [("grpc.ssl_target_name_override", sec.peer_id("A"))]
    return grpc.secure_channel(f"127.0.0.1:{a}", identity.credentials(), options)


@pytest.mark.parametrize(("who", "method", "request_", "words"), FLOODS)
def test_a_flood_of_refused_calls_leaves_a_few_log_lines(
    sec: SecNet, who: str, method: str, request_: Any, words: list[str]
) -> None:
    """Many calls A refuses for who makes them: each is denied, but A's log gets a burst of
    their warnings, not a line each, and a refusal after them reports how many it left out."""
    logged = len(sec.log("A"))
    with _channel_to_a(sec, who) as channel:
        call = getattr(PeerServiceStub(channel), method)
        began = time.monotonic()
        codes = set()
        for _ in range(FLOOD // FLOOD_AT_ONCE):
            pending = [call.future(request_, timeout=DEADLINE) for _ in range(FLOOD_AT_ONCE)]
            codes |= {future.code() for future in pending}
        seconds = time.monotonic() - began
        assert codes == {grpc.StatusCode.PERMISSION_DENIED}, codes
        warnings = [n for n in sec.log("A")[logged:].splitlines() if "WARNING" in n]
        allowed = FEW_LINES + REFUSAL_LINES_A_SECOND * seconds
        assert len(warnings) <= allowed, (f"{len(warnings)} warnings", warnings[:3])
        if who == "C":  # a non-party is told once in NON_PARTY_TOLD_EVERY_S (once before, maybe)
            assert sum(all(w in n for w in words) for n in warnings) <= 1, warnings[:3]
            told = f"refused peer {sec.peer_id('C')}: not a party of channel alpha"
            assert _log_has(sec, "A", told), "A never said it refused C"
            return

        def reported() -> bool:
            refusal(lambda: call(request_, timeout=DEADLINE))
            new = sec.log("A")[logged:].splitlines()
            return any(
                "WARNING" in n and "more refusals not logged" in n and all(w in n for w in words)
                for n in new
            )

        wait_until(reported, 10, f"a warning with {words} counting the refusals not logged")


# ------------------------------------------------------------------ the RadioStation


def _connect(sec: SecNet, identity: Identity, signer: Signer, target: str) -> pb.ConnectPeerReply:
    request = pb.ConnectPeerRequest(
        peer_id=signer.address,
        target=target,
        public_key=signer.public_key,
        signature=signer.sign(connect_digest(signer.address, target, "")),
    )
    options = [("grpc.ssl_target_name_override", RS_NAME)]
    target_rs = f"127.0.0.1:{sec.net.rs_port}"
    with grpc.secure_channel(target_rs, identity.credentials(), options) as channel:
        return RadioStationStub(channel).ConnectPeer(request, timeout=DEADLINE)


def _registered(sec: SecNet) -> dict[str, str]:
    peers: dict[str, str] = {}
    for channel in (ALPHA, BETA):
        data = get(f"{sec.net.rs_rest}/api/v1/peer/list?channel={channel}")["data"]
        peers.update({p["peer_id"]: p["target"] for p in data["registered_peer_list"]})
    return peers


def test_registration_with_another_peers_certificate_is_refused(sec: SecNet) -> None:
    before = _registered(sec)
    assert set(before) == {sec.peer_id(n) for n in "ABC"}
    c_id = sec.peer_id("C")
    newcomer = Signer.generate()  # a new id, its request properly signed, but C's certificate
    reply = _connect(sec, sec.identity("C"), newcomer, sec.spare_target)
    assert reply.code == -1, reply
    assert f"the TLS certificate belongs to {c_id}, not to {newcomer.address}" in reply.message
    # B's stolen signing key with C's certificate: B cannot be moved to another target
    b = sec.signer("B")
    reply = _connect(sec, sec.identity("C"), b, sec.spare_target)
    assert reply.code == -1 and f"belongs to {c_id}, not to {b.address}" in reply.message, reply
    assert not reply.channels and not reply.radiostation_public_key
    assert _registered(sec) == before, "the RadioStation registered something"
    rs_log = sec.net.radiostation.log_text() if sec.net.radiostation else ""
    assert f"refused registration of '{newcomer.address}'" in rs_log, rs_log[-2000:]


def test_registration_at_another_nodes_address_is_refused_without_an_error_line(
    sec: SecNet,
) -> None:
    """A member registering (with its own certificate and key) the address of another node, a
    peer's or the RadioStation's own, is refused as someone else's address; the probe of that
    address leaves no ERROR line in either's log (a gRPC server writes one for a client naming
    another id than its certificate binds, as a probe pinning the member's id would)."""
    before = _registered(sec)
    rs = sec.net.radiostation
    assert rs is not None
    logs = {"A": (sec.net.peers[sec.port("A")], len(sec.log("A"))), "rs": (rs, len(rs.log_text()))}
    c = sec.signer("C")
    served = {
        f"127.0.0.1:{sec.port('A')}": sec.peer_id("A"),
        f"127.0.0.1:{sec.net.rs_port}": sec.net.rs_id,
    }
    replies = {node: _connect(sec, sec.identity("C"), c, node) for node in served}
    for name, (proc, since) in logs.items():
        assert not error_lines(proc.log_text()[since:]), (name, proc.log_path)
    for node, reply in replies.items():
        assert reply.code == ResponseCode.FAIL, reply
        assert f"target {node} serves the certificate of '{served[node]}'" in reply.message, reply
    assert _registered(sec) == before, "the RadioStation registered something"


# ------------------------------------------------------------------ a vote replayed across channels


def _tip(sec: SecNet, name: str, channel: str) -> tuple[int, str]:
    """(height, hash) of a peer's last final block in `channel`."""
    status = local_call(sec.port(name), "GetStatus", pb.ChannelRequest(channel=channel))
    return int(status.block_height), str(status.block_hash)


def _agreed_tip(sec: SecNet, channel: str, names: str) -> tuple[int, str]:
    """The tip every peer of `names` has in `channel`, once they all have the same."""

    def agreed() -> tuple[int, str] | None:
        tips = {_tip(sec, n, channel) for n in names}
        return tips.pop() if len(tips) == 1 else None

    return wait_until(_no_rpc_error(agreed), 20, f"one tip of {channel} on {names}")


def _replay_alpha_vote_into_beta(sec: SecNet) -> tuple[str, Vote]:
    """B's real vote for A's last alpha block, delivered to A as a beta message by B; A's log
    before the replay."""
    alpha = local_call(sec.port("A"), "GetBlock", pb.GetBlockRequest(channel=ALPHA, height=-1))
    block = Block.decode(alpha.block)
    vote = Vote.create(ALPHA, block.height, block.header.round, block.hash, sec.signer("B"))
    log_before = sec.log("A")
    message = pb.ConsensusMessage(channel=BETA, sender=sec.peer_id("B"), vote=vote.encode())
    try:
        tls_call(sec.port("A"), sec.peer_id("A"), sec.identity("B"), "Deliver", message)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
    return log_before, vote


def test_vote_replayed_from_another_channel_is_not_counted(sec: SecNet) -> None:
    beta_before = _agreed_tip(sec, BETA, "ABC")
    alpha_before = _agreed_tip(sec, ALPHA, "AB")
    _replay_alpha_vote_into_beta(sec)
    assert {n: _tip(sec, n, BETA) for n in "ABC"} == dict.fromkeys("ABC", beta_before)
    assert _tip(sec, "A", ALPHA) == alpha_before
    # beta goes on with its own votes: the next block's certificate holds beta votes only
    tx_hash = _final_tx(sec, BETA, "ABC", "after the replay")
    found = local_call(sec.port("C"), "GetTx", pb.GetTxRequest(channel=BETA, tx_hash=tx_hash))
    reply = local_call(
        sec.port("C"), "GetBlock", pb.GetBlockRequest(channel=BETA, height=found.block_height)
    )
    qc = QuorumCertificate.decode(reply.certificate)
    assert qc.channel == BETA and set(qc.voters) <= {sec.peer_id("A"), sec.peer_id("B")}
    assert qc.height == found.block_height and qc.block_hash == Block.decode(reply.block).hash
    assert _agreed_tip(sec, BETA, "ABC")[0] > beta_before[0]


def test_vote_replayed_from_another_channel_is_logged(sec: SecNet) -> None:
    log_before, vote = _replay_alpha_vote_into_beta(sec)

    def warned() -> bool:
        new = sec.log("A")[len(log_before) :].splitlines()
        return any("WARNING" in line and "vote" in line for line in new)

    wait_until(warned, 5, "a warning about the replayed vote in A's log")
    assert vote.channel == ALPHA
