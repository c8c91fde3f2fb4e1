"""Who the RadioStation takes for a party of a channel (`Station.is_party`): over mutual TLS it
lists a channel's members and set to its parties only. A validator the operator unlists still
votes until the chain hands over to the set without it, and follows the sets meanwhile
(node._follow_sets): the sets served before name it, after a restart of the station too."""

from __future__ import annotations

import json
import time
from pathlib import Path

from loopchain.configure import load_config
from loopchain.radiostation.channels import ChannelSpec, MemberSpec
from loopchain.radiostation.registry import MAX_PARTIES_KEPT, Registry
from loopchain.radiostation.station import Station
from loopchain.types.crypto import Signer

CHANNEL = "c"
PACKAGE = "loopchain/default"


def _spec(*members: MemberSpec) -> ChannelSpec:
    return ChannelSpec(CHANNEL, PACKAGE, members)


def _station(path: Path, spec: ChannelSpec) -> Station:
    config = load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(path.parent)})
    registry = Registry.open(path, {CHANNEL: spec}, True)
    return Station(config, registry, Signer.generate(), time.time)


def test_members_listed_peers_and_peers_of_sets_served_before_are_parties(tmp_path: Path) -> None:
    a, b, auditor, stranger = (Signer.generate() for _ in range(4))
    listed = (
        MemberSpec(a.address),
        MemberSpec(b.address),
        MemberSpec(auditor.address, role="auditor"),
    )
    path = tmp_path / "registry.json"
    station = _station(path, _spec(*listed))
    for signer in (a, auditor):
        station.registry.register(signer.address, "127.0.0.1:7100", "", signer.public_key)
    served = station.validator_set(CHANNEL)
    assert set(served.auditors) == {auditor.address}
    parties = {a.address, b.address, auditor.address}  # b: listed, not registered yet
    assert {p for p in (*parties, stranger.address) if station.is_party(CHANNEL, p)} == parties
    # b and the auditor are unlisted: the sets served before still name them
    station.registry.set_channel(_spec(listed[0]))
    assert [v.peer_id for v in station.validator_set(CHANNEL).validators] == [a.address]
    assert all(station.is_party(CHANNEL, p) for p in parties)
    assert not station.is_party(CHANNEL, stranger.address)
    # and after a restart of the station
    again = _station(path, _spec(listed[0]))
    assert all(again.is_party(CHANNEL, p) for p in parties)
    assert not again.is_party(CHANNEL, stranger.address)


def test_the_peers_remembered_as_parties_are_bounded(tmp_path: Path) -> None:
    registry = Registry.open(tmp_path / "registry.json", {CHANNEL: _spec()}, True)
    first = [f"hx{i:040x}" for i in range(MAX_PARTIES_KEPT)]
    registry.serve(CHANNEL, "one", first)
    registry.serve(CHANNEL, "two", ["hx" + "f" * 40])
    assert not registry.was_party(CHANNEL, first[0])
    assert registry.was_party(CHANNEL, first[1]) and registry.was_party(CHANNEL, "hx" + "f" * 40)


def test_a_registry_of_an_earlier_version_takes_its_registered_peers_for_parties(
    tmp_path: Path,
) -> None:
    """Its file names no parties: a validator unlisted before the upgrade, still registered and
    voting until the handover, was refused the sets it follows (review)."""
    a, b = Signer.generate(), Signer.generate()
    path = tmp_path / "registry.json"
    station = _station(path, _spec(MemberSpec(a.address), MemberSpec(b.address)))
    for signer in (a, b):
        station.registry.register(signer.address, "127.0.0.1:7100", "", signer.public_key)
    station.registry.set_channel(_spec(MemberSpec(a.address)))  # b unlisted
    saved = json.loads(path.read_text())
    for channel in saved["channels"].values():
        del channel["parties"]  # as an earlier version wrote it
    path.write_text(json.dumps(saved))
    upgraded = _station(path, _spec(MemberSpec(a.address)))
    assert upgraded.is_party(CHANNEL, b.address)
    assert not upgraded.is_party(CHANNEL, Signer.generate().address)
