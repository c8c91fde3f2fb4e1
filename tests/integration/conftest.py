"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration._rs_helpers import RadioStations, StartRS


@pytest.fixture
async def start_rs(tmp_path: Path) -> AsyncIterator[StartRS]:
    """Start radiostation.py processes; on teardown SIGTERM each, expect exit 0, no problem in
    a log (tools.procs.LOG_PROBLEMS)."""
    stations = RadioStations(tmp_path)
    yield stations.start
    await stations.close()
