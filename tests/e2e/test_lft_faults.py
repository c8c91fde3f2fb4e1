"""LFT under real faults: real RadioStation and peer processes, killed, stopped and restarted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tools.procs import LocalNetwork, http, post_until_taken, running_network, wait_until

PEERS = 4
OBSERVATION_WINDOW = 6.0  # test 3: how long a halted channel is watched for a block


# ------------------------------------------------------------------ network set-up and teardown


# Leaders here change by complaint only, never by block count: under load a slow machine makes
# many small blocks, and a leader rotating away before the kill would leave test 1 killing a follower.
CONFIG = {"LEADER_BLOCK_CREATION_LIMIT": 100_000}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalNetwork]:
    """A RadioStation and four peers, all of which see the same four validators."""
    with running_network(tmp_path, PEERS, CONFIG, deadline=60, audience=True) as network:
        yield network


# ... nor by a round slower than the usual timer: on a slow machine under load a round may pass
# 1 s (a follower votes once its SCORE has caught up), and two followers complaining about the
# same one moved the leader before test 1 killed it. A killed leader is found unreachable within
# a fraction of a second whatever the timer (UNREACHABLE_WAIT_S), which is what test 1 watches.
PATIENT = {**CONFIG, "TIMEOUT_FOR_LEADER_COMPLAIN": 4.0}


@pytest.fixture
def patient_net(tmp_path: Path) -> Iterator[LocalNetwork]:
    """`net` with a round timer of 4 s."""
    with running_network(tmp_path, PEERS, PATIENT, deadline=60, audience=True) as network:
        yield network


# ------------------------------------------------------------------ talking to peers


def _wait_final(
    net: LocalNetwork, ports: Sequence[int], hashes: Sequence[str], deadline: float, what: str
) -> None:
    """Wait until every transaction is in a final block on every one of `ports`."""
    pending = [(port, tx_hash) for port in ports for tx_hash in hashes]

    def all_final() -> bool:
        while pending and net.final_on(*pending[0]):
            pending.pop(0)
        return not pending

    try:
        wait_until(all_final, deadline, what)
    except AssertionError as exc:
        port, tx_hash = pending[0]
        raise AssertionError(
            f"{exc}; {len(pending)} (peer, tx) pairs not final, first: tx {tx_hash} on peer "
            f"{port} (state {net.tx_height(port, tx_hash)}), heights "
            f"{ {p: net.height(p) for p in ports} } (logs in {net.workdir})"
        ) from None


def _assert_agree(net: LocalNetwork, ports: Sequence[int]) -> int:
    """Every peer of `ports` holds the same block at every height they all have; the top height."""
    top = min(net.height(port) for port in ports)
    assert top >= 0, "no block was finalised"
    for height in range(top + 1):
        hashes = {port: net.block_hash_at(port, height) for port in ports}
        assert len(set(hashes.values())) == 1, f"peers differ at height {height}: {hashes}"
    return top


def _wait_same_height(net: LocalNetwork, ports: Sequence[int], deadline: float) -> int:
    def same() -> int | None:
        heights = {net.height(port) for port in ports}
        return heights.pop() + 1 if len(heights) == 1 else None

    return wait_until(same, deadline, f"peers {list(ports)} at one height") - 1


def _leader_port(net: LocalNetwork, ports: Sequence[int]) -> int:
    """The port of the peer that all of `ports` name as the leader (it says so itself)."""
    statuses = {port: net.status(port) for port in ports}
    leaders = {s["leader_id"] for s in statuses.values()}
    assert len(leaders) == 1, f"peers disagree on the leader: {leaders}"
    leader_id = leaders.pop()
    port = next(p for p, s in statuses.items() if s["peer_id"] == leader_id)
    assert statuses[port]["peer_type"] == "1", statuses[port]
    return port


def _warm_up(net: LocalNetwork, ports: Sequence[int]) -> None:
    """One transaction final everywhere, then an idle channel: no pooled or in-flight work."""
    tx_hash = net.submit(ports[0], {"data": "warm-up"})
    _wait_final(net, ports, [tx_hash], 30, "the warm-up transaction")
    wait_until(lambda: all(net.status(p)["tx_pool_size"] == 0 for p in ports), 20, "empty tx pools")
    _wait_same_height(net, ports, 20)


class TxLoad:
    """Posts transactions round-robin to some peers from a background thread until stopped."""

    def __init__(self, net: LocalNetwork, ports: Sequence[int], limit: int) -> None:
        self.net = net
        self.ports = list(ports)
        self.limit = limit
        self.acked: list[str] = []
        self.errors: list[str] = []  # answers other than an acknowledgement or a 503
        self.busy = 0  # 503 answers (asked again after a pause): the pool waits for a block
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tx-load", daemon=True)

    def __enter__(self) -> TxLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load thread did not stop"

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        for index in range(self.limit):
            if self._stop.is_set():
                return
            port = self.ports[index % len(self.ports)]
            body = json.dumps({"data": f"load {index}"}).encode()
            url = f"{self.net.rest(port)}/api/v1/transactions"
            try:
                status, reply, busy = post_until_taken(url, body, self._stop)
            except OSError as exc:
                self.errors.append(f"peer {port}: {exc}")
                continue
            self.busy += busy
            if status == 200:
                self.acked.append(str(reply["tx_hash"]))
            elif not (status == 503 and self._stop.is_set()):  # stopped while it was busy
                self.errors.append(f"peer {port}: {status} {reply}")


# ------------------------------------------------------------------ the tests


def test_killed_leader_under_load_loses_nothing_and_rejoins_after_restart(
    patient_net: LocalNetwork,
) -> None:
    net = patient_net
    ports = sorted(net.peers)
    _warm_up(net, ports)
    victim = _leader_port(net, ports)
    others = [p for p in ports if p != victim]
    start_height = net.height(others[0])

    # 1. load the followers; kill -9 the leader once blocks flow, keep loading through failover
    with TxLoad(net, others, limit=600) as load:
        wait_until(
            lambda: len(load.acked) >= 100 and net.height(others[0]) >= start_height + 2,
            30,
            "transactions acknowledged and blocks made under load",
        )
        assert net.status(victim)["peer_type"] == "1", "the leader changed before the kill"
        net.peers[victim].kill9()
        acked_at_kill = len(load.acked)
        kill_height = max(net.height(p) for p in others)
        wait_until(
            lambda: len(load.acked) >= acked_at_kill + 100 or load.done,
            30,
            "transactions acknowledged after the kill",
        )
    assert not load.errors, (
        f"survivors refused transactions: {load.errors[:5]} (and {load.busy} 503s asked again)"
    )
    assert len(load.acked) > acked_at_kill, "no transaction was sent after the kill"

    # 2. blocks resume, nothing acknowledged is lost, the survivors agree
    wait_until(
        lambda: min(net.height(p) for p in others) > kill_height, 30, "blocks after the kill"
    )
    _wait_final(net, others, load.acked, 60, "every acknowledged transaction on every survivor")
    assert any(net.status(p)["leader_complaint"] > 0 for p in others), "no complaint was made"
    complaints = [
        line
        for p in others
        for line in net.peers[p].log_text().splitlines()
        if "complaining" in line
    ]  # (whether a link found the killed leader unreachable before a round's time ran out is a
    # matter of speed: a busy machine's CI met the round timeout first; tools/bench_failover.py
    # measures how soon the survivors go on)
    assert complaints, "no survivor logged its complaint"
    _wait_same_height(net, others, 20)
    _assert_agree(net, others)

    # 3. the killed peer comes back on its port, catches up and holds the same chain
    net.start_peer(victim)
    target = max(net.height(p) for p in others)
    wait_until(lambda: net.height(victim) >= target, 30, "the restarted peer to catch up")
    wait_until(
        lambda: net.sees_every_validator(audience=True),
        20,
        "the restarted peer to see all validators",
    )
    _assert_agree(net, ports)
    # it votes once its SCORE has executed what it caught up on: stopping another before that
    # left two voters until then, rounds failing with their timers growing
    wait_until(
        lambda: net.status(victim)["executed_height"] >= target,
        60,
        "the restarted peer's SCORE to execute what it caught up on",
    )

    # 4. it votes: with one other peer stopped, 3 of 4 (it included) still finalise
    stopped = others[0]
    assert net.peers[stopped].stop() == 0
    running = [p for p in ports if p != stopped]
    fresh = [net.submit(running[i % 3], {"data": f"after restart {i}"}) for i in range(6)]
    _wait_final(net, running, fresh, 60, "new transactions with the restarted peer voting")
    _wait_same_height(net, running, 20)
    _assert_agree(net, running)


def test_channel_keeps_finalising_without_the_radiostation(net: LocalNetwork) -> None:
    ports = sorted(net.peers)
    _warm_up(net, ports)
    radiostation = net.radiostation
    assert radiostation is not None
    assert radiostation.stop() == 0
    status, _ = _probe(f"{net.rs_rest}/api/v1/peer/list")
    assert status is None, "the RadioStation still answers"

    before = net.height(ports[0])
    hashes = [net.submit(ports[i % PEERS], {"data": f"no radiostation {i}"}) for i in range(8)]
    _wait_final(net, ports, hashes, 30, "transactions final with the RadioStation down")
    top = _wait_same_height(net, ports, 20)
    assert top > before
    _assert_agree(net, ports)


def test_two_of_four_down_halts_without_fork_and_resumes_on_restart(net: LocalNetwork) -> None:
    ports = sorted(net.peers)
    _warm_up(net, ports)
    leader = _leader_port(net, ports)
    follower = next(p for p in ports if p != leader)
    for port in (leader, follower):
        assert net.peers[port].stop() == 0
    running = [p for p in ports if p not in (leader, follower)]
    before = {p: (net.height(p), net.status(p)["block_hash"]) for p in running}
    assert len({h for h, _ in before.values()}) == 1, before

    # 1. half the weight cannot finalise: watch the survivors for a block that must not come
    pending = [net.submit(running[0], {"data": f"while halted {i}"}) for i in range(5)]
    window_end = time.monotonic() + OBSERVATION_WINDOW
    while time.monotonic() < window_end:
        now = {p: (net.height(p), net.status(p)["block_hash"]) for p in running}
        assert now == before, f"a block was finalised by 2 of 4 peers: {before} -> {now}"
        time.sleep(0.2)
    assert all(net.tx_height(running[0], h) == -1 for h in pending), "txs left the pool"
    assert net.status(running[0])["leader_complaint"] > 0, "the survivors never complained"

    # 2. a third peer returns: progress resumes, the pending transactions become final
    net.start_peer(follower)
    running.append(follower)
    _wait_final(net, running, pending, 60, "pending transactions after the restart")
    _wait_same_height(net, running, 20)
    top = _assert_agree(net, running)
    assert top > before[running[0]][0]


def _probe(url: str) -> tuple[int | None, object]:
    """(status, body) of a GET, or (None, error) when nothing answers."""
    try:
        return http("GET", url, timeout=2.0)
    except OSError as exc:
        return None, exc
