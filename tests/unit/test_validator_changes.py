"""Validator set changes: the children of a block carrying a new set are voted by both sets
(`JointSet`), and the chain takes the new set through such a child of the very next round
(`ChainTip`); the tip rebuilt from a store has the sets the chain had; leaders carry the newest
set the RadioStation issued."""

from __future__ import annotations

import itertools
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from loopchain.blockchain.block_store import BlockStore
from loopchain.blockchain.chain import (
    ChainTip,
    Limits,
    check_certificate,
    check_extends,
    check_proposal_bounds,
)
from loopchain.blockchain.mempool import TxPool
from loopchain.blockchain.restore import restore_tip
from loopchain.consensus import messages as m
from loopchain.consensus.rules import SafetyRules
from loopchain.consensus.state import ChannelConsensus, ConsensusConfig
from loopchain.storage.memory import MemoryStore
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction
from loopchain.types.validators import (
    MIN_RATIO,
    Group,
    JointSet,
    Validator,
    ValidatorSet,
)
from loopchain.types.vote import QuorumCertificate, Vote
from tests.sim.harness import CHANNEL, Network

SIGNERS = [Signer((i + 1).to_bytes(32, "big")) for i in range(12)]
IDS = [s.address for s in SIGNERS]
BY_ID = dict(zip(IDS, SIGNERS, strict=True))
ISSUER = Signer((99).to_bytes(32, "big"))
LIMITS = Limits(max_block_txs=10, max_block_bytes=1 << 20, max_skew_us=1 << 60, ratio=MIN_RATIO)


def members(
    version: int,
    indexes: list[int],
    weights: dict[int, int] | None = None,
    groups: dict[int, str] | None = None,
    group_weights: dict[str, int] | None = None,
) -> ValidatorSet:
    weights, groups = weights or {}, groups or {}
    chosen = tuple(Validator(IDS[i], weights.get(i, 1), groups.get(i, "")) for i in indexes)
    named = sorted({groups[i] for i in indexes if i in groups})
    units = tuple(Group(g, (group_weights or {}).get(g, 1)) for g in named)
    return ValidatorSet(CHANNEL, version, chosen, groups=units).signed_by(ISSUER)


@st.composite
def set_pairs(draw: st.DrawFn) -> tuple[ValidatorSet, ValidatorSet]:
    pool = list(range(9))
    old = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=7, unique=True))
    new = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=7, unique=True))
    weights = {i: draw(st.integers(1, 4)) for i in pool} if draw(st.booleans()) else {}
    grouped = draw(st.booleans())
    groups = {i: "g" for i in draw(st.sets(st.sampled_from(pool), max_size=4))} if grouped else {}
    group_weights = {"g": draw(st.integers(1, 3))}
    # a set that names a group needs members of it: keep the group only where it has some
    old_groups = {i: g for i, g in groups.items() if i in old}
    new_groups = {i: g for i, g in groups.items() if i in new}
    return (
        members(1, old, weights, old_groups, group_weights),
        members(2, new, weights, new_groups, group_weights),
    )


@settings(max_examples=300, deadline=None)
@given(
    set_pairs(),
    st.sets(st.sampled_from(range(9))),
    st.sampled_from([MIN_RATIO, Fraction(3, 4)]),
)
def test_a_joint_quorum_is_a_quorum_of_each_set(
    pair: tuple[ValidatorSet, ValidatorSet], voters: set[int], ratio: Fraction
) -> None:
    old, new = pair
    joint = JointSet(old, new)
    ids = [IDS[i] for i in voters]
    assert joint.has_quorum(ids, ratio) == (
        old.has_quorum(ids, ratio) and new.has_quorum(ids, ratio)
    )
    assert joint.exceeds_third(ids, ratio) == (
        old.exceeds_third(ids, ratio) or new.exceeds_third(ids, ratio)
    )
    assert set(joint.peer_ids) == set(old.peer_ids) | set(new.peer_ids)
    assert len(joint.peer_ids) == len(set(joint.peer_ids))
    assert all((peer in joint) == (peer in old or peer in new) for peer in IDS[:9])
    assert joint.leader_at(5) == old.leader_at(5)
    assert joint.hash not in (old.hash, new.hash, JointSet(new, old).hash)


# ------------------------------------------------------------------ a chain of real blocks


def _certificate(block: Block, voters: list[str]) -> QuorumCertificate:
    votes = [
        Vote.create(CHANNEL, block.height, block.header.round, block.hash, BY_ID[voter])
        for voter in voters
    ]
    return QuorumCertificate.from_votes(votes)


class Chain:
    """Blocks made and certified as a channel would, each checked against its parent point."""

    def __init__(self, first: ValidatorSet) -> None:
        self.points = [ChainTip(CHANNEL)]
        self.blocks: list[tuple[Block, QuorumCertificate]] = []
        self.extend(0, update=first)

    @property
    def tip(self) -> ChainTip:
        return self.points[-1]

    def make(
        self,
        round_: int,
        update: ValidatorSet | None = None,
        *,
        voters_named: bytes | None = None,
    ) -> Block:
        """The next block: voted by the tip's child voters unless `voters_named` says another."""
        tip = self.tip
        if tip.height < 0:
            assert update is not None
            named = update.hash
        else:
            assert tip.child_voters is not None
            named = voters_named or tip.child_voters.hash
        return Block.create(
            channel=CHANNEL,
            height=tip.height + 1,
            round_=round_,
            prev_hash=tip.block_hash,
            prev_qc=self.blocks[-1][1] if self.blocks else None,
            transactions=[],
            timestamp=1_000 + round_,
            leader=SIGNERS[0],
            next_leader=IDS[0],
            validators_hash=named,
            validator_update=update,
        )

    def add(self, block: Block, voters: list[str] | None = None) -> QuorumCertificate:
        tip = self.tip
        assert check_extends(tip, block, ISSUER.address, MIN_RATIO) is None
        voting = tip.voting_set_for(block)
        assert voting is not None
        qc = _certificate(block, voters if voters is not None else voting.peer_ids)
        assert check_certificate(tip, block, qc, MIN_RATIO) is None
        self.blocks.append((block, qc))
        self.points.append(tip.advance(block))
        return qc

    def extend(self, round_: int, update: ValidatorSet | None = None) -> ChainTip:
        self.add(self.make(round_, update))
        return self.tip


V1 = members(1, [0, 1, 2, 3])
V2 = members(2, [0, 4, 5, 6])  # three of four replaced at once
V3 = members(3, [7, 8, 9, 10])  # all of them
V4 = members(4, [7, 8, 9])
V5 = members(5, [7, 8])


def test_a_carriers_child_of_the_next_round_is_voted_by_both_sets_and_hands_over() -> None:
    chain = Chain(V1)
    chain.extend(1)
    carrier = chain.extend(2, update=V2)
    assert carrier.next_validators == V1 and carrier.pending == V2
    assert carrier.child_voters == JointSet(V1, V2)
    handover = chain.extend(3)
    assert handover.validators == JointSet(V1, V2)
    assert handover.next_validators == V2 and handover.pending is None
    assert chain.extend(4).validators == V2


def test_the_set_stays_pending_and_voted_jointly_until_a_block_of_the_very_next_round() -> None:
    chain = Chain(V1)
    chain.extend(1)
    chain.extend(2, update=V2)
    failed = chain.extend(5)  # after a timeout: not the very next round
    assert failed.validators == JointSet(V1, V2)
    assert failed.next_validators == V1 and failed.pending == V2
    again = chain.extend(7)
    assert again.validators == JointSet(V1, V2) and again.pending == V2
    handover = chain.extend(8)
    assert handover.validators == JointSet(V1, V2)
    assert handover.next_validators == V2 and handover.pending is None


def test_no_block_carries_a_set_while_another_is_pending() -> None:
    chain = Chain(V1)
    chain.extend(2, update=V2)
    for round_ in (3, 5):  # the handover, and a block after a timeout
        carrying = chain.make(round_, update=V3)
        problem = check_extends(chain.tip, carrying, ISSUER.address, MIN_RATIO)
        assert problem == "validator update while another set is being handed over"
    chain.extend(3)
    assert chain.extend(4, update=V3).pending == V3  # after the handover it may
    assert chain.extend(5).next_validators == V3


def test_a_handover_needs_a_quorum_of_the_new_set_and_of_the_old() -> None:
    chain = Chain(V1)
    chain.extend(2, update=V2)
    handover = chain.make(3)
    old_only = _certificate(handover, V1.peer_ids)
    assert check_certificate(chain.tip, handover, old_only, MIN_RATIO) is not None
    new_only = _certificate(handover, V2.peer_ids)
    assert check_certificate(chain.tip, handover, new_only, MIN_RATIO) is not None
    quorum_of_each = _certificate(handover, [IDS[i] for i in (0, 1, 2, 4, 5)])
    assert check_certificate(chain.tip, handover, quorum_of_each, MIN_RATIO) is None


def test_a_carried_set_not_newer_than_the_chains_is_refused() -> None:
    chain = Chain(V2)
    older = chain.make(1, update=V1)
    problem = check_extends(chain.tip, older, ISSUER.address, MIN_RATIO)
    assert problem == "validator update is not newer than the current set"


def test_a_handover_as_earlier_versions_made_it_syncs_but_is_never_voted_for() -> None:
    """Earlier versions let the new set alone vote on the carrier's child: such a final block
    still syncs (its certificate checked against the new set), but no voter takes it as a
    proposal."""
    chain = Chain(V1)
    chain.extend(2, update=V2)
    legacy = chain.make(3, voters_named=V2.hash)
    problem = check_proposal_bounds(chain.tip, legacy, LIMITS, now_us=1_003)
    assert problem == "a validator set change is voted by the old set and the new one together"
    chain.add(legacy)
    assert chain.tip.validators == V2 and chain.tip.next_validators == V2


def test_a_handover_of_an_earlier_version_may_carry_the_next_set() -> None:
    """Earlier versions stepped through sets one block at a time: the carrier's child, voted by
    the new set alone, carried the next step. Such a chain still syncs."""
    chain = Chain(V1)
    chain.extend(2, update=V2)
    chain.add(chain.make(3, update=V3, voters_named=V2.hash))
    assert chain.tip.validators == V2
    assert chain.tip.next_validators == V2 and chain.tip.pending == V3
    assert chain.extend(4).next_validators == V3


def _transaction() -> Transaction:
    return Transaction.create_v1(CHANNEL, {"n": 1}, 10_000_000, SIGNERS[1])


def _consensus(tip: ChainTip, safety: SafetyRules, signer: Signer) -> ChannelConsensus:
    config = ConsensusConfig(
        interval=0.05, round_timeout=1.0, max_round_timeout=8.0, blocks_per_leader=1, limits=LIMITS
    )
    return ChannelConsensus(
        config=config,
        signer=signer,
        issuer=ISSUER.address,
        tip=tip,
        tip_certificate=None,
        pool=TxPool(100),
        is_committed=lambda tx_hash, stamped: False,
        safety=safety,
    )


def test_a_set_pending_on_the_final_chain_is_work_with_no_transactions() -> None:
    """After a restart the RadioStation may not be reached at once: the set pending on the final
    chain is the newest known, and rounds go on until the handover."""
    chain = Chain(V1)
    carrier = chain.extend(2, update=V2)
    state = _consensus(carrier, SafetyRules(), SIGNERS[0])
    assert state.latest_validators == V2
    assert state.has_work()
    assert not _consensus(chain.points[-2], SafetyRules(), SIGNERS[0]).has_work()


def test_a_restarted_validator_fetches_the_block_of_its_lock() -> None:
    """A restart keeps the final chain and the lock, not the block the lock certifies: until that
    block is back this node would reckon with the final tip's voters, which while a set is
    pending are not the chain's. It asks for it on start and on each round timeout."""
    chain = Chain(V1)
    carrier = chain.extend(2, update=V2)
    pending = chain.make(5)
    lock = chain.add(pending)
    state = _consensus(carrier, SafetyRules(highest_vote_round=6, high_qc=lock), SIGNERS[0])
    assert state.leader != SIGNERS[0].address  # a leader would fetch it to propose anyway
    assert m.FetchBlock(pending.hash) in state.start(now=10.0)
    state.pool.add(_transaction(), 10.0)  # work: the round timer fires
    assert m.FetchBlock(pending.hash) in state.handle(m.TimeoutFired("round", state.round), 12.0)


def test_a_handover_names_the_new_sets_leader_of_the_round_after_it() -> None:
    chain = Chain(V1)
    carrier = chain.extend(3, update=V2)
    leader = BY_ID[V1.leader_at(4)]  # the old set leads the handover
    state = _consensus(carrier, SafetyRules(3, chain.blocks[-1][1]), leader)
    proposals = [a.block for a in state.start(now=10.0) if isinstance(a, m.BroadcastProposal)]
    assert [block.header.round for block in proposals] == [4]
    assert proposals[0].header.next_leader == V2.leader_at(5) != V1.leader_at(5)


def test_the_tip_restored_from_a_store_has_the_sets_the_chain_had() -> None:
    """At every height of a chain with a handover at once, one after two timeouts, and one made
    as earlier versions made it (the new set alone voting, carrying the next set)."""
    chain = Chain(V1)
    chain.extend(1)
    chain.extend(2, update=V2)
    chain.extend(3)  # handover to V2
    chain.extend(4, update=V3)
    chain.extend(6)  # pending, after a timeout
    chain.extend(8)  # pending
    chain.extend(9)  # handover to V3
    chain.extend(10, update=V4)
    chain.add(chain.make(12, update=V5, voters_named=V4.hash))  # V4 alone votes, as earlier
    chain.extend(13)  # versions did, and carries the next set: then the handover to V5
    assert [point.next_validators for point in chain.points[-3:]] == [V3, V4, V5]
    store = BlockStore(MemoryStore(), CHANNEL)
    for height, (block, qc) in enumerate(chain.blocks):
        store.save_block(block, qc)
        restored, restored_qc = restore_tip(store, CHANNEL)
        assert restored == chain.points[height + 1], height
        assert restored_qc == qc


# ------------------------------------------------------------------ the consensus


def test_sets_issued_in_quick_succession_end_on_the_newest() -> None:
    """Version 2 adds a validator, 3 removes another, 4 replaces three of the first four, all
    within 10 ms: a leader carries the newest it holds (no safety rests on taking changes in
    steps), the chain ends on 4 everywhere, and then has no work left."""
    net = Network(8, seed=5)
    everyone = net.validators

    def issued(version: int, indexes: list[int]) -> ValidatorSet:
        chosen = tuple(everyone.validators[i] for i in indexes)
        return ValidatorSet(CHANNEL, version, chosen).signed_by(net.issuer)

    net.validators = issued(1, [0, 1, 2, 3])
    net.start()
    net.submit(everyone.validators[0].peer_id, 1)  # the genesis block carries version 1
    net.run_until(1.0)
    for version, indexes in [(2, [0, 1, 2, 3, 4]), (3, [0, 1, 2, 4]), (4, [0, 5, 6, 7])]:
        net.issue(issued(version, indexes), max_delay=0.01)
    net.run_until(net.now + 0.05)
    net.submit(everyone.validators[0].peer_id, 3)
    net.run_until(net.now + 10)
    net.check_safety()
    chain = net.nodes[everyone.validators[0].peer_id].chain
    carried = [b.validator_update.version for b, _ in chain if b.validator_update is not None]
    assert carried[0] == 1 and carried[-1] == 4 and carried == sorted(set(carried))
    # each block names the leader of the round after it, the handovers' the new set's
    for (block, _), (child, _) in itertools.pairwise(chain):
        if child.header.round == block.header.round + 1:
            assert block.header.next_leader == child.header.leader, block.height
    assert {node.state.tip.next_validators for node in net.nodes.values()} == {
        issued(4, [0, 5, 6, 7])
    }
    assert not any(node.state.has_work() for node in net.nodes.values())
    rounds = {node.address: node.state.round for node in net.nodes.values()}
    net.run_until(net.now + 30)
    assert rounds == {node.address: node.state.round for node in net.nodes.values()}


def test_a_burst_of_registrations_reaches_the_newest_set() -> None:
    """An open channel founded by one peer, then eleven peers registering in a burst (one set per
    registration): the chain reaches the newest set, each carried set newer than the last."""
    net = Network(12, seed=3)
    everyone = net.validators

    def grown(version: int) -> ValidatorSet:
        first = everyone.validators[:version]
        return ValidatorSet(CHANNEL, version, first, genesis_by_first=True).signed_by(net.issuer)

    founder = everyone.validators[0].peer_id
    net.validators = grown(1)
    net.start()
    net.submit(founder, 1)
    net.run_until(5)
    assert net.nodes[founder].state.tip.next_validators == grown(1)
    for version in range(2, 13):
        net.issue(grown(version), max_delay=0.0)
    for _ in range(20):
        net.submit(founder, 1)
        net.run_until(net.now + 3)
    net.check_safety()
    assert net.nodes[founder].state.tip.next_validators == grown(12)
    carried = [
        b.validator_update.version
        for b, _ in net.nodes[founder].chain
        if b.validator_update is not None
    ]
    assert carried == sorted(set(carried)) and carried[-1] == 12


def test_a_set_not_signed_by_the_radiostation_is_refused_and_not_kept() -> None:
    """A set signed by another key is named and dropped: it is not the newest set, and gives the
    chain no work."""
    net = Network(4, seed=6)
    net.start()
    net.submit(net.validators.validators[0].peer_id, 1)
    net.run_until(2.0)
    state = next(iter(net.nodes.values())).state
    forged = ValidatorSet(CHANNEL, 9, net.validators.validators[:3]).signed_by(Signer.generate())
    actions = state.handle(m.ValidatorsChanged(forged), net.now)
    assert [a.reason for a in actions if isinstance(a, m.Rejected)] == [
        "validator set is not signed by the RadioStation"
    ]
    assert state.latest_validators is not None and state.latest_validators.version == 1
    assert not state.has_work()
