"""The networks the gRPC fuzz runs against, each a RadioStation and one peer as real processes:

* `plain`: the peer runs its channel in its own process; no TLS.
* `workers`: the peer runs its channel in a worker process (CHANNEL_WORKERS "always") and hands
  it every call naming the channel.
* `tls`: mutual TLS (GRPC_SSL_TYPE 2, ENABLE_CHANNEL_AUTH). The fuzz is an insider: it calls with
  the certificate the network's CA issued to a member of the channel (a second peer, an auditor),
  and signs with that member's key. The peer's plain loopback port (kept for its REST
  proxy) is fuzzed too: there the peer-to-peer methods must be refused, whatever they carry.
* `tls-workers`: the same with the channel in a worker process, which takes the caller the peer
  found in the certificate from the forwarded call's metadata.

Each says which ports the fuzz calls (Endpoint) and which processes must outlive the run (every
node, and every process below one: REST proxies, channel workers, SCORE processes).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import descriptor as d

from loopchain.protos import loopchain_pb2 as pb
from loopchain.types.crypto import Signer, load_or_create_key
from tests.e2e._grpc_fuzz import PEER_TO_PEER, ClientTls, Known, channel_to, methods
from tools.procs import (
    INNER_DIFF,
    LocalNetwork,
    TlsNetwork,
    cmdline_of,
    descendant_pids,
    running_network,
    wait_until,
)

CHANNEL = "loopchain_default"
SETUPS = ("plain", "workers", "tls", "tls-workers")
RS_NAME = "loopchain-radiostation"  # the name a RadioStation's certificate carries
WORKER_MODULE = "loopchain.peer.worker"


@dataclass
class Endpoint:
    """A port the fuzz calls: the service it serves, a channel to it, the methods it must
    refuse whatever they carry, and how its figures are named ("" for a node's own port)."""

    service: str
    channel: grpc.Channel
    refused: frozenset[str] = frozenset()
    label: str = ""

    def methods(self) -> list[d.MethodDescriptor]:
        return methods(self.service)

    def name_of(self, method: d.MethodDescriptor) -> str:
        return f"{self.label}{method.name}"


@dataclass
class FuzzNet:
    """A running network under fuzz: its ports (the first PeerService one is the peer's, the
    RadioStation one its), what the fuzz knows of it, and the processes that must outlive it."""

    setup: str
    net: LocalNetwork
    port: int  # the peer under fuzz
    known: Known
    endpoints: list[Endpoint]
    processes: dict[int, str] = field(default_factory=dict)  # pid -> command line
    log_offsets: dict[str, int] = field(default_factory=dict)  # node -> bytes of its log seen

    @property
    def peer(self) -> grpc.Channel:
        return next(e.channel for e in self.endpoints if e.service == "PeerService")

    @property
    def rs(self) -> grpc.Channel:
        return next(e.channel for e in self.endpoints if e.service == "RadioStation")

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.channel.close()

    def record_processes(self) -> None:
        """Note every process of the network now: the nodes and every process below them."""
        pids = [proc.pid for proc in self.net.procs if proc.alive]
        pids += [below for pid in list(pids) for below in descendant_pids(pid)]
        self.processes = {pid: cmdline_of(pid) for pid in pids}

    def log_growth(self) -> dict[str, int]:
        """The lines each node's log (its children's output among them) grew by since the last
        look."""
        grown = {}
        for proc in self.net.procs:
            start = self.log_offsets.get(proc.name, 0)
            with open(proc.log_path, "rb") as log:
                log.seek(start)
                new = log.read()
            self.log_offsets[proc.name] = start + len(new)
            grown[proc.name] = new.count(b"\n")
        return grown

    def gone(self) -> list[str]:
        """The recorded processes that ended (or were replaced) since."""
        return [line for pid, line in self.processes.items() if cmdline_of(pid) != line]


def _known(net: LocalNetwork, port: int, member_signer: Signer | None = None) -> Known:
    """What the fuzz draws among hostile values: the network's channel, its peer's id, target
    and key, a final transaction and the hashes of its first blocks."""
    signer = load_or_create_key(
        Path(str(net.config_values["DEFAULT_STORAGE_PATH"])) / f"peer_{port}" / "peer_key"
    )
    tx_hash = net.submit(port, {"data": "before the fuzz"})
    wait_until(lambda: net.final_on(port, tx_hash), 60, "a transaction final before the fuzz")
    blocks = [net.block_hash_at(port, height).removeprefix("0x") for height in (0, 1)]
    return Known(
        channels=[CHANNEL],
        peer_id=signer.address,
        peer_target=f"127.0.0.1:{port}",
        peer_signer=signer,
        rs_target=f"127.0.0.1:{net.rs_port}",
        tx_hashes=[tx_hash.removeprefix("0x")],
        block_hashes=blocks,
        member_signer=member_signer,
    )


@contextlib.contextmanager
def _plain_net(setup: str, workdir: Path) -> Iterator[FuzzNet]:
    config = {"CHANNEL_WORKERS": "always"} if setup == "workers" else {}
    with running_network(workdir, 1, config) as net:
        (port,) = net.peers
        known = _known(net, port)
        endpoints = [
            Endpoint("PeerService", channel_to(known.peer_target)),
            Endpoint("RadioStation", channel_to(known.rs_target)),
        ]
        yield FuzzNet(setup, net, port, known, endpoints)


def _validates_with_auditor(net: LocalNetwork, port: int) -> bool:
    status = net.status(port)
    return bool(status["validator_count"] == 1 and status["audience_count"] == 1)


@contextlib.contextmanager
def _tls_net(setup: str, workdir: Path) -> Iterator[FuzzNet]:
    workers = "always" if setup == "tls-workers" else "never"
    net = TlsNetwork(workdir, {"ENABLE_CHANNEL_AUTH": True, "CHANNEL_WORKERS": workers})
    try:
        port, member_port = net.new_peer_port(), net.new_peer_port()
        ids = net.issue_tls([port, member_port])
        member = {"peer_id": ids[member_port], "peer_target": f"127.0.0.1:{member_port}"}
        peers = [
            {"peer_id": ids[port], "peer_target": f"127.0.0.1:{port}"},
            {**member, "role": "auditor"},  # whose certificate and key the fuzz holds
        ]
        (workdir / "channel_manage_data.json").write_text(json.dumps({CHANNEL: {"peers": peers}}))
        net.start_radiostation()
        net.start_peer(port)
        net.start_peer(member_port)
        wait_until(lambda: _validates_with_auditor(net, port), 60, "the TLS peer and its auditor")
        member_dir = net.peer_dir(member_port)
        pems = (member_dir / "tls" / name for name in ("ca.pem", "key.pem", "cert.pem"))
        tls = ClientTls(*(path.read_bytes() for path in pems))
        known = _known(net, port, member_signer=load_or_create_key(member_dir / "peer_key"))
        endpoints = [
            Endpoint("PeerService", channel_to(known.peer_target, tls, known.peer_id)),
            Endpoint("RadioStation", channel_to(known.rs_target, tls, RS_NAME)),
            Endpoint(
                "PeerService",
                channel_to(f"127.0.0.1:{port + INNER_DIFF}"),
                refused=PEER_TO_PEER,
                label="inner port: ",
            ),
        ]
        yield FuzzNet(setup, net, port, known, endpoints)
    finally:
        net.stop_and_check()


@contextlib.contextmanager
def fuzz_net(setup: str, workdir: Path) -> Iterator[FuzzNet]:
    """The network of `setup` (one of SETUPS), started, with its processes recorded; stopped
    at the end (every process must exit 0 with no problem in its log)."""
    made = _tls_net(setup, workdir) if setup.startswith("tls") else _plain_net(setup, workdir)
    with made as fnet:
        try:
            fnet.record_processes()
            workers = [line for line in fnet.processes.values() if WORKER_MODULE in line]
            assert bool(workers) == setup.endswith("workers"), (setup, fnet.processes)
            yield fnet
        finally:
            fnet.close()


def serving_problem(fnet: FuzzNet, timeout: float) -> str:
    """Why the peer or the RadioStation does not serve now ("" when both do): the peer answers
    GetStatus of its channel, the RadioStation lists the peer (each within `timeout` seconds)."""
    try:
        status = pb.PeerStatusReply.FromString(
            fnet.peer.unary_unary("/loopchain.PeerService/GetStatus")(
                pb.ChannelRequest(channel=CHANNEL).SerializeToString(), timeout=timeout
            )
        )
        listed = pb.PeerListReply.FromString(
            fnet.rs.unary_unary("/loopchain.RadioStation/GetPeerList")(
                pb.ChannelRequest(channel=CHANNEL).SerializeToString(), timeout=timeout
            )
        )
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    if status.peer_id != fnet.known.peer_id:
        return f"the peer answers GetStatus as {status.peer_id!r}"
    if fnet.known.peer_id not in {entry.peer_id for entry in listed.peers}:
        return "the RadioStation no longer lists the peer"
    return ""
