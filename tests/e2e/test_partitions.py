"""Network partitions and delay between real peer processes, each in a network namespace of its own.

Four peers (with their REST proxies and SCORE processes) run in four namespaces joined by a bridge
(tests/e2e/_netns.py); the RadioStation runs in the bridge's namespace and the test reaches every
REST API from the root namespace. Partitions are blackhole routes between peer addresses, so both
halves still reach the RadioStation and the test. A 2-2 split must halt without a fork and heal; a
3-1 split goes on on the majority side and the minority catches up; 200 ms of delay on every peer's
link (a userspace switch between the namespaces, tests/e2e/_tapswitch.py) keeps the channel live.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._netns import VirtualNetwork, switch_unavailable_reason
from tests.e2e._netns import unavailable_reason as _unavailable_reason
from tools.procs import REST_DIFF, LocalNetwork, Proc, get, wait_until

_REASON = _unavailable_reason()
if _REASON is not None:
    pytest.skip(f"network namespaces unavailable: {_REASON}", allow_module_level=True)

PEERS = 4
PEER_PORT = 7100  # peer i listens on 7100 + i in its namespace (distinct: they share a storage dir)
ROUND_TIMEOUT = 1.0  # TIMEOUT_FOR_LEADER_COMPLAIN
MAX_ROUND_TIMEOUT = 4.0  # MAX_TIMEOUT_FOR_LEADER_COMPLAIN: a healed split retries this often
CONFIG = {
    "TIMEOUT_FOR_LEADER_COMPLAIN": ROUND_TIMEOUT,
    "MAX_TIMEOUT_FOR_LEADER_COMPLAIN": MAX_ROUND_TIMEOUT,
}
DELAY_MS = 200
MAX_ASKS = 32  # REST requests a test has open at once


def _round_timer(failed_rounds: int) -> float:
    """How long a validator waits in a round after `failed_rounds` failures (LFT doubles it)."""
    return min(ROUND_TIMEOUT * 2**failed_rounds, MAX_ROUND_TIMEOUT)


# ------------------------------------------------------------------ the namespaced network


class NamespacedNetwork(LocalNetwork):
    """A LocalNetwork whose peers each run in a namespace of `vnet` and bind and advertise their
    namespace's address; the RadioStation runs in the hub namespace on the bridge address."""

    def __init__(self, workdir: Path, vnet: VirtualNetwork, config: dict[str, Any]) -> None:
        super().__init__(workdir, config)
        self.vnet = vnet
        self.index: dict[int, int] = {}  # peer port -> host index

    def _conf(self, name: str, address: str) -> Path:
        """A configuration file of its own for one process: the shared values and its address."""
        path = self.workdir / f"conf_{name}.json"
        values = {**self.config_values, "IP_LOCAL": address, "LOOPCHAIN_HOST": address}
        path.write_text(json.dumps(values))
        return path

    @property
    def rs_rest(self) -> str:
        return f"http://{self.vnet.hub_address}:{self.rs_port + REST_DIFF}"

    def rest(self, port: int) -> str:  # type: ignore[override]
        return f"http://{self.vnet.addresses[self.index[port]]}:{port + REST_DIFF}"

    def start_radiostation(self) -> Proc:
        conf = self._conf("radiostation", self.vnet.hub_address)
        args = ["radiostation.py", "-p", str(self.rs_port), "-o", str(conf)]
        proc = Proc(f"radiostation_{self.rs_port}", args, self.workdir, self.vnet.hub_prefix)
        self.radiostation = proc.start()
        self.procs.append(proc)
        wait_until(lambda: get(f"{self.rs_rest}/api/v1/peer/list"), 30, "the RadioStation REST API")
        return proc

    def start_host(self, index: int) -> int:
        """Start the peer of host `index` inside its namespace; its port."""
        port = PEER_PORT + index
        self.index[port] = index
        conf = self._conf(f"peer_{port}", self.vnet.addresses[index])
        target = f"{self.vnet.hub_address}:{self.rs_port}"
        args = ["peer.py", "-p", str(port), "-r", target, "-o", str(conf)]
        proc = Proc(f"peer_{port}", args, self.workdir, self.vnet.exec_prefix(index)).start()
        self.peers[port] = proc
        self.procs.append(proc)
        return port

    def host_of(self, port: int) -> int:
        return self.index[port]


@contextlib.contextmanager
def _network(
    workdir: Path, switched: bool = False, config: dict[str, Any] | None = None
) -> Iterator[NamespacedNetwork]:
    """The virtual network (`switched`: through the userspace switch) with a RadioStation and four
    peers that all see four validators; afterwards every process is stopped (no traceback in any
    log) and the network is removed."""
    vnet = VirtualNetwork(PEERS, switched=switched).create()
    try:
        net = NamespacedNetwork(workdir, vnet, {**CONFIG, **(config or {})})
        try:
            net.start_radiostation()
            ports = [net.start_host(i) for i in range(PEERS)]
            for port in ports:
                wait_until(lambda p=port: net.status(p), 60, f"peer {port} REST")
            wait_until(
                lambda: net.sees_every_validator(audience=True),
                60,
                "four peers that know all four validators",
            )
            yield net
        finally:
            net.stop_and_check()
    finally:
        vnet.destroy()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[NamespacedNetwork]:
    with _network(tmp_path) as network:
        yield network


# ------------------------------------------------------------------ talking to peers


def _wait_final(
    net: LocalNetwork, ports: Sequence[int], hashes: Sequence[str], deadline: float, what: str
) -> float:
    """Wait until every transaction is in a final block on every one of `ports`; seconds taken."""
    started = time.monotonic()
    pending = [(port, tx_hash) for port in ports for tx_hash in hashes]

    def all_final() -> bool:  # asked at once: over a delayed link each answer takes a round trip
        if not pending:
            return True
        with ThreadPoolExecutor(min(len(pending), MAX_ASKS)) as ask:
            final = list(ask.map(lambda pair: net.final_on(*pair), pending))
        pending[:] = [pair for pair, done in zip(pending, final, strict=True) if not done]
        return not pending

    try:
        wait_until(all_final, deadline, what)
    except AssertionError as exc:
        port, tx_hash = pending[0]
        raise AssertionError(
            f"{exc}; {len(pending)} (peer, tx) pairs not final, first: tx {tx_hash} on peer "
            f"{port} (state {net.tx_height(port, tx_hash)}), heights "
            f"{ {p: net.height(p) for p in net.peers} } (logs in {net.workdir})"
        ) from None
    return time.monotonic() - started


def _assert_agree(net: LocalNetwork, ports: Sequence[int]) -> int:
    """Every peer of `ports` holds the same block at every height they all have; that height."""
    top = min(net.height(port) for port in ports)
    assert top >= 0, "no block was finalised"
    for height in range(top + 1):
        hashes = {port: net.block_hash_at(port, height) for port in ports}
        assert len(set(hashes.values())) == 1, f"fork at height {height}: {hashes}"
    return top


def _wait_same_tip(net: LocalNetwork, ports: Sequence[int], deadline: float) -> tuple[int, str]:
    """Wait until all of `ports` report one height and one tip hash; (height, hash)."""

    def same() -> tuple[int, str] | None:
        tips = {(net.height(p), str(net.status(p)["block_hash"])) for p in ports}
        return tips.pop() if len(tips) == 1 else None

    return wait_until(same, deadline, f"peers {list(ports)} at one tip")


def _warm_up(net: LocalNetwork, ports: Sequence[int]) -> int:
    """One transaction final everywhere, then an idle channel (nothing pooled or in flight); the
    common height."""
    tx_hash = net.submit(ports[0], {"data": "warm-up"})
    _wait_final(net, ports, [tx_hash], 60, "the warm-up transaction")
    wait_until(lambda: all(net.status(p)["tx_pool_size"] == 0 for p in ports), 30, "empty pools")
    height, _ = _wait_same_tip(net, ports, 30)
    return height


def _round_timer_now(net: LocalNetwork, port: int) -> float:
    """The peer's round timer before failures double it, from its /metrics."""
    with urllib.request.urlopen(f"{net.rest(port)}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("loopchain_round_timeout_seconds{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"peer {port}'s /metrics has no loopchain_round_timeout_seconds")


def _leader_port(net: LocalNetwork, ports: Sequence[int]) -> int:
    statuses = {port: net.status(port) for port in ports}
    leaders = {s["leader_id"] for s in statuses.values()}
    assert len(leaders) == 1, f"peers disagree on the leader: {leaders}"
    leader_id = leaders.pop()
    return next(p for p, s in statuses.items() if s["peer_id"] == leader_id)


def _snapshot(net: LocalNetwork, ports: Sequence[int]) -> dict[int, tuple[int, str, int]]:
    """(height, tip hash, round) of each peer."""
    found = {}
    for port in ports:
        status = net.status(port)
        found[port] = (int(status["block_height"]), str(status["block_hash"]), int(status["round"]))
    return found


# ------------------------------------------------------------------ the tests


def test_two_two_split_halts_without_fork_and_heals(net: NamespacedNetwork) -> None:
    _two_two_split(net, silent=False)


def test_a_two_two_split_that_drops_packets_silently_halts_without_fork_and_heals(
    tmp_path: Path,
) -> None:
    """As above, the sides cut apart by the switch, which drops their packets without a word (a
    firewall, a routed network's cut): calls and connection attempts across the cut wait for
    their deadlines instead of being refused at once by the blackhole routes."""
    reason = switch_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no userspace switch here: {reason}")
    with _network(tmp_path, switched=True) as net:
        _two_two_split(net, silent=True)


def _two_two_split(net: NamespacedNetwork, silent: bool) -> None:
    ports = sorted(net.peers)
    start_height = _warm_up(net, ports)
    leader = _leader_port(net, ports)
    side_a = [leader, next(p for p in ports if p != leader)]
    side_b = [p for p in ports if p not in side_a]
    net.vnet.partition(
        [net.host_of(p) for p in side_a], [net.host_of(p) for p in side_b], silent=silent
    )
    before = _snapshot(net, ports)
    complaints = {p: int(net.status(p)["leader_complaint"]) for p in ports}

    # 1. work on both sides; each side holds half the weight: no certificate, no timeout certificate
    hashes = [
        net.submit(side[i % 2], {"data": f"split {i}"})
        for i in range(8)
        for side in (side_a, side_b)
    ]
    wait_until(
        lambda: all(int(net.status(p)["leader_complaint"]) > complaints[p] for p in ports),
        60,
        "every peer to time out its round and complain",
    )
    # the complaints are re-sent after each further (doubled) round timeout; watch two of them
    window = _round_timer(1) + _round_timer(2)
    window_end = time.monotonic() + window
    while time.monotonic() < window_end:
        now = _snapshot(net, ports)
        assert now == before, f"progress during a 2-2 split: {before} -> {now}"
        time.sleep(0.2)
    for port in ports:
        assert all(not net.final_on(port, h) for h in hashes), f"a tx final on {port}"
    assert {h for h, _, _ in before.values()} == {start_height}
    assert _assert_agree(net, ports) == start_height

    # 2. heal: every transaction of both sides becomes final on all four, one tip, no fork
    net.vnet.heal()
    took = _wait_final(net, ports, hashes, 120, "the split's transactions after healing")
    _wait_same_tip(net, ports, 60)
    top = _assert_agree(net, ports)
    assert top > start_height
    print(
        f"2-2{' (silent)' if silent else ''}: held height {start_height} for {window:.0f} s; "
        f"healed to {top} in {took:.1f} s"
    )


def test_three_one_split_majority_goes_on_and_minority_catches_up(net: NamespacedNetwork) -> None:
    ports = sorted(net.peers)
    start_height = _warm_up(net, ports)
    isolated = _leader_port(net, ports)  # the hardest minority: the leader itself
    majority = [p for p in ports if p != isolated]
    net.vnet.partition([net.host_of(isolated)], [net.host_of(p) for p in majority])

    # 1. the isolated leader gets work it cannot finalise; the majority replaces it and goes on
    stranded = net.submit(isolated, {"data": "stranded on the minority side"})
    complaints = int(net.status(isolated)["leader_complaint"])
    first = [net.submit(majority[i % 3], {"data": f"majority {i}"}) for i in range(6)]
    took = _wait_final(net, majority, first, 90, "transactions on the majority side")
    second = [net.submit(majority[i % 3], {"data": f"majority again {i}"}) for i in range(6)]
    _wait_final(net, majority, second, 60, "more transactions on the majority side")
    majority_height, _ = _wait_same_tip(net, majority, 30)
    assert majority_height >= start_height + 2, majority_height
    isolated_id = net.status(isolated)["peer_id"]
    assert all(net.status(p)["leader_id"] != isolated_id for p in majority), "no new leader"
    wait_until(
        lambda: int(net.status(isolated)["leader_complaint"]) > complaints,
        60,
        "the isolated peer to time out its round",
    )
    assert net.height(isolated) == start_height, "the isolated peer finalised a block alone"
    assert not net.final_on(isolated, stranded)
    assert all(net.tx_height(p, stranded) is None for p in majority), "the tx crossed the cut"
    _assert_agree(net, ports)  # the isolated peer's chain is a prefix of the majority's

    # 2. heal: the isolated peer catches up, its stranded transaction becomes final everywhere
    net.vnet.heal()
    caught = _wait_final(net, ports, [*first, *second, stranded], 120, "all txs after healing")
    wait_until(lambda: net.height(isolated) >= majority_height, 60, "the minority to catch up")
    _wait_same_tip(net, ports, 60)
    top = _assert_agree(net, ports)
    print(
        f"3-1: majority {start_height} -> {majority_height} in {took:.1f} s while split; "
        f"after healing all at {top} in {caught:.1f} s"
    )


def test_two_hundred_ms_delay_keeps_the_channel_live(tmp_path: Path) -> None:
    reason = switch_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no userspace switch here: {reason}")
    # leaders change every other round: each peer's round timer learns from several leaders
    with _network(tmp_path, switched=True, config={"LEADER_BLOCK_CREATION_LIMIT": 2}) as net:
        ports = sorted(net.peers)
        start_height = _warm_up(net, ports)
        net.vnet.add_delay(DELAY_MS)
        started = time.monotonic()
        net.status(ports[0])  # a new connection: the reply's SYN-ACK and data are both delayed
        assert time.monotonic() - started >= DELAY_MS / 1000, "the delay is not in effect"

        for batch in range(6):  # enough rounds of three leaders or more for the timers
            with ThreadPoolExecutor(8) as send:  # clients at once, each a round trip away
                hashes = list(
                    send.map(
                        lambda i, b=batch: net.submit(
                            ports[i % PEERS], {"data": f"delayed {b}.{i}"}
                        ),
                        range(8),
                    )
                )
            took = _wait_final(net, ports, hashes, 120, f"delayed batch {batch} on every peer")
            print(f"delay {DELAY_MS} ms: batch {batch} final everywhere in {took:.1f} s")
        _wait_same_tip(net, ports, 60)
        # rounds took longer than half the configured 1 s timer: every timer follows them
        timers = {port: _round_timer_now(net, port) for port in ports}
        assert all(ROUND_TIMEOUT < t <= MAX_ROUND_TIMEOUT for t in timers.values()), timers
        print(f"delay {DELAY_MS} ms: round timers {timers}")
        net.vnet.remove_delay()  # the whole chain is compared at once, not a round trip a block
        top = _assert_agree(net, ports)
        assert top >= start_height + 3, (start_height, top)
