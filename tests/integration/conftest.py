"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests._mounts import mount_tmpfs, tmpfs_unavailable, unmount
from tests.integration._rs_helpers import RadioStations, StartRS


@pytest.fixture
async def start_rs(tmp_path: Path) -> AsyncIterator[StartRS]:
    """Start radiostation.py processes; on teardown SIGTERM each, expect exit 0, no problem in
    a log (tools.procs.LOG_PROBLEMS)."""
    stations = RadioStations(tmp_path)
    yield stations.start
    await stations.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB tmpfs at tmp_path/disk, for a disk that fills up; skipped when one cannot be
    mounted (not root)."""
    reason = tmpfs_unavailable()
    if reason is not None:
        pytest.skip(f"cannot mount a tmpfs (needs root): {reason}")
    directory = tmp_path / "disk"
    assert mount_tmpfs(directory, 4) is None
    try:
        yield directory
    finally:
        unmount(directory)
