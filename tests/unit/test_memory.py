"""Freed memory given back to the system (loopchain.memory), with this process's real allocator:
what a burst freed below a chunk still in use stays resident until it is given back."""

from __future__ import annotations

import asyncio
import os

import pytest

from loopchain import memory
from tools.bench import read_anon_kb

pytestmark = pytest.mark.skipif(memory.free_bytes() == 0, reason="no glibc mallinfo2/malloc_trim")

BURST_MB = 200


def _anon_kb() -> int:
    anon = read_anon_kb(os.getpid())
    assert anon is not None
    return anon


def _freed_below_a_kept_chunk() -> bytes:
    """Allocate BURST_MB in 64 KB chunks (from the heap: below malloc's mmap threshold), keep
    the last and free the others: memory freed below a chunk in use, as a burst leaves it."""
    chunks = [bytes(64 * 1024) for _ in range(BURST_MB * 16)]
    kept = chunks[-1]
    del chunks
    return kept


def test_what_a_burst_freed_stays_resident_until_given_back() -> None:
    memory.give_back()  # what earlier tests freed: the burst would reuse it, resident already
    before = _anon_kb()
    kept = _freed_below_a_kept_chunk()
    held = _anon_kb()
    assert memory.free_bytes() >= (BURST_MB // 2) << 20
    assert held - before > BURST_MB * 1024 // 2, "the freed memory was returned by itself"
    memory.give_back()
    assert held - _anon_kb() > BURST_MB * 1024 // 2
    assert len(kept) == 64 * 1024


async def test_the_task_gives_back_once_the_threshold_is_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "GIVE_BACK_INTERVAL", 0.01)
    memory.give_back()  # as above
    kept = _freed_below_a_kept_chunk()
    held = _anon_kb()
    task = memory.start_giving_back(BURST_MB // 4)
    try:
        async with asyncio.timeout(30):
            while held - _anon_kb() < BURST_MB * 1024 // 2:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert len(kept) == 64 * 1024


async def test_a_threshold_of_zero_never_gives_back() -> None:
    async with asyncio.timeout(5):
        await memory.give_back_freed_memory(0)  # returns at once: nothing to watch
