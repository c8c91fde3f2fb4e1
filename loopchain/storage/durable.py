"""Making files and folders survive a power cut: what is written is synced before it is named."""

from __future__ import annotations

import os
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
