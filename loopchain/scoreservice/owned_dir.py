"""Private folders kept by a live process, and the sweep of those left behind by processes
killed with kill -9: the unix socket folders in the temp directory (a SCORE's, a channel
worker's) and the folders SCORE packages are unpacked in (packages.py).

A folder is named `<prefix><pid>-<16 hex digits>`: the pid of the process that made it (for
people reading the folder), and a random part that makes the name unguessable. Inside,
`owner.lock` is flocked by its maker for as long as it keeps the folder; it is made and locked
under another name and then renamed into place, so an `owner.lock` is locked from the moment it
can be seen. The kernel drops an flock when its holder dies, however it dies, so a lock that can
be taken proves the maker gone, whatever became of its pid (reused by another process, or a pid
of another pid namespace sharing the folder): a pid alone proves nothing and is never trusted.

The first time a process opens a folder of a prefix it sweeps that prefix: it removes folders of
this user (not links) named so whose `owner.lock` it can lock, at most MAX_SWEPT of them (the rest
go at later starts). A folder without `owner.lock`, being made or named before this scheme
(`<prefix><16 hex digits>`), is never removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from loopchain.durable import remove_abandoned, take_free_lock

log = logging.getLogger(__name__)

OWNER_LOCK = "owner.lock"
MAX_SWEPT = 32  # folders one start removes at most


def private_dir(path: Path, *, empty: bool = False) -> Path:
    """Make `path` a directory only this user may enter (mode 0700), emptied first when `empty`;
    OSError when it is a link or belongs to someone else."""
    if empty:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)  # refuses a symbolic link (OSError)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{path} is not a directory of this user; refusing to use it")
    os.chmod(path, 0o700)
    return path


class OwnedDir:
    """A private folder `<prefix><pid>-<token>` in `parent` (by default the temp directory), kept
    (and locked) from open() to close()."""

    def __init__(self, prefix: str, parent: Path | None = None) -> None:
        self.prefix = prefix
        self.parent = Path(tempfile.gettempdir() if parent is None else parent).absolute()
        self.path = self.parent / f"{prefix}{os.getpid()}-{secrets.token_hex(8)}"
        self._lock_fd: int | None = None
        self._swept = False

    def open(self) -> Path:
        """Make the folder (mode 0700) with its locked owner.lock, again when it was removed
        meanwhile; the first time, sweep the folders of this prefix whose makers died."""
        private_dir(self.path)
        if not self._holds_lock():
            self._lock()
        if not self._swept:
            self._swept = True
            sweep_owned_dirs(self.parent, self.prefix)
        return self.path

    def close(self) -> None:
        """Remove the folder, then release its lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _holds_lock(self) -> bool:
        if self._lock_fd is None:
            return False
        try:
            named = os.lstat(self.path / OWNER_LOCK)
        except OSError:
            return False
        held = os.fstat(self._lock_fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _lock(self) -> None:
        """Lock a new file under a name of its own, then rename it to owner.lock."""
        fresh = self.path / f".{OWNER_LOCK}.{secrets.token_hex(4)}"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(fresh, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(fresh, self.path / OWNER_LOCK)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                fresh.unlink()
            raise
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._lock_fd = fd


def sweep_owned_dirs(parent: Path, prefix: str, limit: int = MAX_SWEPT) -> int:
    """Remove from `parent` the folders of `prefix` whose makers died (module docstring),
    at most `limit`; how many. Never raises: a sweep does not stop a start."""
    named = re.compile(re.escape(prefix) + r"[0-9]+-[0-9a-f]{16}")
    uid = os.getuid()

    def abandoned(entry: os.DirEntry[str]) -> bool:
        return bool(named.fullmatch(entry.name)) and _remove_if_abandoned(Path(entry.path), uid)

    removed = remove_abandoned(parent, abandoned, limit)
    if removed:
        log.info("removed %d folders %s* of dead processes from %s", removed, prefix, parent)
    return removed


def _remove_if_abandoned(folder: Path, uid: int) -> bool:
    """Remove `folder` when it is a folder of `uid` whose owner.lock can be locked (held while
    removing it)."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        return False
    fd = take_free_lock(folder / OWNER_LOCK)
    if fd is None:
        return False
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)
    return not folder.exists()
