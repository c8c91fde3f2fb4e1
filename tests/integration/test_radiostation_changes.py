"""How often a registered peer may change its registration, over a RadioStation's real gRPC
server in this process (its clock is the test's: the RadioStation takes time as an argument) with
its registry in a real file: a change rewrites and syncs that file, so a member flipping its group
at each call had it rewritten at each call, and an INFO line logged each time."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.configure import load_config
from loopchain.p2p.radiostation_client import RadioStations
from loopchain.peer.node import PeerNode, PeerOptions
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.radiostation import grpc_service
from loopchain.radiostation.channels import ChannelSpec
from loopchain.radiostation.main import create_grpc_server
from loopchain.radiostation.probe import MAX_PROBES_PER_SOURCE
from loopchain.radiostation.registry import Registry
from loopchain.radiostation.station import Station
from loopchain.radiostation.throttle import CHANGE_BURST, CHANGE_INTERVAL_S
from loopchain.storage.memory import MemoryStore
from loopchain.types.crypto import Signer
from loopchain.types.peer import encode_settings
from tests.integration._rs_helpers import connect_request, heartbeat_request
from tests.integration._targets import TinyPeer, hanging_peer, served, tiny_peer
from tests.unit._heartbeat import HeartbeatChannel
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
    tmp_path: Path, clock: Clock, check_targets: bool = False, monotonic: Clock | None = None
) -> AsyncIterator[tuple[pb_grpc.RadioStationStub, Path, str]]:
    """A RadioStation's gRPC server on a free port over a registry file in `tmp_path` (open mode,
    one channel, targets probed only if `check_targets`), a stub to it, the registry file's path
    and the station's target. Its monotonic clock is `monotonic`, or `clock` too."""
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
    station = Station(config, registry, Signer.generate(), clock, monotonic or clock)
    server = create_grpc_server(station)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.RadioStationStub(channel), path, f"127.0.0.1:{port}"
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
    async with station_stub(tmp_path, clock) as (stub, path, _):

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


async def test_a_wall_clock_set_back_does_not_hold_a_peers_next_change(tmp_path: Path) -> None:
    """The allowance of changes refills on the monotonic clock: a wall clock set back an hour
    after a peer used its changes refuses its next one for CHANGE_INTERVAL_S, not for the hour
    (review: it was counted on the wall clock)."""
    wall, monotonic = Clock(), Clock()
    member = Signer.generate()
    async with station_stub(tmp_path, wall, monotonic=monotonic) as (stub, path, _):

        async def connect(group_id: str) -> pb.ConnectPeerReply:
            request = connect_request(member, TARGET, group_id)
            return await stub.ConnectPeer(request, timeout=DEADLINE)

        assert (await connect("g0")).code == 0
        for index in range(CHANGE_BURST):
            assert (await connect(f"g{index + 1}")).code == 0
        assert (await connect("late")).code == -900
        wall.now -= 3600.0
        monotonic.now += CHANGE_INTERVAL_S
        assert (await connect("late")).code == 0
        assert saved_group(path, member) == "late"


async def test_moves_refused_busy_take_none_of_a_peers_changes(tmp_path: Path) -> None:
    """While registrations hold every probe slot its source has (MAX_PROBES_PER_SOURCE: all
    callers here are this host), a peer's move to its new target is
    refused busy (RESOURCE_EXHAUSTED) CHANGE_BURST times; once the slots are free its move is
    taken, on a clock that never moved. Before, each busy try took one of its changes (a peer's
    client tries a busy station BUSY_TRIES times a call): the move was refused -900 and the
    station kept listing its old target."""
    clock = Clock()
    member = Signer.generate()
    async with (
        station_stub(tmp_path, clock, check_targets=True) as (stub, path, _),
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
            for _ in range(MAX_PROBES_PER_SOURCE)
        ]
        try:

            async def slots_held() -> bool:
                return hanging.entered == MAX_PROBES_PER_SOURCE

            await wait_until_async(slots_held, DEADLINE, "every probe slot held")
            for _ in range(CHANGE_BURST):
                with pytest.raises(grpc.aio.AioRpcError) as busy:
                    await stub.ConnectPeer(connect_request(member, new_target), timeout=DEADLINE)
                assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, busy.value
                assert "MAX_PROBES" in (busy.value.details() or ""), busy.value
        finally:
            hanging.release.set()
            strangers = await asyncio.gather(*held)
        assert [reply.code for reply in strangers] == [-1] * MAX_PROBES_PER_SOURCE  # no key
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
        station_stub(tmp_path, clock, check_targets=True) as (stub, path, _),
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


async def test_a_registration_that_changes_nothing_is_answered_without_a_probe(
    tmp_path: Path,
) -> None:
    """A registered peer's request that changes nothing (a peer's retry, or a captured one sent
    in a loop: its signature covers no fresh value) is answered from the registry. Each had its
    target probed: the loop held the peer's one probe slot, its own registrations refused busy,
    and had the station dial it hundreds of times a second (review). A change is still probed."""
    member = Signer.generate()
    peer = TinyPeer(member.address, "", member)
    async with (
        station_stub(tmp_path, Clock(), check_targets=True) as (stub, path, _),
        served(pb_grpc.add_PeerServiceServicer_to_server, peer) as target,
        tiny_peer(member) as new_target,
    ):
        peer.target = target
        captured = connect_request(member, target)
        first = await stub.ConnectPeer(captured, timeout=DEADLINE)
        assert first.code == 0 and len(peer.challenges) == 1, first
        replies = await asyncio.gather(
            *(stub.ConnectPeer(captured, timeout=DEADLINE) for _ in range(20))
        )
        assert [(r.code, r.order) for r in replies] == [(0, first.order)] * 20
        assert len(peer.challenges) == 1  # none probed again
        moved = await stub.ConnectPeer(connect_request(member, new_target), timeout=DEADLINE)
        assert moved.code == 0 and saved_target(path, member) == new_target
        back = await stub.ConnectPeer(captured, timeout=DEADLINE)  # a change again: probed
        assert back.code == 0 and len(peer.challenges) == 2


def peer_node(tmp_path: Path, radiostation: str, signer: Signer, **settings: float) -> PeerNode:
    """A PeerNode of `signer` at 127.0.0.1:7100 as its start and heartbeat loop see it (no
    channels in this process, as when they run in workers), beating every 50 ms, with
    `settings` over the defaults."""
    config = load_config(
        environ={},
        overrides={
            "DEFAULT_STORAGE_PATH": str(tmp_path),
            "LOOPCHAIN_HOST": "127.0.0.1",
            "GRPC_TIMEOUT": DEADLINE,
            "HEARTBEAT_INTERVAL": 0.05,
            "HEARTBEAT_TIMEOUT": 60.0,
            **settings,
        },
    )
    node = PeerNode(config, PeerOptions(7100, (radiostation,), None, None, False))
    node.signer = signer
    node.node_store = MemoryStore()
    return node


async def test_a_peer_refused_for_changing_too_often_registers_its_target_once_it_may(
    tmp_path: Path,
) -> None:
    """A peer that moved CHANGE_BURST times in a row restarts at its former target: the station
    refuses the change -900 (try again later) and the peer starts on its cached registration;
    its heartbeat loop registers again, refused while the allowance is spent, and once it
    refilled (the station's clock moved CHANGE_INTERVAL_S) the station lists the peer's target.
    Before, the peer went on with its cache and registered again only when told PEER_UNKNOWN,
    which a registered peer never is: the station listed its last target elsewhere for good."""
    clock = Clock()
    signer = Signer.generate()
    async with station_stub(tmp_path / "rs", clock) as (stub, path, rs_target):
        node = peer_node(tmp_path / "peer", rs_target, signer)
        stations = RadioStations([rs_target], node.config)
        stop = asyncio.Event()
        try:
            # 1. registered (and cached) at its target, then moved CHANGE_BURST times elsewhere
            assert await node._register(stations, stop) is not None
            assert saved_target(path, signer) == node.target == "127.0.0.1:7100"
            for n in range(CHANGE_BURST):
                elsewhere = connect_request(signer, f"127.0.0.1:{7200 + n}")
                assert (await stub.ConnectPeer(elsewhere, timeout=DEADLINE)).code == 0
            moved_away = f"127.0.0.1:{7200 + CHANGE_BURST - 1}"
            # 2. started again at its target: refused for now, it runs on its cached registration
            started = await node._register(stations, stop)
            assert started is not None and started.order == 1
            assert saved_target(path, signer) == moved_away
            # 3. its heartbeat loop registers again: refused until the allowance refills
            beating = asyncio.ensure_future(node._heartbeat_loop(stations, stop))
            try:

                async def tried_again() -> bool:
                    return node._register_again_wait > float(node.config.HEARTBEAT_INTERVAL)

                await wait_until_async(tried_again, DEADLINE, "a registration tried again")
                assert saved_target(path, signer) == moved_away
                clock.now += CHANGE_INTERVAL_S

                async def listed_at_its_target() -> bool:
                    return saved_target(path, signer) == node.target

                await wait_until_async(
                    listed_at_its_target, 30.0, f"the station to list the peer at {node.target}"
                )
            finally:
                stop.set()
                await beating
        finally:
            await stations.close()


async def test_heartbeats_older_than_the_clock_skew_are_forgotten_and_replays_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay check kept the last heartbeat of every peer and channel ever heard, removed
    peers' too (review). A heartbeat older than MAX_TIMESTAMP_SKEW is refused as off the clock
    whatever the table holds, so those are forgotten once the table grows."""
    monkeypatch.setattr(grpc_service, "BEAT_SWEEP_MIN", 4)
    clock = Clock()
    config = load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(tmp_path)})
    registry = Registry.open(
        tmp_path / "registry.json", {"c": ChannelSpec("c", "loopchain/default", None)}, False
    )
    service = grpc_service.RadioStationService(Station(config, registry, Signer.generate(), clock))
    signers = [Signer.generate() for _ in range(6)]
    for n, signer in enumerate(signers):
        registry.register(signer.address, f"127.0.0.1:{7100 + n}", "", signer.public_key)
    old = [heartbeat_request(s, "c", timestamp_us=int(clock.now * 1e6)) for s in signers[:4]]
    assert [
        service._heartbeat_problem(beat, "c", grpc_service.digest_of(beat)) for beat in old
    ] == [None] * 4
    clock.now += float(config.MAX_TIMESTAMP_SKEW) + 1
    for signer in signers[4:]:  # the table passes its bound: the old ones go
        beat = heartbeat_request(signer, "c", timestamp_us=int(clock.now * 1e6))
        assert service._heartbeat_problem(beat, "c", grpc_service.digest_of(beat)) is None
    assert len(service._last_beat) == 2
    problem = service._heartbeat_problem(old[0], "c", grpc_service.digest_of(old[0]))  # sent again
    assert problem is not None and "off this clock" in problem[1]


async def _a_peer_heard(
    tmp_path: Path, stub: Any, rs_target: str, **settings: float
) -> tuple[PeerNode, HeartbeatChannel, RadioStations]:
    """A peer registered at the RadioStation `stub` serves, with one channel "c" and
    `settings` over the defaults, after one round of heartbeats: its node, channel and
    RadioStation clients."""
    signer = Signer.generate()
    request = connect_request(signer, "127.0.0.1:7100")
    assert (await stub.ConnectPeer(request, timeout=DEADLINE)).code == 0
    node = peer_node(tmp_path / "peer", rs_target, signer, **settings)
    channel = HeartbeatChannel(name="c")
    node.channels["c"] = channel  # type: ignore[assignment]
    stations = RadioStations([rs_target], node.config)
    await node._heartbeats(stations, {}, False)
    return node, channel, stations


async def test_a_peer_whose_clock_is_off_is_told_so_and_still_learns_its_members(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer 10 minutes behind the RadioStation's clock has its heartbeats refused (off this
    clock): it is told how far off it is (the answer carries the station's clock), warns, tells
    its channels (which then refuse client transactions while they refuse blocks for their time
    too), and still fetches its member list. Before, a new peer so off never learnt a member,
    never synced, and said why only in debug lines; clients' transactions it acknowledged were
    lost."""
    clock = Clock()
    clock.now = time.time() + 600
    async with station_stub(tmp_path / "rs", clock) as (stub, _, rs_target):
        with caplog.at_level(logging.WARNING, logger="loopchain.peer.node"):
            node, channel, stations = await _a_peer_heard(tmp_path, stub, rs_target)
        signer = node.signer
        assert signer is not None
        try:
            assert stations.clock_offset is not None and 595 < stations.clock_offset < 605
            assert channel.clock_off is not None and node.clock_off == channel.clock_off
            assert "clock is 600 s behind the RadioStation's" in channel.clock_off
            assert "set the wrong one right (NTP)" in caplog.text
            assert [p.peer_id for p in channel.members] == [signer.address]
            clock.now = time.time()  # the clock set right
            await node._heartbeats(stations, {}, False)
            assert stations.clock_offset is not None and abs(stations.clock_offset) < 5
            assert channel.clock_off is None and node.clock_off is None
        finally:
            await stations.close()


async def test_a_peer_set_otherwise_than_the_others_is_told_how_and_the_radiostation_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every peer of a channel must run with the same LEADER_BLOCK_CREATION_LIMIT (and the other
    ALIKE_SETTINGS); one set otherwise acted as a faulty peer, refusing every block with "but the
    leader is ..." (operator review). Each heartbeat says the peer's settings: the RadioStation
    answers how they differ from the channel's other connected peers', which the peer warns of,
    and logs the one in a minority. An older peer's heartbeat (no settings) is taken as before."""
    clock = Clock()
    clock.now = time.time()
    defaults = encode_settings(load_config(environ={}))
    async with station_stub(tmp_path / "rs", clock) as (stub, _, rs_target):
        others = [Signer.generate() for _ in range(3)]
        for n, other in enumerate(others):
            request = connect_request(other, f"127.0.0.1:{7200 + 100 * n}")
            assert (await stub.ConnectPeer(request, timeout=DEADLINE)).code == 0
        compared = []
        for other in others[:2]:  # two peers set as every peer is by default
            beat = heartbeat_request(other, "c", settings=defaults)
            reply = await stub.Heartbeat(beat, timeout=DEADLINE)
            assert reply.code == 0 and reply.settings_differ == ""
            compared.append(reply.HasField("settings_differ"))
        assert compared == [False, True]  # the first had none to be compared with
        older = await stub.Heartbeat(heartbeat_request(others[2], "c"), timeout=DEADLINE)
        assert older.code == 0 and not older.HasField("settings_differ")
        # settings signed by another key: the heartbeat is taken, its settings not looked at
        forged = heartbeat_request(
            others[2], "c", settings=encode_settings({"MAX_BLOCK_TX_NUM": 1})
        )
        forged.settings_signature = Signer.generate().sign(b"\x00" * 32)
        reply = await stub.Heartbeat(forged, timeout=DEADLINE)
        assert reply.code == 0 and not reply.HasField("settings_differ")
        with caplog.at_level(logging.INFO):
            node, _channel, stations = await _a_peer_heard(
                tmp_path, stub, rs_target, LEADER_BLOCK_CREATION_LIMIT=5
            )
        try:
            said = "LEADER_BLOCK_CREATION_LIMIT 5 here, 20 at 2 of 2 other peers"
            assert stations.settings_differ == said
            warned = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert [r.name for r in warned if said in r.getMessage()] == [
                "loopchain.radiostation.alike",  # in a minority: the RadioStation says so
                "loopchain.peer.node",
            ]
            # a peer set as the majority is told too; the RadioStation logs no more
            beat = heartbeat_request(others[0], "c", settings=defaults)
            reply = await stub.Heartbeat(beat, timeout=DEADLINE)
            assert reply.settings_differ == (
                "LEADER_BLOCK_CREATION_LIMIT 20 here, 5 at 1 of 2 other peers"
            )
            warned = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert [r.name for r in warned] == [
                "loopchain.radiostation.grpc_service",  # the forged settings
                "loopchain.radiostation.alike",
                "loopchain.peer.node",
            ]
            # set right (a restart with the others' settings): the peer says so
            node._settings = defaults
            caplog.clear()
            with caplog.at_level(logging.INFO):
                await node._heartbeats(stations, {}, False)
            assert stations.settings_differ == ""
            assert "the RadioStation no longer says the peers' settings differ" in caplog.text
            assert "no longer runs with settings of its own" in caplog.text
        finally:
            await stations.close()


async def test_a_peer_stops_being_connected_on_time_whatever_steps_the_clock_makes(
    tmp_path: Path,
) -> None:
    """Whether a peer is still connected is judged on the monotonic clock: a RadioStation whose
    clock was set back ten minutes lists a peer that stopped beating as disconnected once
    HEARTBEAT_TIMEOUT has passed, not ten minutes later; the heartbeat's time shown is the clock's
    (clock review)."""
    clock, monotonic = Clock(), Clock()
    config = load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(tmp_path)})
    registry = Registry.open(
        tmp_path / "registry.json", {"c": ChannelSpec("c", "loopchain/default", None)}, False
    )
    station = Station(config, registry, Signer.generate(), clock, monotonic)
    service = grpc_service.RadioStationService(station)
    signer = Signer.generate()
    registry.register(signer.address, "127.0.0.1:7100", "", signer.public_key)
    beat = heartbeat_request(signer, "c", timestamp_us=int(clock.now * 1e6))
    assert (await service.Heartbeat(beat, None)).code == 0  # type: ignore[arg-type]  # no TLS
    assert [(v.status, v.status_update_time) for v in station.view("c")] == [(1, clock.now)]
    clock.now -= 600  # the clock set back; the peer beats no more
    monotonic.now += float(config.HEARTBEAT_TIMEOUT) + 1
    assert [v.status for v in station.view("c")] == [2]  # disconnected


async def test_a_channels_set_is_made_again_only_when_what_makes_it_changed(tmp_path: Path) -> None:
    """Every GetPeerList (any caller's) asks for the set: it was made again each time to be
    compared with the one signed (3.4 ms of the loop with 256 members)."""
    config = load_config(environ={}, overrides={"DEFAULT_STORAGE_PATH": str(tmp_path)})
    registry = Registry.open(
        tmp_path / "registry.json", {"c": ChannelSpec("c", "loopchain/default", None)}, False
    )
    station = Station(config, registry, Signer.generate(), time.time)
    made = 0
    unsigned_set = station._unsigned_set

    def counted(channel: str, version: int) -> Any:
        nonlocal made
        made += 1
        return unsigned_set(channel, version)

    station._unsigned_set = counted  # type: ignore[method-assign]
    a, b = Signer.generate(), Signer.generate()
    registry.register(a.address, "127.0.0.1:7100", "", a.public_key)
    first = station.validator_set("c")
    made_first = made
    assert [station.validator_set("c") for _ in range(5)] == [first] * 5
    assert made == made_first
    registry.register(b.address, "127.0.0.1:7200", "", b.public_key)
    second = station.validator_set("c")
    assert second.peer_ids == [a.address, b.address] and second.version > first.version
    assert made > made_first
    assert second.verify_issuer(station.signer.address)
    made_second = made
    assert station.validator_set("c") is second and made == made_second
    # a record changed in what the set does not carry (open mode: groups are the channel's):
    # made again to compare, the same set, then kept
    registry.register(b.address, "127.0.0.1:7200", "g", b.public_key)
    assert station.validator_set("c") is second and made > made_second
    made_third = made
    assert station.validator_set("c") is second and made == made_third


async def test_a_peer_told_its_clock_is_off_forgets_it_while_the_radiostation_is_silent(
    tmp_path: Path,
) -> None:
    """The RadioStation's word that this peer's clock is off is one of the two signs on which
    its channels refuse client transactions: once the RadioStation stops answering, that word is
    no longer current, and the channels no longer hold it (a channel refusing on it refused for
    good when the clock was set right while the RadioStation was down; review)."""
    clock = Clock()
    clock.now = time.time() + 600
    async with station_stub(tmp_path / "rs", clock) as (stub, _, rs_target):
        node, channel, stations = await _a_peer_heard(tmp_path, stub, rs_target)
        assert channel.clock_off is not None
    try:
        await node._heartbeats(stations, {}, False)  # the RadioStation stopped: no answer
        assert stations.clock_offset is None
        assert channel.clock_off is None and node.clock_off is None
    finally:
        await stations.close()
