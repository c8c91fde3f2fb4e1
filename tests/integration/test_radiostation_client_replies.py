"""What a peer makes of a RadioStation's registration answer that says success (code 0) but
cannot be used, over a stand-in RadioStation's real gRPC server on 127.0.0.1: a refusal naming
what is wrong (RadioStationRefused, which the peer's callers handle), never another error: a
ValueError from an empty key escaped the heartbeat loop's task group and stopped the peer."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p.grpc_util import refuse
from loopchain.p2p.radiostation_client import RadioStationRefused, RadioStations
from loopchain.peer.node import PeerNode, PeerOptions
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.channel_name import MAX_CHANNELS
from loopchain.types.crypto import Signer
from loopchain.types.peer import PeerInfo
from loopchain.types.validators import MAX_SET_PEERS
from tests.integration._targets import served

pytestmark = pytest.mark.asyncio

CONFIG = load_config(environ={}, overrides={"GRPC_TIMEOUT": 5.0})
SIGNER = Signer.generate()
BAD_KEYS = [b"", b"\x02" + bytes(32), b"not a key"]


class Answering(pb_grpc.RadioStationServicer):
    """Answers every registration with `reply`, counting them."""

    def __init__(self, reply: pb.ConnectPeerReply, peers: pb.PeerListReply | None = None) -> None:
        self.reply = reply
        self.peers = peers or pb.PeerListReply()
        self.calls = 0
        self.lists = 0  # peer lists asked

    async def ConnectPeer(self, request: pb.ConnectPeerRequest, context: Any) -> Any:
        self.calls += 1
        return self.reply

    async def GetPeerList(self, request: pb.ChannelRequest, context: Any) -> Any:
        self.lists += 1
        return self.peers


def serving(station: Answering) -> AbstractAsyncContextManager[str]:
    """`station` served on a free port of 127.0.0.1; its target."""
    return served(pb_grpc.add_RadioStationServicer_to_server, station)


def answer_with_key(key: bytes) -> Answering:
    return Answering(pb.ConnectPeerReply(code=0, order=1, radiostation_public_key=key))


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_a_registration_answered_without_a_valid_key_is_refused(key: bytes) -> None:
    station = answer_with_key(key)
    async with serving(station) as target:
        stations = RadioStations([target], CONFIG)
        try:
            with pytest.raises(RadioStationRefused) as raised:
                await stations.connect(SIGNER, "127.0.0.1:7100")
        finally:
            await stations.close()
    message = str(raised.value)
    assert f"RadioStation {target} sent a malformed registration" in message
    assert f"its public key ({len(key)} bytes) is not a secp256k1 key" in message
    assert station.calls == 1


async def test_registering_again_with_such_an_answer_leaves_the_peer_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat loop's registering again (for a RadioStation that does not know the peer)
    takes the malformed answer as a refusal: logged, tried again later, the peer goes on."""
    config = CONFIG.replace(DEFAULT_STORAGE_PATH=str(tmp_path))
    node = PeerNode(config, PeerOptions(7100, ("127.0.0.1:1",), None, None, False))
    node.signer = SIGNER
    caplog.set_level(logging.DEBUG, "loopchain")
    station = answer_with_key(b"")
    async with serving(station) as target:
        stations = RadioStations([target], config)
        try:
            await node._register_again(stations)
        finally:
            await stations.close()
    assert station.calls == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("registering again: " in w and "malformed registration" in w for w in warnings)
    assert node._register_again_wait > float(config.HEARTBEAT_INTERVAL)  # later, less often


async def test_a_registration_granting_more_channels_than_a_radiostation_serves_is_refused() -> (
    None
):
    """Each granted channel is opened (a block store, a SCORE process, links): more than
    MAX_CHANNELS come from no RadioStation of this project."""
    reply = pb.ConnectPeerReply(
        code=0,
        order=1,
        radiostation_public_key=SIGNER.public_key,
        channels=[pb.ChannelInfo(channel=f"c{i}") for i in range(MAX_CHANNELS + 1)],
    )
    async with serving(Answering(reply)) as target:
        stations = RadioStations([target], CONFIG)
        try:
            with pytest.raises(RadioStationRefused, match=f"{MAX_CHANNELS + 1} channels, more"):
                await stations.connect(SIGNER, "127.0.0.1:7100")
        finally:
            await stations.close()


def entry(index: int, target: str = "") -> pb.PeerEntry:
    return pb.PeerEntry(
        peer_id=f"hx{index:040x}", target=target or f"127.0.0.1:{7100 + index}", order=index
    )


async def test_a_peer_list_longer_than_a_channel_lists_is_refused_unread() -> None:
    """Each listed peer is a link opened and kept: a list of 300,000 took 430 MB."""
    peers = pb.PeerListReply(peers=[entry(i) for i in range(MAX_SET_PEERS + 1)])
    async with serving(Answering(pb.ConnectPeerReply(), peers)) as target:
        stations = RadioStations([target], CONFIG)
        try:
            with pytest.raises(RadioStationRefused, match="malformed peer list of c"):
                await stations.peer_list("c")
            peers.peers.pop()
            listed, _ = await stations.peer_list("c")
        finally:
            await stations.close()
    assert len(listed) == MAX_SET_PEERS


async def test_a_validator_set_this_peer_cannot_read_is_said_once_and_its_peers_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A set a RadioStation of a newer version sends may state what this version does not know
    (as a genesis key added since): it was dropped without a word (rolling-upgrade review). The
    peers of the list are taken, and the peer warns once a reason."""
    peers = pb.PeerListReply(peers=[entry(0)], validator_set=b'{"channel": "c", "version": 1}')
    config = CONFIG.replace(DEFAULT_STORAGE_PATH=str(tmp_path))
    node = PeerNode(config, PeerOptions(7100, ("127.0.0.1:1",), None, None, False))
    async with serving(Answering(pb.ConnectPeerReply(), peers)) as target:
        stations = RadioStations([target], CONFIG)
        try:
            with caplog.at_level(logging.WARNING, "loopchain"):
                for _ in range(3):
                    listed, validators = await stations.peer_list("c")
                    node._warn_unreadable_set(stations, "c")
            reason = stations.unreadable_set
            peers.ClearField("validator_set")
            await stations.peer_list("c")
            assert stations.unreadable_set is None
        finally:
            await stations.close()
    assert listed == [PeerInfo(f"hx{0:040x}", "127.0.0.1:7100", 0, "")] and validators is None
    assert reason is not None
    assert f"RadioStation {target} sent a validator set of channel c that this peer" in reason
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"channel c: {reason}"]


async def test_peers_listed_at_no_host_and_port_or_twice_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A target with a scheme ("unix:/path") had this peer dial a local socket. One warning a
    list, naming the first and counting the rest (one an entry: 999 lines for one list)."""
    bad = ["unix:/tmp/x.sock", "dns:///a:1", "127.0.0.1", "a..b:1", "127.0.0.1:99999"]
    peers = pb.PeerListReply(
        peers=[entry(0), *(entry(i + 1, t) for i, t in enumerate(bad)), entry(0, "h:1")]
    )
    async with serving(Answering(pb.ConnectPeerReply(), peers)) as target:
        stations = RadioStations([target], CONFIG)
        try:
            listed, _ = await stations.peer_list("c")
        finally:
            await stations.close()
    assert listed == [PeerInfo(f"hx{0:040x}", "127.0.0.1:7100", 0, "")]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert "'unix:/tmp/x.sock' (not host:port)" in warned[0]
    assert warned[0].endswith(f"of c: left out and {len(bad)} more"), warned[0]


class Refusing(Answering):
    """Refuses every peer list as a RadioStation refuses one to a peer no party of the channel."""

    def __init__(self) -> None:
        super().__init__(pb.ConnectPeerReply())

    async def GetPeerList(self, request: pb.ChannelRequest, context: Any) -> Any:
        self.lists += 1
        return refuse(context, grpc.StatusCode.PERMISSION_DENIED, "peer hx1 is not a party of c")


async def test_a_peer_list_refused_is_the_radiostations_answer_not_tried_at_a_standby() -> None:
    """It was taken for the RadioStation down: its standby was asked in its place (and used
    from then on), and the refusal was logged at DEBUG only (review)."""
    refusing, standby = Refusing(), Answering(pb.ConnectPeerReply(), pb.PeerListReply())
    async with serving(refusing) as first, serving(standby) as second:
        stations = RadioStations([first, second], CONFIG)
        try:
            with pytest.raises(RadioStationRefused) as refused:
                await stations.peer_list("c")
        finally:
            await stations.close()
    assert "PERMISSION_DENIED: peer hx1 is not a party of c" in str(refused.value)
    assert refusing.lists == 1 and standby.lists == 0
