"""A channel's genesis data is fixed once the RadioStation gave it to a peer (Registry.pin_genesis,
Station.served_set): a peer founds block 0 with it, or checks the chain's against it. An edit of
`genesis_data` after that was served to peers starting from an empty store, who followed it until
they held block 0 (another nid, step limit or leader turn: left alone in sessions 70-81)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from loopchain.configure import load_config
from loopchain.radiostation.channel_admin import ChannelChangeError, add_channel, channel_data
from loopchain.radiostation.channels import ChannelDataError, ChannelSpec, channel_to_json
from loopchain.radiostation.registry import Registry, RegistryError
from loopchain.radiostation.station import Station
from loopchain.types.crypto import Signer
from loopchain.types.genesis import GenesisAccount, GenesisData
from loopchain.types.peer import Settings

CHANNEL = "c"
PACKAGE = "loopchain/default"
FIRST = GenesisData((GenesisAccount("god", "hx" + "a" * 40, 10),), nid=0x10)
EDITED = GenesisData((GenesisAccount("god", "hx" + "b" * 40, 10),), nid=0x11)


def _spec(genesis: GenesisData | None, name: str = CHANNEL) -> ChannelSpec:
    return ChannelSpec(name, PACKAGE, None, genesis=genesis)


def _station(tmp_path: Path, *specs: ChannelSpec) -> Station:
    channel_file = tmp_path / "channel_manage_data.json"
    channel_file.write_text(json.dumps({s.name: channel_to_json(s) for s in specs}))
    config = load_config(
        environ={},
        overrides={
            "DEFAULT_STORAGE_PATH": str(tmp_path),
            "CHANNEL_MANAGE_DATA_PATH": str(channel_file),
            "LOOPCHAIN_DEFAULT_CHANNEL": specs[0].name,
        },
    )
    registry = Registry.open(tmp_path / "registry.json", {s.name: s for s in specs}, False)
    station = Station(config, registry, Signer.generate(), time.time)
    station.channel_file, station.channel_file_known = channel_file.read_bytes(), True
    return station


def _join(station: Station) -> None:
    peer = Signer.generate()
    station.registry.register(peer.address, "127.0.0.1:7100", "", peer.public_key)


def _edit_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "genesis_data differs" in r.getMessage()
    ]


def test_an_edit_after_a_peer_was_given_the_genesis_is_not_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    station = _station(tmp_path, _spec(FIRST))
    _join(station)
    served = station.served_set(CHANNEL)
    assert served.genesis == FIRST.encoded()
    # the file edited while the RadioStation was down: the chain's genesis is served still
    with caplog.at_level(logging.WARNING):
        again = _station(tmp_path, _spec(EDITED))
    kept = again.served_set(CHANNEL)  # the same content, under the same version
    assert (kept.version, kept.genesis, kept.validators) == (
        served.version,
        served.genesis,
        served.validators,
    )
    assert again.registry.channels[CHANNEL].genesis == FIRST
    # shown, and written back at a change, as served
    assert channel_data(again)[CHANNEL]["genesis_data"] == FIRST.to_json()
    [said] = _edit_warnings(caplog)
    assert "channel c: the channel file's genesis_data differs" in said
    assert "(they differ in accounts, nid)" in said
    # the file put back: silent
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _station(tmp_path, _spec(FIRST))
    assert not _edit_warnings(caplog)


def test_genesis_data_added_or_dropped_later_is_not_served_either(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    station = _station(tmp_path, _spec(None))
    _join(station)
    assert station.served_set(CHANNEL).genesis == ""
    with caplog.at_level(logging.WARNING):
        added = _station(tmp_path, _spec(FIRST))
    assert added.served_set(CHANNEL).genesis == ""
    assert added.registry.channels[CHANNEL].genesis is None
    said = _edit_warnings(caplog)[0]
    assert "(none was given), which their chains' genesis block holds: it serves that one " in said
    assert said.endswith(
        'stop the RadioStation, remove the channel\'s "genesis" from its registry.json and '
        "start it again with the chain's in the file: it fixes the file's when it next gives a "
        "peer the set"
    )


def test_an_edit_before_any_peer_was_given_a_set_is_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    station = _station(tmp_path, _spec(FIRST))
    _join(station)
    # what the RadioStation computes for itself (leaders, parties, REST views) fixes nothing
    assert station.validator_set(CHANNEL).genesis == FIRST.encoded()
    assert station.registry.pinned_genesis(CHANNEL) is None
    with caplog.at_level(logging.WARNING):
        edited = _station(tmp_path, _spec(EDITED))
    assert edited.served_set(CHANNEL).genesis == EDITED.encoded()
    assert not _edit_warnings(caplog)
    saved = json.loads((tmp_path / "registry.json").read_text())
    assert saved["channels"][CHANNEL]["genesis"] == EDITED.encoded()


def _unpinned(path: Path) -> None:
    """Make `path` a registry of an earlier version (no pinned genesis)."""
    saved = json.loads(path.read_text())
    del saved["channels"][CHANNEL]["genesis"]
    path.write_text(json.dumps(saved))


def test_a_registry_of_an_earlier_version_pins_the_genesis_it_served(tmp_path: Path) -> None:
    """The content saved as served covers the genesis: when the file's gives that content, it
    is the one the peers hold, pinned at open."""
    station = _station(tmp_path, _spec(FIRST))
    _join(station)
    station.served_set(CHANNEL)
    _unpinned(tmp_path / "registry.json")
    assert _station(tmp_path, _spec(FIRST)).registry.pinned_genesis(CHANNEL) == FIRST.encoded()
    assert _station(tmp_path, _spec(EDITED)).served_set(CHANNEL).genesis == FIRST.encoded()
    # edited while the RadioStation was down, before the upgrade: which was given is unknown
    _unpinned(tmp_path / "registry.json")
    edited = _station(tmp_path, _spec(EDITED))
    assert edited.registry.pinned_genesis(CHANNEL) is None
    assert edited.served_set(CHANNEL).genesis == EDITED.encoded()


def test_a_set_read_where_the_channel_has_no_member_fixes_nothing(tmp_path: Path) -> None:
    """Without TLS anyone may read a channel's set (GetPeerList): a channel no peer belongs to
    yet keeps its genesis open to edits."""
    station = _station(tmp_path, _spec(FIRST))
    assert station.served_set(CHANNEL).genesis == FIRST.encoded()
    assert station.registry.pinned_genesis(CHANNEL) is None
    # (nor at open: the content saved as served is the file's, but no peer was given it)
    assert _station(tmp_path, _spec(FIRST)).registry.pinned_genesis(CHANNEL) is None
    assert _station(tmp_path, _spec(EDITED)).served_set(CHANNEL).genesis == EDITED.encoded()


@pytest.mark.parametrize("pinned", ['{"accounts": 1}', '{"accounts":[] }', 0, {}, False, 1])
def test_a_pinned_genesis_that_is_not_genesis_data_is_a_corrupt_registry(
    tmp_path: Path, pinned: object
) -> None:
    station = _station(tmp_path, _spec(FIRST))
    _join(station)
    station.served_set(CHANNEL)
    path = tmp_path / "registry.json"
    saved = json.loads(path.read_text())
    saved["channels"][CHANNEL]["genesis"] = pinned
    path.write_text(json.dumps(saved))
    with pytest.raises(RegistryError, match=r"registry file .* is corrupt"):
        Registry.open(path, {CHANNEL: _spec(FIRST)}, False)


def test_a_failed_pin_is_undone_and_raised(tmp_path: Path) -> None:
    station = _station(tmp_path, _spec(FIRST))
    _join(station)
    (tmp_path / "registry.json").unlink()
    (tmp_path / "registry.json").mkdir()  # the save cannot replace a directory
    with pytest.raises(OSError, match="cannot save the registry"):
        station.served_set(CHANNEL)
    assert station.registry.pinned_genesis(CHANNEL) is None


def test_a_later_failed_save_keeps_the_pin(tmp_path: Path) -> None:
    station = _station(tmp_path, _spec(FIRST))
    _join(station)
    station.served_set(CHANNEL)
    (tmp_path / "registry.json").unlink()
    (tmp_path / "registry.json").mkdir()
    with pytest.raises(OSError, match="cannot save the registry"):
        _join(station)
    assert station.registry.pinned_genesis(CHANNEL) == FIRST.encoded()


def test_the_pinned_nids_are_the_channels_own(tmp_path: Path) -> None:
    """The nid uniqueness check (a v3 transaction names a network, no channel) takes the nid a
    channel's peers were given, not the one its file states now."""
    station = _station(tmp_path, _spec(FIRST))
    _join(station)
    station.served_set(CHANNEL)
    # the file gives channel c another nid, and channel d the one c's chain holds: refused
    clash = GenesisData((), nid=FIRST.nid)
    with pytest.raises(ChannelDataError, match=r"genesis_data\.nid: 0x10 is channel 'c'"):
        _station(tmp_path, _spec(EDITED), _spec(clash, "d"))
    station = _station(tmp_path, _spec(EDITED))
    with pytest.raises(ChannelChangeError, match="0x10 is channel 'c'"):
        add_channel(station, {"channel": "d", "genesis_data": clash.to_json()})
    # the nid the file states and c's chain does not hold is free
    spec, _, _ = add_channel(station, {"channel": "d", "genesis_data": EDITED.to_json()})
    assert spec.genesis == EDITED


def test_the_channel_refused_for_a_nid_is_the_one_the_file_can_change(tmp_path: Path) -> None:
    """Whatever the file's order, the clash is said of the channel whose genesis no peer was
    given, naming the fixed one; a channel removed from the file keeps its nid too."""
    station = _station(tmp_path, _spec(FIRST))
    _join(station)
    station.served_set(CHANNEL)
    clash = GenesisData((), nid=FIRST.nid)
    with pytest.raises(ChannelDataError) as refused:
        _station(tmp_path, _spec(clash, "a"), _spec(EDITED))  # "a" first in the file
    assert refused.value.place == ("a", "genesis_data", "nid")
    assert refused.value.reason.startswith(
        "0x10 is channel 'c''s too (the nid its peers were given, fixed: the RadioStation's "
        "registry.json)"
    )
    # c removed from the file: its nid is still its chain's
    station = _station(tmp_path, _spec(None, "other"))
    with pytest.raises(ChannelChangeError, match="0x10 is channel 'c''s too"):
        add_channel(station, {"channel": "d", "genesis_data": clash.to_json()})


def test_two_channels_an_earlier_version_gave_one_nid_are_warned_of_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An earlier version checked neither pins nor removed channels: both chains hold the nid,
    and refusing to start parts nothing (review)."""
    station = _station(tmp_path, _spec(FIRST), _spec(None, "d"))
    _join(station)
    station.served_set(CHANNEL)
    path = tmp_path / "registry.json"
    saved = json.loads(path.read_text())
    saved["channels"]["d"]["genesis"] = GenesisData((), nid=FIRST.nid).encoded()
    path.write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING):
        again = _station(tmp_path, _spec(FIRST), _spec(GenesisData((), nid=FIRST.nid), "d"))
    assert again.served_set("d").genesis == GenesisData((), nid=FIRST.nid).encoded()
    assert "channels c and d were given one nid, 0x10 (their chains hold it)" in caplog.text


def test_the_settings_compared_follow_the_pinned_genesis(tmp_path: Path) -> None:
    """The step limit and leader turn the chain's genesis states are every peer's own: not
    compared, whatever the file states now."""
    stating = GenesisData((), score_step_limit=5_000, leader_block_creation_limit=10)
    station = _station(tmp_path, _spec(stating))
    _join(station)
    station.served_set(CHANNEL)
    again = _station(tmp_path, _spec(None))
    a, b = Signer.generate(), Signer.generate()
    for peer, step_limit in ((a, 1_000), (b, 2_000)):
        again.registry.register(peer.address, "127.0.0.1:7100", "", peer.public_key)
        settings: Settings = {"SCORE_STEP_LIMIT": step_limit}
        now = again.monotonic()
        again.registry.heartbeat(peer.address, CHANNEL, 0, 0, now, now, settings)
    assert again.settings_differ(CHANNEL, a.address, {"SCORE_STEP_LIMIT": 1_000}) == ""


def test_a_channel_added_again_must_state_the_genesis_its_peers_were_given(tmp_path: Path) -> None:
    station = _station(tmp_path, _spec(FIRST), _spec(None, "other"))
    _join(station)
    station.served_set(CHANNEL)
    # the channel removed from the file by hand: its pin stays (its peers keep its chain)
    station = _station(tmp_path, _spec(None, "other"))
    with pytest.raises(ChannelChangeError) as refused:
        add_channel(station, {"channel": CHANNEL, "genesis_data": EDITED.to_json()})
    assert refused.value.place == ("genesis_data",)
    assert refused.value.reason.startswith(
        "channel 'c' existed before and its peers were given other genesis data (they differ in "
        "accounts, nid), with which they found or check its genesis block: state that one"
    )
    assert CHANNEL not in station.registry.channels
    spec, _, _ = add_channel(station, {"channel": CHANNEL, "genesis_data": FIRST.to_json()})
    assert spec.genesis == FIRST
    assert station.served_set(CHANNEL).genesis == FIRST.encoded()
