"""Leaders' turns and liveness. A block is final when the rounds after it are certified too, so
with turns of one or two rounds (LEADER_BLOCK_CREATION_LIMIT) it takes three or two leaders in a
row that are up. Validators of equal weight always leave such a row up (less than a third of
them down cannot take a place of every row), but validators holding less than a third of unequal
weights (or groups) can sit at every other place of the rotation: a review stopped finality for
good with weights 3,1,1,1,1 and two of weight 1 down. A peer's turns are 3 rounds at least
(`rules.turn_for`): one leader that is up then makes blocks final alone. One turn for every set:
turns that depended on the set's weights split the validators around a set change (two reviews).
"""

from __future__ import annotations

import pytest

from loopchain.consensus.rules import MIN_TURN, turn_for
from tests.sim import test_set_changes as set_changes
from tests.sim.harness import Network
from tests.sim.test_lft_sim import run

SIMULATED_S = 60.0


def _alternating(shape: str) -> dict:
    """Six validators, the light ones at every other place (weight 3 of 12 in all, below a third):
    heavy ones of weight 3, or the heavy ones as one group of weight 9."""
    if shape == "weights":
        return {"weights": [3, 1, 3, 1, 3, 1]}
    return {"groups": {0: "g", 2: "g", 4: "g"}, "group_weights": {"g": 9}}


def test_a_limit_below_three_rounds_is_taken_as_three() -> None:
    assert [turn_for(limit) for limit in (1, 2, 3, 4, 20)] == [MIN_TURN, MIN_TURN, 3, 4, 20]


@pytest.mark.parametrize("limit", [1, 2])
@pytest.mark.parametrize("shape", ["weights", "groups"])
def test_validators_below_a_third_of_the_weight_at_every_other_place_do_not_stop_finality(
    shape: str, limit: int
) -> None:
    """With the limit's own turns (1 or 2 rounds) no transaction became final here."""
    net = Network(6, seed=5, blocks_per_leader=turn_for(limit), **_alternating(shape))
    addresses = [v.peer_id for v in net.validators.validators]
    assert not net.validators.exceeds_third(addresses[1::2])  # the down ones hold less than 1/3
    for address in addresses[1::2]:
        net.crash(address)
    net.start()
    accepted = net.submit(addresses[0], 5) + net.submit(addresses[2], 5)
    deadline = net.now + SIMULATED_S
    while net.now < deadline and not net.committed_everywhere(accepted):
        net.run_until(net.now + 1.0)
        net.check_safety()
    assert net.committed_everywhere(accepted), "no block final with a third of the weight down"


@pytest.mark.parametrize("scenario", [8, 29, 33])
def test_set_changes_between_equal_and_unequal_weights_under_attack_keep_going(
    scenario: int,
) -> None:
    """Equal validators hand over to a set where one weighs 2 and back, each step attacked
    (test_set_changes.HandoverAttack), with a limit of 2: when the turn followed the set's
    weights (2 rounds, then 3), the handover's round both certified and timed out split the
    validators, a third in round 9 and the rest in round 10, for good (review)."""
    steps = set_changes.one_at_a_time(scenario)
    weights = [1, 1, 1, 1, 2, 1, 1]  # the fifth peer, which joins first, weighs 2
    changes = {2 + 5 * i: step for i, step in enumerate(steps)}
    net = set_changes.run(scenario, changes, weights=weights, blocks_per_leader=turn_for(2))
    assert set_changes.chain_version(net) == {len(steps) + 1}


@pytest.mark.parametrize("scenario", [2, 3, 6, 7])
def test_seeded_faults_in_weighted_and_grouped_sets_with_a_short_limit(scenario: int) -> None:
    """The seeded simulation's weighted (seed % 4 == 2) and grouped (3) scenarios, byzantine
    messages, losses, a crash and partitions, with a peer's turns for a limit of 1: safe
    throughout and live once healed."""
    run(scenario, blocks_per_leader=turn_for(1))  # its seed
