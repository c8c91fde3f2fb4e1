"""Operator authority on the real radiostation.py: the token file, bearer checks on every write,
GETs that change nothing, typed and range-checked configuration, bounded request bodies, peer
removal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from loopchain.protos import loopchain_pb2 as pb
from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.radiostation import rest as rs_rest
from loopchain.radiostation.channels import MAX_CHANNEL_PEERS
from loopchain.types import certificates as pki
from loopchain.types.crypto import Signer
from loopchain.types.validators import ValidatorSet
from tests.integration._rs_helpers import (
    RadioStationProcess,
    StartRS,
    bare_app,
    call,
    connect_request,
    get_json,
    heartbeat_request,
    post_raw,
)
from tests.integration._slow_clients import (
    HALF_HEAD,
    SILENT,
    get_request,
    held_connection,
    leave_midway,
    read_response,
    status_and_body,
    until_closed,
    withheld_body,
)
from tools.procs import assert_clean_log, free_port_pair

DEADLINE = 5.0
WRONG = {"Authorization": "Bearer " + "x" * 43}


def issue_body(signer: Signer) -> dict[str, str]:
    tls = pki.generate_tls_key().public_key()
    return {
        "public_key": signer.public_key.hex(),
        "tls_public_key_pem": pki.public_key_to_pem(tls).decode(),
        "signature": signer.sign(pki.cert_request_digest(signer.public_key, tls)).hex(),
    }


async def register(rs: RadioStationProcess, *signers: Signer) -> None:
    async with grpc.aio.insecure_channel(rs.target) as channel:
        stub = pb_grpc.RadioStationStub(channel)
        for index, signer in enumerate(signers):
            request = connect_request(signer, f"127.0.0.1:{7100 + 100 * index}")
            assert (await stub.ConnectPeer(request, timeout=DEADLINE)).code == 0


async def peer_list(rs: RadioStationProcess, channel: str) -> pb.PeerListReply:
    async with grpc.aio.insecure_channel(rs.target) as channel_:
        stub = pb_grpc.RadioStationStub(channel_)
        return await stub.GetPeerList(pb.ChannelRequest(channel=channel), timeout=DEADLINE)


async def conf_value(rs: RadioStationProcess, name: str) -> Any:
    status, body = await get_json(f"{rs.rest}/api/v1/conf?name={name}")
    assert status == 200, body
    return body["data"][0]["value"]


# -- the token file


async def test_token_file_is_private_and_kept_across_restarts(start_rs: StartRS) -> None:
    rs = await start_rs()
    path = rs.token_path
    assert path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert f"operator token created in {path}" in rs.current_log()
    assert not list(path.parent.glob("*.tmp"))
    assert await rs.terminate() == 0
    rs.start()
    await rs.wait_ready()
    assert path.read_text().strip() == token
    assert f"operator token read from {path}" in rs.current_log()
    status, _ = await post_raw(
        f"{rs.rest}/api/v1/conf", b'{"name": "GRPC_TIMEOUT", "value": 4}', rs.operator()
    )
    assert status == 200


async def test_configured_token_path_is_used(start_rs: StartRS) -> None:
    rs = await start_rs({"RADIOSTATION_ADMIN_TOKEN_PATH": "secrets/rs_token"})
    assert rs.token_path == rs.workdir / "secrets" / "rs_token"
    assert rs.token_path.stat().st_mode & 0o777 == 0o600
    assert not (rs.workdir / "storage" / f"radiostation_{rs.port}" / "admin_token").exists()
    status, _ = await post_raw(
        f"{rs.rest}/api/v1/conf", b'{"name": "GRPC_TIMEOUT", "value": 4}', rs.operator()
    )
    assert status == 200


@pytest.mark.parametrize(
    ("mode", "content", "words"),
    [
        (0o640, "t" * 43, ["open to group or others (mode 0640)", "chmod 600"]),
        (0o604, "t" * 43, ["open to group or others (mode 0604)", "chmod 600"]),
        (0o600, "tooshort1", ["must be 32 to 256 characters, it has 9"]),
        (0o600, "t" * 40 + " x", ["may only hold"]),
    ],
)
async def test_an_unsafe_token_file_refuses_start(
    tmp_path: Path, mode: int, content: str, words: list[str]
) -> None:
    port = free_port_pair()
    path = tmp_path / "s" / f"radiostation_{port}" / "admin_token"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    path.chmod(mode)
    rs = RadioStationProcess(tmp_path, port, {"DEFAULT_STORAGE_PATH": str(tmp_path / "s")})
    code, logs = await rs.run_to_exit()
    assert code == 1, logs
    assert str(path) in logs and all(word in logs for word in words), logs
    assert content not in logs
    assert_clean_log(logs, "radiostation")


# -- every write needs the token


async def test_every_write_route_is_operator_only(tmp_path: Path) -> None:
    """The routes that change state are exactly those the next test checks over HTTP."""
    app = bare_app(tmp_path)
    writes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("GET", "HEAD") and route.resource is not None
    }
    assert writes == {(method, path) for method, path, _ in WRITES}


WRITES = [
    ("POST", "/api/v1/conf", b'{"name": "GRPC_TIMEOUT", "value": 1.5}'),
    ("POST", "/api/v1/cert/issue/ca", b""),
    ("POST", "/api/v1/cert/issue/peer", None),  # a fresh signed request
    ("DELETE", "/api/v1/peer", None),  # ?peer_id= of a registered peer
    ("POST", "/api/v1/channel", b'{"channel": "c_new"}'),
    ("POST", "/api/v1/channel/peer", b'{"channel": "c_new", "peer_target": "127.0.0.1:7100"}'),
    ("DELETE", "/api/v1/channel/peer", b""),  # the entry the write before adds
]
QUERIES = {"/api/v1/channel/peer": "?channel=c_new&peer_target=127.0.0.1:7100"}


def write_url(rs: RadioStationProcess, method: str, path: str, victim: Signer) -> str:
    """The URL of one of WRITES, with the query arguments its target needs."""
    if path == "/api/v1/peer":
        return f"{rs.rest}{path}?peer_id={victim.address}"
    return f"{rs.rest}{path}{QUERIES.get(path, '') if method == 'DELETE' else ''}"


async def test_writes_need_the_operator_token(start_rs: StartRS) -> None:
    rs = await start_rs()
    victim = Signer.generate()
    await register(rs, victim)
    ca_dir = rs.workdir / "storage" / f"radiostation_{rs.port}" / "ca"
    token = rs.token_path.read_text().strip()
    for method, path, body in WRITES:
        url = write_url(rs, method, path, victim)
        data = json.dumps(issue_body(Signer.generate())).encode() if body is None else body
        refusals = [
            ({}, 401),
            ({"Authorization": "Basic " + token}, 401),
            ({"Authorization": "Bearer"}, 401),
            (WRONG, 403),
            ({"Authorization": "Bearer " + token[:-1]}, 403),
            ({"Authorization": "Bearer " + token + "x"}, 403),
        ]
        for headers, expected in refusals:
            status, answer, response_headers = await call(method, url, data, headers)
            assert status == expected, (method, path, headers, answer)
            assert answer["response_code"] < 0 and "token" in answer["message"], answer
            if expected == 401:
                assert response_headers["WWW-Authenticate"].startswith("Bearer")
        # nothing changed
        assert await conf_value(rs, "GRPC_TIMEOUT") == 5.0
        assert not (ca_dir / "ca.pem").exists()
        assert [p.peer_id for p in (await peer_list(rs, "")).peers] == [victim.address]
        assert list((await get_json(f"{rs.rest}/api/v1/channel/data"))[1]["data"]) == [
            "loopchain_default"
        ]
        assert not (rs.workdir / "channel_manage_data.json").exists()
    logs = rs.current_log()
    assert "refused: no operator token (from 127.0.0.1)" in logs
    assert "refused: a wrong operator token (from 127.0.0.1)" in logs

    for method, path, body in WRITES:
        url = write_url(rs, method, path, victim)
        data = json.dumps(issue_body(Signer.generate())).encode() if body is None else body
        status, answer, _ = await call(method, url, data, {"Authorization": f"Bearer {token}"})
        assert (status, answer["response_code"]) == (200, 0), (method, path, answer)
    assert await conf_value(rs, "GRPC_TIMEOUT") == 1.5
    assert (ca_dir / "ca.pem").is_file()
    assert list((await peer_list(rs, "")).peers) == []
    written = json.loads((rs.workdir / "channel_manage_data.json").read_text())
    assert written["c_new"] == {  # (a nid of its own: the default channel takes ICON_NID's)
        "score_package": "loopchain/default",
        "peers": [],
        "genesis_data": {"accounts": [], "nid": "0x4"},
    }
    status, _ = await get_json(f"{rs.rest}/api/v1/conf")  # reads stay open
    assert status == 200


# -- GETs change nothing


async def test_get_never_creates_a_ca(start_rs: StartRS) -> None:
    rs = await start_rs()
    storage = rs.workdir / "storage" / f"radiostation_{rs.port}"
    before = sorted(p.relative_to(storage) for p in storage.rglob("*"))
    for path in ("cert/issue/ca", "cert/list/ca"):
        status, answer = await get_json(f"{rs.rest}/api/v1/{path}")
        assert (status, answer["response_code"]) == (404, -4), answer
        assert "POST /api/v1/cert/issue/ca" in answer["message"]
        assert "operator token" in answer["message"]
    assert (await get_json(f"{rs.rest}/api/v1/cert/list/peer"))[1]["data"] == []
    assert sorted(p.relative_to(storage) for p in storage.rglob("*")) == before
    assert not (storage / "ca").exists()
    assert "create it with POST /api/v1/cert/issue/ca" in rs.current_log()


# -- configuration values


CONF_REFUSALS: list[tuple[bytes, list[str]]] = [
    (b'{"name": "HEARTBEAT_TIMEOUT", "value": NaN}', ["NaN"]),
    (b'{"name": "HEARTBEAT_TIMEOUT", "value": Infinity}', ["Infinity"]),
    (b'{"name": "HEARTBEAT_TIMEOUT", "value": -Infinity}', ["Infinity"]),
    (b'{"name": "HEARTBEAT_TIMEOUT", "value": 1e400}', ["1e400", "out of range"]),
    (b'{"name": "HEARTBEAT_TIMEOUT", "value": 0}', ["HEARTBEAT_TIMEOUT", "above 0"]),
    (b'{"name": "HEARTBEAT_INTERVAL", "value": -1}', ["HEARTBEAT_INTERVAL", "above 0"]),
    (b'{"name": "GRPC_TIMEOUT", "value": 0.0}', ["GRPC_TIMEOUT", "above 0"]),
    (b'{"name": "GRPC_TIMEOUT", "value": 86401}', ["GRPC_TIMEOUT", "at most 86400"]),
    (b'{"name": "GRPC_TIMEOUT", "value": ' + b"9" * 400 + b"}", ["GRPC_TIMEOUT", "range"]),
    (b'{"name": "MAX_BLOCK_TX_NUM", "value": ' + b"9" * 400 + b"}", ["at most 2147483647"]),
    (b'{"name": "MAX_BLOCK_TX_NUM", "value": -' + b"9" * 400 + b"}", ["MAX_BLOCK_TX_NUM"]),
    (b'{"name": "MAX_BLOCK_TX_NUM", "value": 0}', ["MAX_BLOCK_TX_NUM", "at least 1"]),
    (b'{"name": "MAX_BLOCK_TX_NUM", "value": 5.5}', ["MAX_BLOCK_TX_NUM must be int"]),
    (b'{"name": "MAX_BLOCK_TX_NUM", "value": true}', ["MAX_BLOCK_TX_NUM must be int"]),
    (b'{"name": "HEARTBEAT_TIMEOUT", "value": "10"}', ["HEARTBEAT_TIMEOUT must be float"]),
    (b'{"name": "ALLOW_LOAD_SCORE_IN_DEVELOP", "value": 1}', ["must be true or false"]),
    (b'{"name": "ALLOW_LOAD_SCORE_IN_DEVELOP", "value": "true"}', ["must be true or false"]),
    (b'{"name": "LEADER_COMPLAIN_RATIO", "value": 1.5}', ["LEADER_COMPLAIN_RATIO"]),
    (b'{"name": "VOTING_RATIO", "value": 0.5}', ["VOTING_RATIO"]),
    # the package of a channel added without one: a name a peer loads a package by
    (b'{"name": "DEFAULT_SCORE_PACKAGE", "value": "../../etc"}', ["value: ", "<org>/<package>"]),
    (b'{"name": "DEFAULT_SCORE_PACKAGE", "value": "a/b/c"}', ["DEFAULT_SCORE_PACKAGE", "'a/b/c'"]),
    (b'{"name": "DEFAULT_SCORE_PACKAGE", "value": "/etc"}', ["DEFAULT_SCORE_PACKAGE"]),
    (b'{"name": "DEFAULT_SCORE_PACKAGE", "value": ""}', ["DEFAULT_SCORE_PACKAGE"]),
    (b'{"name": "DEFAULT_SCORE_PACKAGE", "value": "' + b"x" * 300 + b'/y"}', ["'xxx", "..."]),
    (b'{"name": "DEFAULT_SCORE_PACKAGE", "value": 5}', ["DEFAULT_SCORE_PACKAGE must be str"]),
    (b'{"name": "DEFAULT_SCORE_BRANCH", "value": "--upload-pack=x"}', ["git check-ref-format"]),
    (b'{"name": "DEFAULT_SCORE_BRANCH", "value": "a..b"}', ["DEFAULT_SCORE_BRANCH"]),
    (b'{"name": "DEFAULT_SCORE_BRANCH", "value": "' + b"x" * 300_000 + b'"}', ["at most 200"]),
    # a wrong type is named, never echoed in full
    (b'{"name": "GRPC_TIMEOUT", "value": "' + b"x" * 300_000 + b'"}', ["GRPC_TIMEOUT", "..."]),
    (b'{"name": "MAX_BLOCK_TX_NUM", "value": [' + b"1," * 50_000 + b"1]}", ["must be int"]),
    (b'{"name": 5, "value": 1}', ["name: "]),
    (b'{"name": "NO_SUCH_KEY", "value": 1}', ["name: unknown configuration key 'NO_SUCH_KEY'"]),
]
RUNTIME_FIXED = [
    ("ENABLE_CHANNEL_AUTH", True),
    ("DEFAULT_STORAGE_PATH", "/tmp/elsewhere"),
    ("CHANNEL_MANAGE_DATA_PATH", "other.json"),
    ("PORT_RADIOSTATION", 7102),
    ("IP_LOCAL", "0.0.0.0"),
    ("GRPC_SSL_TYPE", 0),
    ("GRPC_SSL_KEY_PATH", "key.pem"),
    ("RADIOSTATION_ADMIN_TOKEN_PATH", "t"),
    ("REST_MAX_BODY_BYTES", 10),
    ("LOG_FILE_PATH", "x.log"),
    ("LOG_FILE_ROTATE_MAX_BYTES", 1000),
    # the REST server's limits and deadlines, set when it starts
    ("REST_KEEPALIVE_TIMEOUT", 1.0),
    ("REST_MAX_CONNECTIONS", 1),
    ("REST_SEND_TIMEOUT", 1.0),
    ("REST_MAX_SENDING_MB", 1),
    ("REST_MAX_RECEIVING_MB", 1),
    # as every process's give-back of freed memory
    ("MEMORY_GIVE_BACK_MB", 0),
]


async def test_conf_values_are_typed_and_range_checked(start_rs: StartRS) -> None:
    rs = await start_rs()
    url = f"{rs.rest}/api/v1/conf"
    before = (await get_json(url))[1]["data"]
    cases = CONF_REFUSALS + [
        (json.dumps({"name": name, "value": value}).encode(), [name, "at runtime"])
        for name, value in RUNTIME_FIXED
    ]
    for raw, words in cases:
        status, body = await post_raw(url, raw, rs.operator())
        assert (status, body["response_code"]) == (400, -6), (raw[:80], body)
        assert all(word in body["message"] for word in words), (raw[:80], body)
        assert len(body["message"]) < 300, body
    assert (await get_json(url))[1]["data"] == before

    # a peer's keys, however right their values: the RadioStation reads them nowhere
    peers_own = [
        (b'{"name": "ALLOW_LOAD_SCORE_IN_DEVELOP", "value": true}', True),
        (b'{"name": "MAX_BLOCK_TX_NUM", "value": 2147483647}', 2147483647),
        (b'{"name": "DEFAULT_SCORE_BRANCH", "value": "release/1.0"}', "release/1.0"),
    ]
    for raw, _ in peers_own:
        status, body = await post_raw(url, raw, rs.operator())
        assert (status, body["response_code"]) == (400, -6), (raw, body)
        assert "is not a RadioStation setting" in body["message"], body
        assert len(body["message"]) < 300, body
    assert (await get_json(url))[1]["data"] == before

    accepted = [
        (b'{"name": "HEARTBEAT_TIMEOUT", "value": 5}', 5.0),
        (b'{"name": "GRPC_TIMEOUT", "value": 30}', 30.0),
        (b'{"name": "DEFAULT_SCORE_PACKAGE", "value": "sample/token"}', "sample/token"),
        (b'{"name": "ICON_NID", "value": "0x7"}', "0x7"),
    ]
    for raw, value in accepted:
        status, body = await post_raw(url, raw, rs.operator())
        assert (status, body["data"][0]["value"]) == (200, value), body
        assert "until this RadioStation stops" in body["message"], body  # not in its files


# -- bounded request bodies


DEEP_LIST = b"[" * 100_000 + b"]" * 100_000
BAD_BODIES: list[tuple[bytes, str]] = [
    (DEEP_LIST, "nested too deeply"),
    (b'{"name": "GRPC_TIMEOUT", "value": ' + DEEP_LIST + b"}", "nested too deeply"),
    (b'{"name": "x", "value": ' + b"7" * 5000 + b"}", "5000 digits"),
    (b'{"name": "x", "value": ' + b"7" * 1001 + b"}", "1001 digits"),
    (b'{"name": "x", "value": NaN}', "NaN"),
    (b'{"name": "x", "value": [1e999]}', "out of range"),
    (b'{"name": "\\ud800", "value": 1}', "lone surrogate"),
    (b'{"name": "x", "value": "\\udfff"}', "lone surrogate"),
    (b'{"name": "x", "value": {"\\ud83d": 1}}', "lone surrogate"),
    (b'{"name": "\xff\xfe", "value": 1}', "not UTF-8"),
    (b'{"name": "\xed\xa0\x80", "value": 1}', "not UTF-8"),  # a surrogate encoded in UTF-8
    (b"\xef\xbb\xbf{}", "BOM"),
]


async def test_malformed_bodies_are_400_never_500(start_rs: StartRS) -> None:
    rs = await start_rs()
    for path in ("/api/v1/conf", "/api/v1/cert/issue/peer"):
        for raw, words in BAD_BODIES:
            status, body = await post_raw(f"{rs.rest}{path}", raw, rs.operator())
            assert (status, body["response_code"]) == (400, -6), (path, raw[:60], body)
            assert "not valid JSON" in body["message"] and words in body["message"], body
    # a valid surrogate pair is a character like any other
    pair = b'{"name": "\\ud83d\\ude00", "value": 1}'
    status, body = await post_raw(f"{rs.rest}/api/v1/conf", pair, rs.operator())
    assert (status, body["response_code"]) == (400, -6)
    assert "unknown configuration key" in body["message"]
    big = b'{"x": "' + b"a" * (600 * 1024) + b'"}'
    status, body = await post_raw(f"{rs.rest}/api/v1/conf", big, rs.operator())
    assert (status, body["response_code"]) == (413, -6)
    assert_clean_log(rs.current_log(), "radiostation")
    assert "internal error" not in rs.current_log()


# -- peer removal


async def test_removal_leaves_every_channel_and_persists(start_rs: StartRS) -> None:
    channels = {"c1": {"score_package": "org/p1"}, "c2": {"score_package": "org/p2"}}
    rs = await start_rs({"LOOPCHAIN_DEFAULT_CHANNEL": "c1"}, channels)
    a, b = Signer.generate(), Signer.generate()
    await register(rs, a, b)
    versions = {
        c: ValidatorSet.decode((await peer_list(rs, c)).validator_set).version for c in channels
    }
    url = f"{rs.rest}/api/v1/peer"

    status, body, _ = await call("DELETE", f"{url}?peer_id={a.address}", None, rs.operator())
    assert (status, body["response_code"]) == (200, 0), body
    expected = {c: v + 1 for c, v in versions.items()}
    admitting = ["c1", "c2"]  # open channels: it registers again if it runs, which is said
    assert body["data"] == {"peer_id": a.address, "channels": expected, "admitted_by": admitting}
    assert "if it runs, as channels c1, c2 admit any peer" in body["message"]
    assert "only a list of peers keeps it out" in body["message"]
    assert f"peer {a.address} removed by the operator (from 127.0.0.1)" in rs.current_log()
    for channel in channels:
        listed = await peer_list(rs, channel)
        assert [p.peer_id for p in listed.peers] == [b.address]
        vset = ValidatorSet.decode(listed.validator_set)
        assert (vset.version, vset.peer_ids) == (expected[channel], [b.address])
    async with grpc.aio.insecure_channel(rs.target) as channel_:
        stub = pb_grpc.RadioStationStub(channel_)
        gone = await stub.Heartbeat(heartbeat_request(a), timeout=DEADLINE)
        stays = await stub.Heartbeat(heartbeat_request(b), timeout=DEADLINE)
    assert gone.code == -800
    assert (stays.code, stays.peer_list_version) == (0, expected["c1"])  # peers see the change
    status, body = await get_json(f"{rs.rest}/api/v1/peer/list?channel=c2")
    assert body["data"]["registered_peer_count"] == 1

    status, body, _ = await call("DELETE", f"{url}?peer_id={a.address}", None, rs.operator())
    assert (status, body["response_code"]) == (404, -800) and a.address in body["message"]
    status, body, _ = await call("DELETE", url, None, rs.operator())
    assert (status, body["response_code"]) == (400, -6) and "peer_id" in body["message"]

    registry = rs.workdir / "storage" / f"radiostation_{rs.port}" / "registry.json"
    saved = json.loads(registry.read_text())
    assert a.address not in [p["peer_id"] for p in saved["peers"]]
    assert all(a.address not in c["members"] for c in saved["channels"].values())
    # (the sets served before name it: it was a party, GetPeerList over TLS still serves it)
    assert all(a.address in c["parties"] for c in saved["channels"].values())
    assert await rs.terminate() == 0
    rs.start()
    await rs.wait_ready()
    for channel in channels:
        listed = await peer_list(rs, channel)
        assert [p.peer_id for p in listed.peers] == [b.address]
        assert ValidatorSet.decode(listed.validator_set).version == expected[channel]


# -- channel changes


async def _vset(rs: RadioStationProcess, channel: str) -> ValidatorSet:
    return ValidatorSet.decode((await peer_list(rs, channel)).validator_set)


async def _change(
    rs: RadioStationProcess, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    status, answer, _ = await call(method, f"{rs.rest}{path}", data, rs.operator())
    return status, answer


async def test_removal_names_the_channels_that_list_the_peer_still(start_rs: StartRS) -> None:
    """Listed mode: the channels whose entries name the peer are said (unlisting it there keeps
    it out); one that does not list it is not."""
    a, b = Signer.generate(), Signer.generate()
    channels = {
        "c1": {"score_package": "org/p1", "peers": [{"peer_id": a.address}]},
        "c2": {"score_package": "org/p2", "peers": [{"peer_id": b.address}]},
    }
    rs = await start_rs({"ENABLE_CHANNEL_AUTH": True, "LOOPCHAIN_DEFAULT_CHANNEL": "c1"}, channels)
    await register(rs, a, b)
    status, body = await _change(rs, "DELETE", f"/api/v1/peer?peer_id={a.address}")
    assert (status, body["data"]["admitted_by"]) == (200, ["c1"]), body
    assert body["message"].endswith(
        "; it registers again at its next heartbeat if it runs, as channels c1 list it (unlist "
        "it there: gtool remove-peer)"
    ), body


async def test_channel_changes_are_checked_applied_and_persist(start_rs: StartRS) -> None:
    a, b = Signer.generate(), Signer.generate()
    channels = {"c1": {"score_package": "org/p1", "peers": [{"peer_id": a.address}]}}
    rs = await start_rs({"ENABLE_CHANNEL_AUTH": True, "LOOPCHAIN_DEFAULT_CHANNEL": "c1"}, channels)
    await register(rs, a)
    async with grpc.aio.insecure_channel(rs.target) as channel_:
        stub = pb_grpc.RadioStationStub(channel_)
        refused = await stub.ConnectPeer(connect_request(b, "127.0.0.1:7200"), timeout=DEADLINE)
    assert refused.code == -800  # not listed yet
    before = (await _vset(rs, "c1")).version

    # listing a peer in a channel: by id (listed mode), then it may register
    entry = {"channel": "c1", "peer_target": "127.0.0.1:7200"}
    status, body = await _change(rs, "POST", "/api/v1/channel/peer", entry)
    assert (status, body["response_code"]) == (400, -6) and "needs a peer_id" in body["message"]
    status, body = await _change(
        rs, "POST", "/api/v1/channel/peer", {**entry, "peer_id": b.address}
    )
    assert (status, body["response_code"]) == (200, 0), body
    assert body["data"]["c1"]["peers"][1] == {"peer_id": b.address, "peer_target": "127.0.0.1:7200"}
    await register(rs, a, b)
    vset = await _vset(rs, "c1")
    assert vset.peer_ids == [a.address, b.address] and vset.version > before

    # a new channel, whose members are the registered peers it lists
    new = {"channel": "c2", "score_package": "org/p2", "peers": [{"peer_id": b.address}]}
    status, body = await _change(rs, "POST", "/api/v1/channel", new)
    assert (status, body["response_code"]) == (200, 0), body
    assert body["data"]["version"] == 1
    assert (await _vset(rs, "c2")).peer_ids == [b.address]
    assert (await _vset(rs, "c2")).score_package == "org/p2"

    # refusals change nothing, and name where in the body the problem is
    two = [{"peer_id": a.address}, {"peer_id": b.address, "weight": 0}]
    accounts = [{"name": "god", "address": a.address}]
    refusals = [
        ("POST", "/api/v1/channel", new, 400, "channel 'c2' exists already"),
        ("POST", "/api/v1/channel", {"channel": "../x"}, 400, "channel: must be 1 to 64 letters"),
        ("POST", "/api/v1/channel", {"channel": "c3", "bogus": 1}, 400, "unknown keys ['bogus']"),
        ("POST", "/api/v1/channel", {"score_package": "org/p"}, 400, "channel: must be"),
        (
            "POST",
            "/api/v1/channel",
            {"channel": "c3", "score_package": "a"},
            400,
            "score_package: 'a'",
        ),
        ("POST", "/api/v1/channel", {"channel": "c3", "peers": two}, 400, "peers[1].weight: must"),
        (
            "POST",
            "/api/v1/channel",
            {"channel": "c3", "peers": [{"peer_id": a.address}, {"peer_target": "h:1"}]},
            400,
            "peers[1].peer_id: with ENABLE_CHANNEL_AUTH every peer entry needs a peer_id",
        ),
        (
            "POST",
            "/api/v1/channel",
            {"channel": "c3", "groups": {"g 1": {"weight": -1}}},
            400,
            'groups["g 1"].weight: must be an integer from 1 to 2147483647',
        ),
        (
            "POST",
            "/api/v1/channel",
            {"channel": "c3", "genesis_data": {"accounts": accounts}},
            400,
            "genesis_data: 'accounts[0]': missing field 'balance'",
        ),
        (
            "POST",
            "/api/v1/channel/peer",
            {"channel": "c9", "peer_id": a.address},
            404,
            "channel: unknown channel 'c9'",
        ),
        (
            "POST",
            "/api/v1/channel/peer",
            {"channel": "c2", "peer_id": b.address},
            400,
            f"peer_id: '{b.address}' is listed twice (peers[0] and peers[1]; an entry is known by",
        ),
        (
            "POST",
            "/api/v1/channel/peer",
            {"channel": "c2", "peer_id": "hx1"},
            400,
            "peer_id: must be 'hx' and 40 lowercase hex digits",
        ),
        (
            "POST",
            "/api/v1/channel/peer",
            {"channel": "c2", **{"peer_id": a.address, "weight": 0}},
            400,
            "weight: must be an integer from 1 to 2147483647",
        ),
        (
            "POST",
            "/api/v1/channel/peer",
            {"channel": "c2", **{"peer_id": a.address, "group_id": "g"}},
            400,
            "group_id: names group 'g', missing from 'groups'",
        ),
        ("DELETE", "/api/v1/channel/peer?channel=c2", None, 400, "peer_id"),
        ("DELETE", f"/api/v1/channel/peer?channel=c2&peer_id={a.address}", None, 404, "lists no"),
    ]
    data_file = rs.workdir / "channel_manage_data.json"
    saved = data_file.read_text()
    for method, path, request, expected, words in refusals:
        status, body = await _change(rs, method, path, request)
        assert status == expected and words in body["message"], (path, request, body)
        assert body["response_code"] < 0
    assert data_file.read_text() == saved

    # unlisting a peer takes it out of the channel
    path = f"/api/v1/channel/peer?channel=c1&peer_id={b.address}"
    status, body = await _change(rs, "DELETE", path)
    assert (status, body["response_code"]) == (200, 0), body
    assert (await _vset(rs, "c1")).peer_ids == [a.address]
    assert f"channel c1: peer {b.address} unlisted by the operator" in rs.current_log()
    # but not its last validator: the chain could hand over to no set after an empty one, and
    # stopped for good (review)
    saved = data_file.read_text()
    path = f"/api/v1/channel/peer?channel=c1&peer_id={a.address}"
    status, body = await _change(rs, "DELETE", path)
    assert (status, body["response_code"]) == (400, -6), body
    assert "channel 'c1' would list no validator" in body["message"], body
    assert data_file.read_text() == saved and (await _vset(rs, "c1")).peer_ids == [a.address]

    # the file holds what the RadioStation serves, and a restart reads it back
    status, served = await get_json(f"{rs.rest}/api/v1/channel/data")
    assert status == 200 and json.loads(data_file.read_text()) == served["data"]
    assert served["data"]["c1"] == {"score_package": "org/p1", "peers": [{"peer_id": a.address}]}
    versions = {c: (await _vset(rs, c)).version for c in ("c1", "c2")}
    assert await rs.terminate() == 0
    rs.start()
    await rs.wait_ready()
    assert (await get_json(f"{rs.rest}/api/v1/channel/data"))[1] == served
    assert {c: (await _vset(rs, c)).version for c in ("c1", "c2")} == versions
    assert (await _vset(rs, "c2")).peer_ids == [b.address]


async def test_a_channel_takes_no_more_than_max_channel_peers(start_rs: StartRS) -> None:
    """A channel's list of peers is bounded: an entry beyond MAX_CHANNEL_PEERS, or a new channel
    listing more, is refused with 400 saying so; the file, the channels and their versions stay."""
    ids = [f"hx{n:040x}" for n in range(MAX_CHANNEL_PEERS + 1)]
    channels = {"c1": {"score_package": "org/p1", "peers": [{"peer_id": p} for p in ids[:-1]]}}
    rs = await start_rs({"LOOPCHAIN_DEFAULT_CHANNEL": "c1"}, channels)
    data_file = rs.workdir / "channel_manage_data.json"
    saved, served = data_file.read_text(), (await get_json(f"{rs.rest}/api/v1/channel/data"))[1]
    version = (await _vset(rs, "c1")).version
    one_more = {"channel": "c1", "peer_id": ids[-1]}
    status, body = await _change(rs, "POST", "/api/v1/channel/peer", one_more)
    assert (status, body["response_code"]) == (400, -6), body
    assert "lists 256 peers, as many as a channel may list (MAX_CHANNEL_PEERS)" in body["message"]
    too_many = {"channel": "c2", "peers": [{"peer_id": p} for p in ids]}
    status, body = await _change(rs, "POST", "/api/v1/channel", too_many)
    assert (status, body["response_code"]) == (400, -6), body
    assert "lists 257 entries; a channel lists at most 256 (MAX_CHANNEL_PEERS)" in body["message"]
    assert data_file.read_text() == saved
    assert (await get_json(f"{rs.rest}/api/v1/channel/data"))[1] == served
    assert (await _vset(rs, "c1")).version == version


async def test_a_change_through_the_api_keeps_a_hand_edit_of_the_channel_file(
    start_rs: StartRS,
) -> None:
    """channel_manage_data.json edited by hand while the RadioStation runs (which serves what it
    read at start): a change through the API is refused 409, saying so, and the file keeps the
    edit (it was overwritten, and the edit lost: operator review); after a restart, which takes
    the file, the API writes it again."""
    channels = {"c1": {"score_package": "org/p1"}}
    rs = await start_rs({"LOOPCHAIN_DEFAULT_CHANNEL": "c1"}, channels)
    data_file = rs.workdir / "channel_manage_data.json"
    edited = {**channels, "delta": {"score_package": "org/p4"}}
    data_file.write_text(json.dumps(edited))
    new = {"channel": "c2", "score_package": "org/p2"}
    status, body = await _change(rs, "POST", "/api/v1/channel", new)
    assert (status, body["response_code"]) == (409, -1), body
    assert "was changed on disk since this RadioStation read it" in body["message"]
    assert json.loads(data_file.read_text()) == edited
    assert "c2" not in (await get_json(f"{rs.rest}/api/v1/channel/data"))[1]
    assert await rs.terminate() == 0
    rs.start()
    await rs.wait_ready()
    status, body = await _change(rs, "POST", "/api/v1/channel", new)
    assert (status, body["response_code"]) == (200, 0), body
    assert set(json.loads(data_file.read_text())) == {"c1", "delta", "c2"}


async def test_rest_connections_beyond_rest_max_connections_are_answered_503(
    start_rs: StartRS,
) -> None:
    """The RadioStation's REST port with REST_MAX_CONNECTIONS open: a new connection is answered
    503 with Retry-After and closed, the open ones are still served, and once one closes a new
    one is served."""
    rs = await start_rs({"REST_MAX_CONNECTIONS": 2})
    path = "/api/v1/conf?name=PORT_RADIOSTATION"
    first = await held_connection(rs.rest_port, path, 30)
    second = await held_connection(rs.rest_port, path, 30)
    try:
        refused = await until_closed(rs.rest_port, get_request(path, close=True), 30)
        status, body = status_and_body(refused)
        assert status == 503 and b"\r\nRetry-After: 1\r\n" in refused, refused
        assert "REST_MAX_CONNECTIONS" in json.loads(body)["message"]
        first[1].write(get_request(path, close=False))
        assert (await asyncio.wait_for(read_response(first[0]), 20))[0] == 200
        second[1].close()
        third = await held_connection(rs.rest_port, path, 30)
        third[1].close()
    finally:
        first[1].close()
        second[1].close()


async def test_an_operator_write_whose_client_leaves_midway_is_no_error(start_rs: StartRS) -> None:
    """The operator's write whose client closes its connection before its body arrived in full:
    the RadioStation logs no error (the fixture checks its log) and goes on. Before, each was an
    ERROR with a traceback ("REST POST /api/v1/conf failed ... ConnectionResetError")."""
    rs = await start_rs({"REST_BODY_TIMEOUT": 300.0})
    await leave_midway(rs.rest_port, withheld_body("/api/v1/conf", rs.operator()), 60)
    status, _ = await get_json(f"{rs.rest}/api/v1/conf?name=PORT_RADIOSTATION")
    assert status == 200


async def test_rest_connections_that_send_too_little_are_closed(start_rs: StartRS) -> None:
    """The RadioStation's REST port: a connection without a request, or with half a head, is
    closed after REST_KEEPALIVE_TIMEOUT; the operator's write whose body never arrives in full is
    answered 408 after REST_BODY_TIMEOUT (read only once the token is checked) and closed."""
    rs = await start_rs({"REST_KEEPALIVE_TIMEOUT": 1.0, "REST_BODY_TIMEOUT": 1.0})
    withheld = withheld_body("/api/v1/conf", rs.operator())
    silent, half_head, answer = await asyncio.gather(
        until_closed(rs.rest_port, SILENT, 30),
        until_closed(rs.rest_port, HALF_HEAD, 30),
        until_closed(rs.rest_port, withheld, 30),
    )
    assert silent == b"" and half_head == b""
    status, body = status_and_body(answer)
    assert status == 408, answer
    assert "REST_BODY_TIMEOUT" in json.loads(body)["message"]
    status, _ = await get_json(f"{rs.rest}/api/v1/conf?name=PORT_RADIOSTATION")
    assert status == 200


async def test_peer_certificates_are_listed_once_for_callers_at_once_and_again_on_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /api/v1/cert/list/peer parses every certificate issued and anyone may ask: built on
    the event loop for each request, a few clients in a loop held the RadioStation's heartbeats
    up for seconds (a review measured GetPeerList at 2 s with four). Callers at once share one
    build, made in a thread, and its copy serves until a certificate is issued or revoked."""
    monkeypatch.setattr(rs_rest, "LISTING_MAX_AGE_S", 3600.0)  # only a change renews it
    app = bare_app(tmp_path)
    certs, listing = app[rs_rest.CERTS], app[rs_rest.PEER_CERTS]
    certs.issue_ca()
    first, second = Signer.generate(), Signer.generate()
    certs.issue_peer(issue_body(first), 30)
    async with TestClient(TestServer(app)) as client:

        async def listed() -> dict[str, bool]:
            response = await client.get("/api/v1/cert/list/peer")
            assert response.status == 200, await response.text()
            return {p["peer_id"]: p["revoked"] for p in (await response.json())["data"]}

        answers = await asyncio.gather(*(listed() for _ in range(16)))
        assert answers == [{first.address: False}] * 16 and listing.builds == 1
        assert await listed() == {first.address: False} and listing.builds == 1  # its copy
        certs.issue_peer(issue_body(second), 30)  # as another tool would, in another process
        assert await listed() == {first.address: False, second.address: False}
        assert listing.builds == 2
        certs.directory.revoke_peer(first.address)  # the revocation list changes
        assert await listed() == {first.address: True, second.address: False}
        assert listing.builds == 3
        # a certificate file damaged on disk: each caller is told so, and nothing is kept
        issued = tmp_path / "ca" / "peers" / second.address / "issued"
        (issued / "ff.pem").write_bytes(b"not a certificate")
        listing.invalidate()
        answers = await asyncio.gather(*(client.get("/api/v1/cert/list/peer") for _ in range(4)))
        for response in answers:
            assert response.status == 503 and "corrupt" in (await response.json())["message"]
        (issued / "ff.pem").unlink()
        assert await listed() == {first.address: True, second.address: False}
