"""./localnet.sh survives one death: it reports a dead process, keeps the rest running, restarts
the dead peer in place with --restart, and stops everything (restarted peers too) on SIGTERM; and
the unmodified ICON SDK sends on its development genesis as the README shows.
It uses the fixed local-network ports, so it is skipped while something else holds them."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tools.loadtool import DEV_KEY
from tools.procs import (
    ROOT,
    Proc,
    _bindable,
    assert_clean_log,
    cmdline_of,
    descendant_pids,
    get,
    pid_alive,
    wait_until,
)

PORTS = (7100, 7200, 7102, 9000, 9100, 9002)


def _restart(
    data: Path, port: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = ["./localnet.sh", "--data", str(data), "--restart", str(port)]
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=environ
    )


def _current(source: Path, header: bytes) -> bool:
    """Whether a .pyc whose first 16 bytes are `header` is of `source` as it is now: by its
    source's mtime and size, or by its source's hash (compileall with SOURCE_DATE_EPOCH set)."""
    if len(header) != 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(header[4:8], "little") & 1:  # hash-based
        return header[8:] == importlib.util.source_hash(source.read_bytes())
    stat = source.stat()
    return header[8:] == (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (
        stat.st_size & 0xFFFFFFFF
    ).to_bytes(4, "little")


def _stale_bytecode(*packages: str) -> list[str]:
    """The modules of `packages` whose cached bytecode Python would not use as it is: missing, or
    made from another version of the source."""
    stale = []
    for package in packages:
        for source in sorted((ROOT / package).rglob("*.py")):
            try:
                with open(importlib.util.cache_from_source(str(source)), "rb") as cached:
                    header = cached.read(16)
            except OSError:
                header = b""
            if not _current(source, header):
                stale.append(str(source.relative_to(ROOT)))
    return stale


def _maps(pid: int, name: str) -> bool:
    """Whether process `pid` has a file whose path names `name` mapped (a native library it
    loaded)."""
    try:
        return f"/{name}/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_localnet_reports_a_death_restarts_the_peer_and_stops_all(tmp_path: Path) -> None:
    busy = [port for port in PORTS if not _bindable(port)]
    if busy:
        pytest.skip(f"the local network's ports {busy} are in use (a local network runs?)")
    data = tmp_path / "net"
    command = ["./localnet.sh", "--peers", "2", "--data", str(data)]
    # each node's log rotates (here at 1 KiB, which a peer's start passes; 100 files kept)
    rotation = {"LOG_FILE_ROTATE_MAX_BYTES": "1024", "LOG_FILE_ROTATE_BACKUP_COUNT": "100"}
    env = {**os.environ, **rotation}
    proc = Proc("localnet", command, tmp_path, python=None, env=env).start()
    out = proc.log_path
    pids = data / "pids"
    restarted, others = 0, []
    try:
        wait_until(lambda: "Press Ctrl-C" in out.read_text(), 90, "the local network to be up")
        # its processes found current bytecode (a process compiles, at every start, what has none)
        assert _stale_bytecode("loopchain", "score") == []
        # without TLS no process of it loads cryptography (~10 MB of memory each)
        assert [
            cmdline_of(pid) for pid in descendant_pids(proc.pid) if _maps(pid, "cryptography")
        ] == []
        victim = int((pids / "peer_7100.pid").read_text())
        others = [int((pids / f"{n}.pid").read_text()) for n in ("peer_7200", "radiostation")]
        os.kill(victim, signal.SIGKILL)
        # 1. the death is reported, with the way back; the rest keeps running and serving
        wait_until(lambda: "peer_7100 (pid" in out.read_text(), 15, "the death to be reported")
        assert "--restart 7100" in out.read_text()
        assert proc.alive and all(pid_alive(pid) for pid in others)
        assert get("http://127.0.0.1:9100/api/v1/status/peer")["response_code"] == 0
        # 2. a --restart that fails shows why, and only what this start wrote (not the end of
        #    the log of the peer's first run); --restart brings it back in place; a second
        #    --restart refuses (it runs)
        failed = _restart(data, 7100, {"LOOPCHAIN_LOG_LEVEL": "bogus"})
        assert failed.returncode == 1 and "peer_7100 exited" in failed.stderr, failed
        assert "LOOPCHAIN_LOG_LEVEL" in failed.stderr and "[peer:7100]" not in failed.stderr, failed
        again = _restart(data, 7100)
        assert again.returncode == 0 and "restarted" in again.stdout, again
        assert get("http://127.0.0.1:9000/api/v1/status/peer")["response_code"] == 0
        restarted = int((pids / "peer_7100.pid").read_text())
        twice = _restart(data, 7100)
        assert twice.returncode == 2 and "is running" in twice.stderr, twice
    finally:
        code = proc.stop(60)  # SIGTERM (SIGKILL to its group after 60 s)
    # 3. SIGTERM stops every process, the restarted peer included, and leaves no traceback
    assert code == 0, out.read_text()[-2000:]
    gone = [p for p in (restarted, *others) if p]
    wait_until(lambda: not any(pid_alive(p) for p in gone), 20, "every process gone")
    logs = data / "logs"
    for log in sorted(logs.glob("*.log*")):
        assert_clean_log(log.read_text(errors="replace"), log.name, log)
    # 4. the records are in the rotated files, the restarted peer's appended to its first start's;
    #    a node's other output apart from them (the failed restart's refusal, before it logged)
    for name in ("peer_7100", "peer_7200", "radiostation"):
        assert (logs / f"{name}.log.1").exists(), sorted(p.name for p in logs.iterdir())
    assert [(logs / f"{n}.out").read_text() for n in ("peer_7200", "radiostation")] == ["", ""]
    other = (logs / "peer_7100.out").read_text().splitlines()
    assert len(other) == 1 and "LOOPCHAIN_LOG_LEVEL 'bogus'" in other[0], other
    first = "".join(p.read_text() for p in sorted(logs.glob("peer_7100.log*")))
    assert first.count("] loopchain.peer.node: peer id ") == 2  # each start says its id


def test_a_peer_unlisted_from_the_default_channel_is_restarted_in_the_others(
    tmp_path: Path,
) -> None:
    """--restart waited for the default channel's status, which a peer unlisted from that
    channel no longer serves: it reported failure after 30 s while the peer ran and served the
    other channel. It now waits for any channel of the network."""
    busy = [port for port in PORTS if not _bindable(port)]
    if busy:
        pytest.skip(f"the local network's ports {busy} are in use (a local network runs?)")
    data = tmp_path / "net"
    command = ["./localnet.sh", "--peers", "2", "--channels", "alpha,beta", "--data", str(data)]
    proc = Proc("localnet", command, tmp_path, python=None).start()
    out = proc.log_path
    try:
        wait_until(lambda: "Press Ctrl-C" in out.read_text(), 90, "the local network to be up")
        status = "http://127.0.0.1:{}/api/v1/status/peer?channel={}"
        peer_id = get(status.format(9100, "alpha"))["peer_id"]
        gtool = [sys.executable, "tools/gtool.py", "-r", "http://127.0.0.1:9002"]
        gtool += ["-o", str(data / "localnet.json"), "remove-peer", "alpha", peer_id]
        done = subprocess.run(gtool, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done
        wait_until(
            lambda: get(status.format(9000, "alpha"))["validator_count"] == 1,
            60,
            "the handover to the set without the second peer",
        )
        os.kill(int((data / "pids" / "peer_7200.pid").read_text()), signal.SIGKILL)
        wait_until(lambda: "peer_7200 (pid" in out.read_text(), 15, "the death to be reported")
        again = _restart(data, 7200)
        assert again.returncode == 0 and "restarted" in again.stdout, again
        assert get(status.format(9100, "beta"))["response_code"] == 0
    finally:
        code = proc.stop(60)
    assert code == 0, out.read_text()[-2000:]


def test_the_icon_sdk_transfers_on_the_development_genesis(tmp_path: Path) -> None:
    """The README's iconsdk example against ./localnet.sh: the development genesis funds the SDK
    tests' key; a transfer sent and waited for on one peer is seen on the other."""
    from iconsdk.builder.transaction_builder import TransactionBuilder
    from iconsdk.exception import JSONRPCException
    from iconsdk.icon_service import IconService
    from iconsdk.providers.http_provider import HTTPProvider
    from iconsdk.signed_transaction import SignedTransaction
    from iconsdk.wallet.wallet import KeyWallet

    busy = [port for port in PORTS if not _bindable(port)]
    if busy:
        pytest.skip(f"the local network's ports {busy} are in use (a local network runs?)")
    data = tmp_path / "net"
    proc = Proc(
        "localnet", ["./localnet.sh", "--peers", "2", "--data", str(data)], tmp_path, python=None
    )
    proc.start()
    try:
        wait_until(lambda: "Press Ctrl-C" in proc.log_path.read_text(), 90, "the local network")
        god = KeyWallet.load(bytes.fromhex(DEV_KEY))
        options = {"headers": {"Content-Type": "application/json", "Icon-Options": "timeout=60000"}}
        first = IconService(HTTPProvider("http://127.0.0.1:9000", 3, {**options, "timeout": 90}))
        second = IconService(HTTPProvider("http://127.0.0.1:9100", 3, {**options, "timeout": 90}))

        def balance(service: IconService, address: str) -> int | None:
            try:
                return int(service.get_balance(address))
            except JSONRPCException:  # a peer answers before its SCORE process does: -32000 then
                return None

        wait_until(lambda: (balance(first, god.get_address()) or 0) > 0, 60, "the genesis executed")
        assert first.get_total_supply() == 10**6 * 10**18  # as the README says
        to = KeyWallet.create().get_address()
        tx = (
            TransactionBuilder()
            .from_(god.get_address())
            .to(to)
            .value(10**18)
            .step_limit(1_000_000)
            .nid(3)
            .build()
        )
        result = first.send_transaction_and_wait(SignedTransaction(tx, god))
        assert result["status"] == 1 and result["to"] == to
        wait_until(lambda: balance(second, to) == 10**18, 60, "the balance on the other peer")
    finally:
        code = proc.stop(60)
    assert code == 0, proc.log_path.read_text()[-2000:]


def test_ctrl_c_stops_every_process_gracefully(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group with SIGINT while ./localnet.sh forwards SIGTERM:
    the one request, so every process (workers and SCOREs included, and a peer restarted with
    --restart at once after a kill -9) takes its graceful shutdown instead of ending at once."""
    busy = [port for port in PORTS if not _bindable(port)]
    if busy:
        pytest.skip(f"the local network's ports {busy} are in use (a local network runs?)")
    data = tmp_path / "net"
    command = ["./localnet.sh", "--peers", "2", "--data", str(data), "--channels", "ch_a,ch_b"]
    env = dict(os.environ, CHANNEL_WORKERS="always")
    # a terminal's Ctrl-C works even where the test runner ignores SIGINT (inherited by exec)
    prefix = ["env", "--default-signal=INT"]
    proc = Proc("localnet", command, tmp_path, prefix, python=None, env=env).start()
    out = proc.log_path
    try:
        wait_until(lambda: "Press Ctrl-C" in out.read_text(), 90, "the local network to be up")
        pids = [int(f.read_text()) for f in (data / "pids").glob("*.pid")]
        tree = set(descendant_pids(proc.pid))  # localnet.sh's processes and theirs
        workers = [p for p in tree if "loopchain.peer.worker" in cmdline_of(p)]
        assert len(workers) == 4, "each of the 2 peers runs its 2 channels in workers"
        # a peer killed and started again at once: its old proxy still holds the REST port for a
        # moment (it stops when it sees its peer gone), the new peer's proxy tries until it is free
        victim = int((data / "pids" / "peer_7100.pid").read_text())
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not pid_alive(victim), 20, "the killed peer to end")
        again = _restart(data, 7100)
        assert again.returncode == 0 and "restarted" in again.stdout, again
        pids += [*tree, int((data / "pids" / "peer_7100.pid").read_text())]
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        code = proc.wait(60)
    finally:
        proc.stop(10)
    assert code == 0, out.read_text()[-2000:]
    assert "stopped; state kept in" in out.read_text()
    wait_until(lambda: not any(pid_alive(p) for p in pids), 20, "every process gone")
    logs = sorted((data / "logs").glob("*.log"))
    assert logs
    for log in logs:
        text = log.read_text(errors="replace")
        assert "ending the process now" not in text, (log.name, text[-2000:])
        assert_clean_log(text, log.stem, log)


def test_a_network_that_does_not_come_up_ends_localnet_with_a_failure(tmp_path: Path) -> None:
    """A RadioStation that cannot start (here a configuration it refuses) is reported and the
    script ends 1: its stop ended every run with 0, and a script starting it took the failure
    for a network up and stopped (review)."""
    done = subprocess.run(
        ["./localnet.sh", "--data", str(tmp_path / "net"), "--peers", "1"],
        cwd=ROOT,
        env={**os.environ, "PORT_RADIOSTATION": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "radiostation exited; see its log" in done.stderr


def test_a_restart_where_no_network_ran_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    """--restart with a --data where no local network ran made its logs and pids folders before
    refusing (operator review)."""
    data = tmp_path / "none"
    refused = _restart(data, 7200)
    assert refused.returncode == 2 and "no peer 7200 in the local network" in refused.stderr
    assert not data.exists()
