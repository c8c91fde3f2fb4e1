"""Small filesystems for storage-fault tests: mount a tmpfs (root only), fill it, unmount it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MB = 1024 * 1024


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, check=False
    )


def mount_tmpfs(directory: Path, size_mb: int) -> str | None:
    """Mount a tmpfs of `size_mb` at `directory`; None, or why it cannot be done."""
    if shutil.which("mount") is None:
        return "no mount command"
    directory.mkdir(parents=True, exist_ok=True)
    done = run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", directory)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def mount_entry(directory: Path) -> tuple[str, str] | None:
    """(source, options) of the filesystem mounted at `directory`, or None."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, point, _kind, options = line.split()[:4]
        if point == str(directory):
            return source, options
    return None


def unmount(directory: Path) -> None:
    """Unmount `directory` (lazily when something still holds it)."""
    if mount_entry(directory) is not None and run("umount", directory).returncode != 0:
        run("umount", "-l", directory)


def tmpfs_unavailable() -> str | None:
    """None when this process may mount a tmpfs, else why not (not root, no permission)."""
    with tempfile.TemporaryDirectory(prefix="tmpfs_probe_") as probe:
        reason = mount_tmpfs(Path(probe), 1)
        if reason is None:
            unmount(Path(probe))
        return reason


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


class Filler:
    """A file that takes up the space of one filesystem."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "filler"

    def leave(self, free: int) -> int:
        """Grow the filler until at most `free` bytes are free; returns what is free then."""
        with open(self.path, "ab") as file:
            while (excess := free_bytes(self.directory) - free) > 0:
                file.write(b"\0" * min(excess, MB))
                file.flush()
        return free_bytes(self.directory)

    def top_up(self) -> int:
        """Write until the filesystem is full (again, when something freed space); returns the
        bytes free afterwards."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for chunk in (MB, 4096, 1):
                with contextlib.suppress(OSError):  # ENOSPC: on with a smaller chunk
                    while os.write(fd, b"\0" * chunk):
                        pass
        finally:
            os.close(fd)
        return free_bytes(self.directory)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
