"""Catching up with the channel: fetching single missing blocks, and syncing final blocks."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from loopchain.consensus import messages as m
from loopchain.p2p.peer_service import MAX_RANGE_REPLY_BYTES
from loopchain.p2p.transport import (
    FetchedRange,
    MalformedReply,
    PeerTransport,
    TransportError,
    TransportTimeout,
)
from loopchain.p2p.turns import TurnBudget, check_signatures_aside
from loopchain.types.block import Block, Pooled
from loopchain.types.peer import PeerInfo
from loopchain.types.vote import QuorumCertificate

log = logging.getLogger(__name__)

SYNC_PERIOD = 2.0
FETCH_QUEUE_MAX = 64
SYNC_CHUNK = 10  # synced blocks the consensus takes in one turn of the event loop
AVOID_SECONDS = 30.0  # a peer that served a malformed or invalid block is not asked for this long
MIN_RANGE_BYTES = 64 << 10  # the fewest bytes a sync range asks for (two blocks always come)

Dispatch = Callable[[m.Event], list[m.Action]]
Screen = Callable[[Sequence[tuple[Block, QuorumCertificate | None]]], str | None]


class _RangeSize(NamedTuple):
    """What a sync range asks of a peer whose ranges ran out of time (see CatchUp._sync_from),
    and how long the last one that did took."""

    max_bytes: int
    blocks: int
    slow_s: float


class CatchUp:
    """Fetches blocks consensus asks for by hash, and syncs final blocks by height when asked
    to or when the chain stands still here for SYNC_PERIOD."""

    def __init__(
        self,
        channel: str,
        transport: PeerTransport,
        others: Callable[[], list[PeerInfo]],
        tip_height: Callable[[], int],
        dispatch: Dispatch,
        sync_batch: int,
        pooled: Pooled | None = None,
        screen: Screen = lambda blocks: None,
        would_check: Callable[[Block], bool] = lambda block: False,
        held: Callable[[bytes], bool] = lambda block_hash: False,
    ) -> None:
        self.channel = channel
        self.pooled = pooled  # fetched blocks take the pooled transactions as they are
        self.transport = transport
        self.others = others
        self.tip_height = tip_height
        self.dispatch = dispatch
        self.sync_batch = sync_batch
        # what the headers of blocks decide, before their transactions' signatures are worth
        # recovering; and whether the consensus would check a fetched block's now
        self.screen = screen
        self.would_check = would_check
        # whether this node holds a block already (final, or in its tree): a want waiting
        # behind others is skipped once the block came meanwhile (by sync, or another fetch)
        self.held = held
        # names of blocks to fetch, by whether a certificate of theirs checked (those first)
        self._wants: dict[bool, collections.deque[bytes]] = {
            True: collections.deque(),
            False: collections.deque(),
        }
        self._wanted = asyncio.Event()
        self._fetching: set[bytes] = set()  # waiting or being fetched
        self._sync_wanted = asyncio.Event()
        self._avoid: dict[str, float] = {}  # target -> monotonic time until which it is avoided
        self._warned: dict[str, float] = {}  # target -> when its avoidance was last a WARNING
        # target -> what a range asks of it: for a peer whose ranges ran out of time (see
        # _sync_from)
        self._range_sizes: dict[str, _RangeSize] = {}

    def want_block(self, block_hash: bytes, vouched: bool = True) -> None:
        """Fetch this block soon: before any name not `vouched` for (by a certificate that
        checked). At most FETCH_QUEUE_MAX of each kind wait: the oldest want gives way (names
        of blocks that do not exist, which a member may send any number of, must not keep out
        the block this node needs now; a block still needed is asked for again by what waits
        for it)."""
        if block_hash in self._fetching:
            if not vouched or block_hash not in self._wants[False]:
                return  # waiting as it should, or being fetched
            self._wants[False].remove(block_hash)  # now vouched for: it goes ahead
        wants = self._wants[vouched]
        if len(wants) >= FETCH_QUEUE_MAX:
            self._fetching.discard(wants.popleft())
        self._fetching.add(block_hash)
        wants.append(block_hash)
        self._wanted.set()

    def want_sync(self) -> None:
        self._sync_wanted.set()

    async def run(self) -> None:
        self._sync_wanted.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._fetch_loop(), name=f"fetch:{self.channel}")
            group.create_task(self._sync_loop(), name=f"sync:{self.channel}")

    def _shuffled_others(self) -> list[PeerInfo]:
        """The other peers in random order, those recently caught serving bad blocks last."""
        now = time.monotonic()
        peers = self.others()
        random.shuffle(peers)
        peers.sort(key=lambda peer: self._avoid.get(peer.target, 0.0) > now)
        return peers

    def avoid(self, peer: PeerInfo, why: str) -> None:
        """Ask `peer` last for AVOID_SECONDS: it served a malformed or invalid block. A WARNING
        at most once an AVOID_SECONDS for a peer (a peer serving bad blocks is a line a period,
        not a line a block), the rest at debug."""
        now = time.monotonic()
        warned = self._warned.get(peer.target)
        level = (
            logging.DEBUG
            if warned is not None and now - warned < AVOID_SECONDS
            else logging.WARNING
        )
        if level == logging.WARNING:
            self._warned[peer.target] = now
        log.log(
            level,
            "channel %s: avoiding %s for %.0f s: %s",
            self.channel,
            peer.target,
            AVOID_SECONDS,
            why,
        )
        self._avoid[peer.target] = now + AVOID_SECONDS
        if len(self._avoid) > 1024:  # bounded: forget the expired
            self._avoid = {t: until for t, until in self._avoid.items() if until > now}
            self._warned = {t: at for t, at in self._warned.items() if t in self._avoid}

    # ------------------------------------------------------------ fetching missing blocks

    async def _fetch_loop(self) -> None:
        while True:
            block_hash = await self._next_want()
            try:
                # a fetch is a round trip: between far peers a restarted validator fetched ten
                # blocks that sync had brought meanwhile before the one it needed
                if not self.held(block_hash):
                    await self._fetch_one(block_hash)
            finally:
                self._fetching.discard(block_hash)

    async def _next_want(self) -> bytes:
        while True:
            for vouched in (True, False):
                if self._wants[vouched]:
                    return self._wants[vouched].popleft()
            self._wanted.clear()
            await self._wanted.wait()

    async def _fetch_one(self, block_hash: bytes) -> None:
        for peer in self._shuffled_others():
            try:
                block = await self.transport.fetch_block(
                    peer, self.channel, block_hash, self.pooled
                )
            except MalformedReply as exc:
                self.avoid(peer, str(exc))
                continue
            except TransportError as exc:
                log.debug("channel %s: fetch from %s failed: %s", self.channel, peer.target, exc)
                continue
            if block is not None and block.hash == block_hash:
                if not block.body_named:
                    # the hash names the header only: a body of the server's own is its doing
                    # (it was the end of the fetch, the server not avoided: review)
                    self.avoid(
                        peer, "it served a block whose transactions its header does not name"
                    )
                    continue
                # its header is the one its hash names, whoever serves it: refused, it is
                # nobody's to serve
                problem = self.screen([(block, None)])
                if problem:
                    log.debug("channel %s: fetched %s", self.channel, problem)
                    return
                if self.would_check(block):  # off the event loop, a slice at a time
                    await check_signatures_aside(block.transactions)
                self.dispatch(m.BlockFetched(block))
                return
        log.debug("channel %s: no peer had block %s", self.channel, block_hash.hex()[:16])

    # ------------------------------------------------------------ syncing final blocks

    async def _sync_loop(self) -> None:
        seen_height = -2
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_PERIOD):
                    await self._sync_wanted.wait()
            asked = self._sync_wanted.is_set()
            self._sync_wanted.clear()
            if asked or self.tip_height() == seen_height:
                await self.sync_once()
            seen_height = self.tip_height()

    async def sync_once(self) -> int:
        """Fetch final blocks from peers until none has more; returns how many were added. Each
        pass asks every other peer for one range, while a pass takes blocks this node did not
        have (the tip also moves by the consensus: a pass slower than a block would never end).
        A member serving a block a call (each answer just inside its deadline) while it names a
        far tip held the sync on itself for good when a peer was asked until it had no more;
        and, once the others were each asked until they had no more, while the chain grew. Now
        it has one call a pass, and every other peer serves what it has in each."""
        start_height = self.tip_height()
        while True:
            taken = 0
            peers = self._shuffled_others()
            if len(self._range_sizes) > len(peers):  # bounded: peers no longer listed forgotten
                listed = {peer.target for peer in peers}
                self._range_sizes = {t: v for t, v in self._range_sizes.items() if t in listed}
            for peer in peers:
                taken += await self._sync_from(peer)
            if not taken:
                return self.tip_height() - start_height

    async def _sync_from(self, peer: PeerInfo) -> int:
        """Take one range from `peer`; how many of its blocks became final here.

        A range has a deadline, not a size: up to SYNC_BATCH_BLOCKS blocks and 16 MiB
        (MAX_RANGE_REPLY_BYTES), which a path carrying less than ~13 Mbit/s does not bring in
        time; asked again and again, such a peer never caught up. A range that runs out of time
        halves the bytes (BlockRangeRequest.max_bytes: down to MIN_RANGE_BYTES; the peer sends
        two blocks whatever they say) and the blocks (down to two: a peer of an earlier version
        reads no bytes) asked of that peer next; one cut short by them (the peer has more) that
        came in under a quarter of that time doubles them, so that ranges follow the path."""
        size = self._range_sizes.get(peer.target)
        asked_bytes, asked_blocks = (size.max_bytes, size.blocks) if size else (0, self.sync_batch)
        began = time.monotonic()
        try:
            fetched = await self.transport.fetch_blocks(
                peer,
                self.channel,
                self.tip_height() + 1,
                asked_blocks,
                self.pooled,
                asked_bytes,
            )
        except MalformedReply as exc:
            self.avoid(peer, str(exc))
            return 0
        except TransportTimeout as exc:
            smaller = _RangeSize(
                max(MIN_RANGE_BYTES, (asked_bytes or MAX_RANGE_REPLY_BYTES) // 2),
                max(2, asked_blocks // 2),
                time.monotonic() - began,
            )
            self._range_sizes[peer.target] = smaller
            log.log(
                logging.DEBUG if size is not None and smaller[:2] == size[:2] else logging.INFO,
                "channel %s: a range from %s ran out of time (%s): asking %d blocks, %d KiB",
                self.channel,
                peer.target,
                exc,
                smaller.blocks,
                smaller.max_bytes >> 10,
            )
            return 0
        except TransportError as exc:
            log.debug("channel %s: sync from %s failed: %s", self.channel, peer.target, exc)
            return 0
        blocks = fetched.blocks
        cut_short = bool(blocks) and blocks[-1][0].height < fetched.tip_height
        if size is not None and cut_short and 4 * (time.monotonic() - began) < size.slow_s:
            larger = _RangeSize(
                min(MAX_RANGE_REPLY_BYTES, size.max_bytes * 2),
                min(self.sync_batch, size.blocks * 2),
                size.slow_s,
            )
            if larger.max_bytes == MAX_RANGE_REPLY_BYTES and larger.blocks == self.sync_batch:
                self._range_sizes.pop(peer.target, None)
            else:
                self._range_sizes[peer.target] = larger
        tip = self.tip_height()
        if blocks and not await self._take(fetched):
            self.avoid(peer, "it served an invalid block")
            return 0
        # those that became final here: a pass that proved none final ends the sync
        return sum(1 for block, _ in blocks if tip < block.height <= self.tip_height())

    async def _take(self, fetched: FetchedRange) -> bool:
        """Hand a synced range to the consensus SYNC_CHUNK blocks at a time, each chunk's last
        proven final by the range's next block (or its proof), their signatures checked first
        in the worker thread, the event loop given turns in between (loopchain.p2p.turns): a
        range of 100 big blocks taken in one turn held the loop of a peer catching up under load
        for a third of a second (~100,000 signatures: seconds, before they were checked ahead).
        False when the consensus refused a block. A chunk none of whose blocks is proven final
        yet is taken again with the next."""
        blocks, size, budget = list(fetched.blocks), SYNC_CHUNK, TurnBudget()
        while True:
            tip = self.tip_height()
            blocks = [entry for entry in blocks if entry[0].height > tip]
            if not blocks:
                return True
            chunk, rest = blocks[:size], blocks[size:]
            proof = rest[0] if rest else fetched.proof
            # the proof too, when the range's own: a forged one (a child signed by its server,
            # tens of thousands of transactions under a certificate of its own) had its
            # signatures recovered on the event loop before its certificate was looked at, at
            # every pass (review: 2 s of the loop each)
            ahead = chunk + ([proof] if proof is not None else [])
            problem = self.screen(ahead)
            if problem:
                log.info("channel %s: synced %s", self.channel, problem)
                return False
            await check_signatures_aside(tx for block, _ in ahead for tx in block.transactions)
            actions = self.dispatch(m.BlocksSynced(tuple(chunk), proof))
            if any(isinstance(a, m.SyncRefused) for a in actions):
                return False
            if self.tip_height() > tip:
                size = SYNC_CHUNK
            elif rest:
                size *= 2
            else:
                return True
            await budget.spent()
