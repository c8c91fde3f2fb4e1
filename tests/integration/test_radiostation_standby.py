"""A peer's RadioStations (-r primary,standby) over real gRPC servers on 127.0.0.1: an unreachable
one is left for the next at once; a busy one (RESOURCE_EXHAUSTED, as gRPC answers a call past the
server's bound) is tried again BUSY_TRIES times first, and only then left for the next."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p import grpc_util
from loopchain.p2p.radiostation_client import (
    BUSY_TRIES,
    RadioStationBusy,
    RadioStations,
    RadioStationUnreachable,
)
from loopchain.peer.main import configured_radiostations
from loopchain.peer.node import REGISTRATION_CACHE, PeerNode, PeerOptions
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.storage.memory import MemoryStore
from loopchain.types.crypto import Signer
from tests.unit._heartbeat import HeartbeatChannel
from tools.procs import free_port_pair

pytestmark = pytest.mark.asyncio

CONFIG = load_config(environ={}, overrides={"GRPC_TIMEOUT": 2.0})
SIGNER = Signer.generate()
ALWAYS = 1 << 30
BUSY = grpc.StatusCode.RESOURCE_EXHAUSTED


class Station(pb_grpc.RadioStationServicer):
    """Answers heartbeats with its own peer-list version, counting calls; the first `failing`
    calls are answered `code` instead (a registration is, always); with `hold`, the first call
    waits for `release`, holding its call."""

    def __init__(
        self, version: int, failing: int = 0, code: grpc.StatusCode = BUSY, hold: bool = False
    ) -> None:
        self.version = version
        self.failing = failing
        self.code = code
        self.calls = 0
        self.held = asyncio.Event() if hold else None  # set once the first call is held
        self.release = asyncio.Event()

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> Any:
        await self._fail_or_hold(context)
        return pb.HeartbeatReply(code=0, peer_list_version=self.version)

    async def ConnectPeer(self, request: pb.ConnectPeerRequest, context: Any) -> Any:
        await self._fail_or_hold(context)
        await context.abort(self.code, "no registration in these tests")

    async def _fail_or_hold(self, context: Any) -> None:
        self.calls += 1
        if self.held is not None and self.calls == 1:
            self.held.set()
            await self.release.wait()
        if self.calls <= self.failing:
            await context.abort(self.code, "Concurrent RPC limit exceeded!")


async def _serve(
    station: Station, max_rpcs: int | None = None, max_receive: int | None = None
) -> tuple[grpc.aio.Server, str]:
    port = free_port_pair()
    server = grpc_util.create_server(CONFIG, max_rpcs=max_rpcs, max_receive=max_receive)
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
        assert standby.calls == 2

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


async def test_a_busy_radiostation_is_asked_again_not_left_for_the_standby(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A primary that answers busy fewer than BUSY_TRIES times answers the call: the standby is
    not asked and nothing is logged as a switch."""
    primary, standby = Station(1, failing=2), Station(2)
    primary_server, primary_target = await _serve(primary)
    standby_server, standby_target = await _serve(standby)
    stations = RadioStations([primary_target, standby_target], CONFIG)
    try:
        assert await stations.heartbeat(SIGNER, "alpha", 0, 1) == 1
        assert (primary.calls, standby.calls) == (3, 0)
        assert stations.target == primary_target
        assert "in place of" not in caplog.text
        assert BUSY_TRIES > primary.failing  # the case this test makes
    finally:
        await stations.close()
        await primary_server.stop(grace=0)
        await standby_server.stop(grace=0)


async def test_an_always_busy_radiostation_is_left_for_the_standby_after_its_tries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A primary busy at each of its BUSY_TRIES tries is left for the standby, which answers and
    is used from then on (the switch is logged with why); with the standby down too, the error is
    RadioStationBusy, naming the primary busy and the standby unreachable."""
    primary, standby = Station(1, failing=ALWAYS), Station(2)
    primary_server, primary_target = await _serve(primary)
    standby_server, standby_target = await _serve(standby)
    stations = RadioStations([primary_target, standby_target], CONFIG)
    try:
        assert await stations.heartbeat(SIGNER, "alpha", 0, 1) == 2
        assert (primary.calls, standby.calls) == (BUSY_TRIES, 1)
        assert stations.target == standby_target
        assert f"{standby_target} answers in place of {primary_target}: busy" in caplog.text

        await standby_server.stop(grace=0)
        stations._current = 0  # the primary first again
        with pytest.raises(RadioStationBusy) as raised:
            await stations.heartbeat(SIGNER, "alpha", 0, 2)
        message = str(raised.value)
        assert f"{primary_target}: busy (RESOURCE_EXHAUSTED, {BUSY_TRIES} tries)" in message
        assert f"{standby_target}: UNAVAILABLE" in message
        assert primary.calls == 2 * BUSY_TRIES
    finally:
        await stations.close()
        await primary_server.stop(grace=0)
        await standby_server.stop(grace=0)


async def test_a_radiostation_at_its_call_bound_is_busy_and_answers_once_a_call_ends() -> None:
    """gRPC's own answer to a call past the server's bound (maximum_concurrent_rpcs, MAX_CALLS on
    the RadioStation) is busy: with its one call held, RadioStationBusy; once it ends, answers."""
    station = Station(1, hold=True)
    server, target = await _serve(station, max_rpcs=1)
    options = [("grpc.use_local_subchannel_pool", 1)]  # its own connection
    holder = grpc.aio.insecure_channel(target, options=options)
    stations = RadioStations([target], CONFIG)
    try:
        stub = pb_grpc.RadioStationStub(holder)
        held = asyncio.ensure_future(stub.Heartbeat(pb.HeartbeatRequest(), timeout=30))
        assert station.held is not None
        await station.held.wait()
        with pytest.raises(RadioStationBusy, match=f"{target}: busy \\(RESOURCE_EXHAUSTED"):
            await stations.heartbeat(SIGNER, "alpha", 0, 1)
        assert station.calls == 1  # refused by gRPC before the servicer
        station.release.set()
        await held
        assert await stations.heartbeat(SIGNER, "alpha", 0, 2) == 1
    finally:
        await stations.close()
        await holder.close()
        await server.stop(grace=0)


async def test_an_unavailable_radiostation_is_left_for_the_standby_at_once() -> None:
    """UNAVAILABLE is not busy: the standby is asked after one call to the primary."""
    primary = Station(1, failing=ALWAYS, code=grpc.StatusCode.UNAVAILABLE)
    standby = Station(2)
    primary_server, primary_target = await _serve(primary)
    standby_server, standby_target = await _serve(standby)
    stations = RadioStations([primary_target, standby_target], CONFIG)
    try:
        assert await stations.heartbeat(SIGNER, "alpha", 0, 1) == 2
        assert (primary.calls, standby.calls) == (1, 1)
        assert stations.target == standby_target
        await standby_server.stop(grace=0)
        with pytest.raises(RadioStationUnreachable) as raised:
            await stations.heartbeat(SIGNER, "alpha", 0, 2)
        assert not isinstance(raised.value, RadioStationBusy)
    finally:
        await stations.close()
        await primary_server.stop(grace=0)
        await standby_server.stop(grace=0)


def _node(tmp_path: Path, target: str, channels: int) -> PeerNode:
    config = load_config(
        environ={},
        overrides={
            "GRPC_TIMEOUT": 2.0,
            "HEARTBEAT_INTERVAL": 600.0,
            "HEARTBEAT_TIMEOUT": 1200.0,
            "DEFAULT_STORAGE_PATH": str(tmp_path),
        },
    )
    node = PeerNode(config, PeerOptions(7100, (target,), None, None, False))
    node.signer = SIGNER
    node.node_store = MemoryStore()
    for index in range(channels):
        node.channels[f"c{index}"] = HeartbeatChannel()  # type: ignore[assignment]
    return node


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_busy_radiostation_is_warned_about_as_busy_once_an_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer's heartbeats (three channels, three rounds within one HEARTBEAT_INTERVAL) to an
    always busy RadioStation make one warning, which says busy; so does its registration, which
    then uses the last one it was given (after BUSY_TRIES tries)."""
    station = Station(1, failing=ALWAYS)
    server, target = await _serve(station)
    node = _node(tmp_path, target, channels=3)
    stations = RadioStations([target], node.config)
    caplog.set_level(logging.DEBUG, "loopchain")
    try:
        for _ in range(3):
            await node._heartbeats(stations, {}, False)
        assert station.calls == 3 * 3 * BUSY_TRIES
        warnings = _warnings(caplog)
        assert len(warnings) == 1, warnings
        assert f"RadioStation busy ({target}: busy (RESOURCE_EXHAUSTED" in warnings[0]
        node._busy_logged_at = -1e9  # as if the interval had passed
        await node._heartbeats(stations, {}, False)
        assert len(_warnings(caplog)) == 2

        caplog.clear()
        assert node.node_store is not None
        cached = b'{"order": 4, "radiostation_address": "hx%s", "channels": []}' % (b"2" * 40)
        node.node_store.put(REGISTRATION_CACHE.encode(), cached)
        registration = await node._register(stations, asyncio.Event())
        assert registration is not None and registration.order == 4
        assert station.calls == 4 * 3 * BUSY_TRIES + BUSY_TRIES
        warnings = _warnings(caplog)
        assert len(warnings) == 1 and f"RadioStation {target} busy (" in warnings[0], warnings
        assert "unreachable" not in caplog.text
    finally:
        await stations.close()
        await server.stop(grace=0)


async def test_a_request_over_a_size_bound_is_not_busy() -> None:
    """gRPC answers RESOURCE_EXHAUSTED to a message over a size bound too; no try again changes
    that: the RadioStation is left at once, and the error does not say busy."""
    primary = Station(1)
    primary_server, primary_target = await _serve(primary, max_receive=64)
    stations = RadioStations([primary_target], CONFIG)
    try:
        with pytest.raises(RadioStationUnreachable) as raised:
            await stations.heartbeat(SIGNER, "alpha", 0, 1)
        assert not isinstance(raised.value, RadioStationBusy)
        assert "RESOURCE_EXHAUSTED" in str(raised.value) and "busy" not in str(raised.value)
        assert primary.calls == 0
    finally:
        await stations.close()
        await primary_server.stop(grace=0)
