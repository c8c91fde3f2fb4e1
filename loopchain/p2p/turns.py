"""Work on what the network brought, a slice of the event loop at a time (signatures, blocks), or
beside it in a worker thread.

What other peers send can carry thousands of transactions whose signatures this peer has not
checked: a range of synced blocks (up to SYNC_BATCH_BLOCKS blocks of up to MAX_BLOCK_TX_NUM each),
a relayed batch (up to 1,000) or a proposal. Recovering a key takes ~50 us here, and checked in one
turn of the event loop a synced range held it for seconds: a peer restarted under load answered
neither its REST proxy (which answered 504 after its 5 s deadline) nor its probes. Checked here
first, each good signature is kept on its transaction, and the checks that follow recover nothing.

The slice is a time, not a count: a few hundred signatures (a proposal's that were not relayed
first, a relayed batch) go in one turn as before, for the turn a vote waits for costs every
round; only more is spread. A count of 64 cost 8 % of the committed tx/s under 64 clients. A
synced range's blocks are decoded so too.

Work nobody waits for turn by turn goes beside the loop, to one worker thread (`aside`): a synced
range's signatures, the loading of the transaction filter. With turns alone a peer catching up
under load still had its loop busy all the time, each iteration running every ready task's slice
(~30 iterations a second), and gRPC's server takes in a new call only every couple of iterations:
its REST proxy's calls waited past their 5 s deadline. Key recovery is C code that lets go of the
GIL, and Python code in the worker gives the GIL to the loop when it has waited 5 ms (the
interpreter's switch interval), so the loop keeps its pace and an idle second core helps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from loopchain.types.transaction import Transaction

TURN_BUDGET_S = 0.01  # working this long gives the event loop a turn (~200 keys recovered here)
ASIDE_PIECE = 256  # signatures the worker thread recovers a piece (~10-40 ms here)

T = TypeVar("T")

_worker_thread: ThreadPoolExecutor | None = None
_worker_lock = threading.Lock()


class TurnBudget:
    """Work done in pieces (a signature, a block decoded) that gives the event loop a turn once
    the pieces since the last have taken TURN_BUDGET_S."""

    def __init__(self) -> None:
        self._deadline = time.monotonic() + TURN_BUDGET_S

    async def spent(self) -> None:
        """A piece is done: a turn for the others when the budget is used up."""
        if time.monotonic() >= self._deadline:
            await asyncio.sleep(0)
            self._deadline = time.monotonic() + TURN_BUDGET_S


async def check_signatures(txs: Iterable[Transaction], *, until_bad: bool = True) -> bool:
    """Recover the signatures of `txs` not known good yet, giving the event loop a turn every
    TURN_BUDGET_S; False when one is bad (the check that follows refuses it and names it). With
    `until_bad` it stops there: a block with one is refused as a whole, so the rest are not worth
    recovering (relayed transactions are judged one by one: it goes on)."""
    good, budget = True, TurnBudget()
    for tx in txs:
        if tx.signature_checked:
            continue
        if not tx.verify_signature():
            good = False
            if until_bad:
                return False
        await budget.spent()
    return good


def _worker() -> ThreadPoolExecutor:
    global _worker_thread
    with _worker_lock:
        if _worker_thread is None:
            _worker_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aside")
        return _worker_thread


async def aside(work: Callable[[], T]) -> T:
    """`work()` in the process's worker thread beside the event loop. Keep each piece short (tens
    of milliseconds): a caller cancelled meanwhile waits for its piece to end before it goes on
    (the piece may be reading a store its owner closes once its tasks have ended). One thread of
    its own, not asyncio's default executor: background pieces go one at a time, and the intake
    journal's writes there, which acknowledgements wait for, never queue behind them."""
    future = asyncio.get_running_loop().run_in_executor(_worker(), work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise


async def check_signatures_aside(txs: Iterable[Transaction]) -> bool:
    """The signatures of `txs` not known good yet recovered in the worker thread, ASIDE_PIECE a
    piece, for work nobody waits on turn by turn (a synced range); False at the first bad one
    (its block is refused whole: the rest are not worth recovering). The recovery is C code that
    lets go of the GIL, so the event loop keeps its turns for calls and votes, and a second core,
    when idle, helps."""
    pending = [tx for tx in txs if not tx.signature_checked]
    for start in range(0, len(pending), ASIDE_PIECE):
        if not await aside(functools.partial(_all_good, pending[start : start + ASIDE_PIECE])):
            return False
    return True


def _all_good(txs: list[Transaction]) -> bool:
    return all(tx.verify_signature() for tx in txs)
