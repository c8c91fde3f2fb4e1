"""Validator set changes against adversarial schedules (no byzantine validator).

From a block carrying a new set on, blocks are voted by the old set and the new one together
until the first of the round right after its parent's, which hands the chain over (`ChainTip`).

`HandoverAttack` attacks that hand-over: once the first block carrying the change is certified,
the validators only in the old set hear nobody else; the first peer to finalise it crashes
before it sends anything; the new set's members hear none of one another until a rival block
carrying the change is certified. When the new set alone voted on the carrier's child (before
the joint vote), the old set timed the certified round out, certified a rival block, and the new
set finalised that one too: replacing 3 of 4 validators at once forked 60 of seeds 0-99 that
way, with one crash as the only fault.

`RivalSets` puts two different new sets on rival branches: a quorum of the newest set hears
nobody else once it holds a certified block carrying it. With the new set alone voting on the
carrier's child that quorum finalised the block by itself while the others finalised the rival
(64 of seeds 0-99 forked from 3 validators, 33 of 100 from 6, each set a step that the earlier
quorum-intersection rule accepted).

`SiblingHandover` replaces every validator at once and lets the handover's certificate reach only
the new members, after a sibling of the handover (a child of the carrier in a later round) is
certified: when that sibling put the chain back on the old set, the old members finalised its
branch and the new ones the handover's.
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

    def __init__(self, n: int, seed: int, first: list[int], **network: Any) -> None:
        super().__init__(n, seed, max_delay=0.1, **network)
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
            kept: list[m.Action] = [
                a for a in actions if isinstance(a, m.CommitBlock | m.PersistSafety)
            ]
            super()._execute(node, kept)
            self.crash(node.address)
            self.isolated = True
            return
        super()._execute(node, actions)


def run(seed: int, changes: dict[int, list[int]], **network: Any) -> HandoverAttack:
    """Seven peers, the first four the validators; at each step of `changes` the set becomes the
    listed peers, and the attack on it lasts until the next change. Every step submits
    transactions to a validator and checks safety. Then the attack ends, and the network runs
    until every peer's chain has the last set, or for SETTLE simulated seconds. `network`: the
    Network's options (weights, blocks_per_leader)."""
    net = HandoverAttack(7, seed, first=[0, 1, 2, 3], **network)
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
        sync_stalled(net)
        net.check_safety()
    return net


def sync_stalled(net: Network) -> None:
    """Every peer syncs final blocks, as the shell does when its chain stands still (a validator
    an attack left behind rejects the complaints of members it does not know until its chain has
    the blocks that added them)."""
    for node in net.nodes.values():
        if node.up:
            net._sync(node)


def chain_version(net: Network) -> set[int]:
    """The set versions that vote next on the final chains of the peers that are up."""
    versions = set()
    for node in net.nodes.values():
        if node.up and node.state.tip.next_validators is not None:
            versions.add(node.state.tip.next_validators.version)
    return versions


@pytest.mark.parametrize("attack_seed", [1, 2, 6, 7, 8])
def test_replacing_three_of_four_validators_at_once_survives_the_attack(attack_seed: int) -> None:
    """Seeds that forked when the new set alone voted on the carrier's child: now no fork, and
    every peer's chain reaches the new set."""
    seed = attack_seed
    net = run(seed, {3 + (seed // 4) % 6: [seed % 4, 4, 5, 6]})
    assert chain_version(net) == {2}


def one_at_a_time(seed: int) -> list[list[int]]:
    """The replacement of all but validator seed % 4 in steps: add one, remove one, ..."""
    shared = seed % 4
    old = [i for i in range(4) if i != shared]
    steps: list[list[int]] = []
    members = [0, 1, 2, 3]
    for new, gone in zip([4, 5, 6], old, strict=True):
        members = [*members, new]
        steps.append(sorted(members))
        members = [i for i in members if i != gone]
        steps.append(sorted(members))
    return steps


@pytest.mark.parametrize("attack_seed", range(12))
def test_replacing_validators_one_step_at_a_time_survives_the_attack(attack_seed: int) -> None:
    """The same replacement in steps that each keep an honest validator in every pair of
    quorums (add one, remove one, ...), issued 2.5 s apart: each step is attacked, none forks,
    and once the attack ends every peer's chain reaches the last set (seeds 0-299 all pass)."""
    steps = one_at_a_time(attack_seed)
    net = run(attack_seed, {2 + 5 * i: step for i, step in enumerate(steps)})
    assert chain_version(net) == {len(steps) + 1}


class RivalSets(Network):
    """Validators `first`; a RadioStation that issues `steps` one after another, the set at
    `rival_index` reaching every peer first and the later ones only `lone`'s leader (see
    `run_rivals`). While `holding`, `delayed`'s messages are held; while `parting`, the peers of
    `apart` (the first is `lone`) that hold a certified block carrying the newest set reach no
    peer outside them."""

    def __init__(self, n: int, seed: int, first: list[int], delayed: int, apart: list[int]) -> None:
        super().__init__(n, seed, max_delay=0.05, blocks_per_leader=1)
        self.everyone = self.validators
        self.ids = self.everyone.peer_ids
        self.validators = self.members(1, first)
        self.delayed, self.lone = self.ids[delayed], self.ids[apart[0]]
        self.apart = {self.ids[i] for i in apart}
        self.holding = self.parting = False
        self.held: list[tuple[str, str, Any]] = []
        self.newest = -1  # the version `lone` is cut off for holding
        self.passing = False  # inside deliver(): its rules were applied

    def members(self, version: int, indexes: list[int]) -> ValidatorSet:
        return ValidatorSet(
            CHANNEL, version, tuple(self.everyone.validators[i] for i in indexes)
        ).signed_by(self.issuer)

    def holds_newest(self, address: str) -> bool:
        state = self.nodes[address].state
        if state.tip.next_validators is not None and state.tip.next_validators.version >= (
            self.newest
        ):
            return True
        return any(
            node.certificate is not None
            and node.block.validator_update is not None
            and node.block.validator_update.version == self.newest
            for node in state.tree.nodes.values()
        )

    def cut(self, sender: str, target: str) -> bool:
        return (
            self.parting
            and sender in self.apart
            and target not in self.apart
            and self.holds_newest(sender)
        )

    def _connected(self, a: str, b: str) -> bool:
        if self.passing:
            return True
        if a != b and self.holding and self.delayed in (a, b):
            return False  # no fetch or sync from it either while its messages are held
        if a != b and (self.cut(a, b) or self.cut(b, a)):
            return False
        return super()._connected(a, b)

    def deliver(self, sender: str, target: str, event: Any) -> None:
        if self.holding and sender == self.delayed:
            self.held.append((sender, target, event))
            return
        if sender != target and self.cut(sender, target):
            return
        if self.holding and target == self.delayed and isinstance(event, m.ProposalReceived):
            self.schedule(0.0005, target, event)  # the proposal reaches it before the votes do
            return
        self.passing = True
        try:
            super().deliver(sender, target, event)
        finally:
            self.passing = False


def _with_leader_at(indexes: list[int], position: int, who: int) -> list[int]:
    rest = [i for i in indexes if i != who]
    rest.insert(position % len(indexes), who)
    return rest


def run_rivals(
    seed: int,
    n: int,
    first: list[int],
    steps: list[list[int]],
    rival_index: int,
    delayed: int,
    apart: list[int],
) -> RivalSets | None:
    """Once the network is idle in a round whose next leader is `first[0]` (`lone`): every peer
    gets the sets up to `steps[rival_index]` (its leader in the next round is `delayed`, so its
    carrier's certificate is held), and `lone` alone gets the later ones (it leads the round
    after, and the newest set names it). After 30 simulated seconds the held messages go out to
    the peers outside `apart`, which stays cut off for 30 more; then the network runs until
    every peer's chain has the same set, for 90 simulated seconds at most. Safety is checked
    throughout. None when no such idle round came."""
    net = RivalSets(n, seed, first, delayed, apart)
    lone = apart[0]
    net.start()
    submitter = net.ids[first[1]]
    for _ in range(40):
        net.submit(submitter, 1)
        net.run_until(net.now + 3)
        round_ = net.nodes[net.ids[0]].state.round
        if (
            all(not node.state.has_work() for node in net.nodes.values())
            and all(node.state.round == round_ for node in net.nodes.values())
            and net.validators.leader_at(round_ + 1) == net.lone
        ):
            break
    else:
        return None
    sets = []
    for index, members in enumerate(steps):
        if index == rival_index:
            members = _with_leader_at(members, round_ + 1, delayed)
        if index == len(steps) - 1:
            members = _with_leader_at(members, round_ + 2, lone)
        sets.append(net.members(index + 2, members))
    net.newest = sets[-1].version
    net.holding = net.parting = True
    for validators in reversed(sets[: rival_index + 1]):
        for address in net.ids:
            net.schedule(0.0, address, m.ValidatorsChanged(validators))
    net.run_until(net.now + 0.3)
    for validators in sets[rival_index + 1 :]:
        net.schedule(0.0, net.lone, m.ValidatorsChanged(validators))
    for _ in range(2):
        end = net.now + 30
        while net.now < end:
            net.run_until(net.now + 0.5)
            net.check_safety()
        if net.holding:
            net.holding = False
            for sender, target, event in net.held:
                if target not in net.apart:
                    net.deliver(sender, target, event)
            net.held = []
    net.parting = False
    deadline = net.now + SETTLE
    while net.now < deadline and len(chain_sets(net)) != 1:
        net.run_until(net.now + 1.0)
        sync_stalled(net)
        net.check_safety()
    return net


def chain_sets(net: Network) -> set[ValidatorSet | None]:
    return {node.state.tip.next_validators for node in net.nodes.values() if node.up}


@pytest.mark.parametrize("rival_seed", [0, 2, 3, 4, 6])
def test_rival_branches_carrying_different_sets_do_not_fork_from_three(rival_seed: int) -> None:
    """From {0,1,2}: {0,1,2,3} (its carrier's certificate held with 3's messages) on one branch,
    and, issued after it one step at a time, {0,1,2}, {0,2}, {0} on the other (0 cut off once
    it holds a certified block carrying {0}). Seeds that forked before the joint vote."""
    steps = [[0, 1, 2, 3], [0, 1, 2], [0, 2], [0]]
    net = run_rivals(rival_seed, 4, [0, 1, 2], steps, rival_index=0, delayed=3, apart=[0])
    assert net is not None
    assert len(chain_sets(net)) == 1
    net.check_safety()


@pytest.mark.parametrize("rival_seed", [0, 7, 10])
def test_rival_branches_carrying_different_sets_do_not_fork_from_six(rival_seed: int) -> None:
    """From six validators, removals and additions of one at a time, the rival set at the second
    step; 0, 4 and 5 (a quorum of the newest set) cut off together. Seeds that forked before the
    joint vote."""
    steps = [
        [0, 1, 2, 3, 4],
        [0, 1, 2, 3],
        [0, 1, 2, 3, 4],
        [0, 1, 2, 3, 4, 5],
        [0, 1, 3, 4, 5],
        [0, 1, 4, 5],
    ]
    net = run_rivals(
        rival_seed, 6, [0, 1, 2, 3, 4, 5], steps, rival_index=1, delayed=2, apart=[0, 4, 5]
    )
    assert net is not None
    assert len(chain_sets(net)) == 1
    net.check_safety()


def _mentions(event: Any, hashes: set[bytes]) -> bool:
    """`event` carries a certificate of one of the blocks `hashes`."""
    match event:
        case m.CertificateReceived(qc):
            return qc.block_hash in hashes
        case m.ProposalReceived(block) | m.BlockFetched(block):
            prev = block.header.prev_qc
            return prev is not None and prev.block_hash in hashes
        case m.ComplaintReceived(complaint):
            high = complaint.high_qc
            return high is not None and high.block_hash in hashes
    return False


class SiblingHandover(Network):
    """Eight peers: the first four the validators, then all of them replaced by the other four.
    The schedule splits the carrier's children: the certificate of its child of the very next
    round (the handover) reaches nobody until a sibling of a later round is certified with the
    votes of the new members that never saw it; then the old and the new members are cut apart,
    and only the new ones get the handover's certificate. Had that sibling put the chain back on
    the old set (so that the old set alone voted on its child), each side would finalise its own
    child of the carrier."""

    def __init__(self, seed: int) -> None:
        super().__init__(8, seed, max_delay=0.05, blocks_per_leader=1)
        self.everyone = self.validators
        ids = self.everyone.peer_ids
        self.old, self.new = set(ids[:4]), set(ids[4:])
        self.validators = self.members(1, [0, 1, 2, 3])
        self.carriers: set[bytes] = set()
        self.handovers: set[bytes] = set()
        self.siblings: set[bytes] = set()
        self.held: list[tuple[str, str, Any]] = []
        self.split = False  # a sibling was certified: the sides are apart
        self.attacked = False  # ... at some time during the attack
        self.attacking = True

    def members(self, version: int, indexes: list[int]) -> ValidatorSet:
        chosen = tuple(self.everyone.validators[i] for i in indexes)
        return ValidatorSet(CHANNEL, version, chosen).signed_by(self.issuer)

    def deliver(self, sender: str, target: str, event: Any) -> None:
        if not self.split and _mentions(event, self.handovers):
            self.held.append((sender, target, event))
            return
        if self.attacking and target in self.new and _mentions(event, self.siblings):
            return
        super().deliver(sender, target, event)

    def _execute(self, node: Node, actions: list[m.Action]) -> None:
        for action in actions:
            if isinstance(action, m.BroadcastProposal):
                block = action.block
                update = block.validator_update
                if update is not None and update.version == 2:
                    self.carriers.add(block.hash)
                parent = self._parent(node, block)
                if parent is not None and parent.block.hash in self.carriers:
                    following = parent.block.header.round + 1 == block.header.round
                    (self.handovers if following else self.siblings).add(block.hash)
        super()._execute(node, actions)
        high = node.state.high_qc
        if not self.split and high is not None and high.block_hash in self.siblings:
            self.split = self.attacked = True  # a sibling is certified: cut the sides apart
            self.partition = [set(self.old), set(self.new)]
            for sender, target, event in self.held:
                if target in self.new:
                    super().deliver(sender, target, event)
            self.held = []

    def end_attack(self) -> None:
        """Join the sides, and send what is still held."""
        self.partition = None
        self.split, self.attacking = True, False
        for sender, target, event in self.held:
            super().deliver(sender, target, event)
        self.held = []

    @staticmethod
    def _parent(node: Node, block: Any) -> Any:
        return node.state.tree.get(block.header.prev_hash)


def run_sibling(seed: int) -> SiblingHandover:
    """Transactions to both sides every half second while the attack lasts (20 simulated
    seconds, safety checked throughout); then the sides are joined and the network runs until
    every peer's chain is on the new set, for SETTLE simulated seconds at most."""
    net = SiblingHandover(seed)
    net.start()
    rng = random.Random(seed)
    net.submit(rng.choice(sorted(net.old)), 2)
    net.run_until(2.0)
    net.issue(net.members(2, [4, 5, 6, 7]), max_delay=0.05)
    for _ in range(40):
        net.submit(rng.choice(sorted(net.old)), 1)
        net.submit(rng.choice(sorted(net.new)), 1)
        net.run_until(net.now + 0.5)
        net.check_safety()
    net.end_attack()
    deadline = net.now + SETTLE
    while net.now < deadline and chain_version(net) != {2}:
        net.run_until(net.now + 1.0)
        sync_stalled(net)
        net.check_safety()
    return net


@pytest.mark.parametrize("sibling_seed", [0, 2, 3, 4, 7])
def test_a_sibling_of_the_handover_does_not_put_the_chain_back_on_the_old_set(
    sibling_seed: int,
) -> None:
    """Seeds in which a sibling of the handover is certified, and which forked when such a
    sibling put the chain back on the old set (31 of seeds 0-59; 0 of 0-199 now): no fork, and
    once the sides are joined every peer's chain is on the new set."""
    net = run_sibling(sibling_seed)
    assert net.attacked
    assert chain_version(net) == {2}
