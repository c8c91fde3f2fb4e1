"""Crash soak (slow): twenty times kill -9 of a peer (the one that leads every third time, a
seeded random one otherwise) while eight clients keep submitting, each victim restarted in place
before the next; afterwards every acknowledged transaction is final on every peer, the peers hold
the same block at every height up to one common tip and state root, and no log holds a double
vote or a traceback.

    .venv/bin/pytest -m slow -n0 -s tests/e2e/test_crash_soak.py

The run prints its seed; CRASH_SOAK_SEED=N runs the same random choices again (which peer dies
in the cycles that do not target the leader). Nothing waits for a fixed time: every step waits on
a condition, with deadlines far above what the work needs.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._crashes import Crashes
from tools.procs import REST_DIFF, LocalNetwork, wait_until

PEERS = 4
CYCLES = 20
LEADER_EVERY = 3  # cycles 0, 3, 6, ... kill the peer that leads at that moment
CLIENTS = 8
FRESH_ACKS = 3  # each peer acknowledges this many more before the next kill: it is under load
CONFIG = {"LEADER_BLOCK_CREATION_LIMIT": 2}  # leaders change often: every peer proposes soon
SEED = int(os.environ.get("CRASH_SOAK_SEED") or random.SystemRandom().randrange(2**32))
STEP_DEADLINE = 300.0  # for any one step of a cycle (progress, restart, fresh acknowledgements)
TXS = "/api/v1/transactions"


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
    """CLIENTS threads posting transactions back to back, in turn to every peer that is up; an
    answer 200 with response_code 0 is an acknowledgement, anything else is counted by kind."""

    def __init__(self, ports: list[int]) -> None:
        self.lock = threading.Lock()
        self.up = list(ports)
        self.acknowledged: list[str] = []
        self.acked_by: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []  # answers that are neither an acknowledgement nor a 503
        self.refusals: Counter[str] = Counter()  # the 503 answers by message, digits as N
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), name=f"soak-client-{i}", daemon=True)
            for i in range(CLIENTS)
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
                body = json.dumps({"soak": SEED, "client": client, "seq": seq}).encode()
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


@pytest.fixture
def crashes(tmp_path: Path) -> Iterator[Crashes]:
    net = LocalNetwork(tmp_path, CONFIG)
    try:
        net.start_radiostation()
        for _ in range(PEERS):
            net.start_peer()
        wait_until(
            lambda: all(net.status(p)["validator_count"] == PEERS for p in net.peers),
            60,
            "four peers that know the four validators",
        )
        yield Crashes(net)
    finally:
        net.stop_and_check()


def _leader(net: LocalNetwork, ports: list[int]) -> int | None:
    """The peer that says it leads, if one does (leaders change every few blocks; peer_type is
    "1" for the leader of the current round)."""
    for port in ports:
        status = net.status(port)
        if int(status["peer_type"]) == 1 and status["leader_id"] == status["peer_id"]:
            return port
    return None


def _cycle(crashes: Crashes, load: Load, rng: random.Random, cycle: int) -> bool:
    """Kill one peer under load, see the three others finalise a block, restart it; whether the
    peer killed was leading."""
    net, ports = crashes.net, crashes.ports
    before = load.acks()
    wait_until(
        lambda: all(load.acks()[p] >= before[p] + FRESH_ACKS for p in ports),
        STEP_DEADLINE,
        f"every peer acknowledging again before cycle {cycle}",
    )
    if cycle % LEADER_EVERY == 0:
        victim = wait_until(lambda: _leader(net, ports), STEP_DEADLINE, "a leader")
        was_leader = True
    else:
        victim = ports[rng.randrange(PEERS)]
        was_leader = int(net.status(victim)["peer_type"]) == 1
    load.take_down(victim)
    net.peers[victim].kill9()
    others = [p for p in ports if p != victim]
    base = max(net.height(p) for p in others)
    wait_until(
        lambda: all(net.height(p) > base for p in others),
        STEP_DEADLINE,
        f"a new final block on the three others after killing peer {victim}",
    )
    net.start_peer(victim)  # waits until its REST API answers
    load.bring_up(victim)
    print(
        f"cycle {cycle + 1:2}: killed peer {victim}{' (leading)' if was_leader else ''} "
        f"at height {base}, {len(load.acknowledged)} acknowledged so far"
    )
    return was_leader


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_twenty_kill_9_under_load_lose_nothing_and_fork_nothing(crashes: Crashes) -> None:
    net, ports = crashes.net, crashes.ports
    rng = random.Random(SEED)
    print(f"\ncrash soak: seed {SEED} (CRASH_SOAK_SEED={SEED} repeats the random choices)")
    began = time.monotonic()
    load = Load(ports)
    load.start()
    try:
        leader_kills = sum(_cycle(crashes, load, rng, cycle) for cycle in range(CYCLES))
    finally:
        load.stop()
    assert not load.unexpected, f"answers neither 200 nor 503: {load.unexpected[:5]}"
    acknowledged = load.acknowledged
    assert len(set(acknowledged)) == len(acknowledged), "one hash acknowledged twice"

    tip = wait_until(crashes.converged, STEP_DEADLINE, "every peer at the same tip and state root")
    tip_height, tip_hash, _state_root = tip["tip"]
    with ThreadPoolExecutor(PEERS) as pool:
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
    not_final_somewhere = set(lost).union(*unfinished.values())
    print(
        f"crash soak summary: seed {SEED}, cycles {CYCLES}, leader kills {leader_kills}, "
        f"acknowledged {len(acknowledged)}, final everywhere "
        f"{len(acknowledged) - len(not_final_somewhere)}, lost {len(lost)}, forks {len(forks)}, "
        f"503 {load.outcomes['503']}, connection errors {load.outcomes['connection error']}, "
        f"timeouts {load.outcomes['timeout']}, blocks {tip_height + 1}, "
        f"transactions in blocks {sum(committed.values())} "
        f"({len(set(committed) - set(acknowledged))} unacknowledged: cut off by a kill), "
        f"duration {time.monotonic() - began:.0f} s"
    )
    print(f"crash soak 503 answers by message: {load.refusals.most_common(4)}")

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
