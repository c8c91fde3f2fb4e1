"""The real radiostation.py process over gRPC and REST (free ports, temp storage)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from loopchain.p2p.codec import peer_status_to_json
from loopchain.p2p.grpc_util import SERVER_MAX_CONNECTIONS
from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.radiostation.main import GRPC_CONNECTIONS, MAX_CALLS
from loopchain.radiostation.probe import MAX_PROBES, MAX_PROBES_PER_SOURCE
from loopchain.radiostation.rest import MAX_CONCURRENT_STATUS_QUERIES, MAX_STATUS_REQUESTS
from loopchain.types import package_name
from loopchain.types.crypto import Signer, address_of
from loopchain.types.validators import ValidatorSet
from tests._flood import HTTP2_PREFACE
from tests.integration._rs_helpers import (
    RadioStationProcess,
    StartRS,
    connect_request,
    get_json,
    heartbeat_request,
    post_raw,
)
from tests.integration._targets import TinyPeer, hanging_peer, tiny_peer
from tools.procs import assert_clean_log, free_port_pair, wait_until_async

DEADLINE = 5.0
P_KEYS = {
    "order",
    "peer_id",
    "group_id",
    "target",
    "cert",
    "status_update_time",
    "status",
    "peer_type",
}


@asynccontextmanager
async def rs_stub(rs: RadioStationProcess) -> AsyncIterator[pb_grpc.RadioStationStub]:
    async with grpc.aio.insecure_channel(rs.target) as channel:
        yield pb_grpc.RadioStationStub(channel)


async def connect(
    stub: pb_grpc.RadioStationStub, signer: Signer, target: str, group_id: str = ""
) -> pb.ConnectPeerReply:
    return await stub.ConnectPeer(connect_request(signer, target, group_id), timeout=DEADLINE)


def validator_set_of(reply: pb.ConnectPeerReply, channel: str) -> ValidatorSet:
    infos = {info.channel: info for info in reply.channels}
    return ValidatorSet.decode(infos[channel].validator_set)


# -- registration


async def test_two_peers_get_orders_and_a_signed_validator_set(start_rs: StartRS) -> None:
    rs = await start_rs()
    a, b = Signer.generate(), Signer.generate()
    async with rs_stub(rs) as stub:
        first = await connect(stub, a, "127.0.0.1:7100", "g1")
        second = await connect(stub, b, "127.0.0.1:7200")
        again = await connect(stub, a, "127.0.0.1:7300", "g2")
    assert (first.code, first.order) == (0, 1)
    assert (second.code, second.order) == (0, 2)
    assert (again.code, again.order) == (0, 1)  # a known peer keeps its order
    rs_address = address_of(second.radiostation_public_key)
    assert len(second.radiostation_public_key) == 33
    assert [c.channel for c in second.channels] == ["loopchain_default"]
    assert second.channels[0].score_package == "loopchain/default"
    vset = validator_set_of(second, "loopchain_default")
    assert vset.verify_issuer(rs_address)
    assert vset.peer_ids == [a.address, b.address]
    assert all(v.weight == 1 for v in vset.validators)
    assert validator_set_of(first, "loopchain_default").version < vset.version
    # a target change is not a membership change: same version
    assert validator_set_of(again, "loopchain_default").version == vset.version
    assert "no leader yet" in rs.current_log()
    assert "waiting for peers" in rs.current_log()


async def test_forged_registrations_are_refused(start_rs: StartRS) -> None:
    rs = await start_rs()
    victim, attacker = Signer.generate(), Signer.generate()
    forged = connect_request(victim, "127.0.0.1:7100")
    forged.signature = attacker.sign(b"\x01" * 32)
    wrong_key = connect_request(victim, "127.0.0.1:7100")
    wrong_key.public_key = attacker.public_key
    other_target = connect_request(victim, "127.0.0.1:7100")
    other_target.target = "127.0.0.1:7999"  # signature covers the target
    garbage_key = connect_request(victim, "127.0.0.1:7100")
    garbage_key.public_key = b"\x02" + b"\xff" * 10
    async with rs_stub(rs) as stub:
        replies = [
            await stub.ConnectPeer(request, timeout=DEADLINE)
            for request in (forged, wrong_key, other_target, garbage_key)
        ]
        listed = await stub.GetPeerList(pb.ChannelRequest(), timeout=DEADLINE)
    for reply in replies:
        assert reply.code == -1
        assert reply.message
        assert reply.order == 0
    assert "signature" in replies[0].message
    assert "public_key" in replies[1].message
    assert list(listed.peers) == []


async def test_channel_auth_gives_only_listed_channels(start_rs: StartRS) -> None:
    a, b, c = Signer.generate(), Signer.generate(), Signer.generate()
    channels = {
        "kofia_0": {
            "score_package": "loopchain/default",
            "peers": [{"peer_id": a.address, "peer_target": "1.1.1.1:7100"}],
        },
        "kofia_1": {
            "score_package": "score/code2",
            "peers": [{"peer_id": a.address}, {"peer_id": b.address, "weight": 2}],
        },
    }
    rs = await start_rs({"ENABLE_CHANNEL_AUTH": True}, channels)
    async with rs_stub(rs) as stub:
        reply_a = await connect(stub, a, "1.1.1.1:7100")
        reply_b = await connect(stub, b, "2.2.2.2:7200")
        reply_c = await connect(stub, c, "3.3.3.3:7300")
        # a target alone is not an identity: a stranger at a listed target stays out
        reply_d = await connect(stub, Signer.generate(), "1.1.1.1:7100")
        list_0 = await stub.GetPeerList(pb.ChannelRequest(channel="kofia_0"), timeout=DEADLINE)
        list_1 = await stub.GetPeerList(pb.ChannelRequest(channel="kofia_1"), timeout=DEADLINE)
    assert [i.channel for i in reply_a.channels] == ["kofia_0", "kofia_1"]
    assert [i.channel for i in reply_b.channels] == ["kofia_1"]
    assert reply_b.channels[0].score_package == "score/code2"
    assert reply_c.code == -800 and reply_d.code == -800
    assert c.address in reply_c.message and "not listed in any channel" in reply_c.message
    assert [v.weight for v in ValidatorSet.decode(list_1.validator_set).validators] == [1, 2]
    assert [p.peer_id for p in list_0.peers] == [a.address]
    assert [p.peer_id for p in list_1.peers] == [a.address, b.address]
    assert ValidatorSet.decode(list_1.validator_set).peer_ids == [a.address, b.address]


async def test_a_listed_channel_has_its_listed_committee_from_the_first_registration(
    start_rs: StartRS,
) -> None:
    """The genesis race: a set naming only the peers registered so far lets the first one certify
    a genesis alone. In listed mode every version names the listed validators, in the file's order,
    registered or not (auditors never vote)."""
    a, b, c, d = (Signer.generate() for _ in range(4))
    peers = [
        {"peer_id": b.address, "weight": 2},
        {"peer_id": a.address},
        {"peer_id": d.address, "role": "auditor"},
        {"peer_id": c.address},
    ]
    rs = await start_rs({"ENABLE_CHANNEL_AUTH": True}, {"ch": {"peers": peers}})
    async with rs_stub(rs) as stub:
        alone = validator_set_of(await connect(stub, a, "127.0.0.1:7100"), "ch")
        later = validator_set_of(await connect(stub, c, "127.0.0.1:7200"), "ch")
    committee = [b.address, a.address, c.address]
    assert alone.peer_ids == committee and later.peer_ids == committee
    assert [v.weight for v in alone.validators] == [2, 1, 1]
    assert alone.version < later.version
    # a registered peer's key is stated; an absent one's is not (yet)
    assert [bool(v.public_key) for v in later.validators] == [False, True, True]


async def test_an_auditor_saying_it_leads_is_not_shown_as_the_leader(start_rs: StartRS) -> None:
    """A heartbeat's peer type is the peer's word: only a validator's claim names the leader."""
    a, d = Signer.generate(), Signer.generate()
    peers = [{"peer_id": a.address}, {"peer_id": d.address, "role": "auditor"}]
    rs = await start_rs({"ENABLE_CHANNEL_AUTH": True}, {"ch": {"peers": peers}})
    leader = f"{rs.rest}/api/v1/peer/leader?channel=ch"
    async with rs_stub(rs) as stub:
        await connect(stub, a, "127.0.0.1:7100")
        await connect(stub, d, "127.0.0.1:7200")
        beat = await stub.Heartbeat(heartbeat_request(d, "ch", peer_type=1), timeout=DEADLINE)
        assert beat.code == 0
        status, body = await get_json(leader)
        assert (status, body["response_code"]) == (503, -5), body
        beat = await stub.Heartbeat(heartbeat_request(a, "ch", peer_type=1), timeout=DEADLINE)
        assert beat.code == 0
        status, body = await get_json(leader)
        assert status == 200 and body["data"]["peer_id"] == a.address
        beat = await stub.Heartbeat(heartbeat_request(d, "ch", peer_type=1), timeout=DEADLINE)
        assert beat.code == 0  # the newer claim, an auditor's
        status, body = await get_json(leader)
        assert status == 200 and body["data"]["peer_id"] == a.address


async def test_without_channel_auth_every_peer_joins_every_channel(start_rs: StartRS) -> None:
    genesis = {"accounts": [{"name": "a", "address": "hx" + "a" * 40, "balance": "0x0a"}]}
    channels = {
        "c1": {"score_package": "org/p1", "peers": [], "genesis_data": genesis},
        "c2": {"score_package": "org/p2"},
    }
    rs = await start_rs({"LOOPCHAIN_DEFAULT_CHANNEL": "c1"}, channels)
    async with rs_stub(rs) as stub:
        reply = await connect(stub, Signer.generate(), "9.9.9.9:7100")
    assert [(i.channel, i.score_package) for i in reply.channels] == [
        ("c1", "org/p1"),
        ("c2", "org/p2"),
    ]
    # the channel's genesis accounts travel in its signed validator set, canonical
    stated = validator_set_of(reply, "c1").genesis_data()
    assert stated is not None and stated.total_supply == 10
    assert stated.accounts[0].address == "hx" + "a" * 40
    assert validator_set_of(reply, "c2").genesis == ""


# -- peer lists, heartbeats, leader


async def test_peer_list_heartbeat_and_leader(start_rs: StartRS) -> None:
    rs = await start_rs({"HEARTBEAT_INTERVAL": 0.05})
    a, b, stranger = Signer.generate(), Signer.generate(), Signer.generate()
    status, body = await get_json(f"{rs.rest}/api/v1/peer/leader")
    assert (status, body["response_code"]) == (503, -5)
    assert "leader" in body["message"]
    async with rs_stub(rs) as stub:
        await connect(stub, a, "127.0.0.1:7100", "g")
        await connect(stub, b, "127.0.0.1:7200", "g")
        unknown = await stub.Heartbeat(heartbeat_request(stranger), timeout=DEADLINE)
        beat_a = await stub.Heartbeat(
            heartbeat_request(a, peer_type=1, block_height=3), timeout=DEADLINE
        )
        listed = await stub.GetPeerList(pb.ChannelRequest(channel=""), timeout=DEADLINE)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetPeerList(pb.ChannelRequest(channel="nope"), timeout=DEADLINE)
        other_channel = await stub.Heartbeat(heartbeat_request(a, "nope"), timeout=DEADLINE)
    assert unknown.code == -800 and stranger.address in unknown.message
    assert other_channel.code == -4 and "nope" in other_channel.message
    assert beat_a.code == 0
    assert beat_a.peer_list_version == ValidatorSet.decode(listed.validator_set).version
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (missing.value.details() or "")
    entries = {p.peer_id: p for p in listed.peers}
    assert (entries[a.address].status, entries[a.address].peer_type) == (1, 1)
    assert entries[a.address].public_key == a.public_key
    assert entries[b.address].status == 0
    assert [p.order for p in listed.peers] == [1, 2]

    status, body = await get_json(f"{rs.rest}/api/v1/peer/list")
    assert status == 200 and body["response_code"] == 0
    data = body["data"]
    assert (data["registered_peer_count"], data["connected_peer_count"]) == (2, 1)
    assert all(set(p) == P_KEYS for p in data["registered_peer_list"])
    assert [p["peer_id"] for p in data["connected_peer_list"]] == [a.address]
    assert data["connected_peer_list"][0]["peer_type"] == 1
    status, body = await get_json(f"{rs.rest}/api/v1/peer/leader?channel=loopchain_default")
    assert status == 200 and body["data"]["peer_id"] == a.address
    assert set(body["data"]) == P_KEYS

    # a heartbeat timeout of 0.1 s (twice the interval) soon makes every heartbeat stale:
    # disconnected, no leader; a timeout below twice the interval is refused
    refused, body = await post_raw(
        f"{rs.rest}/api/v1/conf", b'{"name": "HEARTBEAT_TIMEOUT", "value": 0.09}', rs.operator()
    )
    assert refused == 400 and "twice" in body["message"], body
    status, _ = await post_raw(
        f"{rs.rest}/api/v1/conf", b'{"name": "HEARTBEAT_TIMEOUT", "value": 0.1}', rs.operator()
    )
    assert status == 200

    async def all_stale() -> dict[str, Any] | None:
        _, body = await get_json(f"{rs.rest}/api/v1/peer/list")
        return body if body["data"]["connected_peer_count"] == 0 else None

    body = await wait_until_async(all_stale, DEADLINE, "heartbeats to go stale")
    assert body["data"]["registered_peer_list"][0]["status"] == 2
    status, body = await get_json(f"{rs.rest}/api/v1/peer/leader")
    assert (status, body["response_code"]) == (503, -5)


async def test_unknown_channel_is_404(start_rs: StartRS) -> None:
    rs = await start_rs()
    for path in ("peer/list", "peer/leader", "peer/status-list", "peer/status?peer_id=hx00"):
        sep = "&" if "?" in path else "?"
        status, body = await get_json(f"{rs.rest}/api/v1/{path}{sep}channel=nope")
        assert (status, body["response_code"]) == (404, -4), path
        assert "nope" in body["message"]
    status, body = await get_json(f"{rs.rest}/api/v1/no/such/thing")
    assert status == 404 and body["response_code"] == -999


# -- live peer status over gRPC


class HangingStatus(TinyPeer):
    """A peer whose GetStatus answers only once `release` is set; `calls` counts those in
    flight at all hanging peers together (shared), and `most` the most at once."""

    def __init__(self, peer_id: str, target: str, calls: dict[str, int], release: asyncio.Event):
        super().__init__(peer_id, target)
        self.calls, self.release = calls, release

    async def GetStatus(
        self, request: pb.ChannelRequest, context: grpc.aio.ServicerContext
    ) -> pb.PeerStatusReply:
        self.calls["now"] += 1
        self.calls["most"] = max(self.calls["most"], self.calls["now"])
        try:
            await self.release.wait()
            return await super().GetStatus(request, context)
        finally:
            self.calls["now"] -= 1


async def test_status_requests_in_parallel_share_the_stations_calls_and_past_a_bound_are_503(
    start_rs: StartRS,
) -> None:
    """Each status-list request had a bound of its own on the calls it made to members, so
    requests in parallel had the RadioStation open a connection to every member for each (a
    review: tens of thousands, to members that hang). The calls out are now bounded station-
    wide, and requests past MAX_STATUS_REQUESTS are answered 503 with Retry-After at once."""
    rs = await start_rs({"GRPC_TIMEOUT": 600.0})
    calls, release = {"now": 0, "most": 0}, asyncio.Event()
    servers = []
    async with rs_stub(rs) as stub:
        for _ in range(3):
            signer, port = Signer.generate(), free_port_pair()
            target = f"127.0.0.1:{port}"
            server = grpc.aio.server()
            pb_grpc.add_PeerServiceServicer_to_server(
                HangingStatus(signer.address, target, calls, release), server
            )
            server.add_insecure_port(target)
            await server.start()
            servers.append(server)
            assert (await connect(stub, signer, target)).code == 0
    url = f"{rs.rest}/api/v1/peer/status-list"
    try:
        async with aiohttp.ClientSession() as session:

            async def ask() -> tuple[int, str | None, dict[str, Any]]:
                async with session.get(url) as response:
                    body = await response.json()
                    return response.status, response.headers.get("Retry-After"), body

            asks = [asyncio.create_task(ask()) for _ in range(MAX_STATUS_REQUESTS + 3)]
            wanted = min(3 * MAX_STATUS_REQUESTS, MAX_CONCURRENT_STATUS_QUERIES)

            async def settled() -> bool:
                return calls["now"] == wanted and sum(a.done() for a in asks) == 3

            await wait_until_async(
                settled,
                6 * DEADLINE,  # 27 requests and 16 calls on a slow machine
                f"{wanted} status calls out and 3 requests answered",
            )
            busy = [a.result() for a in asks if a.done()]
            assert all(status == 503 and retry == "1" for status, retry, _ in busy), busy
            assert "status requests" in busy[0][2]["message"]
            release.set()
            answered = await asyncio.wait_for(asyncio.gather(*asks), 6 * DEADLINE)
    finally:
        release.set()
        for server in servers:
            await server.stop(None)
    ok = [body for status, _, body in answered if status == 200]
    assert len(ok) == MAX_STATUS_REQUESTS
    assert all(len(body["data"]["peer_status_list"]) == 3 for body in ok)
    assert calls["most"] == wanted


async def test_peer_status_live_unreachable_and_bad_arguments(start_rs: StartRS) -> None:
    rs = await start_rs()
    live, dead = Signer.generate(), Signer.generate()
    async with tiny_peer(live) as live_target:
        async with rs_stub(rs) as stub:
            await connect(stub, live, live_target, "g1")
            await connect(stub, dead, f"127.0.0.1:{free_port_pair()}")
        url = f"{rs.rest}/api/v1/peer/status"
        status, body = await get_json(f"{url}?peer_id={live.address}&group_id=g1")
        expected = peer_status_to_json(
            pb.PeerStatusReply(
                channel="loopchain_default",
                peer_id=live.address,
                peer_target=live_target,
                peer_type=1,
                block_height=7,
                total_tx=11,
                consensus="LFT",
            )
        )
        assert (status, body) == (200, expected)

        status, body = await get_json(f"{url}?peer_id={dead.address}")
        assert (status, body["response_code"]) == (503, -1)
        assert "unreachable" in body["message"] and dead.address in body["message"]

        status, body = await get_json(f"{url}?group_id=g1")
        assert (status, body["response_code"]) == (400, -6)
        assert "peer_id" in body["message"]

        status, body = await get_json(f"{url}?peer_id=hx1234")
        assert (status, body["response_code"]) == (404, -800)

        status, body = await get_json(f"{url}?peer_id={live.address}&group_id=other")
        assert (status, body["response_code"]) == (404, -800)

        status, body = await get_json(f"{rs.rest}/api/v1/peer/status-list")
        assert status == 200 and body["response_code"] == 0
        assert body["data"][live.address]["block_height"] == 7
        assert body["data"][dead.address]["response_code"] == -1
        # and in loopchain's shape (its scripts read these keys)
        assert body["data"]["registered_peer_count"] == 2
        listed = {p["peer_id"]: p for p in body["data"]["peer_status_list"]}
        assert listed[live.address]["block_height"] == 7 and listed[live.address]["order"] >= 1
        assert listed[dead.address]["response_code"] == -1
        assert body["data"]["connected_peer_count"] == 0  # neither sends heartbeats


# -- configuration over REST


async def test_conf_get_and_post(start_rs: StartRS) -> None:
    rs = await start_rs({"HEARTBEAT_TIMEOUT": 7.5})
    url = f"{rs.rest}/api/v1/conf"
    status, body = await get_json(url)
    assert status == 200 and body["response_code"] == 0
    by_name = {item["name"]: item for item in body["data"]}
    assert by_name["HEARTBEAT_TIMEOUT"] == {"name": "HEARTBEAT_TIMEOUT", "value": 7.5, "type": 2}
    assert by_name["PORT_RADIOSTATION"]["value"] == rs.port
    assert by_name["ENABLE_CHANNEL_AUTH"]["type"] == 3

    status, body = await get_json(f"{url}?name=NO_SUCH_KEY")
    assert (status, body["response_code"]) == (400, -6)
    assert "NO_SUCH_KEY" in body["message"]

    status, body = await post_raw(url, b'{"name": "GRPC_TIMEOUT", "value": 2.5}', rs.operator())
    assert (status, body["response_code"]) == (200, 0)
    status, body = await get_json(f"{url}?name=GRPC_TIMEOUT")
    assert body["data"] == [{"name": "GRPC_TIMEOUT", "value": 2.5, "type": 2}]

    bad_inputs = {
        b'{"name": "GRPC_TIMEOUT", "value": "soon"}': "GRPC_TIMEOUT",
        b'{"name": "NO_SUCH_KEY", "value": 1}': "NO_SUCH_KEY",
        b'{"name": "GRPC_TIMEOUT"}': "value",
        b'{"value": 1}': "name",
        b'{"name": "LOOPCHAIN_DEFAULT_CHANNEL", "value": "nope"}': "channel",
        b'{"name": "MAX_BLOCK_TX_NUM", "value": 1}': "not a RadioStation setting",
        b"{not json": "JSON",
        b"[1, 2]": "object",
        b"": "empty",
        b"\xff\xfe": "JSON",
    }
    for raw, word in bad_inputs.items():
        status, body = await post_raw(url, raw, rs.operator())
        assert (status, body["response_code"]) == (400, -6), raw
        assert word in body["message"], (raw, body)

    big = b'{"x": "' + b"a" * (600 * 1024) + b'"}'
    status, body = await post_raw(url, big, rs.operator())
    assert (status, body["response_code"]) == (413, -6)


async def test_conf_post_cannot_switch_channel_auth(start_rs: StartRS) -> None:
    """Admission is set in the files: a runtime switch would silently revert at a restart."""
    channels = {"only": {"score_package": "org/p", "peers": [{"peer_target": "1.1.1.1:1"}]}}
    rs = await start_rs({"LOOPCHAIN_DEFAULT_CHANNEL": "only"}, channels)
    async with rs_stub(rs) as stub:
        before = await connect(stub, Signer.generate(), "2.2.2.2:2")
        body = b'{"name": "ENABLE_CHANNEL_AUTH", "value": true}'
        status, answer = await post_raw(f"{rs.rest}/api/v1/conf", body, rs.operator())
        after = await connect(stub, Signer.generate(), "3.3.3.3:3")
        listed = await stub.GetPeerList(pb.ChannelRequest(), timeout=DEADLINE)
    assert (status, answer["response_code"]) == (400, -6)
    assert "ENABLE_CHANNEL_AUTH" in answer["message"] and "at runtime" in answer["message"]
    assert (before.code, after.code) == (0, 0)
    assert len(listed.peers) == 2


# -- lifecycle


async def test_restart_keeps_orders_versions_and_key(start_rs: StartRS) -> None:
    rs = await start_rs()
    a, b = Signer.generate(), Signer.generate()
    async with rs_stub(rs) as stub:
        await connect(stub, a, "127.0.0.1:7100")
        first = await connect(stub, b, "127.0.0.1:7200")
    assert await rs.terminate() == 0
    rs.start()
    await rs.wait_ready()
    async with rs_stub(rs) as stub:
        listed = await stub.GetPeerList(pb.ChannelRequest(), timeout=DEADLINE)
        again = await connect(stub, b, "127.0.0.1:7200")
        newcomer = await connect(stub, Signer.generate(), "127.0.0.1:7300")
    assert [(p.peer_id, p.order) for p in listed.peers] == [(a.address, 1), (b.address, 2)]
    assert again.order == 2 and newcomer.order == 3
    assert again.radiostation_public_key == first.radiostation_public_key
    old_set = validator_set_of(first, "loopchain_default")
    assert ValidatorSet.decode(listed.validator_set) == old_set
    assert validator_set_of(newcomer, "loopchain_default").version == old_set.version + 1


_NID_10 = {"accounts": [], "nid": "0x10"}


async def test_genesis_data_edited_after_a_peer_was_given_it_is_not_served(
    start_rs: StartRS, tmp_path: Path
) -> None:
    """A channel's genesis is fixed once a peer was given it (its chain's block 0 holds it): a
    peer starting from an empty store followed an edit until it held block 0."""
    first = {
        "accounts": [{"name": "a", "address": "hx" + "a" * 40, "balance": "0xa"}],
        "nid": "0x10",
    }
    rs = await start_rs({"LOOPCHAIN_DEFAULT_CHANNEL": "c1"}, {"c1": {"genesis_data": first}})
    async with rs_stub(rs) as stub:
        served = validator_set_of(await connect(stub, Signer.generate(), "127.0.0.1:7100"), "c1")
    assert json.loads(served.genesis) == first
    assert await rs.terminate() == 0
    edited = {**first, "nid": "0x11"}
    (tmp_path / "channel_manage_data.json").write_text(json.dumps({"c1": {"genesis_data": edited}}))
    rs.start()
    await rs.wait_ready()
    async with rs_stub(rs) as stub:
        listed = await stub.GetPeerList(pb.ChannelRequest(channel="c1"), timeout=DEADLINE)
    kept = ValidatorSet.decode(listed.validator_set)
    assert (kept.genesis, kept.version) == (served.genesis, served.version)
    assert (
        "channel c1: the channel file's genesis_data differs from the one this RadioStation gave "
        "the channel's peers (they differ in nid)" in rs.current_log()
    )


async def test_a_channel_stating_the_nid_another_chain_holds_is_refused_at_start(
    start_rs: StartRS, tmp_path: Path
) -> None:
    rs = await start_rs({"LOOPCHAIN_DEFAULT_CHANNEL": "c1"}, {"c1": {"genesis_data": _NID_10}})
    async with rs_stub(rs) as stub:
        await connect(stub, Signer.generate(), "127.0.0.1:7100")
    assert await rs.terminate() == 0
    # c1's file now states another nid, c2 the one c1's chain holds
    channels = {"c1": {"genesis_data": {**_NID_10, "nid": "0x11"}}, "c2": {"genesis_data": _NID_10}}
    (tmp_path / "channel_manage_data.json").write_text(json.dumps(channels))
    code, logs = await rs.run_to_exit()
    assert code == 2
    assert "genesis_data.nid: 0x10 is channel 'c1''s too" in logs
    assert_clean_log(logs, "radiostation")


async def test_a_set_given_by_its_peer_list_fixes_the_genesis_too(
    start_rs: StartRS, tmp_path: Path
) -> None:
    """A channel added while its peers run: a member is first given its set by GetPeerList."""
    rs = await start_rs()
    async with rs_stub(rs) as stub:
        await connect(stub, Signer.generate(), "127.0.0.1:7100")
    genesis = {"accounts": [], "nid": "0x20"}
    body = json.dumps({"channel": "c2", "genesis_data": genesis}).encode()
    status, answer = await post_raw(f"{rs.rest}/api/v1/channel", body, rs.operator())
    assert status == 200, answer
    async with rs_stub(rs) as stub:
        listed = await stub.GetPeerList(pb.ChannelRequest(channel="c2"), timeout=DEADLINE)
    served = ValidatorSet.decode(listed.validator_set)
    assert json.loads(served.genesis) == genesis
    assert await rs.terminate() == 0
    channel_file = tmp_path / "channel_manage_data.json"
    edited = json.loads(channel_file.read_text())
    edited["c2"]["genesis_data"]["nid"] = "0x21"
    channel_file.write_text(json.dumps(edited))
    rs.start()
    await rs.wait_ready()
    async with rs_stub(rs) as stub:
        listed = await stub.GetPeerList(pb.ChannelRequest(channel="c2"), timeout=DEADLINE)
    assert ValidatorSet.decode(listed.validator_set).genesis == served.genesis


async def _beat_holding(
    stub: Any, signer: Signer, held: int, held_hash: bytes, version: int
) -> None:
    """A heartbeat of `signer` saying it holds set version `held` of hash `held_hash`, answered
    with the RadioStation's list `version`."""
    beat = heartbeat_request(signer, "loopchain_default")
    beat.set_version, beat.set_hash = held, held_hash
    reply = await stub.Heartbeat(beat, timeout=DEADLINE)
    assert (reply.code, reply.peer_list_version) == (0, version)


def _held_set_warnings(rs: Any) -> list[str]:
    return [line for line in rs.current_log().splitlines() if "holds validator set version" in line]


async def test_a_peer_holding_a_newer_set_than_the_radiostation_is_warned_of(
    start_rs: StartRS,
) -> None:
    """A RadioStation restored from an older copy of its registry serves versions the peers
    hold and ignore: the operator was told "unlisted (channel version 5)" and the validator kept
    voting (operator review). A heartbeat says the version the peer holds; the RadioStation
    warns of a peer once a minute at most, and changes nothing by it (a member's word, unsigned:
    one member raising it at each beat neither floods the log nor silences another's)."""
    rs = await start_rs()
    peer = Signer.generate()
    async with rs_stub(rs) as stub:
        version = validator_set_of(
            await connect(stub, peer, "127.0.0.1:7100"), "loopchain_default"
        ).version
        other = Signer.generate()
        await connect(stub, other, "127.0.0.1:7200")
        version += 1  # (the second member's registration)
        beats = [(peer, version), (peer, version + 3), (peer, version + 3), (peer, version + 1)]
        beats += [(peer, version + 4 + n) for n in range(5)]  # within the minute: said no more
        beats.append((other, version + 9))  # another member's: said
        for signer, held in beats:
            await _beat_holding(stub, signer, held, b"", version)
    said = _held_set_warnings(rs)
    assert len(said) == 2, said
    assert (
        f"channel loopchain_default: peer {peer.address} holds validator set version "
        f"{version + 3}, above this RadioStation's {version}: its registry is older than the one "
        "that issued that set" in said[0]
    )
    assert f"peer {other.address} holds validator set version {version + 9}, above" in said[1]


async def test_a_peer_holding_a_set_of_the_same_version_with_other_content_is_warned_of(
    start_rs: StartRS,
) -> None:
    """A RadioStation restored from an older copy of its registry and changed since serves its
    change under a version the peers hold already with other content: they ignore it, and only
    their logs said so (review). A heartbeat says the hash of the set held too; the RadioStation
    warns when its own set of that version has other content, once a peer and set."""
    rs = await start_rs()
    peer, other = Signer.generate(), Signer.generate()
    async with rs_stub(rs) as stub:
        await connect(stub, peer, "127.0.0.1:7100")
        served = validator_set_of(await connect(stub, other, "127.0.0.1:7200"), "loopchain_default")
        foreign = dataclasses.replace(served, validators=served.validators[:1])
        assert foreign.version == served.version and foreign.hash != served.hash
        beats = [(other, served.hash), (peer, b""), (other, b"\x00"), (other, served.hash + b"x")]
        beats += [(peer, foreign.hash), (peer, foreign.hash)]  # (not a hash: ignored, above)
        for signer, held in beats:
            await _beat_holding(stub, signer, served.version, held, served.version)
    said = _held_set_warnings(rs)
    assert len(said) == 1, said
    assert (
        f"channel loopchain_default: peer {peer.address} holds validator set version "
        f"{served.version}, with other content than this RadioStation's: its registry is older "
        "than the one that issued that set" in said[0]
    )


def twin_of(tmp_path: Path, port: int, config: dict[str, Any] | None = None) -> RadioStationProcess:
    """A second RadioStation on `port` with its own directory and storage (not started)."""
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    return RadioStationProcess(
        other_dir, port, {"DEFAULT_STORAGE_PATH": str(other_dir), **(config or {})}
    )


async def test_second_radiostation_on_the_same_port_fails_fast(
    start_rs: StartRS, tmp_path: Path
) -> None:
    rs = await start_rs()
    code, logs = await twin_of(tmp_path, rs.port).run_to_exit()
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{rs.port}" in logs
    assert_clean_log(logs, "radiostation")
    status, _ = await get_json(f"{rs.rest}/api/v1/peer/list")
    assert status == 200  # the first one is unharmed


async def test_rest_port_in_use_fails_fast(start_rs: StartRS, tmp_path: Path) -> None:
    rs = await start_rs()
    grpc_port = free_port_pair()
    diff = rs.rest_port - grpc_port  # its REST port is the first one's REST port
    twin = twin_of(tmp_path, grpc_port, {"PORT_DIFF_REST_SERVICE_CONTAINER": diff})
    code, logs = await twin.run_to_exit()
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{rs.rest_port} (REST)" in logs
    assert_clean_log(logs, "radiostation")


@pytest.mark.parametrize(
    ("channel_text", "words"),
    [
        ("{not json", ["not valid JSON"]),
        ('{"c": {"score_package": 5}}', ["'c'", "score_package"]),
        ('{"c": {"peers": [{"peer_target": "nohost"}]}}', ["peer_target", "nohost"]),
        ('{"c": {"peer": []}}', ["unknown keys", "peer"]),
        (
            '{"c": {"genesis_data": {"accounts": [{"name": "", "address": "hx1"}]}}}',
            ["'c'", "genesis_data", "accounts[0]", "missing field 'balance'"],
        ),
        ("[]", ["JSON object"]),
        pytest.param(
            json.dumps({"c": {"peers": [{"peer_id": f"hx{n:040x}"} for n in range(257)]}}),
            ["'c'", "lists 257 entries; a channel lists at most 256 (MAX_CHANNEL_PEERS)"],
            id="257-peers",
        ),
    ],
)
async def test_malformed_channel_file_is_a_clear_startup_error(
    tmp_path: Path, channel_text: str, words: list[str]
) -> None:
    channel_file = tmp_path / "channels.json"
    channel_file.write_text(channel_text)
    config = {"DEFAULT_STORAGE_PATH": str(tmp_path), "CHANNEL_MANAGE_DATA_PATH": str(channel_file)}
    rs = RadioStationProcess(tmp_path, free_port_pair(), config)
    code, logs = await rs.run_to_exit()
    assert code == 2
    assert str(channel_file) in logs
    assert all(word in logs for word in words), logs
    assert_clean_log(logs, "radiostation")


async def test_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    rs = RadioStationProcess(tmp_path, free_port_pair(), {"NO_SUCH_KEY": 1})
    code, logs = await rs.run_to_exit()
    assert code == 2
    assert logs.strip().splitlines() == [
        f"radiostation: error: unknown configuration key 'NO_SUCH_KEY' in {rs.config_path}"
    ]


async def test_a_default_score_package_no_peer_could_load_stops_the_start(tmp_path: Path) -> None:
    """Without a channel file the one channel runs DEFAULT_SCORE_PACKAGE: a name that is not
    '<org>/<package>' was served to every peer, which refused it."""
    rs = RadioStationProcess(tmp_path, free_port_pair(), {"DEFAULT_SCORE_PACKAGE": "../x"})
    code, logs = await rs.run_to_exit()
    assert code == 2
    assert logs.strip().splitlines() == [
        f"radiostation: error: DEFAULT_SCORE_PACKAGE '../x' must be {package_name.RULE}"
    ]


async def test_cert_and_seed_flags_are_accepted(tmp_path: Path) -> None:
    config = {"DEFAULT_STORAGE_PATH": str(tmp_path / "s")}
    rs = RadioStationProcess(tmp_path, free_port_pair(), config)
    rs.start("--cert", str(tmp_path), "-s", "seed", "-d")
    await rs.wait_ready()
    assert await rs.terminate() == 0
    logs = rs.logs()
    assert "not used yet" in logs
    assert_clean_log(logs, "radiostation")


async def test_ctrl_c_takes_the_graceful_path(tmp_path: Path) -> None:
    rs = RadioStationProcess(
        tmp_path, free_port_pair(), {"DEFAULT_STORAGE_PATH": str(tmp_path / "s")}
    )
    rs.start()
    await rs.wait_ready()
    assert await rs.terminate(signal.SIGINT) == 0
    logs = rs.logs()
    assert "RadioStation stopped" in logs
    assert "KeyboardInterrupt" not in logs
    assert_clean_log(logs, "radiostation")


async def test_corrupt_registry_refuses_to_start(tmp_path: Path) -> None:
    port = free_port_pair()
    registry = tmp_path / "s" / f"radiostation_{port}" / "registry.json"
    registry.parent.mkdir(parents=True)
    registry.write_text('{"format": 1, "peers": [{"peer_id": 3}]}')
    rs = RadioStationProcess(tmp_path, port, {"DEFAULT_STORAGE_PATH": str(tmp_path / "s")})
    code, logs = await rs.run_to_exit()
    assert code == 1
    assert f"registry file {registry} is corrupt" in logs
    assert_clean_log(logs, "radiostation")


# -- the target check: a registering peer's key must answer at its target


async def test_a_registration_joins_only_when_its_key_answers_at_its_target(
    start_rs: StartRS,
) -> None:
    rs = await start_rs({"RADIOSTATION_CHECK_TARGETS": True})
    live, dead, impostor, victim = (Signer.generate() for _ in range(4))
    async with tiny_peer(live) as live_target, tiny_peer(impostor, key=victim) as lying_target:
        async with rs_stub(rs) as stub:
            good = await connect(stub, live, live_target)
            at_nobody = await connect(stub, dead, f"127.0.0.1:{free_port_pair()}")
            # a live target holding another key: the victim's id, served with a key not its own
            at_someone_else = await connect(stub, dead, live_target)
            lying = await connect(stub, impostor, lying_target)
            listed = await stub.GetPeerList(pb.ChannelRequest(channel=""), timeout=DEADLINE)
    assert good.code == 0
    assert at_nobody.code == -900 and "did not prove the key" in at_nobody.message  # retryable
    assert at_someone_else.code == -1 and f"is peer '{live.address}'" in at_someone_else.message
    assert lying.code == -1 and "did not sign the challenge" in lying.message
    assert [p.peer_id for p in listed.peers] == [live.address]
    assert ValidatorSet.decode(listed.validator_set).peer_ids == [live.address]
    assert rs.current_log().count("refused registration") == 3


async def test_a_replayed_registration_cannot_move_a_peer_to_a_dead_target(
    start_rs: StartRS,
) -> None:
    rs = await start_rs({"RADIOSTATION_CHECK_TARGETS": True})
    peer = Signer.generate()
    dead_target = f"127.0.0.1:{free_port_pair()}"
    captured = connect_request(peer, dead_target)  # signed once, e.g. seen on the wire
    async with tiny_peer(peer) as live_target:
        async with rs_stub(rs) as stub:
            assert (await connect(stub, peer, live_target)).code == 0
            replayed = await stub.ConnectPeer(captured, timeout=DEADLINE)
            listed = await stub.GetPeerList(pb.ChannelRequest(channel=""), timeout=DEADLINE)
    assert replayed.code != 0
    assert [(p.peer_id, p.target) for p in listed.peers] == [(peer.address, live_target)]


async def test_an_id_no_channel_lists_is_refused_before_its_target_is_dialled(
    start_rs: StartRS,
) -> None:
    """In listed mode a stranger's registration is refused PEER_UNKNOWN without the station
    connecting to the target it names (it dialled first: a port-scan oracle for any throwaway
    key, holding a call for up to GRPC_TIMEOUT); a listed peer is still probed and joins."""
    member, stranger = Signer.generate(), Signer.generate()
    channels = {"c": {"peers": [{"peer_id": member.address}]}}
    config = {
        "RADIOSTATION_CHECK_TARGETS": True,
        "ENABLE_CHANNEL_AUTH": True,
        "LOOPCHAIN_DEFAULT_CHANNEL": "c",
    }
    rs = await start_rs(config, channels)
    dialled: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.append(1)
        writer.close()

    watched = await asyncio.start_server(count, "127.0.0.1", 0)
    watched_target = f"127.0.0.1:{watched.sockets[0].getsockname()[1]}"
    try:
        async with tiny_peer(member) as member_target, rs_stub(rs) as stub:
            refused = await connect(stub, stranger, watched_target)
            joined = await connect(stub, member, member_target)
    finally:
        watched.close()
        await watched.wait_closed()
    assert refused.code == -800 and "not listed in any channel" in refused.message, refused
    assert dialled == []
    assert joined.code == 0 and [i.channel for i in joined.channels] == ["c"]


async def test_probes_past_their_bound_are_refused_at_once_and_members_still_beat(
    start_rs: StartRS,
) -> None:
    """With MAX_PROBES_PER_SOURCE registrations from one source probing targets that never
    answer, its further registrations are refused busy at once, without a probe, so a member's
    heartbeat finds a call slot (before, MAX_CALLS such registrations held every slot for
    GRPC_TIMEOUT and heartbeats were refused; then MAX_PROBES, every probe slot of the station,
    and no other peer could register)."""
    assert MAX_PROBES_PER_SOURCE < MAX_PROBES < MAX_CALLS
    rs = await start_rs({"RADIOSTATION_CHECK_TARGETS": True, "GRPC_TIMEOUT": 600.0})
    member = Signer.generate()
    async with tiny_peer(member) as member_target, rs_stub(rs) as stub:
        assert (await connect(stub, member, member_target)).code == 0
    refusals: list[grpc.StatusCode] = []

    async def register(stub: pb_grpc.RadioStationStub, target: str) -> None:
        try:
            await stub.ConnectPeer(connect_request(Signer.generate(), target), timeout=600)
        except grpc.aio.AioRpcError as exc:
            refusals.append(exc.code())
            assert "MAX_PROBES" in (exc.details() or ""), exc

    async with hanging_peer() as (hanging_target, hanging), rs_stub(rs) as stub:
        strangers = [
            asyncio.ensure_future(register(stub, hanging_target)) for _ in range(MAX_CALLS)
        ]
        try:

            async def bound_reached() -> bool:
                held = MAX_PROBES_PER_SOURCE
                return hanging.entered == held and len(refusals) == MAX_CALLS - held

            await wait_until_async(bound_reached, 60, "the probes' bound reached")
            assert set(refusals) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            # a member's own connection (a call of its own past the strangers' streams)
            options = [("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(rs.target, options=options) as channel:
                beat = await pb_grpc.RadioStationStub(channel).Heartbeat(
                    heartbeat_request(member), timeout=DEADLINE
                )
            assert beat.code == 0, beat
            assert hanging.entered == MAX_PROBES_PER_SOURCE
        finally:
            hanging.release.set()
            await asyncio.gather(*strangers)
    assert len(refusals) == MAX_CALLS - MAX_PROBES_PER_SOURCE


async def test_open_mode_is_announced_and_listed_mode_needs_peer_ids(
    start_rs: StartRS, tmp_path: Path
) -> None:
    rs = await start_rs()
    assert "OPEN MODE" in rs.current_log()
    channel_file = tmp_path / "listed.json"
    channel_file.write_text(json.dumps({"c": {"peers": [{"peer_target": "127.0.0.1:7100"}]}}))
    config = {
        "DEFAULT_STORAGE_PATH": str(tmp_path / "listed"),
        "CHANNEL_MANAGE_DATA_PATH": str(channel_file),
        "ENABLE_CHANNEL_AUTH": True,
        "LOOPCHAIN_DEFAULT_CHANNEL": "c",
    }
    listed = RadioStationProcess(tmp_path, free_port_pair(), config)
    code, logs = await listed.run_to_exit()
    assert code == 2
    assert "name no peer_id" in logs and "a target alone is not an identity" in logs
    assert "tools/listed_channels.py" in logs and "ENABLE_CHANNEL_AUTH false" in logs
    assert_clean_log(logs, "radiostation")
    # listed mode without its channel file would admit everyone: refused too
    config["CHANNEL_MANAGE_DATA_PATH"] = str(tmp_path / "missing.json")
    config["DEFAULT_STORAGE_PATH"] = str(tmp_path / "listed2")
    code, logs = await RadioStationProcess(tmp_path, free_port_pair(), config).run_to_exit()
    assert code == 2 and "listed mode needs the channel file" in logs, logs


async def test_only_a_peer_itself_beats_for_it(start_rs: StartRS) -> None:
    rs = await start_rs()
    a, b = Signer.generate(), Signer.generate()
    async with rs_stub(rs) as stub:
        await connect(stub, a, "127.0.0.1:7100")
        await connect(stub, b, "127.0.0.1:7200")
        forged = await stub.Heartbeat(heartbeat_request(a, peer_type=1, key=b), timeout=DEADLINE)
        unsigned = await stub.Heartbeat(
            pb.HeartbeatRequest(peer_id=a.address, peer_type=1), timeout=DEADLINE
        )
        stale = await stub.Heartbeat(
            heartbeat_request(a, peer_type=1, timestamp_us=1_000_000), timeout=DEADLINE
        )
        good = heartbeat_request(b, peer_type=1, block_height=2)
        first = await stub.Heartbeat(good, timeout=DEADLINE)
        replayed = await stub.Heartbeat(good, timeout=DEADLINE)
        listed = await stub.GetPeerList(pb.ChannelRequest(channel=""), timeout=DEADLINE)
    for refused in (forged, unsigned):
        assert refused.code == -1 and "not signed by the key of" in refused.message, refused
    assert stale.code == -1 and "off this clock" in stale.message
    assert first.code == 0
    assert replayed.code == -1 and "replayed" in replayed.message
    status = {p.peer_id: (p.status, p.peer_type) for p in listed.peers}
    assert status == {a.address: (0, 0), b.address: (1, 1)}  # a's forged leader claim took no hold
    log = rs.current_log()
    assert log.count("refused a heartbeat") == 3  # the stale one is said by its peer's clock:
    assert log.count(f"heartbeats of {a.address} are refused: its clock is") == 1


# -- transport bounds (any client that reaches the port, member or not)


# what an HTTP/2 client sends first: the connection preface and an empty SETTINGS frame


async def _answers(stub: pb_grpc.RadioStationStub) -> bool:
    """Whether the station answers a call (here: that it has no channel 'nope')."""
    try:
        await stub.GetPeerList(pb.ChannelRequest(channel="nope"), timeout=DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.NOT_FOUND
    return False


async def test_a_request_over_the_bound_is_refused_unread_and_the_station_goes_on(
    start_rs: StartRS,
) -> None:
    """A registration of 300 KiB (they take a few hundred bytes) is refused by its length
    prefix, RESOURCE_EXHAUSTED, before it is read (sixteen of 60 MiB each held 1.7 GB); the
    station answers the next registration as usual."""
    rs = await start_rs()
    signer = Signer.generate()
    async with rs_stub(rs) as stub:
        bulky = connect_request(signer, "127.0.0.1:7100", "g" * (300 << 10))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ConnectPeer(bulky, timeout=DEADLINE)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _answers(stub)


async def test_connections_past_the_bound_are_closed_and_calls_go_on(start_rs: StartRS) -> None:
    """Idle connections held by anyone stop at the server's bound, GRPC_CONNECTIONS (5,000 were
    held open, and 20,000 took every file descriptor: no peer could connect); past it they are
    closed at accept, while those within it are held, the 513th and on too (the bound was a
    peer port's 512, fewer than the peers and channel workers a RadioStation registers), and
    once they go a call is answered again."""
    wanted = GRPC_CONNECTIONS + 64 + 64  # and the test's own files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"this process may open only {hard} files ({wanted} wanted)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    rs = await start_rs()
    host, port = rs.target.rsplit(":", 1)
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(GRPC_CONNECTIONS + 64):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(HTTP2_PREFACE)  # a client's HTTP/2 start, then nothing: an idle client
            held.append((reader, writer))

        async def closed(reader: asyncio.StreamReader) -> bool:
            """Whether the server closed this connection (what it sent first is skipped)."""
            try:
                async with asyncio.timeout(0.05):
                    while await reader.read(65536):
                        pass
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True

        async def some_closed() -> bool:
            results = [await closed(reader) for reader, _ in held[GRPC_CONNECTIONS - 8 :]]
            return sum(results) >= 32

        await wait_until_async(some_closed, 60, "connections past the bound closed")
        # those within the bound are held (an idle connection goes after a while whatever
        # the bound: the first made are the first to go then), past a peer port's 512 too
        assert not any([await closed(reader) for reader, _ in held[:64]])
        past_512 = held[SERVER_MAX_CONNECTIONS : SERVER_MAX_CONNECTIONS + 64]
        assert not any([await closed(reader) for reader, _ in past_512])
    finally:
        for _, writer in held:
            writer.close()
    async with rs_stub(rs) as stub:
        await wait_until_async(lambda: _answers(stub), 60, "a call answered after the flood")
