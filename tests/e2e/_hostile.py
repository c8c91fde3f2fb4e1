"""The network the hostile suite attacks and the tools it attacks with: raw HTTP requests, gRPC
calls to peers and to the RadioStation, log marks, and a snapshot of who validates."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

import grpc

from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.crypto import Signer, load_or_create_key
from loopchain.types.peer import identify_digest
from loopchain.types.validators import ValidatorSet
from tools.procs import (
    INNER_DIFF,
    LocalNetwork,
    Proc,
    TlsNetwork,
    free_port_pair,
    get,
    http,
    wait_until,
)

CHANNEL = "loopchain_default"
PEERS = 4
DEADLINE = 10.0  # seconds, every gRPC call and HTTP request of the suite
CONFIG = {"ENABLE_CHANNEL_AUTH": True}


# ------------------------------------------------------------------ the network


@dataclass
class Target:
    """The attacked network: a RadioStation and four listed peers running sample/token, whose
    owner (score_settings) is the first peer by port."""

    net: LocalNetwork
    ports: list[int]
    ids: dict[int, str]
    extra: list[Proc] = field(default_factory=list)  # processes outside the network (see below)
    baseline: dict[str, Any] = field(default_factory=dict)  # validator_view before the probes

    @property
    def owner_port(self) -> int:
        return self.ports[0]

    @property
    def owner(self) -> str:
        return self.ids[self.owner_port]

    @property
    def rs_target(self) -> str:
        return f"127.0.0.1:{self.net.rs_port}"

    @property
    def storage(self) -> Path:
        return Path(self.net.config_values["DEFAULT_STORAGE_PATH"])

    @property
    def rs_dir(self) -> Path:
        return self.storage / f"radiostation_{self.net.rs_port}"

    def token(self) -> str:
        """The operator's bearer token (written 0600 by the RadioStation at its first start)."""
        return (self.rs_dir / "admin_token").read_text().strip()

    def signer(self, port: int) -> Signer:
        """The key of the peer on `port` (a thief's copy: the suite forges with it)."""
        return load_or_create_key(self.storage / f"peer_{port}" / "peer_key")

    def rest(self, port: int) -> str:
        return self.net.rest(port)

    def status(self, port: int) -> dict[str, Any]:
        return dict(get(f"{self.rest(port)}/api/v1/status/peer?channel={CHANNEL}"))

    def log(self, port: int | None = None) -> str:
        """The log of the peer on `port` (with its REST proxy), or of the RadioStation."""
        if port is None:
            assert self.net.radiostation is not None
            return self.net.radiostation.log_text()
        return self.net.peers[port].log_text()

    def all_ready(self) -> bool:
        for port in self.ports:
            status = self.status(port)
            if status["validator_count"] != PEERS or status["audience_count"] != PEERS - 1:
                return False
        return True


def channel_file(ports: list[int], ids: dict[int, str]) -> dict[str, Any]:
    """Listed mode: the channel lists each peer by its id; the first peer owns the token."""
    return {
        CHANNEL: {
            "score_package": "sample/token",
            "score_settings": {"token": {"owner": ids[ports[0]]}},
            "peers": [{"peer_id": ids[p], "peer_target": f"127.0.0.1:{p}"} for p in ports],
        }
    }


def start_target(workdir: Path) -> Target:
    """Start the RadioStation and the four peers (in parallel) and wait until each sees four
    validators."""
    net = LocalNetwork(workdir, CONFIG)
    ports = sorted(net.new_peer_port() for _ in range(PEERS))
    ids = {port: net.make_peer_key(port) for port in ports}
    (workdir / "channel_manage_data.json").write_text(json.dumps(channel_file(ports, ids)))
    target = Target(net, ports, ids)
    net.start_radiostation()
    for port in ports:
        net.start_peer(port, wait=False)
    wait_until(target.all_ready, 60, "four validators seen by every peer")
    return target


def start_lone_proxy(target: Target, port: int) -> tuple[Proc, str]:
    """A second, standalone rest_proxy.py for the peer on `port`, on a port of its own and with
    its own log: requests that break HTTP framing go to it, so what they leave in a log is
    checked by their own probes (the nodes' logs stay for the final check)."""
    rest_port = free_port_pair(target.net.taken)
    conf = dict(target.net.config_values, PORT_DIFF_REST_SERVICE_CONTAINER=rest_port - port)
    path = target.net.workdir / "lone_proxy.json"
    path.write_text(json.dumps(conf))
    args = ["rest_proxy.py", "-p", str(port), "-o", str(path)]
    proc = Proc(f"lone_proxy_{rest_port}", args, target.net.workdir).start()
    target.extra.append(proc)
    base = f"http://127.0.0.1:{rest_port}"
    wait_until(lambda: get(f"{base}/api/v1/status/peer"), 30, "the standalone REST proxy")
    return proc, base


# ------------------------------------------------------------------ HTTP as it is on the wire


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers and the body (parsed when it is JSON)."""

    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        try:
            return json.loads(self.raw)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.status} {self.headers.get('Content-Type')} {self.raw[:300]!r}"


def send(
    base: str,
    method: str,
    path: bytes | str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Reply:
    """Send one request with exactly these bytes (Host, Content-Length and Connection added) on a
    fresh connection and read the whole answer; the server may answer before it reads the body."""
    host, port = base.removeprefix("http://").split(":")
    target = path.encode() if isinstance(path, str) else path
    lines = [
        b"%s %s HTTP/1.1" % (method.encode(), target),
        b"Host: %s:%s" % (host.encode(), port.encode()),
    ]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
    lines += [b"Content-Length: %d" % len(body), b"Connection: close"]
    wire = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        try:
            sock.sendall(wire)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) before it read everything
        response = HTTPResponse(sock, method=method)
        response.begin()
        return Reply(response.status, dict(response.getheaders()), response.read())


def post(
    base: str, path: str, body: bytes, content_type: str = "application/json", **headers: str
) -> Reply:
    return send(base, "POST", path, body, {"Content-Type": content_type, **headers})


def assert_refused(reply: Reply, status: int, code: int, *words: str) -> None:
    """The answer is `status` with the JSON error body `{"response_code": code, "message": ...}`
    whose message holds every one of `words`."""
    body = reply.body
    assert reply.status == status, str(reply)
    assert reply.headers.get("Content-Type", "").startswith("application/json"), str(reply)
    assert isinstance(body, dict) and set(body) >= {"response_code", "message"}, str(reply)
    assert body["response_code"] == code and isinstance(body["message"], str), str(reply)
    for word in words:
        assert word in body["message"], (word, str(reply))


# ------------------------------------------------------------------ gRPC


def peer_call(port: int, method: str, request: Any) -> Any:
    """PeerService.`method` on the peer's gRPC port, as any stranger may call it."""
    options = [
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options) as channel:
        return getattr(pb_grpc.PeerServiceStub(channel), method)(request, timeout=DEADLINE)


def rs_call(target: Target, method: str, request: Any) -> Any:
    """RadioStation.`method` on the RadioStation's gRPC port."""
    with grpc.insecure_channel(target.rs_target) as channel:
        return getattr(pb_grpc.RadioStationStub(channel), method)(request, timeout=DEADLINE)


def rpc_refusal(call: Any, *args: Any) -> grpc.RpcError:
    """The error a gRPC call ends with (AssertionError when it succeeds)."""
    try:
        reply = call(*args)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"the call succeeded: {reply}")


class _Impostor(pb_grpc.PeerServiceServicer):
    """Answers Identify with its own key: a stranger that really is at its target."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    def Identify(self, request: pb.IdentifyRequest, context: Any) -> pb.IdentifyReply:
        signature = self.signer.sign(identify_digest(request.challenge))
        return pb.IdentifyReply(peer_id=self.signer.address, signature=signature)


@contextmanager
def impostor(signer: Signer, taken: set[int]) -> Iterator[str]:
    """A gRPC server in this process that proves `signer`'s key at the target it yields."""
    port = free_port_pair(taken)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_PeerServiceServicer_to_server(_Impostor(signer), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


# ------------------------------------------------------------------ what must not change


def validator_view(target: Target) -> dict[str, Any]:
    """Who validates, as the RadioStation and every peer say: registered peers and their targets,
    the signed validator set (version and ids), and each peer's count of validators."""
    listed = get(f"{target.net.rs_rest}/api/v1/peer/list?channel={CHANNEL}")["data"]
    reply = rs_call(target, "GetPeerList", pb.ChannelRequest(channel=CHANNEL))
    validators = ValidatorSet.decode(reply.validator_set)
    return {
        "registered": sorted((p["peer_id"], p["target"]) for p in listed["registered_peer_list"]),
        "count": listed["registered_peer_count"],
        "version": validators.version,
        "validators": [v.peer_id for v in validators.validators],
        "seen_by_peers": {p: target.status(p)["validator_count"] for p in target.ports},
    }


# ------------------------------------------------------------------ logs


@dataclass
class LogMark:
    """The length of some logs at one moment: what was written to them afterwards."""

    target: Target
    sizes: dict[int | None, int]

    @classmethod
    def now(cls, target: Target) -> LogMark:
        names: list[int | None] = [None, *target.ports]
        return cls(target, {name: len(target.log(name)) for name in names})

    def new_lines(self, port: int | None) -> list[str]:
        return self.target.log(port)[self.sizes[port] :].splitlines()

    def wait_warning(self, port: int | None, *words: str, deadline: float = 10.0) -> str:
        """The first WARNING written to the log of `port` (None: the RadioStation) since the
        mark that holds every one of `words`."""

        def found() -> str | None:
            for line in self.new_lines(port):
                if "WARNING" in line and all(word in line for word in words):
                    return line
            return None

        who = "the RadioStation" if port is None else f"peer {port}"
        return wait_until(found, deadline, f"a warning with {words} in the log of {who}")


def rest_status(base: str, path: str) -> tuple[int, Any]:
    return http("GET", f"{base}{path}", timeout=DEADLINE)


# ------------------------------------------------------------------ transactions over REST


def submit(target: Target, port: int, data: dict[str, Any]) -> str:
    """POST a transaction to the peer's REST proxy as an anonymous client; its hash."""
    reply = post(target.rest(port), "/api/v1/transactions", json.dumps(data).encode())
    assert reply.status == 200 and reply.body["response_code"] == 0, str(reply)
    return str(reply.body["tx_hash"])


def tx_height(target: Target, port: int, tx_hash: str) -> int | None:
    """Height of the block holding the transaction on `port` (-1 while pooled), None if unknown."""
    code, body = http("GET", f"{target.rest(port)}/api/v1/transactions?hash={tx_hash}")
    return int(body["block_height"]) if code == 200 else None


def wait_final(target: Target, hashes: list[str], deadline: float = 30.0) -> None:
    """Every transaction of `hashes` is in a final block on every peer."""
    pending = [(port, tx_hash) for port in target.ports for tx_hash in hashes]

    def all_final() -> bool:
        while pending and (tx_height(target, *pending[0]) or -1) >= 0:
            pending.pop(0)
        return not pending

    wait_until(all_final, deadline, f"{len(hashes)} transactions final on every peer")


def wait_settled(target: Target, deadline: float = 30.0) -> None:
    """Every pool empty and every peer at one height: no block is on its way."""

    def settled() -> bool:
        statuses = [target.status(port) for port in target.ports]
        return len({s["block_height"] for s in statuses}) == 1 and all(
            s["tx_pool_size"] == 0 for s in statuses
        )

    wait_until(settled, deadline, "every pool empty and every peer at one height")


def tx_result(target: Target, port: int, tx_hash: str) -> dict[str, Any]:
    """The SCORE's result of a transaction on `port` ({"code": 2} while not executed)."""
    url = f"{target.rest(port)}/api/v1/transactions/result?hash={tx_hash}"
    return dict(get(url)["response"])


def wait_result(target: Target, tx_hash: str, deadline: float = 30.0) -> dict[str, Any]:
    """The result of an executed transaction, the same on every peer."""

    def executed() -> list[dict[str, Any]] | None:
        results = [tx_result(target, port, tx_hash) for port in target.ports]
        return results if all(r["code"] != 2 for r in results) else None

    results = wait_until(executed, deadline, f"the result of {tx_hash} on every peer")
    assert all(r == results[0] for r in results), results
    return results[0]


def answer(target: Target, port: int, method: str, **params: Any) -> Any:
    """The token SCORE's answer to a query on `port`."""
    body = json.dumps({"method": method, "params": params}).encode()
    reply = post(target.rest(port), "/api/v1/query", body)
    assert reply.status == 200 and reply.body["response_code"] == 0, str(reply)
    return reply.body["response"]


# ------------------------------------------------------------------ processes


def children(parent: int, module: str) -> list[int]:
    """Live processes whose parent is `parent` and whose command line runs `module` (a module
    by its name, a script by its path's end)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while being read
        if ppid == parent and any(
            arg == module.encode() or arg.endswith(b"/" + module.encode()) for arg in args
        ):
            found.append(int(entry.name))
    return sorted(found)


# ------------------------------------------------------------------ a small mutual-TLS network


@dataclass
class TlsTarget:
    """A RadioStation and one peer speaking mutual TLS (GRPC_SSL_TYPE 2), the peer listed by id
    in the one channel, without a REST proxy."""

    net: TlsNetwork
    port: int
    peer_id: str

    @property
    def inner(self) -> str:
        """The peer's plain loopback port (kept for its REST proxy and tools)."""
        return f"127.0.0.1:{self.port + INNER_DIFF}"

    def inner_call(self, method: str, request: Any) -> Any:
        with grpc.insecure_channel(self.inner) as channel:
            return getattr(pb_grpc.PeerServiceStub(channel), method)(request, timeout=DEADLINE)

    def log(self) -> str:
        return self.net.peers[self.port].log_text()

    def ready(self) -> bool:
        try:
            status = self.inner_call("GetStatus", pb.ChannelRequest(channel=CHANNEL))
        except grpc.RpcError:
            return False
        return status.validator_count == 1


def start_tls_target(workdir: Path) -> TlsTarget:
    """Issue the TLS material, start the RadioStation and the peer, wait until it validates."""
    net = TlsNetwork(workdir, {**CONFIG, "RUN_REST_PROXY": False})
    port = net.new_peer_port()
    peer_id = net.issue_tls([port])[port]
    entry = {"peer_id": peer_id, "peer_target": f"127.0.0.1:{port}"}
    (workdir / "channel_manage_data.json").write_text(json.dumps({CHANNEL: {"peers": [entry]}}))
    tls = TlsTarget(net, port, peer_id)
    net.start_radiostation()
    net.start_peer(port, wait=False)
    wait_until(tls.ready, 60, "the TLS peer validating its channel")
    return tls
