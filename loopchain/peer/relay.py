"""Gossip of pooled transactions to the channel's other peers, in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from loopchain.configure import Config
from loopchain.p2p.transport import PeerTransport
from loopchain.types.peer import PeerInfo
from loopchain.types.transaction import Transaction

log = logging.getLogger(__name__)

RELAY_QUEUE_MAX = 20_000


class TxRelay:
    """Sends transactions to every other peer in batches bounded by count and bytes. Under load
    (more than one transaction in sight, and a batch sent less than `linger` seconds ago) it
    lingers until a batch is full or `linger` has passed: each gossip call costs the same
    whatever it carries, so fewer, fuller calls leave the CPU to the transactions. A lone
    transaction (one at a time, as from an idle network's client) goes at once."""

    def __init__(
        self,
        channel: str,
        config: Config,
        transport: PeerTransport,
        others: Callable[[], list[PeerInfo]],
        still_needed: Callable[[list[Transaction]], list[Transaction]] = list,
    ) -> None:
        self.channel = channel
        self.transport = transport
        self.others = others
        self.still_needed = still_needed  # drops, as a batch leaves, what the others hold already
        self.batch_max = int(config.MAX_TX_COUNT_IN_ADDTX_LIST)
        self.bytes_max = int(config.MAX_BLOCK_KBYTES) * 1024
        self.linger = float(config.SEND_TX_LIST_DURATION)
        self._queue: asyncio.Queue[Transaction] = asyncio.Queue(RELAY_QUEUE_MAX)
        self._full = asyncio.Event()  # set when a lingering batch could be filled
        self._last_batch = 0  # transactions in the last batch sent
        self.skipped = 0  # transactions not gossiped because the queue was full
        self.batches = 0  # batches sent (each to every other peer)
        self.spared = 0  # transactions not gossiped because the others held them by then
        self._skipped_at_full: int | None = None  # `skipped` when the queue last became full

    def queue(self, txs: tuple[Transaction, ...]) -> None:
        """Gossip these soon; when the queue is full they stay pooled here (and are gossiped
        again when a round fails)."""
        for index, tx in enumerate(txs):
            if self._queue.full():
                if self._skipped_at_full is None:  # one line when it fills, one when it drains
                    self._skipped_at_full = self.skipped
                    log.warning(
                        "channel %s: gossip queue full (%d); transactions stay pooled here, "
                        "gossiped again when a round fails",
                        self.channel,
                        RELAY_QUEUE_MAX,
                    )
                self.skipped += len(txs) - index
                break
            self._queue.put_nowait(tx)
        if self._queue.qsize() >= self.batch_max - 1:  # with the one taken, a full batch
            self._full.set()

    def _note_room(self) -> None:
        """After the queue was full: say once it has room again, and what was left pooled."""
        if self._skipped_at_full is not None and self._queue.qsize() <= RELAY_QUEUE_MAX // 2:
            left = self.skipped - self._skipped_at_full
            self._skipped_at_full = None
            log.info(
                "channel %s: gossip queue has room again; %d transactions stayed pooled here",
                self.channel,
                left,
            )

    async def run(self) -> None:
        last_sent = -math.inf
        while True:
            batch = [await self._queue.get()]
            self._note_room()
            in_sight = not self._queue.empty() or self._last_batch > 1
            if (
                in_sight
                and self._queue.qsize() < self.batch_max - 1
                and time.monotonic() - last_sent < self.linger
            ):
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.linger):
                        await self._full.wait()
            size = len(batch[0].encode())
            while len(batch) < self.batch_max and not self._queue.empty() and size < self.bytes_max:
                tx = self._queue.get_nowait()
                size += len(tx.encode())
                batch.append(tx)
            needed = self.still_needed(batch)
            self.spared += len(batch) - len(needed)
            if not needed:
                continue
            for peer in self.others():
                self.transport.send_txs(peer, self.channel, needed)
            last_sent = time.monotonic()
            self._last_batch = len(batch)
            self.batches += 1
