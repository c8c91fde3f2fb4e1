"""A peer's RadioStations (-r primary,standby) over real gRPC servers on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p import grpc_util
from loopchain.p2p.radiostation_client import RadioStations, RadioStationUnreachable
from loopchain.peer.main import configured_radiostations
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.crypto import Signer
from tools.procs import free_port_pair

pytestmark = pytest.mark.asyncio

CONFIG = load_config(environ={}, overrides={"GRPC_TIMEOUT": 2.0})
SIGNER = Signer.generate()


class Station(pb_grpc.RadioStationServicer):
    """Answers heartbeats with its own peer-list version, counting them."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.heartbeats = 0

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> Any:
        self.heartbeats += 1
        return pb.HeartbeatReply(code=0, peer_list_version=self.version)


async def _serve(station: Station) -> tuple[grpc.aio.Server, str]:
    port = free_port_pair()
    server = grpc_util.create_server(CONFIG)
    pb_grpc.add_RadioStationServicer_to_server(station, server)
    grpc_util.bind(server, "127.0.0.1", port)
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_the_standby_answers_while_the_primary_is_down_and_is_kept_after() -> None:
    """With the primary unreachable a call goes to the standby, which is then asked first; when
    the standby goes down too, the primary (up again) takes over; with none up the call fails
    naming the last one tried."""
    primary, standby = Station(1), Station(2)
    standby_server, standby_target = await _serve(standby)
    primary_target = f"127.0.0.1:{free_port_pair()}"  # nobody listens there yet
    stations = RadioStations([primary_target, standby_target], CONFIG)
    primary_server = None
    try:
        assert stations.target == primary_target
        assert await stations.heartbeat(SIGNER, "alpha", 0, 1) == 2
        assert stations.target == standby_target
        assert await stations.heartbeat(SIGNER, "alpha", 0, 2) == 2
        assert standby.heartbeats == 2

        primary_server, up_again = await _serve(primary)
        await stations.close()
        stations = RadioStations([up_again, standby_target], CONFIG)
        await standby_server.stop(grace=0)
        stations._current = 1  # as after a fail-over to the standby
        assert await stations.heartbeat(SIGNER, "alpha", 0, 3) == 1
        assert stations.target == up_again
        await primary_server.stop(grace=0)
        with pytest.raises(RadioStationUnreachable, match=standby_target):
            await stations.heartbeat(SIGNER, "alpha", 0, 4)
    finally:
        await stations.close()
        await standby_server.stop(grace=0)
        if primary_server is not None:
            await primary_server.stop(grace=0)


async def test_the_standby_comes_from_r_or_from_radiostation_standby_target() -> None:
    """`-r a,b` names the standby; RADIOSTATION_STANDBY_TARGET adds one after a single target
    (with PORT_RADIOSTATION when it names a host only); two from -r are kept as they are."""
    config = load_config(environ={"RADIOSTATION_STANDBY_TARGET": "10.0.0.2"})
    assert configured_radiostations("10.0.0.1:7102", config) == ("10.0.0.1:7102", "10.0.0.2:7102")
    assert configured_radiostations("a:1,b:2", config) == ("a:1", "b:2")
    assert configured_radiostations("a:1,b:2", load_config(environ={})) == ("a:1", "b:2")
    assert configured_radiostations(None, load_config(environ={})) == ("127.0.0.1:7102",)
