"""Making files and folders survive a power cut: what is written is synced before it is named
(a module of the bottom layer: keys, stores, the RadioStation and SCORE packages all write so)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


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


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` at once and durably: a temporary file of this call alone (two
    writers at once never share one), synced, renamed over `path`, then its directory synced; a
    directory made for it is synced into its parent (make_directories)."""
    make_directories(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
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
