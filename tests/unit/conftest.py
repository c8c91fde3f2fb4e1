"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.unit.test_channel_services import Cluster


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Four channel services over an in-memory transport; their tasks end cancelled, not failed."""
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        await cluster.stop()
    for task in cluster.tasks:
        assert task.cancelled(), task.exception()
