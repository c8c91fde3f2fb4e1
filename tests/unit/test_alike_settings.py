"""The settings every peer of a channel must share, as heartbeats carry them and the RadioStation
compares them (radiostation/alike.py)."""

from __future__ import annotations

import logging
import time

import pytest

from loopchain.configure import load_config
from loopchain.radiostation.alike import SettingsWatch, compare
from loopchain.radiostation.channels import ChannelSpec
from loopchain.radiostation.registry import Registry
from loopchain.radiostation.station import Station
from loopchain.types import canonical
from loopchain.types.crypto import Signer
from loopchain.types.genesis import GenesisData
from loopchain.types.hashing import sha3_256
from loopchain.types.peer import (
    ALIKE_SETTINGS,
    MAX_SETTINGS_BYTES,
    decode_settings,
    encode_settings,
    heartbeat_digest,
    settings_digest,
)

DEFAULTS = decode_settings(encode_settings(load_config(environ={})))


def test_a_heartbeat_is_signed_as_before_and_its_settings_apart() -> None:
    """A RadioStation of an earlier version checks a heartbeat's signature over the fields it
    knows: the settings a peer of this version says are signed apart (review of this change: a
    settings field in the one signed digest had every heartbeat of an upgraded peer refused by
    a RadioStation not upgraded yet, "not signed by the key")."""
    body = {"peer_id": "hx1", "channel": "c", "peer_type": 0, "block_height": 7, "timestamp": 9}
    older = sha3_256(b"loopchain.heartbeat." + canonical.encode(body))
    assert heartbeat_digest("hx1", "c", 0, 7, 9) == older
    said = settings_digest(older, b'{"MAX_BLOCK_TX_NUM":1000}')
    assert said != settings_digest(older, b'{"MAX_BLOCK_TX_NUM":2000}')
    assert said != settings_digest(
        heartbeat_digest("hx1", "c", 0, 7, 10), b'{"MAX_BLOCK_TX_NUM":1000}'
    )


def test_a_configuration_says_every_alike_setting() -> None:
    assert DEFAULTS is not None and set(DEFAULTS) == set(ALIKE_SETTINGS)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"UNKNOWN": 1}',
        b'{"MAX_BLOCK_TX_NUM": true}',
        b'{"MAX_BLOCK_TX_NUM": "1000"}',
        b'{"MAX_BLOCK_TX_NUM": NaN}',
        b'{"MAX_BLOCK_TX_NUM": Infinity}',
        b'{"MAX_BLOCK_TX_NUM": 1' + b"0" * MAX_SETTINGS_BYTES + b"}",
        b'{"MAX_BLOCK_TX_NUM": ' + b"9" * 400 + b"}",  # raised converting it (review)
        b'{"MAX_BLOCK_TX_NUM": -1e300}',
    ],
)
def test_settings_that_are_not_a_small_object_of_known_numbers_are_not_looked_at(
    raw: bytes,
) -> None:
    assert decode_settings(raw) is None


def test_known_settings_are_taken_and_others_left_out() -> None:
    raw = (
        b'{"MAX_BLOCK_TX_NUM": 500, "MAX_TIMESTAMP_SKEW": 30.5, "OTHER": 1, "SCORE_STEP_LIMIT": []}'
    )
    assert decode_settings(raw) == {"MAX_BLOCK_TX_NUM": 500, "MAX_TIMESTAMP_SKEW": 30.5}


def test_a_comparison_names_each_setting_its_value_here_and_elsewhere() -> None:
    own = {"LEADER_BLOCK_CREATION_LIMIT": 5, "MAX_TIMESTAMP_SKEW": 30.0, "MAX_BLOCK_TX_NUM": 10}
    others = [
        {"LEADER_BLOCK_CREATION_LIMIT": 20, "MAX_TIMESTAMP_SKEW": 30.0},
        {"LEADER_BLOCK_CREATION_LIMIT": 20, "MAX_TIMESTAMP_SKEW": 60.0},
        {"LEADER_BLOCK_CREATION_LIMIT": 5, "MAX_TIMESTAMP_SKEW": 30},
    ]
    assert compare(own, others) == (  # 2 peers of 4 hold 5, 2 others 20: a tie, no minority
        "LEADER_BLOCK_CREATION_LIMIT 5 here, 20 at 2 of 3 other peers; "
        "MAX_TIMESTAMP_SKEW 30 here, 60 at 1 of 3 other peers",
        False,
    )
    assert compare(own, others, skip=("LEADER_BLOCK_CREATION_LIMIT",)) == (
        "MAX_TIMESTAMP_SKEW 30 here, 60 at 1 of 3 other peers",
        False,
    )
    assert compare(own, []) == ("", False)
    assert compare(own, [own, own]) == ("", False)
    assert compare(own, others[:2])[1]  # 1 of 3 holds 5
    assert not compare(own, others[:2], skip=("LEADER_BLOCK_CREATION_LIMIT",))[1]


def test_the_radiostation_logs_a_peer_in_a_minority_once_a_difference_at_most_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer that changes its values at each heartbeat logged a line each (review)."""
    now = [0.0]
    watch = SettingsWatch(lambda: now[0])
    own, other = {"MAX_BLOCK_TX_NUM": 10}, {"MAX_BLOCK_TX_NUM": 1000}
    with caplog.at_level(logging.INFO, logger="loopchain.radiostation.alike"):
        for _ in range(3):
            said = watch.judge("c", "hxa", own, [other, other], (), 8)
        assert said == "MAX_BLOCK_TX_NUM 10 here, 1000 at 2 of 2 other peers"
        watch.judge("c", "hxb", other, [other, own], (), 8)  # in the majority: not logged
        for n in range(20, 40):  # another value at each heartbeat: not a line each
            watch.judge("c", "hxa", {"MAX_BLOCK_TX_NUM": n}, [other, other], (), 8)
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        now[0] = SettingsWatch.WARN_EVERY_S
        watch.judge("c", "hxa", {"MAX_BLOCK_TX_NUM": 50}, [other, other], (), 8)
        assert len(caplog.records) == 2 and "50 here" in caplog.records[-1].getMessage()
        watch.judge("c", "hxa", other, [other, other], (), 8)
        assert "no longer runs with settings of its own" in caplog.records[-1].getMessage()


def test_a_peer_off_in_many_channels_is_logged_once_in_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What was logged is remembered per channel and peer, up to the pairs the channels count:
    bounded by the peers alone, a peer off in 30 channels was logged again at every heartbeat
    (review)."""
    watch = SettingsWatch(lambda: 0.0)
    own, other = {"MAX_BLOCK_TX_NUM": 10}, {"MAX_BLOCK_TX_NUM": 1000}
    with caplog.at_level(logging.WARNING, logger="loopchain.radiostation.alike"):
        for _ in range(3):
            for channel in range(30):
                watch.judge(f"c{channel}", "hxa", own, [other, other], (), 4 * 30 + 16)
    assert len(caplog.records) == 30


def test_the_step_limit_and_turn_are_not_compared_where_the_channel_states_its_own() -> None:
    """A channel whose genesis_data states score_step_limit runs every SCORE with it, whatever
    the peers' SCORE_STEP_LIMIT, and one that states leader_block_creation_limit has every peer
    take that turn: theirs may differ."""
    config = load_config(environ={})
    stated = GenesisData((), score_step_limit=0x1000, leader_block_creation_limit=4)
    step = GenesisData((), score_step_limit=0x1000)
    channels = {
        "stated": ChannelSpec("stated", "loopchain/default", None, genesis=stated),
        "step": ChannelSpec("step", "loopchain/default", None, genesis=step),
        "plain": ChannelSpec("plain", "loopchain/default", None),
    }
    station = Station(config, Registry(channels, False), Signer.generate(), time.time)
    peers = [Signer.generate().address for _ in range(2)]
    for peer in peers:
        station.registry.register(peer, "127.0.0.1:7100", "", b"")
    assert DEFAULTS is not None
    low = {**DEFAULTS, "SCORE_STEP_LIMIT": 10, "LEADER_BLOCK_CREATION_LIMIT": 5}
    for name in channels:
        station.registry.heartbeat(peers[0], name, 0, 0, time.time(), None, DEFAULTS)
        station.registry.heartbeat(peers[1], name, 0, 0, time.time(), None, low)
    assert station.settings_differ("stated", peers[1], low) == ""
    assert station.settings_differ("step", peers[1], low) == (
        "LEADER_BLOCK_CREATION_LIMIT 5 here, 20 at 1 of 1 other peers"
    )
    assert station.settings_differ("plain", peers[1], low) == (
        "LEADER_BLOCK_CREATION_LIMIT 5 here, 20 at 1 of 1 other peers; "
        "SCORE_STEP_LIMIT 10 here, 1000000 at 1 of 1 other peers"
    )
