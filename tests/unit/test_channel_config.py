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
    assert spec.peer_weights == {"127.0.0.1:7100": 3, "127.0.0.1:7200": 1, "127.0.0.1:7300": 2}
    assert spec.peer_groups == {"127.0.0.1:7200": "g", "127.0.0.1:7300": "g"}
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
    assert spec.admits("127.0.0.1:7200", channel_auth=True)
    assert spec.is_validator("127.0.0.1:7100") and not spec.is_validator("127.0.0.1:7200")
    with pytest.raises(ChannelDataError, match="role"):
        parse_channels(
            PATH, {"c": {"peers": [{"peer_target": "127.0.0.1:7100", "role": "boss"}]}}, "x"
        )
