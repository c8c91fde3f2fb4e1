"""The first-stage consensus state machine over a deterministic in-process network."""

from __future__ import annotations

import pytest

from loopchain.consensus import messages as m
from loopchain.types.block import Block
from loopchain.types.transaction import Transaction
from loopchain.types.vote import Vote
from tests.sim.harness import CHANNEL, Network


def _leader(net: Network) -> str:
    return net.validators.leader_at(0)


def test_four_nodes_finalise_every_submitted_transaction() -> None:
    net = Network(4, seed=1)
    net.start()
    net.run_until(0.1)
    follower = next(a for a in net.nodes if a != _leader(net))
    txs = net.submit(follower, 120)
    net.run_until(10.0)
    net.check_agreement()
    for node in net.nodes.values():
        assert node.committed == {tx.hash for tx in txs}
        assert not node.rejected


@pytest.mark.parametrize("seed", range(20))
def test_agreement_under_loss_and_reordering(seed: int) -> None:
    net = Network(4, seed=seed, loss=0.1, max_delay=0.3)
    net.start()
    net.run_until(0.5)
    for round_ in range(5):
        net.submit(list(net.nodes)[round_ % 4], 10)
        net.run_until(net.now + 2.0)
    net.run_until(net.now + 30.0)
    net.check_agreement()
    assert max(len(n.chain) for n in net.nodes.values()) >= 1


def test_forged_vote_is_rejected_and_not_counted() -> None:
    net = Network(4, seed=3)
    net.start()
    net.run_until(0.1)
    leader = net.nodes[_leader(net)]
    net.submit(leader.signer.address, 1)
    net.run_until(0.001)
    # Stop the other validators so only forged votes could reach a quorum.
    for node in net.nodes.values():
        if node is not leader:
            node.up = False
    net.run_until(0.5)
    proposal = leader.state.proposal
    assert proposal is not None
    victim = next(a for a in net.nodes if a != leader.signer.address)
    good = Vote.create(CHANNEL, proposal.height, 0, proposal.hash, net.nodes[victim].signer)
    forged = Vote(good.channel, good.height, good.round, good.block_hash, victim, b"\x01" * 65)
    actions = leader.state.handle(m.VoteReceived(forged), net.now)
    assert any(isinstance(a, m.Rejected) for a in actions)
    assert victim not in leader.state.votes


def test_validator_never_votes_for_two_blocks_at_one_height() -> None:
    net = Network(4, seed=4)
    net.start()
    net.run_until(0.1)
    leader = net.nodes[_leader(net)]
    voter = next(n for n in net.nodes.values() if n is not leader)
    tx_a = Transaction.create_v1(CHANNEL, {"a": 1}, 1, leader.signer)
    tx_b = Transaction.create_v1(CHANNEL, {"b": 2}, 2, leader.signer)

    def genesis(tx: Transaction) -> Block:
        return Block.create(
            channel=CHANNEL,
            height=0,
            round_=0,
            prev_hash=b"",
            prev_qc=None,
            transactions=[tx],
            timestamp=int(net.now * 1e6) + 1,
            leader=leader.signer,
            next_leader=leader.signer.address,
            validators_hash=net.validators.hash,
            validator_update=net.validators,
        )

    first = voter.state.handle(m.ProposalReceived(genesis(tx_a)), net.now)
    assert any(isinstance(a, m.SendVote) for a in first)
    second = voter.state.handle(m.ProposalReceived(genesis(tx_b)), net.now)
    assert not any(isinstance(a, m.SendVote) for a in second)
    assert any(isinstance(a, m.Rejected) for a in second)


def test_proposal_from_a_non_leader_is_rejected() -> None:
    net = Network(4, seed=5)
    net.start()
    net.run_until(0.1)
    impostor, voter = [n for n in net.nodes.values() if n.signer.address != _leader(net)][:2]
    block = Block.create(
        channel=CHANNEL,
        height=0,
        round_=0,
        prev_hash=b"",
        prev_qc=None,
        transactions=[],
        timestamp=int(net.now * 1e6) + 1,
        leader=impostor.signer,
        next_leader=impostor.signer.address,
        validators_hash=net.validators.hash,
        validator_update=net.validators,
    )
    actions = voter.state.handle(m.ProposalReceived(block), net.now)
    assert [a for a in actions if isinstance(a, m.Rejected)]
    assert not [a for a in actions if isinstance(a, m.SendVote)]
