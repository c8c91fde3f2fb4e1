"""What the crash tests share: a network of peers that get killed, and what its clients were told
was accepted (test_crash_points.py, test_crash_soak.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

from loopchain import failpoints
from tools.procs import REST_DIFF, LocalNetwork, http, post_json, wait_until

DOUBLE_VOTE = "signed two different votes"
TXS = "/api/v1/transactions"


class Crashes:
    """A network of peers and what its clients were told was accepted."""

    def __init__(self, net: LocalNetwork) -> None:
        self.net = net
        self.ports = sorted(net.peers)
        self.acknowledged: list[str] = []

    def submit(self, port: int, tag: str) -> str:
        reply = post_json(f"{self.net.rest(port)}/api/v1/transactions", {"tag": tag})
        assert reply["response_code"] == 0, reply
        self.acknowledged.append(str(reply["tx_hash"]))
        return str(reply["tx_hash"])

    def start(self, port: int, points: str = "", wait: bool = True) -> None:
        with environment(failpoints.ENV, points):
            self.net.start_peer(port, wait=wait)

    def final_everywhere(self, tx_hash: str) -> bool:
        for port in self.ports:
            status, body = http("GET", f"{self.net.rest(port)}/api/v1/transactions?hash={tx_hash}")
            if status != 200 or int(body["block_height"]) < 0:
                return False
        return True

    def converged(self) -> dict[str, Any] | None:
        """The common tip of every peer once they agree on it and executed all of it."""
        seen = set()
        for port in self.ports:
            s = self.net.status(port)
            if s["tx_pool_size"] or s["executed_height"] != s["block_height"]:
                return None
            seen.add((s["block_height"], s["block_hash"], s["state_root"]))
        return {"tip": seen.pop()} if len(seen) == 1 else None

    def double_voters(self) -> list[str]:
        """Names of the processes whose logs say a validator signed two different votes."""
        return [proc.name for proc in self.net.procs if DOUBLE_VOTE in proc.log_text()]

    def check(self) -> None:
        """Nothing acknowledged is lost, every peer is at the same tip and state root, and no
        peer saw a validator sign two different votes for one round."""
        pending = list(self.acknowledged)

        def all_final() -> bool:
            while pending and self.final_everywhere(pending[0]):
                pending.pop(0)
            return not pending

        wait_until(all_final, 90, f"every acknowledged transaction final ({pending[:1]} not)")
        wait_until(self.converged, 60, "every peer at the same tip and state root")
        assert not (voters := self.double_voters()), f"a double vote in the logs of {voters}"


class Rest:
    """A keep-alive HTTP connection to one peer's REST API, for one thread; reconnects after an
    error (which it raises: the caller counts it)."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        if self.conn is None:
            self.conn = HTTPConnection("127.0.0.1", self.port + REST_DIFF, timeout=self.timeout)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, json.loads(payload or b"null")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise ValueError(f"GET {path} on peer {self.port} answered {status}: {body}")
        return body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Load:
    """`clients` threads posting transactions back to back, in turn to every peer that is up; an
    answer 200 with response_code 0 is an acknowledgement, anything else is counted by kind
    (`tag` goes into every transaction, so that runs with different seeds differ)."""

    def __init__(self, ports: list[int], clients: int, tag: int) -> None:
        self.tag = tag
        self.lock = threading.Lock()
        self.up = list(ports)
        self.acknowledged: list[str] = []
        self.acked_by: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()
        # answers that are neither an acknowledgement, a 503, nor an outcome unknown (502)
        self.unexpected: list[str] = []
        self.refusals: Counter[str] = Counter()  # the 503 answers by message, digits as N
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), name=f"soak-client-{i}", daemon=True)
            for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)
        assert not [t.name for t in self.threads if t.is_alive()], "a client did not stop"

    def take_down(self, port: int) -> None:
        with self.lock:
            self.up.remove(port)

    def bring_up(self, port: int) -> None:
        with self.lock:
            self.up.append(port)

    def acks(self) -> Counter[int]:
        with self.lock:
            return Counter(self.acked_by)

    def _client(self, client: int) -> None:
        conns: dict[int, Rest] = {}
        try:
            for seq in itertools.count():
                if self.stopping.is_set():
                    return
                with self.lock:
                    port = self.up[(client + seq) % len(self.up)]
                body = json.dumps({"soak": self.tag, "client": client, "seq": seq}).encode()
                kind, tx_hash = self._post(conns.setdefault(port, Rest(port)), body)
                with self.lock:
                    self.outcomes[kind] += 1
                    if tx_hash is not None:
                        self.acknowledged.append(tx_hash)
                        self.acked_by[port] += 1
                if tx_hash is None:
                    self.stopping.wait(0.05)  # back off a little (Retry-After asks 1 s)
        except Exception as exc:  # a client that dies would quietly lower the load
            with self.lock:
                self.unexpected.append(f"client {client}: {exc!r}")
        finally:
            for rest in conns.values():
                rest.close()

    def _post(self, rest: Rest, body: bytes) -> tuple[str, str | None]:
        try:
            status, reply = rest.request("POST", TXS, body)
        except TimeoutError:
            return "timeout", None
        except (OSError, HTTPException):
            return "connection error", None  # a peer killed, or not listening yet
        if status == 200 and isinstance(reply, dict) and reply.get("response_code") == 0:
            return "200", str(reply["tx_hash"])
        if status == 502 and isinstance(reply, dict) and "is unknown" in str(reply.get("message")):
            return "unknown", None  # the peer went away holding it: not acknowledged, as a timeout
        with self.lock:
            if status == 503 and isinstance(reply, dict):
                self.refusals[re.sub(r"\d+", "N", str(reply.get("message")))[:80]] += 1
            else:
                self.unexpected.append(f"{status}: {reply}")
        return str(status), None


@dataclass
class Block:
    block_hash: str
    prev_hash: str
    tx_hashes: list[str]


def chain(port: int, tip: int) -> list[Block]:
    """Every block of the peer on `port` from the genesis block to height `tip`."""
    rest = Rest(port)
    blocks = []
    try:
        for height in range(tip + 1):
            body = rest.get(f"/api/v1/blocks?height={height}")
            data = body["block_data_json"]
            assert int(data["height"]) == height, (port, height, data)
            blocks.append(
                Block(
                    str(body["block_hash"]),
                    str(data["prev_block_hash"]),
                    [str(tx["tx_hash"]) for tx in body.get("tx_data_json", [])],
                )
            )
    finally:
        rest.close()
    return blocks


def not_final(port: int, tx_hashes: list[str]) -> list[str]:
    """The transactions that the peer on `port` does not report in a block."""
    rest = Rest(port)
    missing = []
    try:
        for tx_hash in tx_hashes:
            status, body = rest.request("GET", f"{TXS}?hash={tx_hash}")
            if status != 200 or int(body["block_height"]) < 0:  # 404: the peer never saw it
                missing.append(tx_hash)
    finally:
        rest.close()
    return missing


def leader(net: LocalNetwork, ports: list[int]) -> int | None:
    """The peer that says it leads, if one does (leaders change every few blocks; peer_type is
    "1" for the leader of the current round)."""
    for port in ports:
        status = net.status(port)
        if int(status["peer_type"]) == 1 and status["leader_id"] == status["peer_id"]:
            return port
    return None


def check_history(crashes: Crashes, acknowledged: list[str], deadline: float) -> str:
    """Once the peers converge: no fork, every block linked to its parent, no transaction in two
    blocks, every acknowledged transaction final on every peer, no double vote and no problem in
    any log; a one-line summary."""
    net, ports = crashes.net, crashes.ports
    assert len(set(acknowledged)) == len(acknowledged), "one hash acknowledged twice"
    tip = wait_until(crashes.converged, deadline, "every peer at the same tip and state root")
    tip_height, tip_hash, _state_root = tip["tip"]
    with ThreadPoolExecutor(len(ports)) as pool:
        chains = dict(zip(ports, pool.map(lambda p: chain(p, tip_height), ports), strict=True))
        unfinished = dict(
            zip(ports, pool.map(lambda p: not_final(p, acknowledged), ports), strict=True)
        )
    reference = chains[ports[0]]
    forks = [
        (height, {p: chains[p][height].block_hash for p in ports})
        for height in range(tip_height + 1)
        if len({chains[p][height].block_hash for p in ports}) != 1
    ]
    broken = [
        h for h in range(1, tip_height + 1) if reference[h].prev_hash != reference[h - 1].block_hash
    ]
    committed = Counter(tx for block in reference for tx in block.tx_hashes)
    twice = [tx for tx, count in committed.items() if count > 1]
    lost = [tx for tx in acknowledged if tx not in committed]
    assert not forks, f"forks at {len(forks)} heights, the first: {forks[0]}"
    assert reference[-1].block_hash == tip_hash
    assert not broken, f"blocks not linked to their parent at heights {broken[:10]}"
    assert not twice, f"{len(twice)} transactions in two blocks, e.g. {twice[:3]}"
    assert not lost, (
        f"{len(lost)} of {len(acknowledged)} acknowledged transactions lost: {lost[:5]}"
    )
    assert not any(unfinished.values()), {p: txs[:3] for p, txs in unfinished.items() if txs}
    assert not (voters := crashes.double_voters()), f"a double vote in the logs of {voters}"
    assert not (bad := net.tracebacks()), f"tracebacks in the logs of {bad} ({net.workdir})"
    return (
        f"acknowledged {len(acknowledged)}, all final everywhere, blocks {tip_height + 1}, "
        f"transactions in blocks {sum(committed.values())} "
        f"({len(set(committed) - set(acknowledged))} unacknowledged: cut off by a kill)"
    )


@contextlib.contextmanager
def crash_network(workdir: Path, config: dict[str, Any], peers: int = 4) -> Iterator[Crashes]:
    """A RadioStation and `peers` peers that all know every validator; stopped and checked after."""
    net = LocalNetwork(workdir, config)
    try:
        net.start_radiostation()
        for _ in range(peers):
            net.start_peer()
        wait_until(
            lambda: all(net.status(p)["validator_count"] == peers for p in net.peers),
            60,
            f"{peers} peers that know the {peers} validators",
        )
        yield Crashes(net)
    finally:
        net.stop_and_check()


@contextlib.contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """Set environment variable `name` to `value` for the block (processes started in it)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
