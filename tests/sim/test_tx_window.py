"""TX_TIMESTAMP_WINDOW as the consensus keeps it: every pool refuses a transaction stamped
further from now, and a peer tells a client that one it dropped so will not be final ("send it
again"). So a block must hold none stamped further from its own timestamp, and the promise is made
only once no block can still make it final (two reviews found a transaction executed twice: a
leader had an expired one voted; an honest network made final one it had said expired)."""

from __future__ import annotations

import pytest

from loopchain.blockchain.mempool import TxPool, TxRefused
from loopchain.consensus import messages as m
from loopchain.types import icon_tx
from loopchain.types.crypto import Signer
from loopchain.types.transaction import Transaction
from tests.sim.harness import CHANNEL, Network
from tests.unit.test_consensus_state import _chain_of, _not_leading, _proposal


def _transfer(timestamp_us: int) -> Transaction:
    params = icon_tx.make_params(
        sender=(client := Signer.generate()).address,
        to="hx" + "2" * 40,
        value=1,
        step_limit=100_000,
        timestamp_us=timestamp_us,
        nid=3,
    )
    return Transaction.from_icon(icon_tx.verify_send_params(icon_tx.sign_params(params, client)))


# -330: past the pool's window, within the slack a voter allows a leader (the skew, 60 s in the
# simulation, and a pool sweep's period)
@pytest.mark.parametrize("fetched_first", [False, True])
@pytest.mark.parametrize("off_s", [-3600, 3600, -250, -330])
def test_a_voter_refuses_a_block_holding_a_transaction_stamped_outside_the_window(
    off_s: int, fetched_first: bool
) -> None:
    """An hour before the block or after it: refused, the leader named; inside: voted. Also
    when the block was fetched first (a byzantine leader's forged certificate named it): its
    proposal then skipped this check, and such a block was voted for and made final (review)."""
    window = 300.0
    net = Network(4, seed=13)
    net.now = 1_700_000_000.0  # a wall clock's
    for node in net.nodes.values():
        node.state.pool = TxPool(10_000, window=window)
    node = _not_leading(net)
    state, round_ = node.state, node.state.round
    leader = net.nodes[state.leader_of_round(round_)].signer
    tx = _transfer(int((net.now + off_s) * 1_000_000))
    outside = abs(off_s) > window + 60 + 1
    if abs(off_s) > window:
        with pytest.raises(TxRefused):  # as every pool
            TxPool(10, window=window).add(tx, net.now)
    block = _proposal(net, state, round_, leader, ahead_us=1, transactions=(tx,))
    actions = state.handle(m.BlockFetched(block), net.now) if fetched_first else []
    actions += state.handle(m.ProposalReceived(block), net.now)
    voted = any(isinstance(a, m.SendVote) for a in actions)
    refused = [a.reason for a in actions if isinstance(a, m.Rejected)]
    assert voted is not outside, actions
    if outside:
        when = "after" if off_s > 0 else "before"
        assert f"it holds transaction {tx.hash_hex} stamped 3600 s {when}" in refused[0]


WINDOW = 2.0  # TX_TIMESTAMP_WINDOW (300 s), scaled down with the simulation's rounds


def test_a_transaction_said_expired_for_good_is_never_final() -> None:
    """Honest peers only: a transaction pooled near the end of its window goes into a block that
    is certified; a short partition holds the block after it while the transaction leaves every
    pool with its timestamp; the partition heals and the block is final. No peer may have said
    it cannot be final meanwhile; a transaction no block took is said so once the final chain
    is stamped past its window."""
    net = Network(4, seed=3)
    for node in net.nodes.values():
        node.state.pool = TxPool(10_000, window=WINDOW)
    _chain_of(net, 2)
    first = net.honest()[0]
    lead = net.nodes[first.state.leader_of_round(first.state.round)]
    tx = Transaction.create_v1(
        CHANNEL, {"pay": 1}, int((net.now - WINDOW + 0.5) * 1e6), lead.signer
    )
    never = Transaction.create_v1(
        CHANNEL, {"pay": 2}, int((net.now - WINDOW + 0.5) * 1e6), lead.signer
    )
    net.schedule(0.0, lead.address, m.TxsReceived((tx,), gossip=True))

    def certified(node: object) -> bool:
        qc = node.state.safety.high_qc  # type: ignore[attr-defined]
        return qc is not None and tx.hash in node.state.tree.tx_hashes_on_path(qc.block_hash)  # type: ignore[attr-defined]

    while not any(certified(n) for n in net.honest()):
        net.run_until(net.now + 0.001)
    for node in net.honest():  # `never` expires from every pool without a block
        node.state.pool.add(never, net.now)
    net.partition = [{a} for a in net.nodes]  # a short network outage
    expired, for_good = set(), set()
    for i in range(300):  # clients keep sending meanwhile (each arrival sweeps the pool)
        if i % 20 == 0:
            for n in net.honest():
                other = Transaction.create_v1(CHANNEL, {"i": i}, int(net.now * 1e6), n.signer)
                net.schedule(0.0, n.address, m.TxsReceived((other,), gossip=True))
        net.run_until(net.now + 0.01)
        for n in net.honest():
            if n.state.pool.expired(tx.hash):
                expired.add(n.address)
            if n.state.expired_for_good(tx.hash):
                for_good.add(n.address)
    net.partition = None
    net.run_until(net.now + 20)
    net.check_safety()
    assert expired, "the transaction never left a pool with its timestamp"
    assert all(tx.hash in n.committed for n in net.honest())
    assert not for_good, "said expired for good, then final"
    # `never`: said so once blocks are final stamped past its window (and the slack voters
    # allow a leader: block_window_us) after it
    deadline = net.now + 600
    while not all(n.state.expired_for_good(never.hash) for n in net.honest()):
        assert net.now < deadline, "never said expired for good"
        sender = net.honest()[0]
        fresh = Transaction.create_v1(
            CHANNEL, {"t": int(net.now * 1e6)}, int(net.now * 1e6), sender.signer
        )
        net.schedule(0.0, sender.address, m.TxsReceived((fresh,), gossip=True))
        net.run_until(net.now + 1.0)
    net.check_safety()
    assert not any(never.hash in n.committed for n in net.honest())
