"""Two channels over mutual TLS: real RadioStation, four peers, their REST proxies and SCOREs.

Channel "alpha": peers A, B and C validate, D audits. Channel "beta": A, B and C validate; D is no
party of it (so D is the one peer in only one channel, and the one auditor). GRPC_SSL_TYPE 2 and
ENABLE_CHANNEL_AUTH are on; each peer runs each of its channels in a worker process. Load goes to
both channels at once from two threads; then each channel's data must be final on its parties and
nowhere else, the auditor must serve alpha's blocks read-only, and every party must agree on every
height of its channels.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p.grpc_util import TLS_PASSWORD_ENV, load_tls
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos.loopchain_pb2_grpc import PeerServiceStub
from tests.e2e._hostile import children
from tools.procs import TlsNetwork, get, http, post_until_taken, wait_until

ALPHA, BETA = "alpha", "beta"
SCORE_PACKAGE = "loopchain/default"
TXS_PER_CHANNEL = 300
TLS_PASSWORD = "multichannel-tls-password"
# every channel of every peer in a worker process, as on a machine with cores to spare: calls and
# stream messages reach them through the peers' TLS ports, the proxies' through the plain ones
CONFIG = {
    "ENABLE_CHANNEL_AUTH": True,
    "LOOPCHAIN_DEFAULT_CHANNEL": ALPHA,
    "CHANNEL_WORKERS": "always",
}


# ------------------------------------------------------------------ the network


@dataclass
class MultiNet:
    """The running network and who is what in which channel."""

    net: TlsNetwork
    ports: dict[str, int]  # "A".."D" -> gRPC port
    validators: dict[str, list[int]]  # channel -> validator ports
    auditors: dict[str, list[int]]  # channel -> auditor ports
    sent: dict[str, list[str]] = field(default_factory=dict)  # channel -> acknowledged tx hashes

    def parties(self, channel: str) -> list[int]:
        return self.validators[channel] + self.auditors[channel]

    def non_parties(self, channel: str) -> list[int]:
        return [p for p in self.ports.values() if p not in self.parties(channel)]

    def peer_id(self, port: int) -> str:
        return self.net.peer_ids[port]

    def url(self, port: int, path: str, channel: str, **args: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {**args, "channel": channel}.items())
        return f"{self.net.rest(port)}{path}?{query}"

    def status(self, port: int, channel: str) -> dict[str, Any]:
        return dict(get(self.url(port, "/api/v1/status/peer", channel)))

    def height(self, port: int, channel: str) -> int:
        return int(self.status(port, channel)["block_height"])

    def block_at(self, port: int, channel: str, height: int) -> dict[str, Any]:
        return dict(get(self.url(port, "/api/v1/blocks", channel, height=str(height))))

    def tx(self, port: int, channel: str, tx_hash: str) -> tuple[int, Any]:
        return http("GET", self.url(port, "/api/v1/transactions", channel, hash=tx_hash))


def _channel_file(ports: dict[str, int], ids: dict[int, str]) -> dict[str, Any]:
    def peer(name: str, role: str = "validator") -> dict[str, str]:
        port = ports[name]
        return {"peer_id": ids[port], "peer_target": f"127.0.0.1:{port}", "role": role}

    return {
        ALPHA: {
            "score_package": SCORE_PACKAGE,
            "peers": [peer("A"), peer("B"), peer("C"), peer("D", "auditor")],
        },
        BETA: {"score_package": SCORE_PACKAGE, "peers": [peer("A"), peer("B"), peer("C")]},
    }


def _ready(mnet: MultiNet, channel: str) -> bool:
    """Every party of `channel` sees all its validators and every other party."""
    parties = mnet.parties(channel)
    for port in parties:
        status = mnet.status(port, channel)
        if status["validator_count"] != len(mnet.validators[channel]):
            return False
        if status["audience_count"] != len(parties) - 1:
            return False
    return True


@pytest.fixture(scope="module")
def mnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNet]:
    """The two-channel TLS network, started once for the module; logs checked at the end. Its
    TLS keys are encrypted with TLS_PASSWORD, in the nodes' environment as operators give it (a
    peer hands it to its workers and REST proxies itself)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TLS_PASSWORD_ENV, TLS_PASSWORD)
        yield from _started(tmp_path_factory)


def _started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNet]:
    net = TlsNetwork(tmp_path_factory.mktemp("multichannel_tls"), CONFIG)
    try:
        ports = {name: net.new_peer_port() for name in "ABCD"}
        ids = net.issue_tls(list(ports.values()))
        (net.workdir / "channel_manage_data.json").write_text(json.dumps(_channel_file(ports, ids)))
        a, b, c, d = (ports[n] for n in "ABCD")
        mnet = MultiNet(
            net,
            ports,
            validators={ALPHA: [a, b, c], BETA: [a, b, c]},
            auditors={ALPHA: [d], BETA: []},
        )
        net.start_radiostation()
        for port in ports.values():
            net.start_peer(port, wait=False)
        for channel in (ALPHA, BETA):
            wait_until(lambda ch=channel: _ready(mnet, ch), 60, f"the parties of {channel}")
        yield mnet
    finally:
        net.stop_and_check()


def test_the_tls_keys_are_encrypted_and_no_child_of_a_peer_holds_the_password(
    mnet: MultiNet,
) -> None:
    """The channels run in workers over TLS keys only the password opens, and neither a worker
    nor a REST proxy has it in its environment, which other processes of the user can read."""
    assert b"ENCRYPTED" in (mnet.net.peer_dir(mnet.ports["A"]) / "tls" / "key.pem").read_bytes()
    for port in mnet.ports.values():
        peer = mnet.net.peers[port].popen
        assert peer is not None
        workers = children(peer.pid, "loopchain.peer.worker")
        proxies = children(peer.pid, "rest_proxy.py")
        assert len(workers) == (1 if port == mnet.ports["D"] else 2) and len(proxies) == 1
        for pid in (*workers, *proxies):
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert TLS_PASSWORD.encode() not in environ, pid


# ------------------------------------------------------------------ load on both channels at once


class ChannelLoad(threading.Thread):
    """Posts `count` transactions to one channel, round-robin over its validators."""

    def __init__(self, mnet: MultiNet, channel: str, count: int, start: threading.Barrier) -> None:
        super().__init__(name=f"load-{channel}", daemon=True)
        self.mnet, self.channel, self.count, self.barrier = mnet, channel, count, start
        self.acked: list[str] = []
        self.errors: list[str] = []  # answers other than an acknowledgement or a 503
        self.busy = 0  # 503 answers, each asked again after a pause
        self.began = self.ended = 0.0

    def run(self) -> None:
        ports = self.mnet.validators[self.channel]
        self.barrier.wait(30)
        self.began = time.monotonic()
        for index in range(self.count):
            port = ports[index % len(ports)]
            body = {"channel": self.channel, "data": f"{self.channel} load {index}"}
            url = f"{self.mnet.net.rest(port)}/api/v1/transactions"
            try:
                status, reply, busy = post_until_taken(url, json.dumps(body).encode())
            except OSError as exc:
                self.errors.append(f"peer {port}: {exc}")
                continue
            self.busy += busy
            if status == 200 and reply["response_code"] == 0:
                self.acked.append(str(reply["tx_hash"]))
            else:
                self.errors.append(f"peer {port}: {status} {reply}")
        self.ended = time.monotonic()


def _final_everywhere(
    mnet: MultiNet, channel: str, ports: Sequence[int], hashes: list[str]
) -> None:
    """Wait until every transaction of `hashes` is in a final block of `channel` on `ports`."""
    pending = [(port, h) for port in ports for h in hashes]

    def all_final() -> bool:
        while pending:
            status, body = mnet.tx(pending[0][0], channel, pending[0][1])
            if status != 200 or body["block_height"] < 0:
                return False
            pending.pop(0)
        return True

    try:
        wait_until(all_final, 60, f"{len(hashes)} transactions of {channel} final on {ports}")
    except AssertionError as exc:
        port, tx_hash = pending[0]
        raise AssertionError(
            f"{exc}; {len(pending)} (peer, tx) pairs pending, first {tx_hash} on {port}: "
            f"{mnet.tx(port, channel, tx_hash)}"
        ) from None


# a load with no transaction answered for this long is stuck: longer than one transaction may take
# (post_until_taken asks again after a 503 for up to 60 s), and no bound on the whole load, which
# takes ~5 s here and minutes on a machine several times slower (seen: 120 s was not enough)
LOAD_STALL_S = 90.0


def _join_while_answered(load: ChannelLoad, stall: float = LOAD_STALL_S) -> None:
    """Wait for `load` to end as long as it keeps getting answers (`stall`: how long without one
    means it is stuck)."""
    answered, since = -1, time.monotonic()
    while load.is_alive() and time.monotonic() - since < stall:
        load.join(1.0)
        count = len(load.acked) + len(load.errors)
        if count != answered:
            answered, since = count, time.monotonic()
    assert not load.is_alive(), (
        f"the load of {load.channel} got no answer for {stall:g} s "
        f"({answered} of {load.count} answered)"
    )


@pytest.fixture(scope="module")
def loaded(mnet: MultiNet) -> MultiNet:
    """Both channels loaded at once from two threads, every transaction final on its parties."""
    barrier = threading.Barrier(2)
    loads = [ChannelLoad(mnet, channel, TXS_PER_CHANNEL, barrier) for channel in (ALPHA, BETA)]
    for load in loads:
        load.start()
    for load in loads:
        _join_while_answered(load)
        assert not load.errors, (
            f"{load.channel} refused transactions: {load.errors[:5]} "
            f"(and {load.busy} 503s asked again)"
        )
        assert len(load.acked) == TXS_PER_CHANNEL, load.channel
    first, second = loads
    assert first.began < second.ended and second.began < first.ended, "the loads did not overlap"
    for load in loads:
        _final_everywhere(mnet, load.channel, mnet.parties(load.channel), load.acked)
        mnet.sent[load.channel] = load.acked
    return mnet


# ------------------------------------------------------------------ the checks


def test_a_load_that_gets_no_answer_is_reported_stuck() -> None:
    """The fixture's wait has an end: a load blocked before its first answer fails it."""
    release = threading.Event()
    load = ChannelLoad(MultiNet(None, {}, {}, {}), ALPHA, 3, threading.Barrier(1))  # type: ignore[arg-type]
    load.run = lambda: release.wait(60)  # type: ignore[method-assign]
    load.start()
    try:
        with pytest.raises(AssertionError, match=r"got no answer for 0\.2 s \(0 of 3 answered\)"):
            _join_while_answered(load, stall=0.2)
    finally:
        release.set()
        load.join(60)


@pytest.mark.timeout(900)  # its fixture's load takes minutes on a machine several times slower
def test_each_channel_serves_only_its_own_transactions(loaded: MultiNet) -> None:
    alpha, beta = loaded.sent[ALPHA], loaded.sent[BETA]
    assert not set(alpha) & set(beta)
    a = loaded.ports["A"]
    for tx_hash in alpha[:10]:
        status, body = loaded.tx(a, ALPHA, tx_hash)
        assert status == 200 and body["meta"]["channel_name"] == ALPHA, body
        assert body["data"]["data"].startswith("alpha load"), body
        status, body = loaded.tx(a, BETA, tx_hash)
        assert status == 404 and body["response_code"] == -4, (tx_hash, body)
    for tx_hash in beta[:10]:
        status, body = loaded.tx(a, BETA, tx_hash)
        assert status == 200 and body["meta"]["channel_name"] == BETA, body
        status, body = loaded.tx(a, ALPHA, tx_hash)
        assert status == 404 and body["response_code"] == -4, (tx_hash, body)


def test_non_party_gets_nothing_of_beta(loaded: MultiNet) -> None:
    d = loaded.ports["D"]
    assert loaded.non_parties(BETA) == [d]
    for tx_hash in loaded.sent[BETA][:10]:
        status, body = loaded.tx(d, BETA, tx_hash)
        assert status == 404 and body["response_code"] == -4, body
        assert "not served" in body["message"], body
        # without the channel argument D looks in its default channel, where beta's tx is not
        status, body = http("GET", f"{loaded.net.rest(d)}/api/v1/transactions?hash={tx_hash}")
        assert status == 404 and body["response_code"] == -4, body
    calls = [
        ("GET", loaded.url(d, "/api/v1/blocks", BETA), None),
        ("GET", loaded.url(d, "/api/v1/blocks", BETA, height="0"), None),
        ("GET", loaded.url(d, "/api/v1/status/peer", BETA), None),
        ("GET", loaded.url(d, "/api/v1/status/score", BETA), None),
        (
            "GET",
            loaded.url(d, "/api/v1/transactions/result", BETA, hash=loaded.sent[BETA][0]),
            None,
        ),
        ("POST", f"{loaded.net.rest(d)}/api/v1/query", {"channel": BETA, "method": "info"}),
        ("POST", f"{loaded.net.rest(d)}/api/v1/transactions", {"channel": BETA, "data": "x"}),
    ]
    for method, url, body in calls:
        status, reply = http(method, url, json.dumps(body).encode() if body else None)
        assert status == 404 and reply["response_code"] == -4, (url, reply)
        assert "not served" in reply["message"], (url, reply)
    assert not (loaded.net.peer_dir(d) / BETA).exists(), "D stored something of beta"
    for port in loaded.parties(BETA):
        assert (loaded.net.peer_dir(port) / BETA).is_dir()


def test_auditor_serves_alpha_blocks_identical_to_the_validators(loaded: MultiNet) -> None:
    d, a = loaded.ports["D"], loaded.ports["A"]
    top = _wait_same_height(loaded, ALPHA, loaded.parties(ALPHA))
    assert top >= 1
    for height in range(top + 1):
        assert loaded.block_at(d, ALPHA, height) == loaded.block_at(a, ALPHA, height), height
    tx_hash = loaded.sent[ALPHA][0]
    status, body = loaded.tx(d, ALPHA, tx_hash)
    assert status == 200 and body["block_height"] >= 0 and body["meta"]["channel_name"] == ALPHA


def test_auditor_refuses_transactions_of_alpha(loaded: MultiNet) -> None:
    d = loaded.ports["D"]
    url = f"{loaded.net.rest(d)}/api/v1/transactions"
    before = loaded.status(d, ALPHA)["tx_pool_size"]
    for body in ({"channel": ALPHA, "data": "to the auditor"}, {"data": "default channel"}):
        status, reply = http("POST", url, json.dumps(body).encode())
        assert status == 403 and reply["response_code"] < 0, reply
        assert "audits channel alpha" in reply["message"], reply
        assert "takes no transactions" in reply["message"], reply
    assert loaded.status(d, ALPHA)["tx_pool_size"] == before


def test_auditor_never_leads(loaded: MultiNet) -> None:
    d = loaded.ports["D"]
    auditor = loaded.peer_id(d)
    validators = {loaded.peer_id(p) for p in loaded.validators[ALPHA]}
    top = _wait_same_height(loaded, ALPHA, loaded.parties(ALPHA))
    leaders = {loaded.block_at(d, ALPHA, h)["block_data_json"]["peer_id"] for h in range(top + 1)}
    assert auditor not in leaders and leaders <= validators, leaders
    for port in loaded.parties(ALPHA):
        status = loaded.status(port, ALPHA)
        assert status["leader_id"] in validators, status
    status = loaded.status(d, ALPHA)
    assert status["peer_type"] == "0" and status["made_block_count"] == 0, status
    assert status["validator_count"] == 3, status


def test_status_shows_the_auditor_role(loaded: MultiNet) -> None:
    assert loaded.status(loaded.ports["D"], ALPHA).get("role") == "auditor"
    assert loaded.status(loaded.ports["A"], ALPHA).get("role") == "validator"


def _wait_same_height(mnet: MultiNet, channel: str, ports: Sequence[int]) -> int:
    def same() -> int | None:
        heights = {mnet.height(port, channel) for port in ports}
        return heights.pop() + 1 if len(heights) == 1 else None

    return wait_until(same, 30, f"the parties of {channel} at one height") - 1


def test_every_party_agrees_per_channel_and_the_chains_are_distinct(loaded: MultiNet) -> None:
    tops = {}
    for channel in (ALPHA, BETA):
        parties = loaded.parties(channel)
        tops[channel] = top = _wait_same_height(loaded, channel, parties)
        for height in range(top + 1):
            hashes = {p: loaded.block_at(p, channel, height)["block_hash"] for p in parties}
            assert len(set(hashes.values())) == 1, f"{channel} differs at {height}: {hashes}"
        for port in parties:
            status = loaded.status(port, channel)
            assert status["channel"] == channel and status["peer_id"] == loaded.peer_id(port)
            assert status["total_tx"] >= TXS_PER_CHANNEL, status
    a = loaded.ports["A"]
    for height in range(min(tops.values()) + 1):
        alpha, beta = (loaded.block_at(a, ch, height)["block_hash"] for ch in (ALPHA, BETA))
        assert alpha != beta, f"alpha and beta share block {alpha} at height {height}"
    statuses = {ch: loaded.status(a, ch) for ch in (ALPHA, BETA)}
    assert statuses[ALPHA]["block_hash"] != statuses[BETA]["block_hash"], statuses


def test_radiostation_lists_each_channel_with_its_parties(loaded: MultiNet) -> None:
    for channel in (ALPHA, BETA):
        data = get(f"{loaded.net.rs_rest}/api/v1/peer/list?channel={channel}")["data"]
        ids = {p["peer_id"] for p in data["registered_peer_list"]}
        assert ids == {loaded.peer_id(p) for p in loaded.parties(channel)}, (channel, ids)


def test_public_grpc_ports_refuse_plaintext_and_serve_pinned_tls(mnet: MultiNet) -> None:
    a = mnet.ports["A"]
    tls = load_tls(
        load_config(environ={}, overrides={"GRPC_SSL_TYPE": 2}),
        mnet.net.peer_dir(a) / "tls",
        TLS_PASSWORD,
    )
    assert tls is not None
    credentials = grpc.ssl_channel_credentials(tls.ca_pem, tls.key_pem, tls.cert_pem)
    for port in mnet.ports.values():
        request = pb.ChannelRequest(channel=ALPHA)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                PeerServiceStub(channel).GetStatus(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        options = [("grpc.ssl_target_name_override", mnet.peer_id(port))]
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
            reply = PeerServiceStub(channel).GetStatus(request, timeout=5)
            assert reply.peer_id == mnet.peer_id(port) and reply.channel == ALPHA
