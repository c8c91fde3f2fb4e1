"""Making files and folders survive a power cut: what is written is synced before it is named
(a module of the bottom layer: keys, stores, the RadioStation and SCORE packages all write so).

write_atomic writes `.{name}.{pid}.{8 hex digits}.tmp` next to `name`, holding an flock on it,
then renames it over `name` (or links it to `name` when it must not replace one). A writer killed
midway (kill -9, a power cut) leaves that file behind; whoever opens the folder next removes it
with sweep_leftovers, only when its writer is provably gone: no process of that pid lives here AND
nobody holds its lock (a reused pid keeps it; a writer in another pid namespace holds the lock
from a moment after it made the file until the file has its name, so a pid unknown here is not
enough on its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SWEPT = 64  # leftovers one sweep removes at most (more go at the next opening)
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp")


def is_write_in_progress(name: str) -> bool:
    """Whether a file name is that of write_atomic's temporary file (a write under way, or one
    killed midway): never a file's state, which is the file it replaces."""
    return _LEFTOVER.fullmatch(name) is not None


def sync_directory(directory: Path) -> None:
    """fsync `directory`: the names created, renamed or removed in it survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: Path) -> None:
    """fsync every file under `root` and every folder of it (the folders last, deepest first),
    before the tree is given its final name by a rename."""
    folders: list[Path] = []
    for folder, _dirs, files in os.walk(root):
        folders.append(Path(folder))
        for name in files:
            path = Path(folder, name)
            if path.is_symlink():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for synced in reversed(folders):
        sync_directory(synced)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, overwrite: bool = True) -> None:
    """Replace `path` with `data` at once and durably: a temporary file of this call alone (two
    writers at once never share one), synced, renamed over `path`, then its directory synced; a
    directory made for it is synced into its parent (make_directories). Unless `overwrite`, the
    file is linked to `path` instead, never replacing one there (FileExistsError)."""
    make_directories(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        # held until the file has its name (closed below): sweep_leftovers keeps it meanwhile
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)
    sync_directory(path.parent)


def make_directories(directory: Path) -> None:
    """Make `directory` and its missing parents, each synced into its parent, so that a power
    cut keeps the path of a file written there."""
    missing: list[Path] = []
    while not directory.is_dir() and directory.parent != directory:
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)  # another writer may make it at the same time
        sync_directory(made.parent)


def process_alive(pid: int) -> bool:
    """True when a process of id `pid` exists here (of any user; a zombie too)."""
    if pid <= 0:
        return True  # not a process id: never taken for a dead one
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's; or no pid we know how to ask about
        return True
    return True


def take_free_lock(path: Path) -> int | None:
    """An open descriptor of `path` holding its flock when nobody else held it (close it to
    release), or None: the lock is held, or the file cannot be opened (a link is not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def sweep_leftovers(directory: Path, limit: int = MAX_SWEPT) -> int:
    """Remove from `directory` the temporary files of write_atomic calls whose writer died
    midway: regular files of this user named `.{name}.{pid}.{8 hex}.tmp` whose pid is no live
    process here and whose lock nobody holds. At most `limit`; how many were removed (0 when
    the folder cannot be read: a sweep never stops an opening)."""
    uid = os.getuid()

    def abandoned(entry: os.DirEntry[str]) -> bool:
        match = _LEFTOVER.fullmatch(entry.name)
        if match is None or process_alive(int(match["pid"])):
            return False
        return _remove_unlocked_file(entry, uid)

    removed = remove_abandoned(directory, abandoned, limit)
    if removed:
        log.info("removed %d temporary files of writes killed midway from %s", removed, directory)
    return removed


def remove_abandoned(
    directory: Path, remove_if_abandoned: Callable[[os.DirEntry[str]], bool], limit: int
) -> int:
    """Offer the entries of `directory` to `remove_if_abandoned` (which removes one it finds
    abandoned, and says so) until `limit` are removed; how many (0 when the folder cannot be
    read: a sweep never stops an opening)."""
    removed = 0
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if removed >= limit:
                break
            if remove_if_abandoned(entry):
                removed += 1
    return removed


def _remove_unlocked_file(entry: os.DirEntry[str], uid: int) -> bool:
    """Unlink `entry` when it is a regular file of `uid` whose flock is free (taken meanwhile)."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return False
        if entry.stat(follow_symlinks=False).st_uid != uid:
            return False
    except OSError:
        return False
    fd = take_free_lock(Path(entry.path))
    if fd is None:
        return False
    try:
        os.unlink(entry.path)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
