"""tools/gtool.py run as a process against the real radiostation.py: every subcommand, the operator
token found the way the RadioStation keeps it, the errors (one line, exit 1 or 2), and the menu on
a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.protos import loopchain_pb2_grpc as pb_grpc
from loopchain.types.crypto import Signer
from tests._tty import run_on_tty
from tests.integration._rs_helpers import connect_request, heartbeat_request
from tools.procs import ROOT, LocalNetwork, free_port_pair, get

GTOOL = ROOT / "tools" / "gtool.py"
DEADLINE = 10.0


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    # the fake peers registered here serve nothing at their targets, and beat once: connected
    # for as long as the tests need, not HEARTBEAT_TIMEOUT's 10 s (a slow machine's gtool runs)
    config = {"RADIOSTATION_CHECK_TARGETS": False, "HEARTBEAT_TIMEOUT": 600.0}
    network = LocalNetwork(tmp_path_factory.mktemp("gtool"), config)
    try:
        network.start_radiostation()
        yield network
    finally:
        network.stop_and_check()


def register(net: LocalNetwork, signer: Signer, target: str, leader: bool = False) -> None:
    """Register `signer` at `target` over gRPC, with a heartbeat (as leader when `leader`)."""
    with grpc.insecure_channel(f"127.0.0.1:{net.rs_port}") as channel:
        stub = pb_grpc.RadioStationStub(channel)
        assert stub.ConnectPeer(connect_request(signer, target), timeout=DEADLINE).code == 0
        beat = heartbeat_request(signer, peer_type=1 if leader else 0)
        assert stub.Heartbeat(beat, timeout=DEADLINE).code == 0


def gtool(net: LocalNetwork, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """gtool as a process from `cwd`, finding the token through the network's conf.json."""
    done = subprocess.run(
        [sys.executable, str(GTOOL), "-r", net.rs_rest, "-o", str(net.config_path), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_lists_each_channel_with_its_leader(net: LocalNetwork, tmp_path: Path) -> None:
    leader, other = Signer.generate(), Signer.generate()
    register(net, leader, "127.0.0.1:7100", leader=True)
    register(net, other, "127.0.0.1:7200")
    status = ok_json(gtool(net, "--json", "status", cwd=tmp_path))
    default = status["loopchain_default"]
    assert default["leader"] == leader.address
    listed = {p["peer_id"]: p for p in default["registered_peer_list"]}
    assert {leader.address, other.address} <= set(listed)
    text = gtool(net, "status", cwd=tmp_path).stdout
    assert f"leader {leader.address}" in text
    assert f"{leader.address}  127.0.0.1:7100  connected" in text


def test_channels_add_and_remove_peers_and_dump(net: LocalNetwork, tmp_path: Path) -> None:
    done = gtool(net, "add-channel", "kofia_9", "--score", "sample/token", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (  # (a nid of its own: the default channel takes the peers' ICON_NID, 0x3)
        "channel kofia_9: added with network id 0x4 (genesis_data.nid: it stated none, and the "
        "peers' ICON_NID is another channel's); its peers open it at their next start (channel "
        "version" in done.stdout
    ), done.stdout
    done = gtool(net, "add-channel", "kofia_10", "--nid", "0x20", cwd=tmp_path)
    assert "channel kofia_10: added; its peers open it" in done.stdout, (done.stdout, done.stderr)
    peer_id = Signer.generate().address
    done = gtool(net, "add-peer", "kofia_9", "127.0.0.1:7300", cwd=tmp_path)
    assert done.returncode == 0 and "127.0.0.1:7300 listed" in done.stdout, done.stderr
    args = ("--peer-id", peer_id, "--weight", "3", "--group", "", "--role", "auditor")
    assert gtool(net, "add-peer", "kofia_9", "127.0.0.1:7400", *args, cwd=tmp_path).returncode == 0

    data = ok_json(gtool(net, "--json", "channels", cwd=tmp_path))
    assert data["kofia_9"] == {
        "score_package": "sample/token",
        "peers": [
            {"peer_target": "127.0.0.1:7300"},
            {"peer_id": peer_id, "peer_target": "127.0.0.1:7400", "weight": 3, "role": "auditor"},
        ],
        "genesis_data": {"accounts": [], "nid": "0x4"},
    }
    assert data["kofia_10"]["genesis_data"] == {"accounts": [], "nid": "0x20"}
    text = gtool(net, "channels", cwd=tmp_path).stdout
    assert "kofia_9: SCORE sample/token, 2 listed peers" in text
    assert f'{peer_id}  127.0.0.1:7400  {{"weight": 3, "role": "auditor"}}' in text
    assert get(f"{net.rs_rest}/api/v1/channel/data")["data"] == data

    # dump: the same data, on stdout or into a file (as the RadioStation wrote its own)
    assert ok_json(gtool(net, "dump", cwd=tmp_path)) == data
    out = tmp_path / "channel_manage_data.json"
    done = gtool(net, "dump", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0 and json.loads(out.read_text()) == data
    assert json.loads((net.workdir / "channel_manage_data.json").read_text()) == data

    for who in (peer_id, "127.0.0.1:7300"):
        done = gtool(net, "remove-peer", "kofia_9", who, cwd=tmp_path)
        assert done.returncode == 0 and f"peer {who} unlisted" in done.stdout, done.stderr
    assert ok_json(gtool(net, "dump", cwd=tmp_path))["kofia_9"]["peers"] == []


def test_unregister_forgets_a_peer(net: LocalNetwork, tmp_path: Path) -> None:
    gone = Signer.generate()
    register(net, gone, "127.0.0.1:7500")
    done = gtool(net, "unregister", gone.address, cwd=tmp_path)
    assert done.returncode == 0 and f"peer {gone.address} removed" in done.stdout, done.stderr
    listed = get(f"{net.rs_rest}/api/v1/peer/list")["data"]["registered_peer_list"]
    assert gone.address not in {p["peer_id"] for p in listed}


def test_the_token_file_can_be_named(net: LocalNetwork, tmp_path: Path) -> None:
    token_file = Path(net.config_values["DEFAULT_STORAGE_PATH"]) / (
        f"radiostation_{net.rs_port}/admin_token"
    )
    env = {**os.environ, "RADIOSTATION_ADMIN_TOKEN_PATH": str(token_file)}
    done = subprocess.run(
        [sys.executable, str(GTOOL), "-r", net.rs_rest, "add-channel", "by_env"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    explicit = ("--token-file", str(token_file), "add-channel", "by_flag")
    assert gtool(net, *explicit, cwd=tmp_path).returncode == 0
    channels = ok_json(gtool(net, "dump", cwd=tmp_path))
    assert {"by_env", "by_flag"} <= set(channels)


def test_errors_are_one_line_and_a_non_zero_exit(net: LocalNetwork, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_token"
    wrong.write_text("w" * 43)
    down = f"http://127.0.0.1:{free_port_pair() + 1900}"
    cases = [
        (("add-channel", "loopchain_default"), 1, "exists already"),
        (("add-channel", "../up"), 1, "letters, digits"),
        (("add-peer", "nochannel", "127.0.0.1:7100"), 1, "unknown channel"),
        (("add-peer", "loopchain_default", "nohost"), 1, "host:port"),
        (("add-peer", "loopchain_default", "127.0.0.1:7100", "--weight", "0"), 1, "weight"),
        (("remove-peer", "loopchain_default", "hx" + "0" * 40), 1, "lists no peer"),
        (("unregister", "hx" + "0" * 40), 1, "not registered"),
        (("--token-file", str(wrong), "add-channel", "x"), 1, "not the operator token"),
        (("--token-file", str(tmp_path / "none"), "add-channel", "x"), 1, "cannot read"),
        (("dump", "--out", str(tmp_path / "no" / "dir.json")), 1, "cannot write"),
        (("-r", down, "status"), 1, "cannot reach"),
        (("-r", down, "channels"), 1, "cannot reach"),
        (("-r", "ftp://h:1", "status"), 2, "http://"),
        (("add-peer", "c"), 2, "required"),
        (("add-peer", "c", "h:1", "--role", "boss"), 2, "invalid choice"),
        (("nosuch",), 2, "invalid choice"),
    ]
    before = ok_json(gtool(net, "dump", cwd=tmp_path))
    for args, code, words in cases:
        done = gtool(net, *args, cwd=tmp_path)
        assert done.returncode == code and words in done.stderr, (args, done.stderr)
        if code == 1:
            assert done.stderr.count("\n") == 1, done.stderr
    assert ok_json(gtool(net, "dump", cwd=tmp_path)) == before  # nothing changed
    # without the configuration the token is looked for where a default RadioStation keeps it
    done = subprocess.run(
        [sys.executable, str(GTOOL), "-r", net.rs_rest, "add-channel", "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "RADIOSTATION_ADMIN_TOKEN_PATH"},
        check=False,
    )
    expected = f".storage/radiostation_{net.rs_port}/admin_token"
    assert done.returncode == 1 and expected in done.stderr, done.stderr


def test_help_and_no_subcommand_without_a_terminal(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(GTOOL), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0
    for command in ("status", "channels", "add-channel", "add-peer", "remove-peer", "dump"):
        assert command in done.stdout
    done = subprocess.run(
        [sys.executable, str(GTOOL)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "usage:" in done.stderr and done.stdout == ""


def test_menu_on_a_terminal(net: LocalNetwork, tmp_path: Path) -> None:
    argv = [sys.executable, str(GTOOL), "-r", net.rs_rest, "-o", str(net.config_path)]
    answers = [
        ("select", "3"),  # add a channel
        ("channel", "from_menu"),
        ("SCORE package", ""),
        ("select", "2"),  # show channels
        ("select", "3"),
        ("channel", "from_menu"),  # again: refused, and the menu goes on
        ("SCORE package", ""),
        ("select", "7"),  # write channel_manage_data.json
        ("file", ""),
        ("select", "0"),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = run_on_tty(argv, answers, env=env, cwd=str(tmp_path), deadline=60)
    assert done.exit_code == 0, done.output
    assert "channel from_menu: added" in done.output
    assert "from_menu: SCORE loopchain/default, 0 listed peers" in done.output
    assert "error: POST /api/v1/channel: HTTP 400: channel 'from_menu' exists already" in (
        done.output
    )
    written = json.loads((tmp_path / "channel_manage_data.json").read_text())
    assert "from_menu" in written
    assert "Traceback" not in done.output
