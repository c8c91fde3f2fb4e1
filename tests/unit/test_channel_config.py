"""channel_manage_data.json: weights and groups become the channel's validator set shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopchain.radiostation.channels import ChannelDataError, parse_channels

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
        ({"peers": [{"peer_target": "127.0.0.1:7100", "group_id": "g"}]}, "missing from 'groups'"),
        ({"peers": [], "groups": {"g": {"weight": -1}}}, "weight"),
        ({"peers": [], "groups": {"g": {"size": 1}}}, "groups"),
        ({"peers": [], "groups": []}, "groups"),
    ],
)
def test_bad_weights_and_groups_are_named(channel: dict, message: str) -> None:
    with pytest.raises(ChannelDataError, match=message):
        parse_channels(PATH, {"c": channel}, "loopchain/default")


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
            PATH, {"c": {"peers": [{"peer_target": "127.0.0.1:7100", "role": "boss"}]}}, "x"
        )


A = "hx" + "a" * 40
B = "hx" + "b" * 40


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
        "x",
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
        ([{"peer_id": "hxNOTHEX"}], "peer_id must be"),
        ([{"peer_id": A}, {"peer_id": A}], "listed twice"),
        ([{"weight": 2}], "needs a peer_id"),
        ([{"peer_id": 5}], "peer_id must be"),
    ],
)
def test_bad_peer_entries_are_named(peers: list, message: str) -> None:
    with pytest.raises(ChannelDataError, match=message):
        parse_channels(PATH, {"c": {"peers": peers}}, "x")


def test_score_settings_are_read_and_bounded() -> None:
    settings = {"token": {"owner": A, "initial_supply": 5}}
    spec = parse_channels(PATH, {"c": {"score_settings": settings}}, "x")["c"]
    assert spec.score_settings == settings
    assert parse_channels(PATH, {"c": {}}, "x")["c"].score_settings == {}


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
        parse_channels(PATH, {"c": {"score_settings": settings}}, "x")
