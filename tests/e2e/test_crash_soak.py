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

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._crashes import Crashes, Load, check_history, crash_network, leader
from tools.procs import wait_until

PEERS = 4
CYCLES = 20
LEADER_EVERY = 3  # cycles 0, 3, 6, ... kill the peer that leads at that moment
CLIENTS = 8
FRESH_ACKS = 3  # each peer acknowledges this many more before the next kill: it is under load
CONFIG = {"LEADER_BLOCK_CREATION_LIMIT": 2}  # leaders change often: every peer proposes soon
SEED = int(os.environ.get("CRASH_SOAK_SEED") or random.SystemRandom().randrange(2**32))
STEP_DEADLINE = 300.0  # for any one step of a cycle (progress, restart, fresh acknowledgements)


@pytest.fixture
def crashes(tmp_path: Path) -> Iterator[Crashes]:
    with crash_network(tmp_path, CONFIG, PEERS) as network:
        yield network


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
        victim = wait_until(lambda: leader(net, ports), STEP_DEADLINE, "a leader")
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
    ports = crashes.ports
    rng = random.Random(SEED)
    print(f"\ncrash soak: seed {SEED} (CRASH_SOAK_SEED={SEED} repeats the random choices)")
    began = time.monotonic()
    load = Load(ports, CLIENTS, SEED)
    load.start()
    try:
        leader_kills = sum(_cycle(crashes, load, rng, cycle) for cycle in range(CYCLES))
    finally:
        load.stop()
    assert not load.unexpected, (
        f"answers neither 200, 503 nor an unknown outcome: {load.unexpected[:5]}"
    )
    summary = check_history(crashes, load.acknowledged, STEP_DEADLINE)
    print(
        f"crash soak summary: seed {SEED}, cycles {CYCLES}, leader kills {leader_kills}, "
        f"{summary}, 503 {load.outcomes['503']}, "
        f"connection errors {load.outcomes['connection error']}, "
        f"timeouts {load.outcomes['timeout']}, duration {time.monotonic() - began:.0f} s"
    )
    print(f"crash soak 503 answers by message: {load.refusals.most_common(4)}")
