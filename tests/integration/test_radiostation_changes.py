"""How often a registered peer may change its registration, over a RadioStation's real gRPC
server in this process (its clock is the test's: the RadioStation takes time as an argument) with
its registry in a real file: a change rewrites and syncs that file, so a member flipping its group
at each call had it rewritten at each call, and an INFO line logged each time."""

from __future__ import annotations

import asyncio
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
from loopchain.radiostation.probe import MAX_PROBES
from loopchain.radiostation.registry import Registry
from loopchain.radiostation.station import Station
from loopchain.radiostation.throttle import CHANGE_BURST, CHANGE_INTERVAL_S
from loopchain.types.crypto import Signer
from tests.integration._rs_helpers import connect_request
from tests.integration._targets import hanging_peer, tiny_peer
from tools.procs import free_port_pair, wait_until_async

pytestmark = pytest.mark.asyncio

DEADLINE = 5.0
TARGET = "127.0.0.1:7100"  # nobody serves it: targets are not probed (unless a test says so)


class Clock:
    """The RadioStation's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def station_stub(
    tmp_path: Path, clock: Clock, check_targets: bool = False
) -> AsyncIterator[tuple[pb_grpc.RadioStationStub, Path]]:
    """A RadioStation's gRPC server on a free port over a registry file in `tmp_path` (open mode,
    one channel, targets probed only if `check_targets`), a stub to it and the registry file's
    path."""
    port = free_port_pair()
    config = load_config(
        environ={},
        overrides={
            "PORT_RADIOSTATION": port,
            "IP_LOCAL": "127.0.0.1",
            "DEFAULT_STORAGE_PATH": str(tmp_path),
            "LOOPCHAIN_DEFAULT_CHANNEL": "c",
            "RADIOSTATION_CHECK_TARGETS": check_targets,
            "GRPC_TIMEOUT": 60.0,  # a probe's deadline: a held probe is released by the test
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
    return saved(path, signer, "group_id")


def saved_target(path: Path, signer: Signer) -> str:
    """The target the registry file holds for `signer`."""
    return saved(path, signer, "target")


def saved(path: Path, signer: Signer, field: str) -> str:
    peers = json.loads(path.read_text())["peers"]
    return next(str(p[field]) for p in peers if p["peer_id"] == signer.address)


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


async def test_moves_refused_busy_take_none_of_a_peers_changes(tmp_path: Path) -> None:
    """While MAX_PROBES registrations hold every probe slot, a peer's move to its new target is
    refused busy (RESOURCE_EXHAUSTED) CHANGE_BURST times; once the slots are free its move is
    taken, on a clock that never moved. Before, each busy try took one of its changes (a peer's
    client tries a busy station BUSY_TRIES times a call): the move was refused -900 and the
    station kept listing its old target."""
    clock = Clock()
    member = Signer.generate()
    async with (
        station_stub(tmp_path, clock, check_targets=True) as (stub, path),
        tiny_peer(member) as old_target,
        tiny_peer(member) as new_target,
        hanging_peer() as (hanging_target, hanging),
    ):
        first = await stub.ConnectPeer(connect_request(member, old_target), timeout=DEADLINE)
        assert first.code == 0, first
        held = [
            asyncio.ensure_future(
                stub.ConnectPeer(connect_request(Signer.generate(), hanging_target), timeout=60)
            )
            for _ in range(MAX_PROBES)
        ]
        try:

            async def slots_held() -> bool:
                return hanging.entered == MAX_PROBES

            await wait_until_async(slots_held, DEADLINE, "every probe slot held")
            for _ in range(CHANGE_BURST):
                with pytest.raises(grpc.aio.AioRpcError) as busy:
                    await stub.ConnectPeer(connect_request(member, new_target), timeout=DEADLINE)
                assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, busy.value
                assert "MAX_PROBES" in (busy.value.details() or ""), busy.value
        finally:
            hanging.release.set()
            strangers = await asyncio.gather(*held)
        assert [reply.code for reply in strangers] == [-1] * MAX_PROBES  # no key proved
        assert saved_target(path, member) == old_target
        moved = await stub.ConnectPeer(connect_request(member, new_target), timeout=DEADLINE)
        assert moved.code == 0, f"the move after {CHANGE_BURST} busy tries was refused: {moved}"
        assert saved_target(path, member) == new_target


async def test_moves_to_a_target_that_does_not_answer_take_none_of_a_peers_changes(
    tmp_path: Path,
) -> None:
    """CHANGE_BURST moves to a target nobody serves, and as many replays of an old signed move
    there (its signature covers no fresh value), are refused -900 by the probe and change
    nothing; the peer's move to its live new target is then taken, on a clock that never moved.
    Before, each of them took one of the peer's changes and that move was refused -900."""
    clock = Clock()
    member = Signer.generate()
    dead_target = f"127.0.0.1:{free_port_pair()}"
    captured = connect_request(member, dead_target)  # signed once, e.g. seen on the wire
    async with (
        station_stub(tmp_path, clock, check_targets=True) as (stub, path),
        tiny_peer(member) as old_target,
        tiny_peer(member) as new_target,
    ):
        first = await stub.ConnectPeer(connect_request(member, old_target), timeout=DEADLINE)
        assert first.code == 0, first
        for _ in range(CHANGE_BURST):
            dead = await stub.ConnectPeer(connect_request(member, dead_target), timeout=DEADLINE)
            replayed = await stub.ConnectPeer(captured, timeout=DEADLINE)
            for reply in (dead, replayed):
                assert reply.code == -900 and "did not prove the key" in reply.message, reply
        assert saved_target(path, member) == old_target
        moved = await stub.ConnectPeer(connect_request(member, new_target), timeout=DEADLINE)
        assert moved.code == 0, (
            f"the move after {2 * CHANGE_BURST} failed probes was refused: {moved}"
        )
        assert saved_target(path, member) == new_target
