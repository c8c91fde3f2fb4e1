"""Which validator set changes a block may carry (`unsafe_change`), and how the consensus keeps
to it: voters refuse a proposal carrying an unsafe change, and a leader steps through the
RadioStation's sets instead of jumping to one it may not carry."""

from __future__ import annotations

import itertools
import json
import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopchain.blockchain.chain import ChainTip, check_update_safety
from loopchain.configure import load_config
from loopchain.consensus import messages as m
from loopchain.radiostation import channel_admin
from loopchain.radiostation import station as station_module
from loopchain.radiostation.channels import parse_channels
from loopchain.radiostation.registry import Registry
from loopchain.radiostation.station import Station
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.validators import (
    MAX_RECENT_BYTES,
    MAX_RECENT_SETS,
    MAX_SEARCHED_COMMON,
    MIN_RATIO,
    Group,
    Validator,
    ValidatorSet,
    unsafe_change,
)
from tests.sim.harness import CHANNEL, Network

SIGNERS = [Signer((i + 1).to_bytes(32, "big")) for i in range(12)]
IDS = [s.address for s in SIGNERS]


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
    return ValidatorSet(CHANNEL, version, chosen, groups=units)


GROUP = {3: "g", 4: "g", 5: "g", 6: "g"}


@pytest.mark.parametrize(
    ("old", "new", "safe"),
    [
        (members(1, [0, 1, 2, 3]), members(2, [0, 1, 2, 3, 4]), True),  # add one
        (members(1, [0, 1, 2, 3, 4]), members(2, [0, 1, 2, 3]), True),  # remove one of 5
        (members(1, [0, 1, 2, 3]), members(2, [0, 1, 2]), True),  # remove one of 4
        (members(1, [0, 1, 2, 3]), members(2, [0, 1, 2, 3, 4, 5]), True),  # add two to 4
        (members(1, [0]), members(2, [0, 1]), True),  # an open channel grows by one
        (members(1, [0, 1]), members(2, [0, 1, 2]), True),
        (members(1, [0, 1, 2]), members(2, [0, 1, 2, 3]), True),
        (members(1, [0, 1, 2, 3]), members(2, [0, 1, 2, 4]), False),  # replace one of 4
        (members(1, [0, 1, 2, 3]), members(2, [0, 4, 5, 6]), False),  # replace three of 4
        (members(1, [0, 1, 2, 3]), members(2, [4, 5, 6, 7]), False),  # replace all
        (members(1, [0, 1, 2, 3]), members(2, [0, 1, 2, 3, 4, 5, 6]), False),  # add three to 4
        # weighted: the weight-3 validator leaving takes 3/7 of the old set's weight with it
        (members(1, [0, 1, 2, 3, 4], {0: 3}), members(2, [1, 2, 3, 4]), False),
        (members(1, [0, 1, 2, 3, 4], {0: 3}), members(2, [0, 1, 2, 3, 4, 5], {0: 3}), True),
        (members(1, [0, 1, 2, 3, 4, 5], {0: 3}), members(2, [0, 1, 2, 3, 4], {0: 3}), True),
        # a group of four of weight 2 and three validators alone; one more validator alone
        (
            members(1, list(range(7)), groups=GROUP, group_weights={"g": 2}),
            members(2, list(range(8)), groups=GROUP, group_weights={"g": 2}),
            True,
        ),
    ],
)
def test_which_changes_a_block_may_carry(old: ValidatorSet, new: ValidatorSet, safe: bool) -> None:
    problem = unsafe_change(old, new)
    assert (problem is None) == safe, problem
    if problem:
        assert f"version {old.version} -> {new.version}" in problem
        assert "change fewer validators at a time" in problem


def _split_exists(old: ValidatorSet, new: ValidatorSet, ratio: Fraction) -> bool:
    """The oracle, written from the definition: some validators in common may be byzantine in
    both sets (a third of neither's weight), and the rest split into old-set complainers and
    new-set voters so that each side, with the removed or added ones, holds a quorum."""
    new_ids, old_ids = set(new.peer_ids), set(old.peer_ids)
    common = [p for p in old.peer_ids if p in new_ids]
    removed = [p for p in old.peer_ids if p not in new_ids]
    added = [p for p in new.peer_ids if p not in old_ids]
    for roles in itertools.product("F12", repeat=len(common)):
        faulty = [p for p, r in zip(common, roles, strict=True) if r == "F"]
        if old.exceeds_third(faulty) or new.exceeds_third(faulty):
            continue
        first = [p for p, r in zip(common, roles, strict=True) if r == "1"]
        second = [p for p, r in zip(common, roles, strict=True) if r == "2"]
        if old.has_quorum([*removed, *faulty, *first], ratio) and new.has_quorum(
            [*added, *faulty, *second], ratio
        ):
            return True
    return False


@st.composite
def set_pairs(draw: st.DrawFn) -> tuple[ValidatorSet, ValidatorSet]:
    pool = list(range(9))
    old = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=7, unique=True))
    new = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=7, unique=True))
    weighted = draw(st.booleans())
    weights = {i: draw(st.integers(1, 4)) for i in pool} if weighted else {}
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
@given(set_pairs(), st.sampled_from([MIN_RATIO, Fraction(3, 4)]))
def test_the_verdict_matches_the_definition(
    pair: tuple[ValidatorSet, ValidatorSet], ratio: Fraction
) -> None:
    """Equal weights take a shortcut (counts only); weights and groups a search. Both must agree
    with every split tried one by one."""
    old, new = pair
    assert (unsafe_change(old, new, ratio) is not None) == _split_exists(old, new, ratio)


def _tip_and_block(old: ValidatorSet, new: ValidatorSet) -> tuple[ChainTip, Block]:
    tip = ChainTip(
        CHANNEL,
        height=3,
        block_hash=b"\x01" * 32,
        round=3,
        timestamp=10,
        validators=old,
        next_validators=old,
    )
    block = Block.create(
        channel=CHANNEL,
        height=4,
        round_=4,
        prev_hash=tip.block_hash,
        prev_qc=None,
        transactions=[],
        timestamp=11,
        leader=SIGNERS[0],
        next_leader=IDS[0],
        validators_hash=old.hash,
        validator_update=new,
    )
    return tip, block


def test_a_voter_refuses_a_proposal_carrying_an_unsafe_change() -> None:
    old = members(1, [0, 1, 2, 3])
    tip, unsafe = _tip_and_block(old, members(2, [0, 4, 5, 6]))
    problem = check_update_safety(tip, unsafe, MIN_RATIO)
    assert problem is not None and problem.startswith("validator set change refused")
    tip, safe = _tip_and_block(old, members(2, [0, 1, 2, 3, 4]))
    assert check_update_safety(tip, safe, MIN_RATIO) is None


def test_a_leader_steps_through_issued_sets_and_never_carries_an_unsafe_one() -> None:
    """Sets issued in quick succession: version 2 adds a validator, version 3 removes another
    (a safe step from 2, an unsafe one from 1), version 4 replaces three at once (unsafe from
    any). The chain takes 2, then 3, names the refusal of 4 once, and then has no work left."""
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
    net.run_until(net.now + 0.05)  # every peer holds all three before any block carries one
    net.submit(everyone.validators[0].peer_id, 3)
    net.run_until(net.now + 10)
    net.check_safety()
    chain = net.nodes[everyone.validators[0].peer_id].chain
    carried = [b.validator_update.version for b, _ in chain if b.validator_update is not None]
    assert carried == [1, 2, 3]
    refusals = [
        reason
        for node in net.nodes.values()
        for reason in node.rejected
        if reason.startswith("validator set not carried: version 3 -> 4")
    ]
    assert 1 <= len(refusals) <= len(net.nodes)  # once per leader that held version 4
    # no rounds are spent on a set no block may carry: the channel is idle
    assert not any(node.state.has_work() for node in net.nodes.values())
    rounds = {node.address: node.state.round for node in net.nodes.values()}
    net.run_until(net.now + 30)
    assert rounds == {node.address: node.state.round for node in net.nodes.values()}


def test_a_weighted_change_beyond_the_search_is_not_checked() -> None:
    """The documented limit: past MAX_SEARCHED_COMMON validators in common, a weighted change is
    carried as before the check; within it, the same kind of change is decided."""
    within = list(range(MAX_SEARCHED_COMMON))
    weights = {0: 5}
    assert unsafe_change(members(1, within, weights), members(2, within[1:], weights))
    beyond = list(range(MAX_SEARCHED_COMMON + 2))
    assert unsafe_change(members(1, beyond, weights), members(2, beyond[1:], weights)) is None


def _listed_station(tmp_path: Path, peers: list[dict[str, Any]]) -> Station:
    """A RadioStation whose channel "c" lists `peers` (ENABLE_CHANNEL_AUTH)."""
    cmd = tmp_path / "channel_manage_data.json"
    cmd.write_text(json.dumps({"c": {"peers": peers}}))
    config = load_config(environ={}, overrides={"CHANNEL_MANAGE_DATA_PATH": str(cmd)})
    specs = parse_channels(cmd, json.loads(cmd.read_text()), "loopchain/default")
    registry = Registry.open(tmp_path / "registry.json", specs, channel_auth=True)
    return Station(config, registry, Signer.generate(), time.time)


def test_the_radiostation_warns_of_a_set_the_peers_will_not_carry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Removing the weight-3 validator of five is one operator request, and an unsafe step: the
    RadioStation names it in its log where the operator made it. A safe removal is not named."""
    peers = [{"peer_id": IDS[0], "weight": 3}, *({"peer_id": IDS[i]} for i in range(1, 6))]
    station = _listed_station(tmp_path, peers)
    first = station.validator_set("c")
    caplog.set_level(logging.WARNING, logger="loopchain.radiostation.station")
    channel_admin.remove_member(station, "c", IDS[5], "")
    assert station.validator_set("c").version > first.version
    assert not caplog.records
    channel_admin.remove_member(station, "c", IDS[0], "")
    station.validator_set("c")
    assert len(caplog.records) == 1
    assert "the peers will not carry the new validator set" in caplog.records[0].getMessage()


def test_a_burst_of_registrations_is_taken_one_safe_step_at_a_time() -> None:
    """An open channel founded by one peer, then eleven peers registering in a burst: one set per
    registration, as a refresh of the peer list brings them. From one validator only one more is a
    safe step, so the chain steps through the versions, each carried set a safe step from the one
    before (a jump from 1 to 12 would be refused; the RadioStation keeping only 7 sets before its
    current one made peers stall at version 1 this way)."""
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
    assert carried == sorted(carried) and carried[-1] == 12
    for version_before, version_after in itertools.pairwise(carried[1:]):
        assert unsafe_change(grown(version_before), grown(version_after)) is None


def test_the_radiostation_keeps_the_newest_sets_within_its_bounds(tmp_path: Path) -> None:
    """Every operator change issues a set; the peer list carries the newest ones kept before the
    current one, oldest first, at most MAX_RECENT_SETS and MAX_RECENT_BYTES of them."""
    peers = [{"peer_id": IDS[0]}]
    station = _listed_station(tmp_path, peers)
    first = station.validator_set("c").version
    for round_ in range(MAX_RECENT_SETS + 6):
        entry = {"peer_id": IDS[1], "weight": 1 + round_ % 2}
        if round_ % 2:
            channel_admin.remove_member(station, "c", IDS[1], "")
        else:
            channel_admin.add_member(station, {"channel": "c", **entry})
        station.validator_set("c")
    recent = station.recent_sets("c")
    current = station.validator_set("c")
    assert len(recent) == MAX_RECENT_SETS
    assert [s.version for s in recent] == list(
        range(current.version - MAX_RECENT_SETS, current.version)
    )
    assert recent[0].version > first
    assert sum(len(s.encode()) for s in recent) <= MAX_RECENT_BYTES


def test_the_recent_sets_sent_stop_at_the_byte_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_RECENT_BYTES the peer list carries the newest sets that fit, oldest first."""
    station = _listed_station(tmp_path, [{"peer_id": IDS[0]}])
    station.validator_set("c")
    for round_ in range(6):
        if round_ % 2:
            channel_admin.remove_member(station, "c", IDS[1], "")
        else:
            channel_admin.add_member(station, {"channel": "c", "peer_id": IDS[1]})
    kept = station.recent_sets("c")
    room = sum(len(s.encode()) for s in kept[-3:])
    monkeypatch.setattr(station_module, "MAX_RECENT_BYTES", room)
    assert [s.version for s in station.recent_sets("c")] == [s.version for s in kept[-3:]]


def test_a_set_not_signed_by_the_radiostation_is_refused_and_not_kept() -> None:
    """A set signed by another key (a forged one among the recent sets) is named and dropped: it
    is neither a step the leader may carry nor the newest set."""
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
    assert 9 not in state.issued_sets and state.latest_version == 1
    assert not state.has_work()
