"""Leaders' turns and liveness. A block is final when the rounds after it are certified too, so
with turns of one or two rounds (LEADER_BLOCK_CREATION_LIMIT) it takes two or three leaders in a
row that are up. Validators of equal weight always leave such a row up (less than a third of them
down cannot take a place of every row of three); with unequal weights or groups, validators
holding less than a third of the weight can sit at every other place of the rotation. Such a set
has each leader lead at least three rounds: one leader that is up then makes blocks final alone
(a review stopped finality for good with weights 3,1,1,1,1 and two of weight 1 down)."""

from __future__ import annotations

import pytest

from loopchain.consensus.rules import leader_of, round_after_timeout, turn_of
from loopchain.types.validators import Group, JointSet, Validator, ValidatorSet
from tests.sim import test_set_changes as set_changes
from tests.sim.harness import CHANNEL, Network
from tests.sim.test_lft_sim import run

SIMULATED_S = 60.0


def _alternating(shape: str) -> dict:
    """Six validators, the light ones at every other place (weight 3 of 12 in all, below a third):
    heavy ones of weight 3, or the heavy ones as one group of weight 9."""
    if shape == "weights":
        return {"weights": [3, 1, 3, 1, 3, 1]}
    return {"groups": {0: "g", 2: "g", 4: "g"}, "group_weights": {"g": 9}}


@pytest.mark.parametrize("blocks_per_leader", [1, 2])
@pytest.mark.parametrize("shape", ["weights", "groups"])
def test_validators_below_a_third_of_the_weight_at_every_other_place_do_not_stop_finality(
    shape: str, blocks_per_leader: int
) -> None:
    net = Network(6, seed=5, blocks_per_leader=blocks_per_leader, **_alternating(shape))
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


@pytest.mark.parametrize("blocks_per_leader", [1, 2, 3, 20])
def test_equal_weights_keep_the_configured_turn_and_others_lead_three_rounds_at_least(
    blocks_per_leader: int,
) -> None:
    even = Network(4, seed=1).validators
    weighted = Network(4, seed=1, weights=[2, 1, 1, 1]).validators
    grouped = Network(4, seed=1, groups={0: "g", 1: "g"}).validators
    assert turn_of(even, blocks_per_leader) == blocks_per_leader
    assert turn_of(weighted, blocks_per_leader) == max(blocks_per_leader, 3)
    assert turn_of(grouped, blocks_per_leader) == max(blocks_per_leader, 3)
    # rotation and the round after a timeout follow the set's turn
    turn = turn_of(weighted, blocks_per_leader)
    assert [leader_of(weighted, r, blocks_per_leader) for r in range(turn + 1)] == [
        weighted.leader_at(0)
    ] * turn + [weighted.leader_at(1)]
    assert round_after_timeout(0, turn) == round_after_timeout(turn - 1, turn) == turn


def test_a_pending_set_leads_by_the_turn_of_the_set_that_leads() -> None:
    """While a set is pending the chain's set leads (JointSet.leader_at): its turn too, whatever
    the pending set's weights."""
    even = Network(4, seed=1).validators
    members = tuple(Validator(v.peer_id, 2 if i == 0 else 1) for i, v in enumerate(even.validators))
    weighted = ValidatorSet(CHANNEL, 2, members)
    assert turn_of(JointSet(even, weighted), 1) == 1
    assert turn_of(JointSet(weighted, even), 1) == 3
    grouped = ValidatorSet(
        CHANNEL,
        3,
        tuple(Validator(v.peer_id, 1, "g" if i < 2 else "") for i, v in enumerate(even.validators)),
        groups=(Group("g", 1),),
    )
    assert turn_of(grouped, 2) == 3


@pytest.mark.parametrize("blocks_per_leader", [1, 2])
@pytest.mark.parametrize("scenario", [2, 3, 6, 7])
def test_seeded_faults_with_short_turns_in_weighted_and_grouped_sets(
    scenario: int, blocks_per_leader: int
) -> None:
    """The seeded simulation's weighted (seed % 4 == 2) and grouped (3) scenarios, byzantine
    messages, losses, a crash and partitions, with turns of the set's length rather than the
    setting: safe throughout and live once healed (a sweep of 400 seeds at each setting passed)."""
    run(scenario, blocks_per_leader=blocks_per_leader)  # its seed


@pytest.mark.parametrize("scenario", [8, 29, 33])
def test_a_handover_to_longer_turns_both_certified_and_timed_out_does_not_split_the_rounds(
    scenario: int,
) -> None:
    """Equal validators with turns of 2 hand over to a set where one weighs 2 (turns of 3),
    each step attacked (test_set_changes.HandoverAttack). The handover's round was certified
    and timed out: validators holding its certificate counted the timeout by the new set's turn
    (to round 9), the others by the old set's (to 10), a third against two thirds, and neither
    side could move again (review, 1,000 simulated seconds). A round's turn is its leader's."""
    steps = set_changes.one_at_a_time(scenario)
    weights = [1, 1, 1, 1, 2, 1, 1]  # the fifth peer, which joins first, weighs 2
    changes = {2 + 5 * i: step for i, step in enumerate(steps)}
    net = set_changes.run(scenario, changes, weights=weights, blocks_per_leader=2)
    assert set_changes.chain_version(net) == {len(steps) + 1}
