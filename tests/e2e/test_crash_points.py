"""Acknowledged means kept: kill -9 of a peer right after it answered, ten times, loses nothing;
and at each named fail point (LOOPCHAIN_FAILPOINTS) a peer that kills itself comes back to the
same tip and state root as the others, with no validator signing two different votes in a round
and nothing acknowledged lost (the real radiostation.py and peer.py, with their children)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from loopchain import failpoints
from tests.procs import LocalNetwork, http, post_json, wait_until

PEERS = 4
CONFIG = {"LEADER_BLOCK_CREATION_LIMIT": 2}  # leaders change often: every peer proposes soon
DOUBLE_VOTE = "signed two different votes"


class Crashes:
    """A four-peer network and what its clients were told was accepted."""

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
        with _environment(failpoints.ENV, points):
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
        for proc in self.net.procs:
            assert DOUBLE_VOTE not in proc.log_text(), f"{proc.name}: a double vote"


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashes]:
    net = LocalNetwork(tmp_path_factory.mktemp("crash_points"), CONFIG)
    try:
        net.start_radiostation()
        for _ in range(PEERS):
            net.start_peer()

        def ready() -> bool:
            return all(net.status(p)["validator_count"] == PEERS for p in net.peers)

        wait_until(ready, 60, "four peers that know the four validators")
        yield Crashes(net)
    finally:
        net.stop_and_check()


def test_acknowledged_transactions_survive_kill_9_right_after_the_answer(
    crashes: Crashes,
) -> None:
    for round_ in range(10):
        port = crashes.ports[round_ % PEERS]
        crashes.submit(port, f"kill-9 round {round_}")
        crashes.net.peers[port].kill9()  # at once: gossip may not have left yet
        crashes.start(port)
    crashes.check()


def _die_at(crashes: Crashes, port: int, point: str, drive: list[int]) -> None:
    """Wait until the peer on `port` kills itself at `point`, submitting to `drive` meanwhile."""
    proc = crashes.net.peers[port]
    count = iter(range(1_000_000))

    def dead() -> bool:
        if not proc.alive:
            return True
        target = drive[next(count) % len(drive)]
        with contextlib.suppress(OSError, ValueError):  # the victim may die mid-request
            if target == port:
                http("POST", f"{crashes.net.rest(port)}/api/v1/transactions", b'{"to": "victim"}')
            else:
                crashes.submit(target, point)
        return not proc.alive

    wait_until(dead, 120, f"peer {port} to reach fail point {point}")
    assert proc.popen is not None and proc.popen.returncode == -signal.SIGKILL
    assert f"fail point {point} reached" in proc.log_text()


@pytest.mark.parametrize("point", sorted(set(failpoints.POINTS) - {"sync-write"}))
def test_a_peer_killed_at_a_fail_point_comes_back_in_agreement(
    crashes: Crashes, point: str
) -> None:
    port = crashes.ports[1]
    others = [p for p in crashes.ports if p != port]
    crashes.net.peers[port].stop()
    crashes.start(port, point, wait=False)
    drive = [port] if point == "intake-appended" else others
    _die_at(crashes, port, point, drive)
    crashes.start(port)
    if point == "intake-appended":  # synced, then killed before the answer: kept all the same
        replayed = re.search(r"intake log: (\d+) acknowledged", crashes.net.peers[port].log_text())
        assert replayed and int(replayed.group(1)) >= 1
    crashes.submit(port, f"after {point}")
    crashes.check()


def test_a_peer_killed_between_two_blocks_it_catches_up_on_comes_back_in_agreement(
    crashes: Crashes,
) -> None:
    port = crashes.ports[2]
    others = [p for p in crashes.ports if p != port]
    crashes.net.peers[port].stop()
    start = max(crashes.net.height(p) for p in others)
    wait_until(
        lambda: (
            crashes.submit(others[0], "while away") and crashes.net.height(others[0]) > start + 3
        ),
        60,
        "blocks the stopped peer will have to catch up on",
    )
    crashes.start(port, "sync-write", wait=False)
    _die_at(crashes, port, "sync-write", others)
    crashes.start(port)
    crashes.check()
