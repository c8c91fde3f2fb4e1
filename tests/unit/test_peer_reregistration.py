"""The peer's heartbeat loop registers again when the RadioStation refuses a heartbeat because it
does not know the peer (PEER_UNKNOWN), and only then: at most once per HEARTBEAT_INTERVAL, with one
warning however many tries it takes, and not for a channel the RadioStation's new answer leaves
out (registering again cannot bring that one back).

The RadioStation is an in-memory stand-in with the client's calls the loop makes; the real
RadioStation's side is in tests/e2e/test_radiostation_reregistration.py."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from pathlib import Path

import pytest

from loopchain.configure import load_config
from loopchain.p2p.errors import ErrorKind, RequestError
from loopchain.p2p.memory import InMemoryNetwork
from loopchain.p2p.radiostation_client import (
    ChannelGrant,
    HeartbeatNews,
    RadioStationRefused,
    RadioStationUnreachable,
    Registration,
)
from loopchain.peer import node as node_module
from loopchain.peer.node import PeerNode, PeerOptions, WorkerSpec
from loopchain.storage.memory import MemoryStore
from loopchain.types.codes import ResponseCode
from loopchain.types.crypto import Signer
from loopchain.types.peer import PeerInfo, decode_settings
from loopchain.types.validators import ValidatorSet
from tests.unit._heartbeat import CHANNEL, HeartbeatChannel

pytestmark = pytest.mark.asyncio

ISSUER = "hx" + "2" * 40
TARGET = "127.0.0.1:7102"


class RadioStation:
    """Refuses heartbeats with `refusal` while set; `connect` answers `registration` (or raises
    `unreachable`), counting calls."""

    target = TARGET
    clock_offset = 0.0  # its clock agrees with the peer's
    settings_differ = ""  # the peer's settings are the others'
    unreadable_set = None  # every set it sends is read

    def __init__(self, refusal: int | None, registration: Registration | None) -> None:
        self.refusal = refusal
        self.registration = registration
        self.heartbeats = 0
        self.connects = 0
        self.validators: ValidatorSet | None = None  # what peer_list answers besides the peer
        self.lists = 0
        self.list_down = False  # peer_list raises RadioStationUnreachable

    async def heartbeat(
        self, signer: Signer, channel: str, peer_type: int, height: int, said: HeartbeatNews
    ) -> int:
        self.heartbeats += 1
        if self.refusal is not None:
            raise RadioStationRefused(f"refused ({self.refusal})", self.refusal)
        return 1

    async def connect(self, signer: Signer, my_target: str, group_id: str = "") -> Registration:
        self.connects += 1
        if self.registration is None:
            raise RadioStationUnreachable("not now")
        return self.registration

    async def peer_list(self, channel: str) -> tuple[list[PeerInfo], ValidatorSet | None]:
        self.lists += 1
        if self.list_down:
            raise RadioStationUnreachable("no peer list now")
        return [PeerInfo("hx" + "1" * 40, "127.0.0.1:7100", 1)], self.validators


def _node(tmp_path: Path, interval: float = 600.0) -> PeerNode:
    config = load_config(
        environ={},
        overrides={
            "HEARTBEAT_INTERVAL": interval,
            "HEARTBEAT_TIMEOUT": 2 * interval,
            "DEFAULT_STORAGE_PATH": str(tmp_path),
        },
    )
    node = PeerNode(config, PeerOptions(7100, (TARGET,), None, None, False))
    node.signer = Signer.generate()
    node.node_store = MemoryStore()
    node.channels[CHANNEL] = HeartbeatChannel()  # type: ignore[assignment]
    node.registration = Registration(1, ISSUER, (_grant(CHANNEL),))
    return node


def _grant(channel: str) -> ChannelGrant:
    return ChannelGrant(channel, "score/package", ValidatorSet(channel, 0, ()))


async def _beat(node: PeerNode, rs: RadioStation, rounds: int) -> None:
    """`rounds` rounds of heartbeats, all within one heartbeat interval (600 s)."""
    for _ in range(rounds):
        await node._heartbeats(rs, {}, False)  # type: ignore[arg-type]


def _warnings(caplog: pytest.LogCaptureFixture, words: str) -> int:
    return sum(
        1 for r in caplog.records if r.levelno == logging.WARNING and words in r.getMessage()
    )


async def test_an_unknown_peer_registers_again_once_per_interval_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node, rs = _node(tmp_path), RadioStation(ResponseCode.PEER_UNKNOWN, None)
    caplog.set_level(logging.DEBUG, "loopchain.peer.node")
    await _beat(node, rs, 3)
    assert rs.connects == 1  # three refusals within one interval: one try
    node._registered_again_at = -math.inf  # as if the interval had passed
    await _beat(node, rs, 1)
    assert rs.connects == 2
    assert _warnings(caplog, f"RadioStation {TARGET} does not know this peer") == 1

    rs.registration = Registration(7, ISSUER, (_grant(CHANNEL),))
    node._registered_again_at = -math.inf
    await _beat(node, rs, 1)
    assert rs.connects == 3
    assert node.node_store is not None
    assert b'"order": 7' in (node.node_store.get(b"radiostation_registration") or b"")
    assert _warnings(caplog, "now signs as") == 0
    assert _warnings(caplog, "grant") == 0


async def test_failed_registrations_are_tried_again_ever_later_until_one_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RadioStation that refuses or cannot be reached when the peer registers again (one that
    un-listed it probes it each time) is tried twice as long after each failure, up to
    MAX_REGISTER_AGAIN_WAIT_S; once one works, after HEARTBEAT_INTERVAL again."""
    monkeypatch.setattr(node_module, "MAX_REGISTER_AGAIN_WAIT_S", 300.0)
    node, rs = _node(tmp_path, interval=100.0), RadioStation(ResponseCode.PEER_UNKNOWN, None)
    loop = asyncio.get_running_loop()

    async def tries_after(seconds: float) -> int:
        """Registrations made by a heartbeat `seconds` after the last try."""
        before = rs.connects
        node._registered_again_at = loop.time() - seconds
        await _beat(node, rs, 1)
        return rs.connects - before

    await _beat(node, rs, 1)
    assert rs.connects == 1  # failed: the next in 200 s
    assert (await tries_after(150), await tries_after(250)) == (0, 1)  # failed: 300 s
    assert (await tries_after(250), await tries_after(350)) == (0, 1)  # failed: 300 s, the most
    assert (await tries_after(250), await tries_after(350)) == (0, 1)
    rs.registration = Registration(1, ISSUER, (_grant(CHANNEL),))
    assert await tries_after(350) == 1  # worked: back to the interval
    assert await tries_after(150) == 1


async def test_other_refusals_make_no_registration(tmp_path: Path) -> None:
    registration = Registration(1, ISSUER, (_grant(CHANNEL),))
    for code in (ResponseCode.FAIL, ResponseCode.NOT_FOUND):
        node, rs = _node(tmp_path), RadioStation(code, registration)
        await _beat(node, rs, 3)
        assert rs.connects == 0


async def test_a_changed_answer_is_warned_about_and_an_ungranted_channel_stops_registering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new RadioStation key and channels granted or not: warnings, nothing rebuilt; the refused
    channel is not granted any more, so its refusals make no more registrations."""
    other = Registration(1, "hx" + "3" * 40, (_grant("beta"),))
    node, rs = _node(tmp_path), RadioStation(ResponseCode.PEER_UNKNOWN, other)
    caplog.set_level(logging.INFO, "loopchain.peer.node")
    await _beat(node, rs, 1)
    assert rs.connects == 1
    assert _warnings(caplog, f"now signs as {other.radiostation_address}") == 1
    assert _warnings(caplog, f"channel(s) ['{CHANNEL}'] any more") == 1
    assert _warnings(caplog, "channel(s) ['beta'] it does not serve") == 1
    assert list(node.channels) == [CHANNEL]
    node._registered_again_at = -math.inf
    await _beat(node, rs, 2)
    assert rs.connects == 1
    rs.refusal = None  # the channel's member again: its refusals count again
    await _beat(node, rs, 1)
    rs.refusal = ResponseCode.PEER_UNKNOWN
    node._registered_again_at = -math.inf
    await _beat(node, rs, 1)
    assert rs.connects == 2


async def test_a_worker_that_cannot_leave_its_registration_for_the_cache_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel worker leaves what it registered again with in its channel folder for its
    peer's cache; when that write fails (here: a folder in the file's place; a full disk alike)
    it warns and its heartbeats go on (before, the error ended the worker)."""
    node = _node(tmp_path)
    node.options = dataclasses.replace(
        node.options,
        worker=WorkerSpec(_grant(CHANNEL), ISSUER, str(tmp_path / "w.sock"), Signer.generate()),
    )
    (node.root / CHANNEL / node_module.WORKER_REGISTRATION).mkdir(parents=True)
    rs = RadioStation(ResponseCode.PEER_UNKNOWN, Registration(2, ISSUER, (_grant(CHANNEL),)))
    await _beat(node, rs, 1)
    assert rs.connects == 1
    assert _warnings(caplog, "registration not left for the peer's cache") == 1
    rs.refusal = None
    await _beat(node, rs, 1)
    assert rs.heartbeats == 2


@pytest.mark.parametrize("role", ["validator", "auditor"])
async def test_an_unlisted_validator_still_takes_the_channels_set(
    tmp_path: Path, role: str
) -> None:
    """A peer the operator unlisted is refused as unknown, but while the chain still counts it as
    a validator it must vote for the change that removes it: it takes the channel's set and
    member list at each refused heartbeat (the member list keeps the peers the chain still
    counts: the chain decides when they leave), so it also learns the address of a validator
    listed after it left. An auditor has no such need and asks for nothing."""
    node, rs = _node(tmp_path), RadioStation(ResponseCode.PEER_UNKNOWN, None)
    channel = HeartbeatChannel(role)
    node.channels[CHANNEL] = channel  # type: ignore[assignment]
    rs.validators = ValidatorSet(CHANNEL, 7, ())
    await _beat(node, rs, 2)
    versions = [event.validators.version for event in channel.received]  # type: ignore[attr-defined]
    if role == "validator":
        assert versions == [7, 7]  # a known version costs the consensus nothing
    else:
        assert versions == [] and rs.lists == 0
    if role == "validator":  # with the members listed now (set_members keeps the chain's)
        assert [p.peer_id for p in channel.members] == ["hx" + "1" * 40]
    else:
        assert channel.members == []


async def test_a_peer_list_that_fails_leaves_the_set_for_the_next_heartbeat(
    tmp_path: Path,
) -> None:
    """The unlisted validator's fetch of the set fails: nothing is taken, the heartbeat loop goes
    on, and the next refused heartbeat fetches it."""
    node, rs = _node(tmp_path), RadioStation(ResponseCode.PEER_UNKNOWN, None)
    channel = HeartbeatChannel()
    node.channels[CHANNEL] = channel  # type: ignore[assignment]
    rs.validators = ValidatorSet(CHANNEL, 5, ())
    rs.list_down = True
    await _beat(node, rs, 1)
    assert rs.lists == 1 and channel.received == []
    rs.list_down = False
    await _beat(node, rs, 1)
    assert [event.validators.version for event in channel.received] == [5]  # type: ignore[attr-defined]


async def test_a_channel_no_longer_granted_stays_in_the_cached_registration(
    tmp_path: Path,
) -> None:
    """A registration made again, by the peer or by a channel worker, that no longer grants a
    channel leaves it in the cache: its chain may still count this peer, whose vote it needs
    until it hands over, and a start opens it then (and leaves it out of the cache once its
    chain no longer counts this peer). Overwritten, a second restart before the handover left
    that channel closed."""
    node = _node(tmp_path)
    assert node.node_store is not None
    first = Registration(1, ISSUER, (_grant(CHANNEL), _grant("other")))
    node.node_store.put(
        node_module.REGISTRATION_CACHE.encode(), node_module._encode_registration(first)
    )
    rs = RadioStation(ResponseCode.PEER_UNKNOWN, Registration(2, ISSUER, (_grant("other"),)))
    await _beat(node, rs, 1)
    assert rs.connects == 1

    def cached() -> list[str]:
        raw = node.node_store.get(node_module.REGISTRATION_CACHE.encode())  # type: ignore[union-attr]
        assert raw is not None
        return [grant.channel for grant in node_module._decode_registration(raw).channels]

    assert cached() == ["other", CHANNEL]
    worker_made = Registration(3, ISSUER, (_grant("third"),))
    (node.root / "third").mkdir(parents=True)
    (node.root / "third" / node_module.WORKER_REGISTRATION).write_bytes(
        node_module._encode_registration(worker_made)
    )
    node._take_worker_registrations()
    assert cached() == ["third", "other", CHANNEL]


async def test_an_unreadable_cached_registration_is_replaced_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = _node(tmp_path)
    assert node.node_store is not None
    key = node_module.REGISTRATION_CACHE.encode()
    node.node_store.put(key, b'{"order": 1, "channels": [{"channel": 7}]}')
    rs = RadioStation(ResponseCode.PEER_UNKNOWN, Registration(2, ISSUER, (_grant("other"),)))
    await _beat(node, rs, 1)
    raw = node.node_store.get(key)
    assert raw is not None
    assert [g.channel for g in node_module._decode_registration(raw).channels] == ["other"]
    assert _warnings(caplog, "the cached registration cannot be read") == 1


async def test_a_channel_whose_chain_cannot_be_read_is_not_opened_from_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel the RadioStation no longer grants is opened from the cached registration only
    when its chain, read from its real LevelDB store, counts this peer: one whose store is not a
    store is left closed, with a warning, and the start goes on."""
    node = _node(tmp_path)
    (node.root / "gone" / "blocks").mkdir(parents=True)  # a folder, but no LevelDB store in it
    cached = Registration(1, ISSUER, (_grant("gone"), _grant("nowhere")))
    got = await node._with_counted(Registration(2, ISSUER, ()), cached, "not granted")
    assert got.channels == ()
    assert _warnings(caplog, "channel gone: its chain cannot be read") == 1
    assert _warnings(caplog, "nowhere") == 0  # never opened here: nothing to read


class _NotRun:
    """A task group stand-in that runs nothing: the channel is only opened."""

    def create_task(self, coro, name: str | None = None) -> None:  # type: ignore[no-untyped-def]
        coro.close()


async def test_a_channel_opens_with_the_member_list_last_known(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Until the first heartbeat brings the RadioStation's member list, an opened channel has the
    one cached at the last: a restarted peer took no call from the others over TLS for a while
    ("not a party of channel"), and sent its own votes to nobody. A first start has none, nor
    has a channel whose cached list cannot be read (warned about; the opening goes on)."""
    node = _node(tmp_path)
    node.channels.clear()
    assert node.signer is not None
    node.transport = InMemoryNetwork().transport(node.signer.address)  # type: ignore[assignment]
    other = PeerInfo("hx" + "3" * 40, "127.0.0.1:7300", 2)
    node._cache_members("known", [PeerInfo(node.signer.address, "127.0.0.1:7100", 1), other])
    try:
        for name in ("known", "first"):
            grant = ChannelGrant(name, "score/package", ValidatorSet(name, 0, ()))
            await node._open_channel(grant, ISSUER, _NotRun())  # type: ignore[arg-type]
        assert other.peer_id in node.channels["known"].member_ids()
        assert [p.peer_id for p in node.channels["known"]._other_peers()] == [other.peer_id]
        assert other.peer_id not in node.channels["first"].member_ids()
        assert node.node_store is not None
        node.node_store.put(b"members/torn", b'[["hx' + b"4" * 40 + b'", 7')  # cut short
        grant = ChannelGrant("torn", "score/package", ValidatorSet("torn", 0, ()))
        await node._open_channel(grant, ISSUER, _NotRun())  # type: ignore[arg-type]
        assert node.channels["torn"].members == {}
        assert _warnings(caplog, "channel torn: the cached member list cannot be read") == 1
    finally:
        for store in node.stores:
            store.close()


async def test_heartbeats_refused_for_the_clock_still_bring_the_member_list(
    tmp_path: Path,
) -> None:
    """A RadioStation whose clock differs from the peers' by more than MAX_TIMESTAMP_SKEW refuses
    every heartbeat (FAIL). A peer that knew some members before (itself, the peers registered
    before it) must still learn the others: each refused heartbeat fetches the member list,
    which is not bound to the clock (review: a RadioStation 40 s ahead left each peer of a fresh
    network knowing only those registered before it, and no block was ever made)."""
    node, rs = _node(tmp_path), RadioStation(ResponseCode.FAIL, None)
    channel = HeartbeatChannel()
    channel.members = [PeerInfo("hx" + "3" * 40, TARGET, 2)]
    node.channels[CHANNEL] = channel  # type: ignore[assignment]
    await _beat(node, rs, 2)
    assert rs.lists == 2
    assert {p.peer_id for p in channel.members} >= {"hx" + "1" * 40}
    assert rs.connects == 0  # refused for its clock, not unknown: no registration


async def test_a_peer_starting_answers_not_now_and_an_unknown_channel_not_served(
    tmp_path: Path,
) -> None:
    """Before the RadioStation registered it, or while a granted channel opens, a peer answers
    UNAVAILABLE (REST 503, try again), not NOT_FOUND: clients of a peer restarting far from its
    RadioStation heard "not served by this peer" (404) for seconds (review)."""
    node = _node(tmp_path)
    node.channels.clear()
    node.registration = None
    with pytest.raises(RequestError) as starting:
        node.channel(CHANNEL)
    assert starting.value.kind is ErrorKind.UNAVAILABLE and "starting" in starting.value.message
    node.registration = Registration(1, ISSUER, (_grant(CHANNEL),))
    with pytest.raises(RequestError) as opening:
        node.channel(CHANNEL)
    assert opening.value.kind is ErrorKind.UNAVAILABLE and "opening" in opening.value.message
    with pytest.raises(RequestError) as unknown:
        node.channel("nosuch")
    assert unknown.value.kind is ErrorKind.NOT_FOUND


async def test_each_heartbeat_keeps_the_links_to_the_members_ready(tmp_path: Path) -> None:
    """A link unused for FORGET_LINK_S is closed when another is made: an idle channel keeps its
    links to its members through its heartbeats, answered with the member list's version
    unchanged (the list is not fetched again) or refused (the members last known still are)."""
    node, rs = _node(tmp_path), RadioStation(None, None)
    channel = node.channels[CHANNEL]
    versions: dict[str, int] = {}
    await node._heartbeats(rs, versions, False)  # type: ignore[arg-type]
    assert rs.lists == 1 and channel.kept_ready == 1  # type: ignore[attr-defined]
    await node._heartbeats(rs, versions, False)  # type: ignore[arg-type]
    assert rs.lists == 1 and channel.kept_ready == 2  # type: ignore[attr-defined]
    rs.refusal = ResponseCode.FAIL  # refused (its clock, say)
    await node._heartbeats(rs, versions, False)  # type: ignore[arg-type]
    assert channel.kept_ready == 3  # type: ignore[attr-defined]


async def test_a_clock_off_by_more_than_half_the_skew_is_warned_of_before_blocks_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The RadioStation takes a peer's heartbeats within MAX_TIMESTAMP_SKEW (30 s) of its
    clock, and each voter takes blocks within that of its own: two peers it finds fine, 20 s
    off either way, are 40 s apart and refuse each other's blocks. A peer off by more than half
    the skew warns (once an interval), so the operator sets it right before; its channels are
    not told its clock is off (the RadioStation takes it)."""
    node = _node(tmp_path)
    channel = node.channels[CHANNEL]
    with caplog.at_level(logging.WARNING, logger="loopchain.peer.node"):
        node._judge_clock(10.0)  # within half the skew: nothing said
        assert _warnings(caplog, "more than half MAX_TIMESTAMP_SKEW") == 0
        node._judge_clock(-20.0)
        node._judge_clock(-21.0)  # said once an interval
        assert _warnings(caplog, "clock is 20 s ahead of the RadioStation's, more than half") == 1
        assert _warnings(caplog, "more than half MAX_TIMESTAMP_SKEW") == 1
    assert node.clock_off is None and channel.clock_off is None


async def test_settings_said_to_differ_otherwise_at_each_heartbeat_are_warned_of_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One peer changing its values at each heartbeat changed what the RadioStation told every
    other peer, and each warned at each heartbeat (review). The peer's turn is said as it is
    taken (1 and 2 lead as 3 do: a peer set to 1 is not another)."""
    node = _node(tmp_path)
    with caplog.at_level(logging.INFO, logger="loopchain.peer.node"):
        for n in range(5):
            node._judge_settings(CHANNEL, f"MAX_BLOCK_TX_NUM 1000 here, {n} at 1 of 3 other peers")
        assert _warnings(caplog, "do not all run with the same settings") == 1
        node._judge_settings(CHANNEL, None)  # a RadioStation that compares nothing: no word
        assert "no longer says" not in caplog.text
        node._judge_settings(CHANNEL, "")
        assert "no longer says the peers' settings differ" in caplog.records[-1].getMessage()
    turn = load_config(environ={}, overrides={"LEADER_BLOCK_CREATION_LIMIT": 1})
    said = PeerNode(turn, PeerOptions(7100, (TARGET,), None, None, False))._settings
    assert decode_settings(said) == {
        **(decode_settings(node._settings) or {}),
        "LEADER_BLOCK_CREATION_LIMIT": 3,
    }
