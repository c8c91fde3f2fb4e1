"""A running peer registers again with a RadioStation that does not know it (its heartbeat is
answered PEER_UNKNOWN): one restarted on an empty data folder, or the standby of `-r a,b` whose
data is a copy taken before the peer registered. Real radiostation.py and peer.py processes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from loopchain.peer.node import REGISTRATION_CACHE
from loopchain.storage.leveldb import LevelDBStore
from tools.procs import REST_DIFF, LocalNetwork, Proc, free_port_pair, get, wait_serving, wait_until

WORKER_CHANNELS = {
    "alpha": {"score_package": "loopchain/default"},
    "beta": {"score_package": "loopchain/default"},
}
DEADLINE = 30.0  # many heartbeat intervals (0.5 s) and gRPC deadlines; a registration takes ~0.1 s
REGISTERED_AGAIN = "registered again with RadioStation"
REGISTERING_AGAIN = "does not know this peer: registering again"


def _listed(rs_rest: str, peer_id: str) -> bool:
    """Whether the RadioStation serving REST at `rs_rest` lists `peer_id` in the default channel."""
    peers = get(f"{rs_rest}/api/v1/peer/list")["data"]["registered_peer_list"]
    return any(p["peer_id"] == peer_id for p in peers)


def _start_peer(net: LocalNetwork) -> tuple[int, str]:
    port = net.new_peer_port()
    peer_id = net.make_peer_key(port)
    net.start_peer(port)
    wait_until(lambda: _listed(net.rs_rest, peer_id), DEADLINE, "the peer's registration")
    return port, peer_id


def _a_peer_the_new_radiostation_lists_again(net: LocalNetwork, tmp_path: Path) -> int:
    """A peer started, its RadioStation restarted on an empty folder, and the peer listed by it
    again; the peer's port."""
    rs = net.start_radiostation()
    port, peer_id = _start_peer(net)
    assert rs.stop() == 0
    shutil.rmtree(tmp_path / "storage" / f"radiostation_{net.rs_port}")
    net.start_radiostation()
    wait_until(lambda: _listed(net.rs_rest, peer_id), DEADLINE, "the peer listed again")
    return port


def test_a_radiostation_restarted_on_an_empty_folder_lists_the_running_peer_again(
    tmp_path: Path,
) -> None:
    """The RadioStation forgets the peer (and makes itself a new key); the peer's next heartbeat
    is refused as unknown, so it registers again, says so once, and warns that the RadioStation
    now signs with another key than the one its channel trusts."""
    net = LocalNetwork(tmp_path)
    try:
        port = _a_peer_the_new_radiostation_lists_again(net, tmp_path)
        # the peer warns once it has the answer, which lists it before
        peer = net.peers[port]
        wait_until(lambda: "now signs as" in peer.log_text(), DEADLINE, "the new key warned")
        log = peer.log_text()
        assert log.count(REGISTERING_AGAIN) == 1, log[-3000:]
        assert f"RadioStation 127.0.0.1:{net.rs_port} {REGISTERING_AGAIN}" in log
    finally:
        net.stop_and_check()


def test_a_standby_with_an_older_copy_lists_the_peer_once_the_primary_is_gone(
    tmp_path: Path,
) -> None:
    """The standby's data (key and registry) is a copy of the primary's from before the peer
    registered; with the primary stopped the standby answers the peer's heartbeats, refusing them
    as unknown, and the peer registers with it (same key: nothing else to warn about)."""
    net = LocalNetwork(tmp_path)
    standby_port = free_port_pair(net.taken)
    net.config_values["RADIOSTATION_STANDBY_TARGET"] = f"127.0.0.1:{standby_port}"
    net.config_path.write_text(json.dumps(net.config_values))
    standby_rest = f"http://127.0.0.1:{standby_port + REST_DIFF}"
    try:
        primary = net.start_radiostation()
        storage = tmp_path / "storage"
        shutil.copytree(
            storage / f"radiostation_{net.rs_port}", storage / f"radiostation_{standby_port}"
        )
        args = ["radiostation.py", "-p", str(standby_port), "-o", str(net.config_path)]
        standby = Proc(f"radiostation_{standby_port}", args, tmp_path).start()
        net.procs.append(standby)
        wait_serving(standby, f"{standby_rest}/api/v1/peer/list", DEADLINE, "the standby")
        port, peer_id = _start_peer(net)
        assert not _listed(standby_rest, peer_id)
        assert primary.stop() == 0

        wait_until(lambda: _listed(standby_rest, peer_id), DEADLINE, "the peer on the standby")
        peer = net.peers[port]  # it logs its answer compared after the answer lists it
        wait_until(lambda: REGISTERED_AGAIN in peer.log_text(), DEADLINE, "the answer taken")
        log = peer.log_text()
        assert log.count(REGISTERING_AGAIN) == 1, log[-3000:]
        assert f"RadioStation 127.0.0.1:{standby_port} {REGISTERING_AGAIN}" in log
        assert "now signs as" not in log
    finally:
        net.stop_and_check()


def test_a_peer_running_its_channels_in_workers_registers_again_and_caches_the_answer(
    tmp_path: Path,
) -> None:
    """With its channels in worker processes (CHANNEL_WORKERS "always"), each worker heartbeats
    for its channel, and the first refused as unknown by the RadioStation restarted on an empty
    folder registers the peer again (the others' heartbeats pass from then on); the peer's
    registration cache (what it starts with while no RadioStation answers) takes the new answer,
    as a peer without workers does."""
    (tmp_path / "channel_manage_data.json").write_text(json.dumps(WORKER_CHANNELS))
    net = LocalNetwork(
        tmp_path, {"LOOPCHAIN_DEFAULT_CHANNEL": "alpha", "CHANNEL_WORKERS": "always"}
    )
    try:
        port = _a_peer_the_new_radiostation_lists_again(net, tmp_path)
        # the worker warns once it has the RadioStation's answer, which lists the peer before
        changed = r"now signs as (hx[0-9a-f]{40}), not as (hx[0-9a-f]{40})"
        peer = net.peers[port]
        wait_until(lambda: re.search(changed, peer.log_text()), DEADLINE, "the new key warned")
        text = peer.log_text()
        # the first worker refused registers again; another refused before that is done too
        assert 1 <= text.count(REGISTERING_AGAIN) <= len(WORKER_CHANNELS), text[-3000:]
        signs = re.findall(changed, text)
        assert len(set(signs)) == 1, text[-3000:]
    finally:
        net.stop_and_check()
    new, old = signs[0]
    store = LevelDBStore(tmp_path / "storage" / f"peer_{port}" / "node")
    try:
        cached = json.loads(store.get(REGISTRATION_CACHE.encode()) or b"{}")
    finally:
        store.close()
    assert cached["radiostation_address"] == new != old
    assert sorted(c["channel"] for c in cached["channels"]) == sorted(WORKER_CHANNELS)


RADIOSTATION_GONE = "no RadioStation has answered for"
RADIOSTATION_BACK = "answers again after"


def test_a_peer_says_when_its_radiostation_is_gone_and_when_it_answers_again(
    tmp_path: Path,
) -> None:
    """A peer whose RadioStation is down warns once, when that has lasted HEARTBEAT_TIMEOUT,
    and says when it answers again (it said nothing above DEBUG: operator review)."""
    net = LocalNetwork(tmp_path)
    net.config_values["HEARTBEAT_TIMEOUT"] = 2.0
    net.config_path.write_text(json.dumps(net.config_values))
    try:
        rs = net.start_radiostation()
        port, peer_id = _start_peer(net)
        peer = net.peers[port]
        assert rs.stop() == 0
        wait_until(lambda: RADIOSTATION_GONE in peer.log_text(), DEADLINE, "the silence warned")
        net.start_radiostation()
        wait_until(lambda: RADIOSTATION_BACK in peer.log_text(), DEADLINE, "the answer said")
        log = peer.log_text()
        assert log.count(RADIOSTATION_GONE) == 1 and log.count(RADIOSTATION_BACK) == 1, log[-3000:]
        assert f"RadioStation 127.0.0.1:{net.rs_port} {RADIOSTATION_BACK}" in log
        assert _listed(net.rs_rest, peer_id)
    finally:
        net.stop_and_check()
