"""Validator set changes against an adversarial schedule (no byzantine validator).

A block carrying a new set is certified by the old set and its child by the new one. The schedule
attacks that hand-over: once the first block carrying the change is certified, the validators
only in the old set hear nobody else; the first peer to finalise it crashes before it sends
anything; the new set's members hear none of one another until a rival block carrying the change
is certified. When no honest validator is in both the old set's complaining quorum and the new
set's voting quorum, the old set times the certified round out, certifies a rival block, and the
new set finalises that one too: before `unsafe_change`, replacing 3 of 4 validators at once
forked most seeds this way (60 of seeds 0-99), with one crash as the only fault.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from loopchain.consensus import messages as m
from loopchain.types.validators import ValidatorSet
from tests.sim.harness import CHANNEL, Network, Node

STEPS = 40
SETTLE = 90.0  # simulated seconds after the attack ends


class HandoverAttack(Network):
    """A network of `n` peers whose schedule attacks each set change (see the module doc)."""

    def __init__(self, n: int, seed: int, first: list[int]) -> None:
        super().__init__(n, seed, max_delay=0.1)
        self.everyone = self.validators
        self.validators = self.members(1, first)
        self.old_only: set[str] = set()
        self.new_side: set[str] = set()
        self.changing_to = 0  # the version under attack (0: none)
        self.carrying: set[bytes] = set()  # blocks carrying that version
        self.certified: bytes | None = None  # the first of them certified
        self.victim: str | None = None  # the first peer to finalise it
        self.isolated = False  # the new set's members hear none of one another

    def members(self, version: int, indexes: list[int]) -> ValidatorSet:
        chosen = tuple(self.everyone.validators[i] for i in indexes)
        return ValidatorSet(CHANNEL, version, chosen).signed_by(self.issuer)

    def change(self, validators: ValidatorSet) -> None:
        """Issue `validators` and attack its hand-over (the last attack ends first)."""
        self.lift()
        old = {v.peer_id for v in self.validators.validators}
        new = {v.peer_id for v in validators.validators}
        self.old_only, self.new_side = old - new, new
        self.changing_to = validators.version
        self.issue(validators, max_delay=0.2)

    def sync_stalled(self) -> None:
        """Every peer syncs final blocks, as the shell does when its chain stands still (a
        validator the attack left behind rejects the complaints of members it does not know
        until its chain has the blocks that added them)."""
        for node in self.nodes.values():
            if node.up:
                self._sync(node)

    def lift(self) -> None:
        """End the attack: messages flow again and its crashed peer restarts."""
        if self.victim is not None:
            self.restart(self.victim)
        self.old_only, self.new_side, self.changing_to = set(), set(), 0
        self.carrying, self.certified, self.victim, self.isolated = set(), None, None, False

    def deliver(self, sender: str, target: str, event: Any) -> None:
        if self.certified is not None and target in self.old_only and sender not in self.old_only:
            return
        if self.isolated and sender in self.new_side and target in self.new_side:
            return
        super().deliver(sender, target, event)

    def _execute(self, node: Node, actions: list[m.Action]) -> None:
        for action in actions:
            match action:
                case m.BroadcastProposal(block) if block.validator_update is not None and (
                    block.validator_update.version == self.changing_to
                ):
                    self.carrying.add(block.hash)
                case m.CommitBlock(block) if block.hash in self.carrying and self.victim is None:
                    self.victim = node.address
        high = node.state.high_qc
        if high is not None and high.block_hash in self.carrying:
            if self.certified is None:
                self.certified = high.block_hash
            elif high.block_hash != self.certified and node.address in self.new_side:
                self.isolated = False  # a rival is certified: let the new set finalise it
        if node.address == self.victim and node.up:
            # it crashes having saved the block, before anything it would send leaves
            kept = [a for a in actions if isinstance(a, m.CommitBlock | m.PersistSafety)]
            super()._execute(node, kept)
            self.crash(node.address)
            self.isolated = True
            return
        super()._execute(node, actions)


def run(seed: int, changes: dict[int, list[int]]) -> HandoverAttack:
    """Seven peers, the first four the validators; at each step of `changes` the set becomes the
    listed peers, and the attack on it lasts until the next change. Every step submits
    transactions to a validator and checks safety. Then the attack ends, and the network runs
    until every peer's chain has the last set, or for SETTLE simulated seconds."""
    net = HandoverAttack(7, seed, first=[0, 1, 2, 3])
    rng = random.Random(seed)
    net.start()
    for step in range(STEPS):
        if step in changes:
            net.change(net.members(net.validators.version + 1, changes[step]))
        voters = [a for a in net.validators.peer_ids if net.nodes[a].up and a not in net.old_only]
        net.submit(rng.choice(voters), 2)
        net.run_until(net.now + 0.5)
        net.check_safety()
    net.lift()
    deadline = net.now + SETTLE
    while net.now < deadline and chain_version(net) != {net.validators.version}:
        net.run_until(net.now + 1.0)
        net.sync_stalled()
        net.check_safety()
    return net


def chain_version(net: Network) -> set[int]:
    """The set versions that vote next on the final chains of the peers that are up."""
    versions = set()
    for node in net.nodes.values():
        if node.up and node.state.tip.next_validators is not None:
            versions.add(node.state.tip.next_validators.version)
    return versions


@pytest.mark.parametrize("attack_seed", [1, 2, 6, 7, 8])
def test_replacing_three_of_four_validators_at_once_is_refused_not_forked(attack_seed: int) -> None:
    """Seeds that forked before `unsafe_change`: now no leader carries the set, no fork, and the
    chain keeps its set while naming the refusal."""
    seed = attack_seed
    net = run(seed, {3 + (seed // 4) % 6: [seed % 4, 4, 5, 6]})
    assert chain_version(net) == {1}
    refusals = [r for n in net.nodes.values() for r in n.rejected if "not carried" in r]
    assert refusals and "change fewer validators at a time" in refusals[0]


@pytest.mark.parametrize("attack_seed", range(12))
def test_replacing_validators_one_step_at_a_time_survives_the_attack(attack_seed: int) -> None:
    """The same replacement in steps that each keep an honest validator in every pair of
    quorums (add one, remove one, ...), issued 2.5 s apart: each step is attacked, none forks,
    and once the attack ends every peer's chain reaches the last set (seeds 0-299 all pass)."""
    seed = attack_seed
    shared = seed % 4
    old = [i for i in range(4) if i != shared]
    steps: list[list[int]] = []
    members = [0, 1, 2, 3]
    for new, gone in zip([4, 5, 6], old, strict=True):
        members = [*members, new]
        steps.append(sorted(members))
        members = [i for i in members if i != gone]
        steps.append(sorted(members))
    net = run(seed, {2 + 5 * i: step for i, step in enumerate(steps)})
    assert chain_version(net) == {len(steps) + 1}
