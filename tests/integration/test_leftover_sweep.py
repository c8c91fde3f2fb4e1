"""What processes killed with kill -9 leave behind is swept by the next process, and only that:
socket folders and SCORE unpacking folders (loopchain/scoreservice/owned_dir.py) and temporary
files of atomic writes (loopchain/durable.py), made by real child processes that are killed for
real."""

from __future__ import annotations

import asyncio
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loopchain import durable
from loopchain.configure import load_config
from loopchain.p2p.radiostation_client import Registration
from loopchain.peer.node import WORKER_REGISTRATION
from loopchain.peer.workers import ChannelWorker
from loopchain.radiostation.certs import CertificateDirectory
from loopchain.radiostation.channels import load_channels
from loopchain.radiostation.operator import load_or_create_token
from loopchain.radiostation.registry import Registry
from loopchain.types.crypto import open_key_file
from tests.integration._score_helpers import make_package, make_supervisor, running, score_config
from tests.unit.test_channel_workers import _MISMATCHED_SPEC
from tests.unit.test_peer_reregistration import ISSUER, RadioStation, _grant, _node
from tests.unit.test_score_packages import make_zip, package_files, query, resolve
from tools.procs import pid_alive, wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCORE_PREFIX = "loopchain-score-"
WORKER_PREFIX = "loopchain-worker-"
UNPACK_PREFIX = ".unpack-"  # packages.UNPACK_PREFIX
DEADLINE = 60.0

# A peer-like process: a real ScoreSupervisor with its SCORE loaded; prints its socket folder and
# its SCORE's pid, then waits to be killed.
SUPERVISOR_CHILD = """
import asyncio, sys
from pathlib import Path
from tests.integration._score_helpers import make_package, make_supervisor, running, score_config

async def main():
    root = Path(sys.argv[1])
    supervisor = make_supervisor(root, score_config(), make_package(root))
    async with running(supervisor):
        print(supervisor.socket_dir, supervisor.pid, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

# Opens `count` socket folders of `prefix` in `parent`, prints them, waits to be killed.
SOCKET_DIRS_CHILD = """
import sys
from pathlib import Path
from loopchain.scoreservice.owned_dir import OwnedDir

folders = [OwnedDir(sys.argv[2], Path(sys.argv[1])) for _ in range(int(sys.argv[3]))]
print(" ".join(str(folder.open()) for folder in folders), flush=True)
sys.stdin.read()
"""

# Stops in its first fsync (prints "writing", waits) while it writes `path` with write_atomic
# ("write"), creates the operator token `path` ("token") or unpacks the zip package acme/app of
# the SCORE repository `path` ("unpack").
WRITER_CHILD = """
import os, sys
from pathlib import Path
from loopchain import durable
from loopchain.radiostation.operator import load_or_create_token
from loopchain.scoreservice.packages import resolve_package

def stall(fd):
    print("writing", flush=True)
    sys.stdin.read()

os.fsync = stall
path, what = Path(sys.argv[1]), sys.argv[2]
if what == "token":
    load_or_create_token(path)
elif what == "unpack":
    resolve_package(path, "acme/app", branch="master", allow_develop=False, work_dir=path.parent / "work")
else:
    durable.write_atomic(path, b"half-written")
"""


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp folder of its own, short enough for unix socket paths under it."""
    folder = Path(tempfile.mkdtemp(prefix="lcsweep-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Child:
    """A real child process running `script`; killed (and reaped) at the end of the test."""

    def __init__(self, script: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.folders: list[Path] = []  # the socket folders it opened (SOCKET_DIRS_CHILD)

    def read_line(self, deadline: float = DEADLINE) -> str:
        """The child's first line of output, within `deadline` seconds."""
        assert self.proc.stdout is not None
        end = time.monotonic() + deadline
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < end:
                if selector.select(end - time.monotonic()):
                    line = self.proc.stdout.readline()
                    assert line, f"child {self.pid} ended with {self.proc.wait()} before answering"
                    return line.strip()
        raise AssertionError(f"child {self.pid} did not answer within {deadline} s")

    def kill(self) -> None:
        """SIGKILL the child and reap it: its pid is then no process's."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(DEADLINE)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(script: str, *args: str, env: dict[str, str] | None = None) -> Child:
        started.append(Child(script, *args, env=env))
        return started[-1]

    try:
        yield start
    finally:
        for child in started:
            child.kill()


def _socket_dirs(start: Callable[..., Child], parent: Path, prefix: str, count: int) -> Child:
    child = start(SOCKET_DIRS_CHILD, str(parent), prefix, str(count))
    child.folders = [Path(p) for p in child.read_line().split()]
    return child


def _renamed(folder: Path, pid: int) -> Path:
    """`folder` renamed to say it was made by process `pid`."""
    token = folder.name.rsplit("-", 1)[1]
    target = folder.with_name(f"{SCORE_PREFIX}{pid}-{token}")
    folder.rename(target)
    return target


# -- socket folders


async def test_a_supervisor_removes_the_socket_folder_of_one_killed_and_keeps_a_live_ones(
    short_tmp: Path, children: Callable[..., Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"TMPDIR": str(short_tmp)}
    killed = children(SUPERVISOR_CHILD, str(short_tmp / "killed"), env=env)
    live = children(SUPERVISOR_CHILD, str(short_tmp / "live"), env=env)
    killed_dir, killed_score = killed.read_line().split()
    live_dir, _ = live.read_line().split()
    killed.kill()  # its SCORE process ends with it (it watches its parent)
    wait_until(lambda: not pid_alive(int(killed_score)), DEADLINE, "the killed peer's SCORE end")
    assert Path(killed_dir).is_dir()  # left behind

    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    package = make_package(short_tmp / "next")
    async with running(make_supervisor(short_tmp / "next", score_config(), package)) as next_one:
        assert next_one.socket_dir.parent == short_tmp
        assert not Path(killed_dir).exists()
        assert Path(live_dir).is_dir()
        assert (Path(live_dir) / "score.sock").exists()
    assert not next_one.socket_dir.exists()


async def test_a_channel_worker_removes_worker_socket_folders_of_killed_processes(
    short_tmp: Path, children: Callable[..., Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = _socket_dirs(children, short_tmp, WORKER_PREFIX, 2)
    live = _socket_dirs(children, short_tmp, WORKER_PREFIX, 1)
    killed.kill()
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    fatal: list[str] = []
    worker = ChannelWorker("alpha", dict(_MISMATCHED_SPEC), load_config(), fatal.append)
    try:
        async with asyncio.timeout(DEADLINE):
            await worker.run()  # the worker exits at once (status 2): enough to open its folder
    finally:
        await worker.stop()
    assert fatal  # it did start
    assert not any(folder.exists() for folder in killed.folders)
    assert all(folder.is_dir() for folder in live.folders)
    assert worker.socket_dir.name.startswith(f"{WORKER_PREFIX}{os.getpid()}-")


def test_only_folders_whose_owner_lock_is_free_are_swept(
    short_tmp: Path, children: Callable[..., Child]
) -> None:
    from loopchain.scoreservice.owned_dir import sweep_owned_dirs

    killed = _socket_dirs(children, short_tmp, SCORE_PREFIX, 3)
    live = _socket_dirs(children, short_tmp, SCORE_PREFIX, 2)
    killed.kill()
    dead_dirs, live_dirs = killed.folders, live.folders
    # a pid proves nothing: a dead maker's folder named with a live pid (a pid reused) goes,
    # a live maker's folder named with a dead pid (another pid namespace, say) stays
    reused = _renamed(dead_dirs[0], os.getpid())
    unknown = _renamed(live_dirs[0], killed.pid)
    assert not durable.process_alive(killed.pid)

    assert sweep_owned_dirs(short_tmp, SCORE_PREFIX) == 3
    assert not reused.exists() and not any(folder.exists() for folder in dead_dirs[1:])
    assert unknown.is_dir() and live_dirs[1].is_dir()
    assert sweep_owned_dirs(short_tmp, SCORE_PREFIX) == 0


def test_folders_not_provably_abandoned_are_kept(
    short_tmp: Path, children: Callable[..., Child]
) -> None:
    from loopchain.scoreservice.owned_dir import OWNER_LOCK, sweep_owned_dirs

    killed = _socket_dirs(children, short_tmp, SCORE_PREFIX, 2)
    killed.kill()
    others, no_lock = killed.folders
    legacy = short_tmp / f"{SCORE_PREFIX}{'ab' * 8}"  # named before owner locks: may be live
    legacy.mkdir()
    being_made = short_tmp / f"{SCORE_PREFIX}{killed.pid}-{'cd' * 8}"  # no owner.lock yet
    being_made.mkdir()
    elsewhere = short_tmp / "elsewhere"  # a dead maker's folder under another name
    shutil.copytree(others, elsewhere)
    link = short_tmp / f"{SCORE_PREFIX}{killed.pid}-{'ef' * 8}"  # a link is not followed
    link.symlink_to(elsewhere)
    other_prefix = short_tmp / f"{WORKER_PREFIX}{killed.pid}-{'01' * 8}"
    shutil.copytree(others, other_prefix)
    (no_lock / OWNER_LOCK).unlink()
    root = os.getuid() == 0
    if root:  # a folder of another user is never ours to remove
        os.chown(others, 65534, 65534)

    assert sweep_owned_dirs(short_tmp, SCORE_PREFIX) == (0 if root else 1)
    for kept in (legacy, being_made, other_prefix, no_lock, elsewhere):
        assert kept.is_dir()
    assert (elsewhere / OWNER_LOCK).exists()
    assert link.is_symlink()
    assert others.is_dir() == root


def test_a_sweep_removes_at_most_its_bound(short_tmp: Path, children: Callable[..., Child]) -> None:
    from loopchain.scoreservice.owned_dir import sweep_owned_dirs

    killed = _socket_dirs(children, short_tmp, SCORE_PREFIX, 5)
    killed.kill()
    assert sweep_owned_dirs(short_tmp, SCORE_PREFIX, limit=3) == 3
    assert sum(folder.exists() for folder in killed.folders) == 2
    assert sweep_owned_dirs(short_tmp, SCORE_PREFIX, limit=3) == 2


def test_a_socket_folder_removed_under_its_owner_is_made_and_locked_again(
    short_tmp: Path,
) -> None:
    from loopchain.scoreservice.owned_dir import OWNER_LOCK, OwnedDir

    folder = OwnedDir(SCORE_PREFIX, short_tmp)
    try:
        path = folder.open()
        assert durable.take_free_lock(path / OWNER_LOCK) is None  # held (by another description)
        shutil.rmtree(path)  # say, a temp cleaner
        assert folder.open() == path
        assert durable.take_free_lock(path / OWNER_LOCK) is None
    finally:
        folder.close()
    assert not path.exists()


# -- temporary files of atomic writes


def _stalled_writer(start: Callable[..., Child], path: Path, what: str = "write") -> Child:
    """A real child stopped in its first fsync while it does `what` to `path` (WRITER_CHILD)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = start(WRITER_CHILD, str(path), what)
    assert writer.read_line() == "writing"
    return writer


def _killed_writer(start: Callable[..., Child], path: Path, what: str = "write") -> Path:
    """The temporary file a real write_atomic(path) killed midway left behind."""
    writer = _stalled_writer(start, path, what)
    writer.kill()
    (left,) = path.parent.glob(f".{path.name}.{writer.pid}.*.tmp")
    return left


def _open_key(path: Path) -> None:
    open_key_file(path)


def _open_registry(path: Path) -> None:
    Registry.open(path, {}, False)


def _open_channels(path: Path) -> None:
    load_channels(path, "loopchain_default", "loopchain/default")


def _open_ca(path: Path) -> None:
    CertificateDirectory(path.parent)


@pytest.mark.parametrize(
    ("name", "opener"),
    [
        ("peer_key", _open_key),
        ("registry.json", _open_registry),
        ("channel_manage_data.json", _open_channels),
        ("ca.pem", _open_ca),
    ],
)
def test_a_write_killed_midway_is_swept_when_its_folder_is_opened(
    tmp_path: Path, children: Callable[..., Child], name: str, opener: Callable[[Path], None]
) -> None:
    path = tmp_path / "store" / name
    left = _killed_writer(children, path)
    assert left.read_bytes() == b"half-written"
    opener(path)
    assert not left.exists()


def test_a_live_writer_keeps_its_file_and_a_pid_alone_decides_nothing(
    tmp_path: Path, children: Callable[..., Child]
) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    live = _stalled_writer(children, folder / "live.json")
    (live_tmp,) = folder.glob(".live.json.*.tmp")
    dead_tmp = _killed_writer(children, folder / "dead.json")
    dead_pid = int(dead_tmp.name.split(".")[3])
    # a dead writer's file named with a live pid (a pid reused) is kept: a live writer of that
    # pid may be about to lock it; a live writer's file named with a dead pid keeps its lock
    reused = dead_tmp.with_name(f".dead.json.{os.getpid()}.0000abcd.tmp")
    dead_tmp.rename(reused)
    unknown = live_tmp.with_name(f".live.json.{dead_pid}.0000abcd.tmp")
    live_tmp.rename(unknown)
    link = folder / f".linked.json.{dead_pid}.00001234.tmp"
    link.symlink_to(reused)
    assert durable.sweep_leftovers(folder) == 0
    assert reused.exists() and unknown.exists() and link.is_symlink()

    live.kill()
    assert durable.sweep_leftovers(folder) == 1  # its lock is free now
    assert not unknown.exists()
    assert reused.exists() and link.is_symlink()


def test_a_tmp_sweep_removes_at_most_its_bound(
    tmp_path: Path, children: Callable[..., Child]
) -> None:
    left = [_killed_writer(children, tmp_path / f"file{n}") for n in range(3)]
    assert durable.sweep_leftovers(tmp_path, limit=2) == 2
    assert sum(path.exists() for path in left) == 1
    assert durable.sweep_leftovers(tmp_path, limit=2) == 1
    (tmp_path / "file0").write_bytes(b"kept")  # other files are never touched
    assert durable.sweep_leftovers(tmp_path) == 0
    assert (tmp_path / "file0").read_bytes() == b"kept"


def test_an_operator_token_write_killed_midway_is_swept_and_a_token_never_replaced(
    tmp_path: Path, children: Callable[..., Child]
) -> None:
    path = tmp_path / "radiostation_7102" / "admin_token"
    left = _killed_writer(children, path, "token")
    assert stat.S_IMODE(left.stat().st_mode) == 0o600  # a secret from its first byte
    assert not path.exists()
    token, created = load_or_create_token(path)
    assert created and not left.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):  # as when another RadioStation made it first
        durable.write_atomic(path, b"t" * 43, overwrite=False)
    assert load_or_create_token(path) == (token, False)
    assert list(path.parent.iterdir()) == [path]


async def test_a_registration_a_worker_was_killed_writing_is_swept_when_its_peer_starts(
    tmp_path: Path, children: Callable[..., Child]
) -> None:
    node = _node(tmp_path)
    left = _killed_writer(children, node.root / "alpha" / WORKER_REGISTRATION)
    rs = RadioStation(None, Registration(1, ISSUER, (_grant("alpha"),)))
    assert await node._register(rs, asyncio.Event()) == rs.registration  # type: ignore[arg-type]
    assert not left.exists()


# -- SCORE packages unpacked by a process killed midway


def test_an_unpack_killed_midway_is_swept_when_its_package_is_resolved(
    tmp_path: Path, children: Callable[..., Child]
) -> None:
    repository = tmp_path / "score"
    repository.mkdir()
    make_zip(repository / "acme_app.zip", package_files())
    packages = tmp_path / "work" / "acme_app"
    _stalled_writer(children, repository, "unpack").kill()
    (killed,) = packages.iterdir()
    _stalled_writer(children, repository, "unpack")
    (live,) = set(packages.iterdir()) - {killed}
    assert killed.name.startswith(".unpack-") and live.name.startswith(".unpack-")

    package = resolve(repository)
    assert query(package) == "zipped"
    assert not killed.exists()
    assert live.is_dir()  # its maker still unpacks
    assert set(packages.iterdir()) == {live, package.path}

    # a package unpacked already: what a killed unpack left goes when it is resolved again
    stale = _socket_dirs(children, packages, UNPACK_PREFIX, 2)
    stale.kill()
    assert resolve(repository) == package
    assert set(packages.iterdir()) == {live, package.path}


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_file_being_named_is_kept_by_a_sweep_that_cannot_see_its_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    """A sweeper in another pid namespace sees no process of the writer's pid: the writer's lock
    alone keeps its file, until the file has its name (before, the lock went with the write's
    handle, before the rename: the sweep took the file and the write failed)."""
    target = tmp_path / "registry.json"
    rename = os.replace if overwrite else os.link
    swept: list[int] = []

    def sweeping_first(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
        with monkeypatch.context() as unseen:
            unseen.setattr(durable, "process_alive", lambda pid: False)
            swept.append(durable.sweep_leftovers(tmp_path))
        rename(source, dest)

    monkeypatch.setattr(durable.os, "replace" if overwrite else "link", sweeping_first)
    durable.write_atomic(target, b"{}", overwrite=overwrite)
    assert swept == [0] and target.read_bytes() == b"{}"
    assert [p.name for p in tmp_path.iterdir()] == ["registry.json"]
