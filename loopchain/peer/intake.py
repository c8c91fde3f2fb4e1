"""Durable intake: client transactions reach the channel's intake journal, synced, before the
client hears "accepted" (group commit: the submissions that arrive while one sync runs share the
next). A disk with less free space than the peer keeps for its blocks refuses new transactions,
so a filling disk turns into 503 answers long before a block cannot be saved."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from loopchain.blockchain.intake_journal import IntakeJournal
from loopchain.rates import TokenBucket
from loopchain.storage.abc import StorageError
from loopchain.types.transaction import Transaction

log = logging.getLogger(__name__)

MB = 1024 * 1024


class IntakeRefused(Exception):
    """The transactions could not be recorded (disk full or failing): they are not accepted."""


class IntakeLog:
    """Writes batches of client transactions to the intake journal, one synced write per batch."""

    def __init__(self, journal: IntakeJournal, min_free_bytes: int) -> None:
        self.journal = journal
        self.directory = journal.directory
        self.min_free_bytes = min_free_bytes
        self._waiting: list[tuple[list[Transaction], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._refusing: str | None = None  # the last refusal, logged once until it clears

    async def write(self, txs: list[Transaction]) -> None:
        """Return once `txs` are on disk; IntakeRefused when they cannot be recorded."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((txs, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="intake-log")
        await asyncio.shield(future)  # a client that goes away does not cancel others' write

    async def drain(self) -> None:
        """Wait for the writes under way (before the journal and the store close)."""
        if self._flusher is not None:
            await asyncio.wait([self._flusher])

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            txs = [tx for part, _ in batch for tx in part]
            try:
                await asyncio.to_thread(self._write, txs)
            except Exception as exc:  # any: the batch's writers hear it, the flusher goes on
                if isinstance(exc, IntakeRefused):
                    reason = str(exc)
                else:
                    log.exception("intake: recording %d transactions failed", len(txs))
                    reason = f"the peer cannot record transactions: {exc!r}"
                self._note_refusal(reason)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(IntakeRefused(reason))
                continue
            self._note_refusal(None)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _write(self, txs: list[Transaction]) -> None:
        try:
            free = _free_bytes(self.directory)
        except OSError as exc:
            raise IntakeRefused(
                f"the peer cannot read its storage {self.directory}: {exc}"
            ) from None
        if free < self.min_free_bytes:
            raise IntakeRefused(
                f"the disk holding {self.directory} has {free / MB:.1f} MB free, below the "
                f"{self.min_free_bytes / MB:g} MB this peer keeps for its blocks "
                "(STORAGE_MIN_FREE_MB); transactions are refused until space is freed"
            )
        try:
            self.journal.append(txs)
        except StorageError as exc:
            raise IntakeRefused(f"the peer cannot record transactions: {exc}") from None

    def _note_refusal(self, reason: str | None) -> None:
        if reason is not None and self._refusing is None:
            log.error("intake refused: %s", reason)
        elif reason is None and self._refusing is not None:
            log.warning("intake accepts transactions again (was: %s)", self._refusing)
        self._refusing = reason


def _free_bytes(directory: Path) -> int:
    """Free bytes on the filesystem of `directory` (or of its nearest existing parent)."""
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


class RateLimit(TokenBucket):
    """TPS_LIMIT_PER_SEC: at most `rate` client transactions a second, in bursts of at most a
    second's worth."""

    def __init__(self, rate: float, now: float) -> None:
        super().__init__(rate, max(rate, 1.0), now)
