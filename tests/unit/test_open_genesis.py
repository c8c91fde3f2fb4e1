"""Who founds a channel, and how a set the RadioStation issued later reaches the chain.

In open mode the RadioStation's set grows as peers register, so the first peer is a quorum of its
own set and may certify a genesis alone; the peers registering later must sync that genesis, never
certify another with their larger set. The set says so (`genesis_by_first`): only its first
validator proposes the genesis block, and a genesis from anyone else is refused.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest

from loopchain.blockchain.chain import ChainTip, check_extends
from loopchain.consensus import messages as m
from loopchain.types.canonical import EncodingError
from loopchain.types.validators import ValidatorSet
from tests.sim.harness import CHANNEL, Network, genesis_block


def _open(net: Network) -> ValidatorSet:
    """The network's set as an open channel's RadioStation issues it."""
    return dataclasses.replace(net.validators, genesis_by_first=True).signed_by(net.issuer)


def test_the_flag_round_trips_and_changes_the_hash_only_when_set() -> None:
    net = Network(4, seed=31)
    opened = _open(net)
    assert ValidatorSet.decode(opened.encode()) == opened
    assert ValidatorSet.decode(net.validators.encode()).genesis_by_first is False
    assert "genesis_by_first" not in net.validators.body()
    assert opened.hash != net.validators.hash
    assert opened.founder() == opened.validators[0].peer_id
    assert net.validators.founder() is None  # listed: the round's leader founds it


@pytest.mark.parametrize("flag", ["true", 1, None, [True]])
def test_a_set_whose_flag_is_not_a_boolean_is_refused(flag: object) -> None:
    body = _open(Network(4, seed=34)).to_json()
    body["genesis_by_first"] = flag
    with pytest.raises(EncodingError, match="genesis_by_first"):
        ValidatorSet.from_json(body)


def test_an_open_genesis_from_any_peer_but_the_first_is_refused() -> None:
    net = Network(4, seed=32)
    opened = _open(net)
    first, second = (net.nodes[v.peer_id] for v in opened.validators[:2])
    tip, ratio = ChainTip(CHANNEL), Fraction(2, 3)
    refused = check_extends(tip, genesis_block(second, opened, 1), net.issuer.address, ratio)
    assert refused is not None and "proposed by its first peer" in refused
    assert check_extends(tip, genesis_block(first, opened, 1), net.issuer.address, ratio) is None
    # a listed channel's set names its whole committee from the start: anyone may found it
    listed = genesis_block(second, net.validators, 1)
    assert check_extends(tip, listed, net.issuer.address, ratio) is None


def test_without_its_first_peer_an_open_channel_waits_and_never_forks() -> None:
    net = Network(4, seed=33)
    net.validators = _open(net)
    founder = net.validators.validators[0].peer_id
    net.crash(founder)
    net.start()
    survivor = next(a for a in net.nodes if a != founder)
    txs = net.submit(survivor, 3)
    net.run_until(net.now + 20)
    # three of four are a quorum, but none of them may found the channel
    assert all(n.state.tip.height == -1 for n in net.nodes.values() if n.up)
    net.restart(founder)
    net.run_until(net.now + 20)
    net.check_safety()
    for node in net.nodes.values():
        assert {tx.hash for tx in txs} <= node.committed
        assert node.chain[0][0].header.leader == founder


def test_a_newer_set_from_the_radiostation_reaches_the_chain_without_any_transaction() -> None:
    net = Network(4, seed=34)
    net.start()
    net.submit(next(iter(net.nodes)), 2)
    net.run_until(net.now + 5)
    assert all(n.state.tip.next_validators.version == 1 for n in net.nodes.values())
    newer = dataclasses.replace(net.validators, version=2).signed_by(net.issuer)
    net.validators = newer
    for node in net.nodes.values():
        assert not node.state.has_work()
        net.schedule(0.0, node.address, m.ValidatorsChanged(newer))
    net.run_until(net.now + 10)
    net.check_safety()
    for node in net.nodes.values():
        assert node.state.tip.next_validators.version == 2
        assert not node.state.has_work()  # and then the channel rests: no endless empty blocks
