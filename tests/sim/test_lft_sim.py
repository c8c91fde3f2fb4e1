"""Seeded LFT simulation: random faults per seed, safety always, liveness once faults heal.

Replay a failing seed with: .venv/bin/pytest tests/sim/test_lft_sim.py --seed N
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from loopchain import configure_default
from loopchain.types.transaction import Transaction
from loopchain.types.validators import ValidatorSet
from tests.sim.harness import BLOCKS_PER_LEADER, BYZANTINE, CHANNEL, Network

LIVENESS_BOUND = 90.0  # simulated seconds after the faults heal
# rounds per leader a seed draws: short turns change leaders often; loopchain's default is 20
TURNS = (BLOCKS_PER_LEADER, int(configure_default.LEADER_BLOCK_CREATION_LIMIT))


@dataclass(frozen=True)
class Scenario:
    """The faults one seed draws."""

    n: int
    weights: list[int] | None
    groups: dict[int, str] | None
    group_weights: dict[str, int] | None
    byzantine: dict[int, str]
    loss: float
    duplicate: float
    max_delay: float
    crash: bool
    partition: bool
    blocks_per_leader: int
    reconfigure: bool  # an extra validator joins the set (at step 6) and leaves it (at step 26)

    def describe(self) -> str:
        return (
            f"n={self.n} weights={self.weights} groups={self.groups} byzantine={self.byzantine} loss={self.loss:.2f} "
            f"dup={self.duplicate:.2f} delay<={self.max_delay:.2f} crash={self.crash} "
            f"partition={self.partition} blocks_per_leader={self.blocks_per_leader} "
            f"reconfigure={self.reconfigure}"
        )


def draw(seed: int) -> Scenario:
    rng = random.Random(seed ^ 0x5EED)
    kind = seed % 4
    # 4 and 7 equal validators; 5 weighted (one of weight 3); 7 with a group of 4 (unit weight 2)
    n, weights, groups, group_weights = [
        (4, None, None, None),
        (7, None, None, None),
        (5, [3, 1, 1, 1, 1], None, None),
        (7, None, {3: "g", 4: "g", 5: "g", 6: "g"}, {"g": 2}),
    ][kind]
    faulty_budget = {0: 1, 1: 2, 2: 1, 3: 1}[kind]  # byzantine plus crashed weight stays below 1/3
    byzantine: dict[int, str] = {}
    crash = rng.random() < 0.5
    byz_count = rng.randint(0, faulty_budget - (1 if crash else 0))
    first_small = 1 if weights else 0  # never make the weight-3 validator byzantine
    for index in rng.sample(range(first_small, n), byz_count):
        byzantine[index] = rng.choice(BYZANTINE)
    return Scenario(
        n=n,
        weights=weights,
        groups=groups,
        group_weights=group_weights,
        byzantine=byzantine,
        loss=rng.choice([0.0, 0.05, 0.15]),
        duplicate=rng.choice([0.0, 0.1]),
        max_delay=rng.choice([0.02, 0.1, 0.3]),
        crash=crash,
        partition=rng.random() < 0.4,
        # drawn last: the draws before them stay as they were when they came
        blocks_per_leader=rng.choice(TURNS),
        reconfigure=rng.random() < 0.3,
    )


def run(seed: int, blocks_per_leader: int | None = None) -> Network:
    """Run seed `seed`'s scenario (with `blocks_per_leader` instead of the drawn one, if given)."""
    s = draw(seed)
    extra = 1 if s.reconfigure else 0  # a peer outside the set until it joins
    net = Network(
        s.n + extra,
        seed,
        weights=s.weights + [1] * extra if s.weights else None,
        groups=s.groups,
        group_weights=s.group_weights,
        loss=s.loss,
        duplicate=s.duplicate,
        max_delay=s.max_delay,
        byzantine=s.byzantine,
        blocks_per_leader=blocks_per_leader or s.blocks_per_leader,
    )
    everyone = net.validators
    newcomer = everyone.validators[-1].peer_id if extra else None
    if newcomer:
        net.validators = _issued(net, 1, everyone, without=newcomer)
    rng = random.Random(seed)
    net.start()
    honest = [n.address for n in net.honest() if n.address != newcomer]
    crashed = rng.choice(honest[1:]) if s.crash else None  # keep the heavy validator up
    steady = [a for a in honest if a != crashed]
    accepted: list[Transaction] = []
    for step in range(40):
        # submissions to peers that stay up must never be lost
        accepted += net.submit(rng.choice(steady), rng.randint(1, 5))
        if crashed and step == 8:
            net.crash(crashed)
        if crashed and step == 25:
            net.restart(crashed)
        if newcomer and step in (6, 26):  # it joins, then leaves
            issued = _issued(net, 2 if step == 6 else 3, everyone, newcomer if step == 26 else None)
            net.issue(issued, max_delay=0.3)
        if s.partition and step == 12:
            side = set(rng.sample(list(net.nodes), len(net.nodes) // 2))
            net.partition = [side, set(net.nodes) - side]
        if step == 20:
            net.heal()
        net.run_until(net.now + 0.5)
        net.check_safety()
        net.check_reminders()
    net.loss = 0.0
    net.heal()

    def final_sets() -> set[ValidatorSet | None]:
        return {n.state.tip.next_validators for n in net.honest() if n.up}

    def settled() -> bool:  # a set change may take rounds after the transactions' last block
        return net.committed_everywhere(accepted) and (
            not newcomer or final_sets() == {net.validators}
        )

    deadline = net.now + LIVENESS_BOUND
    while net.now < deadline and not settled():
        net.run_until(net.now + 1.0)
        net.sync_auditors()
        net.check_safety()
    assert net.committed_everywhere(accepted), "liveness: transactions not final after healing"
    if newcomer:
        assert final_sets() == {net.validators}, "the set changes are final everywhere"
    return net


def _issued(
    net: Network, version: int, everyone: ValidatorSet, without: str | None
) -> ValidatorSet:
    """The RadioStation's set `version`: every validator of `everyone` but `without`."""
    members = tuple(v for v in everyone.validators if v.peer_id != without)
    return ValidatorSet(CHANNEL, version, members, groups=everyone.groups).signed_by(net.issuer)


def test_lft_simulation(seed: int) -> None:
    try:
        net = run(seed)
    except AssertionError as exc:
        raise AssertionError(
            f"seed {seed} failed ({draw(seed).describe()}): {exc}\n"
            f"replay: .venv/bin/pytest tests/sim/test_lft_sim.py --seed {seed}"
        ) from exc
    net.check_safety()
    assert max(len(n.chain) for n in net.honest()) > 0


def test_a_timeout_certificate_older_than_rounds_certified_since_makes_no_fork() -> None:
    """Seed 645 with loopchain's default 20 rounds per leader (LEADER_BLOCK_CREATION_LIMIT), no
    byzantine validator: before 3101400 two honest validators finalised different blocks at
    height 67. A timeout certificate moves on to the next leader's turn, past rounds certified
    meanwhile; its complaints, older than those rounds, reported a lower certificate than the
    lock of validators that voted in them, and those voted for the next leader's block on it."""
    run(645, blocks_per_leader=20)  # check_safety after every step


def test_a_round_certified_and_timed_out_at_once_does_not_halt_the_channel() -> None:
    """Seed 2483 (7 validators, 4 in a group, one inflating its complaints, 15% loss): round 12
    was certified and timed out. Five validators entered round 13 on the certificate, two entered
    round 15 on the timeout certificate, and neither side held a quorum; complaints about round 12
    no longer counted on the first side, and the second side did not send them again. The channel
    halted for good until the complaints counted while their certificate would move a peer on."""
    run(2483, blocks_per_leader=BLOCKS_PER_LEADER)


def test_complaints_about_the_rounds_a_validator_left_do_not_crowd_out_its_own_round() -> None:
    """Seed 291 (7 validators, 4 in a group, one flooding complaints, 20 rounds per leader): at
    2ad622d, which kept the tallies of the rounds of the turn a validator had left, the flooder's
    complaints about them filled the bounded map and the complaints about the round it was in
    were dropped: the channel halted."""
    run(291)
