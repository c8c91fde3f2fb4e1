"""How often a registered peer may change its registration, over a RadioStation's real gRPC
server in this process (its clock is the test's: the RadioStation takes time as an argument) with
its registry in a real file: a change rewrites and syncs that file, so a member flipping its group
at each call had it rewritten at each call, and an INFO line logged each time."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.radiostation.channels import ChannelSpec
from loopchain.radiostation.main import create_grpc_server
from loopchain.radiostation.registry import Registry
from loopchain.radiostation.station import Station
from loopchain.radiostation.throttle import CHANGE_BURST, CHANGE_INTERVAL_S
from loopchain.types.crypto import Signer
from tests.integration._rs_helpers import connect_request
from tools.procs import free_port_pair

pytestmark = pytest.mark.asyncio

DEADLINE = 5.0
TARGET = "127.0.0.1:7100"  # nobody serves it: targets are not probed here


class Clock:
    """The RadioStation's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def station_stub(
    tmp_path: Path, clock: Clock
) -> AsyncIterator[tuple[pb_grpc.RadioStationStub, Path]]:
    """A RadioStation's gRPC server on a free port over a registry file in `tmp_path` (open mode,
    one channel, no target checks), a stub to it and the registry file's path."""
    port = free_port_pair()
    config = load_config(
        environ={},
        overrides={
            "PORT_RADIOSTATION": port,
            "IP_LOCAL": "127.0.0.1",
            "DEFAULT_STORAGE_PATH": str(tmp_path),
            "LOOPCHAIN_DEFAULT_CHANNEL": "c",
            "RADIOSTATION_CHECK_TARGETS": False,
        },
    )
    path = tmp_path / "registry.json"
    registry = Registry.open(path, {"c": ChannelSpec("c", "loopchain/default", None)}, False)
    server = create_grpc_server(Station(config, registry, Signer.generate(), clock))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.RadioStationStub(channel), path
    finally:
        await server.stop(None)


def saved_group(path: Path, signer: Signer) -> str:
    """The group the registry file holds for `signer`."""
    peers = json.loads(path.read_text())["peers"]
    return next(str(p["group_id"]) for p in peers if p["peer_id"] == signer.address)


async def test_a_peer_flipping_its_group_is_taken_a_few_times_then_once_an_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CHANGE_BURST changes are taken at once, the next is refused TIMEOUT (try later) saying
    when it is taken, without a write; repeats that change nothing are answered as always and
    logged at DEBUG; another peer's changes are taken meanwhile; CHANGE_INTERVAL_S later (on the
    RadioStation's clock) one more change is taken."""
    caplog.set_level(logging.DEBUG, logger="loopchain.radiostation.grpc_service")
    clock = Clock()
    member, other = Signer.generate(), Signer.generate()
    async with station_stub(tmp_path, clock) as (stub, path):

        async def connect(signer: Signer, group_id: str) -> pb.ConnectPeerReply:
            request = connect_request(signer, TARGET, group_id)
            return await stub.ConnectPeer(request, timeout=DEADLINE)

        assert (await connect(member, "g0")).code == 0
        for _ in range(3):
            assert (await connect(member, "g0")).code == 0
        groups = [f"g{(i + 1) % 2}" for i in range(CHANGE_BURST)]
        for group in groups:
            assert (await connect(member, group)).code == 0
            assert saved_group(path, member) == group
        before = path.read_bytes()
        refused = await connect(member, "g9")
        assert refused.code == -900, refused
        assert f"next change is taken in {CHANGE_INTERVAL_S:.1f} s" in refused.message
        assert path.read_bytes() == before
        assert (await connect(member, groups[-1])).code == 0  # no change: answered as always
        assert (await connect(other, "a")).code == 0
        assert (await connect(other, "b")).code == 0
        assert saved_group(path, other) == "b"
        clock.now += CHANGE_INTERVAL_S
        assert (await connect(member, "g9")).code == 0
        assert saved_group(path, member) == "g9"
        assert (await connect(member, "g8")).code == -900
    registered = [
        r.levelno
        for r in caplog.records
        if r.getMessage().startswith(f"peer {member.address} registered")
    ]
    changes = 1 + CHANGE_BURST + 1  # the first registration, the burst, the one an interval on
    assert registered.count(logging.INFO) == changes
    assert registered.count(logging.DEBUG) == 4  # the repeats that changed nothing
