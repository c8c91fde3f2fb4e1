"""channel_manage_data.json: weights and groups become the channel's validator set shape, and
genesis_data goes into every validator set the RadioStation issues."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopchain.configure import load_config
from loopchain.p2p.grpc_util import SERVER_MAX_CONNECTIONS
from loopchain.p2p.peer_service import MAX_INBOUND_STREAMS
from loopchain.radiostation import channel_admin
from loopchain.radiostation.admission import AdmissionError, verify_connect
from loopchain.radiostation.channels import (
    MAX_CHANNEL_PEERS,
    ChannelDataError,
    ChannelSpec,
    MemberSpec,
    channel_to_json,
    parse_channels,
)
from loopchain.radiostation.registry import MAX_PEERS, NotAdmitted, Registry, UnknownPeer
from loopchain.radiostation.station import Station
from loopchain.types.crypto import Signer
from loopchain.types.genesis import GenesisData
from loopchain.types.peer import connect_digest
from loopchain.types.validators import ValidatorSet

PATH = Path("channel_manage_data.json")


def test_weights_and_groups_are_read() -> None:
    specs = parse_channels(
        PATH,
        {
            "c": {
                "score_package": "loopchain/default",
                "peers": [
                    {"peer_target": "127.0.0.1:7100", "weight": 3},
                    {"peer_target": "127.0.0.1:7200", "group_id": "g"},
                    {"peer_target": "127.0.0.1:7300", "group_id": "g", "weight": 2},
                ],
                "groups": {"g": {"weight": 2}},
            }
        },
        "loopchain/default",
    )
    spec = specs["c"]
    targets = ("127.0.0.1:7100", "127.0.0.1:7200", "127.0.0.1:7300")
    assert [spec.weight("hx?", t) for t in targets] == [3, 1, 2]
    assert [spec.group_of("hx?", t) for t in targets] == ["", "g", "g"]
    assert spec.weight("hx?", "127.0.0.1:7400") == 1  # unlisted: the defaults
    assert spec.groups == {"g": 2}


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ({"peers": [{"peer_target": "127.0.0.1:7100", "weight": 0}]}, "weight"),
        ({"peers": [{"peer_target": "127.0.0.1:7100", "weight": True}]}, "weight"),
        (
            {"peers": [{"peer_target": "127.0.0.1:7100", "group_id": "g"}]},
            r"peers\[0\]\.group_id: names group 'g', missing from 'groups'",
        ),
        ({"peers": [], "groups": {"g": {"weight": -1}}}, "weight"),
        ({"peers": [], "groups": {"g": {"size": 1}}}, "groups"),
        ({"peers": [], "groups": []}, "groups"),
    ],
)
def test_bad_weights_and_groups_are_named(channel: dict, message: str) -> None:
    with pytest.raises(ChannelDataError, match=message):
        parse_channels(PATH, {"c": channel}, "loopchain/default")


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        # a weight that canonical JSON cannot hold made every GetPeerList of the channel fail
        ({"peers": [{"peer_id": "hx" + "a" * 40, "weight": 10**90}]}, r"peers\[0\]\.weight: must"),
        ({"peers": [{"peer_id": "hx" + "a" * 40, "weight": 2**31}]}, "from 1 to 2147483647"),
        ({"peers": [], "groups": {"g": {"weight": 10**90}}}, r"groups\.g\.weight: must be an"),
        ({"peers": [{"peer_id": "hx" + "a" * 40, "group_id": "g" * 257}]}, "at most 256"),
        ({"peers": [], "groups": {"g" * 257: {"weight": 1}}}, "longer than 256"),
        # a group named as a listed peer: both voting units, the group's weight counted twice
        (
            {
                "peers": [
                    {"peer_id": "hx" + "a" * 40},
                    {"peer_id": "hx" + "b" * 40, "group_id": "hx" + "a" * 40},
                ],
                "groups": {"hx" + "a" * 40: {"weight": 5}},
            },
            "a group id must not be a listed peer's id",
        ),
        ({"score_package": "../../etc"}, "score_package: '../../etc' must be '<org>/<package>'"),
        ({"score_package": "a/b/c"}, "must be '<org>/<package>'"),
        ({"score_package": "x" * 300 + "/y"}, r"score_package: 'xxx.*\.\.\. must be"),
        ({"score_package": "a\x00/b"}, "must be '<org>/<package>'"),
        ({"score_package": ""}, "must be '<org>/<package>'"),
    ],
)
def test_channels_no_peer_could_be_served_are_refused(channel: dict, message: str) -> None:
    """Weights beyond MAX_WEIGHT, group ids beyond MAX_GROUP_ID_CHARS and package names that are
    not '<org>/<package>' are refused where the channel data is read (file or REST)."""
    with pytest.raises(ChannelDataError, match=message):
        parse_channels(PATH, {"c": channel}, "loopchain/default")


def test_the_largest_weight_and_group_id_make_a_validator_set() -> None:
    peer = Signer.generate()
    group = "g" * 256
    channel = {"peers": [{"peer_id": peer.address, "group_id": group, "weight": 2**31 - 1}]}
    channel["groups"] = {group: {"weight": 2**31 - 1}}
    spec = parse_channels(PATH, {"c": channel}, "org/x")["c"]
    registry = Registry({"c": spec}, channel_auth=True)
    registry.register(peer.address, "127.0.0.1:7100", "", peer.public_key)
    config = load_config(environ={})
    station = Station(config, registry, Signer.generate(), time.time)
    signed = station.validator_set("c")
    assert ValidatorSet.decode(signed.encode()).total_weight == 2**31 - 1


def test_auditors_are_members_but_not_validators() -> None:
    specs = parse_channels(
        PATH,
        {
            "c": {
                "peers": [
                    {"peer_target": "127.0.0.1:7100"},
                    {"peer_target": "127.0.0.1:7200", "role": "auditor"},
                ]
            }
        },
        "loopchain/default",
    )
    spec = specs["c"]
    assert spec.admits("hx?", "127.0.0.1:7200", channel_auth=False)
    assert spec.is_validator("hx?", "127.0.0.1:7100")
    assert not spec.is_validator("hx?", "127.0.0.1:7200")
    with pytest.raises(ChannelDataError, match="role"):
        parse_channels(
            PATH, {"c": {"peers": [{"peer_target": "127.0.0.1:7100", "role": "boss"}]}}, "org/x"
        )


A = "hx" + "a" * 40
B = "hx" + "b" * 40
C = "hx" + "c" * 40


def test_listed_mode_admits_by_peer_id_only() -> None:
    spec = parse_channels(
        PATH,
        {
            "c": {
                "peers": [
                    {"peer_id": A, "peer_target": "127.0.0.1:7100", "weight": 4},
                    {"peer_id": B, "role": "auditor"},
                    {"peer_target": "127.0.0.1:7300"},
                ]
            }
        },
        "org/x",
    )["c"]
    assert spec.admits(A, "10.0.0.1:1", channel_auth=True)  # known by its id, from anywhere
    assert spec.weight(A, "10.0.0.1:1") == 4
    assert spec.admits(B, "127.0.0.1:7200", channel_auth=True)
    assert not spec.is_validator(B, "127.0.0.1:7200")
    # a target alone is not an identity: not the listed target of A, not a target-only entry
    assert not spec.admits("hx" + "c" * 40, "127.0.0.1:7100", channel_auth=True)
    assert not spec.admits("hx" + "c" * 40, "127.0.0.1:7300", channel_auth=True)
    assert spec.unlisted() == [2]


@pytest.mark.parametrize(
    ("peers", "message"),
    [
        ([{"peer_id": "hxNOTHEX"}], r"'c': peers\[0\]\.peer_id: must be"),
        (
            [{"peer_id": A}, {"peer_id": A}],
            r"peers\[1\]\.peer_id: 'hx.*' is listed twice \(peers\[0\]",
        ),
        ([{"weight": 2}], r"'c': peers\[0\]: needs a peer_id"),
        (
            [{"peer_target": "h:1"}, {"peer_target": "h:1", "weight": 2}],
            r"peers\[1\]\.peer_target: 'h:1' is listed twice \(peers\[0\] and peers\[1\]; an "
            r"entry is known by its peer_id, or without one by its peer_target\)",
        ),
        ([{"peer_id": 5}], r"peers\[0\]\.peer_id: must be"),
    ],
)
def test_bad_peer_entries_are_named(peers: list, message: str) -> None:
    with pytest.raises(ChannelDataError, match=message):
        parse_channels(PATH, {"c": {"peers": peers}}, "org/x")


@pytest.mark.parametrize(
    "target",
    [
        "unix:/tmp/x.sock:1",  # gRPC reads a scheme: the RadioStation would dial a local socket
        "unix-abstract:x:1",
        "dns:///x.invalid:1",
        "xds:///a:1",
        "ipv4:1.2.3.4,5.6.7.8:1",
        "ipv6:[::1:1",
        "a:\u00b2",  # a digit to str.isdigit, no number to int(): ValueError, answered UNKNOWN
        "a:\u0661\u0662",  # 12 to int() in Arabic-Indic digits
        "\u00e9:1",
        "a b:1",
        "a:0",
        "a:65536",
        "a" * 64 + ":1",  # a label no resolver takes (Python's raised UnicodeError, not OSError)
        "a..b:1",
        ".a:1",
        ("a" * 63 + ".") * 4 + "a:1",  # 257 characters
    ],
)
def test_a_registration_whose_target_is_not_host_port_is_refused(target: str) -> None:
    """A signed registration names a plain host:port, or it is refused as malformed (before any
    probe of the target), in the channel file as well."""
    signer = Signer(b"\x07" * 32)
    signature = signer.sign(connect_digest(signer.address, target, ""))
    with pytest.raises(AdmissionError, match="target must be"):
        verify_connect(signer.address, target, "", signer.public_key, signature)
    with pytest.raises(ChannelDataError, match=r"peers\[0\]\.peer_target: must be"):
        parse_channels(PATH, {"c": {"peers": [{"peer_id": A, "peer_target": target}]}}, "org/x")


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:7100",
        "[::1]:7100",
        "peer_0.example-x:65535",
        "peer.example.:1",
        "a" * 63 + ".b:1",
        ("a" * 63 + ".") * 3 + "a" * 61 + ":1",  # 253 characters
    ],
)
def test_a_registration_at_a_host_name_or_address_is_taken(target: str) -> None:
    signer = Signer(b"\x07" * 32)
    signature = signer.sign(connect_digest(signer.address, target, ""))
    assert verify_connect(signer.address, target, "", signer.public_key, signature)


def test_score_settings_are_read_and_bounded() -> None:
    settings = {"token": {"owner": A, "initial_supply": 5}}
    spec = parse_channels(PATH, {"c": {"score_settings": settings}}, "org/x")["c"]
    assert spec.score_settings == settings
    assert parse_channels(PATH, {"c": {}}, "org/x")["c"].score_settings == {}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ([], "must be a JSON object"),
        ({"main": "evil"}, "may not set \\['main'\\]"),
        ({"x": 1.5}, "floats are not allowed"),
        ({"x": "y" * 20_000}, "larger than"),
    ],
)
def test_bad_score_settings_are_named(settings: object, message: str) -> None:
    with pytest.raises(ChannelDataError, match=message):
        parse_channels(PATH, {"c": {"score_settings": settings}}, "org/x")


GENESIS = {
    "accounts": [
        {"name": "god", "address": A, "balance": "0xd3c21bcecceda1000000"},
        {"name": "treasury", "address": B, "balance": "0x0"},
    ],
    "message": "test genesis",
}


def test_genesis_data_is_read_and_goes_into_every_issued_validator_set(tmp_path: Path) -> None:
    specs = parse_channels(
        PATH, {"c": {"genesis_data": GENESIS}, "d": {"peers": [{"peer_id": A}]}}, "org/x"
    )
    assert specs["c"].genesis == GenesisData.from_json(GENESIS)
    assert specs["c"].genesis.total_supply == 10**24  # type: ignore[union-attr]
    assert specs["d"].genesis is None
    station = Station(
        load_config(environ={}),
        Registry.open(tmp_path / "registry.json", specs, False),
        Signer.generate(),
        time.time,
    )
    first = station.validator_set("c")
    assert first.genesis == GenesisData.from_json(GENESIS).encoded()
    assert first.genesis_data() == specs["c"].genesis
    assert first.verify_issuer(station.signer.address)
    station.registry.register(A, "127.0.0.1:7100", "", b"")
    second = station.validator_set("c")  # a new version states it again
    assert second.version > first.version and second.genesis == first.genesis
    assert ValidatorSet.decode(second.encode()).genesis_data() == specs["c"].genesis
    assert (
        station.validator_set("d").genesis == ""
        and "genesis" not in station.validator_set("d").body()
    )


@pytest.mark.parametrize(
    ("genesis", "message"),
    [
        (None, "genesis_data: expected a JSON object"),
        ([], "genesis_data: expected a JSON object"),
        ({**GENESIS, "supply": 1}, r"genesis_data: unknown fields \['supply'\]"),
        ({"accounts": [{**GENESIS["accounts"][0], "address": "hxNOPE"}]}, r"accounts\[0\].address"),
        ({"accounts": [{**GENESIS["accounts"][0], "balance": 10}]}, "field 'balance'"),
        ({"accounts": [GENESIS["accounts"][0]] * 2}, r"accounts\[1\].address.*listed twice"),
        ({**GENESIS, "score_step_limit": "0x0"}, "'score_step_limit' must be from 0x1"),
        ({**GENESIS, "score_step_limit": 5000}, "field 'score_step_limit' must be a string"),
        (
            {**GENESIS, "leader_block_creation_limit": "0x0"},
            "'leader_block_creation_limit' must be from 0x1",
        ),
    ],
)
def test_bad_genesis_data_is_named(genesis: object, message: str) -> None:
    with pytest.raises(ChannelDataError, match=message) as refused:
        parse_channels(PATH, {"c": {"genesis_data": genesis}}, "org/x")
    assert str(refused.value).startswith(f"{PATH}: channel 'c': genesis_data: ")


def test_two_channels_of_one_network_id_are_refused_and_shared_defaults_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A v3 transaction names its network, not its channel: two channels stating one nid take
    each other's v3 transactions, replayed (review), and are refused. Channels stating none share
    the peers' ICON_NID: a warning names them."""

    def channel(nid: str | None) -> dict[str, Any]:
        return {"genesis_data": {**GENESIS, **({"nid": nid} if nid else {})}}

    with pytest.raises(ChannelDataError, match="0x5 is channel 'a''s too") as refused:
        parse_channels(PATH, {"a": channel("0x5"), "b": channel("0x6"), "c": channel("0x5")}, "o/x")
    assert str(refused.value).startswith(f"{PATH}: channel 'c': genesis_data.nid: ")
    with caplog.at_level(logging.WARNING):
        specs = parse_channels(PATH, {"a": channel("0x5"), "b": channel("0x6")}, "o/x")
    assert [s.genesis.nid for s in specs.values() if s.genesis] == [5, 6]
    assert "share the peers' ICON_NID" not in caplog.text
    with caplog.at_level(logging.WARNING):
        parse_channels(PATH, {"a": channel("0x5"), "b": channel(None), "c": {}}, "o/x")
    assert "channels b, c state no genesis_data nid and share the peers' ICON_NID" in caplog.text
    caplog.clear()  # one stating the ICON_NID that one stating none takes shares it too
    with caplog.at_level(logging.WARNING):
        parse_channels(PATH, {"a": channel("0x3"), "b": channel(None)}, "o/x", default_nid=0x3)
    assert "channel a states nid 0x3, the ICON_NID that channels b (stating none) take" in (
        caplog.text
    )


def test_a_channels_stated_score_step_limit_goes_into_its_validator_sets_genesis(
    tmp_path: Path,
) -> None:
    """The SCORE step limit decides results: the channel states it once, in its genesis data,
    and every validator set the RadioStation issues carries it to the peers."""
    genesis = {**GENESIS, "score_step_limit": "0x64"}
    specs = parse_channels(PATH, {"c": {"genesis_data": genesis}}, "org/x")
    station = Station(
        load_config(environ={}),
        Registry.open(tmp_path / "registry.json", specs, False),
        Signer.generate(),
        time.time,
    )
    stated = ValidatorSet.decode(station.validator_set("c").encode()).genesis_data()
    assert stated is not None and stated.score_step_limit == 100


def test_channel_to_json_reads_back_to_the_same_channel() -> None:
    data = {
        "c": {
            "score_package": "sample/token",
            "peers": [
                {"peer_id": A, "peer_target": "127.0.0.1:7100", "weight": 2, "group_id": "g"},
                {"peer_id": B, "role": "auditor"},
                {"peer_target": "127.0.0.1:7300"},
            ],
            "groups": {"g": {"weight": 3}},
            "score_settings": {"token": {"owner": A}},
            "genesis_data": {
                "accounts": [{"name": "god", "address": A, "balance": "0x64"}],
                "message": "hi",
            },
        },
        "d": {"score_package": "loopchain/default"},
    }
    specs = parse_channels(PATH, data, "loopchain/default")
    assert {name: channel_to_json(spec) for name, spec in specs.items()} == {
        **data,
        "d": {"score_package": "loopchain/default", "peers": []},
    }
    again = parse_channels(PATH, {n: channel_to_json(s) for n, s in specs.items()}, "org/x")
    assert again == specs


def test_a_changed_channel_gets_a_new_version_even_with_the_same_members() -> None:
    specs = parse_channels(PATH, {"c": {"peers": [{"peer_id": A}]}}, "loopchain/default")
    registry = Registry(specs, channel_auth=True)
    registry.register(A, "127.0.0.1:7100", "", b"")
    assert registry.version("c") == 1
    heavier = parse_channels(PATH, {"c": {"peers": [{"peer_id": A, "weight": 5}]}}, "org/x")["c"]
    assert registry.set_channel(heavier) == 2  # same member, another weight
    assert registry.channels["c"] is heavier
    more = parse_channels(PATH, {"c": {"peers": [{"peer_id": A}, {"peer_id": B}]}}, "org/x")["c"]
    assert registry.set_channel(more) == 3
    registry.register(B, "127.0.0.1:7200", "", b"")
    assert registry.members("c")[1].peer_id == B and registry.version("c") == 4
    fresh = parse_channels(PATH, {"e": {"peers": [{"peer_id": B}]}}, "org/x")["e"]
    assert registry.set_channel(fresh) == 1  # a new channel starts at 1 with its members
    assert [r.peer_id for r in registry.members("e")] == [B]


@pytest.mark.parametrize(
    "name", ["", "..", "../x", "a/b", ".hidden", "-x", "a b", "채널", "x" * 65, "a\x00b"]
)
def test_a_channel_name_that_is_not_a_safe_directory_name_is_refused(
    tmp_path: Path, name: str
) -> None:
    """A channel's name names a directory on every peer: the file cannot smuggle a path in."""
    with pytest.raises(ChannelDataError, match="must be 1 to 64 letters"):
        parse_channels(tmp_path / "cmd.json", {name: {}}, "loopchain/default")


def test_channel_names_of_the_rule_are_accepted(tmp_path: Path) -> None:
    names = ["loopchain_default", "kofia_2", "a", "_x", "ch.1-b", "x" * 64]
    specs = parse_channels(tmp_path / "cmd.json", {n: {} for n in names}, "loopchain/default")
    assert sorted(specs) == sorted(names)


def test_a_peer_refuses_a_grant_whose_channel_name_is_a_path() -> None:
    """Even a RadioStation that sends `../x` cannot make a peer write outside its storage."""
    from loopchain.p2p.radiostation_client import _grant
    from loopchain.protos import loopchain_pb2 as pb
    from loopchain.types.canonical import EncodingError

    with pytest.raises(EncodingError, match="must be 1 to 64 letters"):
        _grant(pb.ChannelInfo(channel="../x", score_package="loopchain/default"))


def test_only_a_leader_replaced_by_another_counts_as_a_leader_change() -> None:
    from loopchain.radiostation.main import leader_changes

    last: dict[str, str] = {}
    assert leader_changes(last, {"a": "", "b": ""}) == []  # no leader yet
    assert leader_changes(last, {"a": "X", "b": "Y"}) == []  # first seen: no change
    assert leader_changes(last, {"a": "", "b": "Y"}) == []  # a late heartbeat: unknown for now
    assert leader_changes(last, {"a": "X", "b": "Y"}) == []  # back to the same leader
    assert leader_changes(last, {"a": "Z", "b": "Y"}) == ["a"]
    assert leader_changes(last, {"a": "", "b": "X"}) == ["b"]
    assert last == {"a": "Z", "b": "X"}


class _Blocked:
    """A directory in the place of `path` (its file kept aside): every save of it fails until
    `free`, which puts the file back as a restart finds it."""

    def __init__(self, path: Path) -> None:
        self.path, self.aside = path, path.with_name(path.name + ".aside")
        path.rename(self.aside)
        path.mkdir()

    def free(self) -> None:
        self.path.rmdir()
        self.aside.rename(self.path)


def _station(tmp_path: Path, data: dict) -> Station:
    cmd = tmp_path / "channel_manage_data.json"
    cmd.write_text(json.dumps(data))
    config = load_config(environ={}, overrides={"CHANNEL_MANAGE_DATA_PATH": str(cmd)})
    specs = parse_channels(cmd, data, "loopchain/default")
    registry = Registry.open(tmp_path / "registry.json", specs, channel_auth=True)
    return Station(config, registry, Signer.generate(), time.time)


def _restarted(tmp_path: Path) -> Registry:
    cmd = tmp_path / "channel_manage_data.json"
    specs = parse_channels(cmd, json.loads(cmd.read_text()), "loopchain/default")
    return Registry.open(tmp_path / "registry.json", specs, channel_auth=True)


def test_a_channel_change_the_registry_cannot_save_is_refused_and_no_version_comes_back(
    tmp_path: Path,
) -> None:
    """A version once served is never served again for other content: a change whose registry
    save fails is refused whole (not applied, its channel file not written), and a restart
    starts from a version no lower than any served."""
    station = _station(tmp_path, {"c": {"peers": [{"peer_id": A}]}})
    station.registry.register(A, "127.0.0.1:7100", "", b"")
    served = {station.registry.version("c"): station.registry.channels["c"]}
    spec, version = channel_admin.add_member(station, {"channel": "c", "peer_id": B})
    served[version] = spec
    blocked = _Blocked(tmp_path / "registry.json")
    with pytest.raises(OSError, match="cannot save the registry"):
        channel_admin.add_member(station, {"channel": "c", "peer_id": C})
    assert station.registry.version("c") == version  # nothing served for the refused change
    assert station.registry.channels["c"] == spec
    assert channel_admin.channel_data(station) == json.loads(
        (tmp_path / "channel_manage_data.json").read_text()
    )  # the file and the running RadioStation agree
    blocked.free()
    again = _restarted(tmp_path)
    assert again.version("c") >= max(served)
    assert served.get(again.version("c"), again.channels["c"]) == again.channels["c"]
    station = Station(station.config, again, station.signer, time.time)
    spec, version = channel_admin.add_member(station, {"channel": "c", "peer_id": C})
    assert version not in served and spec.admits(C, "", True)  # the retry takes a new version


def test_a_channel_file_that_cannot_be_written_leaves_the_version_served_unchanged(
    tmp_path: Path,
) -> None:
    """The registry is saved with the new version first; when the channel file then cannot be
    written the change is refused and undone in memory, and a restart serves what the file
    holds under a version never served (as after a kill -9 between the two writes)."""
    station = _station(tmp_path, {"c": {"peers": [{"peer_id": A}]}})
    station.registry.register(A, "127.0.0.1:7100", "", b"")
    served = {station.registry.version("c"): station.registry.channels["c"]}
    blocked = _Blocked(tmp_path / "channel_manage_data.json")
    with pytest.raises(OSError, match=r"cannot write .*channel_manage_data\.json"):
        channel_admin.add_member(station, {"channel": "c", "peer_id": B})
    assert station.registry.version("c") in served
    assert station.registry.channels["c"] == served[station.registry.version("c")]
    blocked.free()
    again = _restarted(tmp_path)
    assert again.version("c") >= max(served)
    assert served.get(again.version("c"), again.channels["c"]) == again.channels["c"]


def test_a_registration_the_registry_cannot_save_is_refused_and_saved_when_retried(
    tmp_path: Path,
) -> None:
    station = _station(tmp_path, {"c": {"peers": [{"peer_id": A}, {"peer_id": B}]}})
    registry = station.registry
    registry.register(A, "127.0.0.1:7100", "", b"")
    served = registry.version("c")
    blocked = _Blocked(tmp_path / "registry.json")
    with pytest.raises(OSError, match=r"registry\.json"):
        registry.register(B, "127.0.0.1:7200", "", b"")
    assert registry.version("c") == served and [r.peer_id for r in registry.members("c")] == [A]
    with pytest.raises(UnknownPeer):
        registry.peer(B)  # not acknowledged, not served
    blocked.free()
    record = registry.register(B, "127.0.0.1:7200", "", b"")  # the peer's retry
    assert registry.version("c") == served + 1
    again = _restarted(tmp_path)
    assert again.peer(B) == record and again.version("c") == served + 1


def test_the_registry_takes_no_peer_past_its_bound_and_known_ones_still_update() -> None:
    """Open mode admits anyone who proves a key: the registry (and with it every channel's
    validator set) is bounded; a known peer may still move, and a removal makes room."""
    specs = parse_channels(PATH, {"c": {}}, "org/x")
    registry = Registry(specs, channel_auth=False, max_peers=3)
    signers = [Signer.generate() for _ in range(4)]
    for n, signer in enumerate(signers[:3]):
        registry.register(signer.address, f"127.0.0.1:{7100 + n}", "", signer.public_key)
    with pytest.raises(NotAdmitted, match="at most 3 peers"):
        registry.register(signers[3].address, "127.0.0.1:7400", "", signers[3].public_key)
    moved = registry.register(signers[0].address, "127.0.0.1:7500", "", signers[0].public_key)
    assert moved.target == "127.0.0.1:7500" and len(registry) == 3
    registry.remove(signers[1].address)
    registry.register(signers[3].address, "127.0.0.1:7400", "", signers[3].public_key)
    assert [r.peer_id for r in registry.members("c")] == [
        s.address for s in (signers[0], signers[2], signers[3])
    ]


def test_an_open_channel_takes_at_most_max_channel_peers_members() -> None:
    """An open channel admits every registered peer: up to MAX_PEERS (1,000) validators, each
    linking to every other, where a peer carries the links of MAX_CHANNEL_PEERS (256). A peer
    that could join no channel with room is refused (before: registered, and made a member
    of channels too large to link); a member still updates; a removal makes room."""
    specs = parse_channels(PATH, {"c": {}, "d": {}}, "org/x")
    registry = Registry(specs, channel_auth=False)
    signers = [Signer.generate() for _ in range(MAX_CHANNEL_PEERS + 1)]
    for n, signer in enumerate(signers[:MAX_CHANNEL_PEERS]):
        registry.register(signer.address, f"127.0.0.1:{10000 + n}", "", signer.public_key)
    late = signers[-1]
    with pytest.raises(NotAdmitted, match=r"channels 'c', 'd' each have 256 members, as many as"):
        registry.register(late.address, "127.0.0.1:7300", "", late.public_key)
    with pytest.raises(UnknownPeer):
        registry.peer(late.address)
    assert len(registry.members("c")) == MAX_CHANNEL_PEERS
    moved = registry.register(signers[0].address, "127.0.0.1:7500", "", signers[0].public_key)
    assert moved.target == "127.0.0.1:7500"  # a member still updates
    registry.remove(signers[1].address)
    registry.register(late.address, "127.0.0.1:7300", "", late.public_key)
    assert registry.members("d")[-1].peer_id == late.address
    assert len(registry.members("d")) == MAX_CHANNEL_PEERS


def test_a_peer_with_room_in_one_channel_joins_that_one_only() -> None:
    """Listed channels with auth on: `c` lists three peers but takes two; the third registers,
    as `d` (listing it) has room, and is a member of `d` only, until `c` has room."""
    signers = [Signer.generate() for _ in range(3)]
    data = {
        "c": {"peers": [{"peer_id": s.address} for s in signers]},
        "d": {"peers": [{"peer_id": signers[2].address}]},
    }
    registry = Registry(parse_channels(PATH, data, "org/x"), channel_auth=True, max_channel_peers=2)
    for n, signer in enumerate(signers):
        registry.register(signer.address, f"127.0.0.1:{7100 + n}", "", signer.public_key)
    assert [r.peer_id for r in registry.members("c")] == [s.address for s in signers[:2]]
    assert registry.channels_of(signers[2].address) == ["d"]
    version = registry.version("c")
    registry.remove(signers[0].address)
    assert [r.peer_id for r in registry.members("c")] == [s.address for s in signers[1:]]
    assert registry.version("c") == version + 1


def test_peers_left_out_of_a_full_channel_are_warned_of_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Channel auth turned off makes every registered peer one an open channel admits, more
    than it takes: the ones registered last stay out, and the log says so once, not at each
    refresh (before: left out without a word)."""
    signers = [Signer.generate() for _ in range(3)]
    data = {"c": {"peers": [{"peer_id": s.address} for s in signers[:2]]}}
    data["d"] = {"peers": [{"peer_id": signers[2].address}]}
    registry = Registry(parse_channels(PATH, data, "org/x"), channel_auth=True, max_channel_peers=2)
    for n, signer in enumerate(signers):
        registry.register(signer.address, f"127.0.0.1:{7100 + n}", "", signer.public_key)
    registry_log = "loopchain.radiostation.registry"
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name == registry_log
    ]
    caplog.set_level(logging.WARNING, logger=registry_log)
    registry.set_channel_auth(False)
    for port in (7500, 7501):  # moved: membership refreshed, the same peers left out
        registry.register(signers[0].address, f"127.0.0.1:{port}", "", signers[0].public_key)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == registry_log
    ]
    assert len(warnings) == 2, warnings  # one a channel
    for name, warning in zip("cd", warnings, strict=True):
        assert f"channel {name!r} admits 3 registered peers" in warning
        assert "the 1 registered last stay registered but are not members" in warning
    assert [r.peer_id for r in registry.members("c")] == [s.address for s in signers[:2]]


def _ids(count: int, start: int = 0) -> list[str]:
    return [f"hx{n:040x}" for n in range(start, start + count)]


def test_a_channel_lists_at_most_max_channel_peers(tmp_path: Path) -> None:
    """A channel's `peers` had no bound (a file, or the operator's API, could list 100,000
    entries, each a validator every peer would link to); a file or a change listing more than
    MAX_CHANNEL_PEERS is refused whole."""
    full = {"c": {"peers": [{"peer_id": p} for p in _ids(MAX_CHANNEL_PEERS)]}}
    assert len(parse_channels(PATH, full, "org/x")["c"].members or ()) == MAX_CHANNEL_PEERS
    over = {"c": {"peers": [{"peer_id": p} for p in _ids(MAX_CHANNEL_PEERS + 1)]}}
    with pytest.raises(ChannelDataError, match="lists 257 entries; a channel lists at most 256"):
        parse_channels(PATH, over, "org/x")
    station = _station(tmp_path, full)
    saved = (tmp_path / "channel_manage_data.json").read_text()
    version = station.registry.version("c")
    with pytest.raises(channel_admin.ChannelChangeError, match="lists 256 peers, as many as"):
        channel_admin.add_member(station, {"channel": "c", "peer_id": _ids(1, 10**6)[0]})
    new = {"channel": "d", "peers": over["c"]["peers"]}
    with pytest.raises(channel_admin.ChannelChangeError, match="at most 256"):
        channel_admin.add_channel(station, new)
    assert (tmp_path / "channel_manage_data.json").read_text() == saved
    assert station.registry.version("c") == version and list(station.registry.channels) == ["c"]


def test_the_channel_peer_bound_fits_the_links_and_the_registry() -> None:
    """Every peer of a full channel can link to every other (two streams each) within a peer's
    link streams and half its port's connections, and the RadioStation can register them all."""
    assert 2 * (MAX_CHANNEL_PEERS - 1) <= MAX_INBOUND_STREAMS
    assert MAX_CHANNEL_PEERS - 1 <= SERVER_MAX_CONNECTIONS // 2
    assert MAX_CHANNEL_PEERS <= MAX_PEERS


def _station_over(tmp_path: Path, data: dict, auth: bool, signer: Signer) -> Station:
    """A RadioStation (as it starts) over the channel file `data` and the registry in tmp_path."""
    path = tmp_path / "channel_manage_data.json"
    path.write_text(json.dumps(data))
    specs = parse_channels(path, data, "loopchain/default")
    registry = Registry.open(tmp_path / "registry.json", specs, channel_auth=auth)
    config = load_config(
        environ={},
        overrides={"CHANNEL_MANAGE_DATA_PATH": str(path), "ENABLE_CHANNEL_AUTH": auth},
    )
    return Station(config, registry, signer, time.time)


@pytest.mark.parametrize("change", ["a peer moves", "the file is edited"])
def test_a_version_once_served_is_never_served_for_other_content(
    tmp_path: Path, change: str
) -> None:
    """A set's weights and roles come from the channel file, and in open mode by a peer's
    target, none of which changed its version: a peer that moved kept its old weight in the set
    served until a restart, which then served other weights under the same version, as did a
    restart after an edit (a review found both). Peers drop a version they hold, so a change
    never reached the running ones, and restarted ones certified other content under it."""
    key, a, b = Signer.generate(), Signer.generate(), Signer.generate()
    if change == "a peer moves":  # open mode: the weight is the target's
        data: dict = {"c": {"peers": [{"peer_target": "10.0.0.1:7100", "weight": 5}]}}
    else:
        data = {"c": {"peers": [{"peer_id": a.address}, {"peer_id": b.address}]}}
    auth = change != "a peer moves"
    station = _station_over(tmp_path, data, auth, key)
    station.registry.register(a.address, "10.0.0.1:7100", "", a.public_key)
    station.registry.register(b.address, "10.0.0.2:7100", "", b.public_key)
    first = station.validator_set("c")
    assert station.validator_set("c") is first  # the same content: the same set, not bumped
    if change == "a peer moves":
        station.registry.register(a.address, "10.0.0.3:7100", "", a.public_key)
    else:
        data["c"]["peers"][0]["weight"] = 3
        station = _station_over(tmp_path, data, auth, key)  # the operator restarts it
    # the version heartbeats answer has grown already, and serving the set writes nothing
    assert station.registry.version("c") == first.version + 1
    saved = (tmp_path / "registry.json").read_bytes()
    second = station.validator_set("c")
    assert (tmp_path / "registry.json").read_bytes() == saved
    assert second.hash != first.hash and second.version == first.version + 1
    assert sorted(v.weight for v in second.validators) != sorted(v.weight for v in first.validators)
    restarted = _station_over(tmp_path, data, auth, key).validator_set("c")
    assert (restarted.version, restarted.hash) == (second.version, second.hash)
    # a change of membership takes the next version, once (not once for it, once for content)
    joiner, due = Signer.generate(), second.version + 1
    if auth:  # listing it is a change of its own (a validator without its key yet)
        data["c"]["peers"].append({"peer_id": joiner.address})
        station = _station_over(tmp_path, data, auth, key)
        assert station.registry.version("c") == due
        due += 1
    station.registry.register(joiner.address, "10.0.0.4:7100", "", joiner.public_key)
    assert station.validator_set("c").version == due


def _entry_by_search(spec: ChannelSpec, peer_id: str, target: str) -> MemberSpec | None:
    """What ChannelSpec.entry answered when it searched the list (before it was indexed)."""
    for member in spec.members or ():
        if member.peer_id and member.peer_id == peer_id:
            return member
    for member in spec.members or ():
        if not member.peer_id and member.target == target:
            return member
    return None


_IDS = st.sampled_from(["", "hxa", "hxb", "hxc"])
_TARGETS = st.sampled_from(["", "h:1", "h:2", "h:3"])


@given(
    members=st.one_of(
        st.none(),
        st.lists(
            st.builds(
                MemberSpec,
                peer_id=_IDS,
                target=_TARGETS,
                weight=st.integers(1, 3),
                role=st.sampled_from(["validator", "auditor"]),
            ),
            max_size=8,
        ).map(tuple),
    ),
    peer_id=_IDS,
    target=_TARGETS,
)
def test_a_channels_entry_for_a_peer_is_the_one_its_list_names_first(
    members: tuple[MemberSpec, ...] | None, peer_id: str, target: str
) -> None:
    spec = ChannelSpec("c", "loopchain/default", members)
    assert spec.entry(peer_id, target) is _entry_by_search(spec, peer_id, target)
