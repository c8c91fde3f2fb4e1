"""The real peer.py refuses to start, with one clear line and no traceback, on a bad configuration
and on a block store that fails its checks (and keeps the store as it found it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopchain.blockchain import block_store as schema
from loopchain.storage.leveldb import LevelDBStore
from tools.procs import LocalNetwork, Proc, assert_clean_log, free_port_pair, http, wait_until


def _run_to_exit(name: str, args: list[str], workdir: Path) -> tuple[int, str]:
    proc = Proc(name, args, workdir)
    return proc.run(60), proc.log_text()


@pytest.mark.parametrize(
    ("config", "named"),
    [({"NO_SUCH_KEY": 1}, "NO_SUCH_KEY"), ({"VOTING_RATIO": 0.5}, "VOTING_RATIO")],
)
def test_a_bad_configuration_is_refused_naming_the_key(
    tmp_path: Path, config: dict, named: str
) -> None:
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps(config))
    code, text = _run_to_exit("peer", ["peer.py", "-p", "7999", "-o", str(conf)], tmp_path)
    assert code == 2
    assert named in text and "configuration error" in text
    assert_clean_log(text, "peer")


def test_a_damaged_block_store_is_refused_and_kept(tmp_path: Path) -> None:
    net = LocalNetwork(tmp_path)
    try:
        net.start_radiostation()
        port = net.start_peer()
        tx = json.dumps({"data": "before damage"}).encode()
        status, _ = http("POST", f"{net.rest(port)}/api/v1/transactions", tx)
        assert status == 200
        wait_until(lambda: net.height(port) >= 0, 30, "a first block")
        assert net.peers[port].stop() == 0
        store_dir = tmp_path / "storage" / f"peer_{port}" / "loopchain_default" / "blocks"
        with LevelDBStore(store_dir) as kv:
            kv.put(schema.TIP, b"not a tip pointer", sync=True)
        code, text = _run_to_exit(
            "damaged",
            [
                "peer.py",
                "-p",
                str(port),
                "-r",
                f"127.0.0.1:{net.rs_port}",
                "-o",
                str(net.config_path),
            ],
            tmp_path,
        )
        assert code == 1
        assert "cannot start" in text and "tip pointer is malformed" in text
        assert_clean_log(text, "damaged")
        with LevelDBStore(store_dir) as kv:
            assert kv.get(schema.TIP) == b"not a tip pointer"  # nothing repaired behind our back
    finally:
        net.stop_all()


def test_a_public_key_file_that_is_not_the_peers_own_is_refused(tmp_path: Path) -> None:
    """--public names the public key the peer must have: the real key tool's pair is taken (the
    peer goes on to wait for its RadioStation), another pair's public key stops it at once with
    one line naming both files."""
    pairs = {}
    for name in ("mine", "other"):
        out = tmp_path / name
        code, text = _run_to_exit(
            f"pki-{name}",
            ["tools/create_sign_pki.py", "--out", str(out)],
            tmp_path,
        )
        assert code == 0, text
        pairs[name] = (out / "private.pem", out / "public.pem")
    private, _ = pairs["mine"]
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"DEFAULT_STORAGE_PATH": str(tmp_path / "storage")}))
    dead_rs = "127.0.0.1:9"  # nothing answers: a peer that passed the check waits for it
    port = str(free_port_pair())
    args = ["peer.py", "-p", port, "-r", dead_rs, "-o", str(conf), "--no-rest", "--private"]
    args += [str(private), "--public"]
    code, text = _run_to_exit("wrong-public", [*args, str(pairs["other"][1])], tmp_path)
    assert code == 1, text
    assert (
        f"--public {pairs['other'][1]} is not the public key of the private key {private}" in text
    )
    assert_clean_log(text, "wrong-public")

    proc = Proc("own-public", [*args, str(pairs["mine"][1])], tmp_path)
    proc.start()
    try:
        wait_until(lambda: "waiting for RadioStation" in proc.log_text(), 60, "the wait")
        assert "is not the public key" not in proc.log_text()
    finally:
        proc.stop()
