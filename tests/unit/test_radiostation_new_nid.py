"""A channel added over the RadioStation's REST API (gtool add-channel) that states no nid takes
the peers' ICON_NID; when another channel takes or states that one too, a v3 transaction signed
for one would be valid in the other, replayed. The RadioStation gives it a nid of its own then,
the lowest above the peers' ICON_NID that none of its channels states or was given, written into
its genesis_data (review:
`gtool add-channel` made one sharing the first localnet channel's, warned at each later
change)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from loopchain.radiostation.channel_admin import ChannelChangeError, add_channel
from loopchain.radiostation.channels import ChannelSpec
from loopchain.types.genesis import GenesisAccount, GenesisData
from tests.unit.test_radiostation_genesis import PACKAGE, _join, _station

ACCOUNT = GenesisAccount("god", "hx" + "a" * 40, 10)


def _nid(station: object, name: str) -> int | None:
    spec = station.registry.channels[name]  # type: ignore[attr-defined]
    return spec.genesis.nid if spec.genesis is not None else None


def test_a_channel_stating_no_nid_is_given_one_above_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    default = ChannelSpec("c1", PACKAGE, None, genesis=GenesisData((ACCOUNT,), nid=0x3))
    other = ChannelSpec("c2", PACKAGE, None, genesis=GenesisData((), nid=0x4))
    station = _station(tmp_path, default, other)
    with caplog.at_level(logging.WARNING):
        assert add_channel(station, {"channel": "c3"})[2] == 0x5  # (said in the answer)
        add_channel(station, {"channel": "c4", "genesis_data": GenesisData((ACCOUNT,)).to_json()})
    assert (_nid(station, "c3"), _nid(station, "c4")) == (0x5, 0x6)
    genesis = station.registry.channels["c4"].genesis
    assert genesis is not None and genesis.accounts == (ACCOUNT,)  # its accounts kept
    stated = {"channel": "c5", "genesis_data": {"accounts": [], "nid": "0x20"}}
    assert add_channel(station, stated)[2] is None
    assert _nid(station, "c5") == 0x20  # a nid stated is its own
    with pytest.raises(ChannelChangeError, match="0x3 is channel 'c1'"):
        add_channel(station, {"channel": "c6", "genesis_data": {"accounts": [], "nid": "0x3"}})
    assert "ICON_NID" not in caplog.text  # (no warning of shared nids at each change)
    for odd in ("garbage", 5, ["x"], None):  # genesis_data that is no object: refused as such
        with pytest.raises(ChannelChangeError, match="genesis_data: expected a JSON object"):
            add_channel(station, {"channel": "c7", "genesis_data": odd})


def test_a_channel_added_again_as_it_was_keeps_the_genesis_its_peers_were_given(
    tmp_path: Path,
) -> None:
    """A channel removed from the file, whose peers were given no genesis data, added again as
    it was: its peers hold that genesis, so no nid is given it (and while removed it counted as
    taking the peers' ICON_NID)."""
    first = ChannelSpec("c1", PACKAGE, None, genesis=GenesisData((), nid=9))
    station = _station(tmp_path, first, ChannelSpec("c2", PACKAGE, None))
    _join(station)
    station.served_set("c1")
    station.served_set("c2")
    again = _station(tmp_path, first)  # c2 removed from the file
    add_channel(again, {"channel": "c3"})  # removed, c2 still takes the peers' ICON_NID
    assert _nid(again, "c3") == 0x4
    add_channel(again, {"channel": "c2"})
    assert again.registry.channels["c2"].genesis is None


def test_a_channel_stating_no_nid_takes_the_peers_when_no_other_does(tmp_path: Path) -> None:
    station = _station(tmp_path, ChannelSpec("c1", PACKAGE, None, genesis=GenesisData((), nid=7)))
    add_channel(station, {"channel": "c2"})
    assert station.registry.channels["c2"].genesis is None  # the peers' ICON_NID, 0x3


def test_a_channel_stating_none_beside_one_stating_none_is_given_its_own(tmp_path: Path) -> None:
    station = _station(tmp_path, ChannelSpec("c1", PACKAGE, None))
    _join(station)
    station.served_set("c1")  # given to its peers: its (absent) genesis is fixed
    add_channel(station, {"channel": "c2"})
    assert _nid(station, "c2") == 0x4  # one above the peers' ICON_NID, which c1 takes


def test_a_channel_given_no_genesis_counts_as_taking_the_peers_nid_whatever_the_file_says(
    tmp_path: Path,
) -> None:
    """Its peers were given no genesis: its chain takes their ICON_NID, though the file states a
    nid for it since (not taken: the RadioStation serves the genesis it gave)."""
    station = _station(tmp_path, ChannelSpec("c1", PACKAGE, None))
    _join(station)
    station.served_set("c1")
    edited = ChannelSpec("c1", PACKAGE, None, genesis=GenesisData((), nid=0x9))
    again = _station(tmp_path, edited)
    assert again.held_nids() == {None}
    assert add_channel(again, {"channel": "c2"})[2] == 0x4
