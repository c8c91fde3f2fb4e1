"""SCORE end to end: real RadioStation, peers, REST proxies and SCORE processes running packages.

* sample/token: transfers (one refused) agree on every peer, queries answer under load;
* kill -9 of one peer's SCORE process under load: restarted, caught up, nothing acknowledged lost;
* test/loop and test/memory: a transaction over a limit fails clearly and the channel goes on;
* an unknown package: the SCORE is reported unavailable and transactions still become final (9100);
* a SCORE that misses every invoke deadline: the peers give up on it (9100) and the channel goes on.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools.procs import LocalNetwork, child_pids, get, http, wait_until

PEERS = 4
DEFAULT_CHANNEL = "loopchain_default"
SUPPLY = 1_000_000_000  # initial_supply of score/sample/token/package.json
SCORE_QUERY_TIMEOUT = 3.0  # every network here runs with the default
SCORE_PROCESS = "loopchain.scoreservice.process"
NOT_INVOKED, SUCCESS, SCORE_ERROR, SCORE_UNREACHABLE = 2, 0, 9000, 9100
ALICE = "hx" + "a1" * 20
BOB = "hx" + "b0" * 20
NOBODY = "hx" + "0e" * 20

# the limits network: small limits keep runaway transactions short
LIMITS_CONFIG = {
    "SCORE_STEP_LIMIT": 100_000,
    "SCORE_MEMORY_LIMIT_MB": 256,
    "SCORE_INVOKE_TIMEOUT": 3.0,
    "LOOPCHAIN_DEFAULT_CHANNEL": "loop",
}
LIMITS_CHANNELS = {
    "loop": {"score_package": "test/loop"},
    "memory": {"score_package": "test/memory"},
    "nosuch": {"score_package": "no/such"},
}


# ------------------------------------------------------------------ networks


Channels = dict[str, Any] | Callable[[list[str]], dict[str, Any]]


def _start_network(net: LocalNetwork, channels: Channels) -> LocalNetwork:
    """A RadioStation with `channels` (or those made from the peers' ids, in port order) and four
    peers that all see four validators in each."""
    ports = sorted(net.new_peer_port() for _ in range(PEERS))
    ids = [net.make_peer_key(port) for port in ports]
    channels = channels(ids) if callable(channels) else channels
    (net.workdir / "channel_manage_data.json").write_text(json.dumps(channels))
    net.start_radiostation()
    for port in ports:
        net.start_peer(port)
    for name in channels:
        wait_until(Chan(net, name).all_ready, 40, f"four validators in channel {name}")
    return net


def _stop_networks(nets: Sequence[LocalNetwork]) -> None:
    """Stop every process of every network, then fail on a problem in a log or an unclean exit."""
    codes = [(net, net.stop_all()) for net in nets]
    for net, exits in codes:
        net.check(exits)


NetworkStarter = Callable[[Channels, dict[str, Any] | None], LocalNetwork]


@pytest.fixture
def start_network(tmp_path: Path) -> Iterator[NetworkStarter]:
    """Starts networks in the test's directory; stops them all (and checks their logs) at the end."""
    started: list[LocalNetwork] = []

    def start(channels: Channels, config: dict[str, Any] | None = None) -> LocalNetwork:
        workdir = tmp_path / f"net{len(started)}"
        workdir.mkdir()
        net = LocalNetwork(workdir, config)
        started.append(net)
        return _start_network(net, channels)

    try:
        yield start
    finally:
        _stop_networks(started)


@pytest.fixture
def token_net(start_network: NetworkStarter) -> LocalNetwork:
    """Four peers whose default channel runs sample/token, owned by the first peer (by port)."""

    def channels(ids: list[str]) -> dict[str, Any]:
        settings = {"token": {"owner": ids[0]}}
        return {DEFAULT_CHANNEL: {"score_package": "sample/token", "score_settings": settings}}

    return start_network(channels, None)


@pytest.fixture(scope="module")
def limits_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """Four peers in three channels: test/loop, test/memory and a package that does not exist."""
    net = LocalNetwork(tmp_path_factory.mktemp("limits"), LIMITS_CONFIG)
    try:
        yield _start_network(net, LIMITS_CHANNELS)
    finally:
        _stop_networks([net])


# ------------------------------------------------------------------ one channel over REST


@dataclass(frozen=True)
class Chan:
    """REST calls to the peers of one channel."""

    net: LocalNetwork
    name: str

    @property
    def ports(self) -> list[int]:
        return sorted(self.net.peers)

    def _get(self, port: int, path: str, **args: str) -> tuple[int, Any]:
        query = "&".join(f"{k}={v}" for k, v in {**args, "channel": self.name}.items())
        return http("GET", f"{self.net.rest(port)}{path}?{query}")

    def status(self, port: int) -> dict[str, Any]:
        code, body = self._get(port, "/api/v1/status/peer")
        if code != 200:
            raise ValueError(f"status of peer {port} answered {code}: {body}")
        return dict(body)

    def score_status(self, port: int) -> dict[str, Any]:
        code, body = self._get(port, "/api/v1/status/score")
        if code != 200:
            raise ValueError(f"SCORE status of peer {port} answered {code}: {body}")
        return dict(body)

    def height(self, port: int) -> int:
        return int(self.status(port)["block_height"])

    def all_ready(self) -> bool:
        for port in self.ports:
            status = self.status(port)
            if status["validator_count"] != PEERS or status["audience_count"] != PEERS - 1:
                return False
        return True

    def submit(self, port: int, data: dict[str, Any]) -> str:
        body = json.dumps({**data, "channel": self.name}).encode()
        code, reply = http("POST", f"{self.net.rest(port)}/api/v1/transactions", body)
        assert code == 200 and reply["response_code"] == 0, (port, code, reply)
        return str(reply["tx_hash"])

    def tx_height(self, port: int, tx_hash: str) -> int | None:
        """Height of the block holding the transaction (-1 while pooled), None when unknown."""
        code, body = self._get(port, "/api/v1/transactions", hash=tx_hash)
        return int(body["block_height"]) if code == 200 else None

    def is_final(self, port: int, tx_hash: str) -> bool:
        height = self.tx_height(port, tx_hash)
        return height is not None and height >= 0

    def result(self, port: int, tx_hash: str) -> dict[str, Any]:
        code, body = self._get(port, "/api/v1/transactions/result", hash=tx_hash)
        if code != 200:
            raise ValueError(f"result of {tx_hash} on peer {port} answered {code}: {body}")
        assert body["response_code"] == 0, body
        return dict(body["response"])

    def query(self, port: int, method: str, **params: Any) -> tuple[int, Any]:
        body = json.dumps({"method": method, "params": params, "channel": self.name}).encode()
        return http("POST", f"{self.net.rest(port)}/api/v1/query", body)

    def answer(self, port: int, method: str, **params: Any) -> Any:
        code, body = self.query(port, method, **params)
        assert code == 200 and body["response_code"] == 0, (port, method, code, body)
        return body["response"]

    # -------------------------------------------------------------- waiting

    def wait_final(self, hashes: Sequence[str], deadline: float, ports: Sequence[int] = ()) -> None:
        """Every transaction is in a final block on every peer of `ports` (default: all)."""
        pending = [(port, tx_hash) for port in (ports or self.ports) for tx_hash in hashes]

        def all_final() -> bool:
            while pending and self.is_final(*pending[0]):
                pending.pop(0)
            return not pending

        try:
            wait_until(all_final, deadline, f"{len(hashes)} transactions final")
        except AssertionError as exc:
            port, tx_hash = pending[0]
            raise AssertionError(
                f"{exc}; {len(pending)} (peer, tx) pairs not final, first: {tx_hash} on {port} "
                f"(state {self.tx_height(port, tx_hash)}); logs in {self.net.workdir}"
            ) from None

    def wait_results(
        self, hashes: Sequence[str], deadline: float, ports: Sequence[int] = ()
    ) -> dict[str, dict[str, Any]]:
        """The executed result of every transaction on every peer; they must agree."""
        results: dict[tuple[int, str], dict[str, Any]] = {}
        todo = [(port, tx_hash) for port in (ports or self.ports) for tx_hash in hashes]

        def all_executed() -> bool:
            while todo:
                found = self.result(*todo[0])
                if found["code"] == NOT_INVOKED:
                    return False
                results[todo.pop(0)] = found
            return True

        wait_until(all_executed, deadline, f"results of {len(hashes)} transactions")
        by_tx: dict[str, dict[str, Any]] = {}
        for (_port, tx_hash), found in results.items():
            first = by_tx.setdefault(tx_hash, found)
            assert found == first, f"peers differ on the result of {tx_hash}: {first} vs {found}"
        return by_tx

    def wait_executed_alike(self, deadline: float) -> tuple[int, str]:
        """Every peer has executed its whole chain, at one height with one state root."""

        def alike() -> tuple[int, str] | None:
            seen = set()
            for port in self.ports:
                status = self.status(port)
                if status["executed_height"] != status["block_height"]:
                    return None
                seen.add((int(status["executed_height"]), str(status["state_root"])))
            return seen.pop() if len(seen) == 1 else None

        try:
            return wait_until(alike, deadline, "the same executed height and state root")
        except AssertionError as exc:
            statuses = {port: self.status(port) for port in self.ports}
            views = {
                port: (s["block_height"], s["executed_height"], s["state_root"][:16])
                for port, s in statuses.items()
            }
            raise AssertionError(f"{exc}; (height, executed, root) per peer: {views}") from None

    def assert_agree(self) -> int:
        """Every peer holds the same block at every height; returns the common top height."""
        top = min(self.height(port) for port in self.ports)
        for height in range(top + 1):
            hashes = {
                port: get(
                    f"{self.net.rest(port)}/api/v1/blocks?height={height}&channel={self.name}"
                )["block_hash"]
                for port in self.ports
            }
            assert len(set(hashes.values())) == 1, f"peers differ at height {height}: {hashes}"
        return top


# ------------------------------------------------------------------ token helpers


def _transfer(to: str, value: int) -> dict[str, Any]:
    return {"method": "transfer", "params": {"to": to, "value": value}}


def _balances(chan: Chan, port: int, addresses: Sequence[str]) -> dict[str, int]:
    return {a: int(chan.answer(port, "balance_of", address=a)["balance"]) for a in addresses}


def _assert_balances(chan: Chan, expected: dict[str, int]) -> None:
    for port in chan.ports:
        assert _balances(chan, port, list(expected)) == expected, f"balances on peer {port}"
        assert chan.answer(port, "total_supply") == {"total_supply": SUPPLY}, port


def _early_result(chan: Chan, port: int, tx_hash: str) -> dict[str, Any]:
    """A result asked at once: 0, or 2 only if the transaction was not executed at that moment."""
    executed_before = int(chan.status(port)["executed_height"])
    found = chan.result(port, tx_hash)
    assert found["code"] in (SUCCESS, NOT_INVOKED), found
    if found["code"] == NOT_INVOKED:
        height = chan.tx_height(port, tx_hash)
        assert height is not None, f"peer {port} forgot {tx_hash}"
        assert height == -1 or height > executed_before, (
            f"result 2 for {tx_hash} in block {height}, executed up to {executed_before}"
        )
    return found


def _make_owner(chan: Chan, port: int) -> str:
    """The first transfer, sent to `port` (the peer the channel's score_settings name the token
    owner), credits the supply to that peer's address."""
    owner = str(chan.status(port)["peer_id"])
    first = chan.submit(port, _transfer(ALICE, 100))
    chan.wait_final([first], 30)
    assert chan.wait_results([first], 30)[first]["code"] == SUCCESS
    for peer in chan.ports:
        assert chan.answer(peer, "owner") == {"owner": owner}, peer
    return owner


class TransferLoad:
    """Posts 1-token transfers from the owner's peer in a background thread until stopped."""

    def __init__(self, chan: Chan, port: int, to: str, limit: int = 2000) -> None:
        self.chan = chan
        self.port = port
        self.to = to
        self.limit = limit
        self.acked: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="transfer-load", daemon=True)

    def __enter__(self) -> TransferLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load thread did not stop"

    def _run(self) -> None:
        url = f"{self.chan.net.rest(self.port)}/api/v1/transactions"
        body = json.dumps({**_transfer(self.to, 1), "channel": self.chan.name}).encode()
        for _ in range(self.limit):
            if self._stop.is_set():
                return
            try:
                code, reply = http("POST", url, body)
            except OSError as exc:
                self.errors.append(str(exc))
                continue
            if code == 200:
                self.acked.append(str(reply["tx_hash"]))
            else:
                self.errors.append(f"{code} {reply}")
            self._stop.wait(0.02)  # a steady trickle, not a flood of 2 cores


# ------------------------------------------------------------------ SCORE processes


def score_children(parent: int) -> list[int]:
    """Live SCORE processes whose parent is `parent`."""
    return sorted(pid for pid, command in child_pids(parent).items() if SCORE_PROCESS in command)


def _peer_pid(net: LocalNetwork, port: int) -> int:
    popen = net.peers[port].popen
    assert popen is not None and popen.poll() is None, f"peer {port} is not running"
    return int(popen.pid)


# ------------------------------------------------------------------ 1. token


def test_token_transfers_agree_on_every_peer_and_queries_answer_under_load(
    token_net: LocalNetwork,
) -> None:
    chan = Chan(token_net, DEFAULT_CHANNEL)
    ports = chan.ports
    home, second, third, fourth = ports
    ids = {port: str(chan.status(port)["peer_id"]) for port in ports}
    owner = _make_owner(chan, home)
    assert owner == ids[home]

    # 1. the owner pays three accounts; results asked at once are 0 or "not yet" (2)
    payments = [_transfer(ids[second], 500), _transfer(ids[third], 300), _transfer(ALICE, 50)]
    paid = [chan.submit(home, data) for data in payments]
    for tx_hash in paid:
        _early_result(chan, home, tx_hash)
    chan.wait_final(paid, 30)
    assert all(r["code"] == SUCCESS for r in chan.wait_results(paid, 30).values())

    # 2. a peer that is not the owner signs for clients it does not name: it moves nothing,
    #    even of its own tokens; the owner's transfer beyond its balance is refused too
    as_peers = [
        chan.submit(second, _transfer(ids[third], 200)),
        chan.submit(third, _transfer(ALICE, 100)),
    ]
    too_much = chan.submit(home, _transfer(ids[fourth], SUPPLY))
    chan.wait_final([*as_peers, too_much], 30)
    results = chan.wait_results([*as_peers, too_much], 30)
    for tx_hash in as_peers:
        assert results[tx_hash]["code"] == SCORE_ERROR, results
        assert "signed this transaction for a client" in results[tx_hash]["message"], results
    refused = results[too_much]
    assert refused["code"] == SCORE_ERROR, refused
    assert "insufficient balance" in refused.get("message", ""), refused

    # 3. every peer executed everything to one state root and answers the same balances
    chan.wait_executed_alike(30)
    expected = {
        owner: SUPPLY - 100 - 500 - 300 - 50,
        ids[second]: 500,
        ids[third]: 300,
        ids[fourth]: 0,
        ALICE: 100 + 50,
        NOBODY: 0,
    }
    _assert_balances(chan, expected)

    # 4. under a stream of transfers, queries answer within their deadline on every peer (one
    # past it is refused: a 200 says it was in time, whatever this machine's speed)
    with TransferLoad(chan, home, BOB) as load:
        wait_until(lambda: len(load.acked) >= 20, 30, "transfers acknowledged under load")
        for index in range(12):
            port = ports[index % PEERS]
            code, body = chan.query(port, "balance_of", address=ALICE)
            assert code == 200 and body["response"] == {"balance": expected[ALICE]}, body
    assert not load.errors, load.errors[:5]

    # 5. the load is final and executed everywhere, and the balances account for all of it
    chan.wait_final(load.acked, 60)
    load_results = chan.wait_results(load.acked, 60)
    assert {r["code"] for r in load_results.values()} == {SUCCESS}
    chan.wait_executed_alike(30)
    expected[owner] -= len(load.acked)
    expected[BOB] = len(load.acked)
    _assert_balances(chan, expected)
    chan.assert_agree()


# ------------------------------------------------------------------ 2. SCORE process killed


def test_killed_score_process_is_restarted_and_catches_up_under_load(
    token_net: LocalNetwork,
) -> None:
    chan = Chan(token_net, DEFAULT_CHANNEL)
    ports = chan.ports
    home, victim = ports[0], ports[2]
    owner = _make_owner(chan, home)
    victim_pid = _peer_pid(token_net, victim)
    children = wait_until(lambda: score_children(victim_pid), 10, "the victim's SCORE process")
    assert len(children) == 1, f"peer {victim} has SCORE processes {children}"
    old = children[0]

    # 1. kill -9 the victim's SCORE process while transfers flow and blocks are made
    with TransferLoad(chan, home, BOB) as load:
        start = chan.height(home)
        wait_until(
            lambda: len(load.acked) >= 30 and chan.height(home) >= start + 2,
            30,
            "transfers and blocks under load",
        )
        os.kill(old, signal.SIGKILL)
        killed_at, kill_height = len(load.acked), chan.height(home)

        # 2. the peer starts a new SCORE process that loads the package again
        def restarted() -> list[int] | None:
            new = [pid for pid in score_children(victim_pid) if pid != old]
            return new if new and chan.score_status(victim)["status"] == 0 else None

        wait_until(restarted, 30, "a new SCORE process with status 0")
        wait_until(
            lambda: len(load.acked) >= killed_at + 30 and chan.height(home) >= kill_height + 2,
            30,
            "transfers and blocks after the kill",
        )
    assert not load.errors, load.errors[:5]
    assert token_net.peers[victim].alive, "the peer died with its SCORE"
    assert score_children(victim_pid) != [old]

    # 3. nothing acknowledged is lost; the victim executes everything to the same state
    chan.wait_final(load.acked, 60)
    results = chan.wait_results(load.acked, 60)
    assert {r["code"] for r in results.values()} == {SUCCESS}, results
    height, root = chan.wait_executed_alike(60)
    assert height >= max(int(chan.tx_height(home, h) or 0) for h in load.acked) and root
    status = chan.score_status(victim)
    assert status["status"] == 0 and status["id"] == "sample/token", status
    _assert_balances(
        chan, {owner: SUPPLY - 100 - len(load.acked), ALICE: 100, BOB: len(load.acked)}
    )
    chan.assert_agree()


# ------------------------------------------------------------------ 3. limits


def _later_transactions_are_final_everywhere(chan: Chan, count: int) -> list[str]:
    """More transactions after the failing one: final on every peer, heights rise everywhere."""
    before = {port: chan.height(port) for port in chan.ports}
    hashes = [
        chan.submit(chan.ports[i % PEERS], {"method": "later", "params": {"i": i}})
        for i in range(count)
    ]
    chan.wait_final(hashes, 60)
    for tx_hash in hashes:
        assert all(chan.is_final(p, tx_hash) for p in chan.ports)
    after = {port: chan.height(port) for port in chan.ports}
    assert all(after[p] > before[p] for p in chan.ports), (before, after)
    chan.assert_agree()
    return hashes


def _assert_limited(result: dict[str, Any], limit: str) -> None:
    """9000 naming the limit, or 9100 when the peer gave up on the SCORE (with a clear reason)."""
    message = str(result.get("message", ""))
    if result["code"] == SCORE_ERROR:
        assert limit in message, result
    else:
        assert result["code"] == SCORE_UNREACHABLE, result
        assert "SCORE" in message and len(message) > 10, result


@pytest.mark.parametrize(
    ("channel", "limit", "runaway_query"),
    [("loop", "step limit", "loop"), ("memory", "memory limit", "allocate")],
)
def test_runaway_transaction_fails_over_its_limit_and_the_channel_goes_on(
    limits_net: LocalNetwork, channel: str, limit: str, runaway_query: str
) -> None:
    chan = Chan(limits_net, channel)
    wait_until(
        lambda: all(chan.score_status(p)["status"] == 0 for p in chan.ports), 30, "SCOREs loaded"
    )

    # 1. a transaction that runs away fails on every peer with the same clear result
    runaway = chan.submit(chan.ports[0], {"method": "run", "params": {}})
    chan.wait_final([runaway], 30)
    result = chan.wait_results([runaway], 60)[runaway]
    _assert_limited(result, limit)

    # 2. later transactions still become final on every peer and are executed alike
    later = _later_transactions_are_final_everywhere(chan, 3)
    for found in chan.wait_results(later, 60).values():
        _assert_limited(found, limit)
    chan.wait_executed_alike(60)

    # 3. a runaway query is refused within its deadline; an ordinary one is answered
    port = chan.ports[1]
    wait_until(lambda: chan.score_status(port)["status"] == 0, 30, "the SCORE up again")
    started = time.monotonic()
    code, body = chan.query(port, runaway_query)
    elapsed = time.monotonic() - started
    assert code != 200 and body["response_code"] < 0, (code, body)
    # bounded by its deadline, not run to its end (never): a margin for a machine 3x slower
    assert elapsed < 4 * SCORE_QUERY_TIMEOUT, f"the runaway query took {elapsed:.2f} s"
    assert chan.answer(port, "echo") == {"method": "echo", "params": {}, "channel": channel}


# ------------------------------------------------------------------ 4. a package that is not there


def test_unknown_package_is_reported_and_transactions_still_become_final(
    limits_net: LocalNetwork,
) -> None:
    chan = Chan(limits_net, "nosuch")
    for port in chan.ports:
        status = chan.score_status(port)
        assert status["status"] == -1, status
        assert "no/such" in status.get("message", "") and "cannot be loaded" in status["message"]
    hashes = _later_transactions_are_final_everywhere(chan, 4)
    for found in chan.wait_results(hashes, 30).values():
        assert found["code"] == SCORE_UNREACHABLE, found
        assert "no/such" in found.get("message", ""), found
    chan.wait_executed_alike(30)
    code, body = chan.query(chan.ports[0], "anything")
    assert code != 200 and body["response_code"] < 0 and "no/such" in body["message"], body


# ------------------------------------------------------------------ 5. the peer gives up on its SCORE

GIVE_UP_CONFIG = {"SCORE_STEP_LIMIT": 10**9, "SCORE_INVOKE_TIMEOUT": 1.0}
GIVEN_UP = "SCORE_INVOKE_TIMEOUT"  # named by the status of a SCORE given up (this peer's deadlines)
# what its results say, alike on every peer (the deadlines differ with each peer's configuration)
GIVEN_UP_RESULT = "in 3 tries, each with twice the deadline of the one before"


def _given_up_channel(start_network: NetworkStarter) -> Chan:
    """A test/loop channel whose first transaction outlives every deadline: the peers give up."""
    net = start_network({DEFAULT_CHANNEL: {"score_package": "test/loop"}}, GIVE_UP_CONFIG)
    chan = Chan(net, DEFAULT_CHANNEL)
    runaway = chan.submit(chan.ports[0], {"method": "run", "params": {}})
    chan.wait_final([runaway], 30)
    result = chan.wait_results([runaway], 60)[runaway]
    assert result["code"] == SCORE_UNREACHABLE and GIVEN_UP_RESULT in result.get("message", ""), (
        result
    )
    return chan


def test_score_missing_its_invoke_deadline_is_given_up_and_the_channel_goes_on(
    start_network: NetworkStarter,
) -> None:
    chan = _given_up_channel(start_network)
    later = _later_transactions_are_final_everywhere(chan, 3)
    assert {r["code"] for r in chan.wait_results(later, 30).values()} == {SCORE_UNREACHABLE}
    chan.wait_executed_alike(30)


def test_given_up_score_is_reported_unavailable(start_network: NetworkStarter) -> None:
    chan = _given_up_channel(start_network)

    def all_report_it() -> bool:
        statuses = [chan.score_status(port) for port in chan.ports]
        return all(s["status"] == -1 and GIVEN_UP in s.get("message", "") for s in statuses)

    wait_until(all_report_it, 15, "every peer reporting its given-up SCORE as unavailable")
