"""Disk full and read-only storage under real peers: a clear error, new transactions refused with
503, nothing torn, and recovery once the storage is fixed.

Four peers (the real radiostation.py and peer.py, with their REST proxies and SCORE processes).
One peer keeps its storage (DEFAULT_STORAGE_PATH/peer_PORT) on a 64 MB tmpfs that the test fills
with a filler file; another on a small loop-mounted ext4 (errors=remount-ro) that the test turns
read-only while the peer runs, the way a failing disk does (tmpfs cannot be remounted read-only
while LevelDB holds its files open for writing: the kernel answers EBUSY).

* low space: below STORAGE_MIN_FREE_MB the peer answers 503 with Retry-After and says how much is
  free, keeps saving the blocks the others make, and takes transactions again once space returns;
* full: the first block it cannot save stops it with status 1 and a clear message (no traceback);
  with the space back it starts (its block store passes its start-up check) and catches up;
* read-only: a transaction is answered 503 and the peer stops with status 1 (a store that failed a
  write takes no more), refuses to start cleanly while its storage stays read-only, and catches up
  once the filesystem is repaired and mounted again.

Needs root (mount); the module is skipped when a tmpfs cannot be mounted, the read-only test when
a loop-mounted ext4 with its error trigger is not available."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._mounts import (
    MB,
    Filler,
    free_bytes,
    mount_entry,
    mount_tmpfs,
    run,
    tmpfs_unavailable,
    unmount,
)
from tools.procs import LocalNetwork, Proc, http, post_json, wait_until

PEERS = 4
MIN_FREE_MB = 16  # STORAGE_MIN_FREE_MB of the network
TMPFS_MB = 64
EXT4_MB = 64
LOW_FREE_MB = 8  # what the filler leaves in the low-space test: under the limit, above zero
CONFIG = {"STORAGE_MIN_FREE_MB": MIN_FREE_MB, "LEADER_BLOCK_CREATION_LIMIT": 2}


_REASON = tmpfs_unavailable()
if _REASON is not None:
    pytest.skip(f"cannot mount a tmpfs (needs root): {_REASON}", allow_module_level=True)


class Ext4Image:
    """A small ext4 filesystem in a file, loop-mounted with errors=remount-ro."""

    def __init__(self, image: Path, directory: Path) -> None:
        self.image = image
        self.directory = directory
        self.device: str | None = None

    def create(self) -> str | None:
        """Make and mount it; None, or why it cannot be done."""
        if shutil.which("mkfs.ext4") is None or shutil.which("e2fsck") is None:
            return "no mkfs.ext4 / e2fsck"
        with open(self.image, "wb") as file:
            file.truncate(EXT4_MB * MB)
        made = run("mkfs.ext4", "-q", "-F", "-m", "0", self.image)
        if made.returncode != 0:
            return f"mkfs.ext4 failed: {made.stderr.strip()}"
        reason = self.mount()
        if reason is None and not self.trigger_path().exists():
            reason = f"the kernel has no {self.trigger_path()}"
            self.unmount()
        return reason

    def mount(self) -> str | None:
        """Attach the image to a loop device of its own and mount that. Never `mount -o loop`:
        it reuses a loop device the image is still attached to, and a process started by
        `ip netns exec` (the partition tests, on another worker) has a copy of this mount in its
        own mount namespace that outlives our umount, so the mount after a repair got the old,
        emergency read-only filesystem back."""
        self.directory.mkdir(parents=True, exist_ok=True)
        attached = run("losetup", "--find", "--show", self.image)
        if attached.returncode != 0:
            return f"losetup failed: {attached.stderr.strip() or attached.returncode}"
        device = attached.stdout.strip()
        done = run("mount", "-t", "ext4", "-o", "errors=remount-ro", device, self.directory)
        if done.returncode != 0:
            run("losetup", "-d", device)
            return done.stderr.strip() or f"exit {done.returncode}"
        self.device = device
        return None

    def unmount(self) -> None:
        """Unmount it and detach its loop device (the kernel detaches it later while a copy of
        the mount in another namespace still holds it)."""
        unmount(self.directory)
        self._detach()

    def _detach(self) -> None:
        if self.device is not None:
            run("losetup", "-d", self.device)
            self.device = None

    def trigger_path(self) -> Path:
        entry = mount_entry(self.directory)
        device = Path(entry[0]).name if entry else "?"
        return Path("/sys/fs/ext4") / device / "trigger_fs_error"

    def fail(self) -> None:
        """Report a filesystem error: ext4 remounts itself read-only at once, open files too."""
        self.trigger_path().write_text("loopchain e2e test: storage turns read-only\n")

    def read_only(self) -> bool:
        """Whether writing there fails with EROFS (an ext4 that remounted itself read-only may
        still list "rw" in /proc/mounts, with "emergency_ro")."""
        try:
            (self.directory / "write_probe").write_bytes(b"probe")
        except OSError as exc:
            if exc.errno == errno.EROFS:
                return True
            raise
        (self.directory / "write_probe").unlink()
        return False

    def repair(self) -> None:
        """What an operator does: unmount, check and mount again (read-write)."""
        done = run("umount", self.directory)
        assert done.returncode == 0, f"cannot unmount {self.directory}: {done.stderr}"
        self._detach()
        checked = run("e2fsck", "-f", "-y", self.image)
        assert checked.returncode <= 1, f"e2fsck left errors: {checked.stdout}{checked.stderr}"
        reason = self.mount()
        assert reason is None, f"cannot mount {self.image} again: {reason}"


class StorageNet:
    """The four-peer network, the two peers with special storage and what clients were told."""

    def __init__(self, net: LocalNetwork, low: int, readonly: int) -> None:
        self.net = net
        self.ports = sorted(net.peers)
        self.low = low
        self.readonly = readonly
        self.storage = Path(net.config_values["DEFAULT_STORAGE_PATH"])
        self.filler = Filler(self.dir(low))
        self.ext4: Ext4Image | None = None
        self.ext4_reason: str | None = None
        self.acknowledged: list[str] = []

    def dir(self, port: int) -> Path:
        return self.storage / f"peer_{port}"

    def others(self, *excluded: int) -> list[int]:
        return [p for p in self.ports if p not in excluded]

    def submit(self, port: int, tag: str) -> str:
        reply = post_json(f"{self.net.rest(port)}/api/v1/transactions", {"tag": tag})
        assert reply["response_code"] == 0, reply
        self.acknowledged.append(str(reply["tx_hash"]))
        return str(reply["tx_hash"])

    def post(self, port: int, tag: str) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body) of a transaction posted to `port`, errors included."""
        request = urllib.request.Request(
            f"{self.net.rest(port)}/api/v1/transactions",
            data=json.dumps({"tag": tag}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")

    def final_on(self, port: int, tx_hash: str) -> bool:
        status, body = http("GET", f"{self.net.rest(port)}/api/v1/transactions?hash={tx_hash}")
        return status == 200 and int(body["block_height"]) >= 0

    def final_everywhere(self, tx_hash: str) -> bool:
        return all(self.final_on(port, tx_hash) for port in self.ports)

    def converged(self) -> tuple[int, str, str] | None:
        """The common tip (height, hash, state root) once every peer agrees and executed it."""
        seen = set()
        for port in self.ports:
            s = self.net.status(port)
            if s["tx_pool_size"] or s["executed_height"] != s["block_height"]:
                return None
            seen.add((int(s["block_height"]), str(s["block_hash"]), str(s["state_root"])))
        return seen.pop() if len(seen) == 1 else None

    def check(self) -> tuple[int, str, str]:
        """Every acknowledged transaction is final on every peer, all at one tip and state root."""
        pending = list(self.acknowledged)

        def all_final() -> bool:
            while pending and self.final_everywhere(pending[0]):
                pending.pop(0)
            return not pending

        wait_until(all_final, 90, f"every acknowledged transaction final ({pending[:1]} not)")
        return wait_until(self.converged, 60, "every peer at the same tip and state root")

    def drive_until_dead(
        self, port: int, what: str, each: Callable[[], object] | None = None
    ) -> Proc:
        """Submit through the other peers (blocks for `port` to save) until `port` exits,
        calling `each` before every try."""
        proc = self.net.peers[port]
        others = self.others(port)
        count = iter(range(1_000_000))

        def dead() -> bool:
            if each is not None:
                each()
            if not proc.alive:
                return True
            self.submit(others[next(count) % len(others)], what)
            return not proc.alive

        wait_until(dead, 120, f"peer {port} to stop ({what})")
        return proc

    def restart(self, port: int, wait: bool = True) -> tuple[Proc, int]:
        """Start the peer on `port` again; its process and where its log of this run begins."""
        offset = len(self.net.peers[port].log_text())
        self.net.start_peer(port, wait=wait)
        return self.net.peers[port], offset


def _assert_stopped_cleanly(proc: Proc, since: int = 0) -> str:
    """The peer exited with status 1 saying its storage failed, without a traceback."""
    assert proc.popen is not None and proc.popen.returncode == 1, proc.popen
    log = proc.log_text()[since:]
    assert "storage failed" in log, f"{proc.name}: no 'storage failed' in its log"
    assert "stopped: channel" in log, f"{proc.name}: no final 'stopped:' message"
    assert "Traceback" not in log, f"{proc.name}: a traceback in its log"
    return log


@pytest.fixture(scope="module")
def storage_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageNet]:
    workdir = tmp_path_factory.mktemp("storage_faults")
    net = LocalNetwork(workdir, CONFIG)
    storage = Path(net.config_values["DEFAULT_STORAGE_PATH"])
    low, readonly = net.new_peer_port(), net.new_peer_port()
    mounts: list[Path] = []
    ext4: Ext4Image | None = None
    try:
        reason = mount_tmpfs(storage / f"peer_{low}", TMPFS_MB)
        if reason is not None:
            pytest.skip(f"cannot mount a tmpfs: {reason}")
        mounts.append(storage / f"peer_{low}")
        ext4 = Ext4Image(workdir / "readonly.ext4", storage / f"peer_{readonly}")
        ext4_reason = ext4.create()
        net.start_radiostation()
        for port in (low, readonly, None, None):
            net.start_peer(port)

        def ready() -> bool:
            return all(net.status(p)["validator_count"] == PEERS for p in net.peers)

        wait_until(ready, 60, "four peers that know the four validators")
        state = StorageNet(net, low, readonly)
        state.ext4, state.ext4_reason = (ext4, None) if ext4_reason is None else (None, ext4_reason)
        yield state
    finally:
        try:
            net.stop_and_check()
        finally:
            if ext4 is not None:
                ext4.unmount()
            for directory in mounts:
                unmount(directory)


def test_low_space_refuses_transactions_with_503_and_accepts_again_once_freed(
    storage_net: StorageNet,
) -> None:
    s = storage_net
    start = s.net.height(s.low)
    free = s.filler.leave(LOW_FREE_MB * MB)
    assert 0 < free < MIN_FREE_MB * MB, f"{free} bytes free on the tmpfs"

    for attempt in range(2):
        status, headers, body = s.post(s.low, f"low space {attempt}")
        assert status == 503, (status, body)
        assert headers.get("Retry-After"), headers
        assert body["response_code"] < 0, body
        assert "MB free" in body["message"] and "STORAGE_MIN_FREE_MB" in body["message"], body
    proc = s.net.peers[s.low]
    wait_until(lambda: "intake refused:" in proc.log_text(), 30, "the refusal in the log")
    assert proc.log_text().count("intake refused:") == 1, "the refusal is not logged once"

    # the others' transactions still become final everywhere, the low peer saving their blocks
    for port in s.others(s.low):
        s.submit(port, "while the low peer is low on space")
    s.check()
    assert s.net.height(s.low) > start
    assert free_bytes(s.filler.directory) > 0

    s.filler.remove()
    tx_hash = s.submit(s.low, "space is back")
    wait_until(
        lambda: "intake accepts transactions again" in proc.log_text(), 30, "the all-clear logged"
    )
    wait_until(lambda: s.final_everywhere(tx_hash), 60, "the transaction final on every peer")
    s.check()


def test_a_full_disk_stops_the_peer_cleanly_and_it_catches_up_once_freed(
    storage_net: StorageNet,
) -> None:
    s = storage_net
    s.check()
    offset = len(s.net.peers[s.low].log_text())
    assert s.filler.top_up() == 0
    status, headers, body = s.post(s.low, "disk full")
    assert status == 503 and headers.get("Retry-After"), (status, body)
    assert "0.0 MB free" in body["message"], body

    # the next block it has to save cannot be written: the peer stops, exit status 1
    proc = s.drive_until_dead(s.low, "while the low peer's disk is full", s.filler.top_up)
    _assert_stopped_cleanly(proc, offset)

    s.filler.remove()
    proc, offset = s.restart(s.low)  # start-up checks its block store: it is whole
    log = proc.log_text()[offset:]
    assert "cannot start" not in log and "Traceback" not in log, log[-2000:]
    s.submit(s.low, "after the disk was freed")
    s.check()


def test_read_only_storage_refuses_with_503_stops_cleanly_and_catches_up_after_repair(
    storage_net: StorageNet,
) -> None:
    s = storage_net
    if s.ext4 is None:
        pytest.skip(f"no loop-mounted ext4 to turn read-only: {s.ext4_reason}")
    ext4 = s.ext4
    s.check()
    proc = s.net.peers[s.readonly]
    offset = len(proc.log_text())

    ext4.fail()
    assert ext4.read_only()
    assert proc.alive
    try:
        status, headers, body = s.post(s.readonly, "read-only storage")
    except OSError:  # only acceptable when the peer already stopped (exit status 1, see below)
        wait_until(lambda: not proc.alive, 30, "the read-only peer to stop")
    else:
        assert status == 503 and headers.get("Retry-After"), (status, body)
        assert "Read-only file system" in body["message"], body

    proc = s.drive_until_dead(s.readonly, "while the read-only peer is read-only")
    _assert_stopped_cleanly(proc, offset)

    # while the filesystem stays read-only the peer refuses to start, with a message
    proc, offset = s.restart(s.readonly, wait=False)
    wait_until(lambda: not proc.alive, 60, "the peer on read-only storage to give up")
    log = proc.log_text()[offset:]
    assert proc.popen is not None and proc.popen.returncode == 1, proc.popen
    assert "cannot start" in log and "Read-only file system" in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]

    ext4.repair()
    assert not ext4.read_only()
    proc, offset = s.restart(s.readonly)
    log = proc.log_text()[offset:]
    assert "cannot start" not in log and "Traceback" not in log, log[-2000:]
    s.submit(s.readonly, "after the repair")
    s.check()


def test_a_repaired_ext4_is_writable_while_another_mount_namespace_holds_the_failed_one(
    tmp_path: Path,
) -> None:
    """The read-only test's repair gets a fresh filesystem even when a process in another mount
    namespace (`ip netns exec` of the partition tests on the other worker) still has a copy of the
    failed mount: with `mount -o loop` the mount after the repair reused the old loop device and
    got the old, emergency read-only filesystem back (CI failed so)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare command")
    ext4 = Ext4Image(tmp_path / "image.ext4", tmp_path / "mnt")
    reason = ext4.create()
    if reason is not None:
        pytest.skip(f"no loop-mounted ext4: {reason}")
    holder = None
    try:
        # a process in a mount namespace of its own, copied while the filesystem is mounted
        holder = subprocess.Popen(
            ["unshare", "--mount", "sh", "-c", "echo ready && exec sleep 600"],
            stdout=subprocess.PIPE,
        )
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        ext4.fail()
        assert ext4.read_only()
        ext4.repair()
        assert not ext4.read_only()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        ext4.unmount()
